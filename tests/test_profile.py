"""The profile tool: counts agree with Ultralytics, roles come from structure, variants equal hand-built models."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ultralytics.nn.tasks import RTDETRDetectionModel, yaml_model_load
from ultralytics.utils.torch_utils import get_flops

from yolo_plugins.profile import count, table
from yolo_plugins.profile.__main__ import main as profile_main
from yolo_plugins.profile.counting import msdeform_attn_macs
from yolo_plugins.profile.sweep import deployable, measure
from yolo_plugins.profile.timing import DECODER_STEPS, time_components
from yolo_plugins.profile.variants import variants
from yolo_plugins.weights.roles import analyse

ROOT = Path(__file__).resolve().parents[1]
R50 = "rtdetr-resnet50.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")  # two threads on a busy 2-core machine are many times slower


@pytest.fixture(scope="module")
def r50() -> RTDETRDetectionModel:
    torch.manual_seed(0)
    return RTDETRDetectionModel(R50, verbose=False).eval()


def _gflops(model, imgsz):
    return count(model, imgsz).gflops


def test_r50_totals_match_model_and_ultralytics_at_640(r50):
    c = count(r50, 640)
    root = table.build(r50, c)
    assert root.params == c.total_params == sum(p.numel() for p in r50.parameters())
    assert c.gflops == pytest.approx(get_flops(r50, 640), rel=1e-9)
    assert root.gflops == pytest.approx(c.gflops, rel=1e-12)
    # sections and the roles under them add up to the whole
    assert [s.label for s in root.children] == ["backbone", "encoder", "decoder"]
    assert sum(s.params for s in root.children) == root.params
    assert sum(s.thop_macs for s in root.children) == pytest.approx(root.thop_macs, rel=1e-12)
    for s in root.children:
        assert sum(g.thop_macs for g in s.children) == pytest.approx(s.thop_macs, rel=1e-12)
    # the largest single item is the stride-8 FPN block (a RepC3), as the design notes say
    layers = [r for r in root.walk(3) if r.depth == 3]
    assert max(layers, key=lambda r: r.thop_macs).label == "model.16 (RepC3)"


def test_extra_rule_counts_deformable_attention_only(r50):
    c = count(r50, 160)
    head = r50.model[-1]
    attn = head.decoder.layers[0].cross_attn
    query = torch.zeros(1, head.num_queries, head.hidden_dim)
    per_layer = msdeform_attn_macs(attn, query, [(20, 20), (10, 10), (5, 5)])
    q, h, pts, d = 300, 8, 3 * 4, 256 // 8
    assert per_layer >= 5 * q * h * pts * d  # 4 MACs bilinear sampling + 1 weighting per sampled value
    assert sum(c.extra.values()) == pytest.approx(len(head.decoder.layers) * per_layer)
    assert all(".cross_attn" in k for k, v in c.extra.items() if v)  # MHA: thop counts it, no extra there
    assert c.extra_gflops > 0


def test_roles_from_structure():
    for cfg, nb in (("rtdetr-l.yaml", 10), (R50, 5)):
        m = RTDETRDetectionModel(cfg, verbose=False)
        info = analyse(m)
        assert info.n_backbone == nb and info.decoder == len(m.model) - 1
        by_role = {}
        for i, r in info.roles.items():
            by_role.setdefault(r, []).append(type(m.model[i]).__name__)
        assert by_role["AIFI"] == ["AIFI"]
        assert by_role["input projections"] == ["Conv"] * 3
        assert by_role["lateral convs"] == ["Conv"] * 2
        assert by_role["downsample convs"] == ["Conv"] * 2
        assert sorted(by_role["FPN blocks"]) == sorted(["Upsample", "Concat", "RepC3"] * 2)
        assert sorted(by_role["PAN blocks"]) == sorted(["Concat", "RepC3"] * 2)
        assert "other" not in by_role


def _by_name(model, spec):
    return {v.name: v for v in variants(model, spec)}


def test_ccff_depth_and_drop_s3_equal_hand_built(r50):
    vs = _by_name(r50, "ccff_depth,drop_s3")
    assert list(vs) == ["baseline", "ccff_depth=2", "ccff_depth=1", "drop_s3"]

    d = yaml_model_load(R50)
    d["head"] = [[f, 1 if m == "RepC3" else n, m, a] for f, n, m, a in d["head"]]  # fusion blocks repeat once
    hand = RTDETRDetectionModel(d, verbose=False).eval()
    tool = vs["ccff_depth=1"].make()
    assert sum(p.numel() for p in tool.parameters()) == sum(p.numel() for p in hand.parameters())
    assert _gflops(tool, 160) == pytest.approx(_gflops(hand, 160), rel=1e-12)
    assert _gflops(tool, 160) < _gflops(r50, 160)

    d = yaml_model_load(R50)
    d["head"] = [  # P4/P5 only, written by hand
        [-1, 1, "Conv", [256, 1, 1, None, 1, 1, False]],  # 5 input_proj.1 (S5)
        [-1, 1, "AIFI", [1024, 8]],  # 6
        [-1, 1, "Conv", [256, 1, 1]],  # 7 Y5, lateral
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],  # 8
        [3, 1, "Conv", [256, 1, 1, None, 1, 1, False]],  # 9 input_proj.0 (S4)
        [[-2, -1], 1, "Concat", [1]],  # 10
        [-1, 3, "RepC3", [256]],  # 11 X4, fpn block
        [-1, 1, "Conv", [256, 3, 2]],  # 12 downsample
        [[-1, 7], 1, "Concat", [1]],  # 13 cat Y5
        [-1, 3, "RepC3", [256]],  # 14 F5, pan block
        [[11, 14], 1, "RTDETRDecoder", ["nc"]],  # 15
    ]
    hand = RTDETRDetectionModel(d, verbose=False).eval()
    tool = vs["drop_s3"].make()
    assert [type(m).__name__ for m in tool.model] == [type(m).__name__ for m in hand.model]
    assert [m.f for m in tool.model[5:]] == [m.f for m in hand.model[5:]]
    assert sum(p.numel() for p in tool.parameters()) == sum(p.numel() for p in hand.parameters())
    assert tool.model[-1].nl == 2
    assert _gflops(tool, 160) == pytest.approx(_gflops(hand, 160), rel=1e-12)


def test_decoder_layers_and_queries_equal_hand_built_and_keep_weights(r50):
    vs = _by_name(r50, "decoder_layers:2,queries:100")
    two = vs["decoder_layers=2"].make()
    d = yaml_model_load(R50)
    d["head"][-1][3] = ["nc", 256, 300, 4, 8, 2]  # RTDETRDecoder(nc, hd, nq, ndp, nh, ndl=2)
    hand = RTDETRDetectionModel(d, verbose=False).eval()
    assert sum(p.numel() for p in two.parameters()) == sum(p.numel() for p in hand.parameters())
    assert _gflops(two, 160) == pytest.approx(_gflops(hand, 160), rel=1e-12)

    # no retraining: the first two trained layers answer exactly as the full model stopped after layer 2 does
    early = copy.deepcopy(r50)
    early.model[-1].decoder.eval_idx = 1
    im = torch.rand(1, 3, 160, 160)
    with torch.inference_mode():
        assert torch.equal(two(im)[0], early(im)[0])
        q100 = vs["queries=100"].make()
        assert q100(im)[0].shape[1] == 100 and r50(im)[0].shape[1] == 300
    d = yaml_model_load(R50)
    d["head"][-1][3] = ["nc", 256, 100]
    hand = RTDETRDetectionModel(d, verbose=False).eval()
    assert _gflops(q100, 160) == pytest.approx(_gflops(hand, 160), rel=1e-12)
    assert not vs["queries=100"].needs_retraining and vs["decoder_layers=2"].knob == "decoder_layers"


def test_hidden_dim_rebuilds_encoder_width(r50):
    tool = _by_name(r50, "hidden_dim:128")["hidden_dim=128"].make()
    info = analyse(tool)
    for i, role in info.roles.items():
        if role in ("input projections", "lateral convs", "downsample convs"):
            assert tool.model[i].conv.out_channels == 128, (i, role)
    assert tool.model[-1].hidden_dim == 256  # the decoder keeps its width
    assert tool.model[-1].input_proj[0][0].in_channels == 128


def test_bad_knobs_fail_clearly():
    with pytest.raises(ValueError, match="unknown knob 'bogus'"):
        variants(RTDETRDetectionModel("rtdetr-l.yaml", verbose=False), "bogus")
    from ultralytics.nn.tasks import DetectionModel

    with pytest.raises(ValueError, match="no RTDETRDecoder"):
        variants(DetectionModel("yolov8n.yaml", verbose=False), "queries")
    d = yaml_model_load(R50)
    d["head"][-1][0] = [16, 19]  # two levels only
    two_levels = RTDETRDetectionModel(d, verbose=False)
    with pytest.raises(ValueError, match="drop_s3: layer 23: RTDETRDecoder reads 2 levels"):
        variants(two_levels, "drop_s3")


def test_json_output_and_files(tmp_path, capsys):
    save = tmp_path / "run"
    argv = ["model=rtdetr-resnet50.yaml", "imgsz=160", "depth=2", "sweep=queries:100", "runs=1", "warmup=0"]
    assert profile_main([*argv, "format=json", f"save_dir={save}"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [v["variant"] for v in out["variants"]] == ["baseline", "queries=100"]
    for v in out["variants"]:
        assert {"variant", "params", "gflops", "gflops_extra", "latency_ms", "d_gflops_pct"} <= set(v)
        assert v["latency_ms"] > 0
    timing = out["timing"]  # time=True is the default: the baseline is timed per component
    assert timing["runs"] == 1 and timing["end_to_end_ms"] > 0 and timing["sum_ms"] > 0
    base, q = out["variants"]
    assert q["params"] == base["params"] and q["gflops"] < base["gflops"]
    assert q["d_gflops_pct"] == pytest.approx(100 * (q["gflops_total"] / base["gflops_total"] - 1), abs=0.06)
    mods = out["modules"]
    assert mods[0]["module"] == "model" and mods[0]["params"] == base["params"]
    assert {"module", "params", "gflops"} <= set(mods[0])
    assert {m["module"] for m in mods if m["depth"] == 1} == {"backbone", "encoder", "decoder"}
    assert all(m["cpu_ms"] > 0 and 0 < m["cpu_share"] <= 1 for m in mods if m["depth"] <= 1)
    assert mods[0]["cpu_ms"] == pytest.approx(timing["sum_ms"], abs=1e-3)
    names = {
        "profile.md",
        "modules.csv",
        "sweep.csv",
        "profile.json",
        "gflops_by_component.png",
        "latency_vs_gflops.png",
    }
    assert names <= {p.name for p in save.iterdir()}
    assert (save / "gflops_by_component.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| queries=100 |" in (save / "profile.md").read_text()
    assert "| CPU ms | time share |" in (save / "profile.md").read_text()
    assert "cpu_ms" in (save / "modules.csv").read_text().splitlines()[0]
    assert (save / "sweep.csv").read_text().splitlines()[0].startswith("variant,params,gflops")


@pytest.mark.parametrize(
    "cfg", ["rtdetr-v10.yaml", "rtdetr-v10-psa.yaml", "rtdetr-effvit-v10.yaml", "rtdetr-effvit.yaml"]
)
def test_plugin_yamls_get_roles_and_every_variant(cfg):
    path = ROOT / "cfg" / "models" / cfg
    if not path.is_file():
        pytest.skip(f"{cfg} is not in this checkout")
    from yolo_plugins.profile.__main__ import load_model

    model = load_model(str(path))
    info = analyse(model)
    assert set(info.roles.values()) == {
        "input projections",
        "AIFI",
        "lateral convs",
        "FPN blocks",
        "downsample convs",
        "PAN blocks",
    }
    vs = variants(model, "all")
    assert {v.knob for v in vs[1:]} == {"decoder_layers", "queries", "ccff_depth", "drop_s3", "hidden_dim"}
    for v in vs:
        if v.knob == "drop_s3":
            assert v.make().model[-1].nl == 2
        elif v.knob == "hidden_dim":
            m = v.make()
            proj = [i for i, r in analyse(m).roles.items() if r == "input projections"]
            assert {m.model[i].conv.out_channels for i in proj} == {v.value}
        elif v.knob == "ccff_depth":
            m = v.make()
            blocks = [
                i for i, r in analyse(m).roles.items() if r in ("FPN blocks", "PAN blocks") and hasattr(m.model[i], "m")
            ]
            assert blocks and {len(m.model[i].m) for i in blocks} == {v.value}


def test_sweep_validates_only_variants_that_need_no_retraining(tmp_path):
    from yolo_plugins.data.shapes import generate
    from yolo_plugins.profile import sweep

    root = generate(tmp_path / "shapes", n_train=1, n_val=2, n_test=0, imgsz=128)
    data = tmp_path / "shapes.yaml"
    names = {i: f"c{i}" for i in range(6)}
    data.write_text(json.dumps({"path": str(root), "train": "images/train", "val": "images/val", "names": names}))
    d = yaml_model_load(str(ROOT / "cfg" / "models" / "rtdetr-v10.yaml"))  # a small plugin RT-DETR (scale n)
    d["nc"] = 6
    model = RTDETRDetectionModel(d, nc=6, verbose=False).eval()
    results = sweep.run(model, "queries:100,drop_s3", imgsz=128, runs=0, data=str(data), progress=False)
    by = {r.variant: r for r in results}
    assert set(by) == {"baseline", "queries=100", "drop_s3"}
    for name in ("baseline", "queries=100"):
        assert set(by[name].metrics) == {"map50_95", "map50"}
        assert 0.0 <= by[name].metrics["map50_95"] <= by[name].metrics["map50"] <= 1.0
    assert by["drop_s3"].metrics == {} and by["drop_s3"].needs_retraining
    assert all(r.latency_ms is None for r in results)


def _cli(cmd: list[str]) -> dict:
    env = {**os.environ, "YOLO_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = ["model=rtdetr-l.yaml", "imgsz=160", "depth=1", "format=json", "save=False", "threads=1", "time=False"]
    p = subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout)


def test_cli_module_and_console_script():
    a = _cli([sys.executable, "-m", "yolo_plugins.profile"])
    assert a["variants"][0]["variant"] == "baseline" and a["variants"][0]["params"] == 32970476
    assert a["timing"] is None and a["variants"][0]["latency_ms"] is None  # time=False: counts only, no runs
    assert all(m["cpu_ms"] is None for m in a["modules"])
    exe = shutil.which("yolo-plugins")
    assert exe, "console script yolo-plugins is not installed (pip install -e .)"
    b = _cli([exe, "profile"])
    assert b["modules"] == a["modules"]
    p = subprocess.run([exe, "profile", "model=rtdetr-l.yaml", "sweep=bogus"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and "unknown knob 'bogus'" in p.stderr


def test_console_script_list_and_usage(capsys):
    from yolo_plugins.commands.cli import main

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "class", "source", "rule", "fuse"]
    assert any(line.split()[:3] == ["Pick", "yolo_plugins.blocks.pick.Pick", "yolo-plugins"] for line in lines[1:])
    assert main(["bogus"]) == 2 and "unknown command 'bogus'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="unknown argument 'imgsize'"):
        profile_main(["model=rtdetr-l.yaml", "imgsize=320"])


def _assert_nothing_left(model):
    """No forward (pre-)hook on any module, no wrapper on any RTDETRDecoder: the class's own methods answer."""
    from ultralytics.nn.modules.head import RTDETRDecoder

    for name, m in model.named_modules():
        assert not m._forward_hooks and not m._forward_pre_hooks, name
        if isinstance(m, RTDETRDecoder):
            assert not set(DECODER_STEPS) & set(vars(m)), name
            for step in DECODER_STEPS:
                assert getattr(type(m), step) is getattr(RTDETRDecoder, step)
    assert not torch.nn.modules.module._global_forward_hooks and not torch.nn.modules.module._global_forward_pre_hooks


