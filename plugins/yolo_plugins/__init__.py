"""yolo-plugins: teach the stock Ultralytics YAML parser new building blocks.

Importing this package is cheap (no torch, no Ultralytics); names below load on first use.

    import yolo_plugins

    @yolo_plugins.register(rule="same")
    class MyBlock(torch.nn.Module): ...

    yolo_plugins.activate()  # done automatically when Ultralytics is imported (YOLO_PLUGINS_AUTOLOAD=0 turns it off)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "register": ("registry", "register"),
    "teach": ("registry", "teach"),
    "unregister": ("registry", "unregister"),
    "activate": ("host.hook", "activate"),
    "deactivate": ("host.hook", "deactivate"),
    "is_active": ("host.hook", "is_active"),
    "Layer": ("channels", "Layer"),
    "FeatureChannels": ("channels", "FeatureChannels"),
    "PluginError": ("errors", "PluginError"),
    "RegistrationError": ("errors", "RegistrationError"),
    "LayerError": ("errors", "LayerError"),
    "UnknownModuleError": ("errors", "UnknownModuleError"),
    "HostVersionError": ("errors", "HostVersionError"),
    "Pick": ("blocks.pick", "Pick"),
    "EfficientViT": ("blocks.efficientvit", "EfficientViT"),
    "TimmBackbone": ("blocks.timm_backbone", "TimmBackbone"),
}

__all__ = [*_LAZY, "registered"]


def registered() -> list[dict[str, str]]:
    """Every block the plugin knows: name, class path, where it comes from, channel rule, fuse support."""
    from . import blocks  # noqa: F401  (registers the built-in blocks)
    from .registry import entries

    return [
        {
            "name": e.name,
            "class": e.path,
            "source": e.source,
            "rule": e.rule_name,
            "fuse": e.fuse,
        }
        for e in sorted(entries().values(), key=lambda e: e.name)
    ]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'yolo_plugins' has no attribute {name!r}")
