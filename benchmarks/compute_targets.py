"""Check the compute targets of the RT-DETR x YOLOv10 family (issue 4); exit 1 if one is missed.

    python benchmarks/compute_targets.py

Targets, with Ultralytics' FLOPs counter at 640x640 on the model as built (the larger count; fused models are lower):

* the ``n`` scale of the smallest RT-DETR in the zoo (every cfg/models YAML with an ``RTDETRDecoder``) has at most
  8 GFLOPs and 5 M parameters — the compute class of the smallest published real-time DETRs (D-FINE-N: 4 M, 7 GFLOPs);
* every scale of ``rtdetr-v10`` has fewer GFLOPs than the stock ``rtdetr-l`` at the same input size.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_table import CFG, Row, markdown, measure  # noqa: E402

import yolo_plugins  # noqa: E402

MAX_GFLOPS_N, MAX_PARAMS_N = 8.0, 5_000_000
FAMILY = "rtdetr-v10"


def rtdetr_yamls() -> list[Path]:
    """Every RT-DETR YAML of the zoo (its head ends in an RTDETRDecoder) that has an ``n`` scale."""
    from ultralytics.nn.tasks import yaml_model_load

    out = []
    for path in sorted(CFG.glob("*.yaml")):
        d = yaml_model_load(path)
        if str(d["head"][-1][2]) == "RTDETRDecoder" and "n" in (d.get("scales") or {}):
            out.append(path)
    return out


def main() -> int:
    """Measure, print a table and a verdict per target; exit 1 if any target is missed."""
    yolo_plugins.activate()
    stock = measure("rtdetr-l.yaml")
    smallest_n: list[Row] = [measure(p, "n") for p in rtdetr_yamls()]
    from ultralytics.nn.tasks import yaml_model_load

    family = [measure(CFG / f"{FAMILY}.yaml", s) for s in yaml_model_load(CFG / f"{FAMILY}.yaml")["scales"]]
    print("n scale of every RT-DETR in the zoo:\n\n" + markdown(smallest_n))
    print(f"{FAMILY} at every scale vs stock rtdetr-l:\n\n" + markdown([*family, stock]))

    ok = True
    best = min(smallest_n, key=lambda r: r.gflops)
    hit = best.gflops <= MAX_GFLOPS_N and best.params <= MAX_PARAMS_N
    ok &= hit
    print(
        f"{'PASS' if hit else 'FAIL'}  smallest RT-DETR n: {best.model}-n {best.gflops:.2f} GFLOPs "
        f"(<= {MAX_GFLOPS_N}), {best.params / 1e6:.2f} M params (<= {MAX_PARAMS_N / 1e6:.0f} M)"
    )
    for r in family:
        hit = r.gflops < stock.gflops
        ok &= hit
        print(
            f"{'PASS' if hit else 'FAIL'}  {r.model}-{r.scale}: {r.gflops:.2f} GFLOPs < rtdetr-l {stock.gflops:.2f} "
            f"({r.gflops / stock.gflops:.2f}x)"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
