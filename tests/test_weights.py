"""The local weights loader: where files are found, which containers unwrap, and all-or-nothing validation."""

from __future__ import annotations

import logging
import os
import random
import socket
from collections import OrderedDict

import pytest
import safetensors.torch
import torch
from torch import nn

import yolo_plugins.paths
from yolo_plugins.weights.files import (
    LoadReport,
    WeightsError,
    load_pretrained,
    read_weights,
    resolve_weights,
    safe_load_enabled,
)


class Net(nn.Module):
    """A small module with a conv, a BatchNorm (running stats, num_batches_tracked) and a linear layer."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, 2)


def seeded(seed: int, width: int = 4) -> Net:
    torch.manual_seed(seed)
    net = Net(width)
    with torch.no_grad():
        net.bn.running_mean.uniform_()
        net.bn.running_var.uniform_(0.5, 2)
        net.bn.num_batches_tracked.fill_(seed + 1)
    return net


def same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A throw-away project root (with weights/) and a separate working directory; no extra weights folders and
    restricted loading off, whatever the environment running the tests says."""
    import ultralytics.utils

    root, cwd = tmp_path / "project", tmp_path / "cwd"
    (root / "weights").mkdir(parents=True)
    cwd.mkdir()
    monkeypatch.setattr(yolo_plugins.paths, "project_root", lambda: root)
    monkeypatch.delenv("YOLO_PLUGINS_WEIGHTS", raising=False)
    monkeypatch.delenv("ULTRALYTICS_SAFE_LOAD", raising=False)
    monkeypatch.setattr(ultralytics.utils, "SAFE_LOAD", False)
    monkeypatch.chdir(cwd)
    return root, cwd


@pytest.fixture
def load_calls(monkeypatch) -> list:
    """The ``weights_only`` argument of every ``torch.load`` call made during the test."""
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


def test_resolve_cwd_first_then_project_weights(project, no_network):
    root, cwd = project
    torch.save({}, root / "weights" / "a.pt")
    assert resolve_weights("a.pt") == (root / "weights" / "a.pt").resolve()
    torch.save({}, cwd / "a.pt")
    assert resolve_weights("a.pt") == (cwd / "a.pt").resolve()
    assert resolve_weights(root / "weights" / "a.pt") == (root / "weights" / "a.pt").resolve()


def test_env_folders_searched_after_cwd_before_checkout(project, tmp_path, monkeypatch, no_network):
    """YOLO_PLUGINS_WEIGHTS (os.pathsep-separated, in order) comes after the working directory, before weights/."""
    root, cwd = project
    first, second = tmp_path / "env1", tmp_path / "env2"
    first.mkdir(), second.mkdir()
    monkeypatch.setenv("YOLO_PLUGINS_WEIGHTS", os.pathsep.join([str(first), "", str(second)]))
    torch.save({}, root / "weights" / "a.pt")
    assert resolve_weights("a.pt") == (root / "weights" / "a.pt").resolve()
    torch.save({}, second / "a.pt")
    assert resolve_weights("a.pt") == (second / "a.pt").resolve()
    torch.save({}, first / "a.pt")
    assert resolve_weights("a.pt") == (first / "a.pt").resolve()
    torch.save({}, cwd / "a.pt")
    assert resolve_weights("a.pt") == (cwd / "a.pt").resolve()
    with pytest.raises(FileNotFoundError) as e:
        resolve_weights("b.pt")
    searched = str(e.value).split("searched: ")[1].split(")")[0].split(", ")
    assert searched == [str(cwd), str(first), str(second), str(root / "weights")]


def test_missing_file_names_path_and_folders_without_network(project, no_network):
    root, cwd = project
    with pytest.raises(FileNotFoundError) as e:
        load_pretrained(Net(), "nowhere/efficientvit_m0.pth")
    msg = str(e.value)
    assert "nowhere/efficientvit_m0.pth" in msg
    assert str(cwd / "nowhere") in msg and str(root / "weights" / "nowhere") in msg
    assert "never downloaded" in msg
    with pytest.raises(FileNotFoundError, match="searched"):
        resolve_weights(cwd / "absent.safetensors")


