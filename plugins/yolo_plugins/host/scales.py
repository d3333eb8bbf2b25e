"""Scale letters for plugin YAMLs: ``name-s.yaml`` means ``name.yaml`` at scale ``s``.

Ultralytics only guesses scales from ``yolo*`` names. For any other model YAML the hook resolves a missing
``<base>-<letter>.yaml`` to an existing ``<base>.yaml`` whose ``scales`` has that letter, and a YAML that declares
``default_scale:`` gets that scale when no letter is given, without the host's "no model scale passed" warning.
Names that resolve already are loaded exactly as before.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Callable

from ..paths import cfg_dir

_LETTER = re.compile(r"^(?P<base>.+)-(?P<scale>[a-z])$")


def plugin_cfg_dirs() -> list[Path]:
    """Folders searched for bare plugin YAML names: the project's cfg/models."""
    return [cfg_dir() / "models"]


def _find(path: Path) -> Path | None:
    if path.is_file():
        return path
    if path.parent == Path("."):
        for folder in plugin_cfg_dirs():
            if (folder / path.name).is_file():
                return folder / path.name
    return None


def _resolve(path: Path) -> tuple[Path | None, str | None]:
    """A YAML the host could not find: a bare plugin name, or ``<base>-<letter>`` with an existing base."""
    found = _find(path)
    if found is not None or path.suffix not in (".yaml", ".yml"):
        return found, None
    match = _LETTER.match(path.stem)
    base = _find(path.with_name(match["base"] + path.suffix)) if match else None
    return (base, match["scale"]) if base is not None else (None, None)


def wrap_yaml_model_load(original: Callable) -> Callable:
    """``yaml_model_load`` that understands scale letters and ``default_scale`` for non-``yolo`` names."""

    @functools.wraps(original)
    def yaml_model_load(path):
        try:
            d = original(path)  # the host's own resolution first: names that resolve load exactly as before
        except FileNotFoundError:
            found, letter = _resolve(Path(path))
            if found is None:
                raise
            d = original(found)
            if letter is not None:
                if letter not in (d.get("scales") or {}):
                    raise FileNotFoundError(
                        f"'{path}' does not exist and {found} has no scale '{letter}' "
                        f"(its scales: {', '.join(d.get('scales') or {}) or 'none'})"
                    ) from None
                d["scale"], d["yaml_file"] = letter, str(path)
        if not d.get("scale") and d.get("default_scale"):
            d["scale"] = d["default_scale"]
        return d

    return yaml_model_load
