"""Deploy form of RT-DETR's multi-scale deformable attention (Ultralytics ``MSDeformAttn``), swapped in by ``fuse()``.

The host projects the values token-major ``(B, N, C)`` and then permutes every layer's whole value tensor to
channel-major, splits it by level and concatenates the sampled levels before weighting them. When traced for export,
this form projects the channel-major features with the same weights as a 1x1 convolution (the transpose of the
shared input is the same in every decoder layer, so runtimes compute it once) and slices, samples, weights and sums
each level as it comes: the same outputs without the per-layer full-size transpose, split and concat that dominate
the decoder on CPU runtimes. In eager PyTorch, where the host's path is faster, it runs the host's forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from ultralytics.nn.modules.transformer import MSDeformAttn

from ..registry import deploy_form
from .export_mode import exporting


class DeployDeformAttn(MSDeformAttn):
    """``MSDeformAttn`` (same parameters and outputs) with a transpose- and concat-free graph when exported."""

    def forward(
        self,
        query: torch.Tensor,
        refer_bbox: torch.Tensor,
        value: torch.Tensor,
        value_shapes: list,
        value_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Deformable attention of ``query`` over the flattened multi-level ``value`` (as ``MSDeformAttn``)."""
        if not exporting() or refer_bbox.shape[-1] != 4:
            return super().forward(query, refer_bbox, value, value_shapes, value_mask)
        bs, nq = query.shape[:2]
        heads, points, lp = self.n_heads, self.n_points, self.n_levels * self.n_points
        offsets = self.sampling_offsets(query).view(bs, nq, heads, lp, 2)
        weights = F.softmax(self.attention_weights(query).view(bs, nq, heads, lp), -1)
        where = refer_bbox[:, :, None, :, :2] + offsets / points * refer_bbox[:, :, None, :, 2:] * 0.5
        grid = (2 * where - 1).transpose(1, 2).reshape(bs * heads, nq, lp, 2)
        weights = weights.transpose(1, 2).reshape(bs * heads, 1, nq, lp)
        proj = self.value_proj
        values = F.conv1d(value.transpose(1, 2), proj.weight[:, :, None], proj.bias)  # (bs, heads * head_dim, N)
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
    new = DeployDeformAttn(m.d_model, m.n_levels, m.n_heads, m.n_points).to(device=p.device, dtype=p.dtype)
    new.load_state_dict(m.state_dict())  # after .to(): loading into float32 first would round float64 weights
    return new.train(m.training)
