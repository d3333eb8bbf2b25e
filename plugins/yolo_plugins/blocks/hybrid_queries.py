"""Hybrid matching for an RT-DETR decoder: a second, one-to-many group of queries, during training only.

One-to-one matching gives a DETR's decoder one positive query per object, which is why it learns slowly from scratch.
H-DETR (Jia et al., CVPR 2023) adds, in training only, a second group of queries that is matched one-to-many: every
object is repeated ``repeats`` times and matched by the same Hungarian matcher, so ``repeats`` queries per object learn
to find it. ``HybridQueryLoss`` does this with the head itself: after the training forward it runs the head once more
on the same neck features, with ``queries`` top-k encoder proposals instead of the head's own number and without
denoising, and scores that pass with the model's criterion against the repeated targets (every decoder layer and the
encoder's top-k, as the one-to-one pass). The two groups never attend to each other (they are separate passes);
inference, weights and exports are those of the model without it.

``HybridQueryLoss.capture(head)`` records the head's inputs of the forward passes inside it; ``__call__`` then runs the
one-to-many pass and returns its terms.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

TERMS = {"loss_class": "hyb_class", "loss_giou": "hyb_giou", "loss_bbox": "hyb_l1"}  # criterion's term -> logged


def repeated(targets: dict, repeats: int) -> dict:
    """RT-DETR ``targets`` with every object ``repeats`` times, still ordered by image (the matcher splits by
    ``gt_groups``)."""
    idx = targets["batch_idx"].repeat(repeats)
    order = torch.argsort(idx, stable=True)
    return {
        "cls": targets["cls"].repeat(repeats)[order],
        "bboxes": targets["bboxes"].repeat(repeats, 1)[order],
        "batch_idx": idx[order],
        "gt_groups": [n * repeats for n in targets["gt_groups"]],
    }


class HybridQueryLoss:
    """One-to-many query group for an ``RTDETRDecoder``: ``gain`` x the criterion's loss on a second decoder pass
    with ``queries`` queries matched to every object repeated ``repeats`` times."""

    def __init__(self, criterion: nn.Module, gain: float = 1.0, repeats: int = 6, queries: int = 300) -> None:
        self.criterion, self.gain, self.repeats, self.queries = criterion, gain, repeats, queries
        self.seen: list[torch.Tensor] | None = None

    @contextlib.contextmanager
    def capture(self, head: nn.Module) -> Iterator[None]:
        """Record the inputs (the neck's feature maps) of ``head``'s forward passes inside the block."""

        def keep(module: nn.Module, args: tuple) -> None:
            self.seen = list(args[0])

        self.seen = None
        handle = head.register_forward_pre_hook(keep)
        try:
            yield
        finally:
            handle.remove()

    def __call__(self, head: nn.Module, targets: dict, imgsz: Any = None) -> dict[str, torch.Tensor]:
        """The one-to-many pass's loss as ``hyb_class``, ``hyb_giou`` and ``hyb_l1`` (each the sum of that kind of
        term over the decoder layers and the encoder's top-k), multiplied by ``gain``."""
        if self.seen is None:
            raise RuntimeError("HybridQueryLoss: no head input was captured; run the forward inside capture()")
        feats, self.seen = self.seen, None
        kept = head.num_queries
        head.num_queries = min(self.queries, sum(f.shape[-2] * f.shape[-1] for f in feats))  # no more than anchors
        try:
            out: Any = head(feats)  # batch=None: no denoising group in this pass
        finally:
            head.num_queries = kept
        dec_bboxes, dec_scores, enc_bboxes, enc_scores = out[:4] if head.training else out[1][:4]
        bboxes = torch.cat([enc_bboxes.unsqueeze(0), dec_bboxes])
        scores = torch.cat([enc_scores.unsqueeze(0), dec_scores])
        losses = self.criterion((bboxes, scores), repeated(targets, self.repeats))
        terms = {}
        for key, value in losses.items():
            name = next((logged for term, logged in TERMS.items() if key.startswith(term)), "hyb_other")
            terms[name] = terms.get(name, 0.0) + value * self.gain
        return {name: terms[name] for name in (*TERMS.values(), "hyb_other") if name in terms}
