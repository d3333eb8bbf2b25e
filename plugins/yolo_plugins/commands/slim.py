"""``yolo-plugins slim <weights.pt> queries=N [eval_idx=K] [-o out.pt]``: fewer queries (or decoder layers) for a
trained RT-DETR at inference, without retraining.

RT-DETR keeps the ``num_queries`` highest-scoring encoder positions as decoder queries and, in evaluation, reads the
boxes of decoder layer ``eval_idx``; both are plain attributes of ``RTDETRDecoder`` that training does not depend on
(``eval_idx``) or only sets the size of (the query count). Cutting them makes every inference cheaper, most at small
input sizes where the decoder's fixed cost weighs most; what it costs in accuracy depends on how many objects an image
holds (docs/deploy-cpu.md measures it). The result is an ordinary Ultralytics checkpoint: ``yolo val``, ``yolo
predict`` and ``yolo export`` use it as they use the original.
"""

from __future__ import annotations

from pathlib import Path


def slim(weights: str | Path, queries: int | None = None, eval_idx: int | None = None, out: str | Path | None = None):
    """Write ``weights`` with ``queries`` inference queries and/or decoder layer ``eval_idx`` to ``out`` (default:
    ``<stem>-q<queries>[-e<eval_idx>].pt`` beside it); returns ``(out, what changed)``. Nothing is written on error."""
    from ultralytics import RTDETR
    from ultralytics.nn.modules import RTDETRDecoder

    source = Path(weights)
    if queries is None and eval_idx is None:
        raise ValueError("slim: give queries=N and/or eval_idx=K (nothing to change)")
    if not source.is_file() or source.suffix != ".pt":
        raise ValueError(f"slim: {source} is not a .pt checkpoint")
    model = RTDETR(str(source))
    head = model.model.model[-1]
    if not isinstance(head, RTDETRDecoder):
        raise ValueError(
            f"slim: the last layer of {source} is {type(head).__name__}, not RTDETRDecoder; slim cuts an RT-DETR's "
            "inference queries and decoder layers"
        )
    layers = len(head.decoder.layers)
    changed = []
    if queries is not None:
        if queries < 1:
            raise ValueError(f"slim: queries must be at least 1, got {queries}")
        changed.append(f"queries {head.num_queries} -> {queries}")
    if eval_idx is not None:
        if not -layers <= eval_idx < layers:
            raise ValueError(
                f"slim: eval_idx must be in {-layers}..{layers - 1} ({layers} decoder layers), got {eval_idx}"
            )
        changed.append(f"decoder layers used {head.decoder.eval_idx + 1} -> {eval_idx % layers + 1} of {layers}")
    suffix = f"-q{queries}" if queries is not None else ""
    suffix += f"-e{eval_idx % layers}" if eval_idx is not None else ""
    target = Path(out) if out else source.with_name(f"{source.stem}{suffix}.pt")
    if target.suffix != ".pt" or target.resolve() == source.resolve():
        raise ValueError(f"slim: the output must be a new .pt file, got {target}")
    if queries is not None:
        head.num_queries = queries
    if eval_idx is not None:
        head.decoder.eval_idx = eval_idx % layers
    model.save(str(target))
    return target, changed
