"""Every official release format the plugin converts, behind one call: RT-DETR / RT-DETRv2, D-FINE and DEIM-D-FINE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

FORMATS = "RT-DETR / RT-DETRv2 (lyuwenyu/RT-DETR), D-FINE (Peterande/D-FINE), DEIM-D-FINE (ShihuaHuang95/DEIM)"


def load_official(path: str | Path, family: str | None = None) -> tuple[nn.Module, Any, int, int] | None:
    """``(model, official, loaded, total)`` for an official release file of any supported family, else ``None``.

    ``family`` ("D-FINE" or "DEIM") says which of the two a D-FINE-layout file is (they share every tensor shape);
    without it the file's name and container decide (``official_dfine.family_of``).
    """
    from . import official_dfine, official_rtdetr

    found = official_rtdetr.load_official(path)
    if found is None:
        found = official_dfine.load_official(path, family)
    return found
