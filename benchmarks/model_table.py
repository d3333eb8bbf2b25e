"""Params and GFLOPs @640 of every model YAML in cfg/models at every scale, plus stock references, as Markdown.

    python benchmarks/model_table.py                              # Markdown to stdout
    python benchmarks/model_table.py -o docs/zoo-table.md  # the README's table
    python benchmarks/model_table.py --latency 5 -o docs/zoo-table.md   # + CPU latency of the fused model

GFLOPs are Ultralytics' own counter (``ultralytics.utils.torch_utils.get_flops``, thop) at 640x640, for the model
as built (what training runs and ``model.info()`` prints) and after the engine's ``model.fuse()`` (what inference and
export run: BN folded, RepVGGDW/RepConv re-parameterised, YOLOv10's one-to-many head dropped). ``--latency N``
adds the median CPU latency of the fused model (batch 1, 640x640, N timed runs after one warm-up), timed by the
profiling tool (``yolo_plugins.profile.sweep.latency_ms``).
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass
from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
    """Print (or write) the table; a YAML that fails to build stops it with that YAML's error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, help="write the Markdown here instead of stdout")
    parser.add_argument("--no-stock", action="store_true", help="leave out the stock reference models")
    parser.add_argument("--latency", type=int, default=0, metavar="RUNS", help="time the fused models (RUNS runs)")
    args = parser.parse_args(argv)
    yolo_plugins.activate()
    rows = zoo_rows(runs=args.latency) + ([] if args.no_stock else stock_rows(args.latency))
    flags = f"--latency {args.latency} " if args.latency else ""
    header = (
        f"<!-- generated by `python benchmarks/model_table.py {flags}-o {args.output or '...'}`; do not edit by hand"
        " -->\n\n"
        f"Params and GFLOPs at {IMGSZ}x{IMGSZ} (Ultralytics' counter), as built for training and after `model.fuse()`"
        " (deployment).\n\n"
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
