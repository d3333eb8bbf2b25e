"""Ultralytics' weight loading, taught the official RT-DETR files and warm starts by role.

Two host functions are wrapped while the plugin is active:

* ``load_checkpoint(path)`` (behind ``YOLO/RTDETR(...).load``, ``pretrained=`` and the trainer): a file the host
  cannot read as an Ultralytics checkpoint (a ``.pth``, or a ``TypeError`` for a ``.pt`` holding a plain state dict)
  is tried as an official RT-DETR, D-FINE or DEIM-D-FINE release file: it becomes the matching zoo model with every
  tensor loaded (``official``), returned like a checkpoint. Any other file gets the host's own error, as before.
* ``BaseModel.load(weights)``: when the source and the target are both RT-DETR models and either is built from plugin
  blocks (every zoo model, every converted official file), tensors move by role (``warm_start.transfer``) and a
  per-role report is logged; anything else (stock to stock, YOLO models) is the host's index-and-shape transfer.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

from torch import nn

from .. import registry

FOREIGN_SUFFIXES = (".pth", ".pth.tar", ".bin", ".safetensors")


def has_plugin_blocks(model: nn.Module) -> bool:
    """Whether any module of ``model`` is a block the plugin defines (registered with source 'yolo-plugins')."""
    classes = {e.cls for e in registry.entries().values() if e.source == "yolo-plugins"}
    return any(type(m) in classes for m in model.modules())


def official_checkpoint(path: str | Path) -> tuple[nn.Module, dict] | None:
    """The zoo model and a checkpoint dict for an official release file; ``None`` for any other file."""
    from ultralytics import __version__
    from ultralytics.utils import LOGGER

    from .files import WeightsError
    from .official import load_official

    try:
        found = load_official(path)
    except FileNotFoundError:
        return None
    except WeightsError as e:
        if "cannot be read" in str(e) or "no state dict found" in str(e) or "expected a state dict" in str(e):
            return None  # not a weights file we know: let the host say what it says about it
        raise
    if found is None:
        return None
    model, official, loaded, total = found
    LOGGER.info(f"{path}: official {official}: loaded {loaded}/{total} tensors")
    ckpt = {"model": model, "train_args": {"task": "detect", "imgsz": 640}, "version": __version__, "date": None}
    return model, ckpt


def wrap_load_checkpoint(original: Callable) -> Callable:
    """``load_checkpoint`` that also loads the official RT-DETR release files (see the module docstring)."""

    @functools.wraps(original)
    def load_checkpoint(weight, device=None, inplace=True, fuse=False):
        name = str(weight).lower()
        if isinstance(weight, (str, Path)) and name.endswith(FOREIGN_SUFFIXES) and Path(weight).is_file():
            found = official_checkpoint(weight)
            if found is not None:
                return _finish(found, weight, device, fuse)
        try:
            return original(weight, device, inplace, fuse)
        except TypeError:
            found = official_checkpoint(weight) if isinstance(weight, (str, Path)) and Path(weight).is_file() else None
            if found is None:
                raise
            return _finish(found, weight, device, fuse)

    return load_checkpoint


def _finish(found: tuple[nn.Module, dict], weight, device, fuse: bool) -> tuple[nn.Module, dict]:
    """What the host's ``load_checkpoint`` does to a model it read: args, path, task, eval mode, device, fuse."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    model, ckpt = found
    model.args = {**DEFAULT_CFG_DICT, **ckpt["train_args"]}
    model.pt_path = str(weight)
    model.task = "detect"
    if fuse:
        model = model.fuse()
    return model.eval().to(device), ckpt


def wrap_model_load(original: Callable) -> Callable:
    """``BaseModel.load`` that moves RT-DETR tensors by role when plugin models are involved."""

    @functools.wraps(original)
    def load(self, weights, verbose=True):
        from .warm_start import is_rtdetr, transfer

        source = (weights.get("ema") or weights.get("model")) if isinstance(weights, dict) else weights
        if not (is_rtdetr(self) and is_rtdetr(source) and (has_plugin_blocks(self) or has_plugin_blocks(source))):
            return original(self, weights, verbose)
        from ultralytics.utils import LOGGER

        report = transfer(source.float(), self)
        if report.n_loaded == report.n_total and getattr(self, "names", None) == {
            i: str(i) for i in range(len(getattr(source, "names", {}) or {}))
        }:
            self.names = dict(source.names)  # as the host does: a full transfer into placeholder names takes them
        self.pt_path = getattr(source, "pt_path", None)
        if verbose:
            LOGGER.info(str(report))
        return report

    return load
