"""``ema:`` in a model YAML: the weight average Ultralytics' trainer validates and saves, set by the model.

The trainer keeps an exponential moving average of the weights (``ModelEMA``: decay 0.9999 reached through the ramp
``decay * (1 - exp(-updates / tau))``, tau 2000 updates) and validates and saves that average. On a short run of
small batches (a few thousand updates) the ramp never gets far: after 1500 updates the decay is about 0.53, so the
average follows the last few steps and the validated weights jump from epoch to epoch. ``ema: [decay, tau]`` sets
both for the model (``ema: decay`` keeps tau 2000), e.g. ``ema: [0.99, 100]``: an average over about the last 100
updates, from the first few hundred on. ``ModelEMA.__init__`` is wrapped (one row of ``hook.patches``); a model
without the key, and any caller that passes its own decay or tau, get the host's behaviour unchanged. Training only:
the weights' shapes, the checkpoint's format and inference are those of the same YAML without the key. The value is
checked when the model is built (``check``), so a wrong one fails before the first epoch.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from .yaml_numbers import is_number

EXAMPLE = "ema: [0.99, 100]"


def ema_setting(value: Any) -> tuple[float, float | None]:
    """``ema:`` as ``(decay, tau)`` (tau None: the host's); ValueError naming the key and its form otherwise."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    decay, tau = (items + [None])[:2]
    ok = 1 <= len(items) <= 2 and is_number(decay) and 0 <= decay < 1
    if not (ok and (tau is None or is_number(tau) and tau > 0)):
        raise ValueError(
            f"model YAML: ema must be a decay in [0, 1) or [decay, tau] with tau > 0 updates (e.g. {EXAMPLE}), "
            f"got {value!r}"
        )
    return float(decay), None if tau is None else float(tau)


def check(d: dict) -> None:
    """Refuse a model dict's malformed ``ema:`` when the model is built."""
    if d.get("ema") is not None:
        ema_setting(d["ema"])


def wrap_model_ema(original: Callable) -> Callable:
    """``ModelEMA.__init__`` that takes decay and tau from the model's YAML ``ema:`` when the caller leaves them at
    the host's defaults (as the trainer does)."""
    from ultralytics.utils.torch_utils import unwrap_model  # under DDP or torch.compile, the model inside

    defaults = {k: p.default for k, p in inspect.signature(original).parameters.items() if k in ("decay", "tau")}

    @functools.wraps(original)
    def __init__(self, model: Any, *args: Any, **kwargs: Any) -> None:
        value = (getattr(unwrap_model(model), "yaml", None) or {}).get("ema")
        if value is not None and not args and all(kwargs.get(k, v) == v for k, v in defaults.items()):
            decay, tau = ema_setting(value)
            kwargs["decay"] = decay
            if tau is not None:
                kwargs["tau"] = tau
        original(self, model, *args, **kwargs)

    return __init__
