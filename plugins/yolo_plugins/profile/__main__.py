"""``python -m yolo_plugins.profile model=<yaml or .pt> imgsz=640 depth=3 [sweep=all] ...``: see :func:`main`."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path

USAGE = """usage: python -m yolo_plugins.profile model=<yaml or .pt> [key=value ...]   (also: yolo-plugins profile ...)

  model=     model YAML (stock, plugin or a path) or a .pt checkpoint              (required)
  imgsz=640  square input size
  depth=3    table depth below the model: 1 sections, 2 roles, 3 layers, 4+ submodules
  sweep=     RT-DETR study: all, or knobs decoder_layers,queries,ccff_depth,drop_s3,hidden_dim
             (values optional: queries:200/100); omit for the table only
  time=True  CPU ms per component (roles, layers, decoder steps) next to GFLOPs, on a fused copy (False: GFLOPs only)
  runs=      timed CPU runs (median; default 5 with time=True or sweep=, else 0; runs=0: no timing at all)
  warmup=2   untimed runs before timing
  weights=   .pt whose weights a YAML model loads; data= dataset YAML: mAP for decoder_layers/queries variants
  format=md  md: Markdown tables on stdout; json: one JSON object on stdout
  compare=False  also print Ultralytics' own get_flops() figure next to the thop total
  save=True  write profile.md, modules.csv, sweep.csv, profile.json, PNG plots
  project=runs/profile name=<model stem> exist_ok=False save_dir=  where to write (like Ultralytics runs/)
  plots=True  threads=  torch CPU threads (default: torch's; 1 gives steadier latency on a shared machine)"""

DEFAULTS = dict(
    model=None,
    imgsz=640,
    depth=3,
    sweep=None,
    time=True,
    runs=None,
    warmup=2,
    weights=None,
    data=None,
    format="md",
    compare=False,
    save=True,
    project=None,
    name=None,
    exist_ok=False,
    save_dir=None,
    plots=True,
    threads=None,
)


def parse_args(argv: list[str]) -> dict:
    """key=value arguments, parsed with Ultralytics' own ``parse_key_value_pair``/``merge_equals_args``."""
    from ultralytics.cfg import merge_equals_args, parse_key_value_pair

    args = dict(DEFAULTS)
    for a in merge_equals_args(list(argv)):
        if "=" not in a:
            raise SystemExit(f"profile: argument {a!r} is not key=value\n\n{USAGE}")
        k, v = parse_key_value_pair(a)
        if k not in DEFAULTS:
            raise SystemExit(f"profile: unknown argument {k!r}; valid: {', '.join(DEFAULTS)}\n\n{USAGE}")
        args[k] = v
    if not args["model"]:
        raise SystemExit(f"profile: model= is required\n\n{USAGE}")
    if args["format"] not in ("md", "json"):
        raise SystemExit(f"profile: format={args['format']!r}; use md or json")
    if isinstance(args["sweep"], (list, tuple)):
        args["sweep"] = ",".join(map(str, args["sweep"]))
    if args["runs"] is None:
        args["runs"] = 5 if args["sweep"] or args["time"] else 0
    return args


def load_model(model: str, weights: str | None = None):
    """A model in eval mode from a YAML (any task; RT-DETR YAMLs build an RTDETRDetectionModel) or a checkpoint."""
    from ultralytics.nn import tasks

    from ..commands.main_job import is_rtdetr_head

    if str(model).endswith(".pt"):
        m, _ = tasks.load_checkpoint(model)
    else:
        d = tasks.yaml_model_load(model)
        head = d.get("head") or [[None, None, ""]]
        if is_rtdetr_head(head[-1][2]):
            cls = tasks.RTDETRDetectionModel
        else:
            task = tasks.guess_model_task(d)
            cls = {
                "segment": tasks.SegmentationModel,
                "pose": tasks.PoseModel,
                "obb": tasks.OBBModel,
                "classify": tasks.ClassificationModel,
            }.get(task, tasks.DetectionModel)
        m = cls(d, ch=d.get("channels", 3), nc=d.get("nc"), verbose=False)
        if weights:
            ckpt, _ = tasks.load_checkpoint(weights)
            m.load(ckpt, verbose=False)
    return m.float().eval()


@contextlib.contextmanager
def _logs_to_stderr():
    """Keep stdout for the JSON object: Ultralytics' log handlers write to stderr meanwhile."""
    from ultralytics.utils import LOGGER

    moved = [h for h in LOGGER.handlers if isinstance(h, logging.StreamHandler) and h.stream is sys.stdout]
    for h in moved:
        h.setStream(sys.stderr)
    try:
        yield
    finally:
        for h in moved:
            h.setStream(sys.stdout)


def save_dir_for(args: dict) -> Path:
    """``save_dir=`` as given, else ``<project>/<name>`` incremented like Ultralytics' runs (name2, name3, ...)."""
    from ultralytics.utils import RUNS_DIR
    from ultralytics.utils.files import increment_path

    if args["save_dir"]:
        return Path(args["save_dir"])
    project = Path(args["project"]) if args["project"] else RUNS_DIR / "profile"
    name = args["name"] or Path(str(args["model"])).stem
    return increment_path(project / name, exist_ok=bool(args["exist_ok"]))


def run(args: dict, command: str = "") -> dict:
    """Profile (and sweep) as ``args`` says; print the result; return the JSON object.

    ``command`` is the command line as typed, written into profile.md.
    """
    from . import report, sweep, table
    from .counting import ultralytics_gflops

    json_out = args["format"] == "json"
    if args["threads"]:
        import torch

        torch.set_num_threads(int(args["threads"]))
    with _logs_to_stderr() if json_out else contextlib.nullcontext():
        model = load_model(args["model"], args["weights"])
        imgsz, depth = int(args["imgsz"]), int(args["depth"])
        data, runs, warmup, timed = args["data"], int(args["runs"]), int(args["warmup"]), bool(args["time"])
        if args["sweep"]:
            results = sweep.run(model, args["sweep"], imgsz, runs, warmup, data, timed=timed)
        else:
            results = [sweep.measure(model, imgsz, runs=runs, warmup=warmup, data=data, timed=timed)]
        obj = report.to_json(results, depth)
        obj["model"] = str(args["model"])
        if args["compare"]:
            obj["ultralytics_gflops"] = ultralytics_gflops(model, imgsz)
        command = command or "python -m yolo_plugins.profile " + " ".join(
            f"{k}={v}" for k, v in args.items() if v != DEFAULTS[k]
        )
        files = []
        if args["save"]:
            title = f"{Path(str(args['model'])).stem} @ {imgsz}"
            files = report.save(results, save_dir_for(args), depth, title, command, bool(args["plots"]))
            obj["files"] = [str(f) for f in files]
    if json_out:
        print(json.dumps(obj))
        return obj
    base = results[0]
    print(table.to_markdown(base.rows, depth))
    line = (
        f"\ntotal: {base.params:,} parameters, {base.gflops:.3f} GFLOPs counted by thop (2 x MACs, as Ultralytics), "
        f"+ {base.gflops_extra:.3f} GFLOPs thop does not see (project rules) = {base.gflops_total:.3f} GFLOPs"
    )
    if args["compare"]:
        line += f"\nUltralytics get_flops(model, {imgsz}): {obj['ultralytics_gflops']:.3f} GFLOPs"
    if base.timing is not None:
        line += "\n" + report.timing_markdown(base.timing)
    print(line)
    if len(results) > 1 or (base.latency_ms is not None and base.timing is None):
        print("\n" + report.sweep_markdown(results))
    if files:
        print(f"\nsaved: {files[0].parent}")
    return obj


def main(argv: list[str] | None = None, prog: str = "python -m yolo_plugins.profile") -> int:
    """Entry point of ``python -m yolo_plugins.profile`` and ``yolo-plugins profile`` (``prog``: name in profile.md)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    from .variants import VariantError

    try:
        run(parse_args(argv), f"{prog} " + " ".join(argv))
    except VariantError as e:
        print(f"profile: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
