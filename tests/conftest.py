"""Shared test set-up: the plugin is active (as the start-up hook makes it in every process) and runs are offline."""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import plugins  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _active():
    """Every test runs with the plugin active."""
    plugins.activate()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """A tiny generated detection set (8 train, 4 val images at <= 64 px) and its data YAML; returns the YAML path."""
    from plugins.data.shapes import CLASSES, generate

    root = generate(tmp_path_factory.mktemp("tiny_shapes"), n_train=8, n_val=4, n_test=2, imgsz=64, seed=0)
    names = "\n".join(f"  {i}: {c}" for i, c in enumerate(CLASSES))
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\ntest: images/test\nnames:\n{names}\n")
    return str(data)
