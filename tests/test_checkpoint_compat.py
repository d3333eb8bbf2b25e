"""Checkpoints stay loadable: committed checkpoints of every plugin block kind load, restricted too, and match.

``fixtures/checkpoints/`` holds tiny Ultralytics checkpoints written by an earlier version of the plugin
(``make_checkpoints.py`` there; never rewritten to make these tests pass) with their recorded outputs. The
``yolo_plugins`` import paths they pickle are the ones docs/checkpoint-compatibility.md's table promises to keep.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import lzma
import os
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ultralytics.nn import tasks

import yolo_plugins
from yolo_plugins import registry
from yolo_plugins.blocks import pick

if not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):  # Ultralytics' restricted loading too
    pytest.skip("restricted checkpoint loading needs torch >= 2.6", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"
NAMES = sorted(p.name.removesuffix(".pt.xz") for p in FIXTURES.glob("*.pt.xz"))
DOCS = "docs/checkpoint-compatibility.md, section 'Checkpoint compatibility'"
HOSTS = ("torch.", "ultralytics.", "timm.", "yolo_plugins.")  # every module a plugin checkpoint may reference


def documented_paths() -> set[str]:
    """The import paths of docs/checkpoint-compatibility.md's table (the first column of its rows)."""
    text = (ROOT / "docs" / "checkpoint-compatibility.md").read_text(encoding="utf-8")
    section = text.split("\n## Checkpoint compatibility\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(yolo_plugins\.[\w.]+)` \|", section, flags=re.MULTILINE))


@contextlib.contextmanager
def fresh_safe_globals() -> Iterator[None]:
    """Run with torch's process-wide ``weights_only`` allow-list empty, then put it back as it was.

    Ultralytics registers what a restricted load needed for the life of the process, and
    ``get_unsafe_globals_in_checkpoint`` leaves out what is registered: each test sees a checkpoint as a new process
    would, and leaves nothing behind for other tests.
    """
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        yield
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(saved)


def pickled_globals(path: Path) -> set[str]:
    """Every class/function a checkpoint pickles outside torch's built-in ``weights_only`` allow-list."""
    with fresh_safe_globals():
        return set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))


def ours(names: set[str]) -> set[str]:
    """The plugin's own paths among pickled names."""
    return {n for n in names if n.startswith("yolo_plugins.")}


def resolve(path: str) -> type:
    """The class an import path names now (an alias or a shim gives the class it stands for)."""
    module, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise AssertionError(f"{path} is no longer importable ({e}); {DOCS} promises it stays") from None


def unpack(name: str, folder: Path) -> Path:
    """The checkpoint as ``torch.save`` wrote it (the repository keeps it xz-compressed)."""
    path = folder / f"{name}.pt"
    path.write_bytes(lzma.decompress((FIXTURES / f"{name}.pt.xz").read_bytes()))
    return path


def recorded(name: str) -> dict[str, np.ndarray]:
    """The fixture's ``.npz``: input image, recorded outputs, and the strings describing what wrote it."""
    with np.load(FIXTURES / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


@torch.no_grad()
def run(model: torch.nn.Module, image: np.ndarray) -> dict[str, torch.Tensor]:
    """What ``make_checkpoints.record`` stores: decoded predictions and per-channel means of layer 0's outputs."""
    feats: list[torch.Tensor] = []
    handle = model.model[0].register_forward_hook(lambda m, i, o: feats.extend(o))
    try:
        out = model.eval()(torch.from_numpy(image).float() / 255)
    finally:
        handle.remove()
    pred = out[0] if isinstance(out, (tuple, list)) else out
    return {"pred": pred, **{f"feat{i}_mean": f.double().mean(dim=(0, 2, 3)) for i, f in enumerate(feats)}}


def assert_outputs(name: str, got: dict[str, torch.Tensor]) -> None:
    """The outputs equal the recorded ones (float32 on a CPU; the tolerance only absorbs kernel differences)."""
    ref = recorded(name)
    keys = sorted(k for k in ref if k == "pred" or k.startswith("feat"))
    assert sorted(got) == keys, f"{name}: outputs {sorted(got)}, recorded {keys}"
    for k in keys:
        torch.testing.assert_close(
            got[k], torch.from_numpy(ref[k]), rtol=1e-4, atol=1e-4, msg=lambda m, k=k: f"{name}: {k}: {m}"
        )


def test_every_plugin_block_is_documented_and_has_a_fixture():
    """Each block the plugin defines has its import path in the documented table; the fixtures are there."""
    blocks = {e["class"] for e in yolo_plugins.registered() if e["source"] == "yolo-plugins"}
    blocks = {b for b in blocks if b.startswith("yolo_plugins.")}  # not blocks other tests register
    assert blocks <= documented_paths(), f"plugin blocks missing from {DOCS}: {sorted(blocks - documented_paths())}"
    assert NAMES, f"no checkpoint fixtures in {FIXTURES}"


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory) -> dict[str, Path]:
    """Every fixture checkpoint, decompressed once per module: name -> .pt path."""
    folder = tmp_path_factory.mktemp("checkpoints")
    return {name: unpack(name, folder) for name in NAMES}


