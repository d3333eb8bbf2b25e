"""Ultralytics' own ``yolo benchmark`` on a plugin model: export, load and validate the fast CPU formats.

The model has random weights made image-dependent (:func:`helpers.calibrate`, :func:`helpers.spread_outputs`), so its
outputs differ from image to image; its validation metrics are about 0 (as after a short training run), so comparing
the PyTorch and ONNX rows' metrics would prove nothing. What the test checks instead: the benchmark runs both rows to
completion, and the ONNX file it exported computes what the PyTorch checkpoint computes on a fixed image
(:func:`assert_same_detections`, shown to fail on a corrupted export).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import calibrate, letterboxed, spread_outputs

IMGSZ = 64
TOP = 10


def onnx_output(path: Path, x: torch.Tensor) -> torch.Tensor:
    """The exported graph's output on ``x``, run by ONNX Runtime."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def assert_same_detections(got: torch.Tensor, want: torch.Tensor, atol: float = 1e-4) -> None:
    """Each of the ``TOP`` best rows ``[cx, cy, w, h, score, class]`` of ``want`` (one image, sorted) is a row of
    ``got`` within ``atol`` (rows, not positions: detections of equal score may come in another order)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    for row in want[0, :TOP]:
        close = ((got[0] - row).abs() <= atol).all(1)
        assert close.any(), f"no exported detection matches {row.tolist()}"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_data) -> Path:
    """``rtdetr-effvit.yaml`` (n), random image-dependent weights, saved as a checkpoint (float16, as Ultralytics
    saves one)."""
    from ultralytics import RTDETR

    torch.manual_seed(0)
    model = RTDETR("rtdetr-effvit.yaml")
    train = letterboxed(Path(tiny_data).parent / "images" / "train", IMGSZ)
    spread_outputs(calibrate(model.model, IMGSZ, images=train), IMGSZ, images=train)
    path = tmp_path_factory.mktemp("benchmark") / "weights" / "model.pt"
    path.parent.mkdir()
    model.save(str(path))
    return path


def test_yolo_benchmark_exports_loads_and_validates_a_plugin_rtdetr(checkpoint, tiny_data, monkeypatch):
    """A tiny RT-DETR on EfficientViT (64 px): the PyTorch and ONNX rows pass, and the ONNX file the benchmark wrote
    gives the checkpoint's detections (the reduced version of the benchmark measured on the trained default model in
    the README)."""
    from ultralytics import RTDETR
    from ultralytics.utils.benchmarks import benchmark

    monkeypatch.chdir(checkpoint.parent)  # the benchmark appends to ./benchmarks.log
    rows = {}
    for fmt in ("-", "onnx"):
        df = benchmark(model=str(checkpoint), data=tiny_data, imgsz=IMGSZ, device="cpu", format=fmt)
        for row in df.iter_rows(named=True):
            rows[row["Format"]] = row
    assert set(rows) == {"PyTorch", "ONNX"}
    status = next(k for k in rows["PyTorch"] if k.startswith("Status"))
    assert rows["PyTorch"][status] == rows["ONNX"][status] == "✅", rows
    exported = checkpoint.with_suffix(".onnx")
    assert exported.is_file()
    x = letterboxed(Path(tiny_data).parent / "images" / "test", IMGSZ)[0][:1]
    model = RTDETR(str(checkpoint)).model.float().eval()
    with torch.no_grad():
        want = model(x)[0]
    other = letterboxed(Path(tiny_data).parent / "images" / "test", IMGSZ)[0][1:]
    with pytest.raises(AssertionError):  # the check tells the test images apart
        assert_same_detections(onnx_output(exported, other), want)
    assert_same_detections(onnx_output(exported, x), want)


def test_the_benchmark_check_fails_on_a_corrupted_export(checkpoint, tmp_path):
    """:func:`assert_same_detections` catches an export whose last decoder layer's score weights are scaled by 1.1."""
    import onnx
    from onnx import numpy_helper
    from ultralytics import RTDETR

    copy = tmp_path / "model.pt"  # the export lands beside it
    copy.write_bytes(checkpoint.read_bytes())
    model = RTDETR(str(copy))
    path = Path(model.export(format="onnx", imgsz=IMGSZ, device="cpu", simplify=True))
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model.model.float().eval()(x)[0]
    assert_same_detections(onnx_output(path, x), want)  # the export as written passes
    head = model.model.model[-1]
    target = head.dec_score_head[-1].weight.detach().float().numpy()
    graph = onnx.load(str(path))
    arrays = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    hit = [
        i
        for i in graph.graph.initializer
        if any(a.shape == target.shape and np.array_equal(a, target) for a in (arrays[i.name], arrays[i.name].T))
    ]
    assert len(hit) == 1, "the last decoder layer's score weights are not one initializer of the export"
    hit[0].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(hit[0]) * np.float32(1.1), hit[0].name))
    broken = tmp_path / "broken.onnx"
    onnx.save(graph, str(broken))
    with pytest.raises(AssertionError, match="no exported detection matches"):
        assert_same_detections(onnx_output(broken, x), want)
