"""Pretrained weights from local files only: find the file, read it, check every tensor, then load all or nothing.

``resolve_weights`` looks a relative path up in the working directory, then in the folders of
``YOLO_PLUGINS_WEIGHTS``, then in the checkout's ``weights/`` folder; it never downloads (the backbones' ``True``,
timm's ImageNet weights through the Hugging Face cache, is turned into a local file by ``weights.hub`` first).
``load_pretrained`` reads ``.pt``/``.pth`` (and any ``torch.save`` file) or ``.safetensors``, unwraps the usual
containers (``{'model': ...}``, ``{'state_dict': ...}``, ``{'ema': ...}``, Ultralytics checkpoints holding a whole
module, DDP's ``module.`` prefix), finds the prefix the module's keys sit below (``model.0.``, mmdetection's
``backbone.``), optionally renames keys from another release layout, and validates the result against the module
before anything is copied: shape mismatches, nothing matched, and tensors the module needs but the file lacks are
errors that list the keys. Checkpoint keys the module has no place for (a classifier head) are skipped and reported.

Files are read with ``torch.load(weights_only=True)``. Only a file that holds pickled classes (a whole module) is
read again with ``weights_only=False``, and never when Ultralytics' restricted loading (``ULTRALYTICS_SAFE_LOAD``) is
on. Unreadable files (truncated, corrupt, not a weights file) raise ``WeightsError`` naming the file.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

import torch
from torch import nn

from ..errors import PluginError
from ..paths import weights_dirs

StateDict = dict[str, torch.Tensor]
Remap = Callable[[StateDict], tuple[StateDict, str]]
PathLike = Union[str, Path]

# Containers training scripts wrap a state dict in, in the order they are tried. Ultralytics keeps the EMA weights
# (the ones it validates and exports) under 'ema' and often None under 'model'.
CONTAINER_KEYS = ("ema", "model", "state_dict", "model_ema", "state_dict_ema", "module", "params")
OPTIONAL_SUFFIXES = ("num_batches_tracked",)  # bookkeeping buffers some exporters leave out
SAFE_LOAD_ENV = "ULTRALYTICS_SAFE_LOAD"
TRUTHY = {"1", "true", "yes", "on", "y", "t"}  # the values Ultralytics' env_bool accepts (case-insensitive, trimmed)


class WeightsError(PluginError, ValueError):
    """A weights file does not fit the module it is loaded into (nothing was loaded)."""


@dataclass
class LoadReport:
    """What ``load_pretrained`` did: ``loaded`` of the module's ``total`` tensors came from ``path``."""

    path: Path
    loaded: int
    total: int
    container: str = ""  # how the state dict was found inside the file, e.g. "['model']"
    layout: str = ""  # key layout conversion applied, e.g. "official microsoft/Cream release"
    skipped: list[str] = field(default_factory=list)  # checkpoint keys with no counterpart (e.g. a classifier head)
    defaulted: list[str] = field(default_factory=list)  # optional buffers absent from the file, kept as they were
    prefix: str = ""  # the prefix the module's keys sat below in the file, e.g. "backbone." or "model.0."

    def __str__(self) -> str:
        parts = [f"loaded {self.loaded}/{self.total} tensors from {self.path}"]
        if self.container:
            parts.append(f"state dict at {self.container}")
        if self.layout:
            parts.append(f"converted from the {self.layout} layout")
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} checkpoint keys with no counterpart ({_first(self.skipped)})")
        if self.defaulted:
            parts.append(f"{len(self.defaulted)} optional buffers not in the file kept their values")
        return "; ".join(parts)


