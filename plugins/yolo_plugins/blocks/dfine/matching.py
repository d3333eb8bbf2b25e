"""Which query learns from which ground-truth box: per-layer Hungarian matches, their union, denoising pairs.

A match is a list with one ``(query indices, ground-truth indices)`` pair of tensors per image; ground-truth indices
count into the batch's flat list of boxes (Ultralytics' ``HungarianMatcher`` convention), so one match indexes
``targets["bboxes"]`` directly.
"""

from __future__ import annotations

from collections import Counter

import torch

Match = list[tuple[torch.Tensor, torch.Tensor]]


def union(matches: list[Match]) -> Match:
    """D-FINE's union set: every (query, box) pair that some layer's matching chose, one box per query.

    A query matched to different boxes by different layers keeps the box most layers chose (ties: the pair seen
    first). Box and GIoU regression and the localisation losses use this set, so a query that any layer placed on an
    object learns to refine it even where the final layer's one-to-one matching picked another query.
    """
    out = []
    for per_image in zip(*matches):
        pairs = [(int(q), int(g)) for src, dst in per_image for q, g in zip(src.tolist(), dst.tolist())]
        votes = Counter(pairs)
        best: dict[int, tuple[int, int]] = {}  # query -> (votes, box)
        for (q, g), n in votes.items():  # Counter keeps first-seen order, so ties keep the earlier pair
            if q not in best or n > best[q][0]:
                best[q] = (n, g)
        queries = sorted(best)
        out.append(
            (
                torch.tensor(queries, dtype=torch.long),
                torch.tensor([best[q][1] for q in queries], dtype=torch.long),
            )
        )
    return out


def denoising(dn_meta: dict, gt_groups: list[int]) -> Match:
    """The fixed pairs of the denoising groups: each noised query reconstructs the box it was made from."""
    groups = dn_meta["dn_num_group"]
    offsets = [sum(gt_groups[:i]) for i in range(len(gt_groups))]
    if "dn_gt_idx" in dn_meta:  # newer hosts record the box of every denoising query
        boxes = [torch.as_tensor(g, dtype=torch.long) for g in dn_meta["dn_gt_idx"]]
    else:  # older hosts: the boxes of an image in order, offset into the batch
        boxes = [torch.arange(n, dtype=torch.long) + o for n, o in zip(gt_groups, offsets)]
    return [(pos.long(), gt.repeat(groups)) for pos, gt in zip(dn_meta["dn_pos_idx"], boxes)]


def flat(match: Match) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``((image, query), box)`` index tensors of a match, to gather matched predictions and their targets."""
    image = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(match)]) if match else torch.zeros(0)
    query = torch.cat([src for src, _ in match]) if match else torch.zeros(0)
    box = torch.cat([dst for _, dst in match]) if match else torch.zeros(0)
    return (image.long(), query.long()), box.long()
