"""Learning benchmark: time to accuracy on a small data set, one recipe, the default model beside references.

    python benchmarks/learning.py [data=shapes|trees|PATH.yaml] [models=NAME,...] [seeds=0,1,2] [jobs=2]
                                  [limit=MINUTES] [minutes=5,10,15,30] [out=docs/benchmarks/learning/DATA-3seeds.md]
                                  [runs=runs/learning/OUT-STEM] [any yolo train override, e.g. epochs=5 fraction=0.2]
    python benchmarks/learning.py plot_only=1   # redraw the png from the runs already in runs=
    python benchmarks/learning.py tables_only=1 runs=DIR out=FILE.md   # the tables and png from runs already there

    python benchmarks/learning.py data=shapes jobs=2 limit=30   # the full comparison: 5 models x 3 seeds
    python benchmarks/learning.py data=trees jobs=2 limit=30

``data=``: ``shapes`` (default; the project's generated set, ``shapes.yaml``, generated on first use), ``trees``
(real aerial tree crowns that the PyPI package deepforest ships, fetched and tiled by ``benchmarks/trees.py`` into
``datasets/trees`` on first use, then reused) or the path of any Ultralytics data YAML.

``models=`` takes names of ``MODELS`` below (default ``DEFAULT_MODELS``: the default model with and without DEIM's
training, a D-FINE head on the same backbone, ``yolov10n`` and ``yolo26n``). A model is a ``Spec``: its YAML, the
``yolo train`` arguments it adds to the recipe, the top-level YAML keys it adds to its YAML and the module its last
row (the head) takes instead (with keys or a head, written as a variant beside the runs, ``<runs>/<model>.yaml``, and
trained from there). A model whose YAML is missing stops the
benchmark before any training, naming the file.
``seeds=`` trains every model once per seed (Ultralytics' ``seed=``; default three seeds): one seed on one machine
decides nothing (the order of two models reversed on another CPU with the same seed). Each run is trained with the
stock ``yolo train`` command in a subprocess (CPU) with the same recipe (``RECIPE`` below), then the model's own
arguments, then the overrides given on the command line (they apply to every model, over the models' own).

The headline is accuracy per CPU minute: val mAP50 at the ``minutes=`` marks (default 5, 10, 15 and 30 training
minutes; the epoch last finished by then: Ultralytics' ``results.csv`` records the minutes since the start of
training after each epoch, validation included) and the minutes at which val mAP50 first reached 0.3 and 0.5, each as
the mean over the seeds with the min-max range (a seed that never reached a threshold is counted and shown as not
reached; the mean is over the seeds that reached it). Then, per model, the peak val mAP50 (each seed's best epoch),
the end-of-training mAP50 (each seed's last epoch), the mean over each seed's last five epochs and the minutes to 0.5
as a ratio to ``yolov10n``'s (mean over the seeds that reached it), then the per-epoch means. The file starts with
the exact command, the date and time (UTC), the CPU model and core count, the machine's load before and after and
the versions (python, torch, ultralytics, timm, the yolo-plugins git commit). Every run uses one torch thread
(Ultralytics' ``cpu_count - 1`` on 2 cores, data loaded in the training process), so a wall minute is a CPU minute
when ``jobs`` equals the number of cores. Below the headline: per run final and best mAP50, mAP50-95, wall minutes,
epochs, the machine's load average before and after it, the per-epoch curves and the exact command lines; and a plot
of mean val mAP50 against minutes with the min-max band over the seeds (a png beside the table).

``out=`` is the Markdown file (default ``docs/benchmarks/learning/<data>-<n>seeds.md``, the plot beside it); the
runs (weights, logs, variant YAMLs) go to ``runs=`` (or ``project=``; default ``runs/learning/<out's stem>``, not in
git). docs/benchmarks/learning/README.md describes the models and the data sets.

``jobs=2`` trains two runs at a time (runs are ordered seed by seed, so the models of one seed train side by side):
on a 2-core machine Ultralytics trains with ``cpu_count - 1`` = 1 torch thread and the recipe loads data in the
training process (``workers=0``), so two runs share the machine without slowing each other much. ``jobs=1`` (the
default) trains one run at a time on the whole machine, as the main job does: ``yolo-plugins main-job ... threads=N``
with every CPU this process may use (``predict=0``; same recipe, same engine). ``limit=30`` gives every run the same
minutes: a run still training after 30 minutes is stopped; its row then shows the epochs it finished and the
validation of the last one (the learning-rate and augmentation schedules are the recipe's, only cut short: a model
slower per epoch is stopped further from its last, mosaic-free epochs)."""

