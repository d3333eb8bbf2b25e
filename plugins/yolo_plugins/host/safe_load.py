"""Ultralytics' restricted checkpoint loading (``ULTRALYTICS_SAFE_LOAD`` / ``safe_only=True``) for plugin models.

The host unpickles with ``weights_only=True`` against an allow-list of known classes, resolving ``nn.Module``
classes of ``torch.nn`` and ``ultralytics.nn`` on demand. A checkpoint of a plugin model also references the
plugin's block classes and the timm modules inside its backbones; this adds exactly those it references, with the
same rule the host applies to its own modules (an ``nn.Module`` subclass at the pickled path), plus the two plain
data types a timm ``features_only`` model carries (its ``FeatureInfo`` and the ``Format`` enum), and nothing else.

The 8.4 line has three forms of this loader, told apart by what ``ultralytics.nn.tasks`` has (``host_form``):

* ``"none"`` (8.4.0 to 8.4.66): no ``_SafeLoad``; nothing to add (``safe_only=True`` replaces unknown classes).
* ``"scoped"`` (8.4.67 to 8.4.125): ``_SafeLoad._globals``, one ``torch.serialization.safe_globals`` scope per
  load around ``torch_load(file, weights_only=True)``; the plugin wraps that ``torch_load`` and scopes the classes
  the file references the same way (``wrap_torch_load``).
* ``"registry"`` (8.4.126 on): ``_SafeLoad._registry`` under ``_lock``, filled per checkpoint from
  ``loading(weight)`` and registered for the process; the plugin adds its classes to that registry first
  (``wrap_loading``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from typing import Callable

import torch

from .. import registry

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


REGISTRY_MEMBERS = ("_lock", "_registry", "_build", "loading")  # what wrap_loading uses
SCOPED_MEMBERS = ("_globals", "loading")  # the per-load allow-list form (torch_load then is the module's own)


def host_form(tasks) -> str:
    """Which restricted loader ``tasks`` has: ``"none"``, ``"scoped"`` or ``"registry"`` (see the module docstring);
    raises ``HostVersionError`` for a ``_SafeLoad`` of neither known form."""
    from .versions import refuse

    safe = getattr(tasks, "_SafeLoad", None)
    if safe is None:
        return "none"
    if all(hasattr(safe, m) for m in REGISTRY_MEMBERS):
        return "registry"
    if all(hasattr(safe, m) for m in SCOPED_MEMBERS) and callable(tasks.__dict__.get("torch_load")):
        return "scoped"
    missing = [m for m in REGISTRY_MEMBERS if not hasattr(safe, m)]
    raise refuse(
        f"ultralytics.nn.tasks._SafeLoad has no {', '.join(missing)} (nor the per-load form's "
        f"{', '.join(SCOPED_MEMBERS)} and a module-level torch_load)"
    )


def referenced(weight) -> dict[str, type]:
    """The plugin/timm classes (by pickled name) a checkpoint file references that restricted loading must allow."""
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(weight)
    except (ValueError, OSError, AttributeError, RuntimeError):  # not a zip checkpoint, unreadable, or torch < 2.6
        return {}
    packages = _packages()
    found = {name: _resolve(name, packages) for name in needed}
    return {name: obj for name, obj in found.items() if obj is not None}


def wrap_torch_load(original: Callable) -> Callable:
    """``ultralytics.nn.tasks.torch_load`` that, for a ``weights_only=True`` load (the scoped restricted loader),
    also allows the plugin/timm classes the file references, for that load only (as the host scopes its own)."""

    @functools.wraps(original)
    def torch_load(file, *args, **kwargs):
        extra = referenced(file) if kwargs.get("weights_only") is True else {}
        if not extra:
            return original(file, *args, **kwargs)
        with torch.serialization.safe_globals([(obj, name) for name, obj in extra.items()]):
            return original(file, *args, **kwargs)

    return torch_load


def wrap_loading(original: Callable, safe_load: type, added: set[str]) -> Callable:
    """``_SafeLoad.loading`` that first allows the plugin/timm module classes the checkpoint references."""

    @contextlib.contextmanager
    @functools.wraps(original)
    def loading(weight):
        extra = referenced(weight)
        with safe_load._lock:
            if safe_load._registry is None:
                safe_load._registry = safe_load._build()
            for name, obj in extra.items():
                if name not in safe_load._registry:
                    safe_load._registry[name] = obj
                    added.add(name)
        with original(weight):
            yield

    return loading
