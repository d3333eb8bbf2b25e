"""Deploy-time fusing, run by the engine's own ``model.fuse()``.

* A block registered with ``fuse=True`` implements ``fuse()`` (fold in place, idempotent) and a ``fused`` attribute.
* Host or library modules with a registered deploy form (``registry.deploy_form``) are replaced by it, only inside
  models that contain a yolo-plugins block: the forms compute the same outputs with a graph the CPU runtimes run
  faster, and stock models are left as the host builds them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Callable

import torch

from .. import registry


def fusable(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Every instance of a registered fusable block inside ``model`` that is not fused yet."""
    for m in model.modules():
        entry = registry.entry_for(type(m))
        if entry is not None and entry.fuse and not getattr(m, "fused", False):
            yield m


def uses_plugin_blocks(model: torch.nn.Module) -> bool:
    """Whether ``model`` contains a block defined by yolo-plugins (not only host classes the plugin teaches)."""
    for m in model.modules():
        entry = registry.entry_for(type(m))
        if entry is not None and entry.source != "ultralytics":
            return True
    return False


def deploy_swaps(model: torch.nn.Module) -> Iterator[tuple[torch.nn.Module, str, torch.nn.Module, Callable]]:
    """``(parent, name, child, convert)`` for every child that has a registered deploy form (not looking inside a
    deploy form, which may hold the module it replaced)."""
    for name, child in model.named_children():
        convert = registry.deploy_form_for(type(child))
        if convert is not None:
            yield model, name, child, convert
        elif not getattr(child, "is_deploy_form", False):
            yield from deploy_swaps(child)


def to_deploy_forms(model: torch.nn.Module) -> int:
    """Replace every module with a registered deploy form (a plugin model only); returns how many were replaced."""
    if not uses_plugin_blocks(model):
        return 0
    swaps = list(deploy_swaps(model))
    for parent, name, child, convert in swaps:
        setattr(parent, name, convert(child))
    return len(swaps)


def wrap_fuse(original: Callable) -> Callable:
    """``BaseModel.fuse`` that first folds registered blocks and swaps in deploy forms, then does the host's fusing."""

    @functools.wraps(original)
    def fuse(self, *args, **kwargs):
        for m in list(fusable(self)):
            m.fuse()
        to_deploy_forms(self)
        return original(self, *args, **kwargs)

    return fuse


def wrap_is_fused(original: Callable) -> Callable:
    """``BaseModel.is_fused`` that also counts registered blocks and deploy forms still waiting."""

    @functools.wraps(original)
    def is_fused(self, *args, **kwargs):
        if not original(self, *args, **kwargs) or next(fusable(self), None) is not None:
            return False
        return not uses_plugin_blocks(self) or next(deploy_swaps(self), None) is None

    return is_fused
