"""The start-up hook, tested as a user runs things: fresh interpreters, the ``yolo`` command, the off switch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import testonly_blocks

TESTS = Path(__file__).parent


def run(args: list[str], cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_PLUGINS_")}
    env = {**base, "PYTHONPATH": str(TESTS), "YOLO_OFFLINE": "1", **env}
    return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def py(code: str, **env: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-c", code], **env)


OURS = ("torch", "ultralytics", "timm", "yolo_plugins", "yolo_plugins_autoload", "plugins")
MODULES = f"print(sorted(m for m in sys.modules if m.split('.')[0] in {OURS}))"


def test_startup_hook_is_installed_and_imports_nothing_heavy():
    r = py(f"import sys; {MODULES}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['yolo_plugins_autoload']"  # only the tiny stdlib-only start-up module


def test_autoload_off_imports_nothing_of_ours_at_startup():
    r = py(f"import sys; {MODULES}", YOLO_PLUGINS_AUTOLOAD="0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("autoload", ["1", "0"])
def test_a_users_own_plugins_package_is_what_their_app_imports(tmp_path, autoload):
    """A very common package name: an app's own ``plugins/`` must win, with the hook on and off."""
    app = tmp_path / "app"
    (app / "plugins").mkdir(parents=True)
    (app / "plugins" / "__init__.py").write_text("MINE = True\n")
    (app / "app.py").write_text(
        "import plugins\nimport ultralytics  # activates yolo-plugins when autoloading is on\n"
        "import sys\nprint(plugins.__file__, getattr(plugins, 'MINE', False), 'yolo_plugins' in sys.modules)\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_PLUGINS_") and k != "PYTHONPATH"}
    r = subprocess.run(
        [sys.executable, "app.py"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=app,
        env={**base, "YOLO_OFFLINE": "1", "YOLO_PLUGINS_AUTOLOAD": autoload},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    path, mine, ours = r.stdout.split()[-3:]
    assert Path(path) == app / "plugins" / "__init__.py" and mine == "True"
    assert ours == ("True" if autoload == "1" else "False")


FIRST_USE = """
import sys, ultralytics
print(sorted(m for m in sys.modules if m.startswith("yolo_plugins")), "ultralytics.nn.tasks" in sys.modules)
from ultralytics import RTDETR
from ultralytics.nn import tasks
from ultralytics.engine import trainer
import yolo_plugins as yp
from yolo_plugins.host import first_use
print(first_use.is_armed(), yp.is_active(), "Pick" in vars(tasks), trainer.load_checkpoint.__wrapped__.__module__)
m = RTDETR("rtdetr-effvit.yaml")
print(first_use.is_armed(), yp.is_active(), type(m.model.model[0]).__name__, tasks.Pick.__module__)
print(trainer.load_checkpoint is tasks.load_checkpoint, hasattr(tasks.load_checkpoint, "__wrapped__"))
yp.deactivate()
print(yp.is_active(), "Pick" in vars(tasks), trainer.load_checkpoint is tasks.load_checkpoint)
print(tasks.load_checkpoint.__module__, getattr(tasks.parse_model, "__wrapped__", None))
"""


def test_importing_ultralytics_arms_and_the_first_build_activates():
    """``import ultralytics`` costs the plugin only its start-up modules; the first model built activates it."""
    r = py(FIRST_USE)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()[-6:]
    start_up = ["yolo_plugins", "yolo_plugins.host", "yolo_plugins.host.first_use", "yolo_plugins_autoload"]
    assert lines[0] == f"{start_up} False"  # host/__init__ is a docstring only: nothing more is imported
    assert lines[1] == "True False False ultralytics.nn.tasks"  # a trampoline waits, nothing is patched yet
    assert lines[2] == "False True EfficientViT yolo_plugins.blocks.pick"
    assert lines[3] == "True True"  # imported by name while armed: the plugin's replacement now
    assert lines[4] == "False False True"  # stock again, also where the trampoline had been imported by name
    assert lines[5] == "ultralytics.nn.tasks None"


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_autoload_off_keeps_ultralytics_stock(value):
    code = (
        "import ultralytics, yolo_plugins, sys; from ultralytics.nn import tasks\n"
        "print(yolo_plugins.is_active(), 'Pick' in vars(tasks), 'torch' in sys.modules)\n"
    )
    r = py(code, YOLO_PLUGINS_AUTOLOAD=value)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False", "True"]


def test_python_api_builds_a_plugin_yaml_without_explicit_import(tmp_path):
    cfg = tmp_path / "gate.yaml"
    cfg.write_text(testonly_blocks.TINY_YAML)
    code = f"from ultralytics import YOLO\nm = YOLO({str(cfg)!r})\nprint(type(m.model.model[2]).__name__)"
    r = py(code, YOLO_PLUGINS_IMPORT="testonly_blocks")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "TestOnlyGate"
    off = py(code, YOLO_PLUGINS_IMPORT="testonly_blocks", YOLO_PLUGINS_AUTOLOAD="0")
    assert off.returncode != 0 and "KeyError: 'TestOnlyGate'" in off.stderr  # the stock parser's bare error


def test_yolo_cli_predicts_with_a_plugin_yaml(tiny_data, tmp_path):
    yolo = shutil.which("yolo")
    assert yolo, "the ultralytics 'yolo' command is not on PATH"
    cfg = tmp_path / "gate.yaml"
    cfg.write_text(testonly_blocks.TINY_YAML)
    img = next((Path(tiny_data).parent / "images" / "val").glob("*.jpg"))
    args = [yolo, "predict", f"model={cfg}", f"source={img}", "imgsz=64", "save=True", f"project={tmp_path}", "name=p"]
    r = run(args, cwd=tmp_path, YOLO_PLUGINS_IMPORT="testonly_blocks")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert list((tmp_path / "p").glob("*.jpg")), "no annotated image saved"
    bad = tmp_path / "typo.yaml"
    bad.write_text(testonly_blocks.TINY_YAML.replace("TestOnlyGate", "TestonlyGate"))
    r = run(
        [yolo, "predict", f"model={bad}", f"source={img}", "imgsz=64"],
        cwd=tmp_path,
        YOLO_PLUGINS_IMPORT="testonly_blocks",
    )
    assert r.returncode != 0
    assert "layer 2: unknown module 'TestonlyGate' — did you mean 'TestOnlyGate'?" in r.stdout + r.stderr


@pytest.mark.parametrize("importable", [True, False])
def test_pth_line_is_quiet_when_the_package_is_gone(tmp_path, importable):
    """The .pth line runs at every interpreter start; a deleted editable checkout must not print errors there."""
    line = (TESTS.parent / "plugins" / "yolo_plugins.pth").read_text().strip()
    code = f"import sys\n{line}\nprint('yolo_plugins_autoload' in sys.modules)"
    env = {"PYTHONPATH": str(TESTS.parent / "plugins") if importable else ""}
    r = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.strip() == str(importable)


def test_first_use_traps_cover_every_row_the_activation_patches():
    """A row added to the hook's table must start activation too, or be the same function imported by name."""
    from ultralytics.models.yolo import model as ymodel
    from ultralytics.nn import tasks
    from ultralytics.utils import checks, torch_utils

    from yolo_plugins.host import first_use, hook

    trapped = {(tasks if owner is None else getattr(tasks, owner), attr) for owner, attr in first_use.TASKS_TRAPS}
    trapped |= {(getattr(ymodel, owner), attr) for owner, attr in first_use.YOLO_TRAPS}
    trapped |= {(getattr(torch_utils, owner), attr) for owner, attr in first_use.EMA_TRAPS}
    trapped.add((checks, "check_file"))
    module_functions = {attr for owner, attr in trapped if not isinstance(owner, type)}
    rows = hook._state["patches"]
    assert len(rows) >= len(trapped)
    for row in rows:
        by_name = not isinstance(row.owner, type) and row.attr in module_functions
        assert (row.owner, row.attr) in trapped or by_name, f"{row.owner}.{row.attr} has no first-use trampoline"
