"""``PeakDecoder``: an RT-DETR head that, at inference, picks its object queries among local score peaks.

RT-DETR's query selection takes the encoder's ``k`` highest-scoring anchors. Neighbouring anchors of one object score
alike, so several of the ``k`` queries often start on the same object and others are left without one; the decoder
must learn to suppress the duplicates. This head ranks, in eval mode, only the anchors whose best class logit is a
local maximum of its feature level (3 x 3 window) ahead of all others, so the queries start on distinct objects; an
image with fewer peaks than queries keeps RT-DETR's own selection. Training is exactly ``RTDETRDecoder``'s (measured:
selecting peaks in training too learnt no faster, docs/benchmarks/learning/trees-decoder-screen.md), so a model
trained with the stock head and one trained with this head are the same model: their weights load into each other
(same parameter names) and only inference differs.

YAML: ``RTDETRDecoder``'s row with the module name ``PeakDecoder`` (same arguments). The class is
``RTDETRPeakDecoder``: Ultralytics sends a ``.pt`` to its RT-DETR predictor and validator when the head's class
name contains "RTDETR". The selected queries keep their exact encoder logits (the peak ranking only orders them);
forward hooks on ``enc_score_head`` (e.g. ``o2m:``'s) see the unranked logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules.head import RTDETRDecoder

from ..registry import register


def peak_ranking(logits: torch.Tensor, shapes: list[list[int]], k: int, window: int = 3) -> torch.Tensor:
    """``logits`` (B, N, nc) over levels of ``shapes`` [(h, w), ...], ranked so that top-``k`` picks only peaks.

    A peak is an anchor whose best class logit is the maximum of its ``window`` x ``window`` neighbourhood on its
    level. Every non-peak is lowered below the image's lowest logit, so peaks keep their values and rank first; an
    image with fewer than ``k`` peaks is returned unchanged.
    """
    best = logits.max(-1).values  # (B, N)
    peaks, start = [], 0
    for h, w in shapes:
        level = best[:, start : start + h * w].reshape(-1, 1, h, w)
        peaks.append((level >= F.max_pool2d(level, window, 1, window // 2)).flatten(1))
        start += h * w
    peak = torch.cat(peaks, 1)  # (B, N)
    enough = peak.sum(1, keepdim=True) >= k  # (B, 1)
    span = (best.amax(1, keepdim=True) - best.amin(1, keepdim=True) + 1).detach()  # (B, 1)
    lower = torch.where(peak | ~enough, torch.zeros_like(best), span)
    return logits - lower.unsqueeze(-1)


class _PeakRanked(nn.Module):
    """Stands in for ``enc_score_head`` during one query selection: the head's logits, ranked by ``peak_ranking``."""

    def __init__(self, scorer: nn.Module, shapes: list[list[int]], k: int) -> None:
        super().__init__()
        self.scorer, self.shapes, self.k = scorer, shapes, k

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Peak-ranked logits of ``scorer`` (the real head, so its forward hooks run on the unranked output)."""
        logits = self.scorer(features)
        return peak_ranking(logits, self.shapes, min(self.k, logits.shape[1]))


@register("PeakDecoder", rule="detr_head")
class RTDETRPeakDecoder(RTDETRDecoder):
    """``RTDETRDecoder`` whose inference selects queries among per-level 3 x 3 score peaks; training is unchanged."""

    def _get_decoder_input(
        self,
        feats: torch.Tensor,
        shapes: list[list[int]],
        dn_embed: torch.Tensor | None = None,
        dn_bbox: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """RT-DETR's decoder input; in eval mode with the encoder's score head peak-ranked for this call only."""
        if self.training:
            return super()._get_decoder_input(feats, shapes, dn_embed, dn_bbox)
        scorer = self._modules["enc_score_head"]
        self._modules["enc_score_head"] = _PeakRanked(scorer, shapes, self.num_queries)
        try:
            return super()._get_decoder_input(feats, shapes, dn_embed, dn_bbox)
        finally:
            self._modules["enc_score_head"] = scorer