def test_pretrained_true_is_not_a_download_request(project, no_network):
    with pytest.raises(TypeError, match="path of a local file, got True; nothing is ever downloaded"):
        load_pretrained(Net(), True)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"model": sd},
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"ema": sd, "optimizer": None},
        lambda sd: {"model": {"state_dict": sd}},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {"state_dict": {f"backbone.{k}": v for k, v in sd.items()}, "head.w": torch.zeros(1)},
    ],
    ids=["plain", "model", "state_dict", "ema", "nested", "ddp-module-prefix", "backbone-prefix"],
)
def test_containers_and_prefixes(wrap, project, no_network):
    src, dst = seeded(1), seeded(2)
    torch.save(wrap(src.state_dict()), "w.pth")
    report = load_pretrained(dst, "w.pth")
    assert same(src, dst)
    assert (report.loaded, report.total) == (len(dst.state_dict()), len(dst.state_dict()))


def test_ultralytics_style_module_checkpoint(project):
    """Ultralytics saves whole modules ({'ema': model, 'model': None} or {'model': model}); keys sit below model.i."""
    src, dst = seeded(1), seeded(2)
    wrapper = nn.Sequential(OrderedDict(model=nn.ModuleList([nn.Identity(), src])))  # keys model.1.conv.weight ...
    torch.save({"epoch": -1, "model": None, "ema": wrapper.half(), "train_args": {}}, "last.pt")
    report = load_pretrained(dst, "last.pt")
    assert report.container.startswith("['ema'].state_dict()") and "model.1." in report.container
    assert all(torch.equal(a.float(), b.float()) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_plain_state_dicts_load_weights_only(project, load_calls):
    torch.save(seeded(1).state_dict(), "w.pt")
    load_pretrained(seeded(2), "w.pt")
    assert load_calls == [True]


def test_safetensors(project, no_network):
    src, dst = seeded(1), seeded(2)
    safetensors.torch.save_file(src.state_dict(), "w.safetensors")
    sd, where = read_weights("w.safetensors")
    assert sd.keys() == src.state_dict().keys() and where == ""
    load_pretrained(dst, "w.safetensors")
    assert same(src, dst)


def test_report_counts_and_log(project):
    src, dst = seeded(1), seeded(2)
    sd = src.state_dict()
    sd["classifier.weight"] = torch.zeros(3)  # nowhere to go: skipped, reported
    del sd["bn.num_batches_tracked"]  # optional bookkeeping: kept as it was, reported
    torch.save({"model": sd}, "w.pth")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("ultralytics")
    logger.addHandler(handler)
    try:
        report = load_pretrained(dst, "w.pth", name="Tiny")
    finally:
        logger.removeHandler(handler)
    assert isinstance(report, LoadReport)
    assert (report.loaded, report.total) == (8, 9)
    assert report.skipped == ["classifier.weight"] and report.defaulted == ["bn.num_batches_tracked"]
    assert int(dst.bn.num_batches_tracked) == 3  # untouched (seeded(2))
    assert torch.equal(dst.conv.weight, src.conv.weight)
    assert any(r.getMessage().startswith("Tiny: loaded 8/9 tensors from ") for r in records)


def test_shape_mismatch_lists_keys_and_loads_nothing(project):
    dst = seeded(2)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    torch.save(seeded(1, width=8).state_dict(), "wide.pth")
    with pytest.raises(WeightsError) as e:
        load_pretrained(dst, "wide.pth")
    msg = str(e.value)
    assert "conv.weight: checkpoint (8, 3, 3, 3) vs module (4, 3, 3, 3)" in msg
    assert "bn.running_var: checkpoint (8,) vs module (4,)" in msg and "wide.pth" in msg
    assert "conv.bias" in msg and "fc.weight" in msg
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())


def test_nothing_matched(project):
    torch.save({"features.0.weight": torch.zeros(2), "features.1.weight": torch.zeros(2)}, "other.pth")
    with pytest.raises(WeightsError, match=r"0 of 9 keys matched; first checkpoint keys: features\.0\.weight"):
        load_pretrained(Net(), "other.pth")


def test_missing_keys_are_an_error(project):
    dst = seeded(2)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    sd = seeded(1).state_dict()
    del sd["fc.weight"], sd["bn.running_mean"]
    torch.save(sd, "partial.pth")
    with pytest.raises(WeightsError, match=r"lacks 2 of the module's 9 tensors: bn\.running_mean, fc\.weight"):
        load_pretrained(dst, "partial.pth")
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())


