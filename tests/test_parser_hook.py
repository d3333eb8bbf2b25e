"""The parser hook: channel rules in real YAMLs, stock models unchanged, clean deactivation, clear errors."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import ultralytics
import yaml
from torch import nn
from ultralytics.nn import tasks

import yolo_plugins
from yolo_plugins import registry
from yolo_plugins.errors import LayerError
from yolo_plugins.host import hook, parser_patch

STOCK = Path(ultralytics.__file__).parent / "cfg" / "models"
STOCK_YAMLS = sorted(p for d in ("rt-detr", "v10", "v8", "11") for p in (STOCK / d).glob("*.yaml"))


# Test-only blocks, one per built-in rule plus a custom callable rule.
class ConvLike(nn.Module):
    def __init__(self, c1, c2, k=3, s=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2)

    def forward(self, x):
        return self.conv(x)


class RepeatArg(nn.Module):
    def __init__(self, c1, c2, n=1):
        super().__init__()
        self.n = n
        self.m = nn.Sequential(nn.Conv2d(c1, c2, 1), *(nn.Conv2d(c2, c2, 3, 1, 1) for _ in range(n)))

    def forward(self, x):
        return self.m(x)


class Keep(nn.Module):
    def __init__(self, c, gain=1.0):
        super().__init__()
        self.bn, self.gain = nn.BatchNorm2d(c), gain

    def forward(self, x):
        return self.bn(x) * self.gain


class TwoScales(nn.Module):
    """A multi-output backbone: stride-2 and stride-4 maps with 8*w and 16*w channels."""

    def __init__(self, w=1, in_chans=3):
        super().__init__()
        self.a = nn.Conv2d(in_chans, 8 * w, 3, 2, 1)
        self.b = nn.Conv2d(8 * w, 16 * w, 3, 2, 1)
        self.channels, self.strides = [8 * w, 16 * w], [2, 4]

    @classmethod
    def feature_info_for(cls, w=1, in_chans=3):
        return [8 * w, 16 * w], [2, 4]

    def forward(self, x):
        a = self.a(x)
        return [a, self.b(a)]


def sum_rule(layer: yolo_plugins.Layer) -> None:
    """Custom rule: add the channels of all inputs."""
    layer.c2 = sum(layer.c1)
    layer.args = [layer.c1, *layer.args]


class SumProj(nn.Module):
    def __init__(self, chs, c2=None):
        super().__init__()
        self.chs = chs

    def forward(self, xs):
        return torch.cat(xs, 1)


class Fussy(nn.Module):
    """Keeps its channels; refuses an even kernel and remembers a path-like argument."""

    def __init__(self, c, k=3, path=""):
        super().__init__()
        if k % 2 == 0:
            raise ValueError(f"kernel must be odd, got {k}")
        self.conv, self.path = nn.Conv2d(c, c, k, 1, k // 2), path

    def forward(self, x):
        return self.conv(x)


@pytest.fixture(scope="module", autouse=True)
def test_blocks():
    yolo_plugins.register("Fussy", rule="same")(Fussy)
    yolo_plugins.register("ConvLike", rule="conv")(ConvLike)
    yolo_plugins.register("RepeatArg", rule="conv_repeat")(RepeatArg)
    yolo_plugins.register("Keep", rule="same")(Keep)
    yolo_plugins.register("TwoScales", rule="multi_output")(TwoScales)
    yolo_plugins.register("SumProj", rule=sum_rule)(SumProj)
    yield
    for name in ("Fussy", "ConvLike", "RepeatArg", "Keep", "TwoScales", "SumProj"):
        registry.unregister(name)  # reaches the host's names too


def build(cfg: dict | str, cls=tasks.DetectionModel):
    torch.manual_seed(0)
    return cls(cfg, verbose=False)


TINY = """
nc: 2
scales:
  n: [0.5, 0.25, 32]
  s: [1.0, 1.0, 1024]
