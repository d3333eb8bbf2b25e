"""Fuzz: every single-field mutant of a zoo YAML builds and runs, or fails with a clear error that names its row.

Each example takes a zoo YAML at scale n, changes ONE field of ONE row of ``backbone + head`` (module name, one
argument, ``from``, repeats, one argument dropped or added; see ``yaml_mutants``) and builds it with the model class
the YAML is for, then runs one forward pass (eval, 1x3x64x64): RT-DETR models run none while they are built, so a
wrong Concat dimension or an nn.Upsample without a size only shows there. Allowed outcomes: it builds and runs, or it
raises one of ``yaml_mutants.ALLOWED`` (or a subclass; a named build error of the class it names) whose message or
notes contain ``layer k`` for the mutated row k. A mutation that only breaks a later row (a width change a later
Concat consumes) may name that later row instead; a mutation that is invalid at row k itself (unknown module name,
out-of-range or non-int ``from``, non-numeric repeats) must name row k exactly.

Mutants are drawn with fixed seeds and without shrinking (a build costs 0.05-0.5 s; a mutant is already one field),
so a failure reports the first offending mutant as ``<yaml> layer k [kind]: <row> -> <mutated row>``.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from ultralytics import nn as unn
from ultralytics.nn import tasks
from ultralytics.nn.modules import Conv
from yaml_mutants import ALLOWED, GROUPS, Mutant, judge, mutants

import yolo_plugins
from yolo_plugins import registry

FUZZ = {
    "deadline": None,
    "database": None,
    "phases": (Phase.explicit, Phase.generate),
    "suppress_health_check": [HealthCheck.too_slow],
}


def _host_state() -> dict:
    return {
        "tasks.parse_model": tasks.parse_model,
        "nn.parse_model": unn.parse_model,
        "tasks names": set(vars(tasks)),
        "Conv.default_act": Conv.default_act,
        "active": yolo_plugins.is_active(),
        "registered": set(registry.entries()),
    }


@pytest.fixture(scope="module")
def host_before() -> dict:
    """The host's patched state as the first fuzz test found it."""
    return _host_state()


def check(mutant: Mutant) -> None:
    verdict = judge(mutant)
    where = f"layer {mutant.k}" if mutant.exact else f"layer {mutant.k} (or a later layer)"
    assert verdict.ok, (
        f"mutant {mutant!r}\n  outcome: {verdict.category}: {verdict.error}\n"
        f"  expected: it builds, or one of {', '.join(t.__name__ for t in ALLOWED)} naming {where}"
    )


def fuzz(group: str):
    """Hypothesis settings for one mutation group: its example count and fixed seed."""
    _, count, fixed = GROUPS[group]

    def decorate(test):
        test = seed(fixed)(settings(max_examples=count, **FUZZ)(given(mutant=mutants(group))(test)))
        return pytest.mark.usefixtures("host_before")(test)  # the snapshot, taken before the first fuzz test

    return decorate


@fuzz("module")
def test_module_name_mutants(mutant):
    """A typo of the module name, another real module, or a non-string."""
    check(mutant)


@fuzz("arg")
def test_argument_mutants(mutant):
    """One argument replaced: ints (0, negative, up to 2048), floats, strings, paths, None, bools, lists."""
    check(mutant)


@fuzz("from")
def test_from_mutants(mutant):
    """``from`` out of range, a future row, a string, a float, None, or a list with a bad element."""
    check(mutant)


@fuzz("repeats")
def test_repeats_mutants(mutant):
    """Repeats 0, -1, 2, 3.5, 'x', '3' or None."""
    check(mutant)


@fuzz("arity")
def test_arity_mutants(mutant):
    """One argument dropped, or one extra argument appended."""
    check(mutant)


@fuzz("size")
def test_channel_count_mutants(mutant):
    """A channel count (args[0]) that is zero, negative, text or not a whole number."""
    check(mutant)


@fuzz("cat_up")
def test_concat_and_upsample_mutants(mutant):
    """A Concat dimension or nn.Upsample arguments that only fail when the model runs (no size, text, bad mode)."""
    check(mutant)


@fuzz("from_list")
def test_from_list_mutants(mutant):
    """A multi-input ``from`` reordered, shortened, extended or narrowed to one input."""
    check(mutant)


def test_fuzz_left_no_patched_state(host_before):
    """After hundreds of failed builds the host is as the fuzz run found it: same hooks, no added names."""
    after = _host_state()
    for key in ("tasks.parse_model", "nn.parse_model", "Conv.default_act"):
        assert after[key] is host_before[key], f"{key} was replaced during the fuzz run"
    gained, lost = after["tasks names"] - host_before["tasks names"], host_before["tasks names"] - after["tasks names"]
    assert not gained and not lost, f"ultralytics.nn.tasks gained {sorted(gained)}, lost {sorted(lost)}"
    assert after["active"] and host_before["active"]
    assert after["registered"] == host_before["registered"]


STOCK = ["v8/yolov8.yaml", "11/yolo11.yaml", "v10/yolov10n.yaml", "rt-detr/rtdetr-l.yaml"]


@pytest.mark.parametrize("rel", STOCK)
def test_stock_models_still_build_identically(rel):
    """After the fuzz run stock models still match a build with the plugin deactivated (test_parser_hook's check)."""
    from test_parser_hook import STOCK as STOCK_DIR
    from test_parser_hook import test_stock_models_stay_stock

    test_stock_models_stay_stock(STOCK_DIR / rel)