from __future__ import annotations

import csv
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from speed import cpu_model  # the benchmarks' one CPU-name reader (this folder is on sys.path)

from yolo_plugins.commands.main_job import RECIPE as MAIN_JOB_RECIPE
from yolo_plugins.commands.main_job import cores

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class LastEpochs:
    """A number of epochs given as a fraction of the run's ``epochs`` (at least 1), e.g. for ``close_mosaic``."""

    fraction: float

    def of(self, epochs: int) -> int:
        return max(1, math.ceil(self.fraction * epochs))

    def __str__(self) -> str:
        return f"{self.fraction:.0%} of epochs"


@dataclass(frozen=True)
class Spec:
    """One model of the benchmark: its YAML (a repo path or a stock name), the ``yolo train`` arguments it adds to the
    recipe, the top-level keys it sets in its YAML (None: the YAML's key removed) and the module its last row (the
    head) takes instead of the YAML's (a variant file is then written beside the runs for either)."""

    yaml: str
    args: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, Any] = field(default_factory=dict)
    about: str = ""
    head: str = ""

    @property
    def variant(self) -> bool:
        """Whether the model trains from a variant of its YAML (keys added or the head renamed)."""
        return bool(self.keys or self.head)

    def describe(self) -> str:
        """The spec in one line, e.g. ``cfg/models/a.yaml + criterion: deim; mosaic=1.0 ...``."""
        text = self.yaml + (f" with head {self.head}" if self.head else "")
        text += "".join(f" + {k}: {v}" if v is not None else f" without {k}:" for k, v in self.keys.items())
        if self.args:
            text += "; " + " ".join(f"{k}={v}" for k, v in self.args.items())
        return text + (f" ({self.about})" if self.about else "")


