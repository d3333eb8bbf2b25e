"""Pretrained weights from local files only: find the file, read it, check every tensor, then load all or nothing.

``resolve_weights`` looks a relative path up in the working directory and then in the project's ``weights/`` folder;
it never downloads. ``load_pretrained`` reads ``.pt``/``.pth`` (and any ``torch.save`` file) or ``.safetensors``,
unwraps the usual containers (``{'model': ...}``, ``{'state_dict': ...}``, ``{'ema': ...}``, Ultralytics checkpoints
holding a whole module, DDP's ``module.`` prefix, a prefix such as ``model.0.`` or ``backbone.``), optionally renames
keys from another release layout, and validates the result against the module before anything is copied:
shape mismatches, nothing matched, and tensors the module needs but the file lacks are errors that list the keys.
Checkpoint keys the module has no place for (a classifier head) are skipped and reported.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

import torch
from torch import nn

from .errors import PluginError
from .paths import weights_dirs

StateDict = dict[str, torch.Tensor]
Remap = Callable[[StateDict], tuple[StateDict, str]]
PathLike = Union[str, Path]

# Containers training scripts wrap a state dict in, in the order they are tried. Ultralytics keeps the EMA weights
# (the ones it validates and exports) under 'ema' and often None under 'model'.
CONTAINER_KEYS = ("ema", "model", "state_dict", "model_ema", "state_dict_ema", "module", "params")
OPTIONAL_SUFFIXES = ("num_batches_tracked",)  # bookkeeping buffers some exporters leave out


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

    Absolute paths (and ``~``) are used as given; relative ones are tried in the working directory, then in the
    project's ``weights/`` folder. A missing file raises ``FileNotFoundError`` naming the path and the folders searched.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(
            f"weights must be the path of a local file, got {path!r}; nothing is ever downloaded "
            "(see weights/README.md for where to put the file)"
        )
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [d / p for d in weights_dirs()]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    where = ", ".join(str(c.parent) for c in candidates)
    raise FileNotFoundError(
        f"weights file '{path}' not found (searched: {where}). Weights are never downloaded: put the file in one of "
        "these folders or pass an absolute path (see weights/README.md for the accepted formats)."
    )


def read_weights(path: PathLike) -> tuple[StateDict, str]:
    """Read a weights file into a flat ``{name: tensor}`` dict, plus a description of where it was inside the file."""
    path = resolve_weights(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu"), ""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Full-module checkpoints (Ultralytics' {'model': DetectionModel}) need the classes they pickle. The user
        # named this local file explicitly, as they do for YOLO('file.pt'), which loads it the same way.
        obj = torch.load(path, map_location="cpu", weights_only=False)
    return unwrap(obj, str(path))


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


def _strip_prefix(sd: StateDict, target: StateDict) -> tuple[StateDict, str]:
    """Drop a prefix like ``model.0.`` or ``backbone.`` when the module's keys sit below one in the checkpoint."""
    if any(k in target for k in sd):
        return sd, ""
    probe = next(iter(target))
    prefixes = {k[: -len(probe)] for k in sd if k.endswith("." + probe)}
    if len(prefixes) != 1:
        return sd, ""
    prefix = prefixes.pop()
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}, prefix


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
            ``layout`` names the layout it recognised for the report ("" when it left the keys as they were).
        name: label for the log line and errors (defaults to the module's class name).
    """
    from ultralytics.utils import LOGGER

    name = name or type(module).__name__
    file = resolve_weights(path)
    sd, container = read_weights(file)
    layout = ""
    if remap is not None:
        sd, layout = remap(sd)
    target = module.state_dict()
    sd, prefix = _strip_prefix(sd, target)
    if prefix:
        container += f" below '{prefix}'"
    _, skipped, defaulted = check_state_dict(sd, target, f"{name}: {file}")
    full = {k: (sd[k] if k in sd else target[k]) for k in target}
    module.load_state_dict(full, strict=True)
    module.train(module.training)  # lets modules drop caches derived from parameters (timm's attention bias cache)
    report = LoadReport(file, len(target) - len(defaulted), len(target), container, layout, skipped, defaulted)
    LOGGER.info(f"{name}: {report}")
    return report
