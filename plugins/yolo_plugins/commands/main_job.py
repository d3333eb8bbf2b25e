"""The main job: train the default model on the embedded shapes set, validate it, save a few predicted test images.

    yolo-plugins main-job [key=value ...]      # any ``yolo train`` argument overrides the recipe, plus
                                                # predict=N (test images to predict and save, default 8) and
                                                # threads=N (torch threads, default: every CPU this process may use)

Everything runs through the stock engine (``RTDETR(...).train``/``.predict``; a YOLO-headed model gets ``YOLO``), on
the CPU, offline: the data set is generated on first use, the model is built from its YAML. ``RECIPE`` is the recipe
``docs/main-job.md`` explains setting by setting (the learning benchmark uses it too, with its own epoch count). The
equivalent ``yolo`` command lines are printed before the run starts.

Threads: on the CPU Ultralytics sets ``cpu_count - 1`` torch threads whenever it selects the device (one on a 2-core
machine, leaving a core idle); the main job sets ``threads`` again right after that, for training, validation and
prediction, through callbacks on its own model objects (``yolo train`` and other users of Ultralytics are unaffected).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

# The recipe: small images, batches of 4 with one optimizer step each (nbs=batch: Ultralytics would otherwise
# accumulate gradients up to 64 images), AdamW, a one-epoch warm-up without the large bias warm-up rate (0.1, meant for
# SGD), no mosaic (it shrinks the already small objects). epochs=16 fills about 15 minutes on 2 CPU cores.
RECIPE: dict[str, Any] = {
    "model": "rtdetr-effvit.yaml",
    "data": "shapes.yaml",
    "imgsz": 224,
    "epochs": 16,
    "batch": 4,
    "nbs": 4,
    "optimizer": "AdamW",
    "lr0": 0.001,
    "warmup_epochs": 1,
    "warmup_bias_lr": 0.001,
    "mosaic": 0.0,
    "device": "cpu",
    "workers": 0,
    "seed": 0,
    "project": "runs/main-job",  # below the working directory
    "name": "train",
    "exist_ok": True,
}
PREDICT = 8  # test images predicted and saved at the end


def cores() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def use_threads(model, n: int) -> None:
    """Make ``model``'s trainer, validators and predictor compute with ``n`` torch threads (set after Ultralytics'
    device selection has set its own ``cpu_count - 1``)."""
    import torch

    def set_threads(_component) -> None:
        torch.set_num_threads(n)

    for event in ("on_pretrain_routine_end", "on_train_start", "on_val_start", "on_predict_start"):
        model.add_callback(event, set_threads)


def is_rtdetr_head(name: str) -> bool:
    """Whether the YAML module ``name`` is ``RTDETRDecoder`` or a registered subclass of it (``FDRDecoder``)."""
    from ultralytics.nn.modules.head import RTDETRDecoder

    from .. import blocks  # noqa: F401  (registers the built-in heads)
    from ..registry import entries

    entry = entries().get(str(name))
    return str(name) == "RTDETRDecoder" or (entry is not None and issubclass(entry.cls, RTDETRDecoder))


def model_class(cfg: str):
    """``RTDETR`` for a model whose head is an ``RTDETRDecoder`` (YAML, also a registered subclass such as
    ``FDRDecoder``, or checkpoint), else ``YOLO``."""
    from ultralytics import RTDETR, YOLO

    if str(cfg).endswith((".yaml", ".yml")):
        from ultralytics.nn.tasks import yaml_model_load

        head = yaml_model_load(cfg).get("head") or [[None, None, None]]
        return RTDETR if is_rtdetr_head(head[-1][2]) else YOLO
    return RTDETR if "rtdetr" in Path(cfg).name else YOLO


def parse(argv: list[str]) -> tuple[dict[str, Any], int, int]:
    """``key=value`` arguments over ``RECIPE`` (values as Ultralytics' CLI reads them), ``predict=N`` and
    ``threads=N``."""
    from ultralytics.cfg import smart_value

    args, n, threads = dict(RECIPE), PREDICT, cores()
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep or not key:
            raise ValueError(f"main-job: arguments are key=value, got {a!r}")
        if key in ("predict", "threads"):
            try:
                number = int(value)
            except ValueError:
                raise ValueError(f"main-job: {key} must be a whole number, got {value!r}") from None
            if key == "threads" and number < 1:
                raise ValueError(f"main-job: threads must be at least 1, got {number}")
            n, threads = (number, threads) if key == "predict" else (n, number)
        else:
            args[key] = smart_value(value)
    return args, n, threads


def test_images(data: str, n: int) -> list[str]:
    """The first ``n`` images of the data set's test split (its val split if it has none)."""
    from ultralytics.data.utils import IMG_FORMATS, check_det_dataset

    d = check_det_dataset(data)
    split = d.get("test") or d["val"]
    folders = split if isinstance(split, list) else [split]
    files = sorted(p for f in folders for p in Path(f).rglob("*") if p.suffix[1:].lower() in IMG_FORMATS)
    return [str(p) for p in files[:n]]


def run(args: dict[str, Any], n: int = PREDICT, threads: int | None = None) -> dict[str, Any]:
    """Train with ``args`` (``parse``'s) and ``threads`` torch threads (default: every core), validate (the engine
    validates ``best.pt`` at the end), predict ``n`` test images; a summary."""
    threads = threads or cores()
    args = dict(args)
    if not Path(str(args["project"])).is_absolute():  # Ultralytics would put it below its runs_dir setting
        args["project"] = str(Path.cwd() / str(args["project"]))
    train = {k: v for k, v in args.items() if k != "model"}
    cli = " ".join(f"{k}={v}" for k, v in train.items())
    print(f"$ yolo train model={args['model']} {cli}", flush=True)
    print(f"torch threads: {threads} (the plain command above would use Ultralytics' cpu_count - 1)", flush=True)
    t = time.perf_counter()
    model = model_class(args["model"])(args["model"])
    use_threads(model, threads)
    model.train(**train)
    minutes = (time.perf_counter() - t) / 60
    trainer = model.trainer
    metrics = trainer.metrics or {}
    best = Path(trainer.best if Path(trainer.best).exists() else trainer.last)
    images = test_images(args["data"], n) if n > 0 else []
    saved = None
    if images:
        out = Path(trainer.save_dir)
        print(f"$ yolo predict model={best} source=<{len(images)} test images> save=True project={out}", flush=True)
        predictor = model_class(str(best))(str(best))
        use_threads(predictor, threads)
        predictor.predict(
            images,
            imgsz=args["imgsz"],
            device=args["device"],
            save=True,
            project=str(out),
            name="predict",
            exist_ok=True,
            verbose=False,
        )
        saved = out / "predict"
    summary = {
        "minutes": minutes,
        "threads": threads,
        "epochs": trainer.epoch + 1,
        "mAP50": float(metrics.get("metrics/mAP50(B)", float("nan"))),
        "mAP50-95": float(metrics.get("metrics/mAP50-95(B)", float("nan"))),
        "weights": str(best),
        "predictions": str(saved) if saved else None,
    }
    print(
        f"main job: {summary['epochs']} epochs in {minutes:.1f} min; val mAP50 {summary['mAP50']:.3f}, "
        f"mAP50-95 {summary['mAP50-95']:.3f} ({best}); "
        + (f"{len(images)} predicted test images in {saved}" if saved else "no test images predicted")
    )
    return summary


def main(argv: list[str]) -> int:
    """Console entry: ``yolo-plugins main-job [key=value ...]``."""
    try:
        args, n, threads = parse(argv)
    except ValueError as e:
        print(f"{e}\nusage: yolo-plugins main-job [key=value ...] [predict=N] [threads=N]", file=sys.stderr)
        return 2
    run(args, n, threads)
    return 0