# DEIM's training (Huang et al., CVPR 2025): its criterion, selected by the YAML key ``criterion: deim``, and its dense
# one-to-one data schedule (mosaic and mixup make more objects per image, so the one-to-one matching gets more positive
# samples), expressed with Ultralytics' own arguments: mosaic on every image, mixup on half of them, both off for
# the second half of the epochs (DEIM turns mosaic and mix-up off after about half of its schedule, e.g. epoch 29 of
# 58, and keeps its last epochs free of strong augmentation). The recipe has mosaic 0.
DEIM_ARGS = {"mosaic": 1.0, "mixup": 0.5, "close_mosaic": LastEpochs(0.5)}
MODELS = {
    "rtdetr-effvit": Spec(
        "cfg/models/rtdetr-effvit.yaml",
        about="the project's default model, scale n, PeakDecoder, class_gain 2, ema [0.99, 100]",
    ),
    "rtdetr-effvit-deim": Spec(
        "cfg/models/rtdetr-effvit.yaml", DEIM_ARGS, {"criterion": "deim"}, "the default with DEIM's training"
    ),
    "rtdetr-effvit-o2m": Spec(
        "cfg/models/rtdetr-effvit.yaml", {}, {"o2m": [1.0, 2]}, "the default with one-to-many anchor supervision"
    ),
    "dfine-effvit": Spec("cfg/models/dfine-effvit.yaml", about="the default's backbone and encoder, D-FINE head"),
    "yolov10n": Spec("yolov10n.yaml", about="stock Ultralytics"),
    "yolo26n": Spec("yolo26n.yaml", about="stock Ultralytics"),
    "yolov10-effvit": Spec("cfg/models/yolov10-effvit.yaml"),
    "rtdetr-v10": Spec("cfg/models/rtdetr-v10.yaml"),
    "rtdetr-l": Spec("rtdetr-l.yaml", about="stock Ultralytics; hours at this recipe"),
}
# the o2m settings screened on seed 0 (docs/benchmarks/learning/trees-o2m-screen.md); -o2m2 is -o2m's setting
SCREENED_O2M = {"o2m10": [1.0, 10], "o2m4": [1.0, 4], "o2m2": [1.0, 2], "o2m1": [1.0, 1], "o2m2g2": [2.0, 2]}
MODELS.update(
    {f"rtdetr-effvit-{k}": Spec("cfg/models/rtdetr-effvit.yaml", {}, {"o2m": v}) for k, v in SCREENED_O2M.items()}
)
MODELS["rtdetr-effvit-o2m4-mal"] = Spec("cfg/models/rtdetr-effvit.yaml", {}, {"o2m": [1.0, 4], "criterion": "deim"})
# DEIM's two halves apart: MAL alone (the recipe's data, no mosaic) and the dense one-to-one schedule alone (stock loss)
MODELS["rtdetr-effvit-mal"] = Spec(
    "cfg/models/rtdetr-effvit.yaml", {}, {"criterion": "deim"}, "the default with DEIM's criterion (MAL) only"
)
MODELS["rtdetr-effvit-dense"] = Spec(
    "cfg/models/rtdetr-effvit.yaml", DEIM_ARGS, {}, "the default with DEIM's mosaic / mix-up schedule only"
)
# the default before PeakDecoder: the same model and training, RT-DETR's own top-k query selection at inference
MODELS["rtdetr-effvit-topk"] = Spec(
    "cfg/models/rtdetr-effvit.yaml", about="the default with RT-DETR's top-k query selection", head="RTDETRDecoder"
)
# the default without its weight average setting: Ultralytics' own (docs/benchmarks/learning/trees-ema-screen.md)
MODELS["rtdetr-effvit-no-ema"] = Spec(
    "cfg/models/rtdetr-effvit.yaml", {}, {"ema": None}, "the default with the trainer's own weight average"
)
MODELS["rtdetr-effvit-hybrid"] = Spec(
    "cfg/models/rtdetr-effvit.yaml", {}, {"hybrid": 1.0}, "the default with a one-to-many query group in training"
)
DEFAULT_MODELS = ["rtdetr-effvit", "rtdetr-effvit-deim", "dfine-effvit", "yolov10n", "yolo26n"]
REFERENCE = "yolov10n"  # minutes to 0.5 mAP50 are also given as a ratio to this model's
MINUTES = (5, 10, 15, 30)  # val mAP50 reached by these training minutes
THRESHOLDS = (0.3, 0.5)  # minutes until val mAP50 first reaches these
SEEDS = (0, 1, 2)
DATA = {"shapes": "shapes.yaml"}  # and "trees": built by benchmarks/trees.py on first use
OUT = ROOT / "docs" / "benchmarks" / "learning"

# The learning recipe: the main job's (``yolo_plugins.commands.main_job.RECIPE``: 224 px, batches of 4 with one
# optimizer step each, AdamW 1e-3, one warm-up epoch, no mosaic; docs/main-job.md says why) for 30 epochs; model and
# output folder are set per run below.
RECIPE = {
    **{k: v for k, v in MAIN_JOB_RECIPE.items() if k not in ("model", "project", "name", "exist_ok")},
    "epochs": 30,
}


class Options(NamedTuple):
    """The benchmark's arguments (``parse``)."""

    models: list[str]
    seeds: list[int]
    out: Path
    overrides: dict[str, str]
    jobs: int
    limit: float | None
    plot_only: bool
    data: str = "shapes"
    minutes: tuple[float, ...] = MINUTES
    runs: Path | None = None
    tables_only: bool = False


