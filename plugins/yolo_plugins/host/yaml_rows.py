"""What the hooked parser does to a model YAML's rows before the host's ``parse_model`` sees them (``prepare``).

* ``check_rows``: every row is ``[from, repeats, module, args]`` with a list of args, else a layer error;
* ``check_criterion``: a ``criterion:`` key names a loss the model's head trains with (``rtdetr_loss``);
* ``check_ema``: an ``ema:`` key is a decay, or a decay and a ramp (``ema``);
* ``check_from``: every ``from`` reads earlier layers (or the input, for row 0), else an error listing those it can;
* ``check_names``: unknown module names fail together, each with its layer index and the closest known names;
* ``per_scale_args``: an argument written as ``{n: a, s: b}`` becomes the value for the model's scale;
* ``quote_paths``: string arguments of plugin layers that are not Python literals (paths) stay strings.

Stock YAMLs pass through all three unchanged (the same dict object).
"""

from __future__ import annotations

import ast
from typing import Callable

from .. import registry
from ..errors import LayerError, LayerIndexError, UnknownModuleError
from .ema import check as check_ema
from .fork_yaml import SLOTS, looks_like_fork, translate
from .rtdetr_loss import check as check_criterion


def prepare(d: dict, namespace: dict) -> dict:
    """Check the rows and names of a model dict and resolve its per-scale and path args (stock dicts: same object).

    A fork-style YAML (see ``fork_yaml``) is translated to native rows first, keeping the fork's layer numbering.
    """
    check_rows(d)
    check_criterion(d, namespace)
    check_ema(d)
    if not looks_like_fork(d, namespace):
        check_names(d, namespace)
        check_from(d)
        return quote_paths(per_scale_args(d))
    native, fork = translate(per_scale_args(d))
    if fork is None:  # an unknown backbone factory: number the layers as the fork does (row k >= 1 is layer k + 4)
        check_names(d, namespace, number=lambda k: k + SLOTS - 1 if k else 0, note=FORK_NOTE)
    check_names(native, namespace, note=FORK_NOTE)
    check_from(native)
    return quote_paths(native)


def rows(d: dict) -> list:
    """Backbone and head rows in layer order (how Ultralytics numbers layers)."""
    return list(d.get("backbone") or []) + list(d.get("head") or [])


def check_rows(d: dict) -> None:
    """Every section is a list and every row ``[from, repeats, module, args]`` with a list of args."""
    for part in ("backbone", "head"):
        if not isinstance(d.get(part) or [], list):
            raise ValueError(f"model YAML: '{part}' must be a list of [from, repeats, module, args] rows")
    for i, row in enumerate(rows(d)):
        module = row[2] if isinstance(row, (list, tuple)) and len(row) > 2 and isinstance(row[2], str) else "?"
        if not isinstance(row, (list, tuple)) or len(row) != 4:
            raise LayerError(i, module, f"a row must be [from, repeats, module, args], got {row!r}")
        if not isinstance(row[3], (list, tuple)):
            raise LayerError(i, module, f"args must be a list (e.g. [64, 3, 2]), got {row[3]!r}")
        if not isinstance(row[2], str):
            raise LayerError(i, module, f"the module must be a name such as Conv, got {row[2]!r}")


def check_from(d: dict) -> None:
    """Every ``from`` is an earlier layer (an index, or counted back: -1 the previous one) or a list of those; row 0
    reads the input (-1). Otherwise a layer error naming the value and the layers the row can read."""
    for i, row in enumerate(rows(d)):
        f = row[0]
        for x in f if isinstance(f, list) else [f]:
            if isinstance(x, bool) or not isinstance(x, int):
                raise LayerError(
                    i,
                    row[2],
                    f"from must be a layer index (an int, -1 for the previous layer) or a list of them, got {f!r}",
                )
            j = i + x if x < 0 else x
            if i == 0 and x == -1 or 0 <= j < i:
                continue
            if i == 0:
                reads = "the first row can only read the input image (from -1)"
            else:
                reads = f"this row can read layers 0-{i - 1} (from 0..{i - 1}, or -1..-{i} counted back from it)"
            where = "a later layer or itself" if j >= i else "before layer 0"
            raise LayerIndexError(i, row[2], f"from {x} points to {where} (layer {j}); {reads}")


FORK_NOTE = "this YAML follows the forks' backbone-row convention; layers are numbered as the fork numbers them"


def check_names(d: dict, namespace: dict, number: Callable[[int], int] = int, note: str = "") -> None:
    """Fail on unknown module names, all of them at once, each with its layer index and the closest known names.

    ``number`` maps a row's position to the layer index reported; ``note`` is added to the message.
    """
    unknown = []
    for k, row in enumerate(rows(d)):
        name = row[2]
        if name.startswith(("nn.", "torchvision.ops.")) or name in namespace:  # where globals()[m] would not fail
            continue
        unknown.append((number(k), name))
    if unknown:
        import torch

        known = [k for k, v in namespace.items() if isinstance(v, type) and issubclass(v, torch.nn.Module)]
        candidates = sorted(set(known) | set(registry.entries()))
        raise UnknownModuleError([(i, name, registry.closest(name, candidates)) for i, name in unknown], note)


def per_scale_args(d: dict) -> dict:
    """Resolve per-scale arguments: an arg written as ``{n: m0, s: m1}`` takes the value for the model's scale.

    The scale is the one parse_model will use (``d["scale"]``, else the first of ``scales``). Stock YAMLs have no
    mapping arguments, so they pass through untouched (same dict object).
    """
    numbered = [(part, k, row) for part in ("backbone", "head") for k, row in enumerate(d.get(part) or [])]
    if not any(isinstance(a, dict) for _, _, row in numbered for a in row[3]):
        return d
    scales = d.get("scales") or {}
    scale = d.get("scale") or next(iter(scales), None)
    d = {**d, "backbone": list(d.get("backbone") or []), "head": list(d.get("head") or [])}
    offset = len(d["backbone"])
    for part, k, row in numbered:
        if not any(isinstance(a, dict) for a in row[3]):
            continue
        args = []
        for a in row[3]:
            if isinstance(a, dict):
                if scale not in a:
                    i = k + (offset if part == "head" else 0)
                    raise LayerError(i, str(row[2]), f"per-scale argument {a} has no value for scale {scale!r}")
                a = a[scale]
            args.append(a)
        d[part][k] = [*row[:3], args]
    return d


def quote_paths(d: dict) -> dict:
    """Plugin layers' string args that are not Python literals (``/abs/w.pth``, ``./w.pth``) stay strings.

    The host ``literal_eval``s every string argument and only tolerates ``ValueError``; a path starting with ``/`` or
    ``.`` raises ``SyntaxError`` there. Host layers are left exactly as they are.
    """
    for part in ("backbone", "head"):
        for k, row in enumerate(d.get(part) or []):
            entry = registry.entries().get(row[2]) if isinstance(row[2], str) else None
            if entry is None or entry.source != "yolo-plugins":
                continue
            args = list(row[3])
            for j, a in enumerate(args):
                if isinstance(a, str):
                    try:
                        ast.literal_eval(a)
                    except SyntaxError:
                        args[j] = repr(a)
                    except ValueError:
                        pass
            if args != row[3]:
                d = {**d, part: list(d[part])}
                d[part][k] = [*row[:3], args]
    return d
