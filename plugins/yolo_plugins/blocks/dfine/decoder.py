"""``FDRDecoder``: the D-FINE / DEIM / DEIMv2 decoder head as an Ultralytics RT-DETR head.

YAML ``[[P4, P5], 1, FDRDecoder, [nc, hidden, queries, points, heads, layers, ffn, dropout, act, eval_idx, denoising,
label_noise, box_noise, learnt_query, mlp_act, reg_max, reg_scale, style, gateway, share_bbox_head]]`` (trailing
arguments optional; ``points`` an int or one count per level; ``style`` "dfine" or "deimv2"). Input channels are
inferred; a level whose channels differ from ``hidden`` gets a 1x1 conv + BN projection (the official models feed
``hidden`` channels and have none).

What it computes at inference, per image (D-FINE, "Redefine Regression Task of DETRs as Fine-grained Distribution
Refinement"; DEIM uses the same head with SiLU in the FFN and MLPs):

* query selection as in RT-DETR: encoder tokens -> ``enc_output`` -> top-k by class score, reference boxes from the
  anchors + ``enc_bbox_head``;
* per decoder layer: query position MLP (clamped to +-10), self-attention, multi-scale deformable cross-attention
  *without* value/output projections and with a point count per level, a gate fusing the two, an FFN;
* boxes as distributions (``distribution``): layer 0's ``pre_bbox_head`` sets the reference box; every layer adds its
  bin logits to the previous layer's and the integral gives the edges; scores = class head + LQE (an MLP on the top-4
  bin probabilities of each edge).

``style: deimv2`` (DEIMv2) changes the layers, not the flow: RMSNorm for LayerNorm, a SwiGLU FFN, the gate optional
(``gateway``; without it cross-attention is added and normalised), a three-layer query position MLP run once on the
selected boxes, no ``enc_output`` before query selection; ``share_bbox_head`` makes every layer use one box head.

It subclasses ``RTDETRDecoder`` so that Ultralytics' model, predictor, validator, exporter, ``get_flops`` and
``yolo benchmark`` treat it as an RT-DETR head, and reuses its anchors, encoder input and query selection. The class is
``RTDETRFDRDecoder`` (YAML name ``FDRDecoder``): Ultralytics sends a ``.pt`` or exported model to its RT-DETR
predictor and validator when the head's class name contains "RTDETR" (``YOLO("any-name.pt")``, ``yolo benchmark``).
Its output is the host's: ``(y, raw)`` in eval (``y`` = (B, k, 6) ``[cx, cy, w, h, score, class]``), ``y`` alone
when exported, and in training the five tensors of the stock RT-DETR loss (every layer's boxes and scores, the
encoder's top-k, the denoising meta) and a dict of what its own criterion adds (``criterion.FDRCriterion``: bin
logits, reference boxes, the first layer's pre-refinement output). Parameter names follow the official
``DFINETransformer`` so released checkpoints map by prefix.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules.head import RTDETRDecoder
from ultralytics.nn.modules.utils import inverse_sigmoid

from ...registry import register
from .criterion import FDRCriterion
from .distribution import distance2bbox, integral, weighting_function

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}
STYLES = ("dfine", "deimv2")


def activation(name: str | nn.Module | None) -> nn.Module:
    """An activation module from a YAML name (``relu``, ``silu``, ``gelu``) or a module (``None``: ReLU)."""
    if name is None:
        return nn.ReLU()
    if isinstance(name, nn.Module):
        return name
    if not isinstance(name, str) or name.lower() not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name.lower()]()


class MLP(nn.Module):
    """``layers`` of ``nn.Linear`` with an activation between them (none after the last)."""

    def __init__(self, c1: int, hidden: int, c2: int, n: int, act: str | nn.Module | None = "relu") -> None:
        super().__init__()
        dims = [c1] + [hidden] * (n - 1) + [c2]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layers."""
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else self.act(layer(x))
        return x


