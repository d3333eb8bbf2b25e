"""Deploy forms: ``model.fuse()`` swaps EfficientViT's cascaded attention and RT-DETR's deformable attention for
modules whose exported graph is CPU-friendlier (eager PyTorch keeps the host's path), inside plugin models only.
Every comparison runs the export path (forced, or really traced) against the host's modules."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import randomise_bn
from ultralytics import RTDETR, YOLO
from ultralytics.nn.modules.transformer import MSDeformAttn

from yolo_plugins import registry
from yolo_plugins.blocks import cascaded_attention, deform_attention
from yolo_plugins.blocks.cascaded_attention import DeployCascadedAttention
from yolo_plugins.blocks.deform_attention import DeployDeformAttn
from yolo_plugins.host import fusing


@pytest.fixture
def export_path(monkeypatch):
    """The deploy forms take their export graph in eager mode too."""
    for module in (cascaded_attention, deform_attention):
        monkeypatch.setattr(module, "exporting", lambda: True)


def untied(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """float64, eval, non-trivial BN statistics and noise on every weight (a fresh decoder's layers are copies)."""
    model = model.double().eval()
    randomise_bn(model, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05)
    return model


def fused_pair(model: torch.nn.Module, monkeypatch) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(fused with deploy forms, fused without them) copies of ``model``."""
    with_forms = copy.deepcopy(model).fuse(verbose=False)
    with monkeypatch.context() as m:
        m.setattr(fusing, "to_deploy_forms", lambda model: 0)
        without = copy.deepcopy(model).fuse(verbose=False)
    return with_forms, without


def raw(out) -> torch.Tensor:
    """An RT-DETR's decoder boxes and logits (before top-k), or a YOLO's first output."""
    if isinstance(out, tuple) and isinstance(out[1], tuple):
        return torch.cat([out[1][0], out[1][1]], -1)
    return out[0] if isinstance(out, tuple) else out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def kinds(model: torch.nn.Module) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in model.modules():
        out[type(m).__name__] = out.get(type(m).__name__, 0) + 1
    return out


@torch.no_grad()
@pytest.mark.parametrize("imgsz", [96, 160])
def test_default_model_deploy_forms_are_exact(monkeypatch, export_path, imgsz):
    model = untied(RTDETR("cfg/models/rtdetr-effvit.yaml").model)
    fast, ref = fused_pair(model, monkeypatch)
    k = kinds(fast)
    assert k.get("DeployDeformAttn") == 3 and k.get("DeployCascadedAttention") == 3  # 3 decoder layers, 3 blocks
    assert k.get("CascadedGroupAttention") == 3 and k.get("MSDeformAttn", 0) == 0  # timm's modules are held inside
    assert kinds(ref).get("MSDeformAttn") == 3 and "DeployDeformAttn" not in kinds(ref)
    x = torch.rand(1, 3, imgsz, imgsz, dtype=torch.double)
    a, b = raw(fast(x)), raw(ref(x))
    assert a.shape == b.shape == (1, 1, 50, 4 + 80)  # 50 queries: the last decoder layer's boxes and logits
    assert rel_err(a, b) < 1e-9
    assert torch.allclose(fast(x)[0], ref(x)[0], rtol=0, atol=1e-9)  # the same detections after top-k


@torch.no_grad()
def test_yolov10_effvit_gets_the_attention_form(monkeypatch, export_path):
    model = untied(YOLO("cfg/models/yolov10-effvit.yaml").model)
    fast, ref = fused_pair(model, monkeypatch)
    assert kinds(fast).get("DeployCascadedAttention") == 6  # M0 with all three stages: 1 + 2 + 3 blocks
    x = torch.rand(1, 3, 128, 96, dtype=torch.double)
    assert rel_err(raw(fast(x)), raw(ref(x))) < 1e-9


@torch.no_grad()
def test_fuse_is_idempotent_and_counts_deploy_forms():
    model = untied(RTDETR("cfg/models/rtdetr-effvit.yaml").model)
    assert not model.is_fused()
    model.fuse(verbose=False)
    assert model.is_fused()
    x = torch.rand(1, 3, 96, 96, dtype=torch.double)
    before, n = raw(model(x)), kinds(model)
    model.fuse(verbose=False)
    assert kinds(model) == n and torch.equal(raw(model(x)), before)


@torch.no_grad()
@pytest.mark.parametrize("cfg", ["rtdetr-l.yaml", "cfg/models/rtdetr-v10.yaml"])
def test_models_without_plugin_blocks_stay_stock(cfg):
    """Stock models, and plugin YAMLs built only from host classes, keep the host's modules and graph."""
    model = RTDETR(cfg).model.eval()
    assert not fusing.uses_plugin_blocks(model)
    model.fuse(verbose=False)
    assert sum(type(m) is MSDeformAttn for m in model.modules()) > 0
    assert not any(isinstance(m, (DeployDeformAttn, DeployCascadedAttention)) for m in model.modules())


def test_masks_point_references_training_and_gradients_match_the_host(export_path):
    torch.manual_seed(0)
    host = MSDeformAttn(32, 2, 4, 2).eval()
    for p in host.parameters():
        torch.nn.init.normal_(p, std=0.2)
    form = registry.deploy_form_for(MSDeformAttn)(host)
    assert type(form) is DeployDeformAttn and not form.training
    assert form.state_dict().keys() == host.state_dict().keys()
    shapes = [[4, 4], [2, 2]]
    q, value = torch.randn(2, 5, 32), torch.randn(2, 20, 32)
    ref = torch.rand(2, 5, 1, 4) * 0.5 + 0.25
    mask = torch.zeros(2, 20, dtype=torch.bool)
    mask[0, :3] = mask[1, 17:] = True
    cases = [(ref,), (ref, mask), (ref[..., :2],), (ref[..., :2], mask)]
    with torch.no_grad():
        for c in cases:
            args = (q, c[0], value, shapes, *c[1:])
            assert torch.allclose(form(*args), host(*args), atol=1e-5)
    form.train(), host.train()
    qa, qb = q.clone().requires_grad_(), q.clone().requires_grad_()
    a, b = form(qa, ref, value, shapes), host(qb, ref, value, shapes)
    assert torch.allclose(a, b, atol=1e-5)
    a.square().sum().backward(), b.square().sum().backward()
    assert torch.allclose(qa.grad, qb.grad, atol=1e-4)
    with pytest.raises(ValueError, match="must be 2 or 4"):
        form(q, torch.rand(2, 5, 1, 3), value, shapes)


@torch.no_grad()
def test_traced_default_model_matches_the_host_modules(monkeypatch):
    """What the exporters see: ``torch.jit.trace`` (OpenVINO's and ONNX's tracer) of the fused model takes the forms'
    export graph, and its outputs are the host modules' outputs; eager PyTorch keeps the host's graph."""
    model = untied(RTDETR("cfg/models/rtdetr-effvit.yaml").model)
    fast, ref = fused_pair(model, monkeypatch)
    x = torch.rand(1, 3, 128, 128, dtype=torch.double)
    assert torch.equal(raw(fast(x)), raw(ref(x)))  # eager: the host's own path, bit for bit
    fast.model[-1].export = ref.model[-1].export = True  # as the exporter sets it: the decoded detections only
    traced = torch.jit.trace(fast, x, strict=False, check_trace=False)
    convs = [n for n in traced.inlined_graph.nodes() if n.kind() == "aten::_convolution"]
    one_d = [n for n in convs if next(n.inputs()).type().dim() == 3]  # a (batch, channels, tokens) input: Conv1d
    assert len(one_d) == 3  # each decoder layer's value projection is a 1x1 convolution
    assert rel_err(traced(x), ref(x)) < 1e-9


def flops_by_op(model: torch.nn.Module, x: torch.Tensor) -> tuple[dict[str, int], set[str]]:
    """FLOPs of one forward pass per operator, as torch's own counter sees them (convolutions, matrix products), and
    the names of the modules they were counted in."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    counts = counter.get_flop_counts()
    return {str(op): n for op, n in counts["Global"].items()}, set(counts)


def test_export_graph_of_the_deploy_forms_does_the_hosts_arithmetic(monkeypatch, export_path):
    """The graph the exporters see (the forms' export path, forced) does as many convolution and matrix-product FLOPs
    as the host's modules, and the count does see the forms: each decoder layer's value projection moves from a matrix
    product to a 1x1 convolution, FLOP for FLOP, and the cascaded attention's convolutions run in the form itself,
    none in timm's per-head ``qkvs`` modules.

    (Ultralytics' ``get_flops`` counts eager PyTorch with thop, where the forms run the host's path: it cannot tell the
    forms from the host, so it is not what this test uses.)"""
    model = RTDETR("cfg/models/rtdetr-effvit.yaml").model.eval()
    fast, ref = fused_pair(model, monkeypatch)
    imgsz = 160
    x = torch.rand(1, 3, imgsz, imgsz)
    (got, got_in), (want, want_in) = flops_by_op(fast, x), flops_by_op(ref, x)
    assert sum(got.values()) == sum(want.values()), (got, want)
    assert any(".qkvs." in name for name in want_in) and not any(".qkvs." in name for name in got_in)
    forms = [m for m in fast.modules() if isinstance(m, DeployDeformAttn)]
    tokens = sum((imgsz // s) ** 2 for s in (8, 16, 32))  # the decoder's values: every level's features, flattened
    moved = sum(2 * tokens * m.value_proj.in_features * m.value_proj.out_features for m in forms)
    assert len(forms) == 3 and moved > 0
    assert got["aten.convolution"] - want["aten.convolution"] == moved, (got, want)
    assert want["aten.mm"] + want.get("aten.addmm", 0) - got["aten.mm"] - got.get("aten.addmm", 0) == moved


def test_deploy_forms_match_exact_classes_only():
    assert registry.deploy_form_for(MSDeformAttn) is not None
    assert registry.deploy_form_for(DeployDeformAttn) is None  # a swapped module is not swapped again
    from timm.models.efficientvit_msra import CascadedGroupAttention

    assert registry.deploy_form_for(CascadedGroupAttention) is not None
