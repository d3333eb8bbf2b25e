"""Official D-FINE, DEIM-D-FINE and DEIMv2 checkpoints as zoo models: recognition, conversion, output parity, refusals.

The fixture (``fixtures/official_dfine``, made by its ``make_fixture.py`` from the official D-FINE, DEIM and DEIMv2
code) holds the release key lists of D-FINE-N/S, DEIM-D-FINE-N/S and DEIMv2-Atto/Femto/Pico/N with the official model's
outputs for seeded tensors; these tests rebuild the release state dicts and compare the converted models with those
outputs.
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
from yolo_plugins.weights.official_dfine import build, family_of, load_official, recognise

MODELS = {  # fixture: (family, size, zoo YAML)
    "dfine_n": ("D-FINE", "n", "dfine-n.yaml"),
    "dfine_s": ("D-FINE", "s", "dfine-s.yaml"),
    "deim_dfine_n": ("DEIM", "n", "deim-dfine-n.yaml"),
    "deim_dfine_s": ("DEIM", "s", "deim-dfine-s.yaml"),
    "deimv2_atto": ("DEIMv2", "atto", "deimv2-atto.yaml"),
    "deimv2_femto": ("DEIMv2", "femto", "deimv2-femto.yaml"),
    "deimv2_pico": ("DEIMv2", "pico", "deimv2-pico.yaml"),
    "deimv2_n": ("DEIMv2", "n", "deimv2-n.yaml"),
}
DROPPED = ("anchors", "valid_mask", "num_points_scale", "decoder.decoder.up", "decoder.decoder.reg_scale")


@pytest.fixture(scope="module")
def dfine_n() -> tuple[dict, dict, dict]:
    """(meta, outputs, release state dict in float32) of the D-FINE-N fixture."""
    meta, out = fx.load("dfine_n", fx.FIXTURES_DFINE)
    return meta, out, fx.release_state_dict(meta)


def _raw(model: torch.nn.Module, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top-k detections [300, 6], boxes [300, 4], logits [300, 80]) of the model on the fixture image."""
    with torch.no_grad():
        y, (boxes, logits, *_) = model.to(dtype).eval()(fx.image_tensor(dtype))
    return y[0].double(), boxes[-1, 0].double(), logits[-1, 0].double()


def assert_same_queries(boxes: torch.Tensor, logits: torch.Tensor, out: dict) -> None:
    """float32 outputs against the official float64 ones: the same queries (matched by box) but up to a tenth near the
    top-k boundary, where the random weights leave many encoder scores closer than float32 resolves (seen: 0-6 of
    100-300; a wrong graph matches none); the matched queries' logits within 1e-3."""
    ref_boxes, ref_logits = torch.from_numpy(out["boxes"]), torch.from_numpy(out["logits"])
    match = torch.cdist(ref_boxes, boxes).min(1)
    same = match.values < 1e-4
    n = len(ref_boxes)
    assert same.sum() >= 0.9 * n, f"float32 selected {n - int(same.sum())} of {n} other queries than float64"
    assert (logits[match.indices[same]] - ref_logits[same]).abs().max() < 1e-3


def test_fixture_is_the_official_code_output():
    """The committed fixture is what make_fixture.py writes (checked only where the official code is present)."""
    repos = os.environ.get("YOLO_PLUGINS_OFFICIAL_DFINE", "").split(os.pathsep)
    if len(repos) != 3:
        pytest.skip(
            "set YOLO_PLUGINS_OFFICIAL_DFINE to '<D-FINE dir>:<DEIM dir>:<DEIMv2 dir>' to regenerate the fixture"
        )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(fx.FIXTURES_DFINE / "make_fixture.py"), *repos, tmp], check=True)
        for name in MODELS:
            with np.load(Path(tmp) / f"{name}.npz") as new, np.load(fx.FIXTURES_DFINE / f"{name}.npz") as old:
                for k in old.files:
                    np.testing.assert_array_equal(new[k], old[k])


