"""OpenVINO as an export target: Ultralytics' ``format="openvino"`` export of every zoo model at scale n, run by the
OpenVINO CPU plugin in float32 and checked against PyTorch (tolerance 1e-3).

Default run (about 30 s): the default model ``rtdetr-effvit-n``, ``rtdetr-v10-psa-n`` (the one with attention on S5)
and one YOLO model (``yolov10-mix-n``) at 64 px, ``rtdetr-v10-psa-n`` up to its PSA layer at 320 px compared layer
by layer, and one ``yolo export format=openvino``. Every other zoo model, and ``rtdetr-v10-psa-n`` end to end at
128 px, is marked ``slow`` and runs only when asked for: ``pytest -m slow tests/test_openvino.py``
(or ``YOLO_PLUGINS_SLOW=1``).

Weights: a model built from YAML has default-initialised weights and identity BatchNorm statistics, under which the
signal fades layer by layer and an RT-DETR's outputs barely depend on the image (its scores then sit within 1e-6 of
one another, their order among near-ties is arbitrary, and an order-independent comparison at 1e-3 checks almost
nothing). :func:`calibrate` gives the models data-like statistics first, and each test checks that its outputs do
depend on the input by more than the tolerance.

Precision: the CPU plugin is told ``INFERENCE_PRECISION_HINT=f32``. Without it, CPUs with AVX512-BF16 or AMX run
most of the graph in bf16 (about 3e-3 off PyTorch on these models, all of them, not only the PSA one), and so does
Ultralytics' own OpenVINO backend, which sets no precision hint on x86.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

ov = pytest.importorskip("openvino")

CFG = Path(__file__).resolve().parents[1] / "cfg" / "models"
ZOO = sorted(p.stem for p in CFG.glob("*.yaml"))  # every zoo YAML has an n scale
# the default model (rtdetr-effvit-n, the CPU-speed design), the RT-DETR with attention on S5 and one YOLO model
DEFAULT = ("rtdetr-effvit", "rtdetr-v10-psa", "yolov10-mix")
IMGSZ = 64
ATOL = 1e-3
CASES = [
    pytest.param(stem, IMGSZ, id=f"{stem}-n-{IMGSZ}", marks=() if stem in DEFAULT else pytest.mark.slow) for stem in ZOO
] + [pytest.param("rtdetr-v10-psa", 128, id="rtdetr-v10-psa-n-128", marks=pytest.mark.slow)]


@pytest.fixture(autouse=True)
def _slow_only_when_asked(request):
    """Skip ``slow`` tests unless the run selects them (``-m slow``) or ``YOLO_PLUGINS_SLOW=1`` is set."""
    if request.node.get_closest_marker("slow") is None:
        return
    markexpr = request.config.getoption("markexpr", "") or ""
    if "slow" not in markexpr.replace("not slow", "") and os.environ.get("YOLO_PLUGINS_SLOW") != "1":
        pytest.skip("slow: run with -m slow or YOLO_PLUGINS_SLOW=1")


def calibrate(model: nn.Module, imgsz: int, seed: int = 0) -> nn.Module:
    """Make a freshly built model's outputs well-scaled and input-dependent, deterministically.

    Every BatchNorm gets the running statistics of a few random images, its variances floored at their mean (a
    near-constant channel divided by its tiny spread amplifies rounding noise); then every convolution that ends a
    branch of the head (a YOLO head's box and class outputs) is rescaled so that each output channel has zero mean and
    unit spread on those images, as a trained head's logits roughly do. Without these two steps a YOLO head's logits
    reach the hundreds and fused and unfused PyTorch alone differ by more than 1e-3 in a score.
    """
    model.eval()
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(4, 3, imgsz, imgsz, generator=g) for _ in range(2)]
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches
        m.train()
    with torch.no_grad():
        for x in images:
            model(x)
    for m in bns:
        m.eval()
        m.running_var.clamp_(min=float(m.running_var.mean()))  # near-constant channels would amplify rounding
    head = model.model[-1]
    ends = [s[-1] for s in head.modules() if isinstance(s, nn.Sequential) and isinstance(s[-1], nn.Conv2d)]
    outputs: dict[nn.Module, list[torch.Tensor]] = {c: [] for c in ends}
    hooks = [c.register_forward_hook(lambda c, _, y: outputs[c].append(y.transpose(0, 1).flatten(1))) for c in ends]
    with torch.no_grad():
        for x in images:
            model(x)
        for h in hooks:
            h.remove()
        for c, ys in outputs.items():
            y = torch.cat(ys, 1)
            mean, std = y.mean(1), y.std(1).clamp(min=1e-6)
            c.weight.div_(std.view(-1, 1, 1, 1))
            if c.bias is not None:
                c.bias.sub_(mean).div_(std)
    return model


def image(seed: int, imgsz: int) -> torch.Tensor:
    """A random input image in [0, 1]."""
    return torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(100 + seed))


def first_output(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The first output of a PyTorch model in eval mode (what the exported graph returns)."""
    with torch.no_grad():
        y = model(x)
    return (y[0] if isinstance(y, (list, tuple)) else y).numpy()


def export_openvino(stem: str, imgsz: int, folder: Path) -> tuple[nn.Module, Path]:
    """Build ``{stem}-n.yaml``, calibrate its BatchNorms and export it with Ultralytics' exporter.

    Returns the (unfused) PyTorch model and the exported IR's ``.xml``.
    """
    from ultralytics import RTDETR, YOLO

    torch.manual_seed(0)
    model = (RTDETR if stem.startswith("rtdetr") else YOLO)(f"{stem}-n.yaml")
    calibrate(model.model, imgsz)
    cwd = Path.cwd()
    os.chdir(folder)  # a model built from YAML exports into the working directory
    try:
        out = Path(model.export(format="openvino", imgsz=imgsz, device="cpu", verbose=False))
    finally:
        os.chdir(cwd)
    out = out if out.is_absolute() else folder / out
    assert (out / "metadata.yaml").is_file(), f"no metadata.yaml in {out}"
    return model.model.float().eval(), next(out.glob("*.xml"))


def compile_f32(model):
    """An IR file (or an in-memory OpenVINO model) compiled for the CPU in float32."""
    threads = max(1, min(2, os.cpu_count() or 1))
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    compiled = ov.Core().compile_model(model if isinstance(model, ov.Model) else str(model), "CPU", config)
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    return compiled


def match_detections(got: np.ndarray, want: np.ndarray, atol: float) -> int:
    """Check two RT-DETR outputs (top-k rows ``[cx, cy, w, h, score, class]``) agree within ``atol``, in any order.

    The sorted scores must agree; every row scoring more than ``atol`` above the lowest score (so that a near-tie at
    the top-k boundary cannot swap it out) must have a partner of the same class in the other output, within
    ``atol`` in all five values, both ways. Returns the number of rows matched.
    """
    assert got.shape == want.shape, (got.shape, want.shape)
    got, want = got.reshape(-1, 6), want.reshape(-1, 6)
    np.testing.assert_allclose(np.sort(got[:, 4]), np.sort(want[:, 4]), atol=atol, rtol=0)
    matched = 0
    for a, b, what in ((got, want, "OpenVINO"), (want, got, "PyTorch")):
        floor = min(a[:, 4].min(), b[:, 4].min()) + atol
        for row in a[a[:, 4] > floor]:
            near = (b[:, 5] == row[5]) & (np.abs(b[:, :5] - row[:5]).max(1) <= atol)
            assert near.any(), f"{what} row {row} has no partner within {atol}"
            matched += 1
    return matched // 2


@pytest.mark.parametrize(("stem", "imgsz"), CASES)
def test_openvino_export_matches_pytorch(stem, imgsz, tmp_path):
    model, xml = export_openvino(stem, imgsz, tmp_path)
    ir = ov.Core().read_model(str(xml))
    assert list(ir.input(0).get_shape()) == [1, 3, imgsz, imgsz]
    assert not [c for c in ir.get_ops() if c.get_type_name() == "Constant" and c.get_element_type() == ov.Type.f16]
    compiled = compile_f32(xml)
    rtdetr = stem.startswith("rtdetr")
    outs = []
    for seed in range(2):
        x = image(seed, imgsz)
        want, got = first_output(model, x), compiled(x.numpy())[0]
        outs.append(want)
        if rtdetr:
            assert want.shape == (1, min(model.model[-1].num_queries, 300), 6)  # top-k of the queries
            matched = match_detections(got, want, ATOL)
            assert matched >= want.shape[1] // 2, f"only {matched} of {want.shape[1]} rows above the near-tie floor"
        else:  # raw head output (1, 4 + nc, anchors): boxes in pixels, compared relative to the image size
            assert got.shape == want.shape
            scale = np.ones((want.shape[1], 1), np.float32)
            scale[:4] = 1 / imgsz
            np.testing.assert_allclose(got * scale, want * scale, atol=ATOL, rtol=0)
    # the comparison means something only if the outputs depend on the image by more than the tolerance
    a, b = (np.sort(o.reshape(-1, 6)[:, 4]) if rtdetr else o[0, 4:] for o in outs)
    assert np.abs(a - b).max() > ATOL, "the scores do not depend on the input"


class Layers(nn.Module):
    """The first ``n`` layers of an Ultralytics model, returning every layer's output (a truncated model)."""

    def __init__(self, model: nn.Module, n: int):
        super().__init__()
        self.layers = model.model[:n]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y: list[torch.Tensor] = []
        for m in self.layers:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x)
        return tuple(y)


