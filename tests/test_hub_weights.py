"""``pretrained=True``: timm's default ImageNet weights through the Hugging Face cache (``yolo_plugins.weights.hub``).

Nothing here touches the network: every test builds its own hub cache in a temporary folder (the layout
``huggingface_hub`` writes: ``models--<org>--<name>/refs/main``, ``blobs/<hash>``, ``snapshots/<commit>/<file>`` as a
link to the blob) holding random tensors with the keys and shapes of timm's classifier, and every socket connection
or name lookup fails the test. The online code path (download into the cache) runs against a stand-in for
``hf_hub_download``.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
import yaml
from ultralytics import RTDETR, YOLO

from yolo_plugins import EfficientViT, TimmBackbone
from yolo_plugins.weights.files import WeightsError
from yolo_plugins.weights.hub import HubWeightsError, hub_cache_dir, hub_source, timm_weights_file

FORKS = Path(__file__).parent / "fork_yamls"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
EFFVIT_REPO = "timm/efficientvit_m0.r224_in1k"
RESNET_REPO = "timm/resnet18.a1_in1k"

EFFVIT_YAML = """
nc: 2
backbone:
  - [-1, 1, EfficientViT, [m0, True]]  # 0
  - [0, 1, Pick, [0]]  # 1-P3/8
  - [0, 1, Pick, [1]]  # 2-P4/16
  - [0, 1, Pick, [2]]  # 3-P5/32
head:
  - [[1, 2, 3], 1, Detect, [nc]]  # 4
"""

TIMM_YAML = """
nc: 2
scales:
  n: [1.0, 0.25, 1024]
backbone:
  - [-1, 1, TimmBackbone, [resnet18, [-3, -2, -1], True]]  # 0
  - [0, 1, Pick, [0]]  # 1-P3/8
  - [0, 1, Pick, [1]]  # 2-P4/16
  - [0, 1, Pick, [2]]  # 3-P5/32
head:
  - [[1, 2, 3], 1, Detect, [nc]]  # 4
"""


@pytest.fixture(autouse=True)
def no_network(monkeypatch) -> list:
    """Every connection attempt and name lookup fails the test; returns the list of attempts."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty, offline Hugging Face hub cache in ``tmp_path``; returns the cache folder."""
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home / "hub"


@pytest.fixture
def online(monkeypatch) -> None:
    """The hub is not switched off (neither in the environment nor in huggingface_hub's import-time constant)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@functools.cache
def classifier_tensors(model: str) -> dict[str, torch.Tensor]:
    """Random tensors with exactly the keys and shapes of timm's classifier ``model`` (as its hub file holds)."""
    with torch.device("meta"):
        net = timm.create_model(model, pretrained=False)
    g = torch.Generator().manual_seed(sum(map(ord, model)))
    out = {}
    for k, v in net.state_dict().items():
        if v.is_floating_point():
            t = torch.randn(v.shape, generator=g)
            out[k] = t.abs() + 0.5 if k.endswith("running_var") else t
        else:
            out[k] = torch.full(v.shape, 7, dtype=v.dtype)
    return out


def put_in_cache(cache: Path, repo_id: str, tensors: dict, filename: str = "model.safetensors") -> Path:
    """Lay the file out as ``hf_hub_download`` does: a blob, a snapshot link to it, ``refs/main``; returns the link."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    blob = repo / "blobs" / f"{abs(hash((repo_id, filename))):040x}"
    blob.parent.mkdir(parents=True, exist_ok=True)
    if filename.endswith(".safetensors"):
        safetensors.torch.save_file(tensors, str(blob))
    else:
        torch.save(tensors, blob)
    link = repo / "snapshots" / COMMIT / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return link


def same(module: torch.nn.Module, tensors: dict[str, torch.Tensor], *keys: str) -> bool:
    """Whether ``module`` holds exactly the file's tensors under these (timm classifier) keys."""
    own = module.state_dict()
    return all(torch.equal(own[k], tensors[k]) for k in keys)


def test_hub_source_is_timms_pretrained_config():
    src = hub_source("efficientvit_m0")
    assert (src.repo_id, src.revision, src.filenames) == (EFFVIT_REPO, None, ("model.safetensors", "pytorch_model.bin"))
    assert hub_source("resnet18").repo_id == RESNET_REPO
    assert hub_source("resnet18.tv_in1k").repo_id == "timm/resnet18.tv_in1k"  # an explicit tag
    with pytest.raises(HubWeightsError, match="TimmBackbone: pretrained=True: timm has no weights on the Hugging Face"):
        hub_source("no_such_net_v0", "TimmBackbone")