@pytest.mark.parametrize("name", MODELS)
def test_converted_model_computes_the_official_outputs(name):
    """float64: boxes and logits of every query within 1e-6 of the official model, in the same order, and the head's
    top-k equal to the official post-processor's first k (labels, scores within 1e-6, boxes within 1e-3 px; k is the
    query count: Ultralytics keeps that many (query, class) pairs, the official post-processor 300); float32: see
    ``assert_same_queries``."""
    from ultralytics.utils.ops import xywh2xyxy

    meta, out = fx.load(name, fx.FIXTURES_DFINE)
    sd = fx.release_state_dict(meta, torch.float64)
    family, size, yaml = MODELS[name]
    official = recognise(sd, f"{name}.pth")
    assert (official.version, official.variant, official.nc, official.yaml) == (family, size, 80, yaml)
    model, loaded = build(official, sd, name)
    assert loaded == len(sd) - sum(1 for k in sd if k.endswith(DROPPED) or k in DROPPED)

    ref_boxes, ref_logits = torch.from_numpy(out["boxes"]), torch.from_numpy(out["logits"])
    y, boxes, logits = _raw(model, torch.float64)
    assert (boxes - ref_boxes).abs().max() < 1e-6
    assert (logits - ref_logits).abs().max() < 1e-6
    k = len(ref_boxes)
    assert y.shape == (k, 6)
    assert torch.equal(y[:, 5].long(), torch.from_numpy(out["post_labels"][:k]))
    assert (y[:, 4] - torch.from_numpy(out["post_scores"][:k])).abs().max() < 1e-6
    assert (xywh2xyxy(y[:, :4]) * fx.IMGSZ - torch.from_numpy(out["post_boxes"][:k])).abs().max() < 1e-3

    _, boxes32, logits32 = _raw(model, torch.float32)
    assert_same_queries(boxes32, logits32, out)


def test_family_comes_from_the_name_the_container_or_the_caller():
    """D-FINE and DEIM-D-FINE share every tensor: the file name decides, then the container, then family=."""
    assert family_of("dfine_n_coco.pth", "['model']") == "D-FINE"
    assert family_of("deim_dfine_hgnetv2_n_coco_160e.pth", "['model']") == "DEIM"
    assert family_of("best.pth", "['ema']['module']") == "DEIM"
    assert family_of("best.pth", "['model']") == "D-FINE"
    assert family_of("dfine_n_coco.pth", "['model']", family="DEIM") == "DEIM"
    assert family_of("x.pth", "", family="deim-dfine") == "DEIM"
    with pytest.raises(WeightsError, match="family must be one of D-FINE, DEIM"):
        family_of("x.pth", "", family="yolo")


def test_release_layouts_load_into_the_zoo_yaml(dfine_n, tmp_path):
    """{'model': sd} and {'ema': {'module': sd}} files load with RTDETR(yaml).load, every tensor, official outputs;
    the DEIM container builds the DEIM model (SiLU) unless the name says D-FINE."""
    from ultralytics import RTDETR

    meta, out, sd = dfine_n
    for name, ckpt in {"dfine_n_coco.pth": {"model": sd}, "weights.pth": {"ema": {"module": sd, "updates": 5}}}.items():
        path = tmp_path / name
        torch.save(ckpt, path)
        found = load_official(path)
        assert found is not None and found[2] == found[3] == len(sd) - 7
        model = RTDETR("dfine-n.yaml").load(path)
        _, boxes, logits = _raw(model.model, torch.float32)
        assert_same_queries(boxes, logits, out)
    assert str(load_official(tmp_path / "weights.pth")[1]) == "DEIM-D-FINE-N (80 classes) -> deim-dfine-n.yaml"


