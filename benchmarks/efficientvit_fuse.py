"""What deploy-time fusing does to the EfficientViT backbones: parameters, modules, GFLOPs and CPU latency.

    python benchmarks/efficientvit_fuse.py [imgsz=640] [runs=5] [variants=m0,m1,m2,m3,m4,m5]

Each variant is built with the detection stem (outputs at strides 8/16/32), randomly initialised, measured, fused in
place with ``EfficientViT.fuse()`` and measured again. GFLOPs are thop's count (2 x multiply-adds, the way
Ultralytics reports them, attention products included); latency is the median of ``runs`` single-image forwards on
one CPU thread, reported as the fused/unfused ratio (the ratio, not the absolute time, is what carries over).
"""

from __future__ import annotations

import statistics
import sys
import time

import thop
import torch

from yolo_plugins import EfficientViT


def measure(model: torch.nn.Module, x: torch.Tensor, runs: int) -> tuple[int, int, float, float]:
    """Parameters, modules, GFLOPs and median latency (ms) of ``model`` on ``x``."""
    params = sum(p.numel() for p in model.parameters())
    modules = len(list(model.modules()))
    gflops = thop.profile(model, inputs=[x], verbose=False)[0] * 2 / 1e9
    times = []
    with torch.no_grad():
        model(x)  # warm-up
        for _ in range(runs):
            t = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t) * 1000)
    return params, modules, gflops, statistics.median(times)


def main(imgsz: int = 640, runs: int = 5, variants: str = "m0,m1,m2,m3,m4,m5") -> None:
    """Print one Markdown table row per variant."""
    torch.set_num_threads(1)
    x = torch.randn(1, 3, imgsz, imgsz)
    print(f"EfficientViT backbones (detection stem) at {imgsz}x{imgsz}, 1 CPU thread, median of {runs} runs\n")
    print("| variant | params | modules | GFLOPs | modules fused | GFLOPs fused | fused/unfused latency |")
    print("|---|---|---|---|---|---|---|")
    for v in variants.split(","):
        model = EfficientViT(v).eval()
        p0, m0, g0, t0 = measure(model, x, runs)
        model.fuse()
        p1, m1, g1, t1 = measure(model, x, runs)
        print(
            f"| {v.upper()} | {p0 / 1e6:.3f} M -> {p1 / 1e6:.3f} M | {m0} | {g0:.2f} | {m1} | {g1:.2f} | "
            f"{t1 / t0:.2f} |"
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    main(int(args[0]) if args else 640, int(args[1]) if len(args) > 1 else 5, *(args[2:3]))
