"""Where the plugin's files are: the zoo YAMLs, the data-set YAML and the folders searched for weights.

A wheel ships the zoo inside the package (``yolo_plugins/cfg``); a source checkout (editable install) keeps it at
the top of the checkout. Relative weights paths are looked up in the working directory, then in the folders of
``YOLO_PLUGINS_WEIGHTS`` (``os.pathsep``-separated), then in the checkout's ``weights/`` folder when there is one.
"""

from __future__ import annotations

import os
from pathlib import Path

WEIGHTS_ENV = "YOLO_PLUGINS_WEIGHTS"


def project_root() -> Path:
    """The folder holding cfg/ (and, in a checkout, weights/): the installed package, else the source checkout."""
    here = Path(__file__).resolve().parent
    return here if (here / "cfg").is_dir() else here.parents[1]


def cfg_dir() -> Path:
    """The folder with the zoo's ``models/`` and ``datasets/`` YAMLs."""
    return project_root() / "cfg"


def weights_dirs() -> list[Path]:
    """Folders a relative weights path is looked up in, in order: cwd, ``$YOLO_PLUGINS_WEIGHTS``, checkout weights/."""
    dirs = [Path.cwd()]
    dirs += [Path(p).expanduser() for p in os.environ.get(WEIGHTS_ENV, "").split(os.pathsep) if p.strip()]
    checkout = project_root() / "weights"
    if checkout.is_dir():
        dirs.append(checkout)
    return dirs
