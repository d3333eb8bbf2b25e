"""The learning benchmark's summary over seeds: mean and min-max per mark, seeds that never reach a threshold, plot."""

from __future__ import annotations

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