def test_unrecognised_container(project):
    torch.save({"epoch": 3, "config": {"lr": 0.1}}, "odd.pth")
    with pytest.raises(WeightsError, match=r"no state dict found; top-level keys: epoch, config"):
        load_pretrained(Net(), "odd.pth")


def test_remap_hook(project):
    src, dst = seeded(1), seeded(2)
    torch.save({f"old_{k}": v for k, v in src.state_dict().items()}, "old.pth")

    def remap(sd):
        return {k.removeprefix("old_"): v for k, v in sd.items()}, "old release"

    report = load_pretrained(dst, "old.pth", remap=remap)
    assert report.layout == "old release" and same(src, dst)


# ULTRALYTICS_SAFE_LOAD: files of pickled objects are refused, never unpickled in full


def module_checkpoint(path: str, seed: int = 1) -> Net:
    """An Ultralytics-style checkpoint pickling a whole module ({'ema': module}); returns the module."""
    src = seeded(seed)
    torch.save({"epoch": -1, "model": None, "ema": src}, path)
    return src


@pytest.mark.parametrize("value", ["1", "true", " YES ", "On"])
def test_safe_load_refuses_pickled_modules(value, project, monkeypatch, load_calls):
    monkeypatch.setenv("ULTRALYTICS_SAFE_LOAD", value)
    assert safe_load_enabled()
    module_checkpoint("last.pt")
    dst = seeded(2)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(WeightsError) as e:
        load_pretrained(dst, "last.pt")
    msg = str(e.value)
    assert "last.pt" in msg and "pickled Python objects" in msg and "restricted loading forbids" in msg
    assert "ULTRALYTICS_SAFE_LOAD" in msg and "state_dict()" in msg and ".safetensors" in msg and "unset" in msg
    assert "Net" in msg  # the first class the file pickles
    assert load_calls == [True]  # never weights_only=False
    assert same_values(before, dst)

    torch.save(seeded(3).state_dict(), "plain.pt")  # plain state dicts still load
    load_pretrained(dst, "plain.pt")
    assert same(dst, seeded(3)) and load_calls == [True, True]


def test_safe_load_read_at_import_counts_too(project, monkeypatch, load_calls):
    """ultralytics.utils.SAFE_LOAD (the variable as Ultralytics read it at import) switches restriction on as well."""
    import ultralytics.utils

    module_checkpoint("last.pt")
    monkeypatch.setattr(ultralytics.utils, "SAFE_LOAD", True)
    with pytest.raises(WeightsError, match="restricted loading forbids"):
        read_weights("last.pt")
    assert load_calls == [True]


@pytest.mark.parametrize("value", [None, "0", "no", "", "false"])
def test_without_safe_load_module_checkpoints_still_load(value, project, monkeypatch, load_calls):
    if value is not None:
        monkeypatch.setenv("ULTRALYTICS_SAFE_LOAD", value)
    assert not safe_load_enabled()
    src, dst = module_checkpoint("last.pt"), seeded(2)
    report = load_pretrained(dst, "last.pt")
    assert same(src, dst) and report.container == "['ema'].state_dict()"
    assert load_calls == [True, False]


def test_blocked_globals_are_never_unpickled(project, load_calls):
    torch.save({"state_dict": seeded(1).state_dict(), "hook": os.getcwd}, "evil.pt")  # pickles posix.getcwd
    with pytest.raises(WeightsError, match=r"evil\.pt: the file references .*getcwd .*was not unpickled"):
        read_weights("evil.pt")
    assert load_calls == [True]


# Unreadable files: one clear error naming the file; the module is left as it was


def same_values(before: dict, module: nn.Module) -> bool:
    after = module.state_dict()
    return before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in after)


def _half(path: str) -> None:
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def _pt_half(path: str) -> None:
    torch.save(seeded(1).state_dict(), path)
    _half(path)


def _legacy_half(path: str) -> None:
    torch.save(seeded(1).state_dict(), path, _use_new_zipfile_serialization=False)
    _half(path)


