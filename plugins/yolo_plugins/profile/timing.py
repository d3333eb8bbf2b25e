"""CPU time per component: forward pre/post hooks (and temporary method wrappers) timed with ``time.perf_counter``.

Every timed *region* is a layer of the model (``model.<i>``) or, inside an ``RTDETRDecoder``, one of its steps:

* ``<dec>.input_proj`` (``_get_encoder_input``: the input projections, flattening and concatenation), with its
  ``input_proj.<k>`` convolutions;
* ``<dec>:topk`` (``_get_decoder_input``: query selection: valid-mask, top-k, gathers, reference boxes), inside it
  ``<dec>:anchors`` (``_generate_anchors``, cached per input size, so ~0 after the first call) and the
  ``enc_output``/``enc_score_head``/``enc_bbox_head`` modules;
* ``<dec>.decoder`` (the decoder layers: self-attention, deformable cross-attention, FFN), inside it
  ``query_pos_head`` and the ``dec_bbox_head.<k>``/``dec_score_head.<k>`` heads each layer runs;
* ``<dec>`` itself: what is left (denoising setup, output top-k in ``postprocess``).

Each region stores its *exclusive* time (its own time minus the regions run inside it), so the keys partition the
forward pass and a module's time is the sum of the keys at or under its name. Hooks and wrappers exist only during a
hooked forward pass and are removed in a ``finally`` (nothing stays patched, even when the forward raises). Timed
rounds interleave one forward pass without hooks (the end-to-end latency) and one with hooks (the per-component
times); each key's figure is the median over the timed rounds.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

DECODER_STEPS = {  # RTDETRDecoder method -> timing key suffix (key = <decoder name> + suffix)
    "_get_encoder_input": ".input_proj",
    "_get_decoder_input": ":topk",
    "_generate_anchors": ":anchors",
}
DECODER_MODULES = (  # RTDETRDecoder children timed by hooks (ModuleLists: each item)
    "input_proj",
    "enc_output",
    "enc_score_head",
    "enc_bbox_head",
    "decoder",
    "query_pos_head",
    "dec_score_head",
    "dec_bbox_head",
)


def under(key: str, prefix: str) -> bool:
    """Whether timing ``key`` belongs to the module named ``prefix`` (itself, a submodule or one of its steps)."""
    return not prefix or key == prefix or key.startswith(prefix + ".") or key.startswith(prefix + ":")


@dataclass
class Timing:
    """Per-run CPU times (ms) of one model: exclusive time per region key, and the whole forward with/without hooks."""

    runs: int
    warmup: int
    threads: int
    steps: dict[str, list[float]] = field(default_factory=dict)  # key -> exclusive ms in each timed run
    hooked_ms: list[float] = field(default_factory=list)  # whole forward pass with hooks, per run
    end_to_end_ms: list[float] = field(default_factory=list)  # whole forward pass without hooks, per run

    def ms(self, keys: Iterable[str]) -> float | None:
        """Median over the runs of the summed time of ``keys`` (None when none of them was timed)."""
        keys = [k for k in keys if k in self.steps]
        if not keys:
            return None
        return statistics.median(sum(self.steps[k][r] for k in keys) for r in range(len(self.hooked_ms)))

    def keys_under(self, prefix: str) -> list[str]:
        """Keys of the module named ``prefix`` and everything run inside it."""
        return [k for k in self.steps if under(k, prefix)]

    @property
    def sum_ms(self) -> float:
        """Median of the summed component times (with hooks)."""
        return self.ms(self.steps) or 0.0

    @property
    def hooked_median_ms(self) -> float:
        """Median whole forward pass with the hooks installed."""
        return statistics.median(self.hooked_ms)

    @property
    def end_to_end_median_ms(self) -> float:
        """Median whole forward pass without hooks: the latency to quote."""
        return statistics.median(self.end_to_end_ms)

    @property
    def overhead_pct(self) -> float:
        """How much slower the hooked forward pass was than the plain one (percent, medians)."""
        e2e = self.end_to_end_median_ms
        return 100 * (self.hooked_median_ms - e2e) / e2e if e2e else 0.0

    def record(self) -> dict:
        """Summary for JSON: medians (ms), the hook overhead and how it was measured."""
        return {
            "runs": self.runs,
            "warmup": self.warmup,
            "threads": self.threads,
            "sum_ms": round(self.sum_ms, 3),
            "hooked_ms": round(self.hooked_median_ms, 3),
            "end_to_end_ms": round(self.end_to_end_median_ms, 3),
            "end_to_end_min_ms": round(min(self.end_to_end_ms), 3),
            "overhead_pct": round(self.overhead_pct, 1),
        }


class _Clock:
    """A stack of open regions; on close a region adds its own time minus its nested regions' to its key."""

    def __init__(self):
        self.stack: list[list] = []  # [key, start, time of nested regions]
        self.acc: dict[str, float] = defaultdict(float)

    def enter(self, key: str) -> None:
        self.stack.append([key, time.perf_counter(), 0.0])

    def leave(self) -> None:
        key, start, nested = self.stack.pop()
        dt = time.perf_counter() - start
        self.acc[key] += dt - nested
        if self.stack:
            self.stack[-1][2] += dt


