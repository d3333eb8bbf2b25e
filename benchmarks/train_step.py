"""Where a CPU training step goes: forward + loss, backward, optimizer step, per model, side by side.

    python benchmarks/train_step.py                                   # the default models below
    python benchmarks/train_step.py models=rtdetr-effvit.yaml,yolov10n.yaml rounds=15 warmup=3 batch=4 imgsz=224
    python benchmarks/train_step.py models=cfg/models/rtdetr-effvit.yaml nd=24,100   # RT-DETR denoising counts

One process, one torch thread (what Ultralytics trains with on 2 cores), a fixed synthetic batch (``batch`` images of
``imgsz`` px with ``objects`` boxes each, 6 classes), AdamW. Every model takes ``warmup`` untimed steps, then ``rounds``
interleaved rounds in which each model takes one step (the starting model rotates), so that a change in machine load
falls on all of them alike. Prints medians in ms, the ratio of the total to ``baseline`` (yolov10n) and the load
average at start and end. ``nd=`` builds every RT-DETR once per denoising count (RTDETRDecoder's ``nd``, training
only).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any

from speed import typed_args  # the same key=value rules as speed.py (this folder is on sys.path)

DEFAULTS: dict[str, Any] = {
    "models": "rtdetr-effvit.yaml,rtdetr-effvit-s.yaml,yolov10-effvit.yaml,yolov10n.yaml",
    "nd": "",
    "batch": 4,
    "imgsz": 224,
    "objects": 4,
    "rounds": 15,
    "warmup": 3,
    "baseline": "yolov10n",
}
PARTS = ("forward+loss", "backward", "optimizer")


def build(cfg: str, nd: int | None):
    """The training-mode model of ``cfg`` (6 classes) with Ultralytics' default hyperparameters for its loss."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel, RTDETRDetectionModel, yaml_model_load

    d = yaml_model_load(cfg)
    d["nc"] = 6
    head = d["head"][-1]
    from yolo_plugins.commands.main_job import is_rtdetr_head

    rtdetr = is_rtdetr_head(head[2])
    if nd is not None and rtdetr:
        args = list(head[3])
        if len(args) < 7:
            raise SystemExit(f"{cfg}: nd= needs the decoder's first 7 arguments written out in the YAML")
        args += [(0.0, None, -1)[i - 7] for i in range(len(args), 10)]  # dropout, act, eval_idx: RT-DETR's defaults
        head[3] = args[:10] + [nd] + args[11:]
    net = (RTDETRDetectionModel if rtdetr else DetectionModel)(d, verbose=False)
    net.nc, net.args = 6, get_cfg()
    return net.train()


def batch_of(n: int, imgsz: int, k: int):
    """A fixed synthetic batch in the layout the engine's loss reads."""
    import torch

    g = torch.Generator().manual_seed(0)
    return {
        "img": torch.rand(n, 3, imgsz, imgsz, generator=g),
        "batch_idx": torch.arange(n).repeat_interleave(k).float(),
        "cls": torch.randint(0, 6, (n * k, 1), generator=g).float(),
        "bboxes": torch.rand(n * k, 4, generator=g) * 0.4 + 0.2,  # normalised xywh
    }


def step(net, opt, batch) -> tuple[float, float, float]:
    """One training step; seconds for forward+loss, backward, optimizer."""
    t0 = time.perf_counter()
    loss, _ = net.loss(batch)
    t1 = time.perf_counter()
    loss.sum().backward()
    t2 = time.perf_counter()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def main(argv: list[str]) -> int:
    """Build, warm up, time interleaved rounds, print the table."""
    from pathlib import Path

    import torch

    args = typed_args(argv, DEFAULTS, "train_step.py")
    torch.set_num_threads(1)
    nds = [int(v) for v in str(args["nd"]).split(",") if v.strip()] or [None]
    models = {}
    for cfg in [c.strip() for c in args["models"].split(",") if c.strip()]:
        for nd in nds:
            net = build(cfg, nd)
            rtdetr = type(net).__name__.startswith("RTDETR")
            name = Path(cfg).stem + (f" nd={net.model[-1].num_denoising}" if rtdetr and nd is not None else "")
            if name not in models:
                models[name] = (net, torch.optim.AdamW(net.parameters(), 1e-3), {p: [] for p in PARTS})
    batch = batch_of(args["batch"], args["imgsz"], args["objects"])
    load0 = os.getloadavg()
    for net, opt, _ in models.values():
        for _ in range(args["warmup"]):
            step(net, opt, batch)
    names = list(models)
    for r in range(args["rounds"]):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            net, opt, times = models[name]
            for part, t in zip(PARTS, step(net, opt, batch)):
                times[part].append(t * 1000)
    load1 = os.getloadavg()
    med = {n: {p: statistics.median(t[p]) for p in PARTS} for n, (_, _, t) in models.items()}
    base = next((n for n in med if n.split(" ")[0] == args["baseline"]), None)
    print(
        f"training step, batch {args['batch']} x {args['imgsz']} px, {args['objects']} objects per image, 1 thread, "
        f"AdamW; medians of {args['rounds']} interleaved rounds after {args['warmup']} warm-up steps (ms)"
    )
    loads = [" ".join(f"{v:.2f}" for v in load) for load in (load0, load1)]
    print(f"load average (1, 5, 15 min): {loads[0]} -> {loads[1]}")
    print("\n| model | " + " | ".join(PARTS) + " | total | ratio |\n|---|" + "---:|" * (len(PARTS) + 2))
    for n, m in med.items():
        total = sum(m.values())
        ratio = f"{total / sum(med[base].values()):.2f}x" if base else "-"
        print(f"| {n} | " + " | ".join(f"{m[p]:.0f}" for p in PARTS) + f" | {total:.0f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
