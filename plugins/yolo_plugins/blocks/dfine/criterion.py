"""``FDRCriterion``: the D-FINE / DEIM training loss of ``FDRDecoder``, computed inside Ultralytics' trainer.

Terms, each weighted as in the official recipes (D-FINE, "Redefine Regression Task of DETRs as Fine-grained
Distribution Refinement"; DEIM, "DETR with Improved Matching for Fast Convergence"):

* classification: varifocal loss (``dfine``: alpha 0.75, gamma 2) or DEIM's matchability-aware loss (``deim``:
  gamma 1.5), on each output's own Hungarian match;
* boxes: L1 x5 and GIoU x2 on the *union* of every layer's matches (``matching.union``);
* FGL x0.15 (fine-grained localisation): each edge's bin distribution against the two bins around the true edge
  distance, weighted by the matched box's IoU;
* DDF x1.5 (decoupled distillation of localisation): every earlier layer's bin distributions distilled from the last
  layer's (KL at temperature 5), matched and unmatched queries balanced.

Outputs scored: the decoder layers, the first layer's pre-refinement box (``pre``), the encoder's top-k proposals
(``enc``: classification and boxes only) and the denoising groups (``dn``: every layer and ``pre``, fixed pairs).
Ultralytics' ``HungarianMatcher`` matches (class 2, L1 5, GIoU 2). Sums are normalised by the number of boxes in the
batch (boxes and localisation: by the size of the union set), averaged over DDP ranks like the official criterion.

``forward`` returns the total and a dict of detached terms by name (summed over every output), which the trainer
logs as ``results.csv`` columns; in validation (the head returns its chosen layer only) the same names over that layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.utils.metrics import bbox_iou

from .distribution import weighting_function
from .matching import Match, denoising, flat, union

WEIGHTS = {"class": 1.0, "l1": 5.0, "giou": 2.0, "fgl": 0.15, "ddf": 1.5}
CLASS_LOSSES = ("vfl", "mal")


def mal(logits: torch.Tensor, quality: torch.Tensor, target: torch.Tensor, gamma: float = 1.5) -> torch.Tensor:
    """DEIM's matchability-aware loss, summed over queries and classes and averaged over queries (per image).

    ``quality``: the matched box's IoU at its class (0 elsewhere); ``target``: 1 at the matched class. Matched queries
    learn ``IoU**gamma`` at full weight, so low-IoU matches still count; the rest learn 0 with weight ``p**gamma``.
    """
    logits = logits.float()
    weight = logits.detach().sigmoid().pow(gamma) * (1 - target) + target
    loss = F.binary_cross_entropy_with_logits(logits, quality.float().pow(gamma), weight=weight, reduction="none")
    return loss.mean(1).sum()


def class_loss(
    logits: torch.Tensor, labels: torch.Tensor, ious: torch.Tensor, idx: tuple, kind: str, gamma: float, alpha: float
) -> torch.Tensor:
    """Varifocal (``vfl``) or matchability-aware (``mal``) loss summed over queries and classes, averaged over queries.

    Matched queries are pulled towards their box's IoU (``mal``: IoU**gamma at full weight), unmatched ones towards 0
    with weight ``alpha * p**gamma`` (``mal``: ``p**gamma``; ``p`` the detached predicted probability).
    """
    logits = logits.float()
    target = torch.zeros_like(logits)
    target[idx[0], idx[1], labels] = 1.0
    quality = torch.zeros_like(logits)
    quality[idx[0], idx[1], labels] = ious.float()
    if kind == "mal":
        return mal(logits, quality, target, gamma)
    weight = alpha * logits.detach().sigmoid().pow(gamma) * (1 - target) + quality
    loss = F.binary_cross_entropy_with_logits(logits, quality, weight=weight, reduction="none")
    return loss.mean(1).sum()


def edge_targets(
    refs: torch.Tensor, boxes: torch.Tensor, reg_max: int, up: torch.Tensor, reg_scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The true edge distances of ``boxes`` (cx, cy, w, h) from ``refs`` as bin coordinates for the FGL.

    Returns, per edge (flattened, left/top/right/bottom), the fractional bin index (its floor is the left bin) and the
    weights of the right and left bin (linear in the distance to each bin's offset ``W(n)``); distances outside the
    bins put all weight on the outermost bin.
    """
    scale = reg_scale.abs()
    rx, ry, rw, rh = refs.unbind(-1)
    x1, y1 = boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2
    x2, y2 = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
    unit_w, unit_h = rw / scale + 1e-16, rh / scale + 1e-16
    dist = torch.stack([(rx - x1) / unit_w, (ry - y1) / unit_h, (x2 - rx) / unit_w, (y2 - ry) / unit_h], -1)
    dist = (dist - 0.5 * scale).reshape(-1)
    offsets = weighting_function(reg_max, up, reg_scale).to(dist)
    left = (offsets[None] <= dist[:, None]).sum(1) - 1  # the bin at or below each distance
    below, above = left < 0, left >= reg_max
    inside = ~(below | above)
    i = left.clamp(0, reg_max - 1)
    lo, hi = offsets[i], offsets[i + 1]
    w_right = torch.where(inside, (dist - lo).abs() / ((dist - lo).abs() + (hi - dist).abs()), above.to(dist))
    w_left = torch.where(inside, 1 - w_right, below.to(dist))
    index = torch.where(above, torch.full_like(dist, reg_max - 0.1), torch.where(below, 0.0, left.to(dist)))
    return index.clamp(0, reg_max - 0.1), w_right, w_left