def _module_half(path: str) -> None:
    module_checkpoint(path)
    _half(path)


def _legacy_module_half(path: str) -> None:  # fails only in the full unpickler, after the weights-only refusal
    torch.save({"ema": seeded(1)}, path, _use_new_zipfile_serialization=False)
    _half(path)


def _random(path: str) -> None:
    open(path, "wb").write(random.Random(0).randbytes(4096))


def _text(path: str) -> None:
    open(path, "w").write("model: yolo11n.pt\nepochs: 3\n")


def _empty(path: str) -> None:
    open(path, "wb").close()


def _safetensors_half(path: str) -> None:
    safetensors.torch.save_file(seeded(1).state_dict(), path)
    _half(path)


def _safetensors_header_only(path: str) -> None:
    safetensors.torch.save_file(seeded(1).state_dict(), path)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:8])


def _torch_as_safetensors(path: str) -> None:
    torch.save(seeded(1).state_dict(), path)


CORRUPT = {
    "half.pt": (_pt_half, "truncated or corrupt"),
    "half_legacy.pth": (_legacy_half, "truncated or corrupt"),
    "half_module.pt": (_module_half, "truncated or corrupt"),
    "half_legacy_module.pt": (_legacy_module_half, "truncated or corrupt"),
    "random.pt": (_random, "truncated or corrupt, or it is not a weights file"),
    "notes.pt": (_text, "not a weights file"),
    "empty.pt": (_empty, "empty (0 bytes)"),
    "empty.safetensors": (_empty, "empty (0 bytes)"),
    "half.safetensors": (_safetensors_half, "truncated or corrupt"),
    "header.safetensors": (_safetensors_header_only, "truncated or corrupt"),
    "torch.safetensors": (_torch_as_safetensors, "looks like a torch.save file: rename it to .pt"),
}


@pytest.mark.parametrize("safe", [False, True], ids=["default", "safe-load"])
@pytest.mark.parametrize("name", list(CORRUPT))
def test_unreadable_files_raise_one_clear_error(name, safe, project, monkeypatch, load_calls):
    make, expected = CORRUPT[name]
    make(name)
    if safe:
        monkeypatch.setenv("ULTRALYTICS_SAFE_LOAD", "1")
    dst = seeded(2)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(Exception) as e:
        load_pretrained(dst, name)
    assert type(e.value) is WeightsError, f"{type(e.value).__name__}: {e.value}"
    msg = str(e.value)
    assert name in msg
    if safe and name == "half_legacy_module.pt":  # its first pickled class is met before the cut
        assert "restricted loading forbids" in msg
    else:
        assert expected in msg, msg
        assert "empty" in msg or "Copy or download the file again" in msg
    assert same_values(before, dst)
    assert False not in load_calls or (name == "half_legacy_module.pt" and not safe)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated", "ignore:'torch.load' received a zip file")
def test_torchscript_archive_is_named(project):
    torch.jit.script(nn.Linear(2, 2)).save("scripted.pt")
    with pytest.raises(WeightsError, match=r"scripted\.pt: the file is a TorchScript archive .*torch\.jit\.load"):
        read_weights("scripted.pt")


# Prefixes (model.0., mmdetection's backbone.) found together with a key-layout remap


def old_layout(sd: dict) -> tuple[dict, str]:
    """A remap for a made-up older release whose keys start with 'old_'."""
    if not any(k.startswith("old_") for k in sd):
        return sd, ""
    return {k.removeprefix("old_"): v for k, v in sd.items()}, "old release"


def test_prefix_and_remap_together(project):
    """An mmdetection-style file ({'state_dict': {'backbone.old_...'}} plus neck/head keys) with a remap loads."""
    src, dst = seeded(1), seeded(2)
    sd = {f"backbone.old_{k}": v for k, v in src.state_dict().items()}
    sd |= {"neck.conv.weight": torch.zeros(4, 4, 1, 1), "bbox_head.fc.weight": torch.zeros(2, 4)}
    torch.save({"meta": {"epoch": 12}, "state_dict": sd}, "mmdet.pth")
    report = load_pretrained(dst, "mmdet.pth", remap=old_layout)
    assert same(src, dst)
    assert report.prefix == "backbone." and report.layout == "old release"
    assert report.container == "['state_dict'] below 'backbone.'" and report.skipped == []
    assert "below 'backbone.'" in str(report) and "old release" in str(report)


