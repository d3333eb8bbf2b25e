"""The D-FINE family's blocks in the stock engine: YAMLs build with inferred channels, the head works after any
encoder (EfficientViT included), trains with its own criterion (tests/test_training_loss.py), fuses exactly, and
exports to ONNX / OpenVINO with the PyTorch outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import official_fixture as fx
import pytest
import torch
from helpers import cpu_has_vnni, randomise_bn

TINY_TRAIN = {"epochs": 1, "imgsz": 64, "batch": 4, "workers": 0, "device": "cpu", "plots": False}  # one tiny epoch
ZOO = [
    "dfine-n.yaml",
    "dfine-s.yaml",
    "deim-dfine-n.yaml",
    "deim-dfine-s.yaml",
    "deimv2-atto.yaml",
    "deimv2-femto.yaml",
    "deimv2-pico.yaml",
    "deimv2-n.yaml",
]
EFFVIT_HEAD = """
nc: 3
backbone:
  - [-1, 1, EfficientViT, [m0, None, 16, stem]]
  - [0, 1, Pick, [0]]
  - [0, 1, Pick, [1]]
  - [0, 1, Pick, [2]]
head:
  - [-1, 1, Conv, [64, 1, 1, None, 1, 1, False]]
  - [-1, 1, AIFI, [128, 4]]
  - [-1, 1, Conv, [64, 1, 1, None, 1, 1, False]]
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [2, 1, Conv, [64, 1, 1, None, 1, 1, False]]
  - [[-2, -1], 1, Concat, [1]]
  - [-1, 1, DFineELAN, [64, 0.5]]
  - [-1, 1, DFineSCDown, [64, 3, 2]]
  - [[-1, 6], 1, Concat, [1]]
  - [-1, 1, DFineELAN, [96, 0.5]]
  - [[1, 10, 13], 1, FDRDecoder, [nc, 64, 30, [2, 4, 2], 4, 2, 128, 0.0, silu, -1, 20, 0.5, 1.0, False, silu]]
