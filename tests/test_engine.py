"""The standard engine on a plugin model: ``yolo train/val/predict/export``, ONNX/TorchScript parity, reload, resume.

Every ``yolo`` command runs in a subprocess, as a user runs it, with the network blocked: a ``sitecustomize`` makes
every socket connection and DNS lookup fail, ``YOLO_OFFLINE`` is unset and the Ultralytics config folder is empty (no
cached fonts), so Ultralytics' optional downloads have to degrade quietly for the commands to pass. One tiny training
run (rtdetr-effvit at scale n, 64 px, one epoch on 8 images) is shared by the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_shapes

from yolo_plugins.commands import main_job

MODEL = "rtdetr-effvit-n.yaml"  # cfg/models/rtdetr-effvit.yaml at scale n
IMGSZ = 64
TRAIN = f"epochs=1 imgsz={IMGSZ} batch=4 workers=0 device=cpu seed=0 deterministic=True"
BLOCKED = "yolo-plugins test: network blocked"

SITECUSTOMIZE = f'''
"""Network blocker for the engine tests: every connection attempt or DNS lookup fails."""
import os, socket

def _blocked(*args, **kwargs):
    with open(os.environ["NET_ATTEMPTS"], "a") as f:
        f.write(repr(args[1:] if args and isinstance(args[0], socket.socket) else args)[:200] + "\\n")
    raise OSError({BLOCKED!r})

socket.socket.connect = socket.socket.connect_ex = _blocked
socket.create_connection = socket.getaddrinfo = _blocked
open(os.environ["NET_ATTEMPTS"], "a").close()  # proof that the blocker was installed
'''


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    """Environment of the subprocesses: network blocked, fresh Ultralytics config folder, not offline-flagged."""
    root = tmp_path_factory.mktemp("offline")
    (root / "site").mkdir()
    (root / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    e = {k: v for k, v in os.environ.items() if k not in ("YOLO_OFFLINE", "PYTHONPATH")}
    e.update(
        PYTHONPATH=str(root / "site"),
        NET_ATTEMPTS=str(root / "attempts.log"),
        YOLO_CONFIG_DIR=str(root / "config"),
        OMP_NUM_THREADS="2",
    )
    return e


def run(env: dict, cmd: str | list[str], cwd: Path) -> str:
    """Run a command as a user would; fail the test with its output if it fails. Returns stdout+stderr."""
    attempts = Path(env["NET_ATTEMPTS"])
    attempts.unlink(missing_ok=True)
    args = cmd.split() if isinstance(cmd, str) else cmd
    p = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"{' '.join(args)} failed ({p.returncode}):\n{out[-4000:]}"
    assert attempts.exists(), "the network blocker was not installed in the subprocess"
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A tiny shapes split and its dataset YAML."""
    return tiny_shapes(tmp_path_factory.mktemp("shapes"), imgsz=96)


@pytest.fixture(scope="module")
def trained(env, data, tmp_path_factory) -> tuple[Path, str]:
    """``yolo train`` for one epoch, offline; returns the run folder and the command's output."""
    work = tmp_path_factory.mktemp("work")
    out = run(env, f"yolo train model={MODEL} data={data} {TRAIN} project={work} name=train", work)
    return work / "train", out


def test_network_is_blocked(env, tmp_path):
    code = "import socket; socket.create_connection(('1.1.1.1', 443), timeout=1)"
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode != 0 and BLOCKED in p.stderr


def test_train_cli(trained):
    run_dir, out = trained
    assert (run_dir / "weights" / "best.pt").is_file() and (run_dir / "weights" / "last.pt").is_file()
    rows = (run_dir / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 2 and "metrics/mAP50(B)" in rows[0]  # header + one epoch
    assert "rtdetr-effvit-n summary" in out and "EfficientViT" in out  # the plugin model at scale n was built
    assert "Error" not in out and "Traceback" not in out


def test_val_cli(env, data, trained, tmp_path):
    best = trained[0] / "weights" / "best.pt"
    out = run(env, f"yolo val model={best} data={data} imgsz={IMGSZ} batch=4 device=cpu project={tmp_path}", tmp_path)
    labels = list((data.parent / "labels" / "val").glob("*.txt"))
    instances = sum(len(p.read_text().splitlines()) for p in labels)
    all_row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["all"])
    assert all_row[1:3] == [str(len(labels)), str(instances)]  # images, instances
    assert all(0.0 <= float(v) <= 1.0 for v in all_row[3:7])  # P, R, mAP50, mAP50-95


