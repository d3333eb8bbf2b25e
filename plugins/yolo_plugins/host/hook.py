"""Activation: install the plugin into the imported Ultralytics, and take it out again.

Everything the plugin changes in the host is one row of ``patches()``: the owner, the attribute, the host's original
and the replacement, side by side. ``activate()`` checks the host first (version, the shape of ``parse_model`` and
the locals the dispatch reads, which form of restricted loading ``safe_load`` meets) and refuses with the version
message before anything is patched; then it applies every row and adds the registered names to
``ultralytics.nn.tasks``' globals (where ``parse_model`` resolves YAML module names; host names are never touched).
The range and the refusal message live in ``versions``; a refusal while the start-up hook's first-use trampolines were
set sets them again (``first_use``), so every later model use in the process is refused with the same message.
Registrations and ``unregister()`` made while active reach the host at once. ``deactivate()`` puts every original
back and removes every added name.

What the replacements do lives in their own files: ``parser_patch`` (channels), ``yaml_rows`` (row checks, unknown
names, per-scale and path args), ``layer_errors`` (every build error names its row), ``scales`` (scale letters),
``data_names`` (bare data-set names), ``norms`` (the YAML's BatchNorm settings), ``rtdetr_loss`` (the YAML's
``criterion:``), ``ema`` (the YAML's ``ema:``), ``rtdetr_route`` (YAMLs with a plugin RT-DETR head build as RTDETR),
``fusing`` and ``safe_load``.
"""

from __future__ import annotations

import functools
import sys
import threading
from dataclasses import dataclass
from typing import Any

from .. import registry
from ..errors import HostVersionError
from . import versions
from .parser_patch import DISPATCH, compile_patched, dispatch, refuse
from .user_blocks import import_user_blocks

# Patched functions that modules import by name (``from ultralytics.nn.tasks import load_checkpoint``): any module
# holding the host's function under that name at activation gets a row too, and any module holding the replacement
# at deactivation (it imported it while active) gets the host's function back.
BY_NAME = ("check_file", "load_checkpoint", "parse_model", "yaml_model_load")
_lock = threading.RLock()
_state: dict[str, Any] | None = None  # set while active: the patches applied and the names added


@dataclass(frozen=True)
class Patch:
    """One attribute of the host the plugin replaces while active."""

    owner: Any
    attr: str
    original: Any  # as stored on the owner (a class's raw __dict__ entry, e.g. a staticmethod)
    replacement: Any

    def apply(self) -> None:
        setattr(self.owner, self.attr, self.replacement)

    def restore(self) -> None:
        setattr(self.owner, self.attr, self.original)


def is_active() -> bool:
    """Whether the hook is installed."""
    return _state is not None


def _raw(owner: Any, attr: str) -> Any:
    return owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)


