"""Compute profile of any Ultralytics model, and the RT-DETR computational-redundancy study.

``python -m yolo_plugins.profile model=rtdetr-resnet50.yaml imgsz=640 depth=3 [sweep=all]``
(or ``yolo-plugins profile``).

* :mod:`.counting`: thop counts per module (matching Ultralytics' GFLOPs) plus the project's rules for work thop misses;
* :mod:`.roles`: backbone / encoder / decoder roles derived from the model's structure;
* :mod:`.table`: the hierarchical module table;
* :mod:`.timing`: CPU ms per component (layers, roles, RT-DETR decoder steps) by temporary hooks and wrappers;
* :mod:`.variants`: the study's knobs (decoder layers, queries, CCFF depth, drop S3, encoder width);
* :mod:`.sweep`: counting, timing and validating every variant; :mod:`.report`: Markdown, CSV, JSON and PNG outputs.
"""

from __future__ import annotations

from .counting import Counts, count, ultralytics_gflops
from .sweep import Result, measure, run
from .table import Row, build
from .timing import Timing, time_components
from .variants import KNOBS, Variant, VariantError

__all__ = [
    "KNOBS",
    "Counts",
    "Result",
    "Row",
    "Timing",
    "Variant",
    "VariantError",
    "build",
    "count",
    "measure",
    "run",
    "time_components",
    "ultralytics_gflops",
]
