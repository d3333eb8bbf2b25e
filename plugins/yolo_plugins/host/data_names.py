"""Bare data-set YAML names of the zoo: ``data=shapes.yaml`` works from any directory, like ``data=coco8.yaml``.

Ultralytics finds a bare ``coco8.yaml`` through ``check_file``, which searches its own ``cfg/``. The hook wraps
``check_file`` so that a name the host cannot find is looked up in the plugin's ``cfg/datasets`` before the host's
``FileNotFoundError`` is raised; names that resolve already are returned exactly as before.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

from ..paths import cfg_dir


def find_dataset(name: str) -> Path | None:
    """The zoo's data-set YAML for a bare file name (``shapes.yaml``), if there is one."""
    p = Path(name)
    if p.parent != Path(".") or p.suffix not in (".yaml", ".yml"):
        return None
    found = cfg_dir() / "datasets" / p.name
    return found if found.is_file() else None


def wrap_check_file(original: Callable) -> Callable:
    """``check_file`` that also finds the zoo's data-set YAMLs by bare name."""

    @functools.wraps(original)
    def check_file(file, *args, **kwargs):
        try:
            result = original(file, *args, **kwargs)
        except FileNotFoundError:
            found = find_dataset(str(file)) if isinstance(file, (str, Path)) else None
            if found is None:
                raise
            return str(found)
        if result == [] and isinstance(file, (str, Path)):  # hard=False: not found
            found = find_dataset(str(file))
            return str(found) if found is not None else result
        return result

    return check_file
