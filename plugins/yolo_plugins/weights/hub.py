"""``pretrained=True``: timm's default ImageNet weights for a model name, through ``huggingface_hub``, cache first.

timm's pretrained config for the name (``timm.models.get_pretrained_cfg``; the default tag when the name has none)
says which Hugging Face Hub repo holds the weights, e.g. ``timm/efficientvit_m0.r224_in1k``. Like timm's own
``load_state_dict_from_hf``, ``model.safetensors`` is tried before ``pytorch_model.bin``. The Hugging Face cache is
read first (``try_to_load_from_cache``: no network at all when the file is there); only when it is not cached, and
the hub is not switched off (``HF_HUB_OFFLINE``), does ``hf_hub_download`` fetch the file into that cache. The cache
folder and the offline switch are read from the environment at each call, by the rules ``huggingface_hub`` applies
once at import (``HF_HUB_CACHE``, ``HUGGINGFACE_HUB_CACHE``, ``HF_HOME``, ``XDG_CACHE_HOME``; ``HF_HUB_OFFLINE``,
``TRANSFORMERS_OFFLINE``).

This module only finds the file; the blocks load it with ``weights.load_pretrained`` exactly like a local file, so the
checks and the load report are the same. Nothing here runs unless a user passed ``True``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .files import WeightsError

SAFETENSORS_NAME = "model.safetensors"
PICKLE_NAME = "pytorch_model.bin"
# A pickled file name and the safetensors file the same repo may hold instead (timm's _get_safe_alternatives).
SAFE_ALTERNATIVES = {PICKLE_NAME: SAFETENSORS_NAME, "open_clip_pytorch_model.bin": "open_clip_model.safetensors"}
TRUE_VALUES = {"1", "on", "yes", "true"}  # what huggingface_hub's _is_true accepts (upper-cased there)


class HubWeightsError(WeightsError):
    """timm's pretrained weights for a model cannot be had: not in the Hugging Face cache and not downloadable here."""


@dataclass(frozen=True)
class HubSource:
    """Where timm keeps a model's default pretrained weights on the Hugging Face Hub."""

    model: str  # the timm model name as given, e.g. "efficientvit_m0"
    repo_id: str  # e.g. "timm/efficientvit_m0.r224_in1k"
    revision: str | None  # a revision after '@' in timm's hf_hub_id, else None (the repo's main branch)
    filenames: tuple[str, ...]  # tried in order, e.g. ("model.safetensors", "pytorch_model.bin")