class FDRCriterion(nn.Module):
    """The D-FINE (``vfl``) / DEIM (``mal``) criterion over every output of ``FDRDecoder`` in training."""

    def __init__(
        self,
        nc: int,
        reg_max: int = 32,
        cls: str = "vfl",
        weights: dict[str, float] | None = None,
        alpha: float = 0.75,
        gamma: float | None = None,
        temperature: float = 5.0,
    ) -> None:
        super().__init__()
        from ultralytics.models.utils.ops import HungarianMatcher

        if cls not in CLASS_LOSSES:
            raise ValueError(f"classification loss must be one of {', '.join(CLASS_LOSSES)}, got {cls!r}")
        self.nc, self.reg_max, self.cls = nc, reg_max, cls
        self.weights = {**WEIGHTS, **(weights or {})}
        self.alpha, self.gamma = alpha, (1.5 if cls == "mal" else 2.0) if gamma is None else gamma
        self.temperature = temperature
        gains = {"class": 2, "bbox": 5, "giou": 2}
        self.matcher = HungarianMatcher(cost_gain=gains, use_fl=True, alpha=0.25, gamma=2.0)
        self.names = (f"{cls}_loss", "l1_loss", "giou_loss", "fgl_loss", "ddf_loss")

    # ------------------------------------------------------------------ one output
    def _terms(
        self,
        out: dict,
        targets: dict,
        match: Match,
        box_match: Match,
        n_cls: float,
        n_box: float,
        cache: dict,
        dn: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Weighted terms of one output (boxes, logits and, for the decoder layers, corners/refs/teacher)."""
        boxes, logits = out["boxes"], out["logits"]
        zero = boxes.sum() * 0 + logits.sum() * 0  # keeps every output in the graph (DDP) when nothing is matched
        terms = dict.fromkeys(("class", "l1", "giou", "fgl", "ddf"), zero)
        idx, gt = flat(match)
        ious = bbox_iou(boxes[idx].detach(), targets["bboxes"][gt], xywh=True).squeeze(-1).clamp(min=0)
        labels = targets["cls"][gt]  # no match (background images): every query learns "no object"
        terms["class"] = class_loss(logits, labels, ious, idx, self.cls, self.gamma, self.alpha) * logits.shape[1]
        terms["class"] = terms["class"] / n_cls
        bidx, bgt = flat(box_match)
        if len(bgt):
            pred, true = boxes[bidx].float(), targets["bboxes"][bgt].float()
            terms["l1"] = F.l1_loss(pred, true, reduction="sum") / n_box
            giou = bbox_iou(pred, true, xywh=True, GIoU=True).squeeze(-1)
            terms["giou"] = (1 - giou).sum() / n_box
        if "corners" in out:
            terms.update(self._local(out, targets, bidx, bgt, n_box, cache, dn))
        return {k: v * self.weights[k] for k, v in terms.items()}

    def _local(
        self, out: dict, targets: dict, idx: tuple, gt: torch.Tensor, n_box: float, cache: dict, dn: bool
    ) -> dict[str, torch.Tensor]:
        """FGL on the matched queries and DDF against the last layer (``teacher_*``) over every query."""
        corners = out["corners"].float()
        bins = self.reg_max + 1
        found: dict[str, torch.Tensor] = {}
        if not len(gt):
            return found
        key = "dn" if dn else "match"
        if key not in cache:  # the references are the same for every layer: one set of edge targets per group
            with torch.no_grad():
                refs, true = out["refs"][idx].detach().float(), targets["bboxes"][gt].float()
                cache[key] = edge_targets(refs, true, self.reg_max, out["up"], out["reg_scale"])
        index, w_right, w_left = cache[key]
        pred = corners[idx].reshape(-1, bins)
        ious = bbox_iou(out["boxes"][idx].detach().float(), targets["bboxes"][gt].float(), xywh=True).squeeze(-1)
        weight = ious.clamp(min=0).repeat_interleave(4)
        left = index.long()
        ce = F.cross_entropy(pred, left, reduction="none") * w_left
        ce = ce + F.cross_entropy(pred, (left + 1).clamp(max=self.reg_max), reduction="none") * w_right
        found["fgl"] = (ce * weight).sum() / n_box
        teacher = out.get("teacher_corners")
        if teacher is None:
            return found
        if teacher is out["corners"]:
            found["ddf"] = corners.sum() * 0
            return found
        t = self.temperature
        student = corners.reshape(-1, bins)
        soft = F.softmax(teacher.detach().float().reshape(-1, bins) / t, -1)
        kl = F.kl_div(F.log_softmax(student / t, -1), soft, reduction="none").sum(-1) * (t**2)
        conf = out["teacher_logits"].detach().float().sigmoid().max(-1).values  # (B, N)
        mask = torch.zeros_like(conf, dtype=torch.bool)
        mask[idx] = True
        conf = conf.clone()
        conf[idx] = ious.clamp(min=0).to(conf)
        kl = kl * conf.unsqueeze(-1).expand(*conf.shape, 4).reshape(-1)
        mask = mask.unsqueeze(-1).expand(*mask.shape, 4).reshape(-1)
        if not dn:  # balance matched and unmatched queries (the same balance is reused for the denoising groups)
            scale = 8 / out["boxes"].shape[0]
            cache["balance"] = ((mask.sum() * scale) ** 0.5, ((~mask).sum() * scale) ** 0.5)
        pos, neg = cache.get("balance", (mask.sum().float() ** 0.5, (~mask).sum().float() ** 0.5))
        matched = kl[mask].mean() if mask.any() else kl.sum() * 0
        other = kl[~mask].mean() if (~mask).any() else kl.sum() * 0
        found["ddf"] = (matched * pos + other * neg) / (pos + neg).clamp(min=1e-6)
        return found

    # ------------------------------------------------------------------ all outputs
    def forward(self, out: dict, targets: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and the detached terms by name for the head's training (or validation) outputs ``out``.

        ``out``: ``boxes``/``logits`` (layers, B, N, 4 / nc), optional ``corners``/``refs`` (layers, B, N, ...),
        ``pre_boxes``/``pre_logits``, ``enc_boxes``/``enc_logits``, the denoising ``dn_*`` of the same and
        ``dn_meta``, ``up`` and ``reg_scale``. ``targets``: Ultralytics' ``cls``, ``bboxes`` (normalised cx, cy, w, h),
        ``gt_groups``.
        """
        gt_groups = list(targets["gt_groups"])
        device = out["boxes"].device
        n_gt = self._mean_over_ranks(float(sum(gt_groups)), device)
        layers = self._layers(out, "")
        extra = []
        if "pre_boxes" in out:
            extra.append({"boxes": out["pre_boxes"], "logits": out["pre_logits"]})
        enc = [{"boxes": out["enc_boxes"], "logits": out["enc_logits"]}] if "enc_boxes" in out else []
        matches = [self._match(o, targets, gt_groups) for o in layers + extra + enc]
        box_match = union(matches)
        n_box = self._mean_over_ranks(float(sum(len(s) for s, _ in box_match)), device)
        total: dict[str, torch.Tensor] = {}
        cache: dict = {}
        for i in range(len(layers)):  # layer 0 first: it sets the DDF balance of matched and unmatched queries
            self._add(total, self._terms(layers[i], targets, matches[i], box_match, n_gt, n_box, cache))
        for j, o in enumerate(extra):
            self._add(total, self._terms(o, targets, matches[len(layers) + j], box_match, n_gt, n_box, cache))
        for o in enc:  # the encoder's proposals: classification on their own match, boxes on the union set
            self._add(total, self._terms(o, targets, matches[-1], box_match, n_gt, n_box, cache))
        if out.get("dn_meta") is not None and "dn_boxes" in out:
            dn_match = denoising(out["dn_meta"], gt_groups)
            n_dn = max(n_gt * out["dn_meta"]["dn_num_group"], 1.0)
            dn_outs = self._layers(out, "dn_")
            if "dn_pre_boxes" in out:
                dn_outs.append({"boxes": out["dn_pre_boxes"], "logits": out["dn_pre_logits"]})
            for o in dn_outs:
                self._add(total, self._terms(o, targets, dn_match, dn_match, n_dn, n_dn, cache, dn=True))
        items = {name: total[k].detach() for name, k in zip(self.names, ("class", "l1", "giou", "fgl", "ddf"))}
        return sum(total.values()), items

    def _layers(self, out: dict, prefix: str) -> list[dict]:
        """One dict per decoder layer; every layer but the last gets the last one's corners and logits as teacher."""
        boxes, logits = out[f"{prefix}boxes"], out[f"{prefix}logits"]
        corners, refs = out.get(f"{prefix}corners"), out.get(f"{prefix}refs")
        layers = []
        for i in range(boxes.shape[0]):
            o = {"boxes": boxes[i], "logits": logits[i]}
            if corners is not None:
                o.update(corners=corners[i], refs=refs, up=out["up"], reg_scale=out["reg_scale"])
                o.update(teacher_corners=corners[-1], teacher_logits=logits[-1])
                if i == boxes.shape[0] - 1:
                    o["teacher_corners"] = o["corners"]
            layers.append(o)
        return layers

    def _match(self, out: dict, targets: dict, gt_groups: list[int]) -> Match:
        device = out["boxes"].device
        boxes, logits = out["boxes"].contiguous(), out["logits"].contiguous()  # older hosts' matcher uses .view
        match = self.matcher(boxes, logits, targets["bboxes"], targets["cls"], gt_groups)
        return [(s.to(device).long(), g.to(device).long()) for s, g in match]

    @staticmethod
    def _add(total: dict, terms: dict) -> None:
        for k, v in terms.items():
            total[k] = total[k] + v if k in total else v

    @staticmethod
    def _mean_over_ranks(value: float, device: torch.device) -> float:
        """``value`` averaged over DDP ranks (as the official criterion normalises), at least 1."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            t = torch.tensor([value], device=device)
            torch.distributed.all_reduce(t)
            value = float(t) / torch.distributed.get_world_size()
        return max(value, 1.0)