def resolve_weights(path: PathLike) -> Path:
    """The existing local file a weights argument names; never downloads.

    Absolute paths (and ``~``) are used as given; relative ones are tried in the folders of ``paths.weights_dirs()``:
    the working directory, the ``YOLO_PLUGINS_WEIGHTS`` folders, the checkout's ``weights/``. A missing file raises
    ``FileNotFoundError`` naming the path and the folders searched. A symbolic link keeps its own name (the Hugging
    Face cache links ``model.safetensors`` to a blob without a suffix, and the suffix tells the format).
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(
            f"weights must be the path of a local file, got {path!r}; nothing is ever downloaded here "
            "(see weights/README.md for where to put the file; the backbones take pretrained=True for timm's "
            "ImageNet weights)"
        )
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [d / p for d in weights_dirs()]
    for c in candidates:
        if c.is_file():
            return c.parent.resolve() / c.name
    where = ", ".join(str(c.parent) for c in candidates)
    raise FileNotFoundError(
        f"weights file '{path}' not found (searched: {where}). A weights path is never downloaded: put the file in "
        "one of these folders or pass an absolute path (see weights/README.md for the accepted formats)."
    )


def safe_load_enabled() -> bool:
    """Whether Ultralytics' restricted loading is on: ``ULTRALYTICS_SAFE_LOAD`` set truthy now or when Ultralytics was
    imported (``ultralytics.utils.SAFE_LOAD``), or a restricted ``torch_safe_load(..., safe_only=True)`` running on
    this thread."""
    value = os.environ.get(SAFE_LOAD_ENV)
    if value is not None and value.strip().lower() in TRUTHY:
        return True
    if getattr(sys.modules.get("ultralytics.utils"), "SAFE_LOAD", False) is True:
        return True
    safe = getattr(sys.modules.get("ultralytics.nn.tasks"), "_SafeLoad", None)
    return getattr(getattr(safe, "_local", None), "active", False) is True


def read_weights(path: PathLike) -> tuple[StateDict, str]:
    """Read a weights file into a flat ``{name: tensor}`` dict, plus a description of where it was inside the file.

    Raises ``WeightsError`` for an empty, truncated or corrupt file, for a file that is not a weights file, and for a
    file of pickled objects while restricted loading is on (see ``safe_load_enabled``).
    """
    path = resolve_weights(path)
    if path.stat().st_size == 0:
        raise WeightsError(
            f"{path}: the file is empty (0 bytes), not a weights file; an interrupted download or copy? "
            "Replace it with the complete file."
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu"), ""
        except (OSError, MemoryError):
            raise
        except Exception as e:  # safetensors raises SafetensorError for every malformed file
            hint = " It looks like a torch.save file: rename it to .pt." if _looks_like_torch(path) else ""
            raise _unreadable(path, e, hint) from e
    return unwrap(_torch_load(path), str(path))


def _torch_load(path: Path) -> object:
    """``torch.load`` with ``weights_only=True``; the full unpickler only for files of pickled classes, if allowed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        _check_unpickling_error(path, e)
    except (OSError, MemoryError):
        raise
    except Exception as e:  # RuntimeError (truncated zip), EOFError, IndexError, KeyError (not a torch.save file)
        raise _unreadable(path, e) from e
    # Full-module checkpoints (Ultralytics' {'model': DetectionModel}) need the classes they pickle. The user named
    # this local file explicitly, as they do for YOLO('file.pt'), which loads it the same way.
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except ImportError as e:
        raise WeightsError(
            f"{path}: the file pickles classes of the module '{e.name or e}', which is not installed here. Install "
            "it, or load the file where it is installed and save a plain state dict (model.state_dict())."
        ) from e
    except (OSError, MemoryError):
        raise
    except Exception as e:
        raise _unreadable(path, e) from e


def _check_unpickling_error(path: Path, e: pickle.UnpicklingError) -> None:
    """Return only when ``weights_only=True`` refused the classes the file pickles and the full unpickler may run."""
    msg = str(e)
    if "Weights only load failed" not in msg:
        raise _unreadable(path, e) from e
    blocked = re.search(r"GLOBAL (\S+) whose module (\S+) is blocked", msg)
    if blocked:
        raise WeightsError(
            f"{path}: the file references {blocked[1]} (module '{blocked[2]}'), which no weights file needs and which "
            "could run commands when unpickled, so it was not unpickled. Use a plain state dict or a .safetensors "
            "file from a source you trust."
        ) from e
    if not re.search(r"was not an allowed global|allowlisted via `add_safe_globals`", msg):
        raise _unreadable(path, e) from e  # e.g. "Unsupported operand": random bytes, not a pickle
    if safe_load_enabled():
        found = re.search(r"GLOBAL (\S+) was not an allowed global", msg)
        first = f"; the first is {found[1]}" if found else ""
        raise WeightsError(
            f"{path}: the file holds pickled Python objects (a whole nn.Module or an Ultralytics checkpoint{first}), "
            f"which restricted loading forbids: {SAFE_LOAD_ENV} is on, so weights are only read with "
            "torch.load(weights_only=True). Save a plain state dict instead "
            "(torch.save(model.state_dict(), 'file.pt')) or a .safetensors file, or, if you trust the file, unset "
            f"{SAFE_LOAD_ENV}."
        ) from e


