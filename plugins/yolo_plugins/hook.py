"""The parser hook: activate/deactivate the plugin inside the installed Ultralytics.

How it works, in one screen:

* Names: registered blocks are added to ``ultralytics.nn.tasks``' globals, which is where ``parse_model`` resolves
  YAML module names. Names the host already defines are never touched.
* Channels: ``parse_model`` decides channels in one ``if/elif`` chain ending in ``else: c2 = ch[f]``. At activation
  the hook compiles the host's own ``parse_model`` with that fall-through deferred (``else: c2 = FALL_THROUGH``) and
  one statement added right after the chain, ``c2, args, n = _yolo_plugins_layer(locals())``. It hands registered
  classes that fell through to their channel rule, runs registered checks on host-built layers, computes ``ch[f]``
  for every other fall-through (so a list ``from`` fails exactly as before) and returns everything else unchanged.
  Nothing of upstream's body lives in this project; if the host's code no longer has the shape the hook expects,
  activation refuses with the installed version and the supported range.
* Errors and per-scale args: a thin wrapper checks every YAML module name first, so an unknown one fails with its
  layer index and the closest known names instead of a bare ``KeyError``; and it resolves arguments written as
  ``{n: a, s: b}`` to the value for the model's scale (stock YAMLs have none and pass through as the same object).
* Fusing, scale letters: ``BaseModel.fuse``/``is_fused`` also fold registered fusable blocks, and ``yaml_model_load``
  resolves ``name-s.yaml`` to ``name.yaml`` at scale ``s`` when only the latter exists.

``deactivate()`` puts every original object back and removes every added name.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
import threading
from typing import Any, Callable

from . import registry
from .channels import Layer
from .errors import HostVersionError, LayerError, PluginError, layer_message
from .user_blocks import import_user_blocks
from .yaml_rows import check_names, per_scale_args, quote_paths

SUPPORTED = ">=8.4,<8.5"
DISPATCH = "_yolo_plugins_layer"
_lock = threading.RLock()
_state: dict[str, Any] | None = None  # set while active: originals to restore and names added


def is_active() -> bool:
    """Whether the hook is installed."""
    return _state is not None


def _host_version() -> str:
    import ultralytics

    return getattr(ultralytics, "__version__", "unknown")


def _refuse(why: str) -> HostVersionError:
    return HostVersionError(
        f"yolo-plugins cannot hook ultralytics {_host_version()} (supported: ultralytics{SUPPORTED}): {why}. "
        "Install a supported Ultralytics (pip install 'ultralytics" + SUPPORTED + "') or set YOLO_PLUGINS_AUTOLOAD=0."
    )


def _version_supported(version: str) -> bool:
    try:
        parts = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return False
    return (8, 4) <= parts < (8, 5)


def _channel_chain(fn: ast.FunctionDef) -> tuple[ast.For, int, ast.If]:
    """Find the layer loop, the position of the ``if m in base_modules: ...`` chain in it and its last ``elif``."""
    loops = [n for n in ast.walk(fn) if isinstance(n, ast.For) and ast.unparse(n.target) == "(i, (f, n, m, args))"]
    if len(loops) != 1:
        raise _refuse("parse_model has no single 'for i, (f, n, m, args)' layer loop")
    loop = loops[0]
    for k, stmt in enumerate(loop.body):
        if isinstance(stmt, ast.If) and ast.unparse(stmt.test) == "m in base_modules":
            tail = stmt
            while len(tail.orelse) == 1 and isinstance(tail.orelse[0], ast.If):
                tail = tail.orelse[0]
            if [ast.unparse(s) for s in tail.orelse] != ["c2 = ch[f]"]:
                raise _refuse("the channel chain of parse_model no longer ends in 'else: c2 = ch[f]'")
            after = loop.body[k + 1] if k + 1 < len(loop.body) else None
            if after is None or "m(*args)" not in ast.unparse(after):
                raise _refuse("parse_model no longer builds the layer as m(*args) right after the channel chain")
            return loop, k, tail
    raise _refuse("parse_model has no 'if m in base_modules' channel chain")


def _chain_names(chain: ast.If, fn: ast.FunctionDef) -> set[str]:
    """Every class name the host's channel chain handles itself (including its frozenset locals)."""
    names = {n.id for test in _tests(chain) for n in ast.walk(test) if isinstance(n, ast.Name)}
    for node in ast.walk(fn):  # base_modules = frozenset({...}) and friends
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in names for t in node.targets):
            names |= {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)}
    return names