def test_cache_folder_is_read_from_the_environment_at_each_call(tmp_path, monkeypatch):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub_cache_dir() == tmp_path / "cache"


def test_efficientvit_true_loads_the_cached_weights(hub, no_network):
    sd = classifier_tensors("efficientvit_m0")
    link = put_in_cache(hub, EFFVIT_REPO, sd)
    block = EfficientViT("m0", pretrained=True)
    report = block.load_report
    assert report.path == link.parent.resolve() / "model.safetensors"  # the snapshot link: its suffix tells the format
    assert report.loaded == report.total == len(block.state_dict())
    assert report.skipped and all(k.startswith("head.") for k in report.skipped)
    assert same(block, sd, "stages.1.blocks.0.mixer.m.attn.qkvs.0.conv.weight", "patch_embed.conv1.bn.running_var")

    # The classifier stem with P3 from the stem: the same file, the third stage's keys skipped (as with local files).
    stem = EfficientViT("m0", True, 16, "stem")
    assert stem.load_report.loaded == stem.load_report.total
    assert any(k.startswith("stages.2.") for k in stem.load_report.skipped)
    assert same(stem, sd, "stages.1.downsample.res1.0.m.conv.weight", "patch_embed.conv3.conv.weight")
    assert no_network == []


def test_efficientvit_true_in_a_yaml(hub):
    from ultralytics.nn.tasks import DetectionModel

    sd = classifier_tensors("efficientvit_m0")
    put_in_cache(hub, EFFVIT_REPO, sd)
    model = DetectionModel(yaml.safe_load(EFFVIT_YAML), verbose=False)
    backbone = model.model[0]
    assert isinstance(backbone, EfficientViT) and backbone.load_report is not None
    assert same(backbone, sd, "patch_embed.conv2.conv.weight", "stages.2.blocks.2.ffn1.m.pw2.conv.weight")


def test_timm_backbone_true_in_a_yaml(hub):
    from ultralytics.nn.tasks import DetectionModel

    sd = classifier_tensors("resnet18")
    put_in_cache(hub, RESNET_REPO, sd)
    model = DetectionModel(yaml.safe_load(TIMM_YAML), verbose=False)
    backbone = model.model[0]
    assert isinstance(backbone, TimmBackbone) and backbone.channels == [128, 256, 512]
    report = backbone.load_report
    assert report.loaded == report.total and "fc.weight" in report.skipped
    assert same(backbone.model, sd, "conv1.weight", "layer4.1.conv2.weight")


def test_fork_rows_with_true_load_timms_weights(hub, tmp_path):
    resnet, effvit = classifier_tensors("resnet18"), classifier_tensors("efficientvit_m0")
    put_in_cache(hub, RESNET_REPO, resnet)
    put_in_cache(hub, EFFVIT_REPO, effvit)

    text = (FORKS / "rtdetr-resnet18-fork.yaml").read_text().replace("resnet18, [False]", "resnet18, [True]", 1)
    (tmp_path / "rtdetr-resnet18-fork.yaml").write_text(text)
    backbone = RTDETR(str(tmp_path / "rtdetr-resnet18-fork.yaml")).model.model[0]
    assert isinstance(backbone, TimmBackbone) and backbone.load_report is not None
    assert same(backbone.model, resnet, "layer3.0.downsample.0.weight", "layer4.1.conv2.weight")

    text = (FORKS / "yolov8-effvit-fork.yaml").read_text().replace("EfficientViT_M0, []", "EfficientViT_M0, [True]", 1)
    (tmp_path / "yolov8-effvit-fork.yaml").write_text(text)
    backbone = YOLO(str(tmp_path / "yolov8-effvit-fork.yaml")).model.model[0]
    assert isinstance(backbone, EfficientViT) and backbone.load_report is not None
    assert same(backbone, effvit, "patch_embed.conv4.conv.weight", "stages.2.blocks.0.mixer.m.attn.qkvs.0.conv.weight")