"""


def _items(items) -> torch.Tensor:
    """The logged loss items as one tensor (a dict in newer Ultralytics releases, a tensor in older ones)."""
    return torch.stack(list(items.values())) if isinstance(items, dict) else items


def _model(yaml_text: str, tmp_path: Path, nc: int | None = None):
    from ultralytics.nn.tasks import RTDETRDetectionModel

    path = tmp_path / "model.yaml"
    path.write_text(yaml_text)
    return RTDETRDetectionModel(str(path), nc=nc, verbose=False)


@pytest.mark.parametrize("cfg", ZOO)
def test_zoo_yaml_builds_and_runs_at_other_sizes(cfg):
    """Every D-FINE-family zoo YAML builds and gives (B, queries, 6) detections at 320 and 640 px (any multiple of
    32: DEIMv2-Atto and -Femto were published at 320 and 416 px, Pico at 640)."""
    from ultralytics import RTDETR
    from ultralytics.nn.modules.head import RTDETRDecoder
    from ultralytics.nn.tasks import RTDETRDetectionModel

    from yolo_plugins.commands.main_job import model_class

    assert model_class(cfg) is RTDETR  # the main job, benchmarks and profiler build it as an RT-DETR
    model = RTDETRDetectionModel(cfg, verbose=False).eval()
    head = model.model[-1]
    assert isinstance(head, RTDETRDecoder) and type(head).__name__ == "RTDETRFDRDecoder"
    with torch.no_grad():
        for imgsz in (320, 640):
            y, _ = model(torch.rand(1, 3, imgsz, imgsz))
            assert y.shape == (1, head.num_queries, 6)
    assert {(m.eps, m.momentum) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {(1e-5, 0.1)}


def test_head_follows_an_efficientvit_encoder_with_inferred_channels(tmp_path):
    """After EfficientViT (32/64/128 channels) and an encoder of other widths, the head projects each level that is
    not ``hidden`` wide (1x1 conv + BN) and passes the one that is; channels and points per level are checked."""
    model = _model(EFFVIT_HEAD, tmp_path).eval()
    head = model.model[-1]
    assert [type(p).__name__ for p in head.input_proj] == ["Sequential", "Identity", "Sequential"]
    assert head.input_proj[0].conv.in_channels == 32 and head.input_proj[2].conv.in_channels == 96
    assert head.decoder.layers[0].cross_attn.points == [2, 4, 2]
    with torch.no_grad():
        y, raw = model(torch.rand(1, 3, 128, 128))
    assert y.shape == (1, 30, 6) and raw[1].shape == (1, 1, 30, 3)

    bad = EFFVIT_HEAD.replace("[2, 4, 2], 4, 2", "[2, 4], 4, 2")
    with pytest.raises(ValueError, match=r"layer 14: FDRDecoder: .*points \[2, 4\] must give one count per input"):
        _model(bad, tmp_path)
    with pytest.raises(ValueError, match=r"layer 14: FDRDecoder: takes a list of feature levels as 'from'"):
        _model(EFFVIT_HEAD.replace("[[1, 10, 13], 1, FDRDecoder", "[13, 1, FDRDecoder"), tmp_path)


def test_training_step_with_the_heads_criterion(tmp_path):
    """In training the head returns every layer, the denoising groups and its criterion's extras: the loss is finite,
    reaches every decoder layer and the encoder, and also works for a batch with no boxes at all."""
    torch.manual_seed(0)
    model = _model(EFFVIT_HEAD, tmp_path).train()
    from ultralytics.cfg import get_cfg

    model.args, model.nc = get_cfg(), 3  # what the trainer sets
    batch = {
        "img": torch.rand(2, 3, 128, 128),
        "batch_idx": torch.tensor([0.0, 0.0, 1.0]),
        "cls": torch.tensor([[0.0], [2.0], [1.0]]),
        "bboxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.5, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5]]),
    }
    loss, items = model.loss(batch)
    assert torch.isfinite(loss).all() and torch.isfinite(_items(items)).all() and _items(items).sum() > 0
    loss.sum().backward()
    head = model.model[-1]
    for name in (
        "decoder.layers.0.linear1.weight",
        "decoder.layers.1.linear1.weight",
        "dec_bbox_head.1.layers.2.weight",  # the last layer: it starts at zero (the official init)
    ):
        assert head.get_parameter(name).grad.abs().sum() > 0, name
    assert model.model[6].conv.weight.grad.abs().sum() > 0  # the encoder learns through the head

    model.zero_grad()
    empty = {**batch, "batch_idx": torch.zeros(0), "cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4)}
    loss, items = model.loss(empty)
    assert torch.isfinite(loss).all() and torch.isfinite(_items(items)).all()
    loss.sum().backward()


def test_yolo_train_and_val_on_the_generated_set(tiny_data, tmp_path):
    """``RTDETR('dfine-n.yaml').train(...)`` runs an epoch in the stock trainer and validates."""
    from ultralytics import RTDETR

    model = RTDETR("dfine-n.yaml")
    model.train(data=tiny_data, project=str(tmp_path), name="t", **TINY_TRAIN)
    results = (tmp_path / "t" / "results.csv").read_text().splitlines()
    assert len(results) == 2 and "val/giou_loss" in results[0]
    assert np.isfinite([float(v) for v in results[1].split(",")[1:]]).all()
    metrics = RTDETR(str(tmp_path / "t" / "weights" / "last.pt")).val(data=tiny_data, imgsz=64, batch=4, plots=False)
    assert 0 <= metrics.box.map50 <= 1


def test_fuse_folds_every_conv_and_repvgg_block_exactly():
    """fuse() folds the encoder's Conv+BN and RepVGG blocks and HGNetV2's conv + BN, and swaps the stem's 2x2
    max pooling for its shifted-views form: same outputs in float64."""
    from ultralytics.nn.modules.conv import Conv, RepConv
    from ultralytics.nn.tasks import RTDETRDetectionModel

    torch.manual_seed(0)
    model = RTDETRDetectionModel("dfine-n.yaml", nc=5, verbose=False).double().eval()
    randomise_bn(model)
    x = torch.rand(1, 3, 160, 160, dtype=torch.float64)
    with torch.no_grad():
        before = model(x)[0]
        model.fuse()
        after = model(x)[0]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert type(model.model[0].model.stem.pool).__name__ == "ShiftMaxPool2d"
    assert all(not hasattr(m, "bn") for m in model.modules() if isinstance(m, Conv))
    assert all(hasattr(m, "conv") for m in model.modules() if isinstance(m, RepConv))
    torch.testing.assert_close(after, before, atol=1e-9, rtol=0)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """The D-FINE-N fixture (official layout, seeded weights) converted to an Ultralytics checkpoint."""
    from yolo_plugins.commands.import_weights import import_weights

    root = tmp_path_factory.mktemp("dfine")
    meta, _ = fx.load("dfine_n", fx.FIXTURES_DFINE)
    torch.save({"model": fx.release_state_dict(meta)}, root / "dfine_n_coco.pth")
    return import_weights(root / "dfine_n_coco.pth", root / "dfine_n_coco.pt")[0]


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_export_gives_the_pytorch_detections(converted, fmt, tmp_path):
    """ONNX Runtime and OpenVINO (float32) run the exported converted model with PyTorch's top-300 detections
    (sorted scores within 1e-3; rows matched by class and box within 1e-3, in any order)."""
    from ultralytics import RTDETR, YOLO

    model = YOLO(str(converted))  # a name without "rtdetr": routed by the head's class name
    assert type(model) is RTDETR
    f = Path(model.export(format=fmt, imgsz=320, device="cpu", simplify=True))
    assert type(YOLO(str(f), task="detect")) is RTDETR  # exported: routed by the head name in the metadata
    x = torch.from_numpy(np.ascontiguousarray(fx.fixture_image()[:320, :320, ::-1])).permute(2, 0, 1)[None] / 255
    with torch.no_grad():
        want = RTDETR(str(converted)).model.eval()(x.float())[0][0].numpy()
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0][0]
    else:
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(
            core.read_model(str(next(f.glob("*.xml")))), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
        )
        got = compiled(x.numpy())[0][0]
    assert got.shape == want.shape == (300, 6)
    np.testing.assert_allclose(got[:, 4], want[:, 4], atol=1e-3, rtol=0)
    matched = [((got[:, 5] == row[5]) & (np.abs(got[:, :4] - row[:4]).max(1) < 1e-3)).any() for row in want]
    # with random weights many encoder scores near the 300th are closer than float32 resolves, so a few queries may
    # differ between runtimes (seen: 0-2 in ONNX Runtime, 5 in OpenVINO); a wrong graph moves nearly all of them
    assert sum(matched) >= 285, f"{fmt}: {300 - sum(matched)} of 300 detections differ from PyTorch's"


@pytest.mark.parametrize("fmt", ["openvino", "onnx"])
def test_int8_export_keeps_the_float32_detections(converted, fmt, tmp_path):
    """``quantize=8`` (OpenVINO NNCF, ONNX Runtime static quantization) of a converted checkpoint: the graph is
    quantized and its top-50 float32 boxes are each found in the INT8 output within 0.02 of the image size (seen:
    at most 0.005), sorted scores within 0.02 (seen: 0.005). On a CPU without VNNI (``helpers.cpu_has_vnni``; the
    INT8 kernels saturate) within 0.05 (seen on an AVX2-only AMD EPYC: boxes 0.033 OpenVINO / 0.018 ONNX, scores
    0.022 / 0.006). The seeded fixture's outputs hardly depend on the image (the mirrored image gives the same ones
    within 1e-6), so this checks that the INT8 graph reproduces float32's numbers; that INT8 exports follow the image
    is ``test_int8.py``'s check, on the RT-DETR heads."""
    from helpers import tiny_shapes
    from ultralytics import YOLO

    data = tiny_shapes(tmp_path / "calibration", imgsz=160)
    f = Path(YOLO(str(converted)).export(format=fmt, imgsz=160, quantize=8, data=str(data), device="cpu"))
    if fmt == "onnx":
        import onnx
        import onnxruntime as ort

        assert sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(f)).graph.node) >= 20
        sess = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
        run = lambda x: sess.run(None, {sess.get_inputs()[0].name: x})[0][0]  # noqa: E731
    else:
        import openvino as ov

        ir = ov.Core().read_model(str(next(f.glob("*.xml"))))
        assert sum(op.get_type_name() == "FakeQuantize" for op in ir.get_ordered_ops()) >= 20
        compiled = ov.Core().compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        run = lambda x: compiled(x)[0][0]  # noqa: E731
    x = torch.from_numpy(np.ascontiguousarray(fx.fixture_image()[:160, :160, ::-1])).permute(2, 0, 1)[None] / 255
    with torch.no_grad():
        want = YOLO(str(converted)).model.eval()(x.float())[0][0].numpy()
    got = run(x.numpy())
    assert got.shape == want.shape
    tol = 0.02 if cpu_has_vnni() else 0.05
    np.testing.assert_allclose(np.sort(got[:, 4]), np.sort(want[:, 4]), atol=tol, rtol=0)
    errors = [np.abs(got[:, :4] - row[:4]).max(1).min() for row in want[:50]]
    assert max(errors) < tol, f"{fmt} INT8: a float32 box is {max(errors):.3f} from every INT8 box (tolerance {tol})"


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_shift_max_pool_equals_the_host_pooling_and_exports_as_it(ceil_mode):
    """The 2x2 stride-1 form equals ``nn.MaxPool2d`` exactly on odd and even sizes; other pooling shapes and traced
    graphs use the host's operator."""
    from yolo_plugins.blocks.shift_max_pool import ShiftMaxPool2d, shift_max_pool

    host = torch.nn.MaxPool2d(2, 1, ceil_mode=ceil_mode)
    form = shift_max_pool(host)
    assert isinstance(form, ShiftMaxPool2d)
    for shape in [(1, 3, 7, 9), (2, 16, 33, 32)]:
        x = torch.randn(shape)
        assert torch.equal(form(x), host(x))
    traced = torch.jit.trace(form, torch.randn(1, 3, 8, 8))
    assert "max_pool2d" in str(traced.graph)
    wide = shift_max_pool(torch.nn.MaxPool2d(5, 1, 2))  # SPPF's pooling: the host's forward
    x = torch.randn(1, 4, 10, 10)
    assert torch.equal(wide(x), torch.nn.functional.max_pool2d(x, 5, 1, 2))


