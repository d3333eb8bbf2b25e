"""EfficientViT block: equality with timm, weights in each format, strides, sizes, fusing, YAML use, FLOPs, pickling."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import safetensors.torch
import thop
import timm
import torch
import yaml
from torch import nn

from yolo_plugins import EfficientViT
from yolo_plugins.blocks.efficientvit import WIDTHS
from yolo_plugins.errors import LayerError
from yolo_plugins.weights.files import WeightsError

VARIANTS = list(WIDTHS)


pytestmark = pytest.mark.usefixtures("one_thread")  # small convolutions: far faster on one thread on a busy CPU


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine terms and the attention biases random values.

    timm initialises several BN weights and all attention biases to zero, which would switch whole residual branches
    off and make equality tests blind to them.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        for name, p in model.named_parameters():
            if name.endswith("attention_biases"):
                p.copy_(torch.randn(p.shape, generator=g))
    return model


def timm_classifier(variant: str, seed: int = 0) -> nn.Module:
    """timm's own efficientvit_mN classifier, seeded random init with randomised BN/attention-bias values."""
    torch.manual_seed(seed)
    return randomize(timm.create_model(f"efficientvit_{variant}"), seed).eval()


def timm_features(variant: str, weights) -> nn.Module:
    """timm's features_only model (stride-16 stem) filled by timm's own loader from a local file."""
    return timm.create_model(
        f"efficientvit_{variant}", features_only=True, pretrained=True, pretrained_cfg_overlay={"file": str(weights)}
    ).eval()


def official_keys(net: nn.Module) -> list[str]:
    """State-dict keys of the official microsoft/Cream EfficientViT for the shape of timm model ``net``, in order.

    Derived from the official module tree (EfficientViT/classification/model/efficientvit.py): Conv2d_BN = (c, bn),
    FFN = (pw1, pw2), Residual wraps in ``m``, EfficientViTBlock = dw0, ffn0, mixer(attn), dw1, ffn1, stages 2/3 start
    with Sequential(Residual dw, Residual FFN), PatchMerging, Sequential(...), then the blocks; BN_Linear = (bn, l).
    Only the counts (depths, heads) come from ``net``, never its names.
    """
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys: list[str] = []

    def cbn(p):
        keys.extend([f"{p}.c.weight", *(f"{p}.bn.{n}" for n in bn)])

    def ffn(p):
        cbn(f"{p}.pw1")
        cbn(f"{p}.pw2")

    def block(p, heads):
        cbn(f"{p}.dw0.m")
        ffn(f"{p}.ffn0.m")
        keys.extend([f"{p}.mixer.m.attn.attention_biases", f"{p}.mixer.m.attn.attention_bias_idxs"])
        for kind in ("qkvs", "dws"):
            for h in range(heads):
                cbn(f"{p}.mixer.m.attn.{kind}.{h}")
        cbn(f"{p}.mixer.m.attn.proj.1")
        cbn(f"{p}.dw1.m")
        ffn(f"{p}.ffn1.m")

    for i in (0, 2, 4, 6):
        cbn(f"patch_embed.{i}")
    for s, stage in enumerate(net.stages):
        heads = stage.blocks[0].mixer.m.attn.num_heads
        first = 0
        if s > 0:
            cbn(f"blocks{s + 1}.0.0.m")
            ffn(f"blocks{s + 1}.0.1.m")
            for c in ("conv1", "conv2"):
                cbn(f"blocks{s + 1}.1.{c}")
            keys.extend(f"blocks{s + 1}.1.se.{fc}.{t}" for fc in ("fc1", "fc2") for t in ("weight", "bias"))
            cbn(f"blocks{s + 1}.1.conv3")
            cbn(f"blocks{s + 1}.2.0.m")
            ffn(f"blocks{s + 1}.2.1.m")
            first = 3
        for j in range(len(stage.blocks)):
            block(f"blocks{s + 1}.{first + j}", heads)
    keys.extend([*(f"head.bn.{n}" for n in bn), "head.l.weight", "head.l.bias"])
    return keys


