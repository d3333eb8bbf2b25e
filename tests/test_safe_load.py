"""Ultralytics' restricted (weights_only) checkpoint loading accepts plugin models, and only what they reference."""

from __future__ import annotations

import pytest
import torch
import yaml
from ultralytics.nn import tasks

import yolo_plugins

TINY = """
nc: 2
backbone:
  - [-1, 1, EfficientViT, [m0]]  # 0: timm modules inside
  - [0, 1, Pick, [2]]            # 1: P5
head:
  - [[1], 1, Detect, [nc]]
"""


@pytest.mark.parametrize("backbone", ["EfficientViT, [m0]", "TimmBackbone, [resnet18, [2, 3, 4]]"])
def test_restricted_load_of_a_plugin_checkpoint(tmp_path, backbone):
    torch.manual_seed(0)
    model = tasks.DetectionModel(yaml.safe_load(TINY.replace("EfficientViT, [m0]", backbone)), verbose=False).eval()
    path = tmp_path / "m.pt"
    torch.save({"model": model, "train_args": {}}, path)
    yolo_plugins.deactivate()
    try:  # the stock restricted loader refuses the plugin's classes
        with pytest.raises(TypeError, match="references types outside the supported Ultralytics checkpoint format"):
            tasks.torch_safe_load(str(path), safe_only=True)
    finally:
        yolo_plugins.activate()
    ckpt, _ = tasks.torch_safe_load(str(path), safe_only=True)
    loaded = ckpt["model"].eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], model(x)[0])
    block = type(model.model[0])
    name = f"{block.__module__}.{block.__qualname__}"
    assert name in tasks._SafeLoad._registry
    yolo_plugins.deactivate()
    try:
        assert name not in tasks._SafeLoad._registry
    finally:
        yolo_plugins.activate()
