"""Small helpers shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


def randomise_bn(module: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine terms, so that folding them is really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def cpu_has_vnni() -> bool:
    """Whether this CPU has 8-bit dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX), read from Linux's
    ``/proc/cpuinfo`` (False where it cannot be read). Without them the INT8 kernels of OpenVINO and ONNX Runtime
    multiply 8-bit pairs into 16-bit sums that can saturate (OpenVINO's "saturation issue"), so an INT8 export loses
    accuracy that it keeps on a CPU with them."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def tiny_shapes(root: Path, imgsz: int = 64) -> Path:
    """A tiny generated detection set (8 train, 4 val, 2 test images) under ``root``; returns its data YAML."""
    from yolo_plugins.data.shapes import CLASSES, generate

    root = generate(root, n_train=8, n_val=4, n_test=2, imgsz=imgsz, seed=0)
    names = "".join(f"  {i}: {c}\n" for i, c in enumerate(CLASSES))
    data = root / "tiny.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\ntest: images/test\nnames:\n{names}")
    return data


def random_images(imgsz: int, seed: int = 0) -> list[torch.Tensor]:
    """Two batches of four random images in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(4, 3, imgsz, imgsz, generator=g) for _ in range(2)]


def letterboxed(folder: Path, imgsz: int) -> list[torch.Tensor]:
    """The ``*.jpg`` images in ``folder`` as one batch, letterboxed to ``imgsz`` square as Ultralytics' exporter and
    predictor do (RGB in [0, 1])."""
    import cv2
    from ultralytics.data.augment import LetterBox

    box = LetterBox(new_shape=(imgsz, imgsz), auto=False)
    images = [box(image=cv2.imread(str(f)))[..., ::-1].copy() for f in sorted(folder.glob("*.jpg"))]
    return [torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255]


def calibrate(model: nn.Module, imgsz: int, seed: int = 0, images: list[torch.Tensor] | None = None) -> nn.Module:
    """Make a freshly built model's outputs well-scaled and input-dependent, deterministically.

    Every BatchNorm gets the running statistics of a few random images (or of the batches ``images``), its variances
    floored at their mean (a near-constant channel divided by its tiny spread amplifies rounding noise); then every
    convolution that ends a branch of the head (a YOLO head's box and class outputs) is rescaled so that each output
    channel has zero mean and unit spread on those images, as a trained head's logits roughly do. Without these two
    steps a YOLO head's logits reach the hundreds and fused and unfused PyTorch alone differ by more than 1e-3 in a
    score.
    """
    model.eval()
    images = images or random_images(imgsz, seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches
        m.train()
    with torch.no_grad():
        for x in images:
            model(x)
    for m in bns:
        m.eval()
        m.running_var.clamp_(min=float(m.running_var.mean()))  # near-constant channels would amplify rounding
    head = model.model[-1]
    ends = [s[-1] for s in head.modules() if isinstance(s, nn.Sequential) and isinstance(s[-1], nn.Conv2d)]
    outputs: dict[nn.Module, list[torch.Tensor]] = {c: [] for c in ends}
    hooks = [c.register_forward_hook(lambda c, _, y: outputs[c].append(y.transpose(0, 1).flatten(1))) for c in ends]
    with torch.no_grad():
        for x in images:
            model(x)
        for h in hooks:
            h.remove()
        for c, ys in outputs.items():
            y = torch.cat(ys, 1)
            mean, std = y.mean(1), y.std(1).clamp(min=1e-6)
            c.weight.div_(std.view(-1, 1, 1, 1))
            if c.bias is not None:
                c.bias.sub_(mean).div_(std)
    return model


def spread_outputs(
    model: nn.Module, imgsz: int, gain: float = 0.5, seed: int = 0, images: list[torch.Tensor] | None = None
) -> nn.Module:
    """Give a freshly built RT-DETR distinct, input-dependent scores and boxes, deterministically (after
    :func:`calibrate`).

    With random weights every class logit of every query sits near the same value (scores about 0.05, the top 50 within
    0.03 of each other), so which (query, class) pairs an RT-DETR returns is decided by noise; and the box heads' last
    layers start at zero (Ultralytics' initialisation), so every box is an anchor, whatever the decoder computes. Here
    the last layers of the encoder's heads (query selection, reference boxes) and of the last decoder layer's heads get
    random weights where they are zero and are rescaled so that each output (class logit, box logit) has zero mean and
    spread ``gain`` over a few random images (or the batches ``images``): the top detections then score about 0.8, a
    few hundredths apart, their boxes move a few pixels off the anchors, and both change from image to image.
    """
    model.eval()
    head = model.model[-1]
    images = images or random_images(imgsz, seed)
    g = torch.Generator().manual_seed(seed)
    ends = [
        head.enc_score_head,
        head.enc_bbox_head.layers[-1],
        head.dec_score_head[-1],
        head.dec_bbox_head[-1].layers[-1],
    ]
    for linear in ends:  # in this order: the encoder's heads pick the queries and their boxes, the decoder's follow
        ys: list[torch.Tensor] = []
        hook = linear.register_forward_hook(lambda m, _, y, ys=ys: ys.append(y.reshape(-1, y.shape[-1])))
        with torch.no_grad():
            if not linear.weight.any():
                linear.weight.copy_(torch.randn(linear.weight.shape, generator=g) / linear.in_features**0.5)
            for x in images:
                model(x)
            hook.remove()
            y = torch.cat(ys)
            mean, scale = y.mean(0), gain / y.std(0).clamp(min=1e-6)
            linear.weight.mul_(scale[:, None])
            linear.bias.sub_(mean).mul_(scale)
    return model