def test_predict_cli_saves_annotated_images(env, data, trained, tmp_path):
    best = trained[0] / "weights" / "best.pt"
    source = data.parent / "images" / "val"
    cmd = f"yolo predict model={best} source={source} imgsz={IMGSZ} conf=0.01 save=True project={tmp_path}"
    run(env, cmd, tmp_path)
    saved = sorted((tmp_path / "predict").glob("*.jpg"))
    assert [p.name for p in saved] == sorted(p.name for p in source.glob("*.jpg"))
    import cv2

    for p in saved:  # same size as the source image, and drawn on (boxes at conf 0.01)
        a, b = cv2.imread(str(p)), cv2.imread(str(source / p.name))
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() > 100


def test_main_job_trains_validates_and_predicts(env, data, tmp_path):
    """``yolo-plugins main-job`` (the README's first command) with a tiny override: the default model trains, the
    engine validates best.pt, and the first test images are predicted and saved; the summary line says so."""
    out = run(env, f"yolo-plugins main-job data={data} epochs=1 imgsz={IMGSZ} predict=2 project={tmp_path}", tmp_path)
    assert "$ yolo train model=rtdetr-effvit.yaml data=" in out and "rtdetr-effvit summary" in out
    run_dir = tmp_path / "train"
    assert (run_dir / "weights" / "best.pt").is_file() and len((run_dir / "results.csv").read_text().splitlines()) == 2
    tests = sorted(p.name for p in (data.parent / "images" / "test").glob("*.jpg"))[:2]
    assert sorted(p.name for p in (run_dir / "predict").glob("*.jpg")) == tests and len(tests) == 2
    summary = next(line for line in out.splitlines() if line.startswith("main job: "))
    assert "1 epochs in" in summary and f"2 predicted test images in {run_dir / 'predict'}" in summary
    assert "val mAP50 " in summary and "nan" not in summary


