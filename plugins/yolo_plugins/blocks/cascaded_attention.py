"""Deploy form of EfficientViT's cascaded group attention (timm ``CascadedGroupAttention``), swapped in by ``fuse()``.

timm's module runs, per head, one 1x1 conv producing query, key and value together and then splits its output, and
scales the query after its depthwise conv. Here each head has three 1x1 convs (the rows of that conv), the scale is
folded into the depthwise conv and the attention biases are gathered once: the same outputs, without the per-head
channel splits (a slow reference kernel in OpenVINO) and the extra multiply. Inference only: the biases are a buffer.
"""

from __future__ import annotations

import torch
from torch import nn

from ..registry import deploy_form


def _conv(weight: torch.Tensor, bias: torch.Tensor, **kw) -> nn.Conv2d:
    """A conv holding these weights (copied), on their device and dtype."""
    c = nn.Conv2d(weight.shape[1] * kw.get("groups", 1), weight.shape[0], weight.shape[2:], **kw)
    c = c.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        c.weight.copy_(weight)
        c.bias.copy_(bias)
    return c


def _folded(m: nn.Module) -> nn.Conv2d:
    """A timm ``ConvNorm`` folded into one conv (a conv that is already folded is returned as is)."""
    return m if isinstance(m, nn.Conv2d) else m.fuse()


class DeployCascadedAttention(nn.Module):
    """Cascaded group attention with per-head query/key/value convs (see the module docstring)."""

    def __init__(self, src: nn.Module) -> None:
        super().__init__()
        kd = src.key_dim
        self.resolution = src.resolution  # read by timm's LocalWindowAttention (its window size)
        self.val_dim = src.val_dim
        self.q, self.k, self.v, self.dw = nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for qkv, dw in zip(src.qkvs, src.dws):
            qkv, dw = _folded(qkv), _folded(dw)
            w, b = qkv.weight.detach(), qkv.bias.detach()
            self.q.append(_conv(w[:kd], b[:kd]))
            self.k.append(_conv(w[kd : 2 * kd], b[kd : 2 * kd]))
            self.v.append(_conv(w[2 * kd :], b[2 * kd :]))
            self.dw.append(
                _conv(dw.weight.detach() * src.scale, dw.bias.detach() * src.scale, padding=dw.padding, groups=kd)
            )
        proj = src.proj
        self.proj = nn.Sequential(proj[0], _folded(proj[1]))
        with torch.no_grad():
            self.register_buffer("bias", src.attention_biases[:, src.attention_bias_idxs].detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same computation as timm's ``CascadedGroupAttention.forward`` on a ``(B, C, H, W)`` window batch."""
        b, _, h, w = x.shape
        parts = x.chunk(len(self.q), dim=1)
        feat, outs = parts[0], []
        for i, (q, k, v, dw) in enumerate(zip(self.q, self.k, self.v, self.dw)):
            if i:
                feat = feat + parts[i]  # the cascade: each head also sees the previous head's output
            attn = dw(q(feat)).flatten(2).transpose(-2, -1) @ k(feat).flatten(2)
            attn = (attn + self.bias[i]).softmax(dim=-1)
            feat = (v(feat).flatten(2) @ attn.transpose(-2, -1)).view(b, self.val_dim, h, w)
            outs.append(feat)
        return self.proj(torch.cat(outs, 1))


@deploy_form("timm.models.efficientvit_msra.CascadedGroupAttention")
def to_deploy(m: nn.Module) -> DeployCascadedAttention:
    """timm's attention module -> its deploy form (same outputs)."""
    return DeployCascadedAttention(m).train(m.training)
