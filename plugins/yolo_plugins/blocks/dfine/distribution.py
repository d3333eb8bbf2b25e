"""Fine-grained distribution refinement (FDR): boxes as distributions over non-uniform edge offsets.

A D-FINE-style head predicts, per query and box edge, logits over ``reg_max + 1`` bins. The bins' offsets come from a
non-uniform weighting function ``W(n)`` of two scalars, ``up`` and ``reg_scale`` (fine near zero, coarse at the ends,
the last bins at ``+-2 * up * reg_scale``); the expected offset under the softmax is an edge distance, measured from
the first decoder layer's box in units of its size / ``reg_scale``. The criterion of the family (issue 28) reuses these
functions, so they live here rather than inside the head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighting_function(reg_max: int, up: torch.Tensor, reg_scale: torch.Tensor) -> torch.Tensor:
    """The ``reg_max + 1`` bin offsets ``W(n)``, antisymmetric around the central bin (0).

    ``up`` and ``reg_scale`` are one-element tensors (buffers of the head), so the values follow a loaded checkpoint.
    Inner bins grow geometrically, ``+-(step**i - 1)`` with ``step = (up * reg_scale + 1) ** (2 / (reg_max - 2))``;
    the outer two are ``+-2 * up * reg_scale``.
    """
    if reg_max < 4 or reg_max % 2:
        raise ValueError(f"reg_max must be an even number >= 4, got {reg_max}")
    bound = (up.abs() * reg_scale.abs()).reshape(1)
    step = (bound + 1) ** (2 / (reg_max - 2))
    half = reg_max // 2
    left = [1 - step**i for i in range(half - 1, 0, -1)]
    right = [step**i - 1 for i in range(1, half)]
    return torch.cat([-2 * bound, *left, torch.zeros_like(bound), *right, 2 * bound])


def integral(corners: torch.Tensor, project: torch.Tensor) -> torch.Tensor:
    """Expected edge offsets ``(..., 4)`` of the bin logits ``corners`` ``(..., 4 * (reg_max + 1))``."""
    bins = project.shape[0]
    prob = F.softmax(corners.reshape(*corners.shape[:-1], 4, bins), dim=-1)
    return (prob * project).sum(-1)


def distance2bbox(points: torch.Tensor, distance: torch.Tensor, reg_scale: torch.Tensor) -> torch.Tensor:
    """Boxes ``(cx, cy, w, h)`` from reference boxes ``points`` (cx, cy, w, h) and edge offsets (left, top, right,
    bottom) in units of the reference size / ``reg_scale`` beyond half the size."""
    scale = reg_scale.abs()
    half = 0.5 * scale
    x1 = points[..., 0] - (half + distance[..., 0]) * (points[..., 2] / scale)
    y1 = points[..., 1] - (half + distance[..., 1]) * (points[..., 3] / scale)
    x2 = points[..., 0] + (half + distance[..., 2]) * (points[..., 2] / scale)
    y2 = points[..., 1] + (half + distance[..., 3]) * (points[..., 3] / scale)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)