def test_nothing_cached_and_offline_is_a_clear_error(hub, tmp_path, no_network):
    from ultralytics.nn.tasks import DetectionModel

    with pytest.raises(HubWeightsError) as e:
        DetectionModel(yaml.safe_load(EFFVIT_YAML), verbose=False)
    msg = str(e.value)
    assert isinstance(e.value, WeightsError) and e.value.layer == 0
    assert msg.startswith("layer 0: EfficientViT: pretrained=True takes timm's default pretrained weights for ")
    assert "'efficientvit_m0'" in msg and f"repo {EFFVIT_REPO}, file model.safetensors (or pytorch_model.bin)" in msg
    assert f"not in the Hugging Face cache {hub}" in msg and "HF_HUB_OFFLINE" in msg
    assert (
        f"`hf download {EFFVIT_REPO} model.safetensors`" in msg and "pass a local weights file instead of True" in msg
    )

    with pytest.raises(HubWeightsError, match=rf"^TimmBackbone: pretrained=True .*'resnet18'.*{RESNET_REPO}"):
        TimmBackbone("resnet18", pretrained=True)

    text = (FORKS / "rtdetr-resnet18-fork.yaml").read_text().replace("resnet18, [False]", "resnet18, [True]", 1)
    (tmp_path / "fork.yaml").write_text(text)
    with pytest.raises(WeightsError, match=rf"^layer 0: TimmBackbone: pretrained=True .*{RESNET_REPO}") as e:
        RTDETR(str(tmp_path / "fork.yaml"))
    assert e.value.layer == 0
    assert no_network == []


def test_pytorch_model_bin_when_the_repo_has_no_safetensors(hub):
    sd = classifier_tensors("efficientvit_m0")
    link = put_in_cache(hub, EFFVIT_REPO, sd, "pytorch_model.bin")
    block = EfficientViT("m0", pretrained=True)
    assert block.load_report.path.name == link.name == "pytorch_model.bin"
    assert same(block, sd, "patch_embed.conv1.conv.weight")


def test_cache_first_when_online(hub, online, no_network):
    """A cached file is used as it is: no connection, not even to check for a newer revision."""
    sd = classifier_tensors("efficientvit_m0")
    put_in_cache(hub, EFFVIT_REPO, sd)
    block = EfficientViT("m0", pretrained=True)
    assert same(block, sd, "patch_embed.conv3.conv.weight")
    assert no_network == []


def test_download_only_when_not_cached(hub, online, monkeypatch):
    """Online and not cached: hf_hub_download fetches into the cache (a stand-in here), safetensors first."""
    import huggingface_hub
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    sd = classifier_tensors("efficientvit_m0")
    calls = []

    def fake_download(repo_id, filename, *, revision=None, cache_dir=None, local_files_only=False, **kwargs):
        calls.append((repo_id, filename, cache_dir, local_files_only))
        if filename == "model.safetensors":
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(put_in_cache(Path(cache_dir), repo_id, sd, filename))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    block = EfficientViT("m0", pretrained=True)
    assert same(block, sd, "patch_embed.conv1.conv.weight")
    files = ["model.safetensors", "pytorch_model.bin"]
    assert calls == [(EFFVIT_REPO, f, str(hub), False) for f in files]  # the cache was read first, without it
    assert same(EfficientViT("m0", pretrained=True), sd, "patch_embed.conv1.conv.weight")  # now from the cache
    assert len(calls) == 2

    def unreachable(repo_id, filename, **kwargs):
        try:
            raise ConnectionError("[Errno 111] Connection refused")
        except ConnectionError as e:
            raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub") from e

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(HubWeightsError) as e:
        TimmBackbone("resnet18", pretrained=True)
    msg = str(e.value)
    assert f"repo {RESNET_REPO}, file model.safetensors" in msg and f"not in the Hugging Face cache {hub}" in msg
    assert "could not be reached (ConnectionError: [Errno 111] Connection refused" in msg
    assert "HF_HUB_OFFLINE=1" in msg


def test_false_none_and_local_files_never_ask_the_hub(tmp_path, monkeypatch, no_network):
    import huggingface_hub

    import yolo_plugins.weights.hub

    def refuse(*args, **kwargs):
        raise AssertionError("the hub was asked although pretrained was not True")

    monkeypatch.setattr(yolo_plugins.weights.hub, "timm_weights_file", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    for pretrained in (False, None):
        assert EfficientViT("m0", pretrained=pretrained).load_report is None
    assert TimmBackbone("resnet18", [-1], False).load_report is None

    sd = classifier_tensors("efficientvit_m0")
    path = tmp_path / "m0.safetensors"
    safetensors.torch.save_file(sd, str(path))
    block = EfficientViT("m0", pretrained=str(path))
    assert block.load_report.path == path.resolve()
    assert same(block, sd, "patch_embed.conv1.conv.weight")
    assert no_network == []


def test_timm_weights_file_returns_the_cached_snapshot(hub):
    link = put_in_cache(hub, RESNET_REPO, {"w": torch.zeros(1)}, "pytorch_model.bin")
    assert timm_weights_file("resnet18") == link
