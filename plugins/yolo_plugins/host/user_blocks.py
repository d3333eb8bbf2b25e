"""A user's own block modules: imported at activation so that their blocks reach the plain ``yolo`` command too."""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points


def import_user_blocks() -> list[str]:
    """Import the modules that register a user's own blocks, so they reach the plain ``yolo`` command too.

    Sources: the comma-separated module names in ``YOLO_PLUGINS_IMPORT``, and the ``yolo_plugins`` entry-point group
    of installed packages (``[project.entry-points.yolo_plugins] myblocks = "mypkg.blocks"``).
    """
    names = [n.strip() for n in os.environ.get("YOLO_PLUGINS_IMPORT", "").split(",") if n.strip()]
    names += [ep.value for ep in entry_points(group="yolo_plugins")]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ImportError(
                f"yolo-plugins could not import block module {name!r} (from YOLO_PLUGINS_IMPORT or a 'yolo_plugins' "
                f"entry point): {e}. Check the name and that its folder is on PYTHONPATH."
            ) from e
    return names
