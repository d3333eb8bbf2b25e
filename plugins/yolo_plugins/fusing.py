"""Deploy-time fusing of registered blocks, run by the engine's own ``model.fuse()``.

A block registered with ``fuse=True`` implements ``fuse()`` (fold in place, idempotent) and a ``fused`` attribute.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Callable

import torch

from . import registry


def fusable(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Every instance of a registered fusable block inside ``model`` that is not fused yet."""
    for m in model.modules():
        entry = registry.entry_for(type(m))
        if entry is not None and entry.fuse and not getattr(m, "fused", False):
            yield m


def wrap_fuse(original: Callable) -> Callable:
    """``BaseModel.fuse`` that first folds registered blocks, then does the host's own fusing."""

    @functools.wraps(original)
    def fuse(self, *args, **kwargs):
        for m in list(fusable(self)):
            m.fuse()
        return original(self, *args, **kwargs)

    return fuse


def wrap_is_fused(original: Callable) -> Callable:
    """``BaseModel.is_fused`` that also counts registered blocks still waiting to be folded."""

    @functools.wraps(original)
    def is_fused(self, *args, **kwargs):
        return original(self, *args, **kwargs) and next(fusable(self), None) is None

    return is_fused
