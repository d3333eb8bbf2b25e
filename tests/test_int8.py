"""INT8 exports of plugin RT-DETRs through Ultralytics' exporter (``quantize=8``): OpenVINO (NNCF) and ONNX (ONNX
Runtime static quantization), loaded back by the stock predictor. Accuracy on trained models is measured by
``benchmarks/int8.py`` (docs/deploy-cpu.md); here: the graphs really are quantized, and they load and predict."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

IMGSZ = 64
DEFAULT = ["rtdetr-effvit-n.yaml"]
ZOO_N = sorted(
    f"{p.stem}-n.yaml"
    for p in (Path(__file__).parents[1] / "cfg" / "models").glob("rtdetr*.yaml")
    if "\n  n: " in p.read_text()
)


def quantized_ops(path: Path) -> int:
    """How many quantize operations the exported graph holds (OpenVINO FakeQuantize, ONNX QuantizeLinear)."""
    if path.suffix == ".onnx":
        import onnx

        return sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)
    import openvino as ov

    model = ov.Core().read_model(str(next(path.glob("*.xml"))))
    return sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())


def export_and_predict(cfg: str, fmt: str, data: str) -> None:
    """Export ``cfg`` (random weights) to INT8 ``fmt`` calibrated on ``data``; the stock predictor runs the export."""
    from ultralytics import RTDETR

    torch.manual_seed(0)
    model = RTDETR(cfg)
    f = Path(model.export(format=fmt, imgsz=IMGSZ, quantize=8, data=data, device="cpu", simplify=True))
    assert quantized_ops(f) >= 20, f"{cfg}: {fmt} INT8 export holds almost no quantized operations"
    image = next((Path(data).parent / "images" / "test").glob("*.jpg"))
    result = RTDETR(str(f)).predict(str(image), imgsz=IMGSZ, conf=0.0, verbose=False)[0]
    boxes = result.boxes.xyxy
    assert 0 < len(boxes) <= 300, f"{cfg}: {fmt} INT8 predicted {len(boxes)} boxes"
    assert torch.isfinite(boxes).all() and boxes.min() >= -1 and boxes.max() <= max(result.orig_shape) + 1


@pytest.mark.parametrize("fmt", ["openvino", "onnx"])
@pytest.mark.parametrize("cfg", DEFAULT)
def test_default_model_exports_int8_and_the_stock_predictor_runs_it(cfg, fmt, tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a YAML-built model exports into the working directory
    export_and_predict(cfg, fmt, tiny_data)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["openvino", "onnx"])
@pytest.mark.parametrize("cfg", [c for c in ZOO_N if c not in DEFAULT])
def test_every_zoo_n_rtdetr_exports_int8(cfg, fmt, tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    export_and_predict(cfg, fmt, tiny_data)
