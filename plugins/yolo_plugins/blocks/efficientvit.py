"""``EfficientViT``: the M0-M5 EfficientViT backbones (Liu et al., CVPR 2023) of timm as a three-output YAML layer.

The network is timm's own ``efficientvit_mN`` (``timm.models.efficientvit_msra``): this block keeps its patch
embedding and its three stages (the classifier head is not built) and returns the three stage outputs. Nothing of
timm's code is copied; timm is imported on first use so that ``import ultralytics`` stays fast.

* Detection stem (default ``stem_stride=8``): the last patch-embedding convolution runs at stride 1, so the stages sit
  at strides 8/16/32 (P3/P4/P5). ``stem_stride=16`` keeps the classifier's stem (16/32/64). Parameter shapes are the
  same in both, so ImageNet weights load into either.
* ``p3="stem"`` (with ``stem_stride=16``): P3 is the stem's own stride-8 map (after its third convolution, half
  the first stage's width), P4/P5 are the first two stages at strides 16/32 and the third stage is not built. The
  stride-8 stage, which costs the most time at detection resolutions (window attention over an 80x80 map at 640), is
  gone; weights of the third stage in a checkpoint are skipped.
* Window attention keeps the window sizes of the 224x224 ImageNet model (7, 7 and 4 in the last stage, whose
  attention biases are sized for that); timm pads every feature map to whole windows, so any input size works.
* ``pretrained=<path>`` loads a local timm or official (microsoft/Cream) checkpoint (see ``yolo_plugins.weights``);
  ``pretrained=True`` loads timm's default ImageNet weights (``timm/efficientvit_mN.r224_in1k``) from the Hugging Face
  cache, downloading them into it only when missing (``yolo_plugins.weights.hub``), through the same loader.
  Nothing downloads unless ``True`` is given.
* ``fuse()`` folds every conv+BN and BN+linear pair in place (the engine's ``model.fuse()`` calls it).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..registry import register
from ..weights.files import LoadReport, StateDict, load_pretrained
from .timm_base import TimmBasedBackbone

# Stage widths of each variant (the paper's Table, as timm's efficientvit_m0..m5 build them; a test checks timm).
WIDTHS = {
    "m0": (64, 128, 192),
    "m1": (128, 144, 192),
    "m2": (128, 192, 224),
    "m3": (128, 240, 320),
    "m4": (128, 256, 384),
    "m5": (192, 288, 384),
}
STEM_STRIDES = (8, 16)
P3_SOURCES = ("stage", "stem")
IMG_SIZE = 224  # the ImageNet resolution: fixes the attention window sizes and so the attention-bias shapes


def _variant(variant: str) -> str:
    v = str(variant).lower().removeprefix("efficientvit_")
    if v not in WIDTHS:
        raise ValueError(f"EfficientViT: unknown variant {variant!r}; valid variants: {', '.join(WIDTHS)}")
    return v


def _stem_stride(stem_stride: int) -> int:
    if stem_stride not in STEM_STRIDES:
        raise ValueError(
            f"EfficientViT: stem_stride must be 8 (detection stem, outputs at strides 8/16/32) or 16 (classifier "
            f"stem, outputs at strides 16/32/64), got {stem_stride!r}"
        )
    return int(stem_stride)


def _p3(p3: str, stem_stride: int) -> str:
    if p3 not in P3_SOURCES:
        raise ValueError(f"EfficientViT: p3 must be 'stage' or 'stem', got {p3!r}")
    if p3 == "stem" and stem_stride != 16:
        raise ValueError(
            f"EfficientViT: p3='stem' takes P3 from the classifier stem at stride 8 and needs stem_stride=16, "
            f"got stem_stride={stem_stride!r}"
        )
    return p3


def to_timm_layout(sd: StateDict) -> tuple[StateDict, str]:
    """Rename the keys of an official microsoft/Cream checkpoint, or of a timm ``features_only`` model, to timm's
    ``efficientvit_mN`` layout; returns the dict unchanged (and ``""``) for anything else.

    Official layout (``EfficientViT/classification/model/efficientvit.py``): ``patch_embed`` is a Sequential of
    Conv2d_BN at indices 0/2/4/6 (children ``c``, ``bn``); ``blocks1`` holds stage 0's blocks; ``blocks2``/``blocks3``
    start with the downsampling Sequential, the PatchMerging and the second Sequential, then the stage's blocks;
    ``BN_Linear`` names its linear ``l``; ``attention_bias_idxs`` is a saved buffer there and recomputed in timm.
    """
    if any(k.startswith(("blocks1.", "patch_embed.0.c.")) for k in sd):
        out = {}
        for k, v in sd.items():
            if k.endswith("attention_bias_idxs"):
                continue
            parts = k.split(".")
            if len(parts) >= 2 and parts[-2] in ("c", "l"):
                parts[-2] = {"c": "conv", "l": "linear"}[parts[-2]]
            if parts[0] == "patch_embed" and parts[1].isdigit():
                parts[1] = f"conv{int(parts[1]) // 2 + 1}"
            elif parts[0] == "blocks1":
                parts = ["stages", "0", "blocks", *parts[1:]]
            elif parts[0] in ("blocks2", "blocks3") and parts[1].isdigit():
                stage, j = str(int(parts[0][-1]) - 1), int(parts[1])
                if j < 3:
                    parts = ["stages", stage, "downsample", ("res1", "patchmerge", "res2")[j], *parts[2:]]
                else:
                    parts = ["stages", stage, "blocks", str(j - 3), *parts[2:]]
            out[".".join(parts)] = v
        return out, "official microsoft/Cream release"
    if any(k.startswith(("patch_embed_conv", "stages_")) for k in sd):
        return {re.sub(r"^(patch_embed|stages)_", r"\1.", k): v for k, v in sd.items()}, "timm features_only"
    return sd, ""


@register(rule="multi_output", fuse=True)
class EfficientViT(TimmBasedBackbone):
    """EfficientViT M0-M5 backbone returning its three stage outputs (YAML: ``[-1, 1, EfficientViT, [m0]]``).

    Args:
        variant: ``"m0"`` ... ``"m5"``.
        pretrained: a local weights file (timm or official format; relative paths: ``paths.weights_dirs``), or
            ``True`` for timm's default ImageNet weights (``efficientvit_mN.r224_in1k``) through the Hugging Face
            cache (downloaded only if not cached); ``None``/``False``: random weights.
        stem_stride: 8 (detection stem, outputs at strides 8/16/32) or 16 (classifier stem, 16/32/64).
        p3: ``"stage"`` (the three stages' outputs) or ``"stem"`` (with ``stem_stride=16``: the stem's stride-8 map,
            then the first two stages at 16/32; the third stage is not built).
        in_chans: input channels (the YAML parser passes the input layer's channels).
    """

    def __init__(
        self,
        variant: str = "m0",
        pretrained: str | Path | bool | None = None,
        stem_stride: int = 8,
        p3: str = "stage",
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        import timm

        self.variant = _variant(variant)
        self.stem_stride = _stem_stride(stem_stride)
        self.p3 = _p3(p3, self.stem_stride)
        self.channels, self.strides = self.feature_info_for(self.variant, None, self.stem_stride, self.p3, in_chans)
        net = timm.create_model(
            f"efficientvit_{self.variant}",
            pretrained=False,
            num_classes=0,
            global_pool="",
            img_size=IMG_SIZE,
            in_chans=in_chans,
        )
        if self.stem_stride == 8:
            net.patch_embed.conv4.conv.stride = (1, 1)
        self.patch_embed = net.patch_embed
        self.stages = net.stages[:2] if self.p3 == "stem" else net.stages
        self._finish_init(self, pretrained)

    @classmethod
    def feature_info_for(
        cls,
        variant: str = "m0",
        pretrained: str | Path | bool | None = None,
        stem_stride: int = 8,
        p3: str = "stage",
        in_chans: int = 3,
    ) -> tuple[list[int], list[int]]:
        """Output channels and strides for these constructor arguments, without building anything."""
        s, widths = _stem_stride(stem_stride), WIDTHS[_variant(variant)]
        if _p3(p3, s) == "stem":
            return [widths[0] // 2, widths[0], widths[1]], [8, 16, 32]
        return list(widths), [s, 2 * s, 4 * s]

    def _timm_name(self) -> str:
        return f"efficientvit_{self.variant}"

    def _load(self, path: str | Path) -> LoadReport:
        """Load a local timm-format or official-format checkpoint (all tensors validated first, or nothing)."""
        return load_pretrained(self, path, remap=to_timm_layout, name=f"EfficientViT-{self.variant.upper()}")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the three stage outputs (strides ``self.strides``, channels ``self.channels``)."""
        out = []
        if self.p3 == "stem":
            pe = self.patch_embed
            x = pe.relu3(pe.conv3(pe.relu2(pe.conv2(pe.relu1(pe.conv1(x))))))
            out.append(x)
            x = pe.conv4(x)
        else:
            x = self.patch_embed(x)
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out

    @torch.no_grad()
    def fuse(self) -> EfficientViT:
        """Fold every conv+BN (timm ``ConvNorm``) and BN+linear (``NormLinear``) pair into one layer, in place."""
        if self.fused:
            return self
        from timm.models.efficientvit_msra import ConvNorm, NormLinear

        for parent in list(self.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, (ConvNorm, NormLinear)):
                    p = next(child.parameters())
                    folded = child.fuse().to(device=p.device, dtype=p.dtype)
                    folded.train(child.training)
                    setattr(parent, name, folded)
        self.fused = True
        return self

    def extra_repr(self) -> str:
        return f"variant={self.variant}, stem_stride={self.stem_stride}, p3={self.p3}, fused={self.fused}"
