"""Activation deferred to first use: what the start-up hook installs when Ultralytics is imported.

``import ultralytics`` does not import its model code (``ultralytics.nn.tasks``), so activating the plugin there
would import it, and the plugin's blocks and parser, for every process that merely imports the package. Instead
``arm()`` puts a trampoline on each host function the activation replaces that can start a use of a model: building
one (``parse_model``, ``yaml_model_load``, ``DetectionModel.__init__``), loading one (``load_checkpoint``,
``BaseModel.load``, ``_SafeLoad.loading``), running or fusing one, or resolving a bare file name (``check_file``).
The trampolines on ``ultralytics.nn.tasks`` are set when that module is first imported, the one on ``YOLO.__init__``
(``rtdetr_route``) when ``ultralytics.models.yolo.model`` is, the one on ``ModelEMA.__init__`` (a trainer's weight
average, ``ema``) when ``ultralytics.utils.torch_utils`` is. The first call of any of
them takes every trampoline out again (also from modules that imported one by name) and runs the full
``hook.activate()``, then makes the call it stood for, now with the plugin active; an explicit ``activate()`` or
``deactivate()`` takes them out first too. A host the plugin cannot hook is refused at that first use, with the same
message as an explicit activation, and the trampolines are set again: every later use in the process is refused with
that same ``HostVersionError`` (never the stock host's missing-file error for a zoo name it cannot see).
"""

from __future__ import annotations

import sys
import threading
import types
from typing import Any, Callable

TASKS = "ultralytics.nn.tasks"
# (owner in ultralytics.nn.tasks, attribute): the hook rows' attributes that start a use; the rest of the table
# (the same functions imported by name into other modules) is reached through these.
TASKS_TRAPS = (
    (None, "parse_model"),
    (None, "yaml_model_load"),
    (None, "load_checkpoint"),
    (None, "initialize_weights"),
    ("DetectionModel", "__init__"),
    ("BaseModel", "_predict_once"),
    ("RTDETRDetectionModel", "predict"),
    ("RTDETRDetectionModel", "loss"),
    ("BaseModel", "load"),
    ("BaseModel", "fuse"),
    ("BaseModel", "is_fused"),
    ("_SafeLoad", "loading"),
    (None, "torch_load"),  # replaced on releases with the per-load restricted loader (safe_load.host_form "scoped")
)
YOLO_MODEL = "ultralytics.models.yolo.model"
YOLO_TRAPS = (("YOLO", "__init__"),)  # YOLO("x.yaml") routes a plugin RT-DETR head before any model code runs
TORCH_UTILS = "ultralytics.utils.torch_utils"
EMA_TRAPS = (("ModelEMA", "__init__"),)  # a trainer's weight average (the YAML's ``ema:``)
MODULE_TRAPS = {TASKS: TASKS_TRAPS, YOLO_MODEL: YOLO_TRAPS, TORCH_UTILS: EMA_TRAPS}

_lock = threading.RLock()
_traps: list[tuple[Any, str, Any]] = []  # (owner, attribute, the host's raw value) for every trampoline set
_trampolines: dict[Any, Any] = {}  # trampoline function -> the host's function it stands for
_armed = False
_when_imported: Callable[[str, Callable[[Any], None]], None] | None = None  # arm()'s callback, kept for re-arming


def is_armed() -> bool:
    """Whether trampolines wait for a first use (the plugin is then not yet active)."""
    return _armed


def _trampoline(owner: Any, attr: str, original: Any) -> Any:
    """A stand-in for ``owner.attr`` that activates the plugin, then calls what ``owner.attr`` is by then."""
    function = original.__func__ if isinstance(original, staticmethod) else original

    def call(*args, **kwargs):
        if _armed:
            _spring()
        return getattr(owner, attr)(*args, **kwargs)

    for name in ("__name__", "__qualname__", "__doc__", "__module__"):
        setattr(call, name, getattr(function, name, None))
    call.__wrapped__ = function
    _trampolines[call] = function
    return staticmethod(call) if isinstance(original, staticmethod) else call


def _trap(owner: Any, attr: str) -> None:
    raw = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
    setattr(owner, attr, _trampoline(owner, attr, raw))
    _traps.append((owner, attr, raw))


def _arm_module(module: Any) -> None:
    """Set the trampolines of ``MODULE_TRAPS`` on a host module (run right after that module is executed)."""
    with _lock:
        if not _armed or any(owner is module for owner, _, _ in _traps):
            return
        for owner_name, attr in MODULE_TRAPS[module.__name__]:
            owner = module if owner_name is None else getattr(module, owner_name, None)
            if owner is not None and (attr in owner.__dict__ if isinstance(owner, type) else hasattr(owner, attr)):
                _trap(owner, attr)  # a host lacking one is refused by the full activation, not here


def arm(when_imported: Callable[[str, Callable[[Any], None]], None]) -> None:
    """Set the trampolines: on ``check_file`` now, on the model code now or, through ``when_imported(name,
    callback)``, when it is imported (nothing when the plugin is already active)."""
    global _armed, _when_imported
    hook = sys.modules.get(f"{__package__}.hook")  # not imported here: it is what first use loads
    _when_imported = when_imported

    with _lock:
        if _armed or (hook is not None and hook.is_active()):
            return
        from ultralytics.utils import checks

        _armed = True
        _trap(checks, "check_file")
        for name in MODULE_TRAPS:
            module = sys.modules.get(name)
            if module is not None:
                _arm_module(module)
            else:
                when_imported(name, _arm_module)


def disarm() -> bool:
    """Take every trampoline out again: the host's own functions back on their owners and in every module that
    imported one by name (a no-op when none is set); the activation then patches those modules like the host's.
    Returns whether trampolines were set."""
    global _armed
    with _lock:
        was, _armed = _armed, False
        for owner, attr, raw in reversed(_traps):
            setattr(owner, attr, raw)
        _traps.clear()
        held = {f.__name__: f for f in _trampolines}
        for module in list(sys.modules.values()):
            names = getattr(module, "__dict__", None)
            for name in held if isinstance(names, dict) else ():
                value = names.get(name)
                if isinstance(value, types.FunctionType) and value in _trampolines:
                    names[name] = _trampolines[value]
        _trampolines.clear()
        return was


def rearm() -> None:
    """Set the trampolines again after a refused activation (with the callback the start-up hook gave ``arm``)."""
    arm(_when_imported or (lambda name, then: None))


def _spring() -> None:
    """The first use: the full activation, which takes the trampolines out first. A refusal propagates to the caller
    with the trampolines set again (``hook.activate``), so the next use is refused the same way."""
    from . import hook

    with _lock:
        if not _armed:
            return
        hook.activate()
