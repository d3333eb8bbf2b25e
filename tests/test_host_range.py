"""The Ultralytics range: what is declared is what the hook accepts, refusals are clear and stay, newer releases warn.

Versions are simulated by setting ``ultralytics.__version__`` (the hook reads it at activation); the restricted
loader's forms by a stand-in ``ultralytics.nn.tasks``. No network.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import ultralytics
from ultralytics.nn import tasks

import yolo_plugins
from yolo_plugins.host import first_use, safe_load, versions

ROOT = Path(__file__).resolve().parents[1]


def test_declared_range_is_the_hooks_range():
    """pyproject.toml's ultralytics requirement, versions.SUPPORTED and CI's oldest pin say the same thing."""
    pyproject = ROOT / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("not a source checkout")
    declared = re.search(r'"ultralytics([^"]*)"', pyproject.read_text()).group(1)
    assert declared == versions.SUPPORTED
    low = re.match(r">=([\d.]+),<([\d.]+)$", declared)
    assert (versions.parse(low.group(1)) + (0, 0))[:3] == (versions.parse(versions.OLDEST) + (0, 0))[:3]
    assert low.group(2) == versions.UPPER
    pin = re.search(r"^ultralytics==([\d.]+)$", (ROOT / ".ci" / "oldest.txt").read_text(), re.M).group(1)
    assert pin == versions.OLDEST
    assert versions.in_range(versions.OLDEST) and versions.in_range(versions.NEWEST_TESTED)


@pytest.mark.parametrize(
    ("version", "inside", "newer"),
    [
        ("8.3.253", False, False),
        ("8.4.0", True, False),
        ("8.4.66", True, False),
        ("8.4.190", True, False),
        ("8.4.191", True, True),
        ("8.4.300.dev0", True, True),
        ("8.5.0", False, True),
        ("9.0", False, True),
        ("unknown", False, False),
    ],
)
def test_range_arithmetic(version, inside, newer):
    assert versions.in_range(version) is inside
    assert versions.newer_than_tested(version) is newer


@pytest.fixture
def version(monkeypatch):
    """Set the Ultralytics version the hook sees; the plugin is inactive meanwhile and active again afterwards."""
    yolo_plugins.deactivate()
    monkeypatch.setattr(versions, "_warned", False)

    def set_version(v: str) -> None:
        monkeypatch.setattr(ultralytics, "__version__", v)

    yield set_version
    monkeypatch.undo()
    first_use.disarm()
    yolo_plugins.activate()


@pytest.mark.parametrize("old", ["8.3.253", "8.5.1"])
def test_out_of_range_release_is_refused_clearly(version, old):
    """One message: the installed release, the range that works, what to run; nothing patched."""
    version(old)
    before = dict(tasks.__dict__)
    with pytest.raises(yolo_plugins.HostVersionError) as e:
        yolo_plugins.activate()
    msg = str(e.value)
    assert f"ultralytics {old}" in msg and "outside the supported range" in msg
    assert f"supported: ultralytics{versions.SUPPORTED}" in msg
    assert f"Run: pip install 'ultralytics{versions.SUPPORTED}'" in msg and "YOLO_PLUGINS_AUTOLOAD=0" in msg
    assert "_SafeLoad" not in msg  # no contradicting detail about the host's internals
    assert not yolo_plugins.is_active() and tasks.__dict__ == before


def test_refusal_at_first_use_is_the_same_on_every_later_build(version):
    """The start-up hook's path: the first build is refused, and so is every later one, with the same message,
    never the stock host's FileNotFoundError for a zoo name it cannot see."""
    from ultralytics import RTDETR, YOLO

    version("8.3.200")
    first_use.arm(lambda name, then: None)  # as the .pth start-up hook arms it
    messages = []
    for make in (lambda: RTDETR("rtdetr-effvit.yaml"), lambda: YOLO("yolov10-effvit.yaml"), lambda: YOLO("x.yaml")):
        with pytest.raises(yolo_plugins.HostVersionError) as e:
            make()
        messages.append(str(e.value))
    assert len(set(messages)) == 1 and "ultralytics 8.3.200" in messages[0]
    assert first_use.is_armed() and not yolo_plugins.is_active()
    with pytest.raises(yolo_plugins.HostVersionError) as e:  # an explicit activation in that process: the same
        yolo_plugins.activate()
    assert str(e.value) == messages[0]
    with pytest.raises(yolo_plugins.HostVersionError) as e:  # ... and builds after it too
        RTDETR("rtdetr-effvit.yaml")
    assert str(e.value) == messages[0]


def test_newer_release_than_tested_is_hooked_with_one_warning(version):
    version("8.4.999")
    with pytest.warns(versions.HostVersionWarning) as record:
        yolo_plugins.activate()
    assert yolo_plugins.is_active()
    assert len(record) == 1 and "8.4.999 is newer than the newest release" in str(record[0].message)
    assert f"ultralytics=={versions.NEWEST_TESTED}" in str(record[0].message)
    yolo_plugins.deactivate()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second activation in the same process: no second warning
        yolo_plugins.activate()


def test_tested_release_activates_without_a_warning(version):
    version(versions.NEWEST_TESTED)
    with warnings.catch_warnings():
        warnings.simplefilter("error", versions.HostVersionWarning)
        yolo_plugins.activate()
    assert yolo_plugins.is_active()


