"""The plugin's promise on one Ultralytics release, in a few minutes: what CI's compatibility run proves on the oldest
release declared (``.ci/run``; the full suite proves the newest), and what the main suite checks on the installed one.

Every zoo YAML builds by its bare name and runs a forward; the default model (and a YOLOv10 zoo model) trains one
tiny epoch, validates and reloads; an official RT-DETR release file converts and computes the official outputs; a
fresh interpreter gets the plugin from the start-up hook, without a version warning on a tested release.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import official_fixture as fx
import pytest
import torch
import ultralytics
import yaml
from ultralytics import RTDETR, YOLO

from yolo_plugins.host import versions

CFG = Path(__file__).resolve().parents[1] / "cfg" / "models"
ZOO = sorted(p.name for p in CFG.glob("*.yaml"))


def test_the_zoo_is_complete():
    assert len(ZOO) >= 12 and "rtdetr-effvit.yaml" in ZOO


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_yaml_builds_and_runs(name, one_thread):
    """Built by its bare name, as a user names it, through the stock model class; one forward at 128 px, or 320 px
    for the 300-query models on strides 16 and 32 (8.4.0's RT-DETR decoder needs at least as many encoder tokens as
    queries)."""
    from yolo_plugins.commands.main_job import is_rtdetr_head

    d = yaml.safe_load((CFG / name).read_text())
    model = (RTDETR if is_rtdetr_head(d["head"][-1][2]) else YOLO)(name)
    net = model.model.eval()
    imgsz = 320 if name.startswith(("dfine", "deim")) else 128
    with torch.no_grad():
        y = net(torch.rand(1, 3, imgsz, imgsz))
    out = y[0] if isinstance(y, (list, tuple)) else y
    assert torch.isfinite(out if isinstance(out, torch.Tensor) else out["one2one"][0]).all()


def test_peak_decoder_builds_and_reads_the_stock_heads_weights(tmp_path, one_thread):
    """``PeakDecoder`` (a plugin subclass keeping RTDETRDecoder's constructor, so the YAML's act=None must become the
    host's default where the host takes None literally) builds on this host with the stock head's parameter names and,
    with its weights, gives the stock head's detections on an input too small for the peak selection to apply."""
    from test_peak_queries import _pair, _peaks, _selection

    stock, peak = _pair(tmp_path)
    small = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    _, raw, shapes = _selection(peak, small)
    assert _peaks(raw, shapes).sum() < peak.model[-1].num_queries  # the fallback is what runs here
    with torch.no_grad():
        assert torch.equal(stock.eval()(small)[0], peak.eval()(small)[0])
        assert torch.isfinite(peak(torch.rand(1, 3, 224, 224))[0]).all()


@pytest.mark.parametrize("name", ["rtdetr-effvit.yaml", "yolov10-effvit.yaml", "dfine-effvit.yaml", "o2m"])
def test_model_trains_an_epoch_validates_and_reloads(name, tiny_data, tmp_path):
    """The default model, the zoo's YOLOv10 head (the host's other loss path), the D-FINE head (its own criterion,
    reported in whichever loss columns the host's trainer has) and the default with ``o2m:`` and ``hybrid:`` (their
    terms added to the loss, logged where the host's trainer takes names): one epoch on the generated shapes set,
    validation by the engine, best.pt reloads and validates."""
    if name == "o2m":
        name = str(tmp_path / "rtdetr-effvit-o2m.yaml")
        Path(name).write_text("o2m: 1.0\nhybrid: 1.0\n" + (CFG / "rtdetr-effvit.yaml").read_text())
    cls = YOLO if name.startswith("yolov10") else RTDETR
    model = cls(name)
    model.train(
        data=tiny_data,
        epochs=1,
        imgsz=64,
        batch=4,
        workers=0,
        device="cpu",
        project=str(tmp_path),
        name="train",
        plots=False,
        amp=False,
        verbose=False,
    )
    best = tmp_path / "train" / "weights" / "best.pt"
    assert best.is_file()
    metrics = cls(str(best)).val(data=tiny_data, imgsz=64, batch=4, workers=0, device="cpu", plots=False)
    assert 0.0 <= metrics.box.map50 <= 1.0


def test_official_checkpoint_imports(tmp_path):
    """An official RT-DETR-R18 release file loads into the zoo YAML and converts with import-weights; both compute
    the official model's outputs."""
    meta, out = fx.load("rtdetr_r18vd")
    sd = fx.release_state_dict(meta)
    src = tmp_path / "rtdetr_r18vd_dec3_6x_coco_from_paddle.pth"
    torch.save({"ema": {"module": sd}}, src)
    dst = tmp_path / "rtdetr-r18vd-coco.pt"
    run = subprocess.run(
        [sys.executable, "-m", "yolo_plugins.commands.cli", "import-weights", str(src), "-o", str(dst)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert f"loaded {len(sd)}/{len(sd)} tensors" in run.stdout
    want = torch.from_numpy(out["logits"]).double()
    for model in (RTDETR("rtdetr-r18vd.yaml").load(src), RTDETR(str(dst))):
        with torch.no_grad():
            _, (boxes, logits, *_) = model.model.float().eval()(fx.image_tensor(torch.float32))
        assert (logits[-1, 0].double() - want).abs().max() < 1e-4
    assert RTDETR(str(dst)).model.names[0] == "person"


def test_start_up_hook_activates_in_a_fresh_interpreter():
    """The .pth path a ``yolo`` command takes: a zoo name builds in a new process, with no version warning on a
    tested release."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_PLUGINS_")}
    version = ultralytics.__version__
    strict = "" if versions.newer_than_tested(version) else "warnings.simplefilter('error', HostVersionWarning)\n"
    code = (
        "import warnings\nfrom yolo_plugins.host.versions import HostVersionWarning\n"
        + strict
        + "from ultralytics import RTDETR\n"
        "m = RTDETR('rtdetr-effvit.yaml')\n"
        "import ultralytics, yolo_plugins; print(ultralytics.__version__, yolo_plugins.is_active())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-2:] == [version, "True"]
