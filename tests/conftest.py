"""Shared test set-up: the plugin is active (as the start-up hook makes it in every process) and runs are offline."""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import yolo_plugins  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _active():
    """Every test runs with the plugin active."""
    yolo_plugins.activate()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """A tiny generated detection set (8 train, 4 val images at <= 64 px) and its data YAML; returns the YAML path."""
    from helpers import tiny_shapes

    return str(tiny_shapes(tmp_path_factory.mktemp("tiny_shapes"), imgsz=64))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module: small convolutions run far faster so on a shared, busy 2-core CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