def _tests(chain: ast.If):
    node = chain
    while True:
        yield node.test
        if len(node.orelse) == 1 and isinstance(node.orelse[0], ast.If):
            node = node.orelse[0]
        else:
            return


def _compile_patched(tasks) -> tuple[Callable, set[str]]:
    """Compile the host's parse_model with the dispatch statement added after its channel chain."""
    original = tasks.parse_model
    try:
        source = textwrap.dedent(inspect.getsource(original))
        lineno = inspect.getsourcelines(original)[1]
    except (OSError, TypeError) as e:
        raise _refuse(f"the source of parse_model is not available ({e})") from None
    tree = ast.parse(source)
    fn = tree.body[0]
    if not isinstance(fn, ast.FunctionDef) or fn.name != "parse_model":
        raise _refuse("ultralytics.nn.tasks.parse_model is not a plain function")
    loop, k, tail = _channel_chain(fn)
    chain = loop.body[k]
    handled = _chain_names(chain, fn)
    fall = ast.parse(f"c2 = {DISPATCH}.FALL_THROUGH").body[0]
    tail.orelse = [ast.copy_location(fall, tail.orelse[0])]
    call = ast.parse(f"c2, args, n = {DISPATCH}(locals())").body[0]
    ast.copy_location(call, chain)
    loop.body.insert(k + 1, call)
    ast.fix_missing_locations(tree)
    ast.increment_lineno(tree, lineno - 1)
    namespace: dict[str, Any] = {}
    code = compile(tree, inspect.getsourcefile(original) or "<parse_model>", "exec")
    # Executed in the host module's own namespace so that every name resolves exactly as in the original.
    exec(code, tasks.__dict__, namespace)
    patched = namespace["parse_model"]
    patched.__module__ = original.__module__
    return patched, handled


def _layer(frame: dict) -> tuple[Any, list, int]:
    """Called by the patched parse_model for every layer, after the host's channel chain."""
    m, c2, args, n = frame["m"], frame["c2"], frame["args"], frame["n"]
    entry = registry.entry_for(m) if isinstance(m, type) else None
    _building.layer = (frame["i"], entry.name) if entry is not None and entry.source == "yolo-plugins" else None
    if c2 is not _layer.FALL_THROUGH:  # the host's chain built this layer's channels
        if entry is not None and entry.check is not None:
            entry.check(frame)
        return c2, args, n
    if entry is None or entry.rule is None:
        return frame["ch"][frame["f"]], args, n  # the host's own fall-through, unchanged
    layer = Layer(
        index=frame["i"],
        module=m,
        name=entry.name,
        f=frame["f"],
        n=n,
        args=list(args),
        ch=frame["ch"],
        width=frame["width"],
        max_channels=frame["max_channels"],
        scale=frame.get("scale"),
        yaml=frame["d"],
    )
    entry.rule(layer)
    if layer.c2 is None:
        raise LayerError(layer.index, entry.name, f"channel rule {entry.rule!r} did not set the output channels")
    return layer.c2, layer.args, layer.n


_layer.FALL_THROUGH = object()  # what the deferred fall-through leaves in c2
_building = threading.local()  # (index, name) of the plugin block the parser is constructing, else None


def _wrap_parse_model(patched: Callable, original: Callable, namespace: dict) -> Callable:
    @functools.wraps(original)
    def parse_model(d, ch, verbose=True):
        check_names(d, namespace)
        _building.layer = None
        try:
            return patched(quote_paths(per_scale_args(d)), ch, verbose)
        except PluginError:
            raise
        except Exception as e:  # raised while constructing a plugin block: say which layer, keep the type
            where = getattr(_building, "layer", None)
            if where is None:
                raise
            try:
                named = type(e)(layer_message(*where, str(e)))
            except Exception:
                raise e from None
            raise named.with_traceback(e.__traceback__) from e
        finally:
            _building.layer = None

    return parse_model


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


