"""Fork-style model YAMLs (tests/fork_yamls/) run unchanged through the stock ``RTDETR``/``YOLO`` classes.

The forks' convention: row 0 (``EfficientViT_M0`` .. ``M5`` or a bare timm name such as ``resnet18``) returns a list of
maps that takes indices 0-4 (2, 3, 4 are P3, P4, P5). The plugin translates it to ``EfficientViT``/``TimmBackbone``
plus four ``Pick`` rows, so later rows keep their indices. Covered here: build, training step and fusing for every fork
YAML, ONNX parity, where the RT-DETR head reads its maps from, ``yolo-plugins convert``, errors numbered as the fork
numbers layers, and local weights given in a fork row. Everything runs at 64-128 px on one CPU thread.
"""

from __future__ import annotations

import copy
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import randomise_bn
from torch import nn
from ultralytics import RTDETR, YOLO
from ultralytics.cfg import get_cfg
from ultralytics.nn import tasks
from ultralytics.nn.modules import RTDETRDecoder

from yolo_plugins import EfficientViT, LayerError, Pick, TimmBackbone, UnknownModuleError
from yolo_plugins.commands.cli import main as cli
from yolo_plugins.host.fork_yaml import EFFICIENTVIT, looks_like_fork, translate
from yolo_plugins.host.yaml_rows import prepare

FORKS = Path(__file__).parent / "fork_yamls"
ROOT = Path(__file__).parents[1]
IMGSZ = 64
M0_ROW = "- [-1, 1, EfficientViT_M0, []] # 4"

# fork YAML, replacement of its row-0 text (None: as written), backbone class, variant / timm name, Pick indices 1-4
CASES = {
    "rtdetr-effvit-m0": ("rtdetr-effvit-fork", None, EfficientViT, "m0", [0, 0, 1, 2]),
    "rtdetr-effvit-m5": ("rtdetr-effvit-fork", "- [-1, 1, EfficientViT_M5, []]", EfficientViT, "m5", [0, 0, 1, 2]),
    "rtdetr-resnet18": ("rtdetr-resnet18-fork", None, TimmBackbone, "resnet18", [0, 1, 2, 3]),
    "yolov8-effvit": ("yolov8-effvit-fork", None, EfficientViT, "m0", [0, 0, 1, 2]),
    "yolov10-effvit": ("yolov10-effvit-fork", None, EfficientViT, "m0", [0, 0, 1, 2]),
    "yolov8-mobilenetv3": ("yolov8-mobilenetv3-fork", None, TimmBackbone, "mobilenetv3_small_100", [0, 1, 2, 3]),
}
FORK_FILES = sorted(p.stem for p in FORKS.glob("*.yaml"))


pytestmark = pytest.mark.usefixtures("one_thread")  # small convolutions: far faster on one thread on a busy CPU


def fork_copy(tmp_path: Path, name: str, *edits: tuple[str, str], stem: str | None = None) -> Path:
    """A copy of ``fork_yamls/<name>.yaml`` in ``tmp_path`` with text replacements ``(old, new)``, each applied once."""
    text = (FORKS / f"{name}.yaml").read_text()
    for old, new in edits:
        assert text.count(old) >= 1, f"{old!r} not in {name}.yaml"
        text = text.replace(old, new, 1)
    path = tmp_path / f"{stem or name}.yaml"
    path.write_text(text)
    return path


def model_class(path: Path):
    """RTDETR for a YAML whose head ends in RTDETRDecoder, else YOLO (as a user picks the class)."""
    return RTDETR if yaml.safe_load(path.read_text())["head"][-1][2] == "RTDETRDecoder" else YOLO


def build(path: Path) -> nn.Module:
    return model_class(path)(str(path)).model


def fork_rows(path: Path) -> list:
    d = yaml.safe_load(path.read_text())
    return list(d["backbone"]) + list(d["head"])


