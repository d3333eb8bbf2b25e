"""Deploy form of HGNetV2's learnable affine block (``scale * x + bias``, two scalars), swapped in by ``fuse()``.

HGNetV2 (D-FINE, DEIM, DEIMv2 backbones) ends most conv + BN + ReLU units with this affine step. Exported as ``Mul``
and ``Add``, it makes ONNX Runtime convert every such conv's output out of its blocked (NCHWc) layout and back
(``ReorderOutput``/``ReorderInput``): measured on D-FINE-N at 640 px, 35 of 228 ms of kernel time. Traced or exported,
this form computes the same affine map as a depthwise 1x1 convolution (weight ``scale``, bias ``bias`` for every
channel), which the runtimes keep in their convolution layout; eager PyTorch runs the host's forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.hgnet import LearnableAffineBlock

from ..registry import deploy_form
from .export_mode import exporting


class AffineConv(LearnableAffineBlock):
    """``LearnableAffineBlock`` (same parameters and outputs) exported as a depthwise 1x1 convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``scale * x + bias``; as a per-channel 1x1 convolution while traced or exported."""
        if not exporting() or x.dim() != 4:
            return super().forward(x)
        c = int(x.shape[1])  # a constant of the exported graph: the convolution's kernel needs a known shape
        return F.conv2d(x, self.scale.reshape(1, 1, 1, 1).expand(c, 1, 1, 1), self.bias.expand(c), groups=c)


@deploy_form("timm.models.hgnet.LearnableAffineBlock")
def affine_conv(block: LearnableAffineBlock) -> AffineConv:
    """The deploy form of ``block``: the same module, retyped (its parameters are kept)."""
    block.__class__ = AffineConv
    return block