def test_newer_release_whose_code_changed_is_refused_with_the_check(version, monkeypatch):
    """Inside the range but newer than tested, a failed check names it and points at the newest tested release."""
    version("8.4.999")

    def parse_model(d, ch, verbose=True):  # a host whose parser has another shape
        return None

    monkeypatch.setattr(tasks, "parse_model", parse_model)
    with pytest.raises(yolo_plugins.HostVersionError) as e:
        yolo_plugins.activate()
    msg = str(e.value)
    assert "ultralytics 8.4.999 (supported: ultralytics>=8.4,<8.5, tested: 8.4.0 to" in msg
    assert "parse_model" in msg and f"Run: pip install 'ultralytics=={versions.NEWEST_TESTED}'" in msg


class _Safe:
    loading = staticmethod(lambda weight: None)


@pytest.mark.parametrize(
    ("members", "torch_load", "form"),
    [
        (None, True, "none"),  # 8.4.0 to 8.4.66
        (("_globals",), True, "scoped"),  # 8.4.67 to 8.4.125
        (("_globals",), False, None),  # a per-load allow-list without the module's torch_load: refused
        (("_lock", "_registry", "_build"), False, "registry"),  # 8.4.126 on
        (("_lock", "_build"), True, None),
    ],
)
def test_restricted_loader_form_is_detected(members, torch_load, form):
    fake = SimpleNamespace()
    if members is not None:
        fake._SafeLoad = type("_SafeLoad", (_Safe,), dict.fromkeys(members))
    if torch_load:
        fake.torch_load = lambda *a, **k: None
    if form is None:
        with pytest.raises(yolo_plugins.HostVersionError, match="_SafeLoad has no .*_registry"):
            safe_load.host_form(fake)
    else:
        assert safe_load.host_form(fake) == form


def test_the_installed_hosts_form_is_hooked():
    """The row the hook applies follows the detected form (the installed release's)."""
    from yolo_plugins.host import hook

    form = safe_load.host_form(tasks)
    attrs = {(p.owner, p.attr) for p in hook._state["patches"]}
    assert ((getattr(tasks, "_SafeLoad", None), "loading") in attrs) is (form == "registry")
    assert ((tasks, "torch_load") in attrs) is (form == "scoped")


def _decoder(default):
    """A stand-in RTDETRDecoder whose ``act`` defaults to ``default`` (8.4.0: a ReLU instance; 8.4.105 on: None)."""

    def __init__(self, nc=80, ch=(), hd=256, act=default, eval_idx=-1):
        pass

    return type("RTDETRDecoder", (), {"__init__": __init__, "__module__": "ultralytics.nn.modules.head"})


def test_a_none_the_host_does_not_take_becomes_its_default():
    """The zoo passes act=None to reach later arguments; a host whose decoder takes None literally gets a copy of its
    own default there, a host that takes None keeps it, and nothing else is touched."""
    from torch import nn

    old, new = _decoder(nn.ReLU()), _decoder(None)
    args = [2, [64, 64, 64], 96, None, -1]
    fixed = versions.none_to_default(old, args)
    assert isinstance(fixed[3], nn.ReLU) and fixed[3] is not old.__init__.__defaults__[3] and args[3] is None
    assert fixed[:3] == args[:3] and fixed[4:] == args[4:]
    assert versions.none_to_default(new, args) is args
    assert versions.none_to_default(old, [2, [64], 96]) == [2, [64], 96]  # act not given: nothing to replace
    mine = type("RTDETRDecoder", (), {"__module__": "mine", "__init__": old.__init__})  # a namesake, not the host's
    assert versions.none_to_default(mine, args) is args
    kept = type("PeakLike", (old,), {"__module__": "mine"})  # a plugin head keeping the host's constructor
    assert isinstance(versions.none_to_default(kept, args)[3], nn.ReLU)
    own = type("OwnInit", (old,), {"__module__": "mine", "__init__": lambda self, *a: None})  # its own constructor
    assert versions.none_to_default(own, args) is args


def test_scoped_form_allows_what_the_file_references_for_that_load_only(tmp_path):
    """8.4.67-8.4.125: the plugin's torch_load scopes the plugin/timm classes a checkpoint references around a
    weights_only load (the host scopes its own allow-list the same way), and adds nothing to other loads."""
    import torch
    import yaml

    cfg = "nc: 2\nbackbone: [[-1, 1, EfficientViT, [m0]], [0, 1, Pick, [2]]]\nhead: [[[1], 1, Detect, [nc]]]\n"
    model = tasks.DetectionModel(yaml.safe_load(cfg), verbose=False)
    path = tmp_path / "m.pt"
    torch.save({"model": model}, path)
    seen = []

    def original(file, *args, **kwargs):
        seen.append({g[1] if isinstance(g, tuple) else g for g in torch.serialization.get_safe_globals()})

    load = safe_load.wrap_torch_load(original)
    before = list(torch.serialization.get_safe_globals())
    load(path, map_location="cpu", weights_only=True)
    load(path, map_location="cpu")  # the default (full) load: nothing added
    block = type(model.model[0])
    name = f"{block.__module__}.{block.__qualname__}"
    assert name in seen[0] and any(n.startswith("timm.") for n in seen[0] if isinstance(n, str))
    after = list(torch.serialization.get_safe_globals())
    added = [g for g in after if g not in before]  # torch may register its own (e.g. NestedTensor) on a first load
    owner = lambda g: getattr(g[0] if isinstance(g, tuple) else g, "__module__", "")  # noqa: E731
    assert name not in seen[1] and all(g in after for g in before)
    assert not [g for g in added if not owner(g).startswith("torch")], added  # the plugin's allow-list is gone