def data_name(data: str) -> str:
    """``shapes``, ``trees`` or the stem of a data YAML path (used in the default file names)."""
    return data if data in ("shapes", "trees") else Path(data).stem


def parse(argv: list[str]) -> Options:
    """``data=``, ``models=``, ``seeds=``, ``out=``, ``runs=``, ``jobs=``, ``limit=``, ``minutes=``, ``plot_only=``,
    ``tables_only=``
    and yolo overrides (``key=value``)."""
    models, out, overrides, jobs, limit = list(DEFAULT_MODELS), None, {}, 1, None
    plot_only, seeds, data, minutes, runs = False, list(SEEDS), "shapes", MINUTES, None
    tables_only = False
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
        elif key == "data":
            if not value:
                raise SystemExit("data= is shapes, trees or the path of a data YAML")
            data = value
        elif key == "minutes":
            try:
                minutes = tuple(float(v) for v in value.split(",") if v.strip())
            except ValueError:
                raise SystemExit(f"minutes must be numbers separated by commas, got {value!r}") from None
            if not minutes:
                raise SystemExit("minutes= needs at least one mark, e.g. minutes=5,10,15,30")
        elif key == "out":
            out = Path(value)
        elif key in ("runs", "project"):
            runs = Path(value)
        elif key == "jobs":
            jobs = int(value)
        elif key == "limit":
            limit = float(value)
        elif key == "plot_only":
            plot_only = value.lower() not in {"0", "false", "no"}
        elif key == "tables_only":
            tables_only = value.lower() not in {"0", "false", "no"}
        else:
            overrides[key] = value
    if out is None:
        out = OUT / f"{data_name(data)}-{len(seeds)}seeds.md"
    runs = runs if runs is not None else ROOT / "runs" / "learning" / out.stem
    return Options(models, seeds, out, overrides, jobs, limit, plot_only, data, minutes, runs, tables_only)


def data_yaml(data: str) -> str:
    """The data YAML of ``data=``: ``shapes.yaml``, the trees set (built or reused by ``trees.build``) or the path."""
    if data == "trees":
        import trees

        try:
            return str(trees.build(ROOT / "datasets" / "trees"))
        except trees.TreesDataError as e:
            raise SystemExit(str(e)) from None
    if data in DATA:
        return DATA[data]
    path = Path(data)
    return str(path.resolve()) if path.is_file() else data  # a name Ultralytics resolves (e.g. coco8.yaml) as is


def check_models(models: list[str]) -> None:
    """Stop with the missing files if a model's repo YAML does not exist (stock names are Ultralytics' to find)."""
    missing = [(m, MODELS[m].yaml) for m in models if "/" in MODELS[m].yaml and not (ROOT / MODELS[m].yaml).is_file()]
    if missing:
        others = ",".join(m for m in models if m not in dict(missing))
        raise SystemExit(
            "model YAML not found: "
            + "; ".join(f"{m} needs {ROOT / y}" for m, y in missing)
            + (f"\nleave it out with models={others}" if others else "")
        )


def model_file(model: str, project: Path) -> str:
    """The YAML a model trains from: its own, or the variant with its keys or head (``<project>/<model>.yaml``)."""
    spec = MODELS[model]
    return str(project / f"{model}.yaml") if spec.variant else spec.yaml


# a YAML layer row written as Ultralytics writes it: "- [from, repeats, Module, [args]]", capturing up to the module
ROW = re.compile(r"^(\s*-\s*\[\s*(?:-?\d+|\[[^\]]*\])\s*,\s*\d+\s*,\s*)([A-Za-z_][\w.]*)(?=\s*,)", re.MULTILINE)


