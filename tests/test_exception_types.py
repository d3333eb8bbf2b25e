"""An exception keeps its type with the plugin on (issue 29, item 2): probes in stock and plugin models, on and off.

Forward: a layer's forward raises AssertionError, AttributeError, ZeroDivisionError, KeyError or a user's own class
(one whose constructor cannot be called with a message). Without the plugin that exception reaches the caller; with
it the very same object does, its message untouched, with the row added as a note. Build (``parse_model``): a
block's constructor raises the same kinds; with the plugin the error names the row in its message and is an
instance of the original's class (the class itself where it can carry the message).
"""

from __future__ import annotations

import copy
import pickle
import re
import sys

import pytest
import torch
from exception_probes import KINDS, UserError, raise_kind
from ultralytics.nn import modules as host_modules
from ultralytics.nn import tasks

import yolo_plugins
from yolo_plugins.blocks.pick import Pick

MODELS = {  # name: (model class, is a stock model)
    "yolov8n.yaml": (tasks.DetectionModel, True),
    "rtdetr-l.yaml": (tasks.RTDETRDetectionModel, True),
    "rtdetr-effvit.yaml": (tasks.RTDETRDetectionModel, False),
}
NOTE = re.compile(r"^layer (\d+): (\w+): raised by this layer \(input .+ from layer \d+\)$")


@pytest.fixture
def plugin_off():
    """The plugin deactivated for one test, active again after it whatever happens."""
    yolo_plugins.deactivate()
    try:
        yield
    finally:
        yolo_plugins.activate()


@pytest.fixture(scope="module")
def built(one_thread) -> dict:
    """Each probe model once: stock YAMLs built with the plugin off (as a user without it would), ours with it on."""
    out = {}
    for name, (cls, stock) in MODELS.items():
        if stock:
            yolo_plugins.deactivate()
        try:
            out[name] = cls(name, nc=3, verbose=False).eval()
        finally:
            yolo_plugins.activate()
    return out


def _forward_error(model, row: int, kind: type[BaseException]) -> tuple[BaseException, list]:
    """What ``model``'s forward raises when its layer ``row`` raises ``kind``, and every exception raised there."""
    layer = model.model[row]
    raised: list[BaseException] = []

    def failing(*args, **kwargs):
        try:
            raise_kind(kind)
        except BaseException as e:
            raised.append(e)
            raise
        raise AssertionError("the probe did not raise")

    layer.forward = failing
    try:
        with torch.no_grad(), pytest.raises(BaseException) as e:
            model(torch.zeros(1, 3, 64, 64))
    finally:
        del layer.forward
    return e.value, raised


def _row_note(e: BaseException) -> list[re.Match]:
    return [m for m in map(NOTE.match, getattr(e, "__notes__", [])) if m]


@pytest.mark.parametrize("where", ["middle", "head"])
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
@pytest.mark.parametrize("name", list(MODELS))
def test_a_forward_error_is_the_exception_raised_with_the_row_as_a_note(built, name, kind, where):
    """Plugin on: the caller gets the very exception the layer raised (stock and plugin models), row in a note."""
    model = built[name]
    row = 3 if where == "middle" else len(model.model) - 1
    err, raised = _forward_error(model, row, kind)
    assert raised and err is raised[0], f"{type(err).__name__} is not the exception the layer raised"
    assert type(err) is kind
    if sys.version_info >= (3, 11):
        before = str(raised[0])
        notes = _row_note(err)
        assert len(notes) == 1, getattr(err, "__notes__", None)
        assert (int(notes[0][1]), notes[0][2]) == (row, type(model.model[row]).__name__)
        assert str(err) == before  # the message is the layer's own
    if kind is UserError:
        assert err.code == 7 and str(err) == "user error 7: boom"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
@pytest.mark.parametrize("name", list(MODELS))
def test_a_forward_error_with_the_plugin_off_is_the_same_class_and_no_note(built, plugin_off, name, kind):
    """The baseline the test above is compared with: the host's own forward, same class, nothing added."""
    err, raised = _forward_error(built[name], 3, kind)
    assert type(err) is kind and err is raised[0]
    assert not _row_note(err)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_the_build_time_forward_keeps_the_type_on_and_off(monkeypatch, kind):
    """DetectionModel runs a stride forward while it is built: a stock block failing there keeps its class too."""

    def failing(self, x):
        raise_kind(kind)

    monkeypatch.setattr(host_modules.SPPF, "forward", failing)
    errors = {}
    for on in (False, True):
        (yolo_plugins.activate if on else yolo_plugins.deactivate)()
        try:
            with pytest.raises(BaseException) as e:
                tasks.DetectionModel("yolov8n.yaml", nc=3, verbose=False)
        finally:
            yolo_plugins.activate()
        errors[on] = e.value
    assert type(errors[False]) is kind and type(errors[True]) is kind
    assert not _row_note(errors[False])
    if sys.version_info >= (3, 11):
        assert [(int(m[1]), m[2]) for m in _row_note(errors[True])] == [(9, "SPPF")]  # once, not once per wrapper