def patches(tasks, safe_added: set[str]) -> list[Patch]:
    """The table of everything activation replaces (checks the host and compiles the patched parser)."""
    from ultralytics import nn as unn
    from ultralytics.engine import model as emodel
    from ultralytics.models.yolo import model as ymodel
    from ultralytics.utils import checks, torch_utils

    from ..weights.loading import wrap_load_checkpoint, wrap_model_load
    from .data_names import wrap_check_file
    from .ema import wrap_model_ema
    from .fusing import wrap_fuse, wrap_is_fused
    from .layer_errors import wrap_forward, wrap_model_init, wrap_parse_model
    from .norms import wrap_initialize_weights
    from .rtdetr_loss import wrap_rtdetr_loss
    from .rtdetr_route import wrap_yolo_init
    from .safe_load import host_form, wrap_loading, wrap_torch_load
    from .scales import wrap_yaml_model_load
    from .yaml_rows import prepare

    safe = getattr(tasks, "_SafeLoad", None)
    form = host_form(tasks)  # which restricted loader this release has (refuses an unknown one)
    patched, handled = compile_patched(tasks)
    for entry in registry.entries().values():
        if entry.source == "ultralytics" and entry.rule is not None and entry.cls.__name__ in handled:
            raise refuse(f"the host now builds {entry.name} itself; the plugin's rule for it would conflict")
    predict_once = tasks.BaseModel._predict_once.__code__  # the frame whose `m` is the layer a forward is in
    parse = wrap_parse_model(patched, tasks.parse_model, lambda d: prepare(d, tasks.__dict__))
    load = wrap_yaml_model_load(tasks.yaml_model_load)
    check_file = wrap_check_file(checks.check_file)
    load_ckpt = wrap_load_checkpoint(tasks.load_checkpoint)
    rows = [
        (tasks, "parse_model", parse),
        (unn, "parse_model", parse),
        (tasks, "yaml_model_load", load),
        (unn, "yaml_model_load", load),
        (emodel, "yaml_model_load", load),
        (tasks.DetectionModel, "__init__", wrap_model_init(tasks.DetectionModel.__init__, predict_once)),
        (tasks.BaseModel, "_predict_once", wrap_forward(tasks.BaseModel.__dict__["_predict_once"])),
        (tasks.RTDETRDetectionModel, "predict", wrap_forward(tasks.RTDETRDetectionModel.__dict__["predict"])),
        (tasks.RTDETRDetectionModel, "loss", wrap_rtdetr_loss(tasks.RTDETRDetectionModel.__dict__["loss"])),
        (ymodel.YOLO, "__init__", wrap_yolo_init(ymodel.YOLO.__dict__["__init__"])),
        (torch_utils.ModelEMA, "__init__", wrap_model_ema(torch_utils.ModelEMA.__dict__["__init__"])),
        (tasks, "initialize_weights", wrap_initialize_weights(tasks.initialize_weights)),
        (tasks, "load_checkpoint", load_ckpt),
        (unn, "load_checkpoint", load_ckpt),
        (emodel, "load_checkpoint", load_ckpt),
        (tasks.BaseModel, "load", wrap_model_load(tasks.BaseModel.__dict__["load"])),
        (tasks.BaseModel, "fuse", wrap_fuse(tasks.BaseModel.__dict__["fuse"])),
        (tasks.BaseModel, "is_fused", wrap_is_fused(tasks.BaseModel.__dict__["is_fused"])),
        (checks, "check_file", check_file),
    ]
    if form == "registry":
        rows.append((safe, "loading", staticmethod(wrap_loading(safe.loading, safe, safe_added))))
    elif form == "scoped":
        rows.append((tasks, "torch_load", wrap_torch_load(tasks.torch_load)))
    by_name = {"check_file": check_file, "load_checkpoint": load_ckpt, "parse_model": parse, "yaml_model_load": load}
    host = {"check_file": checks.check_file, **{a: getattr(tasks, a) for a in BY_NAME if a != "check_file"}}
    listed = {(id(owner), attr) for owner, attr, _ in rows}
    for module in list(sys.modules.values()):  # modules that imported a function by name before activation
        names = getattr(module, "__dict__", None)
        for attr in BY_NAME if isinstance(names, dict) else ():
            if names.get(attr) is host[attr] and (id(module), attr) not in listed:
                rows.append((module, attr, by_name[attr]))
    return [Patch(owner, attr, _raw(owner, attr), new) for owner, attr, new in rows]


def _add_name(tasks, added: set[str], entry: registry.Entry) -> None:
    current = tasks.__dict__.get(entry.name)
    if current is entry.cls:
        return
    if entry.name in tasks.__dict__ and entry.name not in added:
        raise registry.RegistrationError(
            f"cannot use {entry.name!r} ({entry.path}): Ultralytics already defines {entry.name!r} "
            f"({getattr(current, '__module__', '?')}); the plugin never shadows host names, register it under another"
        )
    tasks.__dict__[entry.name] = entry.cls
    added.add(entry.name)