def test_fixtures_cover_every_block_kind_and_the_documented_paths(unpacked):
    """The committed checkpoints pickle only documented paths, and cover every plugin block and documented class."""
    pickled = set().union(*(ours(pickled_globals(p)) for p in unpacked.values()))
    assert pickled <= documented_paths(), (
        f"committed checkpoints pickle {sorted(pickled - documented_paths())}, not in {DOCS}"
    )
    covered = {resolve(p) for p in pickled}
    blocks = {e.cls for e in registry.entries().values() if e.source == "yolo-plugins"}
    blocks = {c for c in blocks if c.__module__.startswith("yolo_plugins.")}  # not blocks other tests register
    uncovered = sorted(f"{c.__module__}.{c.__qualname__}" for c in blocks if c not in covered)
    uncovered += sorted(p for p in documented_paths() if resolve(p) not in covered)
    assert not uncovered, (
        f"classes no committed checkpoint holds: {uncovered}; add a tiny model with them to "
        "tests/fixtures/checkpoints/make_checkpoints.py and run it (it writes only the missing fixtures)"
    )


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_loads_restricted_and_gives_its_recorded_outputs(name, unpacked, one_thread):
    """Restricted (``safe_only=True``) and full loading both give the recorded outputs after ``.float()``."""
    path = unpacked[name]
    names = pickled_globals(path)
    assert all(n.startswith(HOSTS) for n in names), sorted(n for n in names if not n.startswith(HOSTS))
    assert ours(names) <= documented_paths(), (
        f"{name} pickles {sorted(ours(names) - documented_paths())}, not in {DOCS}: those paths must stay importable"
    )
    for n in ours(names):
        resolve(n)  # a clear message before the unpickler's
    for safe_only in (True, False):
        with fresh_safe_globals():
            ckpt, _ = tasks.torch_safe_load(str(path), safe_only=safe_only)
        assert ckpt["model"] is None and isinstance(ckpt["ema"], tasks.DetectionModel)
        assert {p.dtype for p in ckpt["ema"].parameters()} == {torch.float16}  # as the engine stores it
        assert_outputs(name, run(ckpt["ema"].float(), recorded(name)["image"]))


@pytest.mark.parametrize("name", NAMES)
def test_a_model_built_now_pickles_documented_paths_of_the_same_classes(name, unpacked, tmp_path):
    """A class renamed or moved without updating the table fails here (a new block kind belongs in a new fixture)."""
    import timm

    cfg = str(recorded(name)["yaml"])
    missing = [m for m in re.findall(r"TimmBackbone, \[(\w+)", cfg) if not timm.is_model(m)]
    if missing:
        pytest.skip(f"timm {timm.__version__} has no {missing}")
    torch.manual_seed(0)
    path = tmp_path / "now.pt"
    torch.save({"model": None, "ema": tasks.DetectionModel(yaml.safe_load(cfg), verbose=False).half()}, path)
    now, then = ours(pickled_globals(path)), ours(pickled_globals(unpacked[name]))
    assert now <= documented_paths(), (
        f"{name}: a model built now pickles {sorted(now - documented_paths())}, not in {DOCS}. Checkpoints name "
        "plugin classes by import path: list the new path there and keep the old one importable (a renamed class "
        "keeps its old name as an alias, a moved one a shim at its old module)"
    )
    assert {resolve(n) for n in now} == {resolve(n) for n in then}, f"{name}: {sorted(now)} vs {sorted(then)}"