def test_psa_encoder_layers_match_pytorch():
    """``rtdetr-v10-psa-n`` up to its PSA layer at 320 px (attention over 100 tokens), layer by layer in float32."""
    from ultralytics import RTDETR
    from ultralytics.nn.modules import PSA
    from ultralytics.utils.export.openvino import torch2openvino  # the exporter's own conversion

    imgsz = 320
    torch.manual_seed(0)
    model = calibrate(RTDETR("rtdetr-v10-psa-n.yaml").model, imgsz).fuse(verbose=False)
    psa = next(i for i, m in enumerate(model.model) if isinstance(m, PSA))
    truncated = Layers(model, psa + 1).eval()
    x = image(0, imgsz)
    with torch.no_grad():
        want = truncated(x)
        compiled = compile_f32(torch2openvino(truncated, x))
    got = compiled(x.numpy())
    for i, (w, g) in enumerate(zip(want, got.values())):
        w = w.numpy()
        err = np.abs(g - w).max() / np.abs(w).max()
        assert err < 1e-5, f"layer {i} ({type(model.model[i]).__name__}): relative error {err:.1e}"


def test_yolo_export_cli_writes_openvino_ir(tmp_path):
    """``yolo export format=openvino`` on a zoo YAML name, as a user runs it."""
    yolo = shutil.which("yolo") or str(Path(sys.executable).with_name("yolo"))
    env = dict(os.environ, YOLO_OFFLINE="1", OMP_NUM_THREADS="2")
    cmd = [yolo, "export", "model=yolov10-mix-n.yaml", "format=openvino", f"imgsz={IMGSZ}", "device=cpu"]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    folder = next(tmp_path.glob("*_openvino_model"))
    assert (folder / "metadata.yaml").is_file()
    ir = ov.Core().read_model(str(next(folder.glob("*.xml"))))
    assert list(ir.input(0).get_shape()) == [1, 3, IMGSZ, IMGSZ]
    assert list(ir.output(0).get_shape())[:2] == [1, 84]  # 4 box values + 80 classes per anchor