def test_prefix_without_remap_is_reported(project):
    src, dst = seeded(1), seeded(2)
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in src.state_dict().items()}}, "w.pth")
    report = load_pretrained(dst, "w.pth", remap=old_layout)
    assert same(src, dst) and report.prefix == "backbone." and report.layout == ""


def test_top_level_keys_win_over_a_prefix(project):
    src, other, dst = seeded(1), seeded(3), seeded(2)
    sd = dict(src.state_dict()) | {f"ema.{k}": v for k, v in other.state_dict().items()}
    torch.save(sd, "w.pth")
    report = load_pretrained(dst, "w.pth")
    assert same(src, dst) and report.prefix == "" and len(report.skipped) == 9


def test_two_equal_prefixes_are_an_error(project):
    dst = seeded(2)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    sd = {f"model.{i}.{k}": v for i in (1, 3) for k, v in seeded(i).state_dict().items()}
    torch.save({"model": sd}, "two.pt")
    with pytest.raises(WeightsError, match=r"two\.pt: .*several prefixes of the checkpoint \(model\.1\., model\.3\.\)"):
        load_pretrained(dst, "two.pt")
    assert same_values(before, dst)


def test_equal_candidates_under_two_prefixes_are_no_conflict(project):
    """A remap that re-adds a prefix (TimmBackbone's 'model.') makes two prefixes name the same tensors: no error."""
    src = seeded(1)
    dst = nn.Sequential(OrderedDict(model=seeded(2)))

    def add_model(sd):
        return (sd, "") if any(k.startswith("model.") for k in sd) else ({f"model.{k}": v for k, v in sd.items()}, "x")

    torch.save({f"backbone.model.{k}": v for k, v in src.state_dict().items()}, "w.pth")
    report = load_pretrained(dst, "w.pth", remap=add_model)
    assert same(src, dst.model) and report.prefix == "backbone." and report.layout == ""


def test_prefix_with_wrong_shapes_loads_nothing(project):
    dst = seeded(2)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in seeded(1, width=8).state_dict().items()}}, "wide.pth")
    with pytest.raises(WeightsError, match=r"wide\.pth \(keys below 'backbone\.'\): .*wrong shape"):
        load_pretrained(dst, "wide.pth")
    assert same_values(before, dst)


@torch.no_grad()
def test_efficientvit_official_layout_in_mmdetection_file(project):
    """The official EfficientViT inside an mmdetection checkpoint ({'state_dict': {'backbone.<official key>': ...}},
    with neck and head keys) loads and gives the outputs of the same weights loaded from the official file itself."""
    from test_efficientvit import timm_classifier, to_official

    from yolo_plugins import EfficientViT

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        official = to_official(timm_classifier("m0", seed=11))
        torch.save({"model": official}, "official.pth")
        sd = {f"backbone.{k}": v for k, v in official.items()}
        sd |= {
            "neck.lateral_convs.0.conv.weight": torch.randn(64, 64, 1, 1),
            "neck.fpn_convs.0.conv.weight": torch.randn(64, 64, 3, 3),
            "bbox_head.cls_convs.0.conv.weight": torch.randn(64, 64, 3, 3),
            "bbox_head.retina_cls.bias": torch.randn(9),
        }
        torch.save({"meta": {"mmdet_version": "2.25.0"}, "state_dict": sd}, "mmdet_effvit_m0.pth")

        ref = EfficientViT("m0", pretrained="official.pth").eval()
        block = EfficientViT("m0", pretrained="mmdet_effvit_m0.pth").eval()
        report = block.load_report
        assert report.prefix == "backbone." and "official" in report.layout
        assert report.container == "['state_dict'] below 'backbone.'"
        assert report.loaded == report.total == len(block.state_dict())
        assert report.skipped == ref.load_report.skipped  # the classifier head; neck/bbox_head lie outside the prefix
        assert same(ref, block)
        x = torch.randn(1, 3, 64, 96)
        for a, b in zip(block(x), ref(x)):
            assert torch.equal(a, b)
    finally:
        torch.set_num_threads(threads)
