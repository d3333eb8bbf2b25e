"""Ultralytics' own ``yolo benchmark`` on a plugin model: export, load and validate the fast CPU formats."""

from __future__ import annotations

import torch


def test_yolo_benchmark_exports_loads_and_validates_a_plugin_rtdetr(tmp_path, tiny_data, monkeypatch):
    """A tiny RT-DETR on EfficientViT (64 px): PyTorch and ONNX rows pass with the same metric (the reduced version of
    the benchmark measured on the trained default model in the README)."""
    from ultralytics import RTDETR
    from ultralytics.utils.benchmarks import benchmark

    monkeypatch.chdir(tmp_path)  # the benchmark appends to ./benchmarks.log
    torch.manual_seed(0)
    model = RTDETR("rtdetr-effvit.yaml")
    model.train(
        data=tiny_data,
        epochs=1,
        imgsz=64,
        batch=4,
        workers=0,
        device="cpu",
        project=str(tmp_path),
        name="t",
        plots=False,
        val=False,
        verbose=False,
        amp=False,
    )
    weights = str(tmp_path / "t" / "weights" / "last.pt")
    rows = {}
    for fmt in ("-", "onnx"):
        df = benchmark(model=weights, data=tiny_data, imgsz=64, device="cpu", format=fmt)
        for row in df.iter_rows(named=True):
            rows[row["Format"]] = row
    assert set(rows) == {"PyTorch", "ONNX"}
    status = next(k for k in rows["PyTorch"] if k.startswith("Status"))
    metric = next(k for k in rows["PyTorch"] if k.startswith("metrics/"))
    assert rows["PyTorch"][status] == rows["ONNX"][status] == "✅", rows
    assert abs(float(rows["PyTorch"][metric]) - float(rows["ONNX"][metric])) <= 0.02, rows
