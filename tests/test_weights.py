"""The local weights loader: where files are found, which containers unwrap, and all-or-nothing validation."""

from __future__ import annotations

import logging
import socket
from collections import OrderedDict

import pytest
import safetensors.torch
import torch
from torch import nn

import yolo_plugins.paths
from yolo_plugins.weights import LoadReport, WeightsError, load_pretrained, read_weights, resolve_weights


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
    """A throw-away project root (with weights/) and a separate working directory."""
    root, cwd = tmp_path / "project", tmp_path / "cwd"
    (root / "weights").mkdir(parents=True)
    cwd.mkdir()
    monkeypatch.setattr(yolo_plugins.paths, "project_root", lambda: root)
    monkeypatch.chdir(cwd)
    return root, cwd


def test_resolve_cwd_first_then_project_weights(project, no_network):
    root, cwd = project
    torch.save({}, root / "weights" / "a.pt")
    assert resolve_weights("a.pt") == (root / "weights" / "a.pt").resolve()
    torch.save({}, cwd / "a.pt")
    assert resolve_weights("a.pt") == (cwd / "a.pt").resolve()
    assert resolve_weights(root / "weights" / "a.pt") == (root / "weights" / "a.pt").resolve()


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


def test_plain_state_dicts_load_weights_only(project, monkeypatch):
    torch.save(seeded(1).state_dict(), "w.pt")
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_pretrained(seeded(2), "w.pt")
    assert calls == [True]


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
