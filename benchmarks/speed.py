"""CPU latency of the zoo's RT-DETR ``n`` models beside stock references, in PyTorch, ONNX Runtime and OpenVINO.

    python benchmarks/speed.py                                   # imgsz=640,320 runs=30 warmup=5 threads=2
    python benchmarks/speed.py imgsz=640,320 runs=30 threads=2 out=docs/benchmarks/speed/NAME   # a table for the docs
    python benchmarks/speed.py models=my-model.yaml              # one more model beside the zoo and stock ones
    python benchmarks/speed.py imgsz=320 runs=1 warmup=0 zoo=False stock=yolo26n.yaml   # a quick smoke run
    python benchmarks/speed.py imgsz=320 repeats=5 zoo=False models=a.pt,b.pt baseline=b   # a ratio's spread

Models: the ``n`` scale of every ``cfg/models/rtdetr*.yaml`` that has one and the zoo's official small DETRs
(``dfine-n``, ``deim-dfine-n``, ``deimv2-atto/femto/pico/n``), any ``models=a.yaml,b.yaml``, and the stock
``stock=yolo26n.yaml,yolov10n.yaml,yolo11n.yaml,rtdetr-l.yaml`` (built from YAML: random weights; nothing downloads),
or trained checkpoints (``models=best.pt``). Ratios are to ``baseline=yolo26n`` (Ultralytics' newest CPU model) within
each runtime and size. A model given as
``models=a.yaml@host`` is also fused without the plugin's deploy forms (``registry.deploy_form``: the host's own
attention modules), timed beside the same model with them: the forms' gain, measured in one run.

Weights of YAML-built models are untied first (``untie``: seeded noise on every parameter). A fresh RT-DETR's decoder
layers are exact copies of one another and its biases are zero, and ONNX Runtime and OpenVINO merge identical
subgraphs and drop zero additions: each decoder layer's value projection over every token was computed once instead
of once per layer, which made untrained RT-DETRs up to 1.3x faster than the same models trained (measured: OpenVINO
ratio to yolov10n 0.64x untrained vs 0.90x trained at 640). Untied weights time like trained ones.

Method, in one command:

1. Preparation, one fresh subprocess per model: params and GFLOPs of the fused model (Ultralytics' counter, at each
   size) and the exports, through Ultralytics' own exporter, to a temporary folder: ONNX (``simplify=True``, opset
   chosen by Ultralytics) and OpenVINO IR (``format="openvino"``; ``ov_model=onnx`` reads the ONNX file instead).
   A model that fails to export keeps going on the other runtimes; the table says why it failed.
2. Timing, one runtime and one size at a time, each in a fresh subprocess (the runtimes' thread pools would disturb
   each other in one process): batch 1, a fixed random image, ``threads`` threads (PyTorch ``torch.set_num_threads``,
   ONNX Runtime ``intra_op_num_threads`` with one inter-op thread and sequential execution, OpenVINO
   ``INFERENCE_NUM_THREADS`` with the LATENCY hint); ``warmup`` untimed runs per model, then ``runs`` interleaved
   rounds in which every model runs once (the starting model rotates each round), so that a change in machine load
   falls on all models alike. Each timed call is followed by a ``gap_ms`` pause, untimed: ONNX Runtime's worker
   threads spin for about 35 ms after a call (PyTorch's OpenMP threads about 10 ms), and without the pause one
   session's spinning threads would compete with the next model's run. Medians and minima per model are reported.
3. ``repeats=N`` runs step 2 N times over (all sizes and runtimes once per repeat, each phase again in a fresh
   process, so that minutes apart the machine's state differs): the table then gives the median over every round of
   every repeat and, beside each ratio, the range of the N per-repeat ratios (each repeat's median over the
   baseline's median in the same repeat). A ratio that straddles 1.00x over the repeats is "about even", whatever its
   median says; one run of step 2 cannot show that.

Precision: float32 everywhere. PyTorch and ONNX Runtime's CPU provider compute in float32; OpenVINO is compiled with
``INFERENCE_PRECISION_HINT`` = ``ov_precision`` (``f32``), since its CPU plugin otherwise runs in bf16 on CPUs with
AVX512-BF16 or AMX. The Markdown states the precision each compiled model reports.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "cfg" / "models"
TIMING_KEYS = ("threads", "runs", "warmup", "gap_ms", "ov_precision")  # passed on to the timing workers
RUNTIMES = {"pytorch": "PyTorch", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
DEFAULTS: dict[str, Any] = {
    "imgsz": "640,320",
    "runs": 30,
    "repeats": 1,
    "warmup": 5,
    "threads": 2,
    "models": "",
    "zoo": True,
    "stock": "yolo26n.yaml,yolov10n.yaml,yolo11n.yaml,rtdetr-l.yaml",
    "baseline": "yolo26n",
    "runtimes": ",".join(RUNTIMES),
    "out": "docs/benchmarks/speed/latest",  # the docs' measurements live under docs/benchmarks/ (benchmarks/docs.py)
    "simplify": True,
    "ov_model": "ir",
    "ov_precision": "f32",
    "gap_ms": 50.0,
    "keep": False,
}


# --------------------------------------------------------------------------------------------------------------------
# Arguments and models


def typed_args(argv: list[str], defaults: dict[str, Any], prog: str) -> dict[str, Any]:
    """``key=value`` arguments (Ultralytics style) over ``defaults``, typed like the defaults (also for
    ``train_step.py``); a bad key or value exits naming ``prog``."""
    args = dict(defaults)
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep or key not in defaults:
            raise SystemExit(f"{prog}: unknown argument {a!r}; valid keys: {', '.join(defaults)} (as key=value)")
        kind = type(defaults[key])
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise SystemExit(f"{prog}: {key} must be True or False, not {value!r}")
            args[key] = value.lower() in ("true", "1", "yes")
        else:
            try:
                args[key] = kind(value)
            except ValueError:
                raise SystemExit(f"{prog}: {key} must be {kind.__name__}, not {value!r}") from None
    return args


def parse_args(argv: list[str]) -> dict[str, Any]:
    """``key=value`` arguments over :data:`DEFAULTS` (see :func:`typed_args`), then the runtime checks."""
    args = typed_args(argv, DEFAULTS, "speed.py")
    unknown = set(split(args["runtimes"])) - set(RUNTIMES)
    if unknown:
        raise SystemExit(f"speed.py: unknown runtimes {sorted(unknown)}; choose from {', '.join(RUNTIMES)}")
    if args["ov_model"] not in ("ir", "onnx"):
        raise SystemExit("speed.py: ov_model must be ir (Ultralytics' OpenVINO export) or onnx (the ONNX export)")
    return args


def split(value: str) -> list[str]:
    """A comma-separated list, blanks dropped."""
    return [v.strip() for v in str(value).split(",") if v.strip()]


@dataclass
class Model:
    """One benchmarked model: its display name, what ``RTDETR``/``YOLO`` is given, and where it comes from."""

    name: str
    cfg: str
    source: str  # "yolo-plugins", "stock" or "extra"
    params: int | None = None
    gflops: dict[int, float] = field(default_factory=dict)
    files: dict[str, dict[int, str]] = field(default_factory=dict)  # runtime -> imgsz -> exported file
    errors: dict[str, dict[int, str]] = field(default_factory=dict)  # runtime -> imgsz -> why it has no number
    times: dict[str, dict[int, list[float]]] = field(default_factory=dict)  # runtime -> imgsz -> timed runs (ms)
    medians: dict[str, dict[int, dict[int, float]]] = field(default_factory=dict)  # runtime -> imgsz -> repeat -> ms


SMALL_DETRS = ("dfine-n", "deim-dfine-n", "deimv2-atto", "deimv2-femto", "deimv2-pico", "deimv2-n")


def zoo_models() -> list[Model]:
    """The ``n`` scale of every zoo RT-DETR YAML that has one, and the zoo's official small DETRs of that class
    (D-FINE-N, DEIM-D-FINE-N, DEIMv2-Atto/Femto/Pico/N)."""
    import yaml

    out = []
    for path in sorted(CFG.glob("rtdetr*.yaml")):
        if "n" in (yaml.safe_load(path.read_text()).get("scales") or {}):
            out.append(Model(f"{path.stem}-n", f"{path.stem}-n.yaml", "yolo-plugins"))
    out += [Model(name, f"{name}.yaml", "yolo-plugins") for name in SMALL_DETRS if (CFG / f"{name}.yaml").is_file()]
    return out


def models_from(args: dict[str, Any]) -> list[Model]:
    """Stock references first (the baseline among them), then the zoo, then extra models; duplicates dropped."""
    todo = [Model(Path(c).stem, c, "stock") for c in split(args["stock"])]
    todo += zoo_models() if args["zoo"] else []
    # a file named relative to the caller's directory is passed on as an absolute path: the workers run elsewhere
    for c in split(args["models"]):
        base, host = split_host(c)
        cfg = (str(Path(base).resolve()) if Path(base).is_file() else base) + (HOST if host else "")
        todo.append(Model(Path(base).stem + ("-host-forms" if host else ""), cfg, "extra"))
    seen, out = set(), []
    for m in todo:
        if m.name not in seen:
            seen.add(m.name)
            out.append(m)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Subprocess workers (run as ``speed.py --worker prepare|time SPEC.json OUT.json``)


HOST = "@host"  # model suffix: fused without the plugin's deploy forms


def split_host(cfg: str) -> tuple[str, bool]:
    """``("a.yaml", True)`` for ``"a.yaml@host"``, else ``(cfg, False)``."""
    cfg = str(cfg)
    return (cfg[: -len(HOST)], True) if cfg.endswith(HOST) else (cfg, False)


@contextmanager
def forms(cfg: str) -> Iterator[None]:
    """Inside, ``model.fuse()`` skips the plugin's deploy forms when ``cfg`` ends with ``@host``."""
    from yolo_plugins.host import fusing

    original = fusing.to_deploy_forms
    if split_host(cfg)[1]:
        fusing.to_deploy_forms = lambda model: 0
    try:
        yield
    finally:
        fusing.to_deploy_forms = original


