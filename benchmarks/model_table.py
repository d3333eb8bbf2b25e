"""Params and GFLOPs @640 of every model YAML in cfg/models at every scale, plus stock references, as Markdown.

    python benchmarks/model_table.py                              # Markdown to stdout
    python benchmarks/model_table.py -o docs/benchmarks/zoo-table.md  # the table benchmarks/docs.py reads
    python benchmarks/model_table.py --latency 5 -o /tmp/zoo.md   # + CPU latency of the fused model

GFLOPs are Ultralytics' own counter (``ultralytics.utils.torch_utils.get_flops``, thop) at 640x640, for the model
as built (what training runs and ``model.info()`` prints) and after the engine's ``model.fuse()`` (what inference and
export run: BN folded, RepVGGDW/RepConv re-parameterised, YOLOv10's one-to-many head dropped). ``--latency N``
adds the median CPU latency of the fused model (batch 1, 640x640, N timed runs after one warm-up), timed by the
profiling tool (``yolo_plugins.profile.sweep.latency_ms``).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from speed import cpu_model  # the benchmarks' one CPU-name reader (this folder is on sys.path)

import yolo_plugins

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "cfg" / "models"
STOCK = ["rtdetr-l.yaml", "rtdetr-resnet50.yaml", "yolov10n.yaml", "yolov10s.yaml"]
IMGSZ = 640


@dataclass
class Row:
    """One model at one scale."""

    model: str
    scale: str
    params: int
    gflops: float
    params_fused: int
    gflops_fused: float
    source: str  # "yolo-plugins" or "stock"
    latency_ms: float | None = None  # fused, batch 1, CPU median (only with --latency)


def model_class(d: dict):
    """The Ultralytics model class for a YAML dict (RT-DETR decoder, classifier or detector)."""
    from ultralytics.nn.tasks import ClassificationModel, DetectionModel, RTDETRDetectionModel

    from yolo_plugins.commands.main_job import is_rtdetr_head

    head = str((d.get("head") or d.get("backbone"))[-1][2])
    if is_rtdetr_head(head):
        return RTDETRDetectionModel
    return ClassificationModel if head == "Classify" else DetectionModel


def measure(path: str | Path, scale: str | None = None, runs: int = 0) -> Row:
    """Build ``path`` at ``scale`` (None: the YAML's own) and count params and GFLOPs, as built and fused.

    With ``runs > 0`` also time the fused model on the CPU.
    """
    from ultralytics.nn.tasks import yaml_model_load
    from ultralytics.utils.torch_utils import get_flops, get_num_params

    d = copy.deepcopy(yaml_model_load(path))
    if scale is not None:
        d["scale"] = scale
    elif not d.get("scale") and d.get("scales"):
        d["scale"] = next(iter(d["scales"]))  # the host's own choice, without its warning
    model = model_class(d)(d, verbose=False).eval()
    params, gflops = get_num_params(model), get_flops(model, IMGSZ)
    model.fuse(verbose=False)
    latency = None
    if runs > 0:
        from yolo_plugins.profile.sweep import latency_ms

        latency = latency_ms(model, IMGSZ, runs=runs, warmup=1)
    stem = Path(str(path)).stem
    return Row(
        stem,
        d.get("scale") or "-",
        params,
        gflops,
        get_num_params(model),
        get_flops(model, IMGSZ),
        "stock" if not (CFG / Path(str(path)).name).is_file() else "yolo-plugins",
        latency,
    )


def zoo_yamls() -> list[Path]:
    """Every model YAML of the project."""
    return sorted(CFG.glob("*.yaml"))


def zoo_rows(paths: list[Path] | None = None, runs: int = 0) -> list[Row]:
    """Every project YAML at every scale of its ``scales``."""
    from ultralytics.nn.tasks import yaml_model_load

    rows = []
    for path in paths if paths is not None else zoo_yamls():
        for scale in yaml_model_load(path).get("scales") or [None]:
            rows.append(measure(path, scale, runs))
    return rows


def stock_rows(runs: int = 0) -> list[Row]:
    """The stock Ultralytics references."""
    return [measure(name, runs=runs) for name in STOCK]


def markdown(rows: list[Row]) -> str:
    """The table as Markdown."""
    timed = any(r.latency_ms is not None for r in rows)
    lines = [
        f"| model | scale | params (M) | GFLOPs @{IMGSZ} | fused params (M) | fused GFLOPs @{IMGSZ} |"
        + (" CPU ms (fused) |" if timed else ""),
        "|---|---|---:|---:|---:|---:|" + ("---:|" if timed else ""),
    ]
    for r in rows:
        name = f"`{r.model}.yaml`" + (" (stock)" if r.source == "stock" else "")
        lines.append(
            f"| {name} | {r.scale} | {r.params / 1e6:.2f} | {r.gflops:.1f} | {r.params_fused / 1e6:.2f} "
            f"| {r.gflops_fused:.1f} |" + (f" {r.latency_ms:.0f} |" if timed else "")
        )
    return "\n".join(lines) + "\n"


def load() -> str:
    """The load-average triple, or "unknown"."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def stack_versions() -> str:
    """Versions of Python and of the packages the counts depend on."""
    from importlib.metadata import PackageNotFoundError, version

    out = [f"python {platform.python_version()}"]
    for name in ("torch", "ultralytics", "timm", "ultralytics-thop", "yolo-plugins"):
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            out.append(f"{name} not installed")
    return ", ".join(out)


def main(argv: list[str] | None = None) -> int:
    """Print (or write) the table; a YAML that fails to build stops it with that YAML's error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, help="write the Markdown here instead of stdout")
    parser.add_argument("--no-stock", action="store_true", help="leave out the stock reference models")
    parser.add_argument("--latency", type=int, default=0, metavar="RUNS", help="time the fused models (RUNS runs)")
    args = parser.parse_args(argv)
    load_start = load()
    yolo_plugins.activate()
    rows = zoo_rows(runs=args.latency) + ([] if args.no_stock else stock_rows(args.latency))
    flags = f"--latency {args.latency} " if args.latency else ""
    command = f"python benchmarks/model_table.py {flags}-o {args.output or '...'}"
    header = (
        f"<!-- generated by `{command}`; do not edit by hand -->\n\n"
        "# Zoo: params and GFLOPs\n\n"
        f"- command: `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n"
        f"- machine: {cpu_model()}, nproc {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else 1}"
        f"; load average (1, 5, 15 min) at start -> end: {load_start} -> {load()}"
        + ("" if args.latency else " (nothing timed: the counts do not depend on the load)")
        + "\n"
        f"- versions: {stack_versions()}\n"
        f"- params and GFLOPs at {IMGSZ}x{IMGSZ} (Ultralytics' counter, thop), as built for training and after "
        "`model.fuse()` (deployment)"
        + (f"; CPU ms: median of {args.latency} runs of the fused model, batch 1" if args.latency else "")
        + "\n\n"
    )
    text = header + markdown(rows)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
