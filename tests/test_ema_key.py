"""``ema:`` in a model YAML: the trainer's weight average takes the YAML's decay and ramp; stock models, and callers
that pass their own values, keep the host's; a malformed value fails when the model is built."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from test_dfine_models import TINY_TRAIN
from test_training_loss import build_with_key, write_with_key

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "cfg" / "models" / "rtdetr-effvit.yaml"


def _ramp(decay: float, tau: float, updates: int) -> float:
    return decay * (1 - math.exp(-updates / tau))


def test_the_trainer_averages_with_the_yamls_decay_and_ramp(tmp_path, tiny_data, one_thread):
    from ultralytics import RTDETR

    model = RTDETR(str(write_with_key(tmp_path, "rtdetr-effvit.yaml", "ema", [0.9, 10])))
    model.train(data=tiny_data, project=str(tmp_path), name="t", val=False, **TINY_TRAIN)
    ema = model.trainer.ema
    assert ema.updates >= 1
    for updates in (1, 10, 50):
        assert ema.decay(updates) == pytest.approx(_ramp(0.9, 10, updates), rel=1e-12)


def test_the_default_model_trains_with_its_own_setting(tmp_path):
    from ultralytics.nn.tasks import RTDETRDetectionModel
    from ultralytics.utils.torch_utils import ModelEMA

    decay, tau = yaml.safe_load(DEFAULT.read_text())["ema"]
    ema = ModelEMA(RTDETRDetectionModel(str(DEFAULT), nc=3, verbose=False))
    assert ema.decay(100) == pytest.approx(_ramp(decay, tau, 100), rel=1e-12)
    assert ema.decay(100) != pytest.approx(_ramp(0.9999, 2000, 100))


def test_stock_models_and_explicit_callers_keep_the_hosts_average(tmp_path):
    from ultralytics.nn.tasks import DetectionModel, RTDETRDetectionModel
    from ultralytics.utils.torch_utils import ModelEMA

    stock = ModelEMA(DetectionModel("yolov10n.yaml", verbose=False))
    assert stock.decay(500) == pytest.approx(_ramp(0.9999, 2000, 500), rel=1e-12)
    keyed = RTDETRDetectionModel(
        str(write_with_key(tmp_path, "rtdetr-effvit.yaml", "ema", [0.9, 10])), nc=3, verbose=False
    )
    assert ModelEMA(keyed, decay=0.5).decay(500) == pytest.approx(_ramp(0.5, 2000, 500), rel=1e-12)
    assert ModelEMA(keyed, tau=100).decay(500) == pytest.approx(_ramp(0.9999, 100, 500), rel=1e-12)
    only_decay = RTDETRDetectionModel(
        str(write_with_key(tmp_path, "rtdetr-effvit.yaml", "ema", 0.99)), nc=3, verbose=False
    )
    assert ModelEMA(only_decay).decay(500) == pytest.approx(_ramp(0.99, 2000, 500), rel=1e-12)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1.0, 100], r"a decay in \[0, 1\) .*got \[1.0, 100\]"),
        ([0.99, 0], r"tau > 0 updates .*got \[0.99, 0\]"),
        ([0.99, 100, 3], r"got \[0.99, 100, 3\]"),
        ("high", "got 'high'"),
        (True, "got True"),
    ],
)
def test_a_bad_ema_fails_when_the_model_is_built(tmp_path, value, message):
    with pytest.raises(ValueError, match=f"model YAML: ema must be .*{message}"):
        build_with_key(tmp_path, "rtdetr-effvit.yaml", "ema", value)