def build(cfg: str):
    """``RTDETR(cfg)`` for a model whose head is ``RTDETRDecoder``, else ``YOLO(cfg)``; YAML-built weights untied."""
    from yolo_plugins.commands.main_job import model_class

    cfg = split_host(cfg)[0]
    model = model_class(cfg)(cfg)
    if not str(cfg).endswith(".pt"):
        untie(model.model)
    return model


def untie(model, seed: int = 0, scale: float = 0.01) -> None:
    """Add seeded noise to every parameter, so that no two layers are identical and no bias is zero (see above)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def brief(e: BaseException, limit: int = 160) -> str:
    """An exception as one short line."""
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def prepare(spec: dict) -> dict:
    """Count one model and export it for every size: ``{params, gflops, files, errors}``."""
    from ultralytics.utils.torch_utils import get_flops, get_num_params

    from yolo_plugins.profile.sweep import deployable

    out: dict[str, Any] = {"params": None, "gflops": {}, "files": {}, "errors": {}, "build_error": None}
    try:
        model = build(spec["cfg"])
    except Exception as e:
        out["build_error"] = f"build failed: {brief(e)}"
        return out
    with forms(spec["cfg"]):
        fused = deployable(model.model)
    out["params"] = get_num_params(fused)
    out["gflops"] = {str(s): get_flops(fused, s) for s in spec["imgsz"]}
    formats = [f for f in ("onnx", "openvino") if f in spec["formats"]]
    for s in spec["imgsz"]:
        for fmt in formats:
            folder = Path(spec["folder"]) / f"{fmt}-{s}"
            folder.mkdir(parents=True, exist_ok=True)
            os.chdir(folder)  # a YAML-built model exports into the working directory
            try:
                kw = {"simplify": spec["simplify"]} if fmt == "onnx" else {}
                src = model
                base = split_host(spec["cfg"])[0]
                if base.endswith(".pt"):  # a checkpoint exports beside itself: one copy per size
                    src = build(str(shutil.copy(base, folder / Path(base).name)))
                with forms(spec["cfg"]):
                    f = Path(src.export(format=fmt, imgsz=s, device="cpu", verbose=False, **kw))
                if fmt == "openvino":
                    f = next(f.glob("*.xml"))
                out["files"].setdefault(fmt, {})[str(s)] = str(f.resolve())
            except Exception as e:
                out["errors"].setdefault(fmt, {})[str(s)] = f"{fmt} export failed: {brief(e)}"
    return out


def runner(runtime: str, path: str, imgsz: int, threads: int, x, precision: str) -> tuple[Callable[[], Any], dict]:
    """A no-argument callable that runs one model once on ``x``, and what the runtime reports about it."""
    if runtime == "pytorch":
        import torch

        from yolo_plugins.profile.sweep import deployable

        with forms(path):
            model = deployable(build(path).model)
        im = torch.from_numpy(x)

        def run() -> Any:
            with torch.inference_mode():
                return model(im)

        return run, {"precision": str(next(model.parameters()).dtype).replace("torch.", "")}
    if runtime == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x}
        kind = sess.get_inputs()[0].type  # e.g. tensor(float)
        return (lambda: sess.run(None, feed)), {"precision": "float32" if kind == "tensor(float)" else kind}
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision}
    compiled = ov.Core().compile_model(path, "CPU", config)
    request = compiled.create_infer_request()
    info = {
        "precision": str(compiled.get_property("INFERENCE_PRECISION_HINT")).replace("<Type: '", "").rstrip("'>"),
        "streams": int(compiled.get_property("NUM_STREAMS")),
        "threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
    }
    return (lambda: request.infer({0: x}, share_inputs=True, share_outputs=True)), info


def time_phase(spec: dict) -> dict:
    """Time every model of one runtime at one size: per-model warm-up, then interleaved rounds."""
    import numpy as np
    from tqdm import tqdm

    load_start = os.getloadavg()
    runtime, imgsz, threads = spec["runtime"], spec["imgsz"], spec["threads"]
    if runtime == "pytorch":
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    runs, names, info, errors = [], [], {}, {}
    for name, path in spec["models"].items():
        try:
            run, info[name] = runner(runtime, path, imgsz, threads, x, spec["ov_precision"])
            for _ in range(spec["warmup"]):
                run()
            run()  # at least one untimed run: the first call allocates
            runs.append(run)
            names.append(name)
        except Exception as e:
            errors[name] = f"{RUNTIMES[runtime]} failed: {brief(e)}"
    times: dict[str, list[float]] = {n: [] for n in names}
    gap = spec["gap_ms"] / 1000
    tqdm.monitor_interval = 0  # no monitor thread during timing
    bar = tqdm(range(spec["runs"]), desc=f"{RUNTIMES[runtime]} @{imgsz}", unit="round", file=sys.stderr)
    for r in bar:
        for k in range(len(runs)):
            i = (r + k) % len(runs)  # rotate the starting model
            if names[i] in errors:
                continue
            try:
                t = time.perf_counter()
                runs[i]()
                times[names[i]].append((time.perf_counter() - t) * 1000)
            except Exception as e:  # a model that fails while timed drops out; the others go on
                errors.setdefault(names[i], f"{RUNTIMES[runtime]} failed: {brief(e)}")
            time.sleep(gap)
    bar.close()
    times = {n: t for n, t in times.items() if n not in errors}
    return {"times": times, "errors": errors, "info": info, "load": [load_start, os.getloadavg()]}


def versions() -> dict[str, str]:
    """Versions of the runtimes and of the Python stack (in a subprocess: the parent stays free of torch)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "onnxruntime", "openvino", "ultralytics", "onnx", "onnxslim", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    try:
        import openvino as ov

        out["openvino_default_precision"] = str(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))
        out["openvino_default_precision"] = out["openvino_default_precision"].replace("<Type: '", "").rstrip("'>")
    except Exception as e:
        out["openvino_default_precision"] = f"unknown ({brief(e, 60)})"
    return out