def activate() -> None:
    """Install the hook into the imported Ultralytics (idempotent)."""
    global _state
    with _lock:
        if _state is not None:
            return
        from ultralytics import nn as unn
        from ultralytics.engine import model as emodel
        from ultralytics.nn import tasks

        from . import blocks  # noqa: F401  (registers the built-in blocks)

        import_user_blocks()
        from .fusing import wrap_fuse, wrap_is_fused
        from .safe_load import wrap_loading
        from .scales import wrap_yaml_model_load

        version = _host_version()
        if not _version_supported(version):
            import warnings

            warnings.warn(
                f"ultralytics {version} is outside the tested range {SUPPORTED}; the parser hook applies", stacklevel=2
            )
        patched, handled = _compile_patched(tasks)
        for entry in registry.entries().values():
            if entry.source == "ultralytics" and entry.rule is not None and entry.cls.__name__ in handled:
                raise _refuse(f"the host now builds {entry.name} itself; the plugin's rule for it would conflict")
        originals = {
            (tasks, "parse_model"): tasks.parse_model,
            (unn, "parse_model"): unn.parse_model,
            (tasks, "yaml_model_load"): tasks.yaml_model_load,
            (unn, "yaml_model_load"): unn.yaml_model_load,
            (emodel, "yaml_model_load"): emodel.yaml_model_load,
            (tasks.BaseModel, "fuse"): tasks.BaseModel.__dict__["fuse"],
            (tasks.BaseModel, "is_fused"): tasks.BaseModel.__dict__["is_fused"],
            (tasks._SafeLoad, "loading"): tasks._SafeLoad.__dict__["loading"],
        }
        added: set[str] = set()
        safe_added: set[str] = set()
        try:
            for entry in registry.entries().values():
                _add_name(tasks, added, entry)
            tasks.__dict__[DISPATCH] = _layer
            added.add(DISPATCH)
            wrapped = _wrap_parse_model(patched, tasks.parse_model, tasks.__dict__)
            load = wrap_yaml_model_load(tasks.yaml_model_load)
            for (owner, attr), value in {
                (tasks, "parse_model"): wrapped,
                (unn, "parse_model"): wrapped,
                (tasks, "yaml_model_load"): load,
                (unn, "yaml_model_load"): load,
                (emodel, "yaml_model_load"): load,
                (tasks.BaseModel, "fuse"): wrap_fuse(tasks.BaseModel.__dict__["fuse"]),
                (tasks.BaseModel, "is_fused"): wrap_is_fused(tasks.BaseModel.__dict__["is_fused"]),
                (tasks._SafeLoad, "loading"): staticmethod(
                    wrap_loading(tasks._SafeLoad.loading, tasks._SafeLoad, safe_added)
                ),
            }.items():
                setattr(owner, attr, value)
        except BaseException:
            _restore(originals, added, tasks)
            raise
        listener = functools.partial(_add_name, tasks, added)
        registry._listeners.append(listener)
        _state = {"originals": originals, "added": added, "tasks": tasks, "listener": listener, "safe": safe_added}


def _restore(originals: dict, added: set[str], tasks) -> None:
    for (owner, attr), value in originals.items():
        setattr(owner, attr, value)
    for name in added:
        tasks.__dict__.pop(name, None)


def deactivate() -> None:
    """Return Ultralytics to its stock behaviour: original functions back, added names removed."""
    global _state
    with _lock:
        if _state is None:
            return
        _restore(_state["originals"], _state["added"], _state["tasks"])
        for name in _state["safe"]:  # allow-list entries the plugin added to the host's restricted loader
            (_state["tasks"]._SafeLoad._registry or {}).pop(name, None)
        registry._listeners.remove(_state["listener"])
        _state = None
