"""Official RT-DETR checkpoints (lyuwenyu/RT-DETR v1 and v2) as zoo models: recognition, conversion, output parity.

The fixture (``fixtures/official_rtdetr``, made by its ``make_fixture.py`` from the official code) holds the release
key lists of RT-DETR-R18, RT-DETR-R50 and RT-DETRv2-R18 with the official model's outputs for seeded tensors; these
tests rebuild the release state dicts and compare the converted models with those outputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import official_fixture as fx
import pytest
import torch

from yolo_plugins.weights.files import WeightsError
from yolo_plugins.weights.official_rtdetr import build, load_official, recognise

MODELS = ["rtdetr_r18vd", "rtdetr_r50vd", "rtdetrv2_r18vd"]
EXPECTED = {
    "rtdetr_r18vd": ("RT-DETR", "r18vd"),
    "rtdetr_r50vd": ("RT-DETR", "r50vd"),
    "rtdetrv2_r18vd": ("RT-DETRv2", "r18vd"),
}


@pytest.fixture(scope="module")
def r18() -> tuple[dict, dict, dict]:
    """(meta, outputs, release state dict in float32) of the RT-DETR-R18 fixture."""
    meta, out = fx.load("rtdetr_r18vd")
    return meta, out, fx.release_state_dict(meta)


def _raw(model: torch.nn.Module, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top-k detections [300, 6], boxes [300, 4], logits [300, 80]) of the model on the fixture image."""
    with torch.no_grad():
        y, (boxes, logits, *_) = model.to(dtype).eval()(fx.image_tensor(dtype))
    return y[0].double(), boxes[-1, 0].double(), logits[-1, 0].double()


def test_fixture_is_the_official_code_output():
    """The committed fixture is what make_fixture.py writes (checked only where the official code is present)."""
    repo = os.environ.get("YOLO_PLUGINS_OFFICIAL_RTDETR")
    if not repo:
        pytest.skip("set YOLO_PLUGINS_OFFICIAL_RTDETR to a lyuwenyu/RT-DETR checkout to regenerate the fixture")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        script = fx.FIXTURES / "make_fixture.py"
        subprocess.run([sys.executable, str(script), repo, tmp], check=True)
        for name in MODELS:
            with np.load(Path(tmp) / f"{name}.npz") as new, np.load(fx.FIXTURES / f"{name}.npz") as old:
                for k in old.files:
                    np.testing.assert_array_equal(new[k], old[k])


@pytest.mark.parametrize("name", MODELS)
def test_converted_model_computes_the_official_outputs(name):
    """float64: boxes and logits of all 300 queries within 1e-6 of the official model, in the same order, and the
    decoder's top-k equal to the official post-processor's; float32: the same 300 queries (ties may swap places)."""
    meta, out = fx.load(name)
    sd = fx.release_state_dict(meta, torch.float64)
    official = recognise(sd, name)
    assert (official.version, official.variant, official.nc, official.points) == (*EXPECTED[name], 80, 4)
    model, loaded = build(official, sd, name)
    derived = sum(1 for k in sd if k.endswith(("anchors", "valid_mask", "num_points_scale")))
    assert loaded == len(sd) - derived

    ref_boxes, ref_logits = torch.from_numpy(out["boxes"]), torch.from_numpy(out["logits"])
    y, boxes, logits = _raw(model, torch.float64)
    assert (boxes - ref_boxes).abs().max() < 1e-6
    assert (logits - ref_logits).abs().max() < 1e-6
    from ultralytics.utils.ops import xywh2xyxy

    assert torch.equal(y[:, 5].long(), torch.from_numpy(out["post_labels"]))
    assert (y[:, 4] - torch.from_numpy(out["post_scores"])).abs().max() < 1e-6
    assert (xywh2xyxy(y[:, :4]) - torch.from_numpy(out["post_boxes"]) / fx.IMGSZ).abs().max() < 1e-6

    _, boxes32, logits32 = _raw(model, torch.float32)
    match = torch.cdist(ref_boxes, boxes32).min(1)
    assert (match.values < 1e-5).all(), "float32 selected other queries than the official float64 model"
    assert (logits32[match.indices] - ref_logits).abs().max() < 1e-4


