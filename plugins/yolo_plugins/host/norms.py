"""``bn_eps`` / ``bn_momentum`` in a model YAML: the BatchNorm settings of a model whose weights come from elsewhere.

Ultralytics' ``initialize_weights`` sets every plain ``nn.BatchNorm2d`` of a new model to eps 1e-3 and momentum 0.03.
Weights trained with other settings need theirs back: the official RT-DETR models use PyTorch's defaults (eps 1e-5,
momentum 0.1), and with eps 1e-3 their outputs are wrong (boxes off by ~0.9 on random weights). A YAML that declares
``bn_eps:`` and/or ``bn_momentum:`` gets them on those BatchNorms right after the host's initialisation; YAMLs
without the keys (every stock YAML) are built exactly as before. The values are stored in the modules, so saved
checkpoints keep them.
"""

from __future__ import annotations

import functools
from typing import Callable

from torch import nn

from .yaml_numbers import is_number

KEYS = ("bn_eps", "bn_momentum")


def bn_settings(d: dict) -> dict[str, float]:
    """The validated ``bn_eps``/``bn_momentum`` of a model dict (``{'eps': ..., 'momentum': ...}``, either optional)."""
    out = {}
    for key in KEYS:
        if d.get(key) is None:
            continue
        value = d[key]
        ok = is_number(value) and 0 < value < 1
        if not ok:
            raise ValueError(f"model YAML: {key} must be a number between 0 and 1 (e.g. 1.0e-5), got {value!r}")
        out[key[3:]] = float(value)
    return out


def apply_bn_settings(model: nn.Module, d: dict) -> int:
    """Set the YAML's BatchNorm settings on every plain ``nn.BatchNorm2d`` of ``model``; returns how many changed."""
    settings = bn_settings(d)
    if not settings:
        return 0
    changed = 0
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:  # the ones the host initialises (timm's subclass keeps its own values)
            for k, v in settings.items():
                setattr(m, k, v)
            changed += 1
    return changed


def wrap_initialize_weights(original: Callable) -> Callable:
    """``initialize_weights`` that applies the model YAML's ``bn_eps``/``bn_momentum`` after the host's settings."""

    @functools.wraps(original)
    def initialize_weights(model):
        result = original(model)
        d = getattr(model, "yaml", None)
        if isinstance(d, dict):
            apply_bn_settings(model, d)
        return result

    return initialize_weights