def worker(kind: str, spec_file: str, out_file: str) -> int:
    """Entry point of the subprocesses."""
    spec = json.loads(Path(spec_file).read_text())
    if kind == "prepare" or spec.get("runtime") == "pytorch":  # the ONNX Runtime and OpenVINO workers need no torch
        import yolo_plugins

        yolo_plugins.activate()
    result = {"prepare": prepare, "time": time_phase, "versions": lambda _: versions()}[kind](spec)
    Path(out_file).write_text(json.dumps(result))
    return 0


# --------------------------------------------------------------------------------------------------------------------
# Parent: orchestration and report


def subprocess_env(threads: int) -> dict[str, str]:
    """The workers' environment: offline, thread counts pinned for every library that reads them."""
    env = dict(os.environ, YOLO_OFFLINE="1", PYTHONUNBUFFERED="1")
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    return env


def call(kind: str, spec: dict, tmp: Path, env: dict[str, str], quiet: bool = False) -> dict:
    """Run one worker subprocess; returns its result, or ``{"crash": reason}`` when it dies."""
    n = len(list(tmp.glob("spec-*.json")))
    spec_file, out_file = tmp / f"spec-{n}.json", tmp / f"out-{n}.json"
    spec_file.write_text(json.dumps(spec))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, str(spec_file), str(out_file)]
    p = subprocess.run(cmd, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE if quiet else None)
    if p.returncode != 0 or not out_file.is_file():
        tail = (p.stdout or b"").decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {p.returncode}"]
        return {"crash": f"subprocess died (exit code {p.returncode}): {tail[0][:120]}"}
    return json.loads(out_file.read_text())


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name from /proc/cpuinfo (or the text ``cpuinfo``), with its family, model and vector extensions,
    e.g. ``AMD EPYC (family 25 model 17; AVX-512 VNNI)``: two machines may share a model name and differ in speed and
    in numerics. No commas, so the name stays one field of the headers that quote it. The platform string elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""
    if isa and flags & {"avx512_vnni", "avx_vnni"}:
        isa += " VNNI"
    family = f"family {fields['cpu family']} model {fields.get('model', '?')}" if "cpu family" in fields else ""
    detail = "; ".join(x for x in (family, isa) if x)
    name = fields["model name"].replace(",", " ")
    return f"{name} ({detail})" if detail else name