def test_time_per_component_on_fused_rtdetr(r50):
    from ultralytics.nn.modules.head import RTDETRDecoder

    originals = {s: RTDETRDecoder.__dict__[s] for s in DECODER_STEPS}
    fused = deployable(r50)
    assert fused.is_fused()
    fused.model[-1].dynamic = True  # anchors are then generated on every call, so that step runs in timed runs too
    im = torch.rand(1, 3, 128, 128)
    with torch.inference_mode():
        before = fused(im)[0]
    t = time_components(fused, 128, runs=2, warmup=1, threads=1)
    _assert_nothing_left(fused)
    _assert_nothing_left(r50)
    assert {s: RTDETRDecoder.__dict__[s] for s in DECODER_STEPS} == originals
    with torch.inference_mode():
        assert torch.equal(fused(im)[0], before)  # the model answers as before

    assert len(t.end_to_end_ms) == len(t.hooked_ms) == 2 and all(v > 0 for v in t.end_to_end_ms)
    assert t.sum_ms <= t.hooked_median_ms  # the components are part of each hooked forward pass
    assert 0.3 < t.sum_ms / t.end_to_end_median_ms < 3  # hooks cost something, but not a factor
    root = table.build(r50, count(r50, 128), timing=t)
    rows = {r.label: r for r in root.walk(3)}
    assert root.ms == pytest.approx(t.sum_ms)
    assert sum(s.ms for s in root.children) == pytest.approx(root.ms)  # 2 runs: the median is the mean, additive
    for role in (
        "encoder: input projections",
        "encoder: AIFI",
        "encoder: lateral convs",
        "encoder: FPN blocks",
        "encoder: downsample convs",
        "encoder: PAN blocks",
        "decoder: input projections",
        "decoder: query selection",
        "decoder: decoder layers",
        "decoder: score/box heads",
    ):
        assert rows[role].ms > 0, role
        assert sum(c.ms for c in rows[role].children) == pytest.approx(rows[role].ms), role
    assert rows["decoder: embeddings (training only)"].ms is None  # not run at inference
    assert rows["model.23 anchors (_generate_anchors, cached per input size)"].ms > 0
    assert rows["model.23 top-k, gathers (rest of _get_decoder_input)"].ms > 0
    assert rows["model.23.dec_bbox_head (ModuleList)"].ms > 0
    assert rows["model.23.decoder (DeformableTransformerDecoder)"].ms > 0
    md = table.to_markdown(root, 2).splitlines()
    assert md[0].endswith("| CPU ms | time share |") and md[2].endswith(" | 100.0% |")
    assert table.to_markdown(table.build(r50, count(r50, 128)), 2).splitlines()[0].endswith("| GFLOPs share |")


def test_timing_leaves_nothing_patched_when_the_forward_raises(r50):
    fused = deployable(r50)
    dec = fused.model[-1]
    plain = dec.decoder.forward

    def boom(*args, **kwargs):
        if dec._forward_hooks:  # only in a hooked pass: the wrappers and hooks are in place now
            raise RuntimeError("boom")
        return plain(*args, **kwargs)

    dec.decoder.forward = boom
    n = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"):
        time_components(fused, 96, runs=1, warmup=0, threads=n + 1)
    assert torch.get_num_threads() == n
    del dec.decoder.forward
    _assert_nothing_left(fused)


def test_time_per_component_yolo():
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", verbose=False).eval()
    r = measure(model, 64, runs=2, warmup=1, timed=True)
    _assert_nothing_left(model)
    assert [s.label for s in r.rows.children] == ["backbone", "neck", "head"]
    assert all(s.ms > 0 for s in r.rows.children)
    assert r.rows.children[-1].children[0].label == "model.22 (Detect)"
    assert r.latency_ms == pytest.approx(r.timing.end_to_end_median_ms)
    assert 0.3 < r.timing.sum_ms / r.latency_ms < 3
    assert measure(model, 64, runs=0, timed=True).timing is None  # runs=0: no timing at all
