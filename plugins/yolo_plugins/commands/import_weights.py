"""``yolo-plugins import-weights <official .pth> [-o out.pt]``: an official release file as an Ultralytics checkpoint.

RT-DETR / RT-DETRv2, D-FINE and DEIM-D-FINE files are read (``official``). The file's variant is read from its tensors
(``official_rtdetr.recognise``, ``official_dfine.recognise``), the zoo model built and every tensor
loaded (or nothing, with the keys named); the result is saved the way Ultralytics saves a model, float32 (so the
outputs stay the official ones), with the 80 COCO class names, so ``RTDETR("out.pt")``, ``yolo predict
model=out.pt`` and ``yolo val model=out.pt data=coco.yaml`` use it as they use ``rtdetr-l.pt``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import torch

from ..weights.files import WeightsError, resolve_weights
from ..weights.official import FORMATS, load_official


def default_output(path: str | Path) -> Path:
    """``<stem>.pt`` in the working directory (``rtdetr_r18vd_dec3_6x_coco_from_paddle.pth`` -> ``….pt``)."""
    return Path(Path(path).name).with_suffix(".pt")


def import_weights(
    path: str | Path, out: str | Path | None = None, family: str | None = None
) -> tuple[Path, object, int, int]:
    """Convert an official file; returns ``(written file, variant, tensors loaded, tensors in the file)``.

    ``family`` ("D-FINE" or "DEIM") overrides which of the two a D-FINE-layout file is.
    """
    from ultralytics import __version__

    source = resolve_weights(path)
    target = Path(out) if out else default_output(source)
    if target.suffix != ".pt":
        raise ValueError(f"the output must be a .pt file (Ultralytics loads checkpoints by that suffix), got {target}")
    if target.resolve() == source:
        raise ValueError(f"{target} is the input file; name another output with -o")
    found = load_official(source, family)
    if found is None:
        raise WeightsError(
            f"{source}: not an official release file of a supported layout ({FORMATS}). Other RT-DETR checkpoints "
            "warm-start a model with pretrained=<file> instead."
        )
    model, official, loaded, total = found
    model.args = {"task": "detect", "imgsz": 640, "data": "coco.yaml" if official.nc == 80 else None}
    ckpt = {
        "date": datetime.now(timezone.utc).isoformat(),
        "version": __version__,
        "model": model,
        "train_args": dict(model.args),
        "source_weights": source.name,
        "yolo_plugins": {"official": str(official), "yaml": official.yaml},
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, target)
    return target, official, loaded, total
