"""INT8 on the CPU: accuracy and latency of trained models in float32 and INT8, through Ultralytics' own exporter,
validator and the runtimes' CPU back ends.

    python benchmarks/int8.py                                      # the learning benchmark's seed-0 models
    python benchmarks/int8.py models=a.pt,b.pt data=shapes.yaml val_imgsz=224 imgsz=640,320 runs=30 threads=2

``models=``: trained checkpoints (default: ``best.pt`` of ``rtdetr-effvit-seed0`` and ``yolov10n-seed0`` in
``runs/learning``, i.e. ``python benchmarks/learning.py``'s 30-epoch recipe); each is named by its run folder, and
ratios are to the model whose name starts with ``baseline=yolov10n``. ``a.pt@host`` adds the same checkpoint fused
without the plugin's deploy forms (as in ``speed.py``), for the forms' gain in one run.

1. Accuracy (one subprocess per model): the stock validator (``model.val(data=..., imgsz=val_imgsz)``) on the
   PyTorch checkpoint, then on each export of ``formats=openvino,onnx`` in float32 and in INT8
   (``model.export(format=..., quantize=8, data=..., split=...)``: NNCF post-training quantization for OpenVINO,
   ONNX Runtime static quantization for ONNX; calibrated on the ``split=train`` images, not the val images scored).
   The OpenVINO back end of Ultralytics compiles with the CPU's default precision (bf16 on CPUs with AVX512-BF16 or
   AMX): the report names it.
2. Latency: every model exported again at each ``imgsz`` in float32 and INT8, then timed by ``speed.py``'s worker (one
   runtime, precision and size per fresh subprocess, warm-up, interleaved rounds, medians; OpenVINO with the
   ``ov_precision=f32`` hint, so that only the quantized operations run in INT8). Ratios compare models in the same
   runtime, precision and size. These INT8 exports calibrate on ``lat_fraction=0.1`` of the split: the values they
   compute do not change how long they take.

``accuracy=False`` or ``latency=False`` skip a part; ``name=int8`` names the files written.

Writes ``NAME.md`` and ``NAME.csv`` (``name=int8``) to ``out=docs/benchmarks/int8``.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from speed import (
    RUNTIMES,
    call,
    cpu_model,
    fmt_load,
    forms,
    nproc,
    split,
    split_host,
    subprocess_env,
    typed_args,
    versions,
)

ROOT = Path(__file__).resolve().parents[1]
LEARNING = ROOT / "runs" / "learning"
DEFAULTS: dict[str, Any] = {
    "models": f"{LEARNING / 'rtdetr-effvit-seed0/weights/best.pt'},{LEARNING / 'yolov10n-seed0/weights/best.pt'}",
    "data": "shapes.yaml",
    "split": "train",
    "val_imgsz": 224,
    "imgsz": "640,320",
    "formats": "openvino,onnx",
    "runs": 30,
    "warmup": 5,
    "threads": 2,
    "gap_ms": 50.0,
    "ov_precision": "f32",
    "baseline": "yolov10n",
    "accuracy": True,  # False: no accuracy table (the latency exports need no trained weights to be timed)
    "latency": True,  # False: no latency tables
    "lat_fraction": 0.1,  # share of the calibration split the latency exports calibrate on (timing only)
    "out": "docs/benchmarks/int8",  # the docs' measurements live under docs/benchmarks/ (see benchmarks/docs.py)
    "name": "int8",  # writes NAME.md and NAME.csv
}
RUNTIME_OF = {"pytorch": "pytorch", "onnx": "onnxruntime", "openvino": "openvino"}
PRECISIONS = {32: "float32", 8: "INT8"}


def package_versions() -> str:
    """The Python stack the run used, for the report's header (as ``speed.py`` writes it)."""
    v = versions()
    v.pop("openvino_default_precision", None)
    return ", ".join(f"{k} {val}" for k, val in v.items())


