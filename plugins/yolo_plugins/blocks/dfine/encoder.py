"""D-FINE's encoder blocks where they differ from Ultralytics' rows of the same name.

The efficient hybrid encoder of D-FINE / DEIM is otherwise stock rows (1x1 ``Conv(act=False)`` projections and
lateral convs, ``AIFI``, ``nn.Upsample``, ``Concat``); these three blocks are what the host computes differently:

* ``DFineSCDown`` ``[c2, k, s]``: YOLOv10's SCDown (1x1 conv + BN, then k x k depthwise conv + BN with the stride)
  with **no** activation after the 1x1 (the host's ``SCDown`` has SiLU there).
* ``DFineCSP`` ``[c2, e]`` (repeats: RepVGG blocks): two 1x1 conv + BN + SiLU branches, one through ``n`` RepVGG
  blocks (3x3 + 1x1 conv + BN, summed, SiLU: the host's ``RepConv`` without identity), the two summed, then a 1x1
  conv when ``e`` != 1 (the host's ``RepC3`` differs in its inner width rule and output conv).
* ``DFineELAN`` ``[c2, e]`` (repeats: RepVGG blocks per CSP): D-FINE's ``RepNCSPELAN4``, a GELAN block: a 1x1 conv to
  ``2 * c2`` split in halves, two chained ``DFineCSP`` + 3x3 conv stages of width ``round(e * c2 // 2)`` (not rounded
  to 8: 21 channels in D-FINE-N), the four maps concatenated and fused by a 1x1 conv. The host's ``RepNCSPELAN4``
  uses another CSP block inside.

Attribute names follow the official modules (``cv1``..``cv4``, ``conv1``..``conv3``, ``bottlenecks``) so official
checkpoints map by renaming ``norm`` to ``bn``. Every conv + BN is the host's ``Conv`` and every RepVGG block the
host's ``RepConv``, so ``model.fuse()`` folds them as it folds stock models.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules.block import SCDown
from ultralytics.nn.modules.conv import Conv, RepConv

from ...registry import register


@register(rule="conv")
class DFineSCDown(SCDown):
    """SCDown without the activation after its 1x1 conv (D-FINE's downsampling conv)."""

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 2) -> None:
        super().__init__(c1, c2, k, s)
        self.cv1.act = nn.Identity()


@register(rule="conv_repeat")
class DFineCSP(nn.Module):
    """CSP layer of RepVGG blocks: ``conv3(bottlenecks(conv1(x)) + conv2(x))``."""

    def __init__(self, c1: int, c2: int, n: int = 3, e: float = 1.0) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.conv1 = Conv(c1, c_, 1, 1)
        self.conv2 = Conv(c1, c_, 1, 1)
        self.bottlenecks = nn.Sequential(*(RepConv(c_, c_, 3, 1) for _ in range(n)))
        self.conv3 = Conv(c_, c2, 1, 1) if c_ != c2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of the RepVGG branch and the shortcut branch, projected to ``c2``."""
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))


@register(rule="conv_repeat")
class DFineELAN(nn.Module):
    """D-FINE's GELAN fusion block (``RepNCSPELAN4`` with ``DFineCSP`` inside)."""

    def __init__(self, c1: int, c2: int, n: int = 3, e: float = 1.0) -> None:
        super().__init__()
        c3, c4 = 2 * c2, round(e * c2 // 2)
        if c4 < 1:
            raise ValueError(f"expansion {e} leaves no channels for the inner stages of a {c2}-channel block")
        self.c = c3 // 2
        self.cv1 = Conv(c1, c3, 1, 1)
        self.cv2 = nn.Sequential(DFineCSP(c3 // 2, c4, n, 1.0), Conv(c4, c4, 3, 1))
        self.cv3 = nn.Sequential(DFineCSP(c4, c4, n, 1.0), Conv(c4, c4, 3, 1))
        self.cv4 = Conv(c3 + 2 * c4, c2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Split, two chained CSP stages, concatenate all four maps, fuse."""
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in (self.cv2, self.cv3))
        return self.cv4(torch.cat(y, 1))
