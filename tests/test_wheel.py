"""The built wheel: what it ships, and that an installed copy works on its own, outside the checkout."""

from __future__ import annotations

import importlib.util
import json
import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # the checkout
PACKAGE = ROOT / "plugins" / "yolo_plugins"
ZOO = sorted(ROOT.glob("cfg/models/*.yaml"))
TOP_LEVEL = {"yolo_plugins", "yolo_plugins.pth", "yolo_plugins_autoload.py"}  # besides the .dist-info folder

# Run by the venv's python in a folder outside the checkout; prints one JSON line of facts for the test to check.
CHECK = """
import json, sys
from pathlib import Path

tmp = Path(sys.argv[1])
from ultralytics import RTDETR
from ultralytics.data import utils as data_utils
from ultralytics.utils.checks import check_file

import yolo_plugins, yolo_plugins_autoload
from yolo_plugins import paths
from yolo_plugins.host import scales

def attempt(fn):
    try:
        return fn()
    except Exception as e:
        return f"error: {type(e).__name__}: {e}"

import ultralytics

facts = {
    "path": sys.path,
    "ultralytics": ultralytics.__file__,
    "package": yolo_plugins.__file__,
    "autoload": yolo_plugins_autoload.__file__,
    "cfg": str(paths.cfg_dir()),
}
for name in ("rtdetr-effvit.yaml", "rtdetr-effvit-s.yaml"):
    yaml = RTDETR(name).model.yaml
    found, _ = scales._resolve(Path(name))
    facts[name] = {"scale": yaml.get("scale"), "yaml_file": yaml.get("yaml_file"), "found": str(found)}
facts["active"] = yolo_plugins.is_active()  # the first build activated the plugin the .pth armed
facts["check_file"] = attempt(lambda: str(Path(check_file("shapes.yaml")).resolve()))

# check_det_dataset without generating the set: data sets live in tmp, where an (empty) val folder counts as present;
# check_font is stubbed, as it would look for Arial.ttf online.
data_utils.DATASETS_DIR = tmp / "datasets"
(data_utils.DATASETS_DIR / "shapes" / "images" / "val").mkdir(parents=True)
data_utils.check_font = lambda *args, **kwargs: None
data = attempt(lambda: data_utils.check_det_dataset("shapes.yaml"))
if not isinstance(data, str):
    data = {"yaml_file": str(Path(data["yaml_file"]).resolve()), "nc": data["nc"], "path": str(data["path"])}
facts["dataset"] = data
print(json.dumps(facts))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from the checkout by pip (hatchling fetched for build isolation unless it is installed)."""
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-w", str(out)]
    if importlib.util.find_spec("hatchling") is not None:
        cmd.append("--no-build-isolation")
    r = subprocess.run([*cmd, str(ROOT)], capture_output=True, text=True, timeout=600)
    if r.returncode and "No matching distribution found for hatchling" in r.stdout + r.stderr:
        pytest.skip("hatchling is neither installed nor available from the package index")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    (found,) = out.glob("yolo_plugins-*.whl")
    return found


