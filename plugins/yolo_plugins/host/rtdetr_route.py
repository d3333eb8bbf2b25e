"""``YOLO("dfine-n.yaml")`` and ``yolo train model=dfine-n.yaml`` build an RT-DETR model when the YAML's head is one.

Ultralytics picks the model class of a YAML by its file name: the ``yolo`` command builds ``RTDETR`` only when the
name contains "rtdetr", and ``YOLO(...)`` guesses the task from the head's name ("detect" in it), so a YAML ending in a
plugin head that subclasses ``RTDETRDecoder`` (``FDRDecoder``: ``dfine-n.yaml``, ``deimv2-n.yaml``) would fail with
"'YOLO' model does not support '_new' mode for 'None' task". ``YOLO.__init__`` is wrapped (one row of
``hook.patches``): for such a YAML it becomes an ``RTDETR`` model the way Ultralytics itself turns a YOLO into its
YOLOWorld/YOLOE/RTDETR model (a new instance whose class and state it takes). Every other model, stock RT-DETR YAMLs
included, is built exactly as before.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

from .. import registry


def plugin_rtdetr_head(model: Any) -> bool:
    """Whether ``model`` is a YAML path whose last row is a plugin head that subclasses ``RTDETRDecoder``."""
    if not isinstance(model, (str, Path)) or Path(model).suffix.lower() not in {".yaml", ".yml"}:
        return False
    from ultralytics.nn.modules.head import RTDETRDecoder
    from ultralytics.nn.tasks import yaml_model_load

    try:
        d = yaml_model_load(model)
        name = d["head"][-1][2]
    except Exception:  # not a readable model YAML: the host's own code reports it
        return False
    entry = registry.entries().get(name) if isinstance(name, str) else None
    return entry is not None and isinstance(entry.cls, type) and issubclass(entry.cls, RTDETRDecoder)


def wrap_yolo_init(original: Callable) -> Callable:
    """``YOLO.__init__`` that builds a YAML with a plugin RT-DETR head as ``RTDETR`` (else the host's own)."""

    @functools.wraps(original)
    def __init__(self, model: Any = "yolo26n.pt", task: str | None = None, verbose: bool = False) -> None:
        if task in (None, "detect") and plugin_rtdetr_head(model):
            from ultralytics import RTDETR

            built = RTDETR(model)
            self.__class__ = type(built)
            self.__dict__ = built.__dict__
            return
        original(self, model, task=task, verbose=verbose)

    return __init__
