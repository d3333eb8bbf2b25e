"""Run the redundancy study: count, time and (optionally) validate every variant of an RT-DETR model.

With ``timed=True`` the baseline (or the one measured model) is also timed per component (see :mod:`.timing`).
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..weights.roles import analyse
from . import table
from .counting import Counts, count
from .timing import Timing, time_components
from .variants import Variant, variants


@dataclass
class Result:
    """One variant's measurements (GFLOPs as Ultralytics counts, extra = work thop misses)."""

    variant: str
    knob: str | None
    value: int | None
    params: int
    gflops: float
    gflops_extra: float
    latency_ms: float | None  # median of the timed runs
    needs_retraining: bool
    latency_min_ms: float | None = None  # fastest timed run: the least disturbed by other load
    components: dict[str, float] = field(default_factory=dict)  # section -> GFLOPs (thop + extra)
    metrics: dict[str, float] = field(default_factory=dict)  # mAP50-95, mAP50 when validated
    counts: Counts | None = None
    rows: table.Row | None = None
    timing: Timing | None = None  # CPU time per component (the rows' ``ms``), when timed

    @property
    def gflops_total(self) -> float:
        """thop GFLOPs plus the extra work."""
        return self.gflops + self.gflops_extra

    def record(self, baseline: Result | None = None) -> dict:
        """The result as a flat dict, with relative change against ``baseline`` (percent)."""
        out = {
            "variant": self.variant,
            "params": self.params,
            "gflops": round(self.gflops, 4),
            "gflops_extra": round(self.gflops_extra, 4),
            "gflops_total": round(self.gflops_total, 4),
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 2),
            "latency_min_ms": None if self.latency_min_ms is None else round(self.latency_min_ms, 2),
            "needs_retraining": self.needs_retraining,
        }
        if baseline is not None:
            for key, a, b in (
                ("params", self.params, baseline.params),
                ("gflops", self.gflops_total, baseline.gflops_total),
                ("latency", self.latency_ms, baseline.latency_ms),
            ):
                out[f"d_{key}_pct"] = None if a is None or not b else round(100 * (a - b) / b, 1)
        out.update({k: round(v, 4) for k, v in self.metrics.items()})
        out.update({f"gflops_{k}": round(v, 4) for k, v in self.components.items()})
        return out


def deployable(model: nn.Module) -> nn.Module:
    """A fused copy (Conv+BN, RepConv and plugin blocks folded) in eval mode: the model as it is deployed."""
    m = copy.deepcopy(model).float().eval()
    return m.fuse(verbose=False) if hasattr(m, "fuse") else m


def latencies_ms(models: list[nn.Module], imgsz: int, runs: int = 5, warmup: int = 2, bar=None) -> list[list[float]]:
    """CPU latencies (ms) of each model's timed runs: batch 1, ``warmup`` untimed then ``runs`` timed forward passes.

    The models are timed in interleaved rounds (each round runs every model once), so that a change in load on a
    shared machine falls on all of them alike instead of on whichever variant happened to run at that moment.
    """
    im = torch.zeros(1, 3, imgsz, imgsz)
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for r in range(warmup + max(runs, 1)):
            for k, m in enumerate(models):
                t = time.perf_counter()
                m(im)
                if r >= warmup:
                    times[k].append((time.perf_counter() - t) * 1000)
            if bar is not None:
                bar.update(1)
    return times


def latency_ms(model: nn.Module, imgsz: int, runs: int = 5, warmup: int = 2) -> float:
    """Median CPU latency (ms) of one model as deployed (see :func:`latencies_ms`)."""
    return statistics.median(latencies_ms([deployable(model)], imgsz, runs, warmup)[0])


def validate(model: nn.Module, data: str, imgsz: int, batch: int = 1) -> dict[str, float]:
    """mAP of ``model`` on ``data`` with Ultralytics' standard validator (RT-DETR's for RT-DETR models)."""
    from ultralytics.models.rtdetr.val import RTDETRValidator
    from ultralytics.models.yolo.detect import DetectionValidator

    cls = RTDETRValidator if analyse(model).is_rtdetr else DetectionValidator
    v = cls(args=dict(data=data, imgsz=imgsz, batch=batch, plots=False, verbose=False, device="cpu", half=False))
    stats = v(model=copy.deepcopy(model))
    return {
        "map50_95": float(stats.get("metrics/mAP50-95(B)", 0.0)),
        "map50": float(stats.get("metrics/mAP50(B)", 0.0)),
    }


def measure(
    model: nn.Module,
    imgsz: int,
    name: str = "baseline",
    variant: Variant | None = None,
    runs: int = 5,
    warmup: int = 2,
    data: str | None = None,
    timed: bool = False,
) -> Result:
    """Count (and time when ``runs`` > 0; validate when ``data`` is given) one model.

    ``timed``: also time every component (the latency is then the same run's end-to-end median without hooks).
    """
    c = count(model, imgsz)
    timing = time_components(deployable(model), imgsz, runs, warmup) if timed and runs > 0 else None
    root = table.build(model, c, timing=timing)
    if timing is not None:
        times = timing.end_to_end_ms
    else:
        times = latencies_ms([deployable(model)], imgsz, runs, warmup)[0] if runs > 0 else None
    return Result(
        variant=name,
        knob=variant.knob if variant else None,
        value=variant.value if variant else None,
        params=c.total_params,
        gflops=c.gflops,
        gflops_extra=c.extra_gflops,
        latency_ms=statistics.median(times) if times else None,
        latency_min_ms=min(times) if times else None,
        needs_retraining=variant.needs_retraining if variant else False,
        components=table.sections(root),
        metrics=validate(model, data, imgsz) if data else {},
        counts=c,
        rows=root,
        timing=timing,
    )


def run(
    model: nn.Module,
    spec: str | list,
    imgsz: int = 640,
    runs: int = 5,
    warmup: int = 2,
    data: str | None = None,
    progress: bool = True,
    timed: bool = False,
) -> list[Result]:
    """Measure the baseline and every variant of ``spec`` (mAP only for no-retraining variants, given ``data``).

    Counting (and validating) runs variant by variant; the latencies are then timed in interleaved rounds. ``timed``:
    then the baseline is also timed per component.
    """
    from ultralytics.utils import TQDM

    todo = variants(model, spec)
    results, deployed = [], []
    base_model = None  # the baseline as built: its rows are rebuilt with the per-component times
    bar = TQDM(todo, desc="profile sweep", disable=not progress, unit="variant", file=sys.stderr)
    for v in bar:
        bar.set_description(f"profile sweep: {v.name}")
        m = v.make()
        base_model = m if base_model is None else base_model
        results.append(measure(m, imgsz, v.name, v, 0, 0, data if data and not v.needs_retraining else None))
        if runs > 0:
            deployed.append(deployable(m))
    if runs > 0:
        rounds = TQDM(
            total=warmup + runs,
            desc="profile sweep: latency rounds",
            disable=not progress,
            unit="round",
            file=sys.stderr,
        )
        for r, times in zip(results, latencies_ms(deployed, imgsz, runs, warmup, rounds)):
            r.latency_ms, r.latency_min_ms = statistics.median(times), min(times)
        rounds.close()
        if timed:
            base = results[0]
            base.timing = time_components(deployed[0], imgsz, runs, warmup)
            base.rows = table.build(base_model, base.counts, timing=base.timing)
    return results