def write_variant(model: str, project: Path) -> Path | None:
    """Write the variant YAML of a model with keys or a head: its YAML's text with the last row's module renamed, and
    the spec's keys appended in place of the YAML's own (a key set to None is only removed). The file is named after
    the model (e.g. ``rtdetr-effvit-deim.yaml``): not a ``yolo<v><n><letter>`` name, so Ultralytics guesses no scale
    and the YAML's ``default_scale`` (n for the default model) applies, as for the original."""
    spec = MODELS[model]
    if not spec.variant:
        return None
    text = (ROOT / spec.yaml).read_text()
    if spec.head:
        rows = list(ROW.finditer(text))
        if not rows:
            raise SystemExit(f"{spec.yaml} has no layer rows; {model} cannot rename its head to {spec.head}")
        last = rows[-1]
        text = text[: last.start(2)] + spec.head + text[last.end(2) :]
    for key in spec.keys:
        text = without_key(text, key, f"{spec.yaml} ({model})")
    path = Path(model_file(model, project))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        text.rstrip("\n")
        + f"\n\n# benchmarks/learning.py: {model} is {spec.describe()}\n"
        + "".join(f"{k}: {v}\n" for k, v in spec.keys.items() if v is not None)
    )
    return path


def without_key(text: str, key: str, where: str) -> str:
    """A model YAML's text without its top-level ``key:`` line (unchanged without the key). The key's value must be
    on that line (``ema: [0.99, 100] # ...``, as every top-level key of the project's YAMLs is); a block value on the
    lines below stops the run instead of leaving half of it behind."""
    found = re.search(rf"^{re.escape(key)}\s*:(.*)\n?", text, re.MULTILINE)
    if not found:
        return text
    value = found.group(1).split("#", 1)[0].strip()
    below = text[found.end() :].split("\n", 1)[0]
    if not value or below[:1] in (" ", "\t", "-"):
        raise SystemExit(f"{where}: its top-level {key}: spans several lines; write the variant YAML by hand")
    return text[: found.start()] + text[found.end() :]


def train_args(model: str, overrides: dict[str, str]) -> dict[str, Any]:
    """The recipe, then the model's own arguments, then the command line's overrides; ``LastEpochs`` resolved."""
    args = {**RECIPE, **MODELS[model].args, **overrides}
    epochs = int(args["epochs"])
    return {k: v.of(epochs) if isinstance(v, LastEpochs) else v for k, v in args.items()}


def run_name(model: str, seed: int) -> str:
    """The run folder of one model and seed, e.g. ``rtdetr-effvit-seed1``."""
    return f"{model}-seed{seed}"