def to_official(net: nn.Module) -> dict[str, torch.Tensor]:
    """An official-format state dict holding ``net``'s tensors, paired by position (both trees register alike)."""
    names = official_keys(net)
    values = list(net.state_dict().values())  # timm does not save attention_bias_idxs; the official model does
    plain = [k for k in names if not k.endswith("attention_bias_idxs")]
    assert len(plain) == len(values), (len(plain), len(values))
    it = iter(values)
    return {
        k: (torch.zeros(49, 49, dtype=torch.long) if k.endswith("attention_bias_idxs") else next(it)) for k in names
    }


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor], tol: float = 1e-6) -> None:
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, rtol=tol, atol=tol)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@torch.no_grad()
@pytest.mark.parametrize("variant", VARIANTS)
def test_timm_checkpoint_gives_timm_outputs(variant, tmp_path):
    """A state dict saved from timm's efficientvit_mN, loaded via pretrained=, reproduces timm's features_only model."""
    ref = timm_classifier(variant, seed=VARIANTS.index(variant))
    path = tmp_path / f"{variant}.pth"
    torch.save(ref.state_dict(), path)
    feats = timm_features(variant, path)
    block = EfficientViT(variant, pretrained=path, stem_stride=16).eval()
    assert block.channels == feats.feature_info.channels()
    assert block.strides == feats.feature_info.reduction()
    report = block.load_report
    assert report.loaded == report.total == len(block.state_dict())
    assert all(k.startswith("head.") for k in report.skipped) and report.skipped
    x = torch.randn(1, 3, 96, 64)
    assert_same(block(x), feats(x))


@torch.no_grad()
@pytest.mark.parametrize("variant", ["m0", "m5"])
def test_official_and_safetensors_checkpoints(variant, tmp_path):
    """The official microsoft/Cream layout ({'model': ...}, keys like patch_embed.0.c.weight) and .safetensors load."""
    ref = timm_classifier(variant, seed=7)
    official = to_official(ref)
    assert "patch_embed.0.c.weight" in official and "blocks2.1.conv1.c.weight" in official
    torch.save({"model": official}, tmp_path / "official.pth")
    safetensors.torch.save_file(ref.state_dict(), str(tmp_path / "timm.safetensors"))
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    feats = timm_features(variant, tmp_path / "timm.pth")
    x = torch.randn(1, 3, 64, 96)
    expected = feats(x)

    block = EfficientViT(variant, pretrained=tmp_path / "official.pth", stem_stride=16).eval()
    assert "official" in block.load_report.layout and block.load_report.container == "['model']"
    assert block.load_report.loaded == block.load_report.total
    skipped = block.load_report.skipped  # the classifier head, named in timm's layout after conversion
    assert len(skipped) == sum(k.startswith("head.") for k in official) and all(k.startswith("head.") for k in skipped)
    assert_same(block(x), expected)

    block = EfficientViT(variant, pretrained=tmp_path / "timm.safetensors", stem_stride=16).eval()
    assert_same(block(x), expected)


@torch.no_grad()
def test_timm_features_only_layout_and_detection_stem(tmp_path):
    """A state dict saved from timm's features_only model (flattened names) loads; the stride-8 stem shares it."""
    ref = timm_classifier("m0", seed=3)
    torch.save(ref.state_dict(), tmp_path / "m0.pth")
    feats = timm_features("m0", tmp_path / "m0.pth")
    torch.save(feats.state_dict(), tmp_path / "feats.pth")
    assert any(k.startswith("patch_embed_conv1.") for k in feats.state_dict())
    block = EfficientViT("m0", pretrained=tmp_path / "feats.pth", stem_stride=16).eval()
    assert block.load_report.layout == "timm features_only"
    x = torch.randn(1, 3, 64, 64)
    assert_same(block(x), feats(x))

    det = EfficientViT("m0", pretrained=tmp_path / "m0.pth").eval()  # default: detection stem
    assert det.strides == [8, 16, 32] and det.patch_embed.conv4.conv.stride == (1, 1)
    assert {k: v.shape for k, v in det.state_dict().items()} == {k: v.shape for k, v in block.state_dict().items()}
    assert all(torch.equal(a, b) for a, b in zip(det.state_dict().values(), block.state_dict().values()))
    assert [tuple(o.shape) for o in det(x)] == [(1, 64, 8, 8), (1, 128, 4, 4), (1, 192, 2, 2)]
    assert det.load_report.loaded == 686
    blob = pickle.dumps(det)  # what a checkpoint stores: no load report, no Path objects
    assert b"LoadReport" not in blob and b"PosixPath" not in blob and pickle.loads(blob).load_report is None


