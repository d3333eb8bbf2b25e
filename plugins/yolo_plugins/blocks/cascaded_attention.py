"""Deploy form of EfficientViT's cascaded group attention (timm ``CascadedGroupAttention``), swapped in by ``fuse()``.

timm's module runs, per head, one 1x1 conv producing query, key and value together, splits its output and scales
the query after its depthwise conv. When traced for export, this form runs three 1x1 convs per head (slices of that
conv's weights, constants in the exported graph), folds the scale into the depthwise conv and uses the attention
biases gathered once: the same outputs without the per-head channel splits (a slow reference kernel in OpenVINO) and
the extra multiply. In eager PyTorch, where one conv and a split are faster than three convs, it runs timm's module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import deploy_form
from .export_mode import exporting


def _folded(m: nn.Module) -> nn.Conv2d:
    """A timm ``ConvNorm`` folded into one conv (a conv that is already folded is returned as is)."""
    return m if isinstance(m, nn.Conv2d) else m.fuse()


class DeployCascadedAttention(nn.Module):
    """timm's cascaded group attention (``self.m``, folded), with a split-free graph when exported."""

    is_deploy_form = True  # fuse() does not look inside: self.m is the module this replaced

    def __init__(self, src: nn.Module) -> None:
        super().__init__()
        for i, (qkv, dw) in enumerate(zip(src.qkvs, src.dws)):
            src.qkvs[i], src.dws[i] = _folded(qkv), _folded(dw)
        src.proj[1] = _folded(src.proj[1])
        self.m = src
        self.resolution = src.resolution  # read by timm's LocalWindowAttention (its window size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """timm's ``CascadedGroupAttention.forward`` on a ``(B, C, H, W)`` window batch (split-free when exported)."""
        if not exporting():
            return self.m(x)
        m, kd = self.m, self.m.key_dim
        b, _, h, w = x.shape
        bias = m.attention_biases[:, m.attention_bias_idxs]
        parts = x.chunk(len(m.qkvs), dim=1)
        feat, outs = parts[0], []
        for i, (qkv, dw) in enumerate(zip(m.qkvs, m.dws)):
            if i:
                feat = feat + parts[i]  # the cascade: each head also sees the previous head's output
            wt, bs = qkv.weight, qkv.bias
            q = F.conv2d(feat, wt[:kd], bs[:kd])
            q = F.conv2d(q, dw.weight * m.scale, dw.bias * m.scale, padding=dw.padding, groups=kd)
            k = F.conv2d(feat, wt[kd : 2 * kd], bs[kd : 2 * kd])
            v = F.conv2d(feat, wt[2 * kd :], bs[2 * kd :])
            attn = (q.flatten(2).transpose(-2, -1) @ k.flatten(2) + bias[i]).softmax(dim=-1)
            feat = (v.flatten(2) @ attn.transpose(-2, -1)).view(b, m.val_dim, h, w)
            outs.append(feat)
        return m.proj(torch.cat(outs, 1))


@deploy_form("timm.models.efficientvit_msra.CascadedGroupAttention")
def to_deploy(m: nn.Module) -> DeployCascadedAttention:
    """timm's attention module -> its deploy form (same parameters and outputs)."""
    return DeployCascadedAttention(m).train(m.training)
