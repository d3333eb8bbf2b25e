"""The RT-DETR x YOLOv10 model family: every scale builds, trains one step, fuses with equal outputs, runs at 640."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import randomise_bn
from torch import nn
from ultralytics.cfg import get_cfg
from ultralytics.nn import tasks
from ultralytics.nn.modules import AIFI, PSA, RTDETRDecoder, SCDown, v10Detect
from ultralytics.nn.modules.block import CIB, C2fCIB, RepVGGDW
from ultralytics.nn.tasks import DetectionModel, RTDETRDetectionModel
from ultralytics.utils import DEFAULT_CFG
from ultralytics.utils.torch_utils import get_flops, get_num_params

CFG = Path(__file__).resolve().parents[1] / "cfg" / "models"
MODELS = ["rtdetr-v10", "rtdetr-v10-psa", "rtdetr-effvit-v10", "yolov10-mix"]
SCALES = ["n", "s", "m", "l"]
NC = 3


def load(name: str, scale: str) -> nn.Module:
    """Build ``name-<scale>.yaml`` the way a user would (the plugin resolves the scale letter)."""
    cls = RTDETRDetectionModel if name.startswith("rtdetr") else DetectionModel
    return cls(f"{name}-{scale}.yaml", nc=NC, verbose=False)


def synthetic_batch(size: int = 64) -> dict:
    """One 64x64 image with three boxes (normalised xywh): the smallest batch that exercises the losses."""
    g = torch.Generator().manual_seed(1)
    return {
        "img": torch.rand(1, 3, size, size, generator=g),
        "batch_idx": torch.tensor([0.0, 0.0, 0.0]),
        "cls": torch.tensor([[0.0], [2.0], [1.0]]),
        "bboxes": torch.tensor([[0.3, 0.3, 0.2, 0.3], [0.7, 0.6, 0.3, 0.2], [0.5, 0.5, 0.4, 0.4]]),
    }


def train_one_step(model: nn.Module) -> float:
    """A real optimisation step through model.loss(batch); returns the loss."""
    model.args, model.nc = get_cfg(DEFAULT_CFG), NC  # what the trainer sets before the first loss
    model.train()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    loss, _ = model.loss(synthetic_batch())
    loss = loss.sum()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)  # as the Ultralytics trainer does
    with torch.no_grad():  # plain SGD step (torch.optim would import torch._dynamo: seconds per process)
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.01 * p.grad
    changed = sum(not torch.equal(before[k], v) for k, v in model.named_parameters())
    assert changed > 0.5 * len(before), f"only {changed}/{len(before)} parameter tensors changed"
    return float(loss.detach())


def first(y):
    """The inference output tensor (heads return (y, x) in eval mode)."""
    return y[0] if isinstance(y, (tuple, list)) else y


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))


def outputs(model: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The feature maps entering the head (what fusing changes) and the final detections."""
    seen = []
    hook = model.model[-1].register_forward_pre_hook(lambda m, args: seen.extend(t.clone() for t in args[0]))
    try:
        y = first(model(x))
    finally:
        hook.remove()
    return seen, y


def same_detections(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error of two detection sets, insensitive to the order of equal-score detections (top-k ties)."""
    return rel_err(a.sort(dim=1).values, b.sort(dim=1).values)


@pytest.fixture(scope="module")
def rtdetr_l_gflops() -> float:
    """Stock rtdetr-l GFLOPs at 640 (Ultralytics' counter), the reference for the compute target."""
    return get_flops(RTDETRDetectionModel("rtdetr-l.yaml", verbose=False), 640)


def check_structure(model: nn.Module, name: str, scale: str) -> None:
    """The blocks each YAML's header promises, and the per-scale decoder sizes."""
    types = {type(m) for m in model.modules()}
    assert {SCDown, C2fCIB, RepVGGDW} <= types
    head = model.model[-1]
    if name == "yolov10-mix":
        assert isinstance(head, v10Detect) and {PSA, CIB} <= types
        return
    assert isinstance(head, RTDETRDecoder)
    assert (PSA in types, AIFI in types) == ((True, False) if name == "rtdetr-v10-psa" else (False, True))
    hd, layers = {"n": (128, 3), "s": (192, 4), "m": (256, 6), "l": (256, 6)}[scale]
    assert head.hidden_dim == hd and len(head.decoder.layers) == layers


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", MODELS)
def test_model_scale(name, scale, rtdetr_l_gflops):
    """Build -> one training step (loss finite, params changed) -> fuse with equal outputs -> forward at 640.

    rtdetr-v10 also meets its compute targets: every scale below stock rtdetr-l, the n scale at most 8 GFLOPs and
    5 M params (Ultralytics' counter at 640, model as built).
    """
    torch.manual_seed(0)
    model = load(name, scale)
    assert model.yaml["scale"] == scale
    check_structure(model, name, scale)
    if name == "rtdetr-v10":
        gflops = get_flops(model, 640)
        assert 0 < gflops < rtdetr_l_gflops
        if scale == "n":
            assert gflops <= 8.0 and get_num_params(model) <= 5_000_000
    assert torch.isfinite(torch.tensor(train_one_step(model)))

    model.eval()
    model.end2end = True  # v10Detect: the NMS-free one-to-one branch (what fuse keeps); RT-DETR ignores it
    randomise_bn(model)
    x = torch.rand(1, 3, 64, 64)  # the training step's shapes: CPU kernels already warm
    with torch.no_grad():
        feats, before = outputs(model, x)
        model.fuse(verbose=False)
        feats_fused, after = outputs(model, x)
        assert model.is_fused()
        assert all(torch.isfinite(f).all() for f in feats)
        assert all(rel_err(a, b) < 1e-4 for a, b in zip(feats, feats_fused, strict=True))
        assert same_detections(before, after) < 1e-4
        # every BN is folded, except the host RTDETRDecoder's input projections (plain Conv2d + BN, never fused)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.model[:-1].modules())
        for m in model.modules():
            if isinstance(m, RepVGGDW):
                assert not hasattr(m, "conv1") and type(m.conv) is nn.Conv2d and m.conv.kernel_size == (7, 7)
        y = first(model(torch.rand(1, 3, 640, 640)))
    assert y.shape == (1, 300, 6)  # 300 end-to-end detections: box, score, class (no NMS)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", MODELS)
def test_yaml_scales(name):
    """Each YAML declares n/s/m/l and builds n without a scale letter."""
    d = tasks.yaml_model_load(CFG / f"{name}.yaml")
    assert set(SCALES) <= set(d["scales"]) and d["default_scale"] == "n" and d["scale"] == "n"
