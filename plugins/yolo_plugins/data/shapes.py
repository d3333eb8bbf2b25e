"""Shapes: a seeded, generated object-detection data set in the Ultralytics format (nothing is downloaded).

Six classes of filled shapes (circle, square, triangle, star, cross, ring) of about 20 px to half the image, rotated,
overlapping (each object keeps at least half of its pixels visible), among clutter that belongs to no class (lines,
arcs, dots, outlines, blurred blobs), on gradient, stripe, checker and noise backgrounds, at varied image sizes and
aspect ratios. Boxes are the tight boxes of each object's visible pixels.

    from yolo_plugins.data.shapes import generate

    generate("datasets/shapes")  # images/{train,val,test}/*.jpg and labels/{train,val,test}/*.txt

``cfg/datasets/shapes.yaml`` calls this from its ``download:`` script, so ``data=cfg/datasets/shapes.yaml`` generates
the set on first use like any downloadable Ultralytics data set. The same seed gives byte-identical files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
SPLITS = ("train", "val", "test")
MIN_VISIBLE = 0.5  # an object keeps at least this fraction of its pixels when later objects overlap it
JPEG_QUALITY = 90
MIN_RADIUS = 10.0  # px: the smallest objects are about 20 px across before the border or overlaps cut them


def generate(
    root: str | os.PathLike,
    n_train: int = 600,
    n_val: int = 150,
    n_test: int = 100,
    imgsz: int = 320,
    seed: int = 0,
    max_objects: int = 6,
) -> Path:
    """Write the data set under ``root`` (``images/<split>/*.jpg``, ``labels/<split>/*.txt``) and return ``root``.

    Image sides vary between 0.6 and 1.0 times ``imgsz``. Each split is generated into a temporary folder and moved in
    place when complete (labels first, then images), so an interrupted run never leaves a split that looks finished.
    Existing splits under ``root`` are replaced.
    """
    if imgsz < 32:
        raise ValueError(f"imgsz must be at least 32, got {imgsz}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for split_index, split in enumerate(SPLITS):
        with tempfile.TemporaryDirectory(dir=root, prefix=f".{split}-") as tmp:
            tmp = Path(tmp)
            (tmp / "images").mkdir()
            (tmp / "labels").mkdir()
            for i in range(counts[split]):
                rng = np.random.default_rng([seed, split_index, i])
                image, labels, _ = render(rng, imgsz, max_objects)
                stem = f"{split}_{i:05d}"
                ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if not ok:
                    raise OSError(f"could not encode {stem}.jpg")
                (tmp / "images" / f"{stem}.jpg").write_bytes(buf.tobytes())
                (tmp / "labels" / f"{stem}.txt").write_text(format_labels(labels, image.shape[1], image.shape[0]))
            for kind in ("labels", "images"):
                dest = root / kind / split
                if dest.exists():
                    shutil.rmtree(dest)
                dest.parent.mkdir(parents=True, exist_ok=True)
                (tmp / kind).rename(dest)
        cache = root / "labels" / f"{split}.cache"
        if cache.exists():
            cache.unlink()  # Ultralytics' label cache of a previous set
    return root


def format_labels(labels: list[tuple[int, int, int, int, int]], w: int, h: int) -> str:
    """YOLO label lines ``cls xc yc w h`` (normalised) from pixel boxes ``(cls, x0, y0, x1, y1)``, x1/y1 exclusive."""
    lines = []
    for c, x0, y0, x1, y1 in labels:
        lines.append(f"{c} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}")
    return "".join(line + "\n" for line in lines)


def render(rng: np.random.Generator, imgsz: int, max_objects: int) -> tuple[np.ndarray, list[tuple], np.ndarray]:
    """One BGR image, its boxes ``(cls, x0, y0, x1, y1)`` in pixels (x1/y1 exclusive) and the object index per pixel.

    The index map holds -1 where no object is visible and ``k`` where the k-th labelled object is.
    """
    w = int(imgsz * rng.uniform(0.6, 1.0))
    h = int(imgsz * rng.uniform(0.6, 1.0))
    image = background(rng, h, w)
    for _ in range(int(rng.integers(0, 4))):  # clutter under the objects
        clutter(rng, image)
    owner = np.full((h, w), -1, np.int16)  # which object owns each pixel
    areas: list[int] = []
    classes: list[int] = []
    n = int(rng.integers(1, max_objects + 1))
    for _ in range(n * 4):  # attempts
        if len(classes) == n:
            break
        c = int(rng.integers(len(CLASSES)))
        mask = shape_mask(rng, c, h, w)
        area = int(mask.sum())
        if area < 30:
            continue
        if classes:  # would this object hide too much of an earlier one?
            covered = np.bincount(owner[mask] + 1, minlength=len(classes) + 1)[1:]
            visible = np.bincount(owner.ravel() + 1, minlength=len(classes) + 1)[1:]
            if np.any((visible - covered) < MIN_VISIBLE * np.asarray(areas)):
                continue
        paint(rng, image, mask)
        owner[mask] = len(classes)
        areas.append(area)
        classes.append(c)
    for _ in range(int(rng.integers(0, 3))):  # thin clutter over the objects
        clutter(rng, image, thin=True)
    labels = []
    for k, c in enumerate(classes):
        ys, xs = np.nonzero(owner == k)
        labels.append((c, int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    noise = rng.normal(0, rng.uniform(0, 8), image.shape)
    image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return image, labels, owner


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A gradient, stripe, checker or smooth-noise background, BGR uint8."""
    kind = int(rng.integers(4))
    c0 = rng.uniform(0, 255, 3)
    c1 = (c0 + rng.uniform(-90, 90, 3)).clip(0, 255)  # a background of moderate contrast
    if kind == 0:  # linear gradient at a random angle
        a = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = xx * np.cos(a) + yy * np.sin(a)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    elif kind == 1:  # stripes
        a, period = rng.uniform(0, np.pi), rng.uniform(12, 48)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = 0.5 + 0.5 * np.sin((xx * np.cos(a) + yy * np.sin(a)) * 2 * np.pi / period)
    elif kind == 2:  # checker
        cell = int(rng.integers(16, 64))
        yy, xx = np.mgrid[0:h, 0:w]
        t = (((yy // cell) + (xx // cell)) % 2).astype(np.float32) * rng.uniform(0.2, 0.6)
    else:  # smooth noise
        small = rng.uniform(0, 1, (max(2, h // 16), max(2, w // 16))).astype(np.float32)
        t = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    image = c0 * (1 - t[..., None]) + c1 * t[..., None]
    return image.clip(0, 255).astype(np.uint8)


def _polygon(cx: float, cy: float, radii: np.ndarray, angles: np.ndarray) -> np.ndarray:
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).round().astype(np.int32)


def shape_mask(rng: np.random.Generator, c: int, h: int, w: int) -> np.ndarray:
    """Boolean mask of one object of class ``c``: radius log-uniform from ``MIN_RADIUS`` to a quarter of the short
    side, its centre at least a quarter of the radius inside the image (the border never leaves only a sliver)."""
    r = float(np.exp(rng.uniform(np.log(MIN_RADIUS), np.log(max(MIN_RADIUS + 1.0, min(h, w) / 4)))))
    inset = 0.25 * r
    cx = rng.uniform(min(inset, w / 2), max(w - inset, w / 2))
    cy = rng.uniform(min(inset, h / 2), max(h - inset, h / 2))
    rot = rng.uniform(0, 2 * np.pi)
    m = np.zeros((h, w), np.uint8)
    name = CLASSES[c]
    if name == "circle":
        cv2.circle(m, (round(cx), round(cy)), round(r), 1, -1)
    elif name == "ring":
        cv2.circle(m, (round(cx), round(cy)), round(r), 1, -1)
        cv2.circle(m, (round(cx), round(cy)), round(r * rng.uniform(0.45, 0.7)), 0, -1)
    elif name == "square":
        cv2.fillPoly(m, [_polygon(cx, cy, np.full(4, r), rot + np.arange(4) * np.pi / 2)], 1)
    elif name == "triangle":
        cv2.fillPoly(m, [_polygon(cx, cy, np.full(3, r), rot + np.arange(3) * 2 * np.pi / 3)], 1)
    elif name == "star":
        radii = np.tile([r, r * rng.uniform(0.35, 0.5)], 5)
        cv2.fillPoly(m, [_polygon(cx, cy, radii, rot + np.arange(10) * np.pi / 5)], 1)
    elif name == "cross":
        t = r * rng.uniform(0.25, 0.4)  # half arm thickness
        arm = np.array([[-r, -t], [r, -t], [r, t], [-r, t]])
        rmat = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
        for a in (arm, arm[:, ::-1]):
            cv2.fillPoly(m, [(a @ rmat.T + [cx, cy]).round().astype(np.int32)], 1)
    return m.astype(bool)


def paint(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray) -> None:
    """Fill ``mask`` with a colour that stands out from what is under it (optionally a two-colour gradient)."""
    under = image[mask].mean(0)
    for _ in range(10):
        color = rng.uniform(0, 255, 3)
        if np.abs(color - under).sum() > 120:
            break
    ys, xs = np.nonzero(mask)
    if rng.random() < 0.3:  # shaded object
        t = (xs - xs.min()) / max(1, xs.max() - xs.min())
        color2 = (color * rng.uniform(0.5, 1.0)).clip(0, 255)
        image[ys, xs] = (color * (1 - t[:, None]) + color2 * t[:, None]).astype(np.uint8)
    else:
        image[ys, xs] = color.astype(np.uint8)


def clutter(rng: np.random.Generator, image: np.ndarray, thin: bool = False) -> None:
    """Draw something that is no class: a line, polyline, arc, outline rectangle, dots or a blurred blob."""
    h, w = image.shape[:2]
    color = tuple(float(v) for v in rng.uniform(0, 255, 3))
    kind = int(rng.integers(3 if thin else 6))
    p = lambda: (int(rng.integers(w)), int(rng.integers(h)))  # noqa: E731
    thick = int(rng.integers(1, 3))
    if kind == 0:
        cv2.line(image, p(), p(), color, thick, cv2.LINE_AA)
    elif kind == 1:
        pts = np.array([p() for _ in range(int(rng.integers(3, 6)))], np.int32)
        cv2.polylines(image, [pts], False, color, thick, cv2.LINE_AA)
    elif kind == 2:
        axes = (int(rng.integers(5, max(6, w // 3))), int(rng.integers(5, max(6, h // 3))))
        start = float(rng.uniform(0, 360))
        cv2.ellipse(image, p(), axes, float(rng.uniform(0, 180)), start, start + rng.uniform(40, 200), color, thick)
    elif kind == 3:
        x0, y0 = p()
        cv2.rectangle(image, (x0, y0), (x0 + int(rng.integers(8, w // 2)), y0 + int(rng.integers(8, h // 2))), color, 1)
    elif kind == 4:
        for _ in range(int(rng.integers(5, 30))):
            cv2.circle(image, p(), int(rng.integers(1, 3)), color, -1)
    else:
        blob = np.zeros((h, w), np.float32)
        cv2.ellipse(blob, p(), (int(rng.integers(8, w // 3)), int(rng.integers(8, h // 3))), 0, 0, 360, 1.0, -1)
        blob = cv2.GaussianBlur(blob, (0, 0), float(rng.uniform(4, 12)))[..., None] * rng.uniform(0.3, 0.8)
        image[:] = (image * (1 - blob) + np.asarray(color) * blob).clip(0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> None:
    """``python -m yolo_plugins.data.shapes ROOT [--seed N] ...``: write the data set."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    for name, default in (("n-train", 600), ("n-val", 150), ("n-test", 100), ("imgsz", 320), ("seed", 0)):
        ap.add_argument(f"--{name}", type=int, default=default)
    a = ap.parse_args(argv)
    generate(a.root, n_train=a.n_train, n_val=a.n_val, n_test=a.n_test, imgsz=a.imgsz, seed=a.seed)
    print(f"wrote {a.root}")


if __name__ == "__main__":
    main()