def _failing_init(kind: type[BaseException]):
    def __init__(self, *args, **kwargs):
        raise_kind(kind)

    return __init__


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_a_build_error_of_a_stock_model_is_named_and_an_instance_of_the_original_class(monkeypatch, kind):
    """Plugin off, a stock block's constructor failing raises ``kind``; on, a named error that ``except kind`` catches:
    the class itself where it carries the message, else its named subclass (KeyError, which quotes; UserError)."""
    monkeypatch.setattr(host_modules.SPPF, "__init__", _failing_init(kind))
    errors = {}
    for on in (False, True):
        (yolo_plugins.activate if on else yolo_plugins.deactivate)()
        try:
            with pytest.raises(kind) as e:
                tasks.DetectionModel("yolov8n.yaml", nc=3, verbose=False)
        finally:
            yolo_plugins.activate()
        errors[on] = e.value
    off, on = errors[False], errors[True]
    assert type(off) is kind and getattr(off, "layer", None) is None
    assert isinstance(on, kind) and on.layer == 9 and on.__cause__ is not None and type(on.__cause__) is kind
    assert str(on).startswith("layer 9: SPPF: "), str(on)
    if kind in (AssertionError, AttributeError, ZeroDivisionError):
        assert type(on) is kind
    else:
        assert type(on).__bases__ == (kind,) and type(on).__name__ == kind.__name__
    if kind is AssertionError:  # a bare assert names its failing line
        assert "raise_kind() (" in str(on) and str(on).endswith(": assert zero == 1.0"), str(on)
    if kind is KeyError:
        assert str(on) == "layer 9: SPPF: missing"  # not quoted as KeyError would
    if kind is UserError:
        assert on.code == 7 and str(on) == "layer 9: SPPF: user error 7: boom"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_a_build_error_of_a_plugin_block_is_named_and_an_instance_of_the_original_class(monkeypatch, kind):
    monkeypatch.setattr(Pick, "__init__", _failing_init(kind))
    d = copy.deepcopy(tasks.yaml_model_load("rtdetr-effvit.yaml"))
    with pytest.raises(kind) as e:
        tasks.RTDETRDetectionModel(d, nc=3, verbose=False)
    assert e.value.layer == 1 and str(e.value).startswith("layer 1: Pick: "), str(e.value)
    assert type(e.value.__cause__) is kind


@pytest.mark.parametrize("kind", [KeyError, UserError], ids=lambda k: k.__name__)
def test_a_named_subclass_pickles_and_is_built_once_per_class(monkeypatch, kind):
    """The named subclass of KeyError or a user's class pickles (as the plugin's subclass, message and attributes)."""
    monkeypatch.setattr(host_modules.SPPF, "__init__", _failing_init(kind))
    errors = []
    for _ in range(2):
        with pytest.raises(kind) as e:
            tasks.DetectionModel("yolov8n.yaml", nc=3, verbose=False)
        errors.append(e.value)
    assert type(errors[0]) is type(errors[1])
    back = pickle.loads(pickle.dumps(errors[0]))
    assert type(back) is type(errors[0]) and str(back) == str(errors[0]) and back.layer == 9
    if kind is UserError:
        assert back.code == 7


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_before_python_3_11_the_row_is_a_line_of_the_message_where_the_type_allows(built, monkeypatch, kind):
    """Without ``add_note`` (3.9/3.10): the row is a new last line of a message that is the exception's one string
    argument, the message of a bare assert; a KeyError (which quotes) or a user's ``__str__`` is left untouched."""
    from yolo_plugins.host import layer_errors

    monkeypatch.setattr(layer_errors, "NOTES", False)
    err, raised = _forward_error(built["yolov8n.yaml"], 3, kind)
    assert type(err) is kind and err is raised[0] and not hasattr(err, "__notes__")
    lines = str(err).splitlines()
    if kind in (KeyError, UserError):
        assert lines == [{KeyError: "'missing'", UserError: "user error 7: boom"}[kind]]
    else:
        assert NOTE.match(lines[-1]) and lines[-1].startswith("layer 3: Conv: ")
        assert len(lines) == (1 if kind is AssertionError else 2)


def test_before_python_3_11_a_class_that_would_not_read_as_the_row_is_left_as_it_was(monkeypatch):
    """A bare ``KeyError()`` reads as '' but would quote a message: it keeps its empty arguments."""
    from yolo_plugins.host import layer_errors

    monkeypatch.setattr(layer_errors, "NOTES", False)
    e = KeyError()
    layer_errors.add_row(e, "layer 3: Conv: raised by this layer (input 1x8x8x8 from layer 2)")
    assert e.args == () and str(e) == ""
    e = ValueError("bad")
    layer_errors.add_row(e, "layer 3: Conv: x")
    layer_errors.add_row(e, "layer 3: Conv: x")  # never twice
    assert e.args == ("bad\nlayer 3: Conv: x",)
