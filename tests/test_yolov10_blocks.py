"""YOLOv10 blocks in YAMLs: host classes reused, parameter counts, channels under width scaling, errors, fusing."""

from __future__ import annotations

import pytest
import torch
from helpers import randomise_bn
from torch import nn
from ultralytics.nn.modules import block as host
from ultralytics.nn.modules.conv import RepConv
from ultralytics.nn.tasks import DetectionModel

import yolo_plugins
from yolo_plugins.errors import LayerError

SCALES = {"n": [0.33, 0.25, 1024], "s": [0.33, 0.50, 1024], "x": [1.0, 1.0, 1024]}


def build(rows: list, scale: str = "x") -> DetectionModel:
    """A headless model from YAML rows (the last row's output is the model output)."""
    d = {"nc": 2, "scales": SCALES, "scale": scale, "backbone": [list(r) for r in rows], "head": []}
    return DetectionModel(d, verbose=False)


def nparams(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def bn(c: int) -> int:
    return 2 * c  # BatchNorm2d weight and bias


def conv(c1: int, c2: int, k: int = 1, g: int = 1) -> int:
    """Parameters of an Ultralytics Conv (bias-free conv + BN)."""
    return c1 // g * c2 * k * k + bn(c2)


def repvggdw(c: int) -> int:
    return conv(c, c, 7, c) + conv(c, c, 3, c)


def cib(c1: int, c2: int, e: float = 0.5, lk: bool = False) -> int:
    h = 2 * int(c2 * e)
    mid = repvggdw(h) if lk else conv(h, h, 3, h)
    return conv(c1, c1, 3, c1) + conv(c1, h) + mid + conv(h, c2) + conv(c2, c2, 3, c2)


def c2fcib(c1: int, c2: int, n: int, lk: bool, e: float = 0.5) -> int:
    c = int(c2 * e)
    return conv(c1, 2 * c) + conv((2 + n) * c, c2) + n * cib(c, c, 1.0, lk)


def psa(c1: int, e: float = 0.5) -> int:
    c = int(c1 * e)
    heads = max(c // 64, 1)
    key = int(c // heads * 0.5)
    qkv = c + 2 * key * heads
    attn = conv(c, qkv) + conv(c, c) + conv(c, c, 3, c)
    return conv(c1, 2 * c) + conv(2 * c, c1) + attn + conv(c, 2 * c) + conv(2 * c, c)


def test_registered_as_host_classes():
    """All five names are the host's own classes, listed with source 'ultralytics'."""
    rows = {r["name"]: r for r in yolo_plugins.registered()}
    for name in ("SCDown", "C2fCIB", "PSA", "RepVGGDW", "CIB"):
        assert rows[name]["source"] == "ultralytics"
        assert rows[name]["class"] == f"ultralytics.nn.modules.block.{name}"
    assert rows["RepVGGDW"]["rule"] == "repvggdw_channels" and rows["CIB"]["rule"] == "cib_channels"
    assert {rows[n]["rule"] for n in ("SCDown", "C2fCIB", "PSA")} == {"check"}
    model = build([[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "RepVGGDW", []], [-1, 1, "CIB", [64]]])
    assert type(model.model[1]) is host.RepVGGDW and type(model.model[2]) is host.CIB


def test_scdown_parameter_count():
    """SCDown 256->512, k=3, s=2: 131,072 pointwise + 4,608 depthwise weights, plus two BNs."""
    m = build([[-1, 1, "Conv", [256, 1, 1]], [-1, 1, "SCDown", [512, 3, 2]]]).model[1]
    assert m.cv1.conv.weight.numel() == 256 * 512 == 131_072
    assert m.cv2.conv.weight.numel() == 512 * 3 * 3 == 4_608
    assert m.cv2.conv.groups == 512 and m.cv2.conv.stride == (2, 2)
    assert nparams(m) == 131_072 + 4_608 + bn(512) + bn(512)


@pytest.mark.parametrize(
    "row, expected",
    [
        (["RepVGGDW", []], repvggdw(96)),
        (["CIB", [128]], cib(96, 128)),
        (["CIB", [96, True, 1.0, True]], cib(96, 96, 1.0, True)),
        (["C2fCIB", [128, True, True]], c2fcib(96, 128, 1, True)),
        (["C2fCIB", [128, False]], c2fcib(96, 128, 1, False)),
        (["PSA", [96]], psa(96)),
        (["SCDown", [192, 3, 2]], conv(96, 192) + conv(192, 192, 3, 192)),
    ],
)
def test_block_parameter_counts(row, expected):
    """Each block's parameter count equals the reference arithmetic of the YOLOv10 design."""
    m = build([[-1, 1, "Conv", [96, 3, 2]], [-1, 1, *row]]).model[1]
    assert nparams(m) == expected


def test_psa_heads_arithmetic_at_256():
    """PSA(256): attention on 128 channels with 2 heads of 64 (key dim 32)."""
    m = build([[-1, 1, "Conv", [256, 1, 1]], [-1, 1, "PSA", [256]]]).model[1]
    assert m.attn.num_heads == 2 and m.attn.head_dim == 64 and m.attn.key_dim == 32
    assert nparams(m) == psa(256)


NECK = [
    [-1, 1, "Conv", [64, 3, 2]],  # 0
    [-1, 1, "SCDown", [256, 3, 2]],  # 1
    [-1, 2, "C2fCIB", [256, True, True]],  # 2
    [-1, 1, "RepVGGDW", []],  # 3 channels inferred
    [-1, 1, "CIB", [512, False]],  # 4
    [-1, 1, "PSA", [512]],  # 5
    [-1, 1, "SCDown", [512, 5, 2]],  # 6
    [-1, 1, "RepVGGDW", [512]],  # 7 typed, as written before width scaling
]


@pytest.mark.parametrize("scale, width", [("n", 0.25), ("s", 0.5), ("x", 1.0)])
def test_channels_follow_width_scaling(scale, width):
    """Every block's output channels follow the YAML width; RepVGGDW infers its channels at each scale."""
    model = build(NECK, scale)
    c = [int(v * width) for v in (64, 256, 256, 256, 512, 512, 512, 512)]
    layers = model.model
    assert layers[1].cv2.conv.out_channels == c[1]
    assert layers[2].cv2.conv.out_channels == c[2]
    assert layers[3].conv.conv.in_channels == layers[3].conv.conv.out_channels == layers[3].conv.conv.groups == c[3]
    assert layers[4].cv1[-1].conv.out_channels == c[4]
    assert layers[5].cv2.conv.out_channels == c[5]
    assert layers[7].dim == c[7]
    with torch.no_grad():
        y = model(torch.zeros(1, 3, 64, 64))
    assert y.shape == (1, c[7], 8, 8)  # three stride-2 layers: 64 / 8


def test_c2fcib_repeats_follow_depth():
    """C2fCIB is a repeat module: its CIB count follows the depth gain."""
    assert len(build(NECK, "n").model[2].m) == 1
    assert len(build(NECK, "x").model[2].m) == 2


def test_cib_repeats_with_equal_channels():
    """CIB repeated n times with equal in/out channels builds n blocks (with shortcut)."""
    m = build([[-1, 1, "Conv", [64, 3, 2]], [-1, 3, "CIB", [64]]]).model[1]
    assert isinstance(m, nn.Sequential) and len(m) == 3 and all(b.add for b in m)


@pytest.mark.parametrize(
    "rows, pattern",
    [
        ([[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "PSA", [128]]], r"layer 1: PSA: .*input \(layer 0\) has 64 .*gives 128"),
        ([[-1, 1, "Conv", [400, 1, 1]], [-1, 1, "PSA", [400]]], r"layer 1: PSA: attention width .* 200 .* 3 head"),
        ([[-1, 1, "Conv", [64, 1, 1]], [-1, 1, "PSA", [64, 1.5]]], r"layer 1: PSA: expansion e=1.5"),
        ([[-1, 1, "Conv", [64, 1, 1]], [-1, 1, "SCDown", [64, 2, 2]]], r"layer 1: SCDown: kernel k=2 must be odd"),
        ([[-1, 1, "Conv", [64, 1, 1]], [-1, 1, "SCDown", [64, 3, 4]]], r"layer 1: SCDown: stride s=4 is larger"),
        ([[-1, 1, "Conv", [64, 1, 1]], [-1, 1, "SCDown", [64, 3, 0]]], r"layer 1: SCDown: stride s=0 must be >= 1"),
        ([[-1, 1, "Conv", [64, 1, 1]], [-1, 1, "SCDown", [64]]], r"layer 1: SCDown: args must be \[c2, k, s\]"),
        ([[-1, 1, "Conv", [64, 1, 1]], [-1, 1, "SCDown", [64, 3.0, 2]]], r"layer 1: SCDown: kernel k must be an int"),
        ([[-1, 1, "Conv", [64, 1, 1]], [-1, 1, "C2fCIB", [64, True, True, 1, 0.01]]], r"C2fCIB: hidden channels"),
        ([[-1, 1, "Conv", [64, 1, 1]], [-1, 1, "C2fCIB", [64, True, True, 3]]], r"layer 1: C2fCIB: groups g=3"),
        ([[-1, 1, "Conv", [64, 1, 1]], [-1, 1, "C2fCIB", [64, True, True, 1, 2.0]]], r"C2fCIB: expansion e=2.0"),
        ([[-1, 1, "Conv", [64, 1, 1]], [-1, 1, "RepVGGDW", [32]]], r"layer 1: RepVGGDW: .*has 64 .*ask for 32"),
        ([[-1, 1, "Conv", [64, 1, 1]], [-1, 1, "RepVGGDW", [64, 3]]], r"layer 1: RepVGGDW: args must be \[\]"),
        ([[-1, 1, "Conv", [64, 1, 1]], [[0, 0], 1, "RepVGGDW", []]], r"layer 1: RepVGGDW: takes one input"),
        ([[-1, 1, "Conv", [64, 1, 1]], [-1, 3, "CIB", [128]]], r"layer 1: CIB: 3 repeats need equal input and output"),
        ([[-1, 1, "Conv", [64, 1, 1]], [-1, 1, "CIB", [128, True, 0.001]]], r"layer 1: CIB: expansion e=0.001"),
        ([[-1, 1, "Conv", [64, 1, 1]], [-1, 1, "CIB", ["wide"]]], r"layer 1: CIB: args\[0\] must be the output"),
    ],
)
def test_bad_inputs_fail_clearly(rows, pattern):
    """Inputs a block cannot take stop the build with the layer index, the module and what was wrong."""
    with pytest.raises(LayerError, match=pattern):
        build(rows)


def test_psa_mismatch_names_scaled_channels():
    """Under width scaling the PSA message gives the YAML value and what it became."""
    with pytest.raises(LayerError, match=r"layer 1: PSA: .*has 64 channels and args\[0\]=512 gives 128 at this scale"):
        build([[-1, 1, "Conv", [256, 3, 2]], [-1, 1, "PSA", [512]]], scale="n")


def test_repvggdw_typed_channels_at_every_scale():
    """A typed RepVGGDW count is accepted as written (pre-scaling) or as the real count, nothing else."""
    for scale, real in (("n", 64), ("x", 256)):
        assert build([[-1, 1, "Conv", [256, 3, 2]], [-1, 1, "RepVGGDW", [256]]], scale).model[1].dim == real
        assert build([[-1, 1, "Conv", [256, 3, 2]], [-1, 1, "RepVGGDW", [real]]], scale).model[1].dim == real
    with pytest.raises(LayerError, match="layer 1: RepVGGDW"):
        build([[-1, 1, "Conv", [256, 3, 2]], [-1, 1, "RepVGGDW", [128]]], "n")


# ---------------------------------------------------------------- re-parameterisation


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))


def fused_vs_unfused(rows: list, size: int = 64) -> tuple[DetectionModel, float]:
    torch.manual_seed(0)
    model = build(rows).eval()
    randomise_bn(model)
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        before = model(x)
        model.fuse(verbose=False)
        after = model(x)
    return model, rel_err(before, after)


BLOCK_ROWS = {
    "RepVGGDW": [-1, 1, "RepVGGDW", []],
    "CIB-lk": [-1, 1, "CIB", [64, True, 0.5, True]],
    "C2fCIB": [-1, 2, "C2fCIB", [64, True, True]],
    "PSA": [-1, 1, "PSA", [64]],
    "SCDown": [-1, 1, "SCDown", [128, 3, 2]],
    "RepC3": [-1, 3, "RepC3", [64]],
}


@pytest.mark.parametrize("name", list(BLOCK_ROWS))
def test_fuse_per_block(name):
    """After the engine's model.fuse(): outputs equal within 1e-4, no BN left, re-parameterised branches folded."""
    model, err = fused_vs_unfused([[-1, 1, "Conv", [64, 3, 2]], BLOCK_ROWS[name]])
    assert err < 1e-4
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model.is_fused()
    for m in model.modules():
        if isinstance(m, host.RepVGGDW):  # one 7x7 depthwise conv, the 3x3 branch folded in
            assert not hasattr(m, "conv1") and type(m.conv) is nn.Conv2d
            assert m.conv.kernel_size == (7, 7) and m.conv.groups == m.dim and m.conv.bias is not None
        if isinstance(m, RepConv):  # one 3x3 conv
            assert not hasattr(m, "conv1") and not hasattr(m, "conv2")
            assert type(m.conv) is nn.Conv2d and m.conv.kernel_size == (3, 3)
    if name in ("RepVGGDW", "CIB-lk", "C2fCIB"):
        assert any(isinstance(m, host.RepVGGDW) for m in model.modules())
    if name == "RepC3":
        assert sum(isinstance(m, RepConv) for m in model.modules()) == 3