def test_documented_paths_import_and_the_package_names_are_the_same_classes():
    """Each documented path is an nn.Module class; ``yolo_plugins.<Name>`` is that class, not a second one."""
    for path in sorted(documented_paths()):
        cls, attr = resolve(path), path.rpartition(".")[2]
        assert isinstance(cls, type) and issubclass(cls, torch.nn.Module), path
        if attr in yolo_plugins.__all__:
            assert getattr(yolo_plugins, attr) is cls, f"yolo_plugins.{attr} is not {path}"


@pytest.mark.parametrize("how", ["renamed", "moved"])
def test_an_alias_keeps_an_old_path_loadable_restricted(how, tmp_path, monkeypatch):
    """What the docs promise for a rename (module-level alias) or a move (shim module) works for restricted loading."""
    old_module, old_name = (
        ("yolo_plugins.blocks.pick", "OldPick") if how == "renamed" else ("yolo_plugins.blocks.old_pick", "Pick")
    )
    shim = types.ModuleType(old_module)
    setattr(shim, old_name, pick.Pick)
    path = tmp_path / "old.pt"
    attr = "__qualname__" if how == "renamed" else "__module__"  # type slots: monkeypatch cannot restore them
    with monkeypatch.context() as m:  # write a checkpoint as the old code would have: the class under its old path
        if how == "renamed":
            m.setattr(pick, old_name, pick.Pick, raising=False)
        else:
            m.setitem(sys.modules, old_module, shim)
        setattr(pick.Pick, attr, old_name if how == "renamed" else old_module)
        try:
            torch.save({"model": pick.Pick(1)}, path)
        finally:
            setattr(pick.Pick, attr, "Pick" if how == "renamed" else "yolo_plugins.blocks.pick")
    assert ours(pickled_globals(path)) == {f"{old_module}.{old_name}"}
    try:
        with fresh_safe_globals(), pytest.raises(TypeError, match="outside the supported"):  # no alias: refused
            tasks.torch_safe_load(str(path), safe_only=True)
        if how == "renamed":
            monkeypatch.setattr(pick, old_name, pick.Pick, raising=False)
        else:
            monkeypatch.setitem(sys.modules, old_module, shim)
        with fresh_safe_globals():
            ckpt, _ = tasks.torch_safe_load(str(path), safe_only=True)
        assert type(ckpt["model"]) is pick.Pick and ckpt["model"].index == 1
    finally:
        (tasks._SafeLoad._registry or {}).pop(f"{old_module}.{old_name}", None)


def test_yolo_loads_the_checkpoints_with_ultralytics_safe_load(unpacked):
    """How users meet it: ``ULTRALYTICS_SAFE_LOAD=1`` and ``YOLO(path)`` in a fresh process (plugin autoloaded)."""
    code = """
import json, sys, numpy as np, torch
from ultralytics import YOLO
out = {}
for name, path, npz in json.loads(sys.argv[1]):
    torch.serialization.clear_safe_globals()  # each file as the first one a process loads
    model = YOLO(path).model.eval()
    with np.load(npz) as z:
        image, ref = z["image"], z["pred"]
    with torch.no_grad():
        pred = model(torch.from_numpy(image).float() / 255)[0]
    out[name] = [type(model).__name__, float((pred - torch.from_numpy(ref)).abs().max()), float(np.abs(ref).max())]
print(json.dumps(out))
"""
    files = [[n, str(p), str(FIXTURES / f"{n}.npz")] for n, p in unpacked.items()]
    env = {**os.environ, "ULTRALYTICS_SAFE_LOAD": "1", "YOLO_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("YOLO_PLUGINS_AUTOLOAD", None)
    r = subprocess.run(
        [sys.executable, "-c", code, json.dumps(files)], capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    from yolo_plugins.commands.main_job import is_rtdetr_head

    for name, (cls, diff, scale) in result.items():
        with np.load(FIXTURES / f"{name}.npz") as z:
            head = yaml.safe_load(str(z["yaml"]))["head"][-1][2]
        want = "RTDETRDetectionModel" if is_rtdetr_head(head) else "DetectionModel"  # the model class of its head
        assert cls == want and diff <= 1e-4 * max(1.0, scale), (name, cls, diff)
