"""The learning benchmark's summary over seeds: mean and min-max per mark, seeds that never reach a threshold, plot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import learning  # noqa: E402


def _run(model: str, seed: int, maps: list[float], minutes_per_epoch: float) -> dict:
    points = [((e + 1) * minutes_per_epoch, m) for e, m in enumerate(maps)]
    return {
        "model": model,
        "seed": seed,
        "points": points,
        "mAP50": maps[-1],
        "mAP50-95": maps[-1] / 2,
        "best mAP50": max(maps),
        "minutes": points[-1][0],
        "epochs": str(len(maps)),
        "load": "1.0/2 -> 1.0/2",
        "curve": " ".join(f"{m:.3f}" for m in maps),
        "cmd": f"yolo train model={model} seed={seed}",
    }


ROWS = [
    _run("rtdetr-effvit", 0, [0.1, 0.35, 0.55, 0.6], 4.0),
    _run("yolov10n", 0, [0.05, 0.2, 0.31, 0.4], 4.0),
    _run("rtdetr-effvit", 1, [0.2, 0.4, 0.5, 0.7], 5.0),
    _run("yolov10n", 1, [0.1, 0.3, 0.45, 0.52], 5.0),
    _run("rtdetr-effvit", 2, [0.0, 0.3, 0.45, 0.49], 4.5),
    _run("yolov10n", 2, [0.1, 0.2, 0.35, 0.45], 4.5),
]


def test_headline_gives_mean_and_range_and_counts_seeds_that_never_get_there():
    lines = learning.headline(ROWS)
    effvit = next(line for line in lines if line.startswith("| rtdetr-effvit |")).split(" | ")
    v10 = next(line for line in lines if line.startswith("| yolov10n |")).split(" | ")
    # mAP50 @5 min: seed 0 finished epoch 1 (4 min) -> 0.1, seed 1 epoch 1 (5 min) -> 0.2, seed 2 epoch 1 (4.5) -> 0.0
    assert effvit[1] == "0.100 (0.000-0.200)"
    # @10 min: 0.35 (epoch 2 at 8), 0.4 (epoch 2 at 10), 0.3 (epoch 2 at 9)
    assert effvit[2] == "0.350 (0.300-0.400)"
    # minutes to 0.3: 8, 10, 9 -> mean 9.0; to 0.5: 12 and 15, seed 2 never (its best is 0.49)
    assert effvit[5] == "9.0 (8.0-10.0)"
    assert effvit[6] == "13.5 (12.0-15.0), 2/3 reached (best 0.700)"
    assert v10[6] == "20.0, 1/3 reached (best 0.520)"
    assert effvit[-1].rstrip(" |") == "0,1,2"


def test_table_names_the_cpu_and_gives_per_epoch_means():
    text = learning.table(ROWS)
    assert text.startswith(f"CPU: {learning.cpu_model()}")
    line = next(x for x in text.splitlines() if x.startswith("- rtdetr-effvit (3 seeds):"))
    assert line.split(": ", 1)[1].split(" ")[:2] == ["0.100", "(0.000-0.200)"]
    assert "| yolov10n | 2 | 0.450 |" in text


def test_plot_draws_a_mean_curve_with_a_band_per_model(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "learning.png"
    assert learning.plot(ROWS, path) == ["rtdetr-effvit", "yolov10n"]
    assert path.stat().st_size > 10_000


def test_seeds_argument():
    models, seeds, *_ = learning.parse(["seeds=3,4", "models=yolov10n"])
    assert (models, seeds) == (["yolov10n"], [3, 4])
    assert learning.parse([])[1] == [0, 1, 2]
    with pytest.raises(SystemExit, match="use seeds="):
        learning.parse(["seed=1"])
    cmd = learning.command("yolov10n", 4, Path("/tmp/p"), {})
    assert cmd[:2] == ["yolo", "train"] and "seed=4" in cmd and "name=yolov10n-seed4" in cmd
    one = learning.command("yolov10n", 4, Path("/tmp/p"), {}, threads=2)  # jobs=1: the main job on every core
    assert one[:4] == ["yolo-plugins", "main-job", "predict=0", "threads=2"] and one[4:] == cmd[2:]


def test_data_minutes_out_and_runs_arguments():
    opts = learning.parse([])
    assert opts.data == "shapes" and opts.models == learning.DEFAULT_MODELS
    assert opts.models == ["rtdetr-effvit", "rtdetr-effvit-deim", "dfine-effvit", "yolov10n", "yolo26n"]
    assert opts.out == learning.ROOT / "docs" / "benchmarks" / "learning" / "shapes-3seeds.md"
    assert opts.runs == learning.ROOT / "runs" / "learning" / "shapes-3seeds" and opts.minutes == (5, 10, 15, 30)
    opts = learning.parse(["data=trees", "seeds=0", "minutes=2,4.5", "fraction=0.2", "models=yolov10-effvit"])
    assert opts.out.name == "trees-1seeds.md" and opts.minutes == (2.0, 4.5) and opts.models == ["yolov10-effvit"]
    assert opts.overrides == {"fraction": "0.2"}  # yolo's own arguments pass through; data= is the benchmark's
    opts = learning.parse(["data=/x/birds.yaml", "out=/tmp/o/smoke.md", "runs=/tmp/r"])
    assert (opts.data, opts.out, opts.runs) == ("/x/birds.yaml", Path("/tmp/o/smoke.md"), Path("/tmp/r"))
    assert learning.parse(["out=/tmp/o/smoke.md"]).runs == learning.ROOT / "runs" / "learning" / "smoke"
    assert learning.data_name("/x/birds.yaml") == "birds"
    with pytest.raises(SystemExit, match="minutes must be numbers"):
        learning.parse(["minutes=5,ten"])
    with pytest.raises(SystemExit, match="unknown model"):
        learning.parse(["models=yolov10n,nope"])


def test_model_specs_add_their_arguments_between_recipe_and_overrides(tmp_path):
    deim = learning.command("rtdetr-effvit-deim", 0, tmp_path, {"data": "shapes.yaml"})
    assert f"model={tmp_path / 'rtdetr-effvit-deim.yaml'}" in deim
    assert {"mosaic=1.0", "mixup=0.5", "close_mosaic=15", "epochs=30"} <= set(deim)  # half of 30 epochs
    assert deim.count("mosaic=1.0") == 1 and "mosaic=0.0" not in deim
    short = learning.command("rtdetr-effvit-deim", 0, tmp_path, {"epochs": "10", "mixup": "0.2"})
    assert {"close_mosaic=5", "mixup=0.2"} <= set(short)  # the command line's overrides win over the model's
    plain = learning.command("rtdetr-effvit", 0, tmp_path, {})
    assert "model=cfg/models/rtdetr-effvit.yaml" in plain and "mosaic=0.0" in plain
    assert not any(a.startswith(("mixup=", "close_mosaic=")) for a in plain)
    assert "model=yolo26n.yaml" in learning.command("yolo26n", 0, tmp_path, {})
    spec = learning.MODELS["rtdetr-effvit-deim"]
    assert spec.describe().startswith(
        "cfg/models/rtdetr-effvit.yaml + criterion: deim; mosaic=1.0 mixup=0.5 close_mosaic=50% of epochs"
    )


def test_deim_halves_split_its_spec_exactly():
    deim, mal, dense = (learning.MODELS[f"rtdetr-effvit-{k}"] for k in ("deim", "mal", "dense"))
    assert mal.yaml == dense.yaml == deim.yaml
    assert (mal.keys, mal.args) == (deim.keys, {})  # MAL alone: the recipe's data
    assert (dense.keys, dense.args) == ({}, deim.args)  # the data schedule alone: the stock loss


def test_variant_yaml_adds_criterion_deim_and_keeps_scale_n(tmp_path):
    from ultralytics.nn.tasks import yaml_model_load

    path = learning.write_variant("rtdetr-effvit-deim", tmp_path)
    assert path == tmp_path / "rtdetr-effvit-deim.yaml"
    assert path.read_text().endswith("\ncriterion: deim\n")
    assert learning.write_variant("rtdetr-effvit", tmp_path) is None  # no keys: trained from its own YAML
    variant, original = yaml_model_load(path), yaml_model_load(learning.ROOT / "cfg/models/rtdetr-effvit.yaml")
    assert variant["criterion"] == "deim" and variant["scale"] == original["scale"] == "n"
    drop = ("criterion", "yaml_file")
    assert {k: v for k, v in variant.items() if k not in drop} == {k: v for k, v in original.items() if k not in drop}

    from ultralytics.nn.tasks import RTDETRDetectionModel

    def size(yaml_path) -> int:
        return sum(p.numel() for p in RTDETRDetectionModel(str(yaml_path), nc=1, verbose=False).parameters())

    assert size(path) == size(learning.ROOT / "cfg/models/rtdetr-effvit.yaml")  # the same model, scale n


def test_head_variant_renames_only_the_last_rows_module(tmp_path, monkeypatch):
    from ultralytics.nn.tasks import yaml_model_load

    path = learning.write_variant("rtdetr-effvit-topk", tmp_path)
    assert learning.command("rtdetr-effvit-topk", 0, tmp_path, {})[2] == f"model={path}"
    variant, original = yaml_model_load(path), yaml_model_load(learning.ROOT / "cfg/models/rtdetr-effvit.yaml")
    assert original["head"][-1][2] == "PeakDecoder" and variant["head"][-1][2] == "RTDETRDecoder"
    variant["head"][-1][2] = "PeakDecoder"
    assert {k: v for k, v in variant.items() if k != "yaml_file"} == {
        k: v for k, v in original.items() if k != "yaml_file"
    }
    monkeypatch.setitem(learning.MODELS, "rowless", learning.Spec("cfg/models/rtdetr-effvit.yaml", head="X"))
    monkeypatch.setattr(learning, "ROOT", tmp_path)
    (tmp_path / "cfg/models").mkdir(parents=True)
    (tmp_path / "cfg/models/rtdetr-effvit.yaml").write_text("nc: 1\nbackbone: []\nhead: []\n")
    with pytest.raises(SystemExit, match="has no layer rows; rowless cannot rename its head to X"):
        learning.write_variant("rowless", tmp_path)


def test_variant_keys_replace_or_remove_the_yamls_own(tmp_path, monkeypatch):
    from ultralytics.nn.tasks import yaml_model_load

    original = yaml_model_load(learning.ROOT / "cfg/models/rtdetr-effvit.yaml")
    assert original["ema"] == [0.99, 100] and original["class_gain"] == 2.0
    dropped = yaml_model_load(learning.write_variant("rtdetr-effvit-no-ema", tmp_path))
    assert "ema" not in dropped
    assert {k: v for k, v in dropped.items() if k != "yaml_file"} == {
        k: v for k, v in original.items() if k not in ("ema", "yaml_file")
    }
    spec = learning.Spec("cfg/models/rtdetr-effvit.yaml", keys={"class_gain": 1.0, "ema": None})
    monkeypatch.setitem(learning.MODELS, "gain1", spec)
    path = learning.write_variant("gain1", tmp_path)
    assert path.read_text().count("\nclass_gain:") == 1  # replaced, not written twice
    variant = yaml_model_load(path)
    assert variant["class_gain"] == 1.0 and "ema" not in variant and variant["scale"] == "n"
    assert spec.describe() == "cfg/models/rtdetr-effvit.yaml + class_gain: 1.0 without ema:"


def test_a_key_written_over_several_lines_stops_the_variant(tmp_path, monkeypatch):
    monkeypatch.setitem(learning.MODELS, "blocky", learning.Spec("cfg/models/m.yaml", keys={"ema": None}))
    monkeypatch.setattr(learning, "ROOT", tmp_path)
    (tmp_path / "cfg/models").mkdir(parents=True)
    (tmp_path / "cfg/models/m.yaml").write_text("nc: 1\nema:\n  - 0.99\n  - 100\nbackbone: []\nhead: []\n")
    with pytest.raises(SystemExit, match=r"cfg/models/m.yaml \(blocky\): its top-level ema: spans several lines"):
        learning.write_variant("blocky", tmp_path)
    assert not (tmp_path / "blocky.yaml").exists()


def test_a_missing_model_yaml_stops_before_training(monkeypatch):
    monkeypatch.setitem(learning.MODELS, "later", learning.Spec("cfg/models/not-written-yet.yaml"))
    with pytest.raises(SystemExit, match=r"later needs .*cfg/models/not-written-yet.yaml\nleave it out with models=y"):
        learning.check_models(["later", "yolov10n"])
    learning.check_models(["rtdetr-effvit", "yolov10n", "yolo26n"])  # stock names are Ultralytics' to resolve


RESULTS = {  # fabricated results.csv columns per run: minutes at the end of each epoch, val mAP50
    ("rtdetr-effvit-deim", 0): ([1.0, 2.0, 3.0, 4.0], [0.2, 0.55, 0.7, 0.6]),
    ("rtdetr-effvit-deim", 1): ([1.0, 2.0, 3.0, 4.0], [0.1, 0.4, 0.5, 0.5]),
    ("yolov10n", 0): ([1.5, 3.0, 4.5], [0.1, 0.3, 0.5]),
    ("yolov10n", 1): ([1.5, 3.0, 4.5], [0.2, 0.5, 0.45]),
}


def _results_csv(path: Path, minutes: list[float], maps: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    head = "epoch,time,train/giou_loss,metrics/precision(B),metrics/mAP50(B),metrics/mAP50-95(B),val/giou_loss"
    rows = [f"{e + 1},{t * 60:.3f},1.0,0.5,{m},{m / 2},1.1" for e, (t, m) in enumerate(zip(minutes, maps))]
    path.write_text("\n".join([head, *rows]) + "\n")


class _FakeTraining:
    """Stands in for the ``subprocess.Popen`` of a training: writes the fabricated results.csv of its run."""

    def __init__(self, cmd):
        args = dict(a.split("=", 1) for a in cmd if "=" in a)
        model, seed = args["name"].rsplit("-seed", 1)
        _results_csv(Path(args["project"]) / args["name"] / "results.csv", *RESULTS[(model, int(seed))])
        self.returncode = 0

    def wait(self, timeout=None):
        return 0


def test_main_writes_header_summary_and_commands_from_results_csv(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    popen = subprocess.Popen  # git (the versions in the header) runs for real

    def fake(cmd, *args, **kwargs):
        return popen(cmd, *args, **kwargs) if cmd[0] == "git" else _FakeTraining(cmd)

    monkeypatch.setattr(learning.subprocess, "Popen", fake)
    out = tmp_path / "docs" / "shapes-2seeds.md"
    argv = ["models=rtdetr-effvit-deim,yolov10n", "seeds=0,1", "jobs=2", "minutes=2,4", f"out={out}"]
    learning.main([*argv, f"runs={tmp_path / 'runs'}", "epochs=4"])
    text = out.read_text()
    assert text.startswith(f"Command: `python benchmarks/learning.py {' '.join(argv)} runs={tmp_path / 'runs'}")
    assert " UTC, finished " in text and f"CPU: {learning.cpu_model()}" in text and "before " in text
    assert (
        "ultralytics " in text and "timm " in text and "yolo-plugins " in text and "Data: shapes (shapes.yaml)" in text
    )
    lines = text.splitlines()
    head = next(x for x in lines if x.startswith("| model | mAP50 @2 min | mAP50 @4 min |"))
    assert head.endswith("| min/epoch | seeds |")
    deim = next(x for x in lines if x.startswith("| rtdetr-effvit-deim | 0.")).split(" | ")
    assert deim[1:3] == ["0.475 (0.400-0.550)", "0.550 (0.500-0.600)"]  # @2 min, @4 min
    # peak: 0.7 and 0.5; end of training: 0.6 and 0.5; minutes to 0.5: 2 and 3 -> 2.5 vs yolov10n's 4.5 and 3 -> 3.75
    summary = next(x for x in lines if x.startswith("| model | peak mAP50 |"))
    assert summary.startswith("| model | peak mAP50 | end-of-training mAP50 | mean mAP50 of the last 5 epochs |")
    # the mean of the last 5 epochs is the mean of all 4 (3 for yolov10n)
    deim = "| rtdetr-effvit-deim | 0.600 (0.500-0.700) | 0.550 (0.500-0.600) | 0.444 (0.375-0.512) | 4 | 0.67x |"
    assert deim in lines
    assert "| yolov10n | 0.500 (0.500-0.500) | 0.475 (0.450-0.500) | 0.342 (0.300-0.383) | 3 | 1.00x |" in lines
    assert any(x.startswith("- rtdetr-effvit-deim: cfg/models/rtdetr-effvit.yaml + criterion: deim") for x in lines)
    cmd = next(x for x in lines if x.startswith("yolo train model=") and "deim-seed1" in x)
    assert {"mosaic=1.0", "mixup=0.5", "close_mosaic=2", "epochs=4"} <= set(cmd.split())
    assert (tmp_path / "runs" / "rtdetr-effvit-deim.yaml").read_text().endswith("criterion: deim\n")
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_summary_counts_seeds_that_never_reach_the_threshold():
    lines = learning.summary(ROWS)
    effvit = next(x for x in lines if x.startswith("| rtdetr-effvit |"))
    # minutes to 0.5: 12 and 15 (seed 2 never) -> 13.5; yolov10n's: 20 (one seed of three) -> 0.675
    # the mean of the last 5 epochs is the mean of all 4: 0.4, 0.45, 0.31 -> 0.387 (0.310-0.450)
    assert effvit == (
        f"| rtdetr-effvit | 0.597 (0.490-0.700) | 0.597 (0.490-0.700) | 0.387 (0.310-0.450) | 4 "
        f"| {13.5 / 20:.2f}x (2/3 reached) |"
    )
    assert next(x for x in lines if x.startswith("| yolov10n |")).endswith("| 1.00x (1/3 reached) |")
    assert learning.summary(ROWS, reference="absent")[-1].endswith("| - |")


def test_summary_means_each_seeds_last_epochs():
    lines = learning.summary(ROWS, last=2)
    assert lines[0].startswith("| model | peak mAP50 | end-of-training mAP50 | mean mAP50 of the last 2 epochs |")
    # last two epochs per seed: (0.55 + 0.6) / 2, (0.5 + 0.7) / 2, (0.45 + 0.49) / 2
    cells = next(x for x in lines if x.startswith("| rtdetr-effvit |")).split(" | ")
    assert cells[3] == f"{(0.575 + 0.6 + 0.47) / 3:.3f} (0.470-0.600)"


def test_tables_only_rebuilds_the_tables_from_runs_already_there_and_trains_nothing(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")

    def no_training(cmd, *args, **kwargs):
        raise AssertionError(f"tables_only started a process: {cmd}")

    monkeypatch.setattr(learning.subprocess, "Popen", no_training)
    for (model, seed), (minutes, maps) in RESULTS.items():
        _results_csv(tmp_path / "runs" / f"{model}-seed{seed}" / "results.csv", minutes, maps)
    out = tmp_path / "rebuilt.md"
    argv = ["tables_only=1", "models=rtdetr-effvit-deim,yolov10n", "seeds=0,1", "minutes=2,4"]
    learning.main([*argv, f"runs={tmp_path / 'runs'}", f"out={out}"])
    lines = out.read_text().splitlines()
    assert lines[0].startswith("Command: `python benchmarks/learning.py tables_only=1 models=rtdetr-effvit-deim")
    assert "from the `results.csv` of 4 runs under `runs/`, trained earlier" in lines[2]
    # the mean of the last 5 epochs is the mean of all 4: 0.5125 and 0.375
    deim = "| rtdetr-effvit-deim | 0.600 (0.500-0.700) | 0.550 (0.500-0.600) | 0.444 (0.375-0.512) | 4 | 0.67x |"
    assert deim in lines
    assert "- yolov10n seed 1: 0.200 0.500 0.450" in lines
    assert out.with_suffix(".png").stat().st_size > 10_000
