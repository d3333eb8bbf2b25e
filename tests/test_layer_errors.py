"""Every failure while building a YAML names its row, for plugin and stock blocks alike, and keeps its type."""

from __future__ import annotations

import copy
import sys

import pytest
from ultralytics.nn.tasks import DetectionModel, RTDETRDetectionModel, yaml_model_load

import yolo_plugins
from yolo_plugins.errors import LayerError


def mutant(name: str, index: int, k: int, value, arg: int | None = None) -> dict:
    """The zoo YAML ``name`` at scale n with field ``k`` of row ``index`` (or its argument ``arg``) replaced."""
    d = copy.deepcopy(yaml_model_load(name))
    d["scale"] = "n"
    part, row = ("backbone", index) if index < len(d["backbone"]) else ("head", index - len(d["backbone"]))
    r = list(d[part][row])
    if arg is None:
        r[k] = value
    else:
        r[3] = [*r[3][:arg], value, *r[3][arg + 1 :]]
    d[part][row] = r
    return d


@pytest.mark.parametrize(
    ("name", "index", "k", "arg", "value", "kind", "message"),
    [
        # argument parsing: the host's literal_eval raises SyntaxError on a path; still one, naming the arg
        ("rtdetr-effvit.yaml", 4, 3, 0, "/abs/x", SyntaxError, "layer 4: Conv: argument '/abs/x' is neither"),
        # a stock block with a string where its channel count goes
        ("rtdetr-effvit.yaml", 4, 3, 0, "abc", TypeError, "layer 4: Conv: "),
        # a list 'from' for a single-input stock block
        ("yolov10-effvit.yaml", 12, 0, None, [-1, 3], TypeError, "layer 12: Conv: list indices"),
        # repeats that are not a number
        ("rtdetr-effvit.yaml", 10, 1, None, "x", TypeError, "layer 10: RepC3: "),
        # an argument dropped from a stock block that needs it
        ("rtdetr-effvit.yaml", 10, 3, None, [], IndexError, "layer 10: RepC3: list index out of range"),
    ],
)
def test_build_errors_name_the_row(name, index, k, arg, value, kind, message):
    d = mutant(name, index, k, value, arg)
    cls = RTDETRDetectionModel if name.startswith("rtdetr") else DetectionModel
    with pytest.raises(kind) as e:
        cls(d, verbose=False)
    assert str(e.value).startswith(message), str(e.value)
    assert type(e.value) is kind and type(e.value.__cause__) is kind  # the original stays attached, same class


def test_a_bare_assertion_stays_an_assertion_error_with_the_failing_line():
    """RepConv asserts its kernel without a message: still an AssertionError, saying which row and what was checked."""
    d = mutant("rtdetr-effvit.yaml", 4, 2, "RepConv")
    d["head"][0] = [-1, 1, "RepConv", [64, 64, 5]]  # c1, c2, k=5: the host asserts k == 3
    with pytest.raises(AssertionError) as e:
        RTDETRDetectionModel(d, verbose=False)
    assert type(e.value) is AssertionError and e.value.layer == 4
    assert str(e.value).startswith("layer 4: RepConv: AssertionError in __init__() ("), str(e.value)
    assert str(e.value).endswith(": assert k == 3 and p == 1")


def test_build_time_forward_names_the_concat_and_its_inputs():
    """A shape clash found only by Ultralytics' stride forward: torch's own RuntimeError, with a note naming the
    layer and the shapes it was given."""
    d = mutant("yolov10-effvit.yaml", 7, 0, [-1, 3])  # P5 instead of P4 into the first top-down Concat
    with pytest.raises(RuntimeError) as e:
        DetectionModel(d, verbose=False)
    assert type(e.value) is RuntimeError and str(e.value).startswith("Sizes of tensors must match")
    if sys.version_info >= (3, 11):
        assert e.value.__notes__ == [
            "layer 7: Concat: inputs of different sizes (1x256x16x16 from layer 6, 1x192x8x8 from layer 3)"
        ]


def test_every_unknown_module_is_named_at_once():
    d = mutant("rtdetr-effvit.yaml", 5, 2, "Cnv")
    d["head"][7 - len(d["backbone"])][2] = "FancyAttention"
    with pytest.raises(yolo_plugins.UnknownModuleError) as e:
        RTDETRDetectionModel(d, verbose=False)
    msg = str(e.value)
    assert msg.startswith("2 unknown modules: layer 5: unknown module 'Cnv' — did you mean 'Conv'")
    assert "layer 7: unknown module 'FancyAttention'" in msg and "@yolo_plugins.register()" in msg
    assert [(i, n) for i, n, _ in e.value.unknown] == [(5, "Cnv"), (7, "FancyAttention")]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ([-1, 1, "Conv"], "layer 4: Conv: a row must be [from, repeats, module, args]"),
        ([-1, 1, "Conv", 256], "layer 4: Conv: args must be a list"),
        ([-1, 1, 7, [256]], "layer 4: ?: the module must be a name such as Conv, got 7"),
    ],
)
def test_malformed_rows_are_layer_errors(row, message):
    d = mutant("rtdetr-effvit.yaml", 4, 0, -1)
    d["head"][0] = row  # layer 4, the first head row
    with pytest.raises(LayerError) as e:
        RTDETRDetectionModel(d, verbose=False)
    assert str(e.value).startswith(message)