def test_yolo_benchmark_runs_a_dfine_family_model(tmp_path, tiny_data, monkeypatch):
    """Ultralytics' ``benchmark`` (``yolo benchmark``) on a trained DEIMv2-Atto checkpoint whose file name does not
    say RT-DETR: the PyTorch and ONNX rows export, load (routed to RT-DETR by the head's class) and validate."""
    from ultralytics import RTDETR
    from ultralytics.utils.benchmarks import benchmark

    monkeypatch.chdir(tmp_path)  # the benchmark appends to ./benchmarks.log
    torch.manual_seed(0)
    RTDETR("deimv2-atto.yaml").train(
        data=tiny_data, project=str(tmp_path), name="t", val=False, verbose=False, amp=False, **TINY_TRAIN
    )
    weights = tmp_path / "t" / "weights" / "last.pt"
    rows = {}
    for fmt in ("-", "onnx"):
        df = benchmark(model=str(weights), data=tiny_data, imgsz=64, device="cpu", format=fmt)
        rows.update({row["Format"]: row for row in df.iter_rows(named=True)})
    assert set(rows) == {"PyTorch", "ONNX"}
    status = next(k for k in rows["PyTorch"] if k.startswith("Status"))
    assert rows["PyTorch"][status] == rows["ONNX"][status] == "✅", rows


