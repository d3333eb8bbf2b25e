"""``yolo-plugins convert fork.yaml [-o native.yaml]``: write a fork-style model YAML as a native one.

The fork's backbone row becomes our block plus four ``Pick`` rows (see ``fork_yaml``); every other line of the file,
comments included, is kept as written, because the native YAML numbers its layers exactly as the fork did. The
result is checked: it parses to the rows the on-the-fly translation builds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from ..host.fork_yaml import SLOTS, ForkBackbone, looks_like_fork, translate

_BARE = re.compile(r"^[A-Za-z_][\w.\-/]*$")
_YAML_WORDS = {"null", "none", "true", "false", "yes", "no", "on", "off", "y", "n", "~"}


def _flow(value) -> str:
    """A YAML flow-style rendering of a row value (lists, ints, floats, bools, None and strings)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, str):
        return value if _BARE.match(value) and value.lower() not in _YAML_WORDS else json.dumps(value)
    return "None" if value is None else str(value)


def _comment(fork: ForkBackbone, j: int) -> str:
    k = fork.slot(j)
    if k is None:
        return f"{j}: empty slot of the fork's padded backbone (a copy of P3, never read)"
    return f"{j}: P{fork.strides[k].bit_length() - 1}/{fork.strides[k]}"


def _row_on(line: str) -> list | None:
    """The row a ``- [from, n, module, args]`` line holds, if it holds one whole row."""
    try:
        value = yaml.safe_load(line.strip())
    except yaml.YAMLError:
        return None
    return value[0] if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list) else None


def native_lines(fork: ForkBackbone, indent: str) -> list[str]:
    """The five native rows that replace the fork's backbone row, with comments."""
    outs = ", ".join(f"/{s}" for s in fork.strides)
    lines = [
        f"{indent}- {_flow(fork.row)} # 0: {fork.row[2]}, {fork.outputs} maps at strides {outs} (was {fork.fork_name})"
    ]
    lines += [f"{indent}- {_flow(row)} # {_comment(fork, j)}" for j, row in enumerate(fork.rows()[1:], start=1)]
    return lines


def convert_text(text: str, namespace: dict, source: str = "fork.yaml") -> tuple[str, list[str]]:
    """The native YAML text for a fork-style YAML ``text``, and a list of what changed."""
    d = yaml.safe_load(text)
    if not isinstance(d, dict) or not looks_like_fork(d, namespace):
        raise ValueError(f"{source}: not a fork-style YAML (its row 0 is not a fork backbone such as EfficientViT_M0)")
    native, fork = translate(d)
    if fork is None:
        name = d["backbone"][0][2]
        raise ValueError(f"{source}: row 0 '{name}' is neither an EfficientViT_M* name nor a timm model name")
    lines = text.splitlines()
    start = next((k for k, line in enumerate(lines) if re.match(r"^backbone\s*:", line)), None)
    row0 = next((k for k in range(start + 1, len(lines)) if re.match(r"^\s*-\s*\[", lines[k])), None) if start else None
    indent = re.match(r"^(\s*)", lines[row0])[1] if row0 is not None else "  "
    header = [f"# Converted from {source} by yolo-plugins convert: the fork's backbone row became native rows 0-4."]
    if row0 is not None and _row_on(lines[row0]) == list(d["backbone"][0]):
        out = header + lines[:row0] + native_lines(fork, indent) + lines[row0 + 1 :]
        result = "\n".join(out) + "\n"
    else:  # the backbone row is not on one line of its own: write the YAML anew (comments are lost)
        result = "\n".join(header) + "\n" + yaml.safe_dump(native, sort_keys=False, default_flow_style=None)
    if yaml.safe_load(result)["backbone"] != native["backbone"]:
        raise RuntimeError(f"{source}: the converted text does not parse to the translated rows; please report this")
    changes = [
        f"row 0: [-1, 1, {fork.fork_name}, {_flow(list(d['backbone'][0][3]))}] -> {_flow(fork.row)}",
        *(
            f"row {j}: added {_flow(row)}  ({_comment(fork, j).split(': ', 1)[1]})"
            for j, row in enumerate(fork.rows()[1:], 1)
        ),
        f"rows {SLOTS}+: unchanged (the native YAML numbers its layers as the fork does)",
    ]
    return result, changes


def convert_file(path: str | Path, out: str | Path | None = None) -> tuple[Path, list[str]]:
    """Convert the fork-style YAML at ``path``; writes ``out`` (default ``<name>-native.yaml`` beside it)."""
    from ultralytics.nn import tasks

    from ..host.hook import activate

    activate()
    path = Path(path)
    text = path.read_text()
    namespace = tasks.__dict__  # once active, the host's globals hold every registered name too
    result, changes = convert_text(text, namespace, path.name)
    target = Path(out) if out else path.with_name(f"{path.stem}-native{path.suffix}")
    target.write_text(result)
    return target, changes
