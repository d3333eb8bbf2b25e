"""A user's own block, registered through the public API, from YAML to a checkpoint reloaded in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import testonly_blocks
import torch

TESTS = Path(__file__).parent


def run(code: str, **env: str) -> subprocess.CompletedProcess:
    """A fresh interpreter, as a user starts one (the plugin arrives through its start-up hook only)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(TESTS), "YOLO_OFFLINE": "1", **env},
    )


PREDICT = """
import json
from ultralytics import YOLO
r = YOLO({ckpt!r}).predict({img!r}, imgsz=64, conf=0.0, max_det=20, verbose=False)[0]
print(json.dumps({{"xyxy": r.boxes.xyxy.tolist(), "conf": r.boxes.conf.tolist(), "cls": r.boxes.cls.tolist()}}))
"""


def test_user_block_builds_trains_and_reloads_in_fresh_process(tiny_data, tmp_path):
    from ultralytics import YOLO

    cfg = tmp_path / "gate.yaml"
    cfg.write_text(testonly_blocks.TINY_YAML)
    model = YOLO(str(cfg))
    gate = model.model.model[2]
    assert isinstance(gate, testonly_blocks.TestOnlyGate) and gate.dw.in_channels == 32  # 128 * 0.25
    g0 = gate.g.detach().clone()

    model.train(data=tiny_data, epochs=1, imgsz=64, batch=4, workers=0, device="cpu", project=str(tmp_path), name="run")
    ckpt = tmp_path / "run" / "weights" / "last.pt"
    assert ckpt.is_file()
    trained = torch.load(ckpt, weights_only=False)["model"].model[2]
    assert type(trained).__name__ == "TestOnlyGate" and not torch.equal(trained.g.float(), g0)  # it learned

    img = str(next((Path(tiny_data).parent / "images" / "val").glob("*.jpg")))
    r = YOLO(str(ckpt)).predict(img, imgsz=64, conf=0.0, max_det=20, verbose=False)[0]
    here = {"xyxy": r.boxes.xyxy.tolist(), "conf": r.boxes.conf.tolist(), "cls": r.boxes.cls.tolist()}
    fresh = run(PREDICT.format(ckpt=str(ckpt), img=img))  # imports neither plugins nor the block's module
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert len(here["xyxy"]) > 0
    assert json.loads(fresh.stdout.strip().splitlines()[-1]) == here
