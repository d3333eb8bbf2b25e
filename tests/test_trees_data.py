"""benchmarks/trees.py on a fabricated wheel (no network): label lines, clipping, the split by source, the cache and
the error when the wheel is neither cached nor fetchable."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import trees  # noqa: E402


def _voc(boxes: list[tuple[int, int, int, int]], name: str = "Tree") -> str:
    objects = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax>"
        "</bndbox></object>"
        for a, b, c, d in boxes
    )
    return f"<annotation><folder>data</folder><size><width>0</width></size>{objects}</annotation>"


def _png(w: int, h: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (40, 120, 40)).save(buf, format="PNG")
    return buf.getvalue()


# Source "a" (train), 100 x 64 px; at tile 64 the training tiles start at x = 0 and 36 (flush with the edge).
A_BOXES = [
    (4, 4, 20, 20),  # inside the first tile only
    (50, 10, 90, 30),  # 35% inside the first tile (dropped there), wholly inside the second
    (30, 40, 60, 50),  # inside the first, 80% inside the second (clipped to x 36..60)
    (70, 60, 71, 63),  # 1 px wide: degenerate, dropped everywhere
]


@pytest.fixture
def wheel(tmp_path) -> Path:
    """A zip laid out like the deepforest wheel: one training and one validation source."""
    path = tmp_path / "src" / trees.WHEEL
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{trees.PREFIX}a.png", _png(100, 64))
        z.writestr(f"{trees.PREFIX}a.xml", _voc(A_BOXES))
        z.writestr(f"{trees.PREFIX}b.png", _png(64, 64))
        z.writestr(f"{trees.PREFIX}b.xml", _voc([(10, 10, 30, 40)], name="Dead"))
    return path


def _labels(root: Path, split: str, name: str) -> list[str]:
    return (root / "labels" / split / f"{name}.txt").read_text().splitlines()


def test_tiles_labels_clipping_and_split(tmp_path, wheel):
    out = tmp_path / "trees"
    data = trees.build(out, cache=wheel.parent, tile=64, splits={"a": "train", "b": "val"})
    assert data == out.resolve() / "trees.yaml"
    d = yaml.safe_load(data.read_text())
    assert d["names"] == {0: "tree"} and (d["train"], d["val"]) == ("images/train", "images/val")
    assert Path(d["path"]) == out.resolve()

    # the split is by source: every tile of a in train, of b in val, nothing else
    train = sorted(p.stem for p in (out / "images" / "train").glob("*.png"))
    val = sorted(p.stem for p in (out / "images" / "val").glob("*.png"))
    assert train == ["a_x0_y0", "a_x36_y0"] and val == ["b_x0_y0"]
    assert sorted(p.stem for p in (out / "labels" / "train").glob("*.txt")) == train

    # label lines: class 0, normalised centre and size; clipped boxes keep the part inside the tile
    assert _labels(out, "train", "a_x0_y0") == [
        "0 0.187500 0.187500 0.250000 0.250000",  # (4, 4, 20, 20)
        "0 0.703125 0.703125 0.468750 0.156250",  # (30, 40, 60, 50) whole
    ]
    assert _labels(out, "train", "a_x36_y0") == [
        "0 0.531250 0.312500 0.625000 0.312500",  # (50, 10, 90, 30) -> (14, 10, 54, 30) in the tile
        "0 0.187500 0.703125 0.375000 0.156250",  # (30, 40, 60, 50) clipped to (0, 40, 24, 50)
    ]
    assert _labels(out, "val", "b_x0_y0") == ["0 0.312500 0.390625 0.312500 0.468750"]  # "Dead" is a tree too


def test_validation_remainder_is_padded_to_a_full_square_tile(tmp_path, wheel):
    """RT-DETR's validator stretches an image to a square: a 36 x 64 remainder reaches it as a 64 x 64 tile with the
    image at the top left and letterbox grey beside it, its boxes normalised by the full tile."""
    from PIL import Image

    out = tmp_path / "trees"
    trees.build(out, cache=wheel.parent, tile=64, splits={"b": "train", "a": "val"})
    val = sorted(p.stem for p in (out / "images" / "val").glob("*.png"))
    assert val == ["a_x0_y0", "a_x64_y0"]  # no overlap: x 0..63, then the remainder x 64..99
    full, rest = (Image.open(out / "images" / "val" / f"{n}.png") for n in val)
    assert full.size == rest.size == (64, 64)
    assert rest.getpixel((35, 10)) == (40, 120, 40) and rest.getpixel((36, 10)) == rest.getpixel((63, 63)) == trees.PAD
    # (50, 10, 90, 30): 35% in the first tile (dropped there); in the remainder x 64..90 is 65% of it (kept), i.e.
    # (0, 10, 26, 30) in the tile, normalised by the full 64 px, not by the remainder's 36
    assert _labels(out, "val", "a_x64_y0") == ["0 0.203125 0.312500 0.406250 0.312500"]
    assert _labels(out, "val", "a_x0_y0")[0] == "0 0.187500 0.187500 0.250000 0.250000"  # full tiles unchanged


def test_a_set_built_before_the_padding_is_rebuilt(tmp_path, wheel, capsys):
    """A set whose trees.yaml carries the settings line of the unpadded tiling is rebuilt, not reused."""
    from PIL import Image

    out = tmp_path / "trees"
    splits = {"b": "train", "a": "val"}
    data = trees.build(out, cache=wheel.parent, tile=64, splits=splits)
    old = trees._settings(wheel, 64).split(", val remainders")[0]  # the line as sets before the padding have it
    data.write_text(old + "\n" + data.read_text().split("\n", 1)[1])
    Image.new("RGB", (36, 64)).save(out / "images" / "val" / "a_x64_y0.png")  # an unpadded remainder
    capsys.readouterr()
    trees.build(out, cache=wheel.parent, tile=64, splits=splits)
    assert "already built" not in capsys.readouterr().out
    assert Image.open(out / "images" / "val" / "a_x64_y0.png").size == (64, 64)


def test_build_reuses_a_finished_set_and_redoes_another_tile(tmp_path, wheel, capsys):
    out = tmp_path / "trees"
    splits = {"a": "train", "b": "val"}
    data = trees.build(out, cache=wheel.parent, tile=64, splits=splits)
    stamp = data.stat().st_mtime_ns
    trees.build(out, cache=wheel.parent, tile=64, splits=splits)
    assert data.stat().st_mtime_ns == stamp and "already built" in capsys.readouterr().out
    trees.build(out, cache=wheel.parent, tile=32, splits=splits)  # another tile size: rebuilt, old tiles gone
    assert not (out / "images" / "train" / "a_x36_y0.png").exists()
    assert "too small" in data.read_text()  # a handful of tiles is flagged


def test_offsets_cover_the_axis():
    assert trees.starts(2472, 320, 240) == [0, 240, 480, 720, 960, 1200, 1440, 1680, 1920, 2152]
    assert trees.starts(1035, 320, 320, flush=False) == [0, 320, 640, 960]  # val: no overlap, the remainder last
    assert trees.starts(990, 320, 320, flush=False) == [0, 320, 640]  # a 30 px remainder (< tile / 8) is left out
    assert trees.starts(50, 64, 48) == [0]


def test_cached_wheel_is_used_without_pip(tmp_path, wheel, monkeypatch):
    def no_pip(*args, **kwargs):
        raise AssertionError("pip should not run when the wheel is cached")

    monkeypatch.setattr(trees.subprocess, "run", no_pip)
    assert trees.fetch(wheel.parent) == wheel


def test_offline_error_names_the_command(tmp_path, monkeypatch):
    calls = []

    def offline(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that satisfies the requirement")

    monkeypatch.setattr(trees.subprocess, "run", offline)
    cache = tmp_path / "empty"
    with pytest.raises(trees.TreesDataError) as e:
        trees.build(tmp_path / "trees", cache=cache)
    assert calls == [[sys.executable, "-m", "pip", "download", "--no-deps", "deepforest==2.1.0", "-d", str(cache)]]
    assert f"python -m pip download --no-deps deepforest==2.1.0 -d {cache}" in str(e.value)
    assert "Could not find a version" in str(e.value)
    with pytest.raises(SystemExit, match="pip download --no-deps deepforest==2.1.0"):
        trees.main([f"cache={cache}", f"out={tmp_path / 'trees'}"])
