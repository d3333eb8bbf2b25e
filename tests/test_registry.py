"""The public registry API: registration, conflicts and the listing."""

from __future__ import annotations

import pytest
from torch import nn

import yolo_plugins
from yolo_plugins import registry


class _Plain(nn.Module):
    def forward(self, x):
        return x


@pytest.fixture
def scratch_names():
    """Names registered by a test are removed afterwards."""
    before = set(registry.entries())
    yield
    for name in set(registry.entries()) - before:
        registry.unregister(name)


def test_register_decorator_defaults_to_class_name(scratch_names):
    @yolo_plugins.register(rule="same")
    class TestOnlyKeep(_Plain):
        pass

    entry = registry.entries()["TestOnlyKeep"]
    assert entry.cls is TestOnlyKeep and entry.source == "yolo-plugins" and entry.rule_name == "same"
    listed = {r["name"]: r for r in yolo_plugins.registered()}
    assert listed["TestOnlyKeep"]["class"].endswith("TestOnlyKeep")
    assert listed["TestOnlyKeep"]["source"] == "yolo-plugins"


def test_same_name_twice_fails_at_registration(scratch_names):
    yolo_plugins.register("TestOnlyTwice")(type("A", (_Plain,), {}))
    with pytest.raises(yolo_plugins.RegistrationError, match="'TestOnlyTwice'.*already registered"):
        yolo_plugins.register("TestOnlyTwice")(type("B", (_Plain,), {}))
    replacement = type("C", (_Plain,), {})
    yolo_plugins.register("TestOnlyTwice", force=True)(replacement)
    assert registry.entries()["TestOnlyTwice"].cls is replacement


def test_non_module_class_is_refused(scratch_names):
    with pytest.raises(yolo_plugins.RegistrationError, match="not a torch.nn.Module subclass"):
        yolo_plugins.register("TestOnlyNotAModule")(dict)
    assert "TestOnlyNotAModule" not in registry.entries()


def test_unknown_rule_and_missing_fuse_are_refused(scratch_names):
    with pytest.raises(yolo_plugins.RegistrationError, match="unknown channel rule 'convv'.*conv_repeat"):
        yolo_plugins.register("TestOnlyBadRule", rule="convv")(type("D", (_Plain,), {}))
    with pytest.raises(yolo_plugins.RegistrationError, match="fuse=True.*no fuse\\(\\) method"):
        yolo_plugins.register("TestOnlyNoFuse", fuse=True)(type("E", (_Plain,), {}))


def test_host_name_is_never_shadowed(scratch_names):
    """Registering a plugin class under a name Ultralytics defines fails instead of replacing the host class."""
    from ultralytics.nn import tasks

    host_conv = tasks.Conv
    with pytest.raises(yolo_plugins.RegistrationError, match="Ultralytics already defines 'Conv'"):
        yolo_plugins.register("Conv")(type("MyConv", (_Plain,), {}))
    assert tasks.Conv is host_conv
    assert "Conv" not in registry.entries()


def test_registered_lists_plugin_and_host_sources():
    listed = {r["name"]: r for r in yolo_plugins.registered()}
    assert listed["Pick"]["source"] == "yolo-plugins"
    assert listed["Index"]["source"] == "ultralytics" and listed["Index"]["class"].startswith("ultralytics.")
    for row in listed.values():
        assert set(row) == {"name", "class", "source", "rule", "fuse"}


def test_closest_names_are_case_insensitive_first():
    assert registry.closest("efficientvit", ["EfficientViT", "Conv"])[0] == "EfficientViT"
    assert registry.closest("Convv", ["Conv", "DWConv", "Pick"])[0] == "Conv"
