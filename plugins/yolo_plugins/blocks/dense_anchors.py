"""One-to-many supervision of an RT-DETR head's encoder anchors: YOLO-style dense targets, during training only.

A DETR learns from one query per object (one-to-one matching), so from scratch on a small data set it sees few
positive targets per image and converges slowly. RT-DETR's encoder already scores and regresses a box at every anchor
of every feature map (``enc_score_head`` and ``enc_bbox_head``, which pick the decoder's top-k queries), but only the
top-k are trained. ``DenseAnchorLoss`` trains all of them the way a YOLO head is trained: Ultralytics'
``TaskAlignedAssigner`` gives each object its ``topk`` best-aligned anchors inside it (one-to-many), classification is
BCE against the aligned IoU targets, boxes are GIoU and L1 weighted by them (the idea of the auxiliary one-to-many
branches of Co-DETR and RT-DETRv3, on the encoder's own heads, so nothing is added to the model or its inference).

``DenseAnchorLoss.capture(head)`` is a context manager that records the encoder's per-anchor features and scores of
the forward passes inside it; ``__call__`` then scores them against a batch's targets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.utils.metrics import bbox_iou
from ultralytics.utils.ops import xywh2xyxy
from ultralytics.utils.tal import TaskAlignedAssigner

GAINS = {"class": 1.0, "giou": 2.0, "l1": 5.0}  # RT-DETR's own gains for its class, GIoU and L1 terms


class DenseAnchorLoss:
    """Dense (one-to-many) loss on an RT-DETR head's encoder anchors; ``gain`` scales the sum of its terms."""

    def __init__(self, nc: int, gain: float = 1.0, topk: int = 2) -> None:
        self.nc, self.gain, self.topk = nc, gain, topk
        self.assigner = TaskAlignedAssigner(topk=topk, num_classes=nc, alpha=0.5, beta=6.0)
        self.seen: tuple[torch.Tensor, torch.Tensor] | None = None

    @contextlib.contextmanager
    def capture(self, head: nn.Module) -> Iterator[None]:
        """Record the per-anchor features and class logits of ``head``'s forward passes inside the block."""

        def keep(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            self.seen = (args[0], output)

        self.seen = None
        handle = head.enc_score_head.register_forward_hook(keep)
        try:
            yield
        finally:
            handle.remove()

    def __call__(self, head: nn.Module, targets: dict, imgsz: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The weighted terms ``o2m_class``, ``o2m_giou``, ``o2m_l1`` for the last captured forward and ``targets``
        (Ultralytics' RT-DETR targets: ``cls``, normalised xywh ``bboxes``, ``batch_idx``)."""
        if self.seen is None:
            raise RuntimeError("DenseAnchorLoss: no encoder output was captured; run the forward inside capture()")
        features, logits = self.seen
        self.seen = None
        valid = head.valid_mask.view(-1).bool()
        anchors = head.anchors.view(-1, 4)[valid]
        logits = logits[:, valid].float()
        boxes = (head.enc_bbox_head(features[:, valid]) + anchors).sigmoid().float()  # (b, n, 4) cxcywh in 0-1
        bs = logits.shape[0]
        h, w = imgsz
        scale = boxes.new_tensor([w, h, w, h])
        pred_xyxy = xywh2xyxy(boxes) * scale
        points = anchors[:, :2].sigmoid().float() * scale[:2]

        gt_labels, gt_boxes, mask_gt = self.padded(targets, bs, scale)
        with torch.no_grad():
            _, tgt_boxes, tgt_scores, fg, _ = self.assigner(
                logits.detach().sigmoid(), pred_xyxy.detach(), points, gt_labels, gt_boxes, mask_gt
            )
        norm = tgt_scores.sum().clamp(min=1.0)
        cls = F.binary_cross_entropy_with_logits(logits, tgt_scores.to(logits.dtype), reduction="sum") / norm
        if fg.any():
            weight = tgt_scores.sum(-1)[fg]
            iou = bbox_iou(pred_xyxy[fg], tgt_boxes[fg], xywh=False, GIoU=True).squeeze(-1)
            giou = ((1.0 - iou) * weight).sum() / norm
            l1 = (
                F.l1_loss(pred_xyxy[fg] / scale, tgt_boxes[fg] / scale, reduction="none").sum(-1) * weight
            ).sum() / norm
        else:  # no object in the batch: only background to learn, keep the graph connected
            giou = l1 = boxes.sum() * 0.0
        return {
            "o2m_class": cls * GAINS["class"] * self.gain,
            "o2m_giou": giou * GAINS["giou"] * self.gain,
            "o2m_l1": l1 * GAINS["l1"] * self.gain,
        }

    @staticmethod
    def padded(targets: dict, bs: int, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Targets as (bs, max boxes, 1) labels, (bs, max boxes, 4) pixel xyxy boxes and a (bs, max boxes, 1) mask."""
        idx = targets["batch_idx"].long().view(-1)
        counts = torch.bincount(idx, minlength=bs) if idx.numel() else idx.new_zeros(bs)
        n = int(counts.max()) if counts.numel() else 0
        labels = scale.new_zeros(bs, n, 1)
        boxes = scale.new_zeros(bs, n, 4)
        mask = scale.new_zeros(bs, n, 1, dtype=torch.bool)
        if n:
            order = torch.argsort(idx, stable=True)
            idx = idx[order]
            start = torch.cumsum(counts, 0) - counts
            slot = torch.arange(idx.numel(), device=idx.device) - start[idx]
            labels[idx, slot, 0] = targets["cls"].view(-1)[order].to(labels.dtype)
            boxes[idx, slot] = xywh2xyxy(targets["bboxes"][order].float()) * scale
            mask[idx, slot, 0] = True
        return labels, boxes, mask