def command(model: str, seed: int, project: Path, overrides: dict[str, str], threads: int | None = None) -> list[str]:
    """The command line for one model and seed: ``yolo train`` (Ultralytics' own thread count), or with ``threads``
    the main job's ``yolo-plugins main-job`` with that many torch threads."""
    args = {**train_args(model, overrides), "seed": seed}
    head = ["yolo", "train"] if threads is None else ["yolo-plugins", "main-job", "predict=0", f"threads={threads}"]
    return [
        *head,
        f"model={model_file(model, project)}",
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
    if p.returncode != 0 and not stopped:
        return {**row, "error": f"exit {p.returncode}, see {log}"}
    rows = read_results(results) if results.exists() else []
    if not rows and not stopped:
        return {**row, "error": f"no results.csv, see {log}"}
    if not rows:
        return {**row, "error": f"stopped at {limit:g} min before the first epoch ended"}
    planned = int(train_args(model, overrides)["epochs"])
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


def headline(rows: list[dict], minutes: tuple[float, ...] = MINUTES) -> list[str]:
    """The time-to-accuracy table over the seeds: mAP50 at equal minutes and minutes to each threshold, as
    ``mean (min-max)``; a seed that did not get there is counted (``2/3 reached``)."""
    head = [f"mAP50 @{m:g} min" for m in minutes] + [f"min to {t:g}" for t in THRESHOLDS] + ["min/epoch", "seeds"]
    lines = ["| model | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for model, runs in by_model(rows).items():
        cells = []
        for m in minutes:
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


def summary(rows: list[dict], reference: str = REFERENCE, threshold: float = 0.5, last: int = 5) -> list[str]:
    """Per model: peak val mAP50 (each seed's best epoch), end-of-training val mAP50 (each seed's last epoch) and the
    mean over each seed's ``last`` epochs (steadier than either on a small validation set) as ``mean (min-max)`` over
    the seeds, the epochs finished, and the mean minutes to ``threshold`` over the seeds that reached it divided by
    ``reference``'s (``-`` when either never reached it)."""
    models = by_model(rows)

    def mean_minutes(runs: list[dict]) -> tuple[float | None, int]:
        values = [v for r in runs if (v := minutes_to(r["points"], threshold)) is not None]
        return (statistics.mean(values) if values else None), len(values)

    ref, _ = mean_minutes(models.get(reference, []))
    lines = [
        f"| model | peak mAP50 | end-of-training mAP50 | mean mAP50 of the last {last} epochs | epochs "
        f"| min to {threshold:g} / {reference}'s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for model, runs in models.items():
        peak = spread([max(m for _, m in r["points"]) for r in runs])
        end = spread([r["points"][-1][1] for r in runs])
        tail = spread([statistics.mean(m for _, m in r["points"][-last:]) for r in runs])
        epochs = sorted(len(r["points"]) for r in runs)
        span = str(epochs[0]) if epochs[0] == epochs[-1] else f"{epochs[0]}-{epochs[-1]}"
        mine, n = mean_minutes(runs)
        ratio = "-" if mine is None or ref is None else f"{mine / ref:.2f}x"
        if mine is not None and ref is not None and n < len(runs):
            ratio += f" ({n}/{len(runs)} reached)"
        lines.append(f"| {model} | {peak} | {end} | {tail} | {span} | {ratio} |")
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


def versions() -> str:
    """python, torch, ultralytics, timm and the yolo-plugins git commit (``+ uncommitted changes`` if any)."""
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"python {platform.python_version()}"]
    for name in ("torch", "ultralytics", "timm"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} not installed")
    try:
        git = ["git", "-C", str(ROOT)]
        commit = subprocess.run([*git, "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True).stdout
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        commit = commit.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "") or "unknown"
    except OSError:
        commit = "unknown (no git)"
    return ", ".join(parts) + f", yolo-plugins {commit}"


def header(meta: dict[str, str]) -> list[str]:
    """The lines that say how the tables were made: command, time (UTC), CPU, load, versions, data, models."""
    return [
        f"Command: `{meta['command']}`",
        "",
        f"Started {meta['started']}, {meta.get('finished', 'still running')}. CPU: {cpu_model()}, "
        f"{os.cpu_count()} logical CPUs ({cores()} usable); load (1 min average / CPUs) before {meta['load before']}, "
        f"after {meta.get('load after', '-')}.",
        "",
        f"Versions: {meta['versions']}. Data: {meta['data']}.",
        "",
    ]


def table(rows: list[dict], minutes: tuple[float, ...] = MINUTES, meta: dict[str, str] | None = None) -> str:
    """The Markdown tables (over the seeds, then per run), the per-epoch means and the command lines; ``meta``
    (command, times, load, versions, data) heads the file when given, else a line naming the CPU."""
    lines = (
        header(meta)
        if meta
        else [f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; load (1 min average) now {load()}.", ""]
    )
    lines += [
        *headline(rows, minutes),
        "",
        *summary(rows),
        "",
        "Models (YAML + keys added; train arguments over the recipe):",
        "",
        *(f"- {m}: {MODELS[m].describe()}" for m in dict.fromkeys(r["model"] for r in rows) if m in MODELS),
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


def plot(rows: list[dict], path: Path, minutes: tuple[float, ...] = MINUTES, data: str = "shapes") -> list[str]:
    """Mean val mAP50 against minutes with the min-max band over the seeds, per model; the models drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = []
    for model, runs in by_model(rows).items():
        times, means, lows, highs = zip(*epoch_means(runs))
        (line,) = ax.plot(times, means, marker=".", label=f"{model} (mean of {len(runs)} seeds)")
        if len(runs) > 1:
            ax.fill_between(times, lows, highs, color=line.get_color(), alpha=0.2, lw=0)
        drawn.append(model)
    for m in minutes:
        ax.axvline(m, color="grey", lw=0.6, ls=":")
    for t in THRESHOLDS:
        ax.axhline(t, color="grey", lw=0.6, ls="--")
    ax.set(
        xlabel="training minutes (wall, including validation; mean over seeds)",
        ylabel="val mAP50 (band: min-max over seeds)",
        title=f"Learning on {data} — {cpu_model()}",
    )
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def rebuilt(rows: list[dict], minutes: tuple[float, ...], project: Path, argv: list[str]) -> str:
    """The tables over the seeds and the per-epoch means of runs trained earlier (their ``results.csv`` under
    ``project``), headed by the command that rebuilt them; when, where and under what load each run trained is in
    the results file of its own benchmark run."""
    lines = [
        f"Command: `{shlex.join(['python', 'benchmarks/learning.py', *argv])}`",
        "",
        f"Tables rebuilt {utc_now()} from the `results.csv` of {len(rows)} runs under `{project.name}/`, trained "
        "earlier (nothing was trained for this file).",
        "",
        *headline(rows, minutes),
        "",
        *summary(rows),
        "",
        "Models:",
        "",
        *(f"- {m}: {MODELS[m].describe()}" for m in dict.fromkeys(r["model"] for r in rows) if m in MODELS),
        "",
        "Val mAP50 per epoch, per run:",
        "",
        *(f"- {r['model']} seed {r['seed']}: {' '.join(f'{m:.3f}' for _, m in r['points'])}" for r in rows),
    ]
    return "\n".join(lines) + "\n"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def main(argv: list[str]) -> None:
    """Run the benchmark for the chosen models and seeds (``jobs`` runs at a time), write the tables and the plot."""
    opts = parse(argv)
    if not (opts.plot_only or opts.tables_only):
        check_models(opts.models)  # before anything is written
    project = opts.runs.resolve()
    project.mkdir(parents=True, exist_ok=True)
    out, png = opts.out, opts.out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    name = data_name(opts.data)
    if opts.plot_only or opts.tables_only:
        rows = [r for r in finished_runs(project, opts.seeds) if r["model"] in opts.models]
        if opts.tables_only:
            out.write_text(rebuilt(rows, opts.minutes, project, argv))
            print(f"tables of {len(rows)} runs written to {out}")
        drawn = plot(rows, png, opts.minutes, name)
        print(f"plotted {drawn} to {png}")
        return
    meta = {
        "command": shlex.join(["python", "benchmarks/learning.py", *argv]),
        "started": utc_now(),
        "load before": load(),
        "versions": versions(),
    }
    data = data_yaml(opts.data)
    meta["data"] = f"{name} ({data})"
    overrides = {"data": data, **opts.overrides}
    for model in opts.models:
        write_variant(model, project)
    runs = [(model, seed) for seed in opts.seeds for model in opts.models]  # the models of one seed side by side
    done: dict[tuple[str, int], dict] = {}

    def run(key: tuple[str, int]) -> None:
        done[key] = train(*key, project, overrides, opts.limit, cores() if opts.jobs == 1 else None)
        rows = [done[k] for k in runs if k in done]
        out.write_text(table(rows, opts.minutes, meta))  # a stopped benchmark keeps what it measured

    with ThreadPoolExecutor(max_workers=opts.jobs) as pool:
        list(pool.map(run, runs))
    rows = [done[k] for k in runs]
    meta.update({"finished": f"finished {utc_now()}", "load after": load()})
    text = table(rows, opts.minutes, meta)
    out.write_text(text)
    print(text)
    plot(rows, png, opts.minutes, name)
    print(f"written to {out} and {png}")


if __name__ == "__main__":
    main(sys.argv[1:])
