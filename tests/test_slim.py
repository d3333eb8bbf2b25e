"""``yolo-plugins slim``: a trained RT-DETR with fewer inference queries / decoder layers, as a plain checkpoint."""

from __future__ import annotations

import subprocess

import pytest
import torch

from yolo_plugins.commands.slim import slim

IMGSZ = 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The default model (random weights) saved as an Ultralytics checkpoint."""
    from ultralytics import RTDETR

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("slim") / "rtdetr-effvit-n.pt"
    RTDETR("rtdetr-effvit-n.yaml").save(str(path))
    return path


def outputs(path, x):
    from ultralytics import RTDETR

    model = RTDETR(str(path)).model.eval()
    with torch.no_grad():
        return model(x)[0]


def test_slim_keeps_the_best_queries_and_reads_the_chosen_layer(checkpoint):
    """Fewer queries: fewer detections out of the same model; eval_idx: the boxes of that decoder layer."""
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    full = outputs(checkpoint, x)
    target, changed = slim(checkpoint, queries=40)
    assert target == checkpoint.with_name("rtdetr-effvit-n-q40.pt") and changed == ["queries 50 -> 40"]
    cut = outputs(target, x)
    assert full.shape[1] == 50 and cut.shape[1] == 40
    assert torch.isfinite(cut).all() and cut.shape[2] == full.shape[2]
    target, changed = slim(checkpoint, eval_idx=0, out=checkpoint.with_name("e0.pt"))
    assert changed == ["decoder layers used 3 -> 1 of 3"]
    from ultralytics import RTDETR

    assert RTDETR(str(target)).model.model[-1].decoder.eval_idx == 0
    assert not torch.equal(outputs(target, x), full)  # the first layer's boxes, not the last one's


def test_slim_refuses_what_it_cannot_do(checkpoint, tmp_path):
    from ultralytics import YOLO

    yolo = tmp_path / "yolov10n.pt"
    YOLO("yolov10n.yaml").save(str(yolo))
    cases = [
        (dict(weights=yolo, queries=50), "last layer of .* is v10Detect, not RTDETRDecoder"),
        (dict(weights=checkpoint, queries=0), "queries must be at least 1, got 0"),
        (dict(weights=checkpoint, eval_idx=3), r"eval_idx must be in -3\.\.2 \(3 decoder layers\), got 3"),
        (dict(weights=checkpoint), "give queries=N and/or eval_idx=K"),
        (dict(weights=checkpoint, queries=50, out=checkpoint), "must be a new .pt file"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            slim(**kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["yolov10n.pt"]  # nothing written


def test_slim_command_line(checkpoint, tmp_path):
    out = tmp_path / "small.pt"
    r = subprocess.run(
        ["yolo-plugins", "slim", str(checkpoint), "queries=30", "eval_idx=-2", "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "queries 50 -> 30; decoder layers used 3 -> 2 of 3" in r.stdout and out.is_file()
    bad = subprocess.run(["yolo-plugins", "slim", str(checkpoint), "queries=many"], capture_output=True, text=True)
    assert bad.returncode == 2 and "queries must be a whole number, got 'queries=many'" in bad.stderr
