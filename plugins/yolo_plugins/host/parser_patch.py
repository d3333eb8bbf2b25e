"""The one edit to the host's ``parse_model``: its fall-through deferred and a dispatch call after the channel chain.

``compile_patched`` compiles the host's own ``parse_model`` source again with ``else: c2 = ch[f]`` replaced by
``else: c2 = <dispatch>.FALL_THROUGH`` and one statement added right after the ``if m in base_modules`` chain,
``c2, args, n = <dispatch>(locals())``. ``dispatch`` hands registered classes that fell through to their channel
rule, runs registered checks on host-built layers, computes ``ch[f]`` for every other fall-through (so a list
``from`` fails exactly as before) and returns everything else unchanged. Nothing of upstream's body lives in this
project; if the host's code no longer has the shape expected, or lacks a local the dispatch reads, ``refuse`` says so
with the installed version and the supported range.

Why not a smaller hook (checked against 8.4.0 and 8.4.190, whose ``parse_model`` has the same shape): the host keeps
the channel bookkeeping in locals of this one function (``ch``, ``c2``, and the ``base_modules``/``repeat_modules``
sets built inside each call), and an unknown class falls through to ``c2 = ch[f]`` with its YAML args unchanged. The
only module-level thing it consults is its globals, for names (where activation adds ours). A wrapper sees the dict
before and the built model after, when later rows are already built on wrong input channels; a subclass of a host
block is built as that block; there is no registry of channel rules to add to.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any, Callable

from .. import registry
from ..channels import Layer
from ..errors import LayerError
from .versions import none_to_default, refuse

DISPATCH = "_yolo_plugins_layer"  # the name the patched parse_model calls, added to the host module's globals
FRAME = ("i", "f", "n", "m", "args", "c2", "ch", "width", "max_channels", "d")  # parse_model locals dispatch reads


def _channel_chain(fn: ast.FunctionDef) -> tuple[ast.For, int, ast.If]:
    """Find the layer loop, the position of the ``if m in base_modules: ...`` chain in it and its last ``elif``."""
    loops = [n for n in ast.walk(fn) if isinstance(n, ast.For) and ast.unparse(n.target) == "(i, (f, n, m, args))"]
    if len(loops) != 1:
        raise refuse("parse_model has no single 'for i, (f, n, m, args)' layer loop")
    loop = loops[0]
    for k, stmt in enumerate(loop.body):
        if isinstance(stmt, ast.If) and ast.unparse(stmt.test) == "m in base_modules":
            tail = stmt
            while len(tail.orelse) == 1 and isinstance(tail.orelse[0], ast.If):
                tail = tail.orelse[0]
            if [ast.unparse(s) for s in tail.orelse] != ["c2 = ch[f]"]:
                raise refuse("the channel chain of parse_model no longer ends in 'else: c2 = ch[f]'")
            after = loop.body[k + 1] if k + 1 < len(loop.body) else None
            if after is None or "m(*args)" not in ast.unparse(after):
                raise refuse("parse_model no longer builds the layer as m(*args) right after the channel chain")
            return loop, k, tail
    raise refuse("parse_model has no 'if m in base_modules' channel chain")


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


def compile_patched(tasks) -> tuple[Callable, set[str]]:
    """Compile the host's parse_model with the dispatch statement added after its channel chain."""
    original = tasks.parse_model
    try:
        source = textwrap.dedent(inspect.getsource(original))
        lineno = inspect.getsourcelines(original)[1]
    except (OSError, TypeError) as e:
        raise refuse(f"the source of parse_model is not available ({e})") from None
    tree = ast.parse(source)
    fn = tree.body[0]
    if not isinstance(fn, ast.FunctionDef) or fn.name != "parse_model":
        raise refuse("ultralytics.nn.tasks.parse_model is not a plain function")
    code = original.__code__
    missing = [name for name in FRAME if name not in code.co_varnames + code.co_cellvars]
    if missing:
        raise refuse(
            f"parse_model has no local {', '.join(repr(m) for m in missing)} (the hook reads {', '.join(FRAME)})"
        )
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


def dispatch(frame: dict) -> tuple[Any, list, int]:
    """Called by the patched parse_model for every layer, after the host's channel chain."""
    m, c2, args, n = frame["m"], frame["c2"], frame["args"], frame["n"]
    entry = registry.entry_for(m) if isinstance(m, type) else None
    if c2 is not dispatch.FALL_THROUGH:  # the host's chain built this layer's channels
        if entry is not None and entry.check is not None:
            entry.check(frame)
        _check_channels(frame, c2)
        return c2, none_to_default(m, args), n
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
    return layer.c2, none_to_default(m, layer.args), layer.n


def _check_channels(frame: dict, c2: Any) -> None:
    """A host-built layer whose output channels came out zero or negative fails at its own row, with the value the
    YAML gave (the host would build it and fail at a later row)."""
    if not isinstance(c2, int) or isinstance(c2, bool) or c2 > 0:
        return
    from .yaml_rows import rows

    i = frame["i"]
    row = rows(frame["d"])[i]
    given = row[3][0] if row[3] else None
    how = f" (args[0] is {given!r}" + (f", times the width multiple {frame['width']}" if frame["width"] != 1 else "")
    how = how + ")" if given is not None else ""
    raise LayerError(i, str(row[2]), f"output channels must be a positive number, got {c2}{how}")


dispatch.FALL_THROUGH = object()  # what the deferred fall-through leaves in c2