def test_affine_form_is_the_same_map_and_exports_as_a_convolution(tmp_path):
    """HGNetV2's ``scale * x + bias`` after fuse(): the same outputs in eager PyTorch and, traced, one depthwise 1x1
    ``Conv`` per block in the ONNX graph in place of ``Mul`` and ``Add`` (ONNX Runtime keeps its conv layout)."""
    import onnx
    from timm.models.hgnet import LearnableAffineBlock

    from yolo_plugins.blocks.affine_conv import AffineConv, affine_conv

    host = LearnableAffineBlock(scale_value=1.3, bias_value=-0.2)
    x = torch.randn(2, 5, 7, 9)
    want = host(x)
    form = affine_conv(host)
    assert isinstance(form, AffineConv)
    torch.testing.assert_close(form(x), want, atol=0, rtol=0)
    seq = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), form).eval()
    torch.onnx.export(seq, torch.randn(1, 3, 9, 11), tmp_path / "lab.onnx", dynamo=False)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "lab.onnx")).graph.node]
    assert ops.count("Conv") == 2 and "Add" not in ops, ops  # (a Mul remains in the weight's shape arithmetic)
    import onnxruntime as ort

    x = torch.randn(1, 3, 9, 11)
    sess = ort.InferenceSession(str(tmp_path / "lab.onnx"))
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got[0]), seq(x).detach(), atol=1e-6, rtol=0)


