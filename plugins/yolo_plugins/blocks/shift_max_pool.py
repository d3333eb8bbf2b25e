"""Deploy form of a 2x2 stride-1 max pooling (HGNetV2's stem), swapped in by ``fuse()`` inside plugin models.

Eager PyTorch runs ``nn.MaxPool2d(2, 1)`` through its generic pooling kernel, which takes about a fifth of
HGNetV2-B0's CPU time at 640 px (35 ms of ~170 on one thread, for a 16-channel 321x321 map). The same maximum of four
shifted views is exact (every window fits: stride 1, no padding, so ``ceil_mode`` changes nothing) and costs three
element-wise maxima. Traced or exported, the form is the host's ``MaxPool2d`` again (one runtime operator is best
there); any other pooling shape keeps the host's forward too.
"""

from __future__ import annotations

import torch
from torch import nn

from ..registry import deploy_form
from .export_mode import exporting


class ShiftMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` (same settings and outputs) computed as a maximum of shifted views in eager PyTorch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Max pooling; a 2x2 stride-1 window without padding as the maximum of four shifted views."""
        if exporting() or not _two_by_two(self):
            return super().forward(x)
        top = torch.maximum(x[..., :-1, :-1], x[..., :-1, 1:])
        return torch.maximum(top, torch.maximum(x[..., 1:, :-1], x[..., 1:, 1:]))


def _two_by_two(m: nn.MaxPool2d) -> bool:
    def pair(v: int | tuple) -> tuple:
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

    return (
        pair(m.kernel_size) == (2, 2)
        and pair(m.stride) == (1, 1)
        and pair(m.padding) == (0, 0)
        and pair(m.dilation) == (1, 1)
        and not m.return_indices
    )


@deploy_form("torch.nn.modules.pooling.MaxPool2d")
def shift_max_pool(pool: nn.MaxPool2d) -> ShiftMaxPool2d:
    """The deploy form of ``pool``: the same settings as a ``ShiftMaxPool2d``."""
    form = ShiftMaxPool2d(
        pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.return_indices, pool.ceil_mode
    )
    return form.train(pool.training)
