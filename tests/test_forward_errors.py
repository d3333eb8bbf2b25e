"""Mistakes that show only when a model runs, and row mistakes whose message says what to do, name their YAML row.

A forward error is the exception the layer raised, same object and class; the row is a note on it (Python 3.11+).
"""

from __future__ import annotations

import copy
import re
import sys

import pytest
import torch
from ultralytics.nn import tasks

from yolo_plugins.errors import LayerError


def _cfg(name: str = "rtdetr-effvit.yaml") -> dict:
    d = tasks.yaml_model_load(name)
    d["scale"] = "n"
    return copy.deepcopy(d)


def _build(d: dict, rtdetr: bool = True):
    cls = tasks.RTDETRDetectionModel if rtdetr else tasks.DetectionModel
    return cls(d, nc=3, verbose=False)


def _row(e: BaseException) -> str:
    """The row the plugin added to ``e``: its note (Python 3.11+), else the message's added last line."""
    notes = getattr(e, "__notes__", None)
    if sys.version_info >= (3, 11):
        assert isinstance(notes, list) and len(notes) == 1, f"one note naming the row expected, got {notes!r}"
        return notes[0]
    return str(e).splitlines()[-1]


def test_upsample_without_a_size_is_named_at_the_first_forward_in_eval_and_training():
    """RT-DETR runs no forward while it is built: the first predict / training forward names the row, its input."""
    d = _cfg()
    d["head"][3] = [-1, 1, "nn.Upsample", [None, None, "nearest"]]  # row 7
    model = _build(d)
    for train in (False, True):
        model.train(train)
        with pytest.raises(ValueError, match="either size or scale_factor") as e:
            with torch.no_grad():
                model.predict(torch.zeros(1, 3, 64, 64))
        assert type(e.value) is ValueError  # torch's own error, as without the plugin
        assert re.fullmatch(r"layer 7: Upsample: raised by this layer \(input 1x\d+x2x2 from layer 6\)", _row(e.value))


def test_concat_of_different_sizes_names_the_concat_and_its_inputs():
    d = _cfg()
    d["head"][5] = [[-2, 1], 1, "Concat", [1]]  # row 9 reads the upsampled S5 and P3 (other size)
    with pytest.raises(RuntimeError, match="^Sizes of tensors must match") as e:
        _build(d).eval()(torch.zeros(1, 3, 64, 64))
    assert type(e.value) is RuntimeError
    assert re.fullmatch(
        r"layer 9: Concat: inputs of different sizes \(1x\d+x4x4 from layer 7, 1x\d+x8x8 from layer 1\)", _row(e.value)
    )


def test_concat_with_a_text_dimension_keeps_the_type():
    d = _cfg()
    d["head"][5] = [[-2, -1], 1, "Concat", ["x"]]
    with pytest.raises(TypeError, match=r"must be int") as e:
        _build(d).eval()(torch.zeros(1, 3, 64, 64))
    assert type(e.value) is TypeError
    assert _row(e.value).startswith("layer 9: Concat: raised by this layer (input ")


def test_yolo_models_name_the_row_at_build_time_as_before():
    """DetectionModel runs its stride forward while it is built: the same naming applies there (once)."""
    d = tasks.yaml_model_load("yolov10-effvit.yaml")
    d["scale"] = "n"
    up = next(k for k, row in enumerate(d["head"]) if row[2] == "nn.Upsample")
    d["head"][up] = [-1, 1, "nn.Upsample", [None, None, "nearest"]]
    with pytest.raises(ValueError, match="either size or scale_factor") as e:
        _build(d, rtdetr=False)
    assert type(e.value) is ValueError
    assert _row(e.value).startswith(f"layer {len(d['backbone']) + up}: Upsample: raised by this layer (input ")


def test_a_working_model_computes_the_same_with_the_naming_on():
    """The forward loop wrapper changes nothing when nothing fails (same outputs as the host's own loop)."""
    from yolo_plugins.host import hook

    model = _build(_cfg()).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        on = model(x)[0]
        loops = [p for p in hook._state["patches"] if p.attr in ("_predict_once", "predict")]
        for p in loops:
            p.restore()
        try:
            off = model(x)[0]
        finally:
            for p in loops:
                p.apply()
    assert torch.equal(on, off)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            [7, 1, "Conv", [64, 1, 1]],
            r"layer 4: Conv: from 7 points to a later layer or itself \(layer 7\); this row "
            r"can read layers 0-3",
        ),
        ([-9, 1, "Conv", [64, 1, 1]], r"layer 4: Conv: from -9 points to before layer 0 .* layers 0-3"),
        ([[-1, "x"], 1, "Concat", [1]], r"layer 4: Concat: from must be a layer index .* got \[-1, 'x'\]"),
        (
            [-1, 1, "Conv", [-16, 1, 1]],
            r"layer 4: Conv: output channels must be a positive number, got 0 \(args\[0\] "
            r"is -16, times the width multiple",
        ),
        ([-1, 1, "Conv", [0, 1, 1]], r"layer 4: Conv: output channels must be a positive number, got 0"),
        ([-1, 1, "Conv", ["abc", 1, 1]], r"layer 4: Conv: args\[0\] is the text 'abc' where a number belongs"),
        ([-1, 1, "Conv", [64, "three", 1]], r"layer 4: Conv: args\[1\] is the text 'three' where a number belongs"),
    ],
)
def test_row_mistakes_say_what_to_do_at_their_own_row(row, message):
    d = _cfg()
    d["head"][0] = row  # row 4, the S5 input projection
    with pytest.raises((LayerError, TypeError), match=message) as e:
        _build(d)
    if "points to" in message:
        assert isinstance(e.value, IndexError)  # the type the host's own failure had


def test_the_first_row_reads_only_the_input():
    d = _cfg()
    d["backbone"][0] = [0, *d["backbone"][0][1:]]
    with pytest.raises(LayerError, match="layer 0: EfficientViT: from 0 .*the first row can only read the input"):
        _build(d)