def nproc() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def fmt_load(load: list[float] | tuple[float, ...]) -> str:
    """A load-average triple."""
    return " ".join(f"{v:.2f}" for v in load)


def settle(m: Model, r: dict, sizes: list[int], runtimes: list[str], ov_model: str) -> None:
    """Record a preparation result on ``m``: params, GFLOPs, and per runtime and size a file to time or why not."""
    m.params, m.gflops = r.get("params"), {int(k): v for k, v in (r.get("gflops") or {}).items()}
    source = {"pytorch": None, "onnxruntime": "onnx", "openvino": "openvino" if ov_model == "ir" else "onnx"}
    for rt in runtimes:
        m.files[rt], m.errors[rt] = {}, {}
        for s in sizes:
            fmt = source[rt]
            why = r.get("crash") or r.get("build_error") or (fmt and r["errors"].get(fmt, {}).get(str(s)))
            if why:
                m.errors[rt][s] = why
                print(f"  {m.name} @{s} {RUNTIMES[rt]}: {why}")
            else:
                m.files[rt][s] = m.cfg if fmt is None else r["files"][fmt][str(s)]


def run(args: dict[str, Any], argv: list[str]) -> tuple[list[Model], dict]:
    """Prepare, then time every runtime at every size; returns the models and the run's metadata."""
    sizes = [int(s) for s in split(args["imgsz"])]
    runtimes = split(args["runtimes"])
    models = models_from(args)
    env = subprocess_env(args["threads"])
    meta: dict[str, Any] = {"argv": argv, "sizes": sizes, "runtimes": runtimes, "phases": [], "precision": {}}
    print(f"speed.py: {len(models)} models, sizes {sizes}, runtimes {runtimes}; nproc {nproc()}, {cpu_model()}")
    tmp = Path(tempfile.mkdtemp(prefix="yolo-plugins-speed-"))
    try:
        meta["versions"] = call("versions", {}, tmp, env)
        formats = {"onnx"} if {"onnxruntime", "openvino"} & set(runtimes) else set()
        if "openvino" in runtimes and args["ov_model"] == "ir":
            formats.add("openvino")
        for m in models:
            print(f"preparing {m.name}: counting" + (f", exporting {'/'.join(sorted(formats))}" if formats else ""))
            spec = {"cfg": m.cfg, "imgsz": sizes, "formats": sorted(formats), "simplify": args["simplify"]}
            r = call("prepare", {**spec, "folder": str(tmp / m.name)}, tmp, env, quiet=True)
            settle(m, r, sizes, runtimes, args["ov_model"])
        for rep, s, rt in [(rep, s, rt) for rep in range(args["repeats"]) for s in sizes for rt in runtimes]:
            todo = {m.name: m.files[rt][s] for m in models if s in m.files[rt] and s not in m.errors[rt]}
            load = os.getloadavg()
            tag = f"{RUNTIMES[rt]} @{s}" + (f" (repeat {rep + 1}/{args['repeats']})" if args["repeats"] > 1 else "")
            print(f"{tag}: {len(todo)} models; load average at start {fmt_load(load)}", flush=True)
            spec = {"runtime": rt, "imgsz": s, "models": todo, **{k: args[k] for k in TIMING_KEYS}}
            r = call("time", spec, tmp, env)
            if "crash" in r:
                r = {"times": {}, "errors": dict.fromkeys(todo, r["crash"]), "info": {}, "load": [load, load]}
            end = os.getloadavg()
            print(f"{tag}: load average at end {fmt_load(end)}", flush=True)
            meta["phases"].append(
                {"runtime": rt, "imgsz": s, "repeat": rep, "load": [load, end], "worker_load": r["load"]}
            )
            for m in models:
                if m.name in r["times"]:
                    m.times.setdefault(rt, {}).setdefault(s, []).extend(r["times"][m.name])
                    m.medians.setdefault(rt, {}).setdefault(s, {})[rep] = median(r["times"][m.name])
                if m.name in r["errors"]:
                    m.errors[rt][s] = r["errors"][m.name]
            precisions = {i.get("precision") for i in r["info"].values()}
            meta["precision"].setdefault(rt, set()).update(p for p in precisions if p)
            meta.setdefault("ov_info", []).extend(i for i in r["info"].values() if rt == "openvino")
    finally:
        if args["keep"]:
            print(f"exports and worker files kept in {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    meta["precision"] = {rt: sorted(v) for rt, v in meta["precision"].items()}
    return models, meta


def median(times: list[float] | None) -> float | None:
    """Median of the timed runs, or None."""
    return statistics.median(times) if times else None


def ratio_range(m: Model, base: Model | None, runtime: str, imgsz: int) -> tuple[float, float] | None:
    """Lowest and highest per-repeat ratio of ``m``'s median to ``base``'s (over the repeats that timed both)."""
    if base is None:
        return None
    mine, theirs = m.medians.get(runtime, {}).get(imgsz, {}), base.medians.get(runtime, {}).get(imgsz, {})
    ratios = [mine[r] / theirs[r] for r in mine if theirs.get(r)]
    return (min(ratios), max(ratios)) if ratios else None


def rows(models: list[Model], meta: dict, baseline: str) -> list[dict[str, Any]]:
    """One flat record per model, runtime and size (the CSV rows)."""
    out = []
    base = next((m for m in models if m.name == baseline), None)
    for s in meta["sizes"]:
        for rt in meta["runtimes"]:
            b = median(base.times.get(rt, {}).get(s)) if base else None
            for m in models:
                t = m.times.get(rt, {}).get(s)
                med = median(t)
                spread = ratio_range(m, base, rt, s)
                out.append(
                    {
                        "model": m.name,
                        "source": m.source,
                        "imgsz": s,
                        "runtime": rt,
                        "params": m.params,
                        "gflops": None if s not in m.gflops else round(m.gflops[s], 2),
                        "median_ms": None if med is None else round(med, 3),
                        "min_ms": None if not t else round(min(t), 3),
                        "runs": len(t or []),
                        f"ratio_to_{baseline}": None if med is None or not b else round(med / b, 3),
                        "repeats": len(m.medians.get(rt, {}).get(s, {})),
                        "ratio_min": None if spread is None else round(spread[0], 3),
                        "ratio_max": None if spread is None else round(spread[1], 3),
                        "error": m.errors.get(rt, {}).get(s, ""),
                    }
                )
    return out


def markdown(models: list[Model], meta: dict, args: dict[str, Any]) -> str:
    """The report: how it was run, where, then one table per size."""
    v, baseline = meta["versions"], args["baseline"]
    if "crash" in v:
        v = {"versions": v["crash"]}
    prec = meta["precision"]
    ov_info = meta.get("ov_info") or []
    ov_streams = sorted({(i.get("streams"), i.get("threads")) for i in ov_info})
    cmd = "python benchmarks/speed.py " + " ".join(shlex.quote(a) for a in meta["argv"])
    lines = [
        f"<!-- generated by `{cmd.strip()}`; do not edit by hand -->",
        "",
        "# CPU latency: PyTorch vs ONNX Runtime vs OpenVINO",
        "",
        f"- command: `{cmd.strip()}` ({time.strftime('%Y-%m-%d %H:%M %Z')})",
        f"- machine: {cpu_model()}, nproc {nproc()}, {platform.system()} {platform.release()}",
        f"- versions: python {v.get('python')}, torch {v.get('torch')}, onnxruntime {v.get('onnxruntime')}, "
        f"openvino {v.get('openvino')}, ultralytics {v.get('ultralytics')}, onnx {v.get('onnx')}, "
        f"onnxslim {v.get('onnxslim')}",
        f"- settings: batch 1, threads {args['threads']}, warm-up {args['warmup']} (+1) runs per model, "
        f"{args['runs']} interleaved rounds, {args['gap_ms']:g} ms pause after each call; median (min) ms"
        + (
            f"; {args['repeats']} repeats of every phase (the median is over all their rounds)"
            if args["repeats"] > 1
            else ""
        ),
        "- precision: PyTorch "
        + ", ".join(prec.get("pytorch", ["-"]))
        + "; ONNX Runtime (CPU provider) "
        + ", ".join(prec.get("onnxruntime", ["-"]))
        + f"; OpenVINO CPU {', '.join(prec.get('openvino', ['-']))} (hint `{args['ov_precision']}`; this CPU's "
        f"default would be {v.get('openvino_default_precision')})"
        + (f", streams/threads {ov_streams}" if ov_streams else ""),
        "- exports: Ultralytics' exporter; ONNX "
        + ("simplified with onnxslim" if args["simplify"] else "not simplified")
        + "; OpenVINO "
        + ("IR from `format=openvino`" if args["ov_model"] == "ir" else "reads the ONNX file"),
        "- GFLOPs: Ultralytics' counter (thop) on the fused model at that size; params of the fused model",
        "- load average (1, 5, 15 min) at start -> end of each phase: "
        + "; ".join(
            f"{RUNTIMES[p['runtime']]} @{p['imgsz']}"
            + (f" (repeat {p['repeat'] + 1})" if args["repeats"] > 1 else "")
            + f" {fmt_load(p['load'][0])} -> {fmt_load(p['load'][1])}"
            for p in meta["phases"]
        ),
        f"- ratio: median / median of `{baseline}` with the same runtime and size"
        + ("; beside it the lowest-highest of the per-repeat ratios" if args["repeats"] > 1 else ""),
        "",
    ]
    notes: list[str] = []
    for s in meta["sizes"]:
        lines += [f"## imgsz {s}", ""]
        head = "| model | params (M) | GFLOPs |" + "".join(f" {RUNTIMES[rt]} ms (ratio) |" for rt in meta["runtimes"])
        lines += [head, "|---|---:|---:|" + "---:|" * len(meta["runtimes"])]
        for m in models:
            cells = []
            for rt in meta["runtimes"]:
                t = m.times.get(rt, {}).get(s)
                base = next((b for b in models if b.name == baseline), None)
                bt = median(base.times.get(rt, {}).get(s)) if base else None
                if t:
                    ratio = f"{median(t) / bt:.2f}x" if bt else "-"
                    spread = ratio_range(m, base, rt, s)
                    if args["repeats"] > 1 and spread and m is not base:
                        ratio += f", {spread[0]:.2f}-{spread[1]:.2f}x"
                    cells.append(f"{median(t):.1f} ({ratio}), min {min(t):.1f}")
                else:
                    why = m.errors.get(rt, {}).get(s, "not timed")
                    if why not in notes:
                        notes.append(why)
                    cells.append(f"failed [{notes.index(why) + 1}]")
            name = f"`{m.name}`" + {"stock": " (stock)", "extra": " (extra)"}.get(m.source, "")
            params = "-" if m.params is None else f"{m.params / 1e6:.2f}"
            gflops = f"{m.gflops[s]:.1f}" if s in m.gflops else "-"
            lines.append(f"| {name} | {params} | {gflops} | " + " | ".join(cells) + " |")
        lines.append("")
    if notes:
        lines += ["Failures:", ""] + [f"{i}. {why}" for i, why in enumerate(notes, 1)] + [""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Run the benchmark and write ``speed.md`` and ``speed.csv`` to ``out``."""
    if argv[:1] == ["--worker"]:
        return worker(*argv[1:4])
    args = parse_args(argv)
    models, meta = run(args, argv)
    out = Path(args["out"])
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(models, meta, args)
    (out / "speed.md").write_text(text)
    records = rows(models, meta, args["baseline"])
    with open(out / "speed.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(records[0]) if records else ["model"])
        w.writeheader()
        w.writerows(records)
    print("\n" + text)
    print(f"written: {out / 'speed.md'}, {out / 'speed.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
