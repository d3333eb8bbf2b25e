"""What the hooked parser does to a model YAML's rows before the host's ``parse_model`` sees them.

* ``check_names``: an unknown module name fails with its layer index and the closest known names;
* ``per_scale_args``: an argument written as ``{n: a, s: b}`` becomes the value for the model's scale;
* ``quote_paths``: string arguments of plugin layers that are not Python literals (paths) stay strings.

Stock YAMLs pass through all three unchanged (the same dict object).
"""

from __future__ import annotations

import ast

from . import registry
from .errors import LayerError, UnknownModuleError


def module_names(d: dict) -> list[tuple[int, str]]:
    return [(i, row[2]) for i, row in enumerate(list(d.get("backbone", [])) + list(d.get("head", [])))]


def check_names(d: dict, namespace: dict) -> None:
    """Fail on the first unknown module name with its layer index and the closest known names."""
    for i, name in module_names(d):
        if not isinstance(name, str) or name.startswith(("nn.", "torchvision.ops.")):
            continue
        if name not in namespace:  # exactly where the host's globals()[m] would raise KeyError
            import torch

            known = [k for k, v in namespace.items() if isinstance(v, type) and issubclass(v, torch.nn.Module)]
            raise UnknownModuleError(i, name, registry.closest(name, sorted(set(known) | set(registry.entries()))))


def per_scale_args(d: dict) -> dict:
    """Resolve per-scale arguments: an arg written as ``{n: m0, s: m1}`` takes the value for the model's scale.

    The scale is the one parse_model will use (``d["scale"]``, else the first of ``scales``). Stock YAMLs have no
    mapping arguments, so they pass through untouched (same dict object).
    """
    rows = [(part, k, row) for part in ("backbone", "head") for k, row in enumerate(d.get(part) or [])]
    if not any(isinstance(a, dict) for _, _, row in rows if len(row) > 3 for a in row[3]):
        return d
    scales = d.get("scales") or {}
    scale = d.get("scale") or next(iter(scales), None)
    d = {**d, "backbone": list(d.get("backbone") or []), "head": list(d.get("head") or [])}
    offset = len(d["backbone"])
    for part, k, row in rows:
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
            if entry is None or entry.source != "yolo-plugins" or len(row) < 4:
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
