"""D-FINE's encoder blocks where they differ from Ultralytics' rows of the same name.

The efficient hybrid encoder of D-FINE / DEIM is otherwise stock rows (1x1 ``Conv(act=False)`` projections and
lateral convs, ``AIFI``, ``nn.Upsample``, ``Concat``); these three blocks are what the host computes differently:

* ``DFineSCDown`` ``[c2, k, s]``: YOLOv10's SCDown (1x1 conv + BN, then k x k depthwise conv + BN with the stride)
  with **no** activation after the 1x1 (the host's ``SCDown`` has SiLU there).
* ``DFineCSP`` ``[c2, e]`` (repeats: RepVGG blocks): two 1x1 conv + BN + SiLU branches, one through ``n`` RepVGG
  blocks (3x3 + 1x1 conv + BN, summed, SiLU: the host's ``RepConv`` without identity), the two summed, then a 1x1
  conv when ``e`` != 1 (the host's ``RepC3`` differs in its inner width rule and output conv).
* ``DFineCSP2`` ``[c2, e]``: DEIMv2's CSP variant: one 1x1 conv to twice the width, split; one half through the
  RepVGG blocks, added to the other half, then the 1x1 conv when ``e`` != 1.
* ``DFineELAN`` ``[c2, e, csp]`` (repeats: RepVGG blocks per CSP): D-FINE's ``RepNCSPELAN4``, a GELAN block: a 1x1
  conv to ``2 * c2`` split in halves, two chained CSP (``csp``: ``DFineCSP``, or ``csp2`` for ``DFineCSP2`` as in
  DEIMv2) + 3x3 conv stages of width ``round(e * c2 // 2)`` (not rounded to 8: 21 channels in D-FINE-N), the four
  maps concatenated and fused by a 1x1 conv. The host's ``RepNCSPELAN4`` uses another CSP block inside.

DEIMv2's light encoder adds three small rows (the rest is stock ``Conv`` and ``nn.Upsample``):

* ``PoolDown`` ``[c2]``: 3x3 stride-2 average pooling (padding 1), then 1x1 conv + BN + SiLU (a second, coarser level
  from one backbone map, and the bottom-up downsampling);
* ``GAPFusion`` ``[]``: adds the map's global average to every position, then 1x1 conv + BN + SiLU;
* ``FeatureSum`` ``[]`` with a list ``from``: the element-wise sum of maps of equal channels (DEIMv2's ``sum`` fusion,
  where D-FINE concatenates).

Attribute names follow the official modules (``cv1``..``cv4``, ``conv1``..``conv3``, ``bottlenecks``) so official
checkpoints map by renaming ``norm`` to ``bn``. Every conv + BN is the host's ``Conv`` and every RepVGG block the
host's ``RepConv``, so ``model.fuse()`` folds them as it folds stock models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules.block import SCDown
from ultralytics.nn.modules.conv import Conv, RepConv

from ...channels import Layer
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
class DFineCSP2(nn.Module):
    """DEIMv2's CSP layer: ``conv3(a + bottlenecks(b))`` with ``a, b`` the halves of one 1x1 conv."""

    def __init__(self, c1: int, c2: int, n: int = 3, e: float = 1.0) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.conv1 = Conv(c1, 2 * c_, 1, 1)
        self.bottlenecks = nn.Sequential(*(RepConv(c_, c_, 3, 1) for _ in range(n)))
        self.conv3 = Conv(c_, c2, 1, 1) if c_ != c2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The shortcut half plus the RepVGG half, projected to ``c2``."""
        a, b = self.conv1(x).chunk(2, 1)
        return self.conv3(a + self.bottlenecks(b))


CSP_KINDS = {"csp": DFineCSP, "csp2": DFineCSP2}


@register(rule="conv_repeat")
class DFineELAN(nn.Module):
    """D-FINE's GELAN fusion block (``RepNCSPELAN4`` with ``DFineCSP`` or ``DFineCSP2`` inside)."""

    def __init__(self, c1: int, c2: int, n: int = 3, e: float = 1.0, csp: str = "csp") -> None:
        super().__init__()
        c3, c4 = 2 * c2, round(e * c2 // 2)
        if c4 < 1:
            raise ValueError(f"expansion {e} leaves no channels for the inner stages of a {c2}-channel block")
        if csp not in CSP_KINDS:
            raise ValueError(f"csp must be one of {', '.join(CSP_KINDS)}, got {csp!r}")
        block = CSP_KINDS[csp]
        self.c = c3 // 2
        self.cv1 = Conv(c1, c3, 1, 1)
        self.cv2 = nn.Sequential(block(c3 // 2, c4, n, 1.0), Conv(c4, c4, 3, 1))
        self.cv3 = nn.Sequential(block(c4, c4, n, 1.0), Conv(c4, c4, 3, 1))
        self.cv4 = Conv(c3 + 2 * c4, c2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Split, two chained CSP stages, concatenate all four maps, fuse."""
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in (self.cv2, self.cv3))
        return self.cv4(torch.cat(y, 1))


@register(rule="conv")
class PoolDown(Conv):
    """3x3 stride-2 average pooling, then the host's 1x1 ``Conv`` (conv + BN + SiLU); folds like any ``Conv``."""

    def __init__(self, c1: int, c2: int, act: bool = True) -> None:
        super().__init__(c1, c2, 1, 1, act=act)
        self.pool = nn.AvgPool2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool, conv, BN, activation."""
        return super().forward(self.pool(x))

    def forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
        """Pool, fused conv, activation."""
        return super().forward_fuse(self.pool(x))


@register(rule="same")
class GAPFusion(Conv):
    """``Conv(x + global_average(x))`` (1x1 conv + BN + SiLU): every position sees the image-level context."""

    def __init__(self, c1: int, act: bool = True) -> None:
        super().__init__(c1, c1, 1, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add the global average, conv, BN, activation."""
        return super().forward(x + F.adaptive_avg_pool2d(x, 1))

    def forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
        """Add the global average, fused conv, activation."""
        return super().forward_fuse(x + F.adaptive_avg_pool2d(x, 1))


def sum_channels(layer: Layer) -> None:
    """``FeatureSum`` takes a list of equally wide maps and keeps their width."""
    c1 = layer.c1
    if not isinstance(layer.f, list) or len(layer.f) < 2:
        raise layer.fail(f"sums two or more maps: 'from' must be a list such as [-1, 6], got {layer.f!r}")
    if len(set(c1)) != 1 or isinstance(c1[0], list):
        raise layer.fail(f"the maps of layers {layer.f} must have equal channels to be summed, got {list(c1)}")
    if layer.args:
        raise layer.fail(f"takes no arguments (write []), got {layer.args!r}")
    layer.c2 = c1[0]


@register(rule=sum_channels)
class FeatureSum(nn.Module):
    """The element-wise sum of the input maps (DEIMv2's ``sum`` fusion, where D-FINE concatenates)."""

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Sum the maps."""
        out = x[0]
        for t in x[1:]:
            out = out + t
        return out
