"""Learning benchmark: time to accuracy on the embedded shapes set, one recipe, the default model beside references.

    python benchmarks/learning.py [models=NAME,...] [jobs=2] [limit=MINUTES] [out=runs/learning/learning.md]
                                  [any yolo train override, e.g. epochs=5]
    python benchmarks/learning.py plot_only=1   # redraw learning.png from the runs already in runs/learning

``models=`` takes names of ``MODELS`` below (default: every model in it except ``rtdetr-l``, which needs hours).
Each model is trained with the stock ``yolo train`` command in a subprocess (CPU, no network needed: the data set is
generated on first use) with the same recipe (``RECIPE`` below; overrides on the command line apply to every model).

The headline is accuracy per CPU minute: val mAP50 at 5, 10, 15 and 30 training minutes (the epoch last finished by
then; Ultralytics' ``results.csv`` records the minutes since the start of training after each epoch, validation
included) and the minutes at which val mAP50 first reached 0.3 and 0.5. Every run uses one torch thread (Ultralytics'
``cpu_count - 1`` on 2 cores, data loaded in the training process), so a wall minute is a CPU minute when ``jobs``
equals the number of cores. Below the headline: final and best mAP50, mAP50-95, wall minutes, epochs, the machine's
load average before and after each run, the per-epoch curves and the exact command lines; and a plot of val mAP50
against minutes (``learning.png`` beside the table).

``jobs=2`` trains two models at a time: on a 2-core machine Ultralytics trains with ``cpu_count - 1`` = 1 torch thread
and the recipe loads data in the training process (``workers=0``), so two runs share the machine without slowing each
other much. ``limit=60`` stops a run that is still training after 60 minutes; its row then shows the epochs it
finished and the validation of the last one (the learning-rate schedule is the recipe's, only cut short).
"""

from __future__ import annotations

import csv
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from yolo_plugins.main_job import RECIPE as MAIN_JOB_RECIPE

ROOT = Path(__file__).resolve().parents[1]

MODELS = {
    "rtdetr-effvit": "cfg/models/rtdetr-effvit.yaml",  # the project's default model (scale n)
    "yolov10-effvit": "cfg/models/yolov10-effvit.yaml",
    "yolov10n": "yolov10n.yaml",  # stock Ultralytics
    "rtdetr-l": "rtdetr-l.yaml",  # stock Ultralytics; hours at this recipe, so only when asked for
}
DEFAULT_MODELS = [m for m in MODELS if m != "rtdetr-l"]
MINUTES = (5, 10, 15, 30)  # val mAP50 reached by these training minutes
THRESHOLDS = (0.3, 0.5)  # minutes until val mAP50 first reaches these

# The learning recipe: the main job's (``yolo_plugins.main_job.RECIPE``: 224 px, batches of 4 with one optimizer
# step each, AdamW 1e-3, one warm-up epoch, no mosaic; docs/main-job.md says why) for 30 epochs; model and output
# folder are set per run below.
RECIPE = {
    **{k: v for k, v in MAIN_JOB_RECIPE.items() if k not in ("model", "project", "name", "exist_ok")},
    "epochs": 30,
}