def _unreadable(path: Path, e: BaseException, hint: str = "") -> WeightsError:
    """The error for a file the loaders cannot parse (torch raises RuntimeError/EOFError/UnpicklingError/...)."""
    if isinstance(e, RuntimeError) and "TorchScript" in str(e):
        return WeightsError(
            f"{path}: the file is a TorchScript archive (torch.jit.save), not a state dict. Load it with "
            "torch.jit.load and save its state_dict() with torch.save, then load that file."
        )
    text = str(e).split("WeightsUnpickler error:")[-1]  # past torch's boilerplate about weights_only
    detail = next((line.strip() for line in text.splitlines() if line.strip()), "").split(". ")[0]
    detail = detail if len(detail) <= 160 else detail[:157] + "..."
    return WeightsError(
        f"{path}: cannot be read: the file is truncated or corrupt, or it is not a weights file "
        f"({type(e).__name__}{': ' + detail if detail else ''}). Nothing was loaded. Copy or download the file "
        f"again, or check that the path names a .pt/.pth or .safetensors weights file.{hint}"
    )


def _looks_like_torch(path: Path) -> bool:
    """Whether a file starts like a ``torch.save`` file (a zip archive or a pickle)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def unwrap(obj: object, source: str = "checkpoint") -> tuple[StateDict, str]:
    """Find the state dict inside a loaded checkpoint: container keys, whole modules and the ``module.`` prefix."""
    where = ""
    for _ in range(4):  # e.g. {'model': {'state_dict': ...}} or {'ema': DetectionModel}
        if isinstance(obj, nn.Module):
            obj, where = obj.state_dict(), where + ".state_dict()"
            break
        if not isinstance(obj, dict):
            break
        key = next((k for k in CONTAINER_KEYS if isinstance(obj.get(k), (dict, nn.Module))), None)
        if key is None:
            if not _is_state_dict(obj):
                raise WeightsError(
                    f"{source}: no state dict found; top-level keys: {_first(list(obj))} "
                    f"(expected tensors or one of the containers {', '.join(CONTAINER_KEYS)})"
                )
            break
        obj, where = obj[key], where + f"[{key!r}]"
    if not isinstance(obj, dict) or not _is_state_dict(obj):
        found = f"{type(obj).__name__} at {where or 'the top level'}"
        raise WeightsError(f"{source}: expected a state dict of tensors, found {found}")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if sd and all(k.startswith("module.") for k in sd):  # saved from DistributedDataParallel / DataParallel
        sd, where = {k[len("module.") :]: v for k, v in sd.items()}, where + " without 'module.'"
    return sd, where


def _is_state_dict(d: dict) -> bool:
    return bool(d) and all(isinstance(k, str) for k in d) and any(isinstance(v, torch.Tensor) for v in d.values())


def _first(keys: list, n: int = 5) -> str:
    keys = [str(k) for k in keys]
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def _prefix_groups(sd: StateDict) -> dict[str, list[str]]:
    """Every dotted prefix of the keys ('', 'backbone.', 'model.0.', ...) with the keys below it, in one pass."""
    groups: dict[str, list[str]] = {"": list(sd)}
    for k in sd:
        i = k.find(".")
        while i != -1:
            groups.setdefault(k[: i + 1], []).append(k)
            i = k.find(".", i + 1)
    return groups


def match_keys(sd: StateDict, target: StateDict, remap: Remap | None = None) -> tuple[StateDict, str, str]:
    """The part of ``sd`` that fits ``target``: returns ``(state_dict, prefix, layout)``.

    Every dotted prefix of the checkpoint's keys is tried, shortest first (``''`` first), each as is and, with
    ``remap``, converted; the candidate naming the most module keys wins, then the one with the most of those at the
    right shape. On a tie the earlier candidate wins (shorter prefix, keys as they are over converted ones); a tie
    between prefixes that would load different tensors is an error unless the top level is one of them. With nothing
    matching, ``(sd, '', '')`` comes back unchanged for ``check_state_dict`` to report. Nothing is validated here.
    """
    best: tuple[tuple[int, int], StateDict, str, str, list[str]] | None = None
    rivals: list[str] = []  # other prefixes as good as the best one that would load other tensors
    groups = _prefix_groups(sd)
    for prefix in sorted(groups, key=lambda p: (p.count("."), p)):
        sub = {k[len(prefix) :]: sd[k] for k in groups[prefix]}
        options = [(sub, "")]
        if remap is not None:
            converted, layout = remap(sub)
            if layout:
                options.append((converted, layout))
        for cand, layout in options:
            names = [k for k in cand if k in target]
            if not names:
                continue
            score = (len(names), sum(cand[k].shape == target[k].shape for k in names))
            if best is None or score > best[0]:
                best, rivals = (score, cand, prefix, layout, names), []
            elif score == best[0] and prefix not in (best[2], *rivals) and not _same_tensors(cand, best[1], best[4]):
                rivals.append(prefix)
    if best is None:
        return sd, "", ""
    _, cand, prefix, layout, _ = best
    if prefix and rivals:
        where = _first([prefix, *rivals])
        raise WeightsError(
            f"the module's keys fit equally well below several prefixes of the checkpoint ({where}); nothing was "
            "loaded. Save the part you mean as its own state dict, e.g. "
            f"{{k[{len(prefix)}:]: v for k, v in sd.items() if k.startswith({prefix!r})}}."
        )
    return cand, prefix, layout


def _same_tensors(a: StateDict, b: StateDict, names: list[str]) -> bool:
    """Whether ``a`` holds exactly the keys ``names`` of ``b`` with equal tensors (then either may be loaded)."""
    return all(k in a and (a[k] is b[k] or (a[k].shape == b[k].shape and torch.equal(a[k], b[k]))) for k in names)


def check_state_dict(sd: StateDict, target: StateDict, what: str) -> tuple[list[str], list[str], list[str]]:
    """Validate ``sd`` against a module's ``target`` state dict; returns (matched, skipped, defaulted) key lists.

    Raises ``WeightsError`` listing the keys when nothing matches, when shapes differ, or when the module needs
    tensors the checkpoint lacks. Nothing is modified.
    """
    matched = [k for k in target if k in sd]
    if not matched:
        raise WeightsError(
            f"{what}: 0 of {len(target)} keys matched; first checkpoint keys: {_first(list(sd), 4)}; "
            f"first module keys: {_first(list(target), 4)}"
        )
    bad = [k for k in matched if sd[k].shape != target[k].shape]
    if bad:
        rows = "; ".join(f"{k}: checkpoint {tuple(sd[k].shape)} vs module {tuple(target[k].shape)}" for k in bad[:8])
        more = f"; ... ({len(bad)} in all)" if len(bad) > 8 else ""
        raise WeightsError(
            f"{what}: {len(bad)} of {len(matched)} matched tensors have the wrong shape "
            f"(a different model or variant?): {rows}{more}. Nothing was loaded."
        )
    missing = [k for k in target if k not in sd]
    defaulted = [k for k in missing if k.endswith(OPTIONAL_SUFFIXES)]
    missing = [k for k in missing if k not in defaulted]
    if missing:
        raise WeightsError(
            f"{what}: the checkpoint lacks {len(missing)} of the module's {len(target)} tensors: {_first(missing, 8)}. "
            "Nothing was loaded."
        )
    skipped = [k for k in sd if k not in target]
    return matched, skipped, defaulted


def load_pretrained(module: nn.Module, path: PathLike, remap: Remap | None = None, name: str = "") -> LoadReport:
    """Load a local weights file into ``module``: every tensor the module has, validated first, or nothing.

    Args:
        module: the module to fill (its own ``state_dict()`` keys are the target).
        path: weights file (see ``resolve_weights``).
        remap: optional ``remap(state_dict) -> (state_dict, layout)`` converting another release's key layout;
            ``layout`` names the layout it recognised for the report ("" when it left the keys as they were). It is
            called on the keys below each candidate prefix (see ``match_keys``), so it must return ``""`` for keys it
            does not recognise.
        name: label for the log line and errors (defaults to the module's class name).
    """
    from ultralytics.utils import LOGGER

    name = name or type(module).__name__
    file = resolve_weights(path)
    sd, container = read_weights(file)
    target = module.state_dict()
    try:
        sd, prefix, layout = match_keys(sd, target, remap)
    except WeightsError as e:
        raise WeightsError(f"{name}: {file}: {e}") from None
    if prefix:
        container += f" below '{prefix}'"
    where = f"{name}: {file}" + (f" (keys below '{prefix}')" if prefix else "")
    _, skipped, defaulted = check_state_dict(sd, target, where)
    full = {k: (sd[k] if k in sd else target[k]) for k in target}
    module.load_state_dict(full, strict=True)
    module.train(module.training)  # lets modules drop caches derived from parameters (timm's attention bias cache)
    loaded = len(target) - len(defaulted)
    report = LoadReport(file, loaded, len(target), container, layout, skipped, defaulted, prefix)
    LOGGER.info(f"{name}: {report}")
    return report
