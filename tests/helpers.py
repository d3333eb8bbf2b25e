"""Small helpers shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def randomise_bn(module: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine terms, so that folding them is really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def tiny_shapes(root: Path, imgsz: int = 64) -> Path:
    """A tiny generated detection set (8 train, 4 val, 2 test images) under ``root``; returns its data YAML."""
    from yolo_plugins.data.shapes import CLASSES, generate

    root = generate(root, n_train=8, n_val=4, n_test=2, imgsz=imgsz, seed=0)
    names = "".join(f"  {i}: {c}\n" for i, c in enumerate(CLASSES))
    data = root / "tiny.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\ntest: images/test\nnames:\n{names}")
    return data