class DeformableSampling(nn.Module):
    """Multi-scale deformable attention over per-head slices of the memory (no value or output projection).

    Each head samples ``points[l]`` locations on level ``l`` around the query's reference box (offsets scaled by the
    box size, 0.5 and 1 / ``points[l]``) and weights all of its samples with one softmax.
    """

    def __init__(self, dim: int, heads: int, points: Sequence[int]) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden dim {dim} is not divisible by {heads} heads")
        self.heads, self.points = heads, [int(p) for p in points]
        total = heads * sum(self.points)
        self.sampling_offsets = nn.Linear(dim, total * 2)
        self.attention_weights = nn.Linear(dim, total)
        scale = [1 / p for p in self.points for _ in range(p)]
        self.register_buffer("num_points_scale", torch.tensor(scale), persistent=False)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        angle = torch.arange(self.heads, dtype=torch.float32) * (2 * torch.pi / self.heads)
        grid = torch.stack([angle.cos(), angle.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values
        steps = torch.cat([torch.arange(1, p + 1) for p in self.points]).view(1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_((grid.view(self.heads, 1, 2) * steps).flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)

    def forward(
        self, query: torch.Tensor, boxes: torch.Tensor, values: list[torch.Tensor], shapes: list[list[int]]
    ) -> torch.Tensor:
        """``query`` (B, N, C), reference ``boxes`` (B, N, 4) in [0, 1], ``values`` per level (B*heads, C/heads,
        h, w); returns (B, N, C)."""
        b, n = query.shape[:2]
        p = sum(self.points)
        offsets = self.sampling_offsets(query).view(b, n, self.heads, p, 2)
        weights = self.attention_weights(query).view(b, n, self.heads, p).softmax(-1)
        scale = self.num_points_scale.to(query.dtype).unsqueeze(-1)
        ref = boxes[:, :, None, None]
        locations = ref[..., :2] + offsets * scale * ref[..., 2:] * 0.5
        grids = (2 * locations - 1).permute(0, 2, 1, 3, 4).flatten(0, 1)  # (B*heads, N, P, 2)
        samples = [
            F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
            for v, g in zip(values, grids.split(self.points, dim=2))
        ]  # each (B*heads, C/heads, N, points[l])
        weights = weights.permute(0, 2, 1, 3).reshape(b * self.heads, 1, n, p)
        out = (torch.cat(samples, -1) * weights).sum(-1)  # (B*heads, C/heads, N)
        return out.view(b, -1, n).permute(0, 2, 1)


class RMSNorm(nn.Module):
    """Root-mean-square normalisation with a learned ``scale``, computed in (at most) float32 like DEIMv2's."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x / rms(x) * scale``."""
        y = x.float()
        return (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.scale


class SwiGLUFFN(nn.Module):
    """``w3(silu(a) * b)`` with ``a, b`` the halves of ``w12(x)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)
        for layer in (self.w12, self.w3):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The gated FFN."""
        a, b = self.w12(x).chunk(2, -1)
        return self.w3(F.silu(a) * b)


NORMS = {"layer": nn.LayerNorm, "rms": RMSNorm}


class Gate(nn.Module):
    """Gated fusion of the self-attention stream and the cross-attention output, then LayerNorm (or RMSNorm)."""

    def __init__(self, dim: int, norm: str = "layer") -> None:
        super().__init__()
        self.gate = nn.Linear(2 * dim, 2 * dim)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)  # sigmoid(0) = 0.5: an even mix at the start
        self.norm = NORMS[norm](dim)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """``norm(g1 * x1 + g2 * x2)`` with per-channel gates from both inputs."""
        g1, g2 = torch.sigmoid(self.gate(torch.cat([x1, x2], -1))).chunk(2, -1)
        return self.norm(g1 * x1 + g2 * x2)


class FDRLayer(nn.Module):
    """One decoder layer: self-attention, deformable cross-attention fused by a gate (or added and normalised), FFN;
    post-norm. ``style`` "dfine": LayerNorm, gate, two-layer FFN with ``act``; "deimv2": RMSNorm, gate optional,
    SwiGLU FFN of hidden width ``ffn // 2``."""

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn: int,
        dropout: float,
        act: str | nn.Module | None,
        points: Sequence[int],
        style: str = "dfine",
        gateway: bool = True,
    ) -> None:
        super().__init__()
        norm = NORMS["rms" if style == "deimv2" else "layer"]
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = norm(dim)
        self.cross_attn = DeformableSampling(dim, heads, points)
        self.dropout2 = nn.Dropout(dropout)
        if gateway:
            self.gateway = Gate(dim, "rms" if style == "deimv2" else "layer")
        else:
            self.norm2 = norm(dim)
        if style == "deimv2":
            self.swish_ffn = SwiGLUFFN(dim, ffn // 2)
        else:
            self.linear1 = nn.Linear(dim, ffn)
            self.activation = activation(act)
            self.dropout3 = nn.Dropout(dropout)
            self.linear2 = nn.Linear(ffn, dim)
            nn.init.xavier_uniform_(self.linear1.weight)
            nn.init.xavier_uniform_(self.linear2.weight)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = norm(dim)

    def forward(
        self,
        x: torch.Tensor,
        boxes: torch.Tensor,
        values: list[torch.Tensor],
        shapes: list[list[int]],
        attn_mask: torch.Tensor | None,
        pos: torch.Tensor,
    ) -> torch.Tensor:
        """Update the queries ``x`` (B, N, C) given reference ``boxes`` and position embeddings ``pos``."""
        q = x + pos
        x = self.norm1(x + self.dropout1(self.self_attn(q, q, value=x, attn_mask=attn_mask)[0]))
        cross = self.dropout2(self.cross_attn(x + pos, boxes, values, shapes))
        x = self.gateway(x, cross) if hasattr(self, "gateway") else self.norm2(x + cross)
        if hasattr(self, "swish_ffn"):
            x = x + self.dropout4(self.swish_ffn(x))
        else:
            x = x + self.dropout4(self.linear2(self.dropout3(self.activation(self.linear1(x)))))
        return self.norm3(x.clamp(min=-65504, max=65504))


class LQE(nn.Module):
    """Localisation quality: an MLP on the top-``k`` bin probabilities (and their mean) of each edge, added to the
    class logits."""

    def __init__(self, reg_max: int, k: int = 4, hidden: int = 64, act: str | nn.Module | None = "relu") -> None:
        super().__init__()
        self.k, self.reg_max = k, reg_max
        self.reg_conf = MLP(4 * (k + 1), hidden, 1, 2, act)
        nn.init.zeros_(self.reg_conf.layers[-1].weight)
        nn.init.zeros_(self.reg_conf.layers[-1].bias)

    def forward(self, scores: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
        """``scores`` (B, N, nc) plus the quality term of ``corners`` (B, N, 4 * (reg_max + 1))."""
        b, n, _ = corners.shape
        prob = corners.reshape(b, n, 4, self.reg_max + 1).softmax(-1)
        top = prob.topk(self.k, dim=-1).values
        stat = torch.cat([top, top.mean(-1, keepdim=True)], -1)
        return scores + self.reg_conf(stat.reshape(b, n, -1))


class FDRStack(nn.Module):
    """The decoder layers and their LQE modules (the official ``decoder.decoder``)."""

    def __init__(self, layer_args: tuple, layers: int, reg_max: int, act: str | nn.Module | None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(FDRLayer(*layer_args) for _ in range(layers))
        self.lqe_layers = nn.ModuleList(LQE(reg_max, act=act) for _ in range(layers))


@register("FDRDecoder", rule="detr_head")
class RTDETRFDRDecoder(RTDETRDecoder):
    """D-FINE / DEIM decoder: RT-DETR query selection, gated decoder layers, box distributions refined per layer."""

    def __init__(
        self,
        nc: int = 80,
        ch: Sequence[int] = (256, 256, 256),
        hd: int = 256,
        nq: int = 300,
        ndp: int | Sequence[int] = 4,
        nh: int = 8,
        ndl: int = 6,
        d_ffn: int = 1024,
        dropout: float = 0.0,
        act: str | nn.Module | None = "relu",
        eval_idx: int = -1,
        nd: int = 100,
        label_noise_ratio: float = 0.5,
        box_noise_scale: float = 1.0,
        learnt_init_query: bool = False,
        mlp_act: str | nn.Module | None = "relu",
        reg_max: int = 32,
        reg_scale: float = 4.0,
        style: str = "dfine",
        gateway: bool = True,
        share_bbox_head: bool = False,
    ) -> None:
        nn.Module.__init__(self)  # RTDETRDecoder's own layers are not built: this head has its own
        if style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
        ch = [int(c) for c in ch]
        points = [int(ndp)] * len(ch) if isinstance(ndp, int) else [int(p) for p in ndp]
        if len(points) != len(ch):
            raise ValueError(f"points {list(points)} must give one count per input level ({len(ch)} levels)")
        if not -ndl <= eval_idx < ndl:
            raise ValueError(f"eval_idx {eval_idx} out of range for {ndl} decoder layers")
        self.hidden_dim, self.nhead, self.nl, self.nc = hd, nh, len(ch), nc
        self.num_queries, self.num_decoder_layers = nq, ndl
        self.eval_idx = eval_idx % ndl
        self.reg_max, self.style = reg_max, style
        self.input_proj = nn.ModuleList(
            nn.Identity()
            if c == hd
            else nn.Sequential(OrderedDict(conv=nn.Conv2d(c, hd, 1, bias=False), norm=nn.BatchNorm2d(hd)))
            for c in ch
        )
        self.register_buffer("up", torch.tensor([0.5]))
        self.register_buffer("reg_scale", torch.tensor([float(reg_scale)]))
        self.decoder = FDRStack((hd, nh, d_ffn, dropout, act, points, style, gateway), ndl, reg_max, act)
        self.denoising_class_embed = nn.Embedding(nc + 1, hd, padding_idx=nc)  # the official padding row
        self.num_denoising, self.label_noise_ratio, self.box_noise_scale = nd, label_noise_ratio, box_noise_scale
        self.learnt_init_query = learnt_init_query
        if learnt_init_query:
            self.tgt_embed = nn.Embedding(nq, hd)
        if style == "deimv2":  # a deeper query position MLP, run once; the encoder tokens are scored as they are
            self.query_pos_head = MLP(4, hd, hd, 3, mlp_act)
            self.enc_output = nn.Identity()
        else:
            self.query_pos_head = MLP(4, 2 * hd, hd, 2, mlp_act)
            self.enc_output = nn.Sequential(OrderedDict(proj=nn.Linear(hd, hd), norm=nn.LayerNorm(hd)))
        self.enc_score_head = nn.Linear(hd, nc)
        self.enc_bbox_head = MLP(hd, hd, 4, 3, mlp_act)
        self.dec_score_head = nn.ModuleList(nn.Linear(hd, nc) for _ in range(ndl))
        self.pre_bbox_head = MLP(hd, hd, 4, 3, mlp_act)
        box_head = MLP(hd, hd, 4 * (reg_max + 1), 3, mlp_act) if share_bbox_head else None
        self.dec_bbox_head = nn.ModuleList(box_head or MLP(hd, hd, 4 * (reg_max + 1), 3, mlp_act) for _ in range(ndl))
        self._reset_parameters()

    CRITERIA = ("dfine", "deim")  # ``criterion:`` values this head trains with (``rtdetr_loss``); first: default

    def build_criterion(self, name: str, nc: int) -> FDRCriterion:
        """The family's criterion: ``dfine`` with the varifocal loss, ``deim`` with DEIM's MAL."""
        return FDRCriterion(nc, self.reg_max, cls="mal" if name == "deim" else "vfl")

    @staticmethod
    def criterion_inputs(preds: tuple) -> dict:
        """``FDRCriterion``'s input from this head's output: training (six items) or validation (``raw``, five)."""
        boxes, logits, enc_boxes, enc_logits, dn_meta = preds[:5]
        extra = dict(preds[5]) if len(preds) > 5 else {}
        out = {"boxes": boxes, "logits": logits, "dn_meta": dn_meta, **extra}
        if len(preds) > 5:
            out.update(enc_boxes=enc_boxes, enc_logits=enc_logits)
        if dn_meta is None:
            return out
        split = dn_meta["dn_num_split"]
        for key, dim in (("boxes", 2), ("logits", 2), ("corners", 2), ("refs", 1), ("pre_boxes", 1), ("pre_logits", 1)):
            if key in out:
                out[f"dn_{key}"], out[key] = torch.split(out[key], split, dim=dim)
        return out

    def _reset_parameters(self) -> None:
        from ultralytics.nn.modules.utils import bias_init_with_prob

        bias = bias_init_with_prob(0.01)
        nn.init.constant_(self.enc_score_head.bias, bias)
        for head in (self.enc_bbox_head, self.pre_bbox_head, *self.dec_bbox_head):
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
        for head in self.dec_score_head:
            nn.init.constant_(head.bias, bias)
        if isinstance(self.enc_output, nn.Sequential):
            nn.init.xavier_uniform_(self.enc_output.proj.weight)
        for layer in self.query_pos_head.layers:
            nn.init.xavier_uniform_(layer.weight)
        nn.init.normal_(self.denoising_class_embed.weight[:-1].data)
        if self.learnt_init_query:
            nn.init.xavier_uniform_(self.tgt_embed.weight)
        for proj in self.input_proj:
            if isinstance(proj, nn.Sequential):
                nn.init.xavier_uniform_(proj.conv.weight)

    def forward(self, x: list[torch.Tensor], batch: dict | None = None) -> tuple | torch.Tensor:
        """Inference: ``(y, raw)`` (``y`` alone when exported) as ``RTDETRDecoder``; training: the five tensors of the
        stock RT-DETR loss and the criterion's extras (``_decode``)."""
        from ultralytics.models.utils.ops import get_cdn_group

        feats, shapes = self._get_encoder_input(x)
        dn_embed, dn_bbox, attn_mask, dn_meta = get_cdn_group(
            batch,
            self.nc,
            min(self.num_queries, feats.shape[1]),
            self.denoising_class_embed.weight[: self.nc],
            self.num_denoising,
            self.label_noise_ratio,
            self.box_noise_scale,
            self.training,
        )
        embed, refer_bbox, enc_bboxes, enc_scores = self._get_decoder_input(feats, shapes, dn_embed, dn_bbox)
        dec_bboxes, dec_scores, extra = self._decode(embed, refer_bbox, feats, shapes, attn_mask)
        if self.training and dn_meta is None:  # keep the denoising embedding in the graph (DDP) without targets
            dec_bboxes = dec_bboxes + 0 * self.denoising_class_embed.weight.sum()
        if self.training:  # what the family's criterion needs besides the stock five (``criterion.FDRCriterion``)
            return dec_bboxes, dec_scores, enc_bboxes, enc_scores, dn_meta, extra
        raw = dec_bboxes, dec_scores, enc_bboxes, enc_scores, dn_meta
        y = self._detections(dec_bboxes.squeeze(0), dec_scores.squeeze(0).sigmoid())
        return y if self.export else (y, raw)

    def _detections(self, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The host's inference output: its own top-k post-processing where it has one, else boxes and scores."""
        if hasattr(RTDETRDecoder, "postprocess"):
            return self.postprocess(boxes, scores)
        return torch.cat([boxes, scores], -1)

    def _decode(
        self,
        target: torch.Tensor,
        refer_bbox: torch.Tensor,
        memory: torch.Tensor,
        shapes: list[list[int]],
        attn_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Run the decoder layers; (layers, B, N, 4) boxes and (layers, B, N, nc) logits of every layer in training,
        of the ``eval_idx`` layer in eval; in training also every layer's bin logits (``corners``) and reference boxes
        (``refs``) and the first layer's pre-refinement boxes and logits (``pre_boxes``, ``pre_logits``)."""
        b = memory.shape[0]
        heads = self.nhead
        split = [h * w for h, w in shapes]
        value = memory.view(b, memory.shape[1], heads, -1).permute(0, 2, 3, 1).flatten(0, 1)  # (B*heads, C/h, S)
        values = [v.reshape(b * heads, -1, h, w) for v, (h, w) in zip(value.split(split, -1), shapes)]
        project = weighting_function(self.reg_max, self.up, self.reg_scale)
        ref = refer_bbox.sigmoid()
        out_boxes, out_scores, out_corners = [], [], []
        extra: dict = {}
        x, prev_x, prev_corners, initial = target, 0, 0, None
        pos = self.query_pos_head(ref).clamp(min=-10, max=10)
        for i, layer in enumerate(self.decoder.layers):
            if i and self.style != "deimv2":  # D-FINE embeds each layer's reference box; DEIMv2 the first one only
                pos = self.query_pos_head(ref).clamp(min=-10, max=10)
            x = layer(x, ref, values, shapes, attn_mask, pos)
            if i == 0:  # the reference box every layer's distances are measured from
                pre = torch.sigmoid(self.pre_bbox_head(x) + inverse_sigmoid(ref))
                initial = pre.detach()
                if self.training:
                    extra.update(pre_boxes=pre, pre_logits=self.dec_score_head[0](x), refs=initial)
            corners = self.dec_bbox_head[i](x + prev_x) + prev_corners
            boxes = distance2bbox(initial, integral(corners, project), self.reg_scale)
            if self.training or i == self.eval_idx:
                scores = self.decoder.lqe_layers[i](self.dec_score_head[i](x), corners)
                out_boxes.append(boxes)
                out_scores.append(scores)
                out_corners.append(corners)
                if not self.training:
                    break
            prev_corners, prev_x, ref = corners, x.detach(), boxes.detach()
        if self.training:
            extra.update(corners=torch.stack(out_corners), up=self.up, reg_scale=self.reg_scale)
        return torch.stack(out_boxes), torch.stack(out_scores), extra
