"""TimmBackbone: timm's feature_info as channels/strides, real forward shapes, local weights, reparam fusing, YAML."""

from __future__ import annotations

import copy
import pickle

import pytest
import timm
import torch
from helpers import randomise_bn
from torch import nn

from yolo_plugins import TimmBackbone
from yolo_plugins.errors import LayerError
from yolo_plugins.weights.files import WeightsError

# A ResNet, a ConvNeXt, MIT's EfficientViT and two re-parameterisable families (mobileone_s0 works too, but slowly).
FAMILIES = [
    ("resnet18", [2, 3, 4]),
    ("convnext_atto", [-3, -2, -1]),
    ("efficientvit_b0", None),
    ("repvit_m0_9", [1, 2, 3]),
    ("fastvit_t8", None),
]
REPARAM = ["repvit_m0_9", "fastvit_t8"]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("name, out_indices", FAMILIES)
def test_channels_strides_match_timm_and_forward(name, out_indices):
    kw = {"out_indices": tuple(out_indices)} if out_indices is not None else {}
    with torch.device("meta"):
        ref = timm.create_model(name, features_only=True, pretrained=False, **kw)
    channels, strides = TimmBackbone.feature_info_for(name, out_indices)
    assert channels == ref.feature_info.channels()
    assert strides == ref.feature_info.reduction()

    m = TimmBackbone(name, out_indices).eval()
    assert (m.channels, m.strides) == (channels, strides)
    x = torch.randn(1, 3, 64, 96)  # non-square
    with torch.no_grad():
        out = m(x)
    assert isinstance(out, list) and len(out) == len(channels)
    assert [tuple(o.shape) for o in out] == [(1, c, 64 // s, 96 // s) for c, s in zip(channels, strides)]


def test_feature_info_builds_on_meta_and_never_asks_timm_for_weights(monkeypatch):
    calls = []
    real = timm.create_model

    def spy(*args, **kwargs):
        calls.append((kwargs.get("pretrained"), torch.empty(0).device.type, kwargs.get("features_only")))
        return real(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    forwards = []
    hook = nn.modules.module.register_module_forward_hook(lambda *a: forwards.append(1))
    try:
        TimmBackbone.feature_info_for(
            "resnet34", [-2, -1], None, in_chans=5
        )  # arguments no other test uses (not cached)
    finally:
        hook.remove()
    assert calls == [(False, "meta", True)]
    assert forwards == []  # no dummy forward


def test_pretrained_true_asks_the_hugging_face_cache(tmp_path, monkeypatch):
    """``True`` means timm's ImageNet weights through the HF cache (tests/test_hub_weights.py); offline and not cached,
    the error names the hub repo to fetch."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"^TimmBackbone: pretrained=True .*timm/resnet18\.a1_in1k"):
        TimmBackbone("resnet18", pretrained=True)


def test_unknown_name_lists_close_names():
    with pytest.raises(ValueError, match=r"unknown timm model 'resnet_18'.*resnet18"):
        TimmBackbone("resnet_18")
    with pytest.raises(ValueError, match="unknown timm model"):
        TimmBackbone.feature_info_for("convnxt_atto")
    with pytest.raises(ValueError, match="hf-hub"):
        TimmBackbone("hf-hub:timm/resnet18.a1_in1k")


def test_out_of_range_level_is_a_clear_error():
    with pytest.raises(ValueError, match=r"out_indices \[1, 2, 4\] out of range for 'convnext_atto'.*4 feature levels"):
        TimmBackbone.feature_info_for("convnext_atto", [1, 2, 4])


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto"])
def test_pretrained_classifier_state_dict_gives_timm_outputs(tmp_path, name):
    torch.manual_seed(0)
    clf = timm.create_model(name, pretrained=False)  # the layout timm's released weights have (head included)
    randomise_bn(clf)
    path = tmp_path / f"{name}.pth"
    torch.save(clf.state_dict(), path)
    # reference: timm's own features_only model, filled by timm's own loader from the same local file
    ref = timm.create_model(
        name, features_only=True, out_indices=(-3, -2, -1), pretrained=True, pretrained_cfg_overlay={"file": str(path)}
    )
    m = TimmBackbone(name, [-3, -2, -1], pretrained=path).eval()
    report = m.load_report
    assert report.loaded == report.total == len(m.model.state_dict())
    assert report.skipped  # the classifier head has no place in a features-only model
    blob = pickle.dumps(m)  # checkpoints hold tensors and plain attributes: no load report, no Path objects
    assert b"LoadReport" not in blob and b"PosixPath" not in blob and pickle.loads(blob).load_report is None
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(m(x), ref.eval()(x)):
            assert torch.allclose(a, b, atol=1e-6)


def test_pretrained_features_only_state_dict_and_errors(tmp_path):
    src = TimmBackbone("convnext_atto", [-3, -2, -1])
    randomise_bn(src)
    path = tmp_path / "atto_features.pt"
    torch.save({"model": src.model.state_dict()}, path)  # wrapped the way training scripts wrap it
    m = TimmBackbone("convnext_atto", [-3, -2, -1], pretrained=path)
    for k, v in src.model.state_dict().items():
        assert torch.equal(m.model.state_dict()[k], v)

    before = {k: v.clone() for k, v in m.model.state_dict().items()}
    with pytest.raises(WeightsError, match="wrong shape"):  # another model's weights: nothing loaded
        other = tmp_path / "femto.pth"
        torch.save(timm.create_model("convnext_femto", pretrained=False).state_dict(), other)
        m.load(other)
    assert all(torch.equal(m.model.state_dict()[k], v) for k, v in before.items())
    with pytest.raises(FileNotFoundError, match="no_such_weights.pth"):
        TimmBackbone("resnet18", pretrained="no_such_weights.pth")


@pytest.mark.parametrize("name", REPARAM)
def test_reparam_fuse_equal_outputs_fewer_modules(name):
    torch.manual_seed(0)
    m = TimmBackbone(name, [-3, -2, -1])
    randomise_bn(m)
    m.eval()
    x = torch.randn(1, 3, 96, 64)
    n_before = len(list(m.modules()))
    with torch.no_grad():
        ref = m(x)
        assert m.fuse() is m and m.fused
        out = m(x)
        m.fuse()  # idempotent
        again = m(x)
    assert len(list(m.modules())) < n_before
    for a, b, c in zip(out, ref, again):
        assert _rel(a, b) < 1e-4
        assert torch.equal(a, c)


YAML = """
nc: 3
scales:
  n: [1.0, 0.25, 1024]
backbone:
  - [-1, 1, TimmBackbone, [{model}, [-3, -2, -1]]] # 0
  - [0, 1, Pick, [0]] # 1-P3/8
  - [0, 1, Pick, [1]] # 2-P4/16
  - [0, 1, Pick, [2]] # 3-P5/32
head:
  - [[1, 2, 3], 1, Detect, [nc]]
"""


def _detection_model(tmp_path, model: str):
    from ultralytics.nn.tasks import DetectionModel

    cfg = tmp_path / f"timm-{model}.yaml"
    cfg.write_text(YAML.format(model=model))
    return DetectionModel(str(cfg), verbose=False)


def test_yaml_layer_channels_and_engine_fuse(tmp_path):
    net = _detection_model(tmp_path, "repvit_m0_9")
    backbone = net.model[0]
    assert isinstance(backbone, TimmBackbone)
    assert [m.cv2[0][0].conv.in_channels for m in [net.model[-1]]] == [backbone.channels[0]]
    assert list(net.stride) == backbone.strides
    # Ultralytics sets eps=1e-3 on plain BatchNorm2d; the backbone keeps timm's (pretrained statistics need it)
    assert {m.eps for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-5}
    randomise_bn(net)
    net.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = net(x)[0]
        net.fuse()
        out = net(x)[0]
    assert backbone.fused
    assert _rel(out, ref) < 1e-4


def test_yaml_errors_name_the_layer(tmp_path):
    from ultralytics.nn.tasks import DetectionModel

    with pytest.raises(LayerError, match=r"layer 0: TimmBackbone: unknown timm model 'resnet_18'.*resnet18"):
        _detection_model(tmp_path, "resnet_18")
    bad = tmp_path / "bad-levels.yaml"
    bad.write_text(YAML.format(model="convnext_atto").replace("[-3, -2, -1]", "[2, 3, 7]"))
    with pytest.raises(LayerError, match=r"layer 0: TimmBackbone: out_indices \[2, 3, 7\] out of range"):
        DetectionModel(str(bad), verbose=False)


def test_model_pickles_and_copies(tmp_path):
    net = _detection_model(tmp_path, "convnext_atto").eval()
    x = torch.randn(1, 3, 64, 64)
    path = tmp_path / "m.pt"
    torch.save({"model": net}, path)
    back = torch.load(path, weights_only=False)["model"]
    with torch.no_grad():
        ref = net(x)[0]
        assert torch.equal(back(x)[0], ref)
        assert torch.equal(copy.deepcopy(net)(x)[0], ref)


def test_first_projection_starts_as_identity_and_takes_imagenet_weights(tmp_path):
    """first_projection adds layer1.0's 1x1 conv + BN shortcut (the official PResNet-18/34 layout); it starts as the
    identity, so a timm ImageNet file (which has no such tensors) loads and the outputs are timm's own."""
    torch.manual_seed(0)
    ref = timm.create_model("resnet18d", features_only=True, out_indices=(2, 3, 4)).eval()
    randomise_bn(ref)
    path = tmp_path / "resnet18d.pth"
    torch.save(ref.state_dict(), path)
    block = TimmBackbone("resnet18d", [-3, -2, -1], path, first_projection=True).eval()
    proj = block.model.layer1[0].downsample
    assert [tuple(p.shape) for p in proj.parameters()] == [(64, 64, 1, 1), (64,), (64,)]
    assert sorted(block.load_report.defaulted)[:1] == ["layer1.0.downsample.1.weight"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(block(x), ref(x)):
            assert torch.equal(a, b)
    plain = TimmBackbone("resnet18d", [-3, -2, -1], first_projection=False)
    assert plain.model.layer1[0].downsample is None
    assert TimmBackbone.feature_info_for("resnet18d", [-3, -2, -1], None, True) == ([128, 256, 512], [8, 16, 32])


def test_first_projection_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="already has a projection shortcut in layer1.0"):
        TimmBackbone("resnet50d", [-1], first_projection=True)
    with pytest.raises(ValueError, match="needs a timm ResNet"):
        TimmBackbone("convnext_atto", [-1], first_projection=True)
    with pytest.raises(ValueError, match="first_projection must be true or false"):
        TimmBackbone("resnet18d", [-1], None, "yes")