def label(weights: str) -> str:
    """A checkpoint's display name: its run folder (``runs/x/NAME/weights/best.pt``) or its file stem."""
    p = Path(weights)
    return p.parent.parent.name if p.parent.name == "weights" else p.stem


def export(model, fmt: str, imgsz: int, quantize: int, spec: dict) -> Path:
    """One export through Ultralytics' exporter; the file or folder the runtimes load."""
    kw: dict[str, Any] = {"simplify": True} if fmt == "onnx" else {}
    if quantize == 8:
        kw.update(quantize=8, data=spec["data"], split=spec["split"], fraction=spec.get("fraction", 1.0))
    f = Path(model.export(format=fmt, imgsz=imgsz, device="cpu", verbose=False, **kw))
    return next(f.glob("*.xml")) if f.is_dir() else f


def copy_to(weights: str, folder: Path, name: str) -> Path:
    """The checkpoint copied to ``folder/name.pt`` (exports are written beside it; the name picks RTDETR or YOLO)."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(weights, folder / f"{name}.pt"))


def accuracy(spec: dict) -> dict:
    """Worker: val mAP50 / mAP50-95 of the checkpoint and of each float32 and INT8 export at ``val_imgsz``."""
    from yolo_plugins.commands.main_job import model_class

    pt = copy_to(split_host(spec["weights"])[0], Path(spec["folder"]), spec["name"])
    cls, s, out = model_class(str(pt)), spec["val_imgsz"], {}
    targets = [("pytorch", 32, pt)] + [(f, q, None) for f in spec["formats"] for q in (32, 8)]
    for fmt, q, path in targets:
        key = f"{fmt}-{q}"
        try:
            t = time.perf_counter()
            with forms(spec["weights"]):
                path = path or export(cls(str(pt)), fmt, s, q, spec)
            seconds = time.perf_counter() - t
            m = cls(str(path.parent if fmt == "openvino" else path))
            with forms(spec["weights"]):
                r = m.val(data=spec["data"], imgsz=s, batch=1, device="cpu", plots=False, verbose=False)
            out[key] = {"mAP50": float(r.box.map50), "mAP50-95": float(r.box.map), "export_s": seconds}
        except Exception as e:
            out[key] = {"error": " ".join(f"{type(e).__name__}: {e}".split())[:200]}
    return out


def exports(spec: dict) -> dict:
    """Worker: float32 and INT8 exports of one checkpoint at every size: ``{"fmt-q": {size: file}}`` or errors.

    ``weights`` ending in ``@host`` (see ``speed.py``): exported and timed without the plugin's deploy forms.
    """
    from yolo_plugins.commands.main_job import model_class

    weights, host = split_host(spec["weights"])
    files: dict[str, dict[str, str]] = {}
    for s in spec["imgsz"]:
        pt = copy_to(weights, Path(spec["folder"]) / str(s), spec["name"])
        for fmt in spec["formats"]:
            for q in (32, 8):
                try:  # a folder per export: the INT8 ONNX export deletes the float32 file it quantized
                    own = copy_to(weights, Path(spec["folder"]) / str(s) / f"{fmt}-{q}", spec["name"])
                    with forms(spec["weights"]):
                        f = export(model_class(str(own))(str(own)), fmt, s, q, spec)
                    files.setdefault(f"{fmt}-{q}", {})[str(s)] = str(f)
                except Exception as e:
                    files.setdefault(f"{fmt}-{q}", {})[str(s)] = "error: " + " ".join(str(e).split())[:200]
        files.setdefault("pytorch-32", {})[str(s)] = str(pt) + ("@host" if host else "")
    return files


def worker(kind: str, spec_file: str, out_file: str) -> int:
    """Entry point of the subprocesses (``int8.py --worker accuracy|exports SPEC OUT``)."""
    import yolo_plugins

    yolo_plugins.activate()
    spec = json.loads(Path(spec_file).read_text())
    Path(out_file).write_text(json.dumps({"accuracy": accuracy, "exports": exports}[kind](spec)))
    return 0


def run_worker(kind: str, spec: dict, tmp: Path, env: dict[str, str]) -> dict:
    """This script's own worker in a fresh subprocess (output shown, progress included)."""
    import subprocess

    n = len(list(tmp.glob("int8-spec-*.json")))
    spec_file, out_file = tmp / f"int8-spec-{n}.json", tmp / f"int8-out-{n}.json"
    spec_file.write_text(json.dumps(spec))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, str(spec_file), str(out_file)]
    p = subprocess.run(cmd, env=env, cwd=tmp)
    return json.loads(out_file.read_text()) if p.returncode == 0 and out_file.is_file() else {"crash": p.returncode}