def test_wrong_variant_fails_listing_keys_and_loads_nothing(tmp_path):
    torch.save({"model": timm_classifier("m1").state_dict()}, tmp_path / "m1.pth")
    block = EfficientViT("m0")
    before = {k: v.clone() for k, v in block.state_dict().items()}
    with pytest.raises(WeightsError, match="wrong shape") as e:
        block.load(tmp_path / "m1.pth")
    msg = str(e.value)
    assert "patch_embed.conv1.conv.weight: checkpoint (16, 3, 3, 3) vs module (8, 3, 3, 3)" in msg
    assert "m1.pth" in msg and "Nothing was loaded" in msg
    assert all(torch.equal(before[k], v) for k, v in block.state_dict().items())
    with pytest.raises(WeightsError, match="wrong shape"):
        EfficientViT("m0", pretrained=tmp_path / "m1.pth")


def test_missing_weights_file_never_touches_the_network(tmp_path, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        EfficientViT("m0", pretrained="efficientvit_m0.pth")
    msg = str(e.value)
    assert "efficientvit_m0.pth" in msg and str(tmp_path) in msg and "weights" in msg


def test_feature_info_is_static_and_checked(monkeypatch):
    """Channels/strides come without building a model; every variant's widths agree with timm's own feature_info."""
    for v in VARIANTS:
        with torch.device("meta"):
            info = timm.create_model(f"efficientvit_{v}", features_only=True).feature_info
        assert EfficientViT.feature_info_for(v, stem_stride=16) == (info.channels(), info.reduction())
        assert EfficientViT.feature_info_for(v) == (info.channels(), [r // 2 for r in info.reduction()])

    def boom(*a, **k):
        raise AssertionError("feature_info_for built a model")

    monkeypatch.setattr(timm, "create_model", boom)
    assert EfficientViT.feature_info_for("M3", "unused.pth", 16, in_chans=5) == ([128, 240, 320], [16, 32, 64])
    assert EfficientViT.feature_info_for("m1", None, 16, "stem") == ([64, 128, 144], [8, 16, 32])


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match=r"unknown variant 'm9'; valid variants: m0, m1, m2, m3, m4, m5"):
        EfficientViT("m9")
    with pytest.raises(ValueError, match=r"stem_stride must be 8 .* or 16 .*got 4"):
        EfficientViT("m0", stem_stride=4)
    with pytest.raises(ValueError, match=r"p3='stem' .* needs stem_stride=16, got stem_stride=8"):
        EfficientViT("m0", p3="stem")
    with pytest.raises(ValueError, match=r"p3 must be 'stage' or 'stem', got 'neck'"):
        EfficientViT("m0", None, 16, "neck")
    with pytest.raises(ValueError, match="valid variants"):
        EfficientViT.feature_info_for("b0")


@torch.no_grad()
@pytest.mark.parametrize("size", [(320, 320), (640, 640), (640, 384)])
def test_any_multiple_of_32(size):
    block = EfficientViT("m0").eval()
    outs = block(torch.randn(1, 3, *size))
    h, w = size
    assert [tuple(o.shape) for o in outs] == [(1, c, h // s, w // s) for c, s in zip(block.channels, block.strides)]


def conv_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of every Conv2d/Linear the forward runs (an independent lower bound for thop's count)."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        k = m.weight[0].numel() if isinstance(m, nn.Conv2d) else m.in_features
        total += out.numel() * k

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    return total


@torch.no_grad()
@pytest.mark.parametrize("variant", VARIANTS)
def test_fuse_matches_and_is_smaller(variant):
    block = randomize(EfficientViT(variant), seed=1).eval()
    x = torch.randn(1, 3, 64, 96)
    before = block(x)
    n_modules = len(list(block.modules()))
    flops = thop.profile(block, inputs=[x], verbose=False)[0]
    assert block.fuse() is block and block.fused
    after = block(x)
    for a, b in zip(after, before):
        assert rel_err(a, b) < 1e-4
    assert not any(isinstance(m, nn.BatchNorm2d) for m in block.modules())
    fused_modules = len(list(block.modules()))
    assert fused_modules < n_modules
    assert thop.profile(block, inputs=[x], verbose=False)[0] < flops
    block.fuse()  # idempotent
    assert len(list(block.modules())) == fused_modules
    assert all(torch.equal(a, b) for a, b in zip(block(x), after))
    with pytest.raises(RuntimeError, match="before fuse"):
        block.load("whatever.pth")


TINY = """
nc: 2
default_scale: n
scales:
  n: [0.33, 0.25, 1024]
  s: [0.33, 0.5, 1024]
backbone:
  - [-1, 1, EfficientViT, [{n: m0, s: m1}]]  # 0
  - [0, 1, Pick, [0]]  # 1-P3/8
  - [0, 1, Pick, [1]]  # 2-P4/16
  - [0, 1, Pick, [2]]  # 3-P5/32
head:
  - [[1, 2, 3], 1, Detect, [nc]]  # 4
"""


def tiny_model(scale: str = "n", text: str = TINY):
    from ultralytics.nn.tasks import DetectionModel

    d = yaml.safe_load(text)
    d["scale"] = scale
    return DetectionModel(d, verbose=False)


@torch.no_grad()
def test_yaml_builds_with_channels_scales_and_keeps_pretrained_bn(tmp_path, monkeypatch):
    from ultralytics.nn.modules import Detect

    for scale, variant in (("n", "m0"), ("s", "m1")):
        model = tiny_model(scale)
        backbone, head = model.model[0], model.model[-1]
        assert isinstance(backbone, EfficientViT) and backbone.variant == variant
        assert isinstance(head, Detect)
        assert [m[0].conv.in_channels for m in head.cv2] == list(WIDTHS[variant])
        assert model.stride.tolist() == [8, 16, 32]

    # Ultralytics' initialize_weights resets BatchNorm2d eps/momentum; pretrained statistics need timm's values
    ref = timm_classifier("m0", seed=5)
    torch.save(ref.state_dict(), tmp_path / "m0.pth")
    monkeypatch.chdir(tmp_path)  # a relative path: the working directory first (the host parser chokes on '/...')
    model = tiny_model(text=TINY.replace("{n: m0, s: m1}", "m0, m0.pth, 16"))
    assert model.stride.tolist() == [16, 32, 64]
    bns = [m for m in model.model[0].modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-5 and m.momentum == 0.1 for m in bns)
    x = torch.randn(1, 3, 64, 64)
    assert_same(model.model[0].eval()(x), timm_features("m0", tmp_path / "m0.pth")(x))


@torch.no_grad()
def test_engine_fuse_folds_the_backbone():
    """Ultralytics' model.fuse() (run before val/predict/export) folds the backbone too."""
    model = randomize(tiny_model(), seed=4).eval()
    x = torch.randn(1, 3, 64, 96)
    before = model(x)[0]
    assert not model.is_fused()
    model.fuse()
    assert model.model[0].fused and model.is_fused()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.model[0].modules())
    assert rel_err(model(x)[0], before) < 1e-4


def test_yaml_index_with_wrong_channels_fails_clearly():
    text = TINY.replace("[0, 1, Pick, [1]]", "[0, 1, Index, [100, 1]]")
    with pytest.raises(LayerError, match=r"layer 2: Index: typed 100 channels but output 1 of layer 0 has 128"):
        tiny_model(text=text)
    ok = tiny_model(text=TINY.replace("[0, 1, Pick, [1]]", "[0, 1, Index, [128, 1]]"))
    assert ok.model[-1].cv2[1][0].conv.in_channels == 128


def test_yaml_bad_variant_names_valid_ones():
    with pytest.raises(ValueError, match="valid variants: m0"):
        tiny_model(text=TINY.replace("{n: m0, s: m1}", "m7"))


def test_model_info_flops_include_backbone():
    """Ultralytics' FLOPs (model.info, get_flops) = backbone + head: the backbone is counted, convolutions and all."""
    from ultralytics.utils.torch_utils import get_flops

    model = tiny_model()
    x = torch.zeros(1, 3, 160, 160)
    backbone = thop.profile(model.model[0], inputs=[x], verbose=False)[0]
    assert backbone >= conv_macs(model.model[0], x) > 0  # thop sees every convolution the backbone runs
    with torch.no_grad():
        feats = model.model[0](x)
    head = thop.profile(model.model[-1], inputs=[list(feats)], verbose=False)[0]
    total = get_flops(model, 160) * 1e9 / 2
    assert total == pytest.approx(backbone + head, rel=1e-6)
    assert backbone > 0.5 * total
    assert model.info(imgsz=160)[-1] == pytest.approx(get_flops(model, 160))


def test_pickles_and_loads_in_a_fresh_process(tmp_path):
    model = randomize(tiny_model(), seed=2).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y = model(x)[0]
    torch.save({"model": model, "x": x, "y": y}, tmp_path / "ckpt.pt")
    block = EfficientViT("m0", pretrained=tmp_path / "ckpt.pt").eval()  # a detection checkpoint's backbone (model.0.)
    assert "below 'model.0.'" in block.load_report.container
    with torch.no_grad():
        assert_same(block(x), model.model[0](x), tol=0)
    code = textwrap.dedent(
        f"""
        import torch
        ck = torch.load({str(tmp_path / "ckpt.pt")!r}, weights_only=False)
        m = ck["model"]
        assert type(m.model[0]).__module__ == "yolo_plugins.blocks.efficientvit", type(m.model[0])
        with torch.no_grad():
            y = m(ck["x"])[0]
        print("maxdiff", float((y - ck["y"]).abs().max()))
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.split("maxdiff")[-1]) == 0.0


@torch.no_grad()
@pytest.mark.parametrize("variant", ["m0", "m1"])
def test_p3_from_stem(variant, tmp_path):
    """p3='stem': P3 is timm's stem after its third conv (stride 8), P4/P5 are timm's first two stages; stage 3 is
    not built and its checkpoint weights are skipped; outputs equal timm's own modules run by hand, also fused."""
    ref = timm_classifier(variant, seed=5)
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    block = EfficientViT(variant, tmp_path / "w.pth", 16, "stem").eval()
    w = WIDTHS[variant]
    assert block.channels == [w[0] // 2, w[0], w[1]] and block.strides == [8, 16, 32] and len(block.stages) == 2
    assert not any(k.startswith("stages.2.") for k in block.state_dict())
    assert any(k.startswith("stages.2.") for k in block.load_report.skipped)
    assert block.load_report.loaded == block.load_report.total
    x = torch.randn(2, 3, 96, 128)
    pe = ref.patch_embed
    p3 = pe.relu3(pe.conv3(pe.relu2(pe.conv2(pe.relu1(pe.conv1(x))))))
    p4 = ref.stages[0](pe.conv4(p3))
    expected = [p3, p4, ref.stages[1](p4)]
    outs = block(x)
    assert [tuple(o.shape) for o in outs] == [(2, c, 96 // s, 128 // s) for c, s in zip(block.channels, block.strides)]
    assert_same(outs, expected)
    assert_same(block.fuse()(x), expected, tol=1e-4)  # folding BN changes the rounding