def test_release_layouts_load_into_the_zoo_yaml(r18, tmp_path):
    """{'ema': {'module': sd}} and {'model': sd} files load with RTDETR(yaml).load, every tensor, official outputs."""
    from ultralytics import RTDETR

    meta, out, sd = r18
    reference = None
    for i, ckpt in enumerate(({"ema": {"module": sd, "updates": 1}}, {"model": sd, "last_epoch": 71})):
        path = tmp_path / f"official_{i}.pth"
        torch.save(ckpt, path)
        model = RTDETR("rtdetr-r18vd.yaml").load(path)
        y, boxes, logits = _raw(model.model, torch.float32)
        assert (logits - torch.from_numpy(out["logits"])).abs().max() < 1e-4
        reference = model.model.state_dict() if reference is None else reference
        assert all(torch.equal(v, reference[k]) for k, v in model.model.state_dict().items())


def test_other_class_count_keeps_everything_but_the_class_heads(r18, tmp_path):
    """nc=3: the class-dependent decoder heads keep their fresh initialisation, every other tensor is the file's."""
    from ultralytics.nn.tasks import RTDETRDetectionModel

    from yolo_plugins.weights.warm_start import role_keys

    meta, out, sd = r18
    path = tmp_path / "rtdetr_r18vd.pth"
    torch.save({"model": sd}, path)
    converted, _, _, _ = load_official(path)
    target = RTDETRDetectionModel("rtdetr-r18vd.yaml", nc=3, verbose=False)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = target.load(converted)
    heads = [k for k in before if any(h in k for h in ("denoising_class_embed", "enc_score_head", "dec_score_head"))]
    assert len(heads) == 2 * 3 + 1 + 2  # 3 decoder score heads (w, b), the denoising embedding, the encoder head
    assert all(torch.equal(target.state_dict()[k], before[k]) for k in heads)
    src = converted.state_dict()
    assert all(torch.equal(v, src[k]) for k, v in target.state_dict().items() if k not in heads)
    assert report.n_loaded == report.n_total - len(heads)
    assert any("class-dependent" in reason for reason in report.skipped["decoder"])
    assert set(role_keys(target).values()) == set(role_keys(converted).values())