def test_wheel_ships_the_package_the_zoo_and_the_startup_files(wheel):
    """The package, every zoo YAML and the data-set YAML (as in the checkout), the .pth and start-up module on top."""
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        top = {n.split("/")[0] for n in names}
        dist_info = {t for t in top if t.endswith(".dist-info")}
        assert top - dist_info == TOP_LEVEL  # no plugins/, tests/, cfg/ or anything else at the top
        assert len(dist_info) == 1
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]

        assert "yolo_plugins/__init__.py" in names
        sources = {f"yolo_plugins/{p.relative_to(PACKAGE).as_posix()}" for p in PACKAGE.rglob("*.py")}
        assert not {s for s in sources - names if "__pycache__" not in s}  # every module of the package

        assert any(p.name == "rtdetr-effvit.yaml" for p in ZOO)
        packaged = {ROOT / "cfg" / "datasets" / "shapes.yaml": "yolo_plugins/cfg/datasets/shapes.yaml"}
        packaged |= {p: f"yolo_plugins/cfg/models/{p.name}" for p in ZOO}
        packaged[ROOT / "plugins" / "yolo_plugins.pth"] = "yolo_plugins.pth"
        packaged[ROOT / "plugins" / "yolo_plugins_autoload.py"] = "yolo_plugins_autoload.py"
        for src, arc in packaged.items():
            assert arc in names, arc
            assert z.read(arc) == src.read_bytes(), f"{arc} differs from {src}"

        (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "yolo-plugins = yolo_plugins.commands.cli:main" in z.read(entry_points).decode()


def running_site_dirs() -> list[Path]:
    """The site-packages folders of the interpreter running the tests (a venv's own, and the base's only if that venv
    includes system site-packages; the user site when it is on ``sys.path``) that exist."""
    dirs = [Path(d) for d in site.getsitepackages()]
    if site.ENABLE_USER_SITE and site.getusersitepackages() in sys.path:
        dirs.append(Path(site.getusersitepackages()))
    return [d for d in dirs if d.is_dir()]


def fresh_venv_seeing_the_running_environment(venv: Path) -> Path:
    """A venv (no pip, no system site-packages) whose site-packages ends with a ``.pth`` file that adds the running
    environment's site folders as site dirs (their ``.pth`` files processed, an editable install of this project
    included), after the venv's own; returns the venv's python.

    ``venv --system-site-packages`` made from ``sys.executable`` is not that: inside a venv it exposes the base
    interpreter's packages, not the venv's, so Ultralytics would be missing there when a user runs the tests from a
    fresh venv (the README's set-up, which CI runs)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    r = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = "".join(f"import site; site.addsitedir({str(d)!r})\n" for d in running_site_dirs())
    (Path(r.stdout.strip()) / "zz_running_environment.pth").write_text(lines)
    return python


def test_installed_wheel_works_outside_the_checkout(wheel, tmp_path):
    """In a fresh venv that sees the running environment's packages (editable install of the checkout included) the
    wheel's copy is what runs."""
    assert not tmp_path.resolve().is_relative_to(ROOT)
    venv = tmp_path / "venv"
    python = fresh_venv_seeing_the_running_environment(venv)
    pip = [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check", str(wheel)]
    r = subprocess.run(pip, capture_output=True, text=True, timeout=300)  # the running environment's pip
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("YOLO_")}
    env.update(YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(tmp_path / "config"))
    r = subprocess.run(
        [str(python), "-c", CHECK, str(tmp_path.resolve())],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=work,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    facts = json.loads(r.stdout.strip().splitlines()[-1])

    venv = venv.resolve()
    paths = [Path(p).resolve() for p in facts["path"]]
    (venv_site,) = {p for p in paths if p.is_relative_to(venv) and p.name == "site-packages"}
    outer = [d.resolve() for d in running_site_dirs()]
    assert [p for p in paths if p in outer] == outer  # the running environment's packages are visible...
    assert paths.index(venv_site) < paths.index(outer[0])  # ...after the venv's own
    assert any(Path(facts["ultralytics"]).resolve().is_relative_to(d) for d in outer), facts["ultralytics"]
    checkout = ROOT / "plugins"
    if any(str(checkout) in pth.read_text() for d in outer for pth in d.glob("*.pth")):  # an editable install here:
        assert checkout in paths and paths.index(venv_site) < paths.index(checkout), facts["path"]  # after the wheel
    pkg = venv_site / "yolo_plugins"
    assert Path(facts["package"]).resolve() == pkg / "__init__.py", facts["path"]  # not the checkout's, editable or not
    assert Path(facts["autoload"]).resolve() == venv_site / "yolo_plugins_autoload.py"
    assert facts["active"]  # the venv's .pth armed it at `import ultralytics`, the first build activated it
    assert Path(facts["cfg"]).resolve() == pkg / "cfg"
    assert (venv / ("Scripts" if os.name == "nt" else "bin") / "yolo-plugins").exists()

    default, small = facts["rtdetr-effvit.yaml"], facts["rtdetr-effvit-s.yaml"]
    assert default["scale"] == "n" and small["scale"] == "s"
    zoo_file = pkg / "cfg" / "models" / "rtdetr-effvit.yaml"
    assert Path(default["yaml_file"]).resolve() == zoo_file
    assert Path(default["found"]).resolve() == Path(small["found"]).resolve() == zoo_file

    shapes = pkg / "cfg" / "datasets" / "shapes.yaml"
    assert facts["check_file"] == str(shapes)
    data = {"yaml_file": str(shapes), "nc": 6, "path": str(tmp_path.resolve() / "datasets" / "shapes")}
    assert facts["dataset"] == data