def image(seed: int = 0, size: int = IMGSZ) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def output(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        y = net(x)
    return y[0] if isinstance(y, (list, tuple)) else y


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def assert_same_topk(got: np.ndarray, want: np.ndarray, atol: float) -> None:
    """Top-k rows ``[box x4, score, class]`` agree within ``atol``; near-tied rows may come in another order.

    Both are sorted by score, so the score columns must match position by position; every row clearly above the
    lowest score (where a near-tie may swap a row in or out of the top k) must have a twin in ``want``.
    """
    assert got.shape == want.shape and got.shape[-1] == 6
    got, want = got.reshape(-1, 6), want.reshape(-1, 6)
    np.testing.assert_allclose(got[:, 4], want[:, 4], atol=atol, rtol=0)
    for row in got[got[:, 4] > want[:, 4].min() + atol]:
        twin = (want[:, 5] == row[5]) & np.all(np.abs(want[:, :5] - row[:5]) <= atol, axis=1)
        assert twin.any(), f"no reference row matches {row}"


def assert_same_output(net: nn.Module, got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    """Detect / v10Detect raw outputs: close everywhere; RT-DETR's top-k selection: :func:`assert_same_topk`."""
    if isinstance(net.model[-1], RTDETRDecoder):
        assert_same_topk(got.numpy(), want.numpy(), atol=tol * want.abs().max().item())
    else:
        assert got.shape == want.shape
        assert rel(got, want) < tol


def fake_batch() -> dict:
    """One image with three labelled boxes (normalised xywh), as the trainer's collate builds a batch."""
    return {
        "img": image(0),
        "cls": torch.tensor([[0.0], [1.0], [2.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.3], [0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.4, 0.5]]),
        "batch_idx": torch.tensor([0.0, 0.0, 0.0]),
    }


# 1. every fork YAML builds, trains and fuses ------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_fork_yaml_builds_trains_and_fuses(case, tmp_path):
    """A fork YAML builds with the stock class as our block + 4 Picks (later rows keep index and ``from``), takes a
    training step whose gradients reach the backbone, and fuses with unchanged outputs."""
    name, row0, cls, ident, picks = CASES[case]
    path = fork_copy(tmp_path, name, *([(M0_ROW, row0)] if row0 else []), stem=case)
    net = build(path)

    backbone = net.model[0]
    assert type(backbone) is cls
    assert (backbone.variant if cls is EfficientViT else backbone.name) == ident
    assert [type(m) for m in net.model[1:5]] == [Pick] * 4
    assert [m.index for m in net.model[1:5]] == picks
    assert [m.f for m in net.model[1:5]] == [0] * 4
    rows = fork_rows(path)
    assert len(net.model) == len(rows) + 4
    for i, (m, row) in enumerate(zip(net.model[5:], rows[1:]), start=5):  # fork rows 5+ are layers 5+, unchanged
        assert (m.i, m.f, type(m).__name__) == (i, row[0], row[2].removeprefix("nn.")), (i, row)
    if isinstance(net.model[-1], RTDETRDecoder):
        assert model_class(path) is RTDETR
    else:
        assert net.stride.tolist() == [8, 16, 32]  # the head reads P3/P4/P5

    # one optimisation step through the model's own loss
    torch.manual_seed(0)
    net.train()
    net.nc, net.args = net.yaml["nc"], get_cfg()  # what the trainer's set_model_attributes does
    params = [p for p in backbone.parameters() if p.requires_grad]
    stem = next(p for p in params if p.dim() == 4)
    before = stem.detach().clone()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    loss, _ = net.loss(fake_batch())
    loss = loss.sum()
    assert torch.isfinite(loss) and loss.item() > 0
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is not None for p in params), "a backbone parameter received no gradient"
    assert stem.grad.abs().sum() > 0 and sum(p.grad.abs().sum() for p in params) > 0
    opt.step()
    assert not torch.equal(stem, before)

    # fused == unfused, on an eval copy with non-trivial BatchNorm statistics
    ref = copy.deepcopy(net).eval()
    randomise_bn(ref)
    fused = copy.deepcopy(ref)
    n_modules = len(list(fused.modules()))
    fused.fuse(verbose=False)
    assert fused.model[0].fused and len(list(fused.modules())) < n_modules
    maps = {}
    hooks = [
        ref.model[-1].register_forward_pre_hook(lambda m, a: maps.setdefault("ref", a[0])),
        fused.model[-1].register_forward_pre_hook(lambda m, a: maps.setdefault("fused", a[0])),
    ]
    x = image(1)
    want, got = output(ref, x), output(fused, x)
    for h in hooks:
        h.remove()
    assert len(maps["ref"]) == len(maps["fused"]) == 3
    for a, b in zip(maps["fused"], maps["ref"]):  # the head's three input maps: all that fusing touches before it
        assert a.shape == b.shape and rel(a, b) < 1e-4
    assert_same_output(ref, got, want, 1e-4)


# 2. ONNX export ----------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the host's tracing of its own heads
@pytest.mark.parametrize("name", FORK_FILES)
def test_onnx_export_matches_pytorch(name, tmp_path, monkeypatch):
    """Ultralytics' exporter writes an ONNX graph of each fork-YAML model; onnxruntime matches PyTorch within 1e-3."""
    import onnxruntime as ort

    monkeypatch.chdir(tmp_path)  # the exporter names a YAML-built model's file after the YAML, in the working dir
    path = fork_copy(tmp_path, name)
    model = model_class(path)(str(path))
    onnx_file = Path(model.export(format="onnx", imgsz=IMGSZ, device="cpu", verbose=False)).resolve()
    assert onnx_file.parent == tmp_path.resolve() and onnx_file.suffix == ".onnx"
    net = model.model.eval()
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == [1, 3, IMGSZ, IMGSZ]
    for seed in range(2):
        x = image(seed)
        want = output(net, x)
        got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
        if isinstance(net.model[-1], RTDETRDecoder):
            assert want.shape == (1, net.model[-1].num_queries, 6)
            assert_same_topk(got.numpy(), want.numpy(), atol=1e-3)
        else:
            assert want.shape == (1, 4 + net.yaml["nc"], 8 * 8 + 4 * 4 + 2 * 2)
            np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-3, rtol=0)