def test_import_weights_command_writes_an_ultralytics_checkpoint(r18, tmp_path):
    """import-weights prints the variant and loaded N/N; the .pt loads with restricted loading, COCO names, and its
    post-processed detections are the official post-processor's (the stock predictor, float32)."""
    from ultralytics import RTDETR
    from ultralytics.nn.tasks import torch_safe_load

    meta, out, sd = r18
    src = tmp_path / "rtdetr_r18vd_dec3_6x_coco_from_paddle.pth"
    torch.save({"ema": {"module": sd}}, src)
    dst = tmp_path / "rtdetr-r18vd-coco.pt"
    run = subprocess.run(
        [sys.executable, "-m", "yolo_plugins.commands.cli", "import-weights", str(src), "-o", str(dst)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "RT-DETR r18vd (80 classes) -> rtdetr-r18vd.yaml" in run.stdout
    assert f"loaded {len(sd)}/{len(sd)} tensors" in run.stdout
    ckpt, _ = torch_safe_load(dst, safe_only=True)
    assert ckpt["model"].names[0] == "person" and len(ckpt["model"].names) == 80

    model = RTDETR(str(dst))
    result = model.predict(fx.fixture_image(), imgsz=fx.IMGSZ, conf=0.0, verbose=False)[0]
    ours = torch.cat([result.boxes.xyxy, result.boxes.conf[:, None], result.boxes.cls[:, None]], 1).double()
    ref = np.concatenate([out["post_boxes"], out["post_scores"][:, None], out["post_labels"][:, None]], 1)
    ref = torch.from_numpy(ref)
    assert len(ours) == len(ref) == 300
    other_class = (ref[:, None, 5] != ours[None, :, 5]) * 1e6  # a query can be in the top-k with two classes
    match = (torch.cdist(ref[:, :4], ours[:, :4]) + other_class).min(1)
    assert (match.values < 1e-2).all()  # pixels, float32 at 640: the same boxes with the same classes
    assert len(set(match.indices.tolist())) == 300
    assert (ours[match.indices, 4] - ref[:, 4]).abs().max() < 1e-5


def test_import_weights_refuses_what_it_cannot_convert(r18, tmp_path):
    """Unknown keys, missing keys, a layout without a YAML, other files and dsp checkpoints: named, nothing written."""
    from yolo_plugins.commands.import_weights import import_weights

    meta, out, sd = r18
    cases = {
        "extra.pth": ({**sd, "decoder.extra_head.weight": torch.zeros(2)}, "decoder.extra_head.weight"),
        "missing.pth": (
            {k: v for k, v in sd.items() if not k.startswith("encoder.lateral_convs.1.")},
            "model.11.conv.weight",
        ),
        "layers.pth": (
            {k: v for k, v in sd.items() if ".layers.2." not in k and "_head.2." not in k},
            "2 decoder layers",
        ),
        "yolo.pth": ({"model.0.conv.weight": torch.zeros(1)}, "not an official release file"),
        "rtdetrv2_r18vd_dsp_3x_coco.pth": (sd, "discrete sampling"),
    }
    for name, (state, message) in cases.items():
        path = tmp_path / name
        torch.save({"model": state}, path)
        with pytest.raises(WeightsError, match=message):
            import_weights(path, tmp_path / "out.pt")
        assert not (tmp_path / "out.pt").exists()


def test_bn_settings_come_from_the_yaml():
    """bn_eps/bn_momentum reach every host-initialised BatchNorm; stock YAMLs keep 1e-3; bad values fail."""
    from ultralytics.nn.tasks import RTDETRDetectionModel

    official = RTDETRDetectionModel("rtdetr-r18vd.yaml", verbose=False)
    norms = [m for m in official.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and {(m.eps, m.momentum) for m in norms} == {(1e-5, 0.1)}
    stock = RTDETRDetectionModel("rtdetr-resnet50.yaml", verbose=False)
    assert {m.eps for m in stock.modules() if type(m) is torch.nn.BatchNorm2d} == {1e-3}
    from ultralytics.nn.tasks import yaml_model_load

    d = yaml_model_load("rtdetr-r18vd.yaml")
    d["bn_eps"] = "small"
    with pytest.raises(ValueError, match="bn_eps must be a number"):
        RTDETRDetectionModel(d, verbose=False)


def test_fewer_sampling_points_are_read_from_the_tensors():
    """RT-DETRv2 'sp2' (2 sampling points per head and level): the decoder is built with 2 points, every tensor loads.
    (Its outputs were checked once against the official code, docs/pretrained.md; the fixture holds the 4-point one.)"""
    meta, _ = fx.load("rtdetrv2_r18vd")
    narrowed = {"sampling_offsets": 8 * 3 * 2 * 2, "attention_weights": 8 * 3 * 2, "num_points_scale": 3 * 2}
    for entry in meta["keys"]:
        part = entry[0].split(".")[-2] if not entry[0].endswith("num_points_scale") else "num_points_scale"
        if part in narrowed:
            entry[1][0] = narrowed[part]
    sd = fx.release_state_dict(meta)
    official = recognise(sd)
    assert official.points == 2 and "2 sampling points" in str(official)
    model, loaded = build(official, sd)
    assert model.model[-1].decoder.layers[0].cross_attn.n_points == 2
    assert loaded == len(sd) - 2 - 3  # anchors, valid_mask and the three num_points_scale buffers are computed