def _on_registry(tasks, added: set[str], entry: registry.Entry, present: bool) -> None:
    """Keep the host's names in step with the registry: a new entry is added, an unregistered one removed."""
    if present:
        _add_name(tasks, added, entry)
    elif entry.name in added and tasks.__dict__.get(entry.name) is entry.cls:
        del tasks.__dict__[entry.name]
        added.discard(entry.name)


def _disarm_first_use() -> bool:
    """Take out the trampolines the start-up hook set (``first_use``), if it set any, before (de)activating; returns
    whether it had set them."""
    first_use = sys.modules.get(f"{__package__}.first_use")  # looked up, not imported: it imports this module
    return first_use is not None and first_use.disarm()


def activate() -> None:
    """Install the hook into the imported Ultralytics (idempotent)."""
    global _state
    from ultralytics.nn import tasks  # importing Ultralytics here may run the start-up hook, which arms first_use

    armed = _disarm_first_use()
    with _lock:
        if _state is not None:
            return
        safe_added: set[str] = set()
        try:
            versions.check_range()  # first: the blocks import host modules an older release may lack
            from .. import blocks  # noqa: F401  (registers the built-in blocks)

            import_user_blocks()
            table = patches(tasks, safe_added)  # may refuse: nothing is patched yet
        except HostVersionError:
            if armed:  # the start-up hook's trampolines go back: every later use is refused the same way
                sys.modules[f"{__package__}.first_use"].rearm()
            raise
        versions.warn_if_newer(stacklevel=3)
        added: set[str] = set()
        try:
            for entry in registry.entries().values():
                _add_name(tasks, added, entry)
            tasks.__dict__[DISPATCH] = dispatch
            added.add(DISPATCH)
            for patch in table:
                patch.apply()
        except BaseException:
            _restore(table, added, tasks)
            raise
        listener = functools.partial(_on_registry, tasks, added)
        registry._listeners.append(listener)
        _state = {"patches": table, "added": added, "tasks": tasks, "listener": listener, "safe": safe_added}


def _restore(table: list[Patch], added: set[str], tasks) -> None:
    for patch in table:
        patch.restore()
    replaced = {id(p.replacement): p for p in table if p.attr in BY_NAME}
    for module in list(sys.modules.values()):  # imported while active: the module holds our replacement
        names = getattr(module, "__dict__", None)
        for attr in BY_NAME if isinstance(names, dict) else ():
            patch = replaced.get(id(names.get(attr)))
            if patch is not None and patch.attr == attr:
                names[attr] = patch.original
    for name in added:
        tasks.__dict__.pop(name, None)


def _forget_safe_globals(names: set[str]) -> None:
    """Take the plugin's classes out of torch's process-wide ``weights_only`` allow-list again: the host registers
    what a restricted load needed with ``add_safe_globals`` for the life of the process."""
    import torch.serialization as ts

    def qualname(g) -> str:
        obj = g[0] if isinstance(g, tuple) else g
        return g[1] if isinstance(g, tuple) else f"{obj.__module__}.{obj.__qualname__}"

    current = ts.get_safe_globals()
    keep = [g for g in current if qualname(g) not in names]
    if len(keep) != len(current):
        ts.clear_safe_globals()
        ts.add_safe_globals(keep)


def deactivate() -> None:
    """Return Ultralytics to its stock behaviour: original functions back, added names removed."""
    global _state
    _disarm_first_use()
    with _lock:
        if _state is None:
            return
        _restore(_state["patches"], _state["added"], _state["tasks"])
        safe = getattr(_state["tasks"], "_SafeLoad", None)
        for name in _state["safe"]:  # allow-list entries the plugin added to the host's restricted loader
            (getattr(safe, "_registry", None) or {}).pop(name, None)
        _forget_safe_globals(_state["safe"])
        registry._listeners.remove(_state["listener"])
        _state = None