def main(argv: list[str]) -> int:
    """Measure, then write the report."""
    if argv[:1] == ["--worker"]:
        return worker(*argv[1:4])
    args = typed_args(argv, DEFAULTS, "int8.py")
    weights = {}
    for w in split(args["models"]):
        base, host = split_host(w)
        weights[label(base) + ("-host-forms" if host else "")] = str(Path(base).resolve()) + ("@host" if host else "")
    missing = [w for w in weights.values() if not Path(split_host(w)[0]).is_file()]
    if missing:
        raise SystemExit(f"int8.py: no checkpoint {missing}; train them with `python benchmarks/learning.py` first")
    sizes, formats = [int(s) for s in split(args["imgsz"])], split(args["formats"])
    env = subprocess_env(args["threads"])
    env.pop("OMP_NUM_THREADS", None)  # exports and validation run as a user runs them
    base = {k: args[k] for k in ("data", "split", "val_imgsz")} | {"formats": formats, "imgsz": sizes}
    tmp = Path(tempfile.mkdtemp(prefix="yolo-plugins-int8-"))
    acc, files, phases, times, errors = {}, {}, [], {}, {}
    try:
        for name, w in weights.items():
            spec = {**base, "weights": w, "name": name, "folder": str(tmp / "acc" / name)}
            acc[name] = {}
            if args["accuracy"]:
                print(f"int8.py: {name}: accuracy at {args['val_imgsz']} px, float32 and INT8", flush=True)
                acc[name] = run_worker("accuracy", spec, tmp, env)
            if args["latency"]:
                print(f"int8.py: {name}: exports at {sizes}", flush=True)
                spec |= {"folder": str(tmp / "lat" / name), "fraction": args["lat_fraction"]}
                files[name] = run_worker("exports", spec, tmp, env)
        timing_env = subprocess_env(args["threads"])
        for s in sizes if args["latency"] else []:
            for target in ["pytorch-32"] + [f"{f}-{q}" for f in formats for q in (32, 8)]:
                fmt, q = target.split("-")
                todo = {}
                for name in weights:
                    f = files[name].get(target, {}).get(str(s), "error: no export")
                    if f.startswith("error"):
                        errors[(name, target, s)] = f
                    else:
                        todo[name] = f
                load = os.getloadavg()
                spec = {"runtime": RUNTIME_OF[fmt], "imgsz": s, "models": todo}
                spec |= {k: args[k] for k in ("threads", "runs", "warmup", "gap_ms", "ov_precision")}
                r = call("time", spec, tmp, timing_env)
                phases.append((target, s, load, os.getloadavg()))
                for name, t in (r.get("times") or {}).items():
                    times[(name, target, s)] = t
                for name, why in (dict.fromkeys(todo, r["crash"]) if "crash" in r else r["errors"]).items():
                    errors[(name, target, s)] = why
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = Path(args["out"])
    out.mkdir(parents=True, exist_ok=True)
    text = report(args, argv, weights, formats, sizes, acc, times, errors, phases)
    md, table = out / f"{args['name']}.md", out / f"{args['name']}.csv"
    md.write_text(text)
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "target", "imgsz", "median_ms", "mAP50", "mAP50-95", "error"])
        for name in weights:
            for target in ["pytorch-32"] + [f"{f}-{q}" for f in formats for q in (32, 8)]:
                a = acc[name].get(target, {}) if isinstance(acc[name], dict) else {}
                for s in sizes:
                    t = times.get((name, target, s))
                    med = round(statistics.median(t), 3) if t else None
                    w.writerow([name, target, s, med, a.get("mAP50"), a.get("mAP50-95"), errors.get((name, target, s))])
    print("\n" + text)
    print(f"written: {md}, {table}")
    return 0