def test_main_job_rejects_bad_arguments(env, tmp_path):
    p = subprocess.run(["yolo-plugins", "main-job", "epochs"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2 and "arguments are key=value, got 'epochs'" in p.stderr
    for bad, why in (("threads=0", "threads must be at least 1, got 0"), ("threads=two", "whole number, got 'two'")):
        with pytest.raises(ValueError, match=why):
            main_job.parse([bad])


def test_main_job_sets_its_threads_after_each_device_selection():
    """Ultralytics sets ``cpu_count - 1`` threads when it selects the device (trainer, validator, predictor); the
    main job's callbacks on its model set its own number right after each of those events."""
    args, _, threads = main_job.parse(["threads=3", "epochs=2"])
    assert threads == 3 and args["epochs"] == 2 and main_job.parse([])[2] == main_job.cores()
    model = main_job.model_class(MODEL)(MODEL)
    main_job.use_threads(model, 3)
    before = torch.get_num_threads()
    try:
        for event in ("on_train_start", "on_val_start", "on_predict_start"):
            torch.set_num_threads(1)  # what select_device does on a 2-core machine
            for callback in model.callbacks[event]:
                callback(None)
            assert torch.get_num_threads() == 3, event
    finally:
        torch.set_num_threads(before)


def _torch_model(best: Path) -> torch.nn.Module:
    from ultralytics import YOLO

    return YOLO(str(best)).model.float().eval()


def _input(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(seed))


def _raw(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        y = model(x)
    return y[0] if isinstance(y, (list, tuple)) else y


@pytest.fixture(scope="module")
def onnx_file(env, trained) -> Path:
    best = trained[0] / "weights" / "best.pt"
    run(env, f"yolo export model={best} format=onnx imgsz={IMGSZ} device=cpu", best.parent)
    return best.with_suffix(".onnx")


def assert_same_detections(got: np.ndarray, want: np.ndarray, atol: float) -> None:
    """Equal top-k rows ``[cx, cy, w, h, score, class]`` within ``atol``, whatever the order of near-tied scores."""
    assert got.shape == want.shape
    got, want = got.reshape(-1, 6), want.reshape(-1, 6)
    np.testing.assert_allclose(got[:, 4], want[:, 4], atol=atol, rtol=0)  # both sorted by score
    floor = want[:, 4].min() + atol  # a row at the top-k boundary may be swapped for a near-tied one
    for row in got[got[:, 4] > floor]:
        same = (want[:, 5] == row[5]) & np.all(np.abs(want[:, :5] - row[:5]) <= atol, axis=1)
        assert same.any(), f"no PyTorch detection matches {row}"


def test_onnx_matches_pytorch(trained, onnx_file):
    import onnxruntime as ort

    model = _torch_model(trained[0] / "weights" / "best.pt")
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    for seed in range(2):
        x = _input(seed)
        want = _raw(model, x).numpy()
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        assert want.shape == (1, model.model[-1].num_queries, 6)  # top-k [cx, cy, w, h, score, class]
        assert_same_detections(got, want, atol=1e-3)


def test_onnx_predicts_through_ultralytics(data, trained, onnx_file):
    from ultralytics import YOLO

    image = str(next((data.parent / "images" / "val").glob("*.jpg")))
    kw = dict(imgsz=IMGSZ, conf=0.01, device="cpu", verbose=False)
    exported = YOLO(str(onnx_file))
    assert type(exported).__name__ == "RTDETR"  # routed by the head name in the ONNX metadata
    got = exported.predict(image, **kw)[0].boxes
    want = YOLO(str(trained[0] / "weights" / "best.pt")).predict(image, **kw)[0].boxes
    assert len(got) == len(want) > 0
    assert torch.equal(got.cls, want.cls)
    torch.testing.assert_close(got.xyxy, want.xyxy, atol=0.05, rtol=0)  # pixels
    torch.testing.assert_close(got.conf, want.conf, atol=1e-3, rtol=0)


def test_torchscript_matches_pytorch(env, trained):
    best = trained[0] / "weights" / "best.pt"
    run(env, f"yolo export model={best} format=torchscript imgsz={IMGSZ} device=cpu", best.parent)
    ts = torch.jit.load(str(best.with_suffix(".torchscript")), map_location="cpu")
    model = _torch_model(best)
    x = _input(2)
    assert_same_detections(_raw(ts, x).numpy(), _raw(model, x).numpy(), atol=1e-4)


def test_best_pt_reloads_in_fresh_process(env, trained, tmp_path):
    """No ``import yolo_plugins`` in the script: the start-up hook makes the checkpoint's plugin classes loadable."""
    best = trained[0] / "weights" / "best.pt"
    torch.save(_input(3), tmp_path / "x.pt")
    script = textwrap.dedent(f"""
        import json, sys, torch
        torch.set_num_threads(1)
        from ultralytics import YOLO
        model = YOLO({str(best)!r}).model.float().eval()
        with torch.no_grad():
            y = model(torch.load({str(tmp_path / "x.pt")!r}))
        torch.save(y[0] if isinstance(y, (list, tuple)) else y, {str(tmp_path / "y.pt")!r})
        print(json.dumps(sorted({{type(m).__module__ for m in model.modules()}})))
    """)
    out = run(env, [sys.executable, "-c", script], tmp_path)
    modules = json.loads(out.strip().splitlines()[-1])
    assert any(m.startswith("yolo_plugins.") for m in modules), modules  # the model really holds plugin blocks
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        want = _raw(_torch_model(best), torch.load(tmp_path / "x.pt"))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(torch.load(tmp_path / "y.pt"), want)


RESUME_SCRIPT = """
import sys
import yaml
from ultralytics import RTDETR

def interrupt(trainer):  # after epoch 1 is validated and last.pt saved: stop as a Ctrl-C would
    raise KeyboardInterrupt

model = RTDETR(sys.argv[1])
model.add_callback("on_fit_epoch_end", interrupt)
model.train(**{k: yaml.safe_load(v) for k, v in (a.split("=", 1) for a in sys.argv[2:])})
"""


def test_resume_continues_interrupted_run(env, data, tmp_path):
    args = TRAIN.replace("epochs=1", "epochs=2").split()
    p = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, MODEL, f"data={data}", *args, f"project={tmp_path}", "name=r"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode != 0 and "KeyboardInterrupt" in p.stderr, p.stderr[-3000:]
    last = tmp_path / "r" / "weights" / "last.pt"
    assert len((tmp_path / "r" / "results.csv").read_text().strip().splitlines()) == 2  # header + epoch 1
    out = run(env, f"yolo train resume=True model={last}", tmp_path)
    assert "from epoch 2 to 2 total epochs" in out
    rows = (tmp_path / "r" / "results.csv").read_text().strip().splitlines()
    assert [r.split(",")[0].strip() for r in rows[1:]] == ["1", "2"]
    assert not (tmp_path / "r2").exists()  # continued in place, not a new run
