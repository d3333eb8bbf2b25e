"""The model YAMLs of issue 3 (rtdetr-effvit, yolov10-effvit, rtdetr-timm): every scale builds through the stock
``RTDETR``/``YOLO`` classes, runs a forward at 640, fuses with equal outputs and takes a real optimisation step."""

from __future__ import annotations

import pytest
import torch
from helpers import randomise_bn
from torch import nn
from ultralytics import RTDETR, YOLO
from ultralytics.cfg import get_cfg

from yolo_plugins import EfficientViT, TimmBackbone

YAMLS = ("rtdetr-effvit", "yolov10-effvit", "rtdetr-timm")
SCALES = "nsml"
CASES = [(y, s) for y in YAMLS for s in SCALES]
BACKBONE = {
    "rtdetr-effvit": (EfficientViT, {"n": "m0", "s": "m1", "m": "m3", "l": "m5"}),
    "yolov10-effvit": (EfficientViT, {"n": "m0", "s": "m1", "m": "m3", "l": "m5"}),
    "rtdetr-timm": (TimmBackbone, {"n": "convnext_atto", "s": "resnet18", "m": "resnet34", "l": "resnet50"}),
}


def _build(yaml: str, scale: str) -> nn.Module:
    """Build ``<yaml>-<scale>.yaml`` (a file that does not exist: the plugin resolves the scale letter)."""
    cls = RTDETR if yaml.startswith("rtdetr") else YOLO
    return cls(f"{yaml}-{scale}.yaml").model


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def _batch(imgsz: int = 64) -> dict:
    """One synthetic image with three labelled boxes (normalised xywh), as the trainer's collate builds a batch."""
    return {
        "img": torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0)),
        "cls": torch.tensor([[0.0], [1.0], [2.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.3], [0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.4, 0.5]]),
        "batch_idx": torch.tensor([0.0, 0.0, 0.0]),
    }


def _train_step(net: nn.Module) -> None:
    """A real optimisation step through the model's loss: finite loss, gradients reach the backbone, weights move."""
    torch.manual_seed(0)
    net.train()
    net.nc, net.args = net.yaml["nc"], get_cfg()  # what the trainer's set_model_attributes does
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    backbone_p = next(p for p in net.model[0].parameters() if p.requires_grad and p.dim() == 4)
    head_p = next(p for p in net.model[-1].parameters() if p.requires_grad and p.dim() >= 2)
    before = backbone_p.detach().clone(), head_p.detach().clone()
    loss, _ = net.loss(_batch())
    loss = loss.sum()
    assert torch.isfinite(loss) and loss.item() > 0
    opt.zero_grad()
    loss.backward()
    assert backbone_p.grad is not None and backbone_p.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(backbone_p, before[0])
    assert not torch.equal(head_p, before[1])


def _fuse_equal(net: nn.Module, rtdetr: bool) -> None:
    """fused == unfused (eval) with non-trivial BatchNorm statistics everywhere, at 128 px to keep it fast.

    Compared: the head's three input maps (everything fusing touches before the head) and, for v10Detect (whose fuse
    drops the one-to-many branch), its output. RT-DETR's output is a top-300 selection whose near-ties may swap.
    128 px still gives 336 anchors, at least the 300 queries RT-DETR selects.
    """
    net.eval()
    randomise_bn(net)
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    n_modules = len(list(net.modules()))
    head_inputs = []
    hook = net.model[-1].register_forward_pre_hook(lambda m, args: head_inputs.append([t.clone() for t in args[0]]))
    with torch.no_grad():
        ref = net(x)[0]
        net.fuse(verbose=False)
        out = net(x)[0]
    hook.remove()
    assert net.model[0].fused
    assert len(list(net.modules())) < n_modules
    assert len(head_inputs) == 2
    for a, b in zip(head_inputs[1], head_inputs[0]):
        assert _rel(a, b) < 1e-4
    if not rtdetr:
        assert _rel(out, ref) < 1e-4


@pytest.mark.parametrize("yaml, scale", CASES)
def test_scale_builds_trains_fuses_and_runs_at_640(yaml, scale):
    net = _build(yaml, scale)  # built once; each stage below works on the model the previous one left
    assert net.yaml["scale"] == scale
    cls, variants = BACKBONE[yaml]
    backbone = net.model[0]
    assert isinstance(backbone, cls)
    assert (backbone.variant if cls is EfficientViT else backbone.name) == variants[scale]
    assert backbone.strides == [8, 16, 32]
    assert [type(net.model[i]).__name__ for i in (1, 2, 3)] == ["Pick"] * 3  # channels inferred from the backbone

    _train_step(net)
    rtdetr = yaml.startswith("rtdetr")
    _fuse_equal(net, rtdetr)

    with torch.no_grad():  # the deployed (fused) model at 640
        y = net(torch.rand(1, 3, 640, 640, generator=torch.Generator().manual_seed(0)))[0]
    if rtdetr:
        assert y.shape == (1, net.model[-1].num_queries, 6)  # top queries: box xyxy, score, class
    else:
        assert y.shape == (1, 4 + net.yaml["nc"], 80 * 80 + 40 * 40 + 20 * 20)
    assert torch.isfinite(y).all()


def test_plain_name_builds_default_scale_without_warning(monkeypatch):
    from ultralytics.nn import tasks

    warnings = []
    real = tasks.LOGGER.warning
    monkeypatch.setattr(tasks.LOGGER, "warning", lambda msg, *a, **k: (warnings.append(str(msg)), real(msg, *a, **k)))
    net = RTDETR("rtdetr-effvit.yaml").model
    assert net.yaml["scale"] == net.yaml["default_scale"] == "n"
    assert not [w for w in warnings if "no model scale passed" in w]
    assert net.model[0].variant == "m0"


def test_stock_names_resolve_as_before():
    assert YOLO("yolov8n.yaml").model.yaml["scale"] == "n"


def test_unknown_scale_letter_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match=r"rtdetr-effvit-z\.yaml.*no scale 'z'"):
        RTDETR("rtdetr-effvit-z.yaml")