def test_import_weights_command_writes_an_ultralytics_checkpoint(dfine_n, tmp_path):
    """import-weights prints the variant and loaded N/N; the .pt loads with restricted loading, COCO names, and the
    stock predictor's detections are the official post-processor's (float32)."""
    from ultralytics import RTDETR
    from ultralytics.nn.tasks import torch_safe_load

    meta, out, sd = dfine_n
    src = tmp_path / "dfine_n_coco.pth"
    torch.save({"model": sd}, src)
    dst = tmp_path / "rtdetr-dfine-n-coco.pt"
    run = subprocess.run(
        [sys.executable, "-m", "yolo_plugins.commands.cli", "import-weights", str(src), "-o", str(dst)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "D-FINE-N (80 classes) -> dfine-n.yaml" in run.stdout
    assert f"loaded {len(sd) - 7}/{len(sd) - 7} tensors" in run.stdout
    ckpt, _ = torch_safe_load(dst, safe_only=True)
    assert ckpt["model"].names[0] == "person" and len(ckpt["model"].names) == 80

    result = RTDETR(str(dst)).predict(fx.fixture_image(), imgsz=fx.IMGSZ, conf=0.0, verbose=False)[0]
    ours = torch.cat([result.boxes.xyxy, result.boxes.conf[:, None], result.boxes.cls[:, None]], 1).double()
    ref = torch.from_numpy(
        np.concatenate([out["post_boxes"], out["post_scores"][:, None], out["post_labels"][:, None]], 1)
    )
    assert len(ours) == len(ref) == 300
    other_class = (ref[:, None, 5] != ours[None, :, 5]) * 1e6  # a query can be in the top-k with two classes
    match = (torch.cdist(ref[:, :4], ours[:, :4]) + other_class).min(1)
    same = match.values < 1e-2  # pixels, float32 at 640: the same boxes with the same classes
    assert same.sum() >= 296, "more than the boundary queries differ (see assert_same_queries)"
    assert len(set(match.indices[same].tolist())) == int(same.sum())
    assert (ours[match.indices[same], 4] - ref[same, 4]).abs().max() < 1e-4


def test_import_weights_refuses_what_it_cannot_convert(dfine_n, tmp_path):
    """Unknown keys, a partial file, class heads that disagree, a layout without a YAML, DEIMv2 files: a clear error
    naming what was found, nothing written."""
    from yolo_plugins.commands.import_weights import import_weights

    meta, out, sd = dfine_n
    cases = {
        "extra.pth": ({**sd, "decoder.extra_head.weight": torch.zeros(2)}, "decoder.extra_head.weight"),
        "partial.pth": (
            {k: v for k, v in sd.items() if not k.startswith("encoder.pan_blocks.0.cv4.")},
            r"model.12.cv4.conv.weight",
        ),
        "classes.pth": ({**sd, "decoder.dec_score_head.2.weight": torch.zeros(3, 128)}, "shapes differ"),
        "layers.pth": ({k: v for k, v in sd.items() if ".layers.2." not in k}, "2 decoder layers"),
        "deimv2_pico.pth": (
            {**sd, "decoder.decoder.layers.0.swish_ffn.w12.weight": torch.zeros(2)},
            "does not fit deimv2-n.yaml",
        ),
        "deimv2_s.pth": ({**sd, "backbone.dinov3.cls_token": torch.zeros(2)}, "DINOv3 backbone"),
    }
    for name, (state, message) in cases.items():
        path = tmp_path / name
        torch.save({"model": state}, path)
        with pytest.raises(WeightsError, match=message):
            import_weights(path, tmp_path / "out.pt")
        assert not (tmp_path / "out.pt").exists()


def test_other_class_count_converts_with_its_own_heads(dfine_n, tmp_path):
    """A file trained on 3 classes (every class head 3 wide) becomes a 3-class model with every tensor loaded."""
    meta, out, sd = dfine_n
    heads = ("decoder.enc_score_head.", "decoder.dec_score_head.")
    state = {k: (v[:3] if k.startswith(heads) else v) for k, v in sd.items()}
    state["decoder.denoising_class_embed.weight"] = sd["decoder.denoising_class_embed.weight"][:4]
    path = tmp_path / "dfine_custom.pth"
    torch.save({"model": state}, path)
    model, official, loaded, total = load_official(path)
    assert official.nc == 3 and loaded == total == len(sd) - 7
    assert model.model[-1].nc == 3
    y, _, _ = _raw(model, torch.float32)
    assert y[:, 5].max() < 3


def test_deimv2_hugging_face_safetensors_with_shared_tensors_stored_once(tmp_path):
    """DEIMv2's Hugging Face ``model.safetensors`` stores a tensor shared by several names once (Pico's one box head
    for the three layers, ``decoder.up``/``decoder.decoder.up``): it converts with the official outputs."""
    from safetensors.torch import save_file

    meta, out = fx.load("deimv2_pico", fx.FIXTURES_DFINE)
    sd = fx.release_state_dict(meta)
    # the fixture filled the three names of the shared head with three seeded tensors; the official model kept the
    # last (.2), as loading into one shared module does: a real file holds that one tensor under every name
    sd.update({k.replace(".2.", ".0.", 1): v for k, v in sd.items() if k.startswith("decoder.dec_bbox_head.2.")})
    sd.update({k.replace(".2.", ".1.", 1): v for k, v in sd.items() if k.startswith("decoder.dec_bbox_head.2.")})
    dropped = ("decoder.dec_bbox_head.0.", "decoder.dec_bbox_head.2.", "decoder.up", "decoder.reg_scale")
    stored = {k: v.contiguous() for k, v in sd.items() if not k.startswith(dropped)}
    save_file(stored, tmp_path / "model.safetensors")
    model, official, loaded, total = load_official(tmp_path / "model.safetensors")
    assert str(official) == "DEIMv2-Pico (80 classes) -> deimv2-pico.yaml"
    # dropped: anchors, valid_mask, 3 x num_points_scale (computed) and decoder.decoder.up/reg_scale (which fill
    # decoder.up/reg_scale); every other stored tensor is loaded
    assert loaded == total == len(stored) - 7
    head = model.model[-1]
    assert head.dec_bbox_head[0] is head.dec_bbox_head[2]
    assert torch.equal(head.dec_bbox_head[0].layers[0].weight, sd["decoder.dec_bbox_head.1.layers.0.weight"])
    _, boxes, logits = _raw(model, torch.float32)
    assert_same_queries(boxes, logits, out)
