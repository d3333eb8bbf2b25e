"""Deploy form of RT-DETR's multi-scale deformable attention (Ultralytics ``MSDeformAttn``), swapped in by ``fuse()``.

The host projects the values token-major ``(B, N, C)`` and then permutes every layer's whole value tensor to
channel-major, splits it by level and concatenates the sampled levels before weighting them. Here the value
projection is a 1x1 ``Conv1d`` (the same weights) on the channel-major features (the transpose of the shared input is
the same in every decoder layer, so runtimes compute it once), and each level is sliced, sampled, weighted and summed
as it comes: the same outputs without the per-layer full-size transpose, split and concat that dominate the decoder
on CPU runtimes. The thop count (Ultralytics' GFLOPs) is unchanged: a 1x1 ``Conv1d`` counts as the ``Linear`` did.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules.transformer import MSDeformAttn

from ..registry import deploy_form


class DeployDeformAttn(MSDeformAttn):
    """``MSDeformAttn`` with a CPU-friendly graph; ``value_proj`` is a 1x1 ``Conv1d`` (same parameters and outputs)."""

    def forward(
        self,
        query: torch.Tensor,
        refer_bbox: torch.Tensor,
        value: torch.Tensor,
        value_shapes: list,
        value_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Deformable attention of ``query`` over the flattened multi-level ``value`` (as ``MSDeformAttn``)."""
        bs, nq = query.shape[:2]
        heads, points, lp = self.n_heads, self.n_points, self.n_levels * self.n_points
        offsets = self.sampling_offsets(query).view(bs, nq, heads, lp, 2)
        weights = F.softmax(self.attention_weights(query).view(bs, nq, heads, lp), -1)
        if refer_bbox.shape[-1] == 2:  # points: offsets are in feature-map pixels of each level
            wh = torch.as_tensor(value_shapes, dtype=query.dtype, device=query.device).flip(-1)
            where = refer_bbox[:, :, None] + offsets / wh.repeat_interleave(points, 0)
        elif refer_bbox.shape[-1] == 4:  # boxes: offsets are relative to half the box size
            where = refer_bbox[:, :, None, :, :2] + offsets / points * refer_bbox[:, :, None, :, 2:] * 0.5
        else:
            raise ValueError(f"Last dim of reference_points must be 2 or 4, but got {refer_bbox.shape[-1]}.")
        grid = (2 * where - 1).transpose(1, 2).reshape(bs * heads, nq, lp, 2)
        weights = weights.transpose(1, 2).reshape(bs * heads, 1, nq, lp)
        values = self.value_proj(value.transpose(1, 2))  # (bs, heads * head_dim, N)
        if value_mask is not None:
            values = values.masked_fill(value_mask[:, None, :], 0.0)
        out, start = None, 0
        for level, (h, w) in enumerate(value_shapes):
            v = values[..., start : start + h * w].reshape(bs * heads, -1, h, w)
            start += h * w
            cols = slice(level * points, (level + 1) * points)
            s = F.grid_sample(v, grid[:, :, cols], mode="bilinear", padding_mode="zeros", align_corners=False)
            s = (s * weights[..., cols]).sum(-1)
            out = s if out is None else out + s
        return self.output_proj(out.view(bs, self.d_model, nq).transpose(1, 2))


@deploy_form("ultralytics.nn.modules.transformer.MSDeformAttn")
def to_deploy(m: MSDeformAttn) -> DeployDeformAttn:
    """The host's module -> its deploy form (same parameters and outputs)."""
    p = next(m.parameters())
    kw = {"device": p.device, "dtype": p.dtype}
    new = DeployDeformAttn(m.d_model, m.n_levels, m.n_heads, m.n_points).to(**kw)  # before loading: no rounding
    new.load_state_dict(m.state_dict())
    linear = new.value_proj
    conv = nn.Conv1d(linear.in_features, linear.out_features, 1, **kw)
    with torch.no_grad():
        conv.weight.copy_(linear.weight[:, :, None])
        conv.bias.copy_(linear.bias)
    new.value_proj = conv
    return new.train(m.training)