# 3. the RT-DETR head reads P3/P4/P5 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rtdetr-effvit-fork", "rtdetr-resnet18-fork"])
def test_rtdetr_decoder_reads_p3_p4_p5(name, tmp_path):
    """Fork indices 2/3 are the backbone's stride-8/16 maps (layers 14, 9 read them); the decoder gets /8, /16, /32."""
    net = build(fork_copy(tmp_path, name)).eval()
    size = 128
    seen = {}
    hooks = [
        net.model[0].register_forward_hook(lambda m, a, out: seen.setdefault("backbone", out)),
        net.model[9].register_forward_pre_hook(lambda m, a: seen.setdefault(9, a[0])),
        net.model[14].register_forward_pre_hook(lambda m, a: seen.setdefault(14, a[0])),
        net.model[23].register_forward_pre_hook(lambda m, a: seen.setdefault(23, a[0])),
    ]
    output(net, image(2, size))
    for h in hooks:
        h.remove()
    assert isinstance(net.model[23], RTDETRDecoder) and net.model[23].f == [16, 19, 22]
    assert [tuple(t.shape[-2:]) for t in seen[23]] == [(size // s, size // s) for s in (8, 16, 32)]
    strides = net.model[0].strides  # EfficientViT: [8, 16, 32] (P4 is its second map); resnet18: [4, 8, 16, 32]
    assert strides == ([8, 16, 32] if isinstance(net.model[0], EfficientViT) else [4, 8, 16, 32])
    p3, p4 = seen["backbone"][strides.index(8)], seen["backbone"][strides.index(16)]
    assert net.model[9].f == 3 and torch.equal(seen[9], p4) and p4.shape[-1] == size // 16
    assert net.model[14].f == 2 and torch.equal(seen[14], p3) and p3.shape[-1] == size // 8


# 4. yolo-plugins convert ------------------------------------------------------------------------------------------


def namespace() -> dict:
    return tasks.__dict__  # what the parser hook resolves names in (the registry's blocks included)


def is_subsequence(part: list[str], whole: list[str]) -> bool:
    it = iter(whole)
    return all(line in it for line in part)


@pytest.mark.parametrize("name", FORK_FILES)
def test_convert_round_trip(name, tmp_path, capsys):
    """``yolo-plugins convert`` writes a native YAML: no fork names, every other line and comment kept, rows 5+
    unchanged; it builds the same network, which takes the fork model's state dict strictly and gives equal outputs."""
    src = fork_copy(tmp_path, name)
    out = tmp_path / "native.yaml"
    assert cli(["convert", str(src), "-o", str(out)]) == 0
    assert f"-> {out}" in capsys.readouterr().out

    fork_text, native_text = src.read_text(), out.read_text()
    fork_d, native_d = yaml.safe_load(fork_text), yaml.safe_load(native_text)
    fork_name = fork_d["backbone"][0][2]
    native_rows = list(native_d["backbone"]) + list(native_d["head"])
    assert not any(EFFICIENTVIT.match(r[2]) or r[2] == fork_name for r in native_rows)
    assert not looks_like_fork(native_d, namespace())
    expected, _ = translate(fork_d)
    assert native_d["backbone"] == expected["backbone"] and native_d["head"] == fork_d["head"]
    assert native_rows[5:] == fork_rows(src)[1:]
    row0 = next(line for line in fork_text.splitlines() if line.lstrip().startswith("- [") and fork_name in line)
    kept = [line for line in fork_text.splitlines() if line != row0]
    assert is_subsequence(kept, native_text.splitlines()), "a line of the fork YAML was lost or moved"
    if name.startswith("rtdetr"):
        assert "  - [3, 1, Conv, [256, 1, 1, None, 1, 1, False]] # 9 input_proj.1" in native_text.splitlines()

    fork_net, native_net = build(src).eval(), build(out).eval()
    assert type(native_net.model[0]) is type(fork_net.model[0])
    n_params = sum(p.numel() for p in fork_net.parameters())
    assert sum(p.numel() for p in native_net.parameters()) == n_params > 0
    native_net.load_state_dict(fork_net.state_dict(), strict=True)
    x = image(3)
    assert torch.equal(output(native_net, x), output(fork_net, x))


def test_convert_console_script(tmp_path):
    """The installed ``yolo-plugins`` script takes ``convert model=... out=...`` and writes what ``main`` writes."""
    exe = shutil.which("yolo-plugins")
    assert exe, "the yolo-plugins console script is not installed"
    src = fork_copy(tmp_path, "yolov10-effvit-fork")
    out = tmp_path / "by-script.yaml"
    p = subprocess.run([exe, "convert", f"model={src}", f"out={out}"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (
        f"{src} -> {out}" in p.stdout
        and "row 0: [-1, 1, EfficientViT_M0, []] -> [-1, 1, EfficientViT, [m0]]" in p.stdout
    )
    assert cli(["convert", str(src), "-o", str(tmp_path / "by-main.yaml")]) == 0
    assert out.read_text() == (tmp_path / "by-main.yaml").read_text()


@pytest.mark.parametrize("native", [ROOT / "cfg" / "models" / "rtdetr-effvit.yaml", "yolov8.yaml"])
def test_convert_refuses_native_and_stock_yamls(native, tmp_path, capsys):
    """Converting a YAML that is not fork-style exits 1 with a message saying so, and writes nothing."""
    if native == "yolov8.yaml":  # the stock file, from the installed Ultralytics
        from ultralytics.utils.checks import check_yaml

        native = Path(check_yaml(native))
    src = tmp_path / Path(native).name
    shutil.copy(native, src)
    assert cli(["convert", str(src), "-o", str(tmp_path / "out.yaml")]) == 1
    err = capsys.readouterr().err
    assert f"{src.name}: not a fork-style YAML" in err and "EfficientViT_M0" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


# 5. errors ------------------------------------------------------------------------------------------------------


FORK_NOTE = "layers are numbered as the fork numbers them"
REGISTER = "@yolo_plugins.register()"


def test_unknown_head_modules_named_with_fork_indices(tmp_path):
    """Unknown fork-only head modules fail together, at the fork's layer indices, with a pointer to register()."""
    path = fork_copy(
        tmp_path,
        "rtdetr-effvit-fork",
        ("- [-1, 1, AIFI, [1024, 8]] # 6", "- [-1, 1, AIFI_LPE, [1024, 8]] # 6"),
        ("- [-1, 3, RepC3, [256, 0.5]] # 11", "- [-1, 3, CSPStage, [256, 0.5]] # 11"),
    )
    with pytest.raises(UnknownModuleError) as e:
        RTDETR(str(path))
    assert [(i, n) for i, n, _ in e.value.unknown] == [(6, "AIFI_LPE"), (11, "CSPStage")]
    msg = str(e.value)
    assert "layer 6: unknown module 'AIFI_LPE' — did you mean 'AIFI'?" in msg
    assert "layer 11: unknown module 'CSPStage'" in msg
    assert REGISTER in msg and FORK_NOTE in msg


def test_unknown_backbone_factory_and_head_module_use_fork_indices(tmp_path):
    """An unknown lower-case backbone factory at row 0 is layer 0 and the head's next unknown row keeps index 6.

    ``lsknet_t`` is used because ``fasternet_t0`` is a real timm model in the installed timm (it translates).
    """
    import timm

    assert not timm.is_model("lsknet_t")
    path = fork_copy(
        tmp_path,
        "rtdetr-effvit-fork",
        (M0_ROW, "- [-1, 1, lsknet_t, [False]]"),
        ("- [-1, 1, AIFI, [1024, 8]] # 6", "- [-1, 1, AIFI_LPE, [1024, 8]] # 6"),
    )
    with pytest.raises(UnknownModuleError) as e:
        RTDETR(str(path))
    assert [(i, n) for i, n, _ in e.value.unknown] == [(0, "lsknet_t"), (6, "AIFI_LPE")]
    msg = str(e.value)
    assert "layer 0: unknown module 'lsknet_t'" in msg and "layer 6: unknown module 'AIFI_LPE'" in msg
    assert REGISTER in msg and FORK_NOTE in msg


def test_fasternet_row0_is_a_timm_backbone(tmp_path):
    """A row-0 timm name from timm's registry (here ``fasternet_t0``) is translated, not reported unknown."""
    import timm

    if not timm.is_model("fasternet_t0"):
        pytest.skip("this timm has no fasternet_t0")
    d = yaml.safe_load(
        fork_copy(tmp_path, "rtdetr-effvit-fork", (M0_ROW, "- [-1, 1, fasternet_t0, [False]]")).read_text()
    )
    native = prepare(d, namespace())
    assert native["backbone"][0][2:] == ["TimmBackbone", ["fasternet_t0", [-4, -3, -2, -1]]]
    assert [r[2] for r in native["backbone"][1:5]] == ["Pick"] * 4


def test_pretrained_true_not_cached_offline_fails_at_layer_0(tmp_path, monkeypatch):
    """``resnet18`` with ``[True]`` asks the Hugging Face cache for timm's weights (tests/test_hub_weights.py); offline
    with nothing cached it fails as layer 0, naming the hub repo, without touching the network."""

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = fork_copy(tmp_path, "rtdetr-resnet18-fork", ("resnet18, [False]", "resnet18, [True]"))
    assert prepare(yaml.safe_load(path.read_text()), namespace())["backbone"][0][2:] == [
        "TimmBackbone",
        ["resnet18", [-4, -3, -2, -1], True],
    ]
    with pytest.raises(ValueError) as e:
        RTDETR(str(path))
    msg = str(e.value)
    assert e.value.layer == 0
    assert msg.startswith("layer 0: TimmBackbone: pretrained=True ") and "timm/resnet18.a1_in1k" in msg


@pytest.mark.parametrize("source", [1, 0])
def test_reading_an_empty_backbone_slot_names_the_row(source, tmp_path):
    """EfficientViT fills fork indices 2-4 only: a row reading index 1 (or 0) fails naming that row and the slot."""
    path = fork_copy(tmp_path, "rtdetr-effvit-fork", ("- [3, 1, Conv, [256", f"- [{source}, 1, Conv, [256"))
    with pytest.raises(LayerError) as e:
        RTDETR(str(path))
    assert (e.value.index, e.value.module) == (9, "Conv")
    msg = str(e.value)
    assert msg.startswith("layer 9: Conv: ") and f"reads index {source}, an empty slot" in msg
    assert "2 = stride 8, 3 = stride 16, 4 = stride 32" in msg


def test_stock_and_native_yamls_are_not_translated():
    """A stock YAML passes through ``prepare`` as the same dict; the native zoo YAML keeps its rows (no Picks added)."""
    stock = tasks.yaml_model_load("yolov8n.yaml")
    assert not looks_like_fork(stock, namespace())
    assert prepare(stock, namespace()) is stock
    net = YOLO("yolov8n.yaml").model
    assert len(net.model) == len(stock["backbone"]) + len(stock["head"])
    assert type(net.model[0]).__name__ == "Conv" and not any(isinstance(m, Pick) for m in net.model)

    native = tasks.yaml_model_load(ROOT / "cfg" / "models" / "rtdetr-effvit.yaml")
    assert not looks_like_fork(native, namespace())
    prepared = prepare(native, namespace())
    names = [r[2] for r in native["backbone"] + native["head"]]
    assert [r[2] for r in prepared["backbone"] + prepared["head"]] == names
    assert [r[:2] for r in prepared["backbone"] + prepared["head"]] == [
        r[:2] for r in native["backbone"] + native["head"]
    ]
    assert names[:5] == ["EfficientViT", "Pick", "Pick", "Pick", "Conv"]  # 3 Picks: P3/P4/P5 at 1/2/3, as written


# 6. local weights in a fork row ---------------------------------------------------------------------------------------


def perturbed_state(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """``module``'s state dict with every floating tensor changed, so that a load that silently skips shows."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in module.state_dict().items():
        out[k] = v + torch.randn(v.shape, generator=g).abs() * 0.1 if v.is_floating_point() else v.clone()
    return out


def test_fork_row_weights_file_loads_into_efficientvit(tmp_path):
    """``EfficientViT_M0, [/abs/file.pth]``: the backbone holds exactly the file's tensors (timm-layout state dict)."""
    import timm

    torch.manual_seed(0)
    sd = perturbed_state(EfficientViT("m0"), seed=1)
    timm_keys = set(timm.create_model("efficientvit_m0").state_dict())
    assert set(sd) <= timm_keys and all(k.startswith("head.") for k in timm_keys - set(sd))  # timm's layout
    weights = tmp_path / "efficientvit_m0_custom.pth"
    torch.save(sd, weights)
    path = fork_copy(tmp_path, "rtdetr-effvit-fork", (M0_ROW, f"- [-1, 1, EfficientViT_M0, [{weights}]]"))
    backbone = build(path).model[0]
    assert isinstance(backbone, EfficientViT) and backbone.variant == "m0"
    assert backbone.load_report.loaded == backbone.load_report.total == len(sd)
    got = backbone.state_dict()
    assert got.keys() == sd.keys()
    assert all(torch.equal(got[k], v) for k, v in sd.items())


def test_fork_row_weights_file_loads_into_timm_backbone(tmp_path):
    """``mobilenetv3_small_100, [False, /abs/file.pth]``: a timm classifier state dict fills the backbone."""
    import timm

    torch.manual_seed(0)
    sd = perturbed_state(timm.create_model("mobilenetv3_small_100"), seed=2)
    weights = tmp_path / "mnv3.pth"
    torch.save(sd, weights)
    row = "mobilenetv3_small_100, [False]"
    path = fork_copy(tmp_path, "yolov8-mobilenetv3-fork", (row, f"mobilenetv3_small_100, [False, {weights}]"))
    backbone = build(path).model[0]
    assert isinstance(backbone, TimmBackbone) and backbone.out_indices == (-4, -3, -2, -1)
    got = backbone.model.state_dict()
    assert backbone.load_report.loaded == len(got) and set(got) <= set(sd)
    assert all(torch.equal(v, sd[k]) for k, v in got.items())


def test_a_case_typo_at_row_0_of_a_stock_yaml_is_not_read_as_a_fork(tmp_path):
    """``conv`` for ``Conv`` is a typo, not a fork backbone: the layers keep the stock numbering."""
    from ultralytics.utils.checks import check_yaml

    text = Path(check_yaml("yolov8.yaml")).read_text()
    text = text.replace("[-1, 1, Conv, [64, 3, 2]]", "[-1, 1, conv, [64, 3, 2]]")
    text = text.replace("[-1, 3, C2f, [128, True]]", "[-1, 3, C2F, [128, True]]", 1)
    (tmp_path / "typo.yaml").write_text(text)
    with pytest.raises(UnknownModuleError) as e:
        YOLO(str(tmp_path / "typo.yaml"))
    assert [(i, n) for i, n, _ in e.value.unknown] == [(0, "conv"), (2, "C2F")]
    assert "fork" not in str(e.value)