def report(args, argv, weights, formats, sizes, acc, times, errors, phases) -> str:
    """The Markdown: how it ran, accuracy per format and precision, latency ratios per runtime, precision and size."""
    cmd = "python benchmarks/int8.py " + " ".join(shlex.quote(a) for a in argv)
    import openvino as ov

    default = str(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")).replace("<Type: '", "").rstrip("'>")
    baseline = next((n for n in weights if n.startswith(args["baseline"])), None)
    targets = ["pytorch-32"] + [f"{f}-{q}" for f in formats for q in (32, 8)]
    title = {t: f"{RUNTIMES[RUNTIME_OF[t.split('-')[0]]]} {PRECISIONS[int(t.split('-')[1])]}" for t in targets}
    lines = [
        f"<!-- generated by `{cmd.strip()}`; do not edit by hand -->",
        "",
        "# INT8 on the CPU: accuracy and latency, float32 vs INT8",
        "",
        f"- command: `{cmd.strip()}` ({time.strftime('%Y-%m-%d %H:%M %Z')})",
        f"- machine: {cpu_model()}, nproc {nproc()}; OpenVINO's default CPU precision here: {default}",
        f"- versions: {package_versions()}",
        f"- models: {', '.join(f'`{n}` ({w})' for n, w in weights.items())}",
        f"- accuracy: stock validator on `{args['data']}` val at {args['val_imgsz']} px, batch 1; INT8 calibrated on "
        f"the `{args['split']}` split (Ultralytics' exporter: NNCF for OpenVINO, ONNX Runtime static quantization for "
        f"ONNX); OpenVINO validated with Ultralytics' back end (the CPU's default precision, {default})"
        if args["accuracy"]
        else "- accuracy: not measured in this run (accuracy=False)",
        f"- latency: batch 1, {args['threads']} threads, warm-up {args['warmup']} (+1), {args['runs']} interleaved "
        f"rounds, median ms; OpenVINO hint `{args['ov_precision']}`; INT8 calibrated on {args['lat_fraction']:.0%} "
        f"of the split; ratio to `{baseline}` in the same runtime, precision and size",
        "- load average (1, 5, 15 min) per timing phase: "
        + "; ".join(f"{title[t]} @{s} {fmt_load(a)} -> {fmt_load(b)}" for t, s, a, b in phases),
        "",
    ]
    if args["accuracy"]:
        lines += [f"## Accuracy at {args['val_imgsz']} px (val mAP50 / mAP50-95)", ""]
        lines += ["| model | " + " | ".join(title[t] for t in targets) + " |", "|---|" + "---:|" * len(targets)]
    for name in weights if args["accuracy"] else []:
        cells = []
        for t in targets:
            a = acc[name].get(t, {}) if "crash" not in acc[name] else {"error": f"worker died ({acc[name]['crash']})"}
            cells.append(f"{a['mAP50']:.3f} / {a['mAP50-95']:.3f}" if "mAP50" in a else f"failed: {a.get('error')}")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    for s in sizes if args["latency"] else []:
        lines += ["", f"## Latency at {s} px (median ms, ratio to `{baseline}`)", ""]
        lines += ["| model | " + " | ".join(title[t] for t in targets) + " |", "|---|" + "---:|" * len(targets)]
        for name in weights:
            cells = []
            for t in targets:
                mine, ref = times.get((name, t, s)), times.get((baseline, t, s))
                if not mine:
                    cells.append(f"failed: {errors.get((name, t, s), 'not timed')}"[:160])
                    continue
                ratio = f" ({statistics.median(mine) / statistics.median(ref):.2f}x)" if ref else ""
                cells.append(f"{statistics.median(mine):.1f}{ratio}")
            lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