def _decoder_types() -> tuple[type, ...]:
    from ultralytics.nn.modules.head import RTDETRDecoder

    return (RTDETRDecoder,)


def regions(model: nn.Module) -> tuple[dict[nn.Module, str], dict[nn.Module, list[str]]]:
    """What to time: ``{module: key}`` for hooks and ``{decoder: [method, ...]}`` for wrappers."""
    names = {m: n for n, m in model.named_modules()}
    layers = getattr(model, "model", None)
    hooked: dict[nn.Module, str] = {}
    wrapped: dict[nn.Module, list[str]] = {}
    for layer in layers if isinstance(layers, nn.Sequential) else [model]:
        hooked[layer] = names[layer]
        if isinstance(layer, _decoder_types()):
            for child in DECODER_MODULES:
                sub = getattr(layer, child, None)
                for m in sub if isinstance(sub, nn.ModuleList) else [sub] if isinstance(sub, nn.Module) else []:
                    hooked[m] = names[m]
            wrapped[layer] = [s for s in DECODER_STEPS if callable(getattr(layer, s, None))]
    return hooked, wrapped


@contextlib.contextmanager
def instrumented(model: nn.Module, clock: _Clock) -> Iterator[None]:
    """Install the timing hooks and wrappers on ``model``; remove every one of them on exit, also on error."""
    hooked, wrapped = regions(model)
    names = {m: n for n, m in model.named_modules()}
    handles = []
    saved: list[tuple[nn.Module, str, bool, object]] = []  # (module, attribute, was in instance dict, old value)
    try:
        for m, key in hooked.items():
            handles.append(m.register_forward_pre_hook(lambda *_, k=key: clock.enter(k)))
            handles.append(m.register_forward_hook(lambda *_: clock.leave()))
        for m, methods in wrapped.items():
            for method in methods:
                key = names[m] + DECODER_STEPS[method]
                saved.append((m, method, method in vars(m), vars(m).get(method)))
                setattr(m, method, _timed(getattr(m, method), clock, key))
                clock.acc[key] += 0.0  # a step that did not run (anchors cached) still shows, as 0 ms
        yield
    finally:
        for h in handles:
            h.remove()
        for m, method, had, old in reversed(saved):
            if had:
                setattr(m, method, old)
            else:
                vars(m).pop(method, None)
        clock.stack.clear()


def _timed(fn, clock: _Clock, key: str):
    """``fn`` timed as region ``key`` (the region is closed also when ``fn`` raises)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        clock.enter(key)
        try:
            return fn(*args, **kwargs)
        finally:
            clock.leave()

    return wrapper


def time_components(
    model: nn.Module,
    imgsz: int | tuple[int, int] = 640,
    runs: int = 5,
    warmup: int = 2,
    threads: int | None = None,
) -> Timing:
    """CPU time per component of ``model`` as given (pass a fused eval copy to time the deployed model).

    ``warmup`` untimed rounds, then ``runs`` timed rounds; each round runs one forward pass without hooks and one with
    them (alternating which goes first). Batch 1, zeros input, ``torch.inference_mode``; ``threads`` sets
    ``torch.set_num_threads`` for the duration.
    """
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    p = next(model.parameters())
    im = torch.zeros((1, p.shape[1] if p.dim() == 4 else 3, h, w), device=p.device, dtype=p.dtype)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    t = Timing(runs=max(runs, 1), warmup=warmup, threads=torch.get_num_threads())
    per_run: list[dict[str, float]] = []
    gc.collect()
    try:
        with torch.inference_mode():
            for r in range(warmup + t.runs):
                for hooked in (False, True) if r % 2 == 0 else (True, False):
                    clock = _Clock()
                    with instrumented(model, clock) if hooked else contextlib.nullcontext():
                        start = time.perf_counter()
                        model(im)
                        dt = (time.perf_counter() - start) * 1000
                    if r < warmup:
                        continue
                    if hooked:
                        t.hooked_ms.append(dt)
                        per_run.append({k: v * 1000 for k, v in clock.acc.items()})
                    else:
                        t.end_to_end_ms.append(dt)
    finally:
        torch.set_num_threads(before)
    for k in dict.fromkeys(k for run in per_run for k in run):
        t.steps[k] = [run.get(k, 0.0) for run in per_run]
    return t
