"""Learning benchmark: time to accuracy on the embedded shapes set, one recipe, the default model beside references.

    python benchmarks/learning.py [models=NAME,...] [seeds=0,1,2] [jobs=2] [limit=MINUTES]
                                  [out=runs/learning/learning.md] [any yolo train override, e.g. epochs=5]
    python benchmarks/learning.py plot_only=1   # redraw learning.png from the runs already in runs/learning

``models=`` takes names of ``MODELS`` below (default: every model in it except ``rtdetr-l``, which needs hours).
``seeds=`` trains every model once per seed (Ultralytics' ``seed=``; default three seeds): one seed on one machine
decides nothing (the order of two models reversed on another CPU with the same seed). Each run is trained with the
stock ``yolo train`` command in a subprocess (CPU, no network needed: the data set is generated on first use) with
the same recipe (``RECIPE`` below; overrides on the command line apply to every model).

The headline is accuracy per CPU minute: val mAP50 at 5, 10, 15 and 30 training minutes (the epoch last finished by
then; Ultralytics' ``results.csv`` records the minutes since the start of training after each epoch, validation
included) and the minutes at which val mAP50 first reached 0.3 and 0.5, each as the mean over the seeds with the
min-max range (a seed that never reached a threshold is counted and shown as not reached; the mean is over the seeds
that reached it), then the per-epoch means. The table names the CPU model and the load. Every run uses one torch
thread (Ultralytics' ``cpu_count - 1`` on 2 cores, data loaded in the training process), so a wall minute is a CPU
minute when ``jobs`` equals the number of cores. Below the headline: per run final and best mAP50, mAP50-95, wall
minutes, epochs, the machine's load average before and after it, the per-epoch curves and the exact command lines;
and a plot of mean val mAP50 against minutes with the min-max band over the seeds (``learning.png`` beside the
table).

``jobs=2`` trains two runs at a time (runs are ordered seed by seed, so the models of one seed train side by side):
on a 2-core machine Ultralytics trains with ``cpu_count - 1`` = 1 torch thread and the recipe loads data in the
training process (``workers=0``), so two runs share the machine without slowing each other much. ``jobs=1`` (the
default) trains one run at a time on the whole machine, as the main job does: ``yolo-plugins main-job ... threads=N``
with every CPU this process may use (``predict=0``; same recipe, same engine). ``limit=60`` stops
a run that is still training after 60 minutes; its row then shows the epochs it finished and the validation of the
last one (the learning-rate schedule is the recipe's, only cut short)."""

from __future__ import annotations

import csv
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from speed import cpu_model  # the benchmarks' one CPU-name reader (this folder is on sys.path)

from yolo_plugins.commands.main_job import RECIPE as MAIN_JOB_RECIPE
from yolo_plugins.commands.main_job import cores

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
SEEDS = (0, 1, 2)

# The learning recipe: the main job's (``yolo_plugins.commands.main_job.RECIPE``: 224 px, batches of 4 with one
# optimizer step each, AdamW 1e-3, one warm-up epoch, no mosaic; docs/main-job.md says why) for 30 epochs; model and
# output folder are set per run below.
RECIPE = {
    **{k: v for k, v in MAIN_JOB_RECIPE.items() if k not in ("model", "project", "name", "exist_ok")},
    "epochs": 30,
}


