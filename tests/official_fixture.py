"""The compact fixture of official RT-DETR models: key lists, a seeded rule for the values, the official outputs.

``fixtures/official_rtdetr/make_fixture.py`` builds official models from the official source, fills every tensor by
``seeded_value`` (the rule below, so the test can rebuild the same tensors without the official code), runs them on
``fixture_image`` in float64 and stores, per model, ``<name>.json`` (release layout keys with shapes, the settings) and
``<name>.npz`` (the model's raw outputs and the official post-processor's top-k). The tests rebuild the release-layout
state dict from the key list and compare the converted model with the stored outputs.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).parent / "fixtures" / "official_rtdetr"
FIXTURES_DFINE = Path(__file__).parent / "fixtures" / "official_dfine"  # D-FINE / DEIM-D-FINE, same scheme
SETTINGS = {"up": 0.5, "reg_scale": 4.0}  # D-FINE constants the fixture keeps at their configured values
IMAGE_SEED = 0
IMGSZ = 640


def seeded_value(key: str, shape: list[int], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The tensor the fixture uses for ``key``: seeded by the key's CRC-32, scaled so activations stay moderate.

    BatchNorm statistics are sensible (variance in [0.5, 1.5]), 1-D weights (norm scales) near 1, biases small,
    every other weight normal with standard deviation 1/sqrt(fan-in).
    """
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    last = key.rsplit(".", 1)[-1]
    if last == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.int64)
    if last == "running_var":
        return 0.5 + torch.rand(shape, generator=g, dtype=dtype)
    if last == "running_mean":
        return 0.1 * torch.randn(shape, generator=g, dtype=dtype)
    if len(shape) <= 1:
        base = 1.0 if last == "weight" else 0.0
        return base + 0.1 * torch.randn(shape, generator=g, dtype=dtype)
    return torch.randn(shape, generator=g, dtype=dtype) / math.sqrt(math.prod(shape[1:]))


def fixture_image() -> np.ndarray:
    """The fixed 640x640 BGR uint8 input (what ``cv2.imread`` would give; the model sees it as RGB / 255)."""
    return np.random.default_rng(IMAGE_SEED).integers(0, 256, (IMGSZ, IMGSZ, 3), dtype=np.uint8)


def image_tensor(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``fixture_image`` as the model input: RGB, CHW, scaled to [0, 1], batch of one."""
    rgb = np.ascontiguousarray(fixture_image()[..., ::-1])
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].to(dtype) / 255


def names() -> list[str]:
    """The models stored in the fixture."""
    return sorted(p.stem for p in FIXTURES.glob("*.json"))


def load(name: str, folder: Path = FIXTURES) -> tuple[dict, dict[str, np.ndarray]]:
    """``(meta, outputs)`` of one stored model; ``meta['keys']`` is ``[[key, shape], ...]`` in release order."""
    meta = json.loads((folder / f"{name}.json").read_text())
    with np.load(folder / f"{name}.npz", allow_pickle=False) as z:
        outputs = {k: z[k] for k in z.files}
    return meta, outputs


def release_state_dict(meta: dict, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The release-layout state dict the fixture describes, every tensor from ``seeded_value``."""
    sd = {}
    for key, shape in meta["keys"]:
        last = key.rsplit(".", 1)[-1]
        v = torch.full(shape, SETTINGS[last], dtype=torch.float64) if last in SETTINGS else seeded_value(key, shape)
        sd[key] = v if v.dtype == torch.int64 else v.to(dtype)
    return sd