def test_training_starts_from_an_official_file_with_pretrained(converted, tiny_data, tmp_path):
    """``yolo train model=dfine-n.yaml pretrained=<official .pth>``: the trainer loads every tensor of the official
    file the class count allows (3 classes here: the class heads start fresh), then trains an epoch."""
    from ultralytics import RTDETR

    source = converted.with_suffix(".pth")  # the official-layout file the fixture converted
    trained = RTDETR("dfine-n.yaml")
    # learning rate 0: the weights stay as loaded, so the checkpoint shows what was loaded
    trained.train(
        data=tiny_data, project=str(tmp_path), name="p", val=False, pretrained=str(source), optimizer="SGD", lr0=0.0,
        warmup_bias_lr=0.0, **TINY_TRAIN,
    )  # fmt: skip
    official = RTDETR(str(converted)).model.state_dict()
    ckpt = torch.load(tmp_path / "p" / "weights" / "last.pt", weights_only=False)
    got = (ckpt.get("ema") or ckpt["model"]).float().state_dict()  # a finished run keeps the EMA as "model"
    heads = ("denoising_class_embed", "enc_score_head", "dec_score_head")  # 3 classes: these start fresh
    stats = ("running_mean", "running_var", "num_batches_tracked")  # BatchNorm statistics move even at lr 0
    learned = [k for k in got if k in official and not any(h in k for h in heads) and not k.endswith(stats)]
    kept = [k for k in learned if torch.allclose(got[k], official[k].to(got[k].dtype), rtol=1e-2, atol=1e-3)]
    assert len(learned) > 400 and len(kept) == len(learned), (
        f"not from the file: {sorted(set(learned) - set(kept))[:5]}"
    )


def test_plain_yolo_command_trains_an_official_file_with_the_family_criterion(converted, tiny_data, tmp_path):
    """``yolo train model=dfine-n.yaml pretrained=<official .pth>``: the plain command builds the YAML as an RT-DETR
    model (its name has no "rtdetr"), loads the official file and logs D-FINE's loss terms by name."""
    import shutil
    import subprocess
    import sys

    from ultralytics import RTDETR, YOLO

    assert type(YOLO("dfine-n.yaml")) is RTDETR and type(YOLO("yolov10n.yaml")) is YOLO
    yolo = shutil.which("yolo", path=str(Path(sys.executable).parent)) or shutil.which("yolo")
    args = " ".join(f"{k}={v}" for k, v in TINY_TRAIN.items())
    cmd = f"{yolo} train model=dfine-n.yaml pretrained={converted.with_suffix('.pth')} data={tiny_data} {args}"
    p = subprocess.run([*cmd.split(), f"project={tmp_path}", "name=cli"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    header, row = (tmp_path / "cli" / "results.csv").read_text().splitlines()[:2]
    for name in ("vfl_loss", "l1_loss", "giou_loss", "fgl_loss", "ddf_loss"):
        assert f"train/{name}" in header and f"val/{name}" in header, header
    assert np.isfinite([float(v) for v in row.split(",")[1:]]).all()
    assert "official D-FINE-N (80 classes) -> dfine-n.yaml" in p.stdout + p.stderr  # the official file was read