def parse(argv: list[str]) -> tuple[list[str], list[int], Path, dict[str, str], int, float | None, bool]:
    """``models=``, ``seeds=``, ``out=``, ``jobs=``, ``limit=``, ``plot_only=`` and yolo overrides (``key=value``)."""
    models, out, overrides, jobs, limit = list(DEFAULT_MODELS), ROOT / "runs" / "learning" / "learning.md", {}, 1, None
    plot_only, seeds = False, list(SEEDS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise SystemExit(f"arguments are key=value, got {arg!r}\n{__doc__}")
        if key == "models":
            models = value.split(",")
            unknown = [m for m in models if m not in MODELS]
            if unknown:
                raise SystemExit(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
        elif key == "seeds":
            try:
                seeds = [int(v) for v in value.split(",") if v.strip()]
            except ValueError:
                raise SystemExit(f"seeds must be whole numbers separated by commas, got {value!r}") from None
            if not seeds:
                raise SystemExit("seeds= needs at least one seed, e.g. seeds=0,1,2")
        elif key == "seed":
            raise SystemExit("use seeds=... (one or more seeds, e.g. seeds=0 or seeds=0,1,2)")
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
    return models, seeds, out, overrides, jobs, limit, plot_only


def run_name(model: str, seed: int) -> str:
    """The run folder of one model and seed, e.g. ``rtdetr-effvit-seed1``."""
    return f"{model}-seed{seed}"


def command(model: str, seed: int, project: Path, overrides: dict[str, str], threads: int | None = None) -> list[str]:
    """The command line for one model and seed: ``yolo train`` (Ultralytics' own thread count), or with ``threads``
    the main job's ``yolo-plugins main-job`` with that many torch threads."""
    args = {**RECIPE, **overrides, "seed": seed}
    head = ["yolo", "train"] if threads is None else ["yolo-plugins", "main-job", "predict=0", f"threads={threads}"]
    return [
        *head,
        f"model={MODELS[model]}",
        *(f"{k}={v}" for k, v in args.items()),
        f"project={project}",
        f"name={run_name(model, seed)}",
        "exist_ok=True",
    ]


def load() -> str:
    """1-minute load average and the number of CPUs, e.g. '3.1/2'."""
    return f"{os.getloadavg()[0]:.1f}/{os.cpu_count()}"


def read_results(path: Path) -> list[dict[str, str]]:
    """The rows of an Ultralytics ``results.csv`` (one per epoch), keys and values stripped of padding."""
    with open(path) as f:
        return [{k.strip(): v.strip() for k, v in r.items()} for r in csv.DictReader(f)]


def train(
    model: str,
    seed: int,
    project: Path,
    overrides: dict[str, str],
    limit: float | None = None,
    threads: int | None = None,
) -> dict:
    """Train one model with one seed (stopped after ``limit`` minutes if given); return its row of the table."""
    cmd = command(model, seed, project, overrides, threads)
    name = run_name(model, seed)
    print("$", shlex.join(cmd), flush=True)
    before, t = load(), time.perf_counter()
    log = project / f"{name}.log"
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
    row = {"model": model, "seed": seed, "minutes": minutes, "load": f"{before} -> {load()}", "cmd": shlex.join(cmd)}
    results = project / name / "results.csv"
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


def spread(values: list[float], digits: int = 3) -> str:
    """``mean (min-max)`` of ``values``; just the value for one."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def by_model(rows: list[dict]) -> dict[str, list[dict]]:
    """The finished runs (those with a curve) of each model, in the order the models first appear."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        if "points" in r:
            out.setdefault(r["model"], []).append(r)
    return out


def headline(rows: list[dict]) -> list[str]:
    """The time-to-accuracy table over the seeds: mAP50 at equal minutes and minutes to each threshold, as
    ``mean (min-max)``; a seed that did not get there is counted (``2/3 reached``)."""
    head = [f"mAP50 @{m} min" for m in MINUTES] + [f"min to {t:g}" for t in THRESHOLDS] + ["min/epoch", "seeds"]
    lines = ["| model | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for model, runs in by_model(rows).items():
        cells = []
        for m in MINUTES:
            values = [v for r in runs if (v := at_minutes(r["points"], m)) is not None]
            ended = [r for r in runs if r["points"][-1][0] < m]
            note = f" ({len(ended)}/{len(runs)} ended before)" if ended else ""
            cells.append(spread(values) + note if values else "-")
        for t in THRESHOLDS:
            values = [v for r in runs if (v := minutes_to(r["points"], t)) is not None]
            if len(values) == len(runs):
                cells.append(spread(values, 1))
            else:
                best = max(m for r in runs for _, m in r["points"])
                reached = f"{spread(values, 1)}, " if values else ""
                cells.append(f"{reached}{len(values)}/{len(runs)} reached (best {best:.3f})")
        cells.append(spread([r["points"][-1][0] / len(r["points"]) for r in runs], 2))
        cells.append(",".join(str(r["seed"]) for r in runs))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def epoch_means(runs: list[dict]) -> list[tuple[float, float, float, float]]:
    """Per epoch reached by every run: (mean minutes, mean mAP50, min mAP50, max mAP50)."""
    n = min(len(r["points"]) for r in runs)
    out = []
    for e in range(n):
        minutes = [r["points"][e][0] for r in runs]
        maps = [r["points"][e][1] for r in runs]
        out.append((statistics.mean(minutes), statistics.mean(maps), min(maps), max(maps)))
    return out


def table(rows: list[dict]) -> str:
    """The Markdown tables (over the seeds, then per run), the per-epoch means and the command lines."""
    lines = [
        f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; load (1 min average) now {load()}.",
        "",
        *headline(rows),
        "",
        "Val mAP50 per epoch, mean over the seeds (min-max):",
        "",
    ]
    for model, runs in by_model(rows).items():
        cells = [f"{m:.3f}" + (f" ({lo:.3f}-{hi:.3f})" if len(runs) > 1 else "") for _, m, lo, hi in epoch_means(runs)]
        lines.append(f"- {model} ({len(runs)} seeds): {' '.join(cells)}")
    lines += [
        "",
        "| model | seed | val mAP50 | val mAP50-95 | best mAP50 | minutes | epochs | load (1 min avg / CPUs) |",
        "|---|---:|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['model']} | {r['seed']} | failed: {r['error']} | | | {r['minutes']:.1f} | | {r['load']} |"
            )
        else:
            lines.append(
                f"| {r['model']} | {r['seed']} | {r['mAP50']:.3f} | {r['mAP50-95']:.3f} | {r['best mAP50']:.3f} | "
                f"{r['minutes']:.1f} | {r['epochs']} | {r['load']} |"
            )
    lines += ["", "Val mAP50 per epoch, per run:", ""]
    lines += [f"- {r['model']} seed {r['seed']}: {r['curve']}" for r in rows if "curve" in r]
    lines += ["", "Commands:", "", "```bash", *(r["cmd"] for r in rows), "```", ""]
    return "\n".join(lines)


def finished_runs(project: Path, seeds: list[int] | None = None) -> list[dict]:
    """Rows (model, seed, points) of every run under ``project`` with a ``results.csv`` (for the plot)."""
    rows = []
    for model in MODELS:
        for folder in sorted(project.glob(f"{model}-seed*")):
            seed = folder.name.rsplit("-seed", 1)[1]
            results = folder / "results.csv"
            if seed.isdigit() and (seeds is None or int(seed) in seeds) and results.exists():
                points = curve(read_results(results))
                if points:
                    rows.append({"model": model, "seed": int(seed), "points": points})
    return rows


def plot(rows: list[dict], path: Path) -> list[str]:
    """Mean val mAP50 against minutes with the min-max band over the seeds, per model; the models drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = []
    for model, runs in by_model(rows).items():
        minutes, means, lows, highs = zip(*epoch_means(runs))
        (line,) = ax.plot(minutes, means, marker=".", label=f"{model} (mean of {len(runs)} seeds)")
        if len(runs) > 1:
            ax.fill_between(minutes, lows, highs, color=line.get_color(), alpha=0.2, lw=0)
        drawn.append(model)
    for m in MINUTES:
        ax.axvline(m, color="grey", lw=0.6, ls=":")
    for t in THRESHOLDS:
        ax.axhline(t, color="grey", lw=0.6, ls="--")
    ax.set(
        xlabel="training minutes (wall, including validation; mean over seeds)",
        ylabel="val mAP50 (band: min-max over seeds)",
        title=f"Learning on shapes — {cpu_model()}",
    )
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def main(argv: list[str]) -> None:
    """Run the benchmark for the chosen models and seeds (``jobs`` runs at a time), write the tables and the plot."""
    models, seeds, out, overrides, jobs, limit, plot_only = parse(argv)
    project = out.parent.resolve()
    project.mkdir(parents=True, exist_ok=True)
    if plot_only:
        drawn = plot([r for r in finished_runs(project, seeds) if r["model"] in models], out.with_suffix(".png"))
        print(f"plotted {drawn} to {out.with_suffix('.png')}")
        return
    runs = [(model, seed) for seed in seeds for model in models]  # the models of one seed side by side
    done: dict[tuple[str, int], dict] = {}

    def run(key: tuple[str, int]) -> None:
        done[key] = train(*key, project, overrides, limit, cores() if jobs == 1 else None)
        out.write_text(table([done[k] for k in runs if k in done]))  # a stopped benchmark keeps what it measured

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(run, runs))
    rows = [done[k] for k in runs]
    text = table(rows)
    out.write_text(text)
    print(text)
    plot(rows, out.with_suffix(".png"))
    print(f"written to {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main(sys.argv[1:])