def hub_source(model: str, who: str = "") -> HubSource:
    """The hub repo and file names of timm's default pretrained weights for ``model`` (with or without a tag).

    Raises ``HubWeightsError`` when timm has no weights on the Hugging Face Hub for that name.
    """
    from timm.models import get_pretrained_cfg

    label = f"{who}: " if who else ""
    try:
        cfg = get_pretrained_cfg(model)
    except RuntimeError as e:  # an unknown pretrained tag
        raise HubWeightsError(f"{label}pretrained=True: timm has no pretrained weights for {model!r} ({e})") from None
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        url = getattr(cfg, "url", None) if cfg is not None else None
        where = f"; its pretrained config names only the URL {url}" if url else ""
        raise HubWeightsError(
            f"{label}pretrained=True: timm has no weights on the Hugging Face Hub for {model!r}{where}. Download "
            "the weights yourself and pass the local file instead of True (see weights/README.md)."
        )
    repo_id, _, revision = hub_id.partition("@")
    filename = getattr(cfg, "hf_hub_filename", None)
    if not filename:
        filenames: tuple[str, ...] = (SAFETENSORS_NAME, PICKLE_NAME)
    elif filename.endswith(".safetensors") or filename not in SAFE_ALTERNATIVES:
        filenames = (filename,)
    else:
        filenames = (SAFE_ALTERNATIVES[filename], filename)
    return HubSource(model, repo_id, revision or None, filenames)


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder the environment names now (``huggingface_hub``'s rules, read at call time)."""
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if not cache:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
        cache = os.path.join(os.path.expandvars(os.path.expanduser(home)), "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def hub_offline() -> bool:
    """Whether downloads from the hub are switched off: ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set now or
    when ``huggingface_hub`` was imported."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    if value.strip().lower() in TRUE_VALUES:
        return True
    from huggingface_hub import constants

    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def timm_weights_file(model: str, who: str = "") -> Path:
    """The local file of timm's default pretrained weights for ``model``: from the Hugging Face cache, else downloaded
    into it with ``hf_hub_download`` unless the hub is offline.

    Args:
        model: timm model name, e.g. ``"efficientvit_m0"``, ``"resnet18"`` or ``"resnet18.a1_in1k"``.
        who: label that starts error messages and the download log line, e.g. ``"EfficientViT"``.

    Raises ``HubWeightsError`` naming the model, the repo, the file and the cache folder when the file is not cached
    and cannot be downloaded (offline, no network, a gated or missing repo).
    """
    import huggingface_hub
    from huggingface_hub.utils import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    src = hub_source(model, who)
    cache = hub_cache_dir()
    kwargs = {"repo_id": src.repo_id, "revision": src.revision, "cache_dir": str(cache)}
    for filename in src.filenames:  # cache first, read from disk only (hf_hub_download may connect even then)
        found = huggingface_hub.try_to_load_from_cache(filename=filename, **kwargs)
        if isinstance(found, str):
            return Path(found)
    if hub_offline():
        raise _not_cached(src, cache, who, "the hub is offline (HF_HUB_OFFLINE is set)")
    from ultralytics.utils import LOGGER

    label = f"{who}: " if who else ""
    for filename in src.filenames:
        LOGGER.info(f"{label}downloading timm's pretrained weights {src.repo_id}/{filename} into {cache}")
        try:
            return Path(huggingface_hub.hf_hub_download(filename=filename, **kwargs))
        except LocalEntryNotFoundError as e:  # the hub could not be reached and the file is not cached
            why = f"the hub could not be reached ({_first_line(_root_cause(e))}; on a machine without internet set "
            raise _not_cached(src, cache, who, why + "HF_HUB_OFFLINE=1 to skip the connection attempts)") from e
        except EntryNotFoundError:  # the repo has no such file: try the next name, as timm does
            continue
        except HfHubHTTPError as e:  # a missing or gated repo, a bad token, a server error
            raise HubWeightsError(
                f"{label}pretrained=True: downloading timm's pretrained weights for {model!r} from the Hugging Face "
                f"Hub repo {src.repo_id} failed: {_first_line(e)}. Pass a local weights file "
                "instead of True (see weights/README.md)."
            ) from e
    raise HubWeightsError(
        f"{label}pretrained=True: the Hugging Face Hub repo {src.repo_id} (timm's pretrained weights for {model!r}) "
        f"has none of the files {', '.join(src.filenames)}. Pass a local weights file instead of True."
    )


def _not_cached(src: HubSource, cache: Path, who: str, why: str) -> HubWeightsError:
    """The error for weights that are neither in the cache nor downloadable: what to fetch, where, and how."""
    label = f"{who}: " if who else ""
    filename = src.filenames[0]
    alternatives = f" (or {', '.join(src.filenames[1:])})" if len(src.filenames) > 1 else ""
    rev = f" --revision {src.revision}" if src.revision else ""
    return HubWeightsError(
        f"{label}pretrained=True takes timm's default pretrained weights for {src.model!r} from the Hugging Face Hub "
        f"repo {src.repo_id}, file {filename}{alternatives}, but they are not in the Hugging Face cache {cache} and "
        f"{why}. On a machine with internet run `hf download {src.repo_id} {filename}{rev}` (older huggingface_hub: "
        f"`huggingface-cli download ...`) and copy its hub cache folder (models--{src.repo_id.replace('/', '--')}) "
        f"into {cache} (or point HF_HUB_CACHE at a copy), or pass a local weights file instead of True "
        "(see weights/README.md)."
    )


def _root_cause(e: BaseException) -> BaseException:
    """The innermost exception ``e`` was raised from (the connection error behind huggingface_hub's message)."""
    seen = {id(e)}
    while (nxt := e.__cause__ or e.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        e = nxt
    return e


def _first_line(e: BaseException) -> str:
    """``Type: first line of the message``, at most 200 characters."""
    line = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    text = f"{type(e).__name__}: {line}" if line else type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."