scale: {scale}
backbone:
  - [-1, 1, TwoScales, [2]]        # 0: list of 2 maps, 16 and 32 channels at strides 2/4
  - [0, 1, Pick, [0]]              # 1: stride 2, 16 ch
  - [0, 1, Pick, [1]]              # 2: stride 4, 32 ch
  - [1, 1, ConvLike, [64, 3, 2]]   # 3: conv rule, width-scaled and capped
  - [-1, 3, RepeatArg, [64]]       # 4: repeats as a constructor argument
  - [-1, 4, Keep, []]              # 5: channel preserving, repeats as nn.Sequential
  - [[2, 5], 1, SumProj, []]       # 6: custom rule, channels = 32 + c(5)
  - [-1, 1, Conv, [64, 3, 2]]      # 7: stock layer after plugin layers: stride 8
head:
  - [[7], 1, Detect, [nc]]
"""


@pytest.mark.parametrize("scale, c3", [("s", 64), ("n", 8)])
def test_channel_rules_in_a_yaml(scale, c3):
    """Every built-in rule plus a custom one, checked against the channels the modules were built with."""
    model = build(yaml.safe_load(TINY.format(scale=scale)))
    layers = model.model
    assert layers[0].channels == [16, 32]
    assert layers[3].conv.in_channels == 16 and layers[3].conv.out_channels == c3  # n: min(64, 32)*0.25 -> 8
    depth_n = 3 if scale == "s" else 2  # depth 0.5 -> round(1.5) = 2
    assert isinstance(layers[4], RepeatArg) and layers[4].n == depth_n
    assert isinstance(layers[5], nn.Sequential) and len(layers[5]) == 2 * depth_n - 2  # 4 (s) or round(2) (n)
    assert all(k.bn.num_features == c3 for k in layers[5])
    assert layers[6].chs == [32, c3]
    assert layers[7].conv.in_channels == 32 + c3
    out = model.eval()(torch.zeros(1, 3, 64, 64))
    assert out[0].shape[1] == 4 + 2  # boxes + nc


def test_pick_and_index_errors_name_the_layer():
    cfg = yaml.safe_load(TINY.format(scale="s"))
    cfg["backbone"][1] = [0, 1, "Pick", [2]]
    with pytest.raises(yolo_plugins.LayerError, match=r"layer 1: Pick: index 2 out of range: layer 0 has 2 outputs"):
        build(cfg)
    cfg["backbone"][1] = [0, 1, "Index", [15, 0]]  # the host's Index with a wrong typed channel count
    with pytest.raises(yolo_plugins.LayerError, match=r"layer 1: Index: typed 15 channels but output 0 .* has 16"):
        build(cfg)
    cfg["backbone"][1] = [0, 1, "Index", [16, 0]]  # the right count builds, like Pick
    assert build(cfg).model[3].conv.in_channels == 16
    cfg["backbone"][3] = [0, 1, "ConvLike", [64, 3, 2]]  # a single-input block fed the list
    with pytest.raises(LayerError, match=r"layer 3: ConvLike: takes one input .*multi-output layer, use Pick"):
        build(cfg)


def test_constructor_errors_of_plugin_blocks_name_the_layer():
    cfg = yaml.safe_load(TINY.format(scale="s"))
    cfg["backbone"][5] = [-1, 1, "Fussy", [4]]
    with pytest.raises(ValueError, match=r"^layer 5: Fussy: kernel must be odd, got 4$"):
        build(cfg)


@pytest.mark.parametrize("path", ["/abs/w.pth", "./w.pth", "../w.pth", "weights/w.pth", "w.pth"])
def test_path_like_string_args_reach_plugin_blocks(path):
    """The host literal_evals string args; paths it cannot parse still arrive as the string written."""
    cfg = yaml.safe_load(TINY.format(scale="s"))
    cfg["backbone"][5] = [-1, 1, "Fussy", [3, path]]
    assert build(cfg).model[5].path == path


def test_unknown_module_names_layer_and_suggestions():
    cfg = yaml.safe_load(TINY.format(scale="s"))
    cfg["backbone"][3] = [1, 1, "Convlike", [64]]
    with pytest.raises(yolo_plugins.UnknownModuleError) as e:
        build(cfg)
    assert str(e.value) == "layer 3: unknown module 'Convlike' — did you mean 'ConvLike'?"
    assert isinstance(e.value, KeyError)  # still what callers of the stock parser catch


def test_per_scale_args_missing_scale_is_a_layer_error():
    cfg = yaml.safe_load(TINY.format(scale="n"))
    cfg["backbone"][3] = [1, 1, "ConvLike", [{"s": 64}, 3, 2]]
    with pytest.raises(LayerError, match=r"layer 3: ConvLike: per-scale argument .* no value for scale 'n'"):
        build(cfg)


def _state(model: nn.Module) -> dict:
    return {k: v.shape for k, v in model.state_dict().items()}


def _flat(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _flat(v)]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _flat(v)]
    return []


def _stock_cfg(path: Path) -> dict:
    cfg = tasks.yaml_model_load(path)
    for row in cfg["backbone"] + cfg["head"]:  # TorchVision layers would download ImageNet weights: build random
        if row[2] == "TorchVision":
            row[3] = [None if a == "DEFAULT" else a for a in row[3]]
    return cfg


def _stock_model(cfg: dict) -> nn.Module:
    head = cfg["head"][-1][2]
    name = Path(cfg["yaml_file"]).stem
    if head == "RTDETRDecoder":
        cls = tasks.RTDETRDetectionModel
    elif name.startswith("yoloe"):
        cls = tasks.YOLOESegModel if "seg" in name else tasks.YOLOEModel
    elif "world" in name:
        cls = tasks.WorldModel
    else:
        cls = {
            "detect": tasks.DetectionModel,
            "segment": tasks.SegmentationModel,
            "pose": tasks.PoseModel,
            "obb": tasks.OBBModel,
            "classify": tasks.ClassificationModel,
        }[tasks.guess_model_task(cfg)]
    return build(cfg, cls).eval()


@pytest.mark.parametrize("path", STOCK_YAMLS, ids=[p.name for p in STOCK_YAMLS])
def test_stock_models_stay_stock(path):
    """Same state-dict keys, shapes and (same seed, eval) outputs with and without the plugin."""
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    yolo_plugins.deactivate()
    try:
        stock = _stock_model(_stock_cfg(path))
        with torch.no_grad():
            y_stock = _flat(stock(x))
    finally:
        yolo_plugins.activate()
    model = _stock_model(_stock_cfg(path))
    with torch.no_grad():
        y = _flat(model(x))
    assert _state(model) == _state(stock)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), stock.state_dict().values()))
    assert len(y) == len(y_stock) > 0
    assert all(torch.equal(a, b) for a, b in zip(y, y_stock))


def test_activate_is_idempotent_and_deactivate_restores_originals():
    from ultralytics import nn as unn
    from ultralytics.engine import model as emodel

    yolo_plugins.activate()
    patched = tasks.parse_model
    yolo_plugins.activate()
    assert tasks.parse_model is patched
    table = hook._state["patches"]
    assert {(p.owner, p.attr) for p in table} >= {
        (tasks, "parse_model"),
        (unn, "parse_model"),
        (emodel, "yaml_model_load"),
    }
    for p in table:  # every row is in place while active
        assert (p.owner.__dict__[p.attr] if isinstance(p.owner, type) else getattr(p.owner, p.attr)) is p.replacement
    yolo_plugins.deactivate()
    try:
        for p in table:
            assert (p.owner.__dict__[p.attr] if isinstance(p.owner, type) else getattr(p.owner, p.attr)) is p.original
        originals = {(p.owner, p.attr): p.original for p in table}
        assert unn.parse_model is tasks.parse_model is originals[(tasks, "parse_model")]
        assert emodel.yaml_model_load is originals[(emodel, "yaml_model_load")]
        assert hook.DISPATCH not in tasks.__dict__ and "Pick" not in tasks.__dict__
        with pytest.raises(KeyError):  # stock behaviour: a bare KeyError for a plugin name
            build(yaml.safe_load(TINY.format(scale="s")))
        yolo_plugins.deactivate()  # a second call is harmless
    finally:
        yolo_plugins.activate()
    assert tasks.__dict__["Pick"] is yolo_plugins.Pick


def test_unsupported_host_is_refused_with_version_and_range(monkeypatch):
    """A parse_model without the expected channel chain: activation refuses and leaves nothing patched."""
    yolo_plugins.deactivate()
    try:
        before = dict(tasks.__dict__)

        def parse_model(d, ch, verbose=True):  # a host whose parser has another shape
            return nn.Sequential(), []

        monkeypatch.setattr(tasks, "parse_model", parse_model)
        with pytest.raises(yolo_plugins.HostVersionError) as e:
            yolo_plugins.activate()
        msg = str(e.value)
        assert f"ultralytics {ultralytics.__version__}" in msg and "supported: ultralytics>=8.4,<8.5" in msg
        assert "YOLO_PLUGINS_AUTOLOAD=0" in msg
        assert not yolo_plugins.is_active() and tasks.parse_model is parse_model
        assert set(tasks.__dict__) == set(before)
    finally:
        monkeypatch.undo()
        yolo_plugins.activate()


def test_dispatch_leaves_stock_layers_alone():
    """The dispatch returns what the host's chain computed, and the host's own fall-through for unknown classes."""
    frame = {"m": nn.Identity, "c2": 7, "args": [1, 2], "n": 3}
    c2, args, n = parser_patch.dispatch(frame)
    assert (c2, n) == (7, 3) and args is frame["args"]
    fall = {"m": nn.Identity, "c2": parser_patch.dispatch.FALL_THROUGH, "args": [1], "n": 1, "ch": [3, 16], "f": -1}
    assert parser_patch.dispatch(fall)[0] == 16
    with pytest.raises(TypeError, match="list indices"):  # a list 'from' fails as in the stock parser
        parser_patch.dispatch({**fall, "f": [0, 1]})


def test_unregister_removes_the_name_from_the_host():
    """After unregister() a rebuild fails with the unknown-module error, not a bare TypeError from the host."""

    class Gone(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()

        def forward(self, x):
            return x

    yolo_plugins.register("TestOnlyGone", rule="same")(Gone)
    cfg = yaml.safe_load(TINY.format(scale="s"))
    cfg["backbone"][5] = [-1, 1, "TestOnlyGone", []]
    assert tasks.__dict__["TestOnlyGone"] is Gone and isinstance(build(cfg).model[5], Gone)
    registry.unregister("TestOnlyGone")
    assert "TestOnlyGone" not in tasks.__dict__ and "TestOnlyGone" not in hook._state["added"]
    with pytest.raises(yolo_plugins.UnknownModuleError, match=r"^layer 5: unknown module 'TestOnlyGone'"):
        build(cfg)


def _refused(monkeypatch) -> str:
    before = dict(tasks.__dict__)
    with pytest.raises(yolo_plugins.HostVersionError) as e:
        yolo_plugins.activate()
    assert not yolo_plugins.is_active() and set(tasks.__dict__) == set(before)  # nothing patched, nothing added
    return str(e.value)


def test_a_host_parser_without_a_local_the_hook_reads_is_refused(monkeypatch):
    yolo_plugins.deactivate()
    try:
        source = inspect.getsource(tasks.parse_model).replace("max_channels", "max_ch")
        namespace: dict = {}
        exec(compile(source, tasks.__file__, "exec"), tasks.__dict__, namespace)  # the host with a renamed local
        monkeypatch.setattr(tasks, "parse_model", namespace["parse_model"])
        monkeypatch.setattr(inspect, "getsource", lambda obj: source)
        msg = _refused(monkeypatch)
        assert "parse_model has no local 'max_channels'" in msg and "supported: ultralytics>=8.4,<8.5" in msg
    finally:
        monkeypatch.undo()
        yolo_plugins.activate()


def test_a_host_safe_loader_without_a_member_the_plugin_uses_is_refused(monkeypatch):
    yolo_plugins.deactivate()
    try:
        monkeypatch.delattr(tasks._SafeLoad, "_build")
        msg = _refused(monkeypatch)
        assert "_SafeLoad has no _build" in msg and "YOLO_PLUGINS_AUTOLOAD=0" in msg
    finally:
        monkeypatch.undo()
        yolo_plugins.activate()
