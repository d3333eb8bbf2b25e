"""Ultralytics' restricted checkpoint loading (``ULTRALYTICS_SAFE_LOAD`` / ``safe_only=True``) for plugin models.

The host unpickles with ``weights_only=True`` against an allow-list of known classes, resolving ``nn.Module``
classes of ``torch.nn`` and ``ultralytics.nn`` on demand. A checkpoint of a plugin model also references the
plugin's block classes and the timm modules inside its backbones; this adds exactly those it references, with the
same rule the host applies to its own modules (an ``nn.Module`` subclass at the pickled path), plus the two plain
data types a timm ``features_only`` model carries (its ``FeatureInfo`` and the ``Format`` enum), and nothing else.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from typing import Callable

import torch

from . import registry

TRUSTED = ("yolo_plugins", "timm")  # packages whose nn.Module classes a plugin checkpoint may reference
DATA = ("timm.models._features.FeatureInfo", "timm.layers.format.Format")  # non-module types inside timm backbones


def _packages() -> set[str]:
    """This plugin, timm, and the top-level packages of every registered block (a user's own blocks)."""
    return set(TRUSTED) | {e.cls.__module__.split(".")[0] for e in registry.entries().values()}


def _resolve(name: str, packages: set[str]) -> type | None:
    module, _, attr = name.rpartition(".")
    if module.split(".")[0] not in packages:
        return None
    try:
        obj = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None
    if not isinstance(obj, type):
        return None
    return obj if issubclass(obj, torch.nn.Module) or name in DATA else None


def wrap_loading(original: Callable, safe_load: type, added: set[str]) -> Callable:
    """``_SafeLoad.loading`` that first allows the plugin/timm module classes the checkpoint references."""

    @contextlib.contextmanager
    @functools.wraps(original)
    def loading(weight):
        try:
            needed = torch.serialization.get_unsafe_globals_in_checkpoint(weight)
        except ValueError:
            needed = []
        packages = _packages()
        with safe_load._lock:
            if safe_load._registry is None:
                safe_load._registry = safe_load._build()
            for name in needed:
                obj = name not in safe_load._registry and _resolve(name, packages)
                if obj:
                    safe_load._registry[name] = obj
                    added.add(name)
        with original(weight):
            yield

    return loading