def parse(argv: list[str]) -> tuple[list[str], Path, dict[str, str], int, float | None, bool]:
    """``models=``, ``out=``, ``jobs=``, ``limit=``, ``plot_only=`` and yolo overrides from ``key=value`` arguments."""
    models, out, overrides, jobs, limit = list(DEFAULT_MODELS), ROOT / "runs" / "learning" / "learning.md", {}, 1, None
    plot_only = False
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise SystemExit(f"arguments are key=value, got {arg!r}\n{__doc__}")
        if key == "models":
            models = value.split(",")
            unknown = [m for m in models if m not in MODELS]
            if unknown:
                raise SystemExit(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
        elif key == "out":
            out = Path(value)
        elif key == "jobs":
            jobs = int(value)
        elif key == "limit":
            limit = float(value)
        elif key == "plot_only":
            plot_only = value.lower() not in {"0", "false", "no"}
        else:
            overrides[key] = value
    return models, out, overrides, jobs, limit, plot_only


def command(model: str, project: Path, overrides: dict[str, str]) -> list[str]:
    """The ``yolo train`` command line for one model."""
    args = {**RECIPE, **overrides}
    return [
        "yolo",
        "train",
        f"model={MODELS[model]}",
        *(f"{k}={v}" for k, v in args.items()),
        f"project={project}",
        f"name={model}",
        "exist_ok=True",
    ]


def load() -> str:
    """1-minute load average and the number of CPUs, e.g. '3.1/2'."""
    return f"{os.getloadavg()[0]:.1f}/{os.cpu_count()}"


def read_results(path: Path) -> list[dict[str, str]]:
    """The rows of an Ultralytics ``results.csv`` (one per epoch), keys and values stripped of padding."""
    with open(path) as f:
        return [{k.strip(): v.strip() for k, v in r.items()} for r in csv.DictReader(f)]


def train(model: str, project: Path, overrides: dict[str, str], limit: float | None = None) -> dict:
    """Train one model (stopped after ``limit`` minutes if given); return its row of the table."""
    cmd = command(model, project, overrides)
    print("$", shlex.join(cmd), flush=True)
    before, t = load(), time.perf_counter()
    log = project / f"{model}.log"
    stopped = False
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        try:
            p.wait(timeout=None if limit is None else limit * 60)
        except subprocess.TimeoutExpired:
            stopped = True
            p.terminate()
            p.wait()
    minutes = (time.perf_counter() - t) / 60
    row = {"model": model, "minutes": minutes, "load": f"{before} -> {load()}", "cmd": shlex.join(cmd)}
    results = project / model / "results.csv"
    if (p.returncode != 0 and not stopped) or not results.exists():
        return {**row, "error": f"exit {p.returncode}, see {log}"}
    rows = read_results(results)
    if not rows:
        return {**row, "error": f"stopped at {limit:g} min before the first epoch ended"}
    planned = int({**RECIPE, **overrides}["epochs"])
    return {
        **row,
        "epochs": f"{len(rows)} of {planned}, stopped at {limit:g} min" if stopped else str(len(rows)),
        "mAP50": float(rows[-1]["metrics/mAP50(B)"]),
        "mAP50-95": float(rows[-1]["metrics/mAP50-95(B)"]),
        "best mAP50": max(float(r["metrics/mAP50(B)"]) for r in rows),
        "curve": " ".join(f"{float(r['metrics/mAP50(B)']):.3f}" for r in rows),
        "points": curve(rows),
    }


def curve(rows: list[dict[str, str]]) -> list[tuple[float, float]]:
    """(training minutes at the end of the epoch, val mAP50) per epoch of a ``results.csv``."""
    return [(float(r["time"]) / 60, float(r["metrics/mAP50(B)"])) for r in rows]


def at_minutes(points: list[tuple[float, float]], minutes: float) -> float | None:
    """Val mAP50 of the last epoch finished within ``minutes`` (None if none had)."""
    done = [m for t, m in points if t <= minutes]
    return done[-1] if done else None


def minutes_to(points: list[tuple[float, float]], threshold: float) -> float | None:
    """Training minutes at the end of the first epoch whose val mAP50 reached ``threshold`` (None if none did)."""
    return next((t for t, m in points if m >= threshold), None)


def headline(rows: list[dict]) -> list[str]:
    """The time-to-accuracy table: mAP50 at equal minutes and minutes to each threshold."""
    head = [f"mAP50 @{m} min" for m in MINUTES] + [f"min to {t:g}" for t in THRESHOLDS] + ["min/epoch"]
    lines = ["| model | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for r in rows:
        if "points" not in r:
            continue
        pts, end = r["points"], r["points"][-1][0]
        cells = []
        for m in MINUTES:
            v = at_minutes(pts, m)
            cells.append("-" if v is None else f"{v:.3f}" + (f" (ended at {end:.1f})" if end < m else ""))
        for t in THRESHOLDS:
            v = minutes_to(pts, t)
            cells.append(f"{v:.1f}" if v is not None else f"not reached (best {max(m for _, m in pts):.3f})")
        cells.append(f"{end / len(pts):.2f}")
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return lines


def table(rows: list[dict]) -> str:
    """The Markdown table and the command lines."""
    lines = [
        *headline(rows),
        "",
        "| model | val mAP50 | val mAP50-95 | best mAP50 | minutes | epochs | load (1 min avg / CPUs) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {r['error']} | | | {r['minutes']:.1f} | | {r['load']} |")
        else:
            lines.append(
                f"| {r['model']} | {r['mAP50']:.3f} | {r['mAP50-95']:.3f} | {r['best mAP50']:.3f} | "
                f"{r['minutes']:.1f} | {r['epochs']} | {r['load']} |"
            )
    lines += ["", "Val mAP50 per epoch:", ""]
    lines += [f"- {r['model']}: {r['curve']}" for r in rows if "curve" in r]
    lines += ["", "Commands:", "", "```bash", *(r["cmd"] for r in rows), "```", ""]
    return "\n".join(lines)


def plot(project: Path, path: Path) -> list[str]:
    """Val mAP50 against wall minutes for every model with a ``results.csv`` under ``project``; the models drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = []
    for model in MODELS:
        results = project / model / "results.csv"
        rows = read_results(results) if results.exists() else []
        if rows:
            minutes, maps = zip(*curve(rows))
            ax.plot(minutes, maps, marker=".", label=model)
            drawn.append(model)
    for m in MINUTES:
        ax.axvline(m, color="grey", lw=0.6, ls=":")
    for t in THRESHOLDS:
        ax.axhline(t, color="grey", lw=0.6, ls="--")
    ax.set(xlabel="training minutes (wall, including validation)", ylabel="val mAP50", title="Learning on shapes")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def main(argv: list[str]) -> None:
    """Run the benchmark for the chosen models (``jobs`` at a time), write the table and the plot."""
    models, out, overrides, jobs, limit, plot_only = parse(argv)
    project = out.parent.resolve()
    project.mkdir(parents=True, exist_ok=True)
    if plot_only:
        print(f"plotted {plot(project, out.with_suffix('.png'))} to {out.with_suffix('.png')}")
        return
    done: dict[str, dict] = {}

    def run(model: str) -> None:
        done[model] = train(model, project, overrides, limit)
        out.write_text(table([done[m] for m in models if m in done]))  # a stopped benchmark keeps what it measured

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(run, models))
    text = table([done[m] for m in models])
    out.write_text(text)
    print(text)
    plot(project, out.with_suffix(".png"))
    print(f"written to {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main(sys.argv[1:])
