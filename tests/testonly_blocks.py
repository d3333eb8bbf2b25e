"""A block that exists only for the tests, registered through the public API like a user's own block would be."""

from __future__ import annotations

import torch
from torch import nn

import yolo_plugins


@yolo_plugins.register(rule="same")
class TestOnlyGate(nn.Module):
    """Channel-preserving gated residual: x + sigmoid(g) * dwconv(x)."""

    def __init__(self, c: int, k: int = 3) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, k, 1, k // 2, groups=c)
        self.g = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.sigmoid(self.g) * self.dw(x)


TINY_YAML = """# tiny detector using TestOnlyGate
nc: 6
scales:
  n: [0.33, 0.25, 1024]
default_scale: n
backbone:
  - [-1, 1, Conv, [64, 3, 2]]      # 0-P1/2
  - [-1, 1, Conv, [128, 3, 2]]     # 1-P2/4
  - [-1, 1, TestOnlyGate, [5]]     # 2 the test-only block, channels inferred
  - [-1, 1, Conv, [256, 3, 2]]     # 3-P3/8
  - [-1, 1, Conv, [256, 3, 2]]     # 4-P4/16
head:
  - [[3, 4], 1, Detect, [nc]]      # Detect(P3, P4)
"""
