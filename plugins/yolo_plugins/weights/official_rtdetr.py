"""The official RT-DETR checkpoints (lyuwenyu/RT-DETR, v1 and v2) as zoo models, every tensor or a clear error.

A release file holds ``{'ema': {'module': state_dict}}`` or ``{'model': state_dict}`` with the keys of the official
``RTDETR(backbone=PResNet, encoder=HybridEncoder, decoder=RTDETRTransformer[v2])``. ``recognise`` reads the variant
from the tensors (ResNet depth from the blocks, encoder width and expansion, decoder layers, sampling points, class
count, v1 or v2 from the key names) and picks the zoo YAML (``rtdetr-r18vd.yaml`` …); ``role_state_dict`` renames
every official key to the role keys of ``warm_start`` (and so to the YAML's rows); ``build`` makes the zoo model and
loads all of it. A key that maps nowhere, or a model tensor that nothing fills, is an error listing the keys.

Renames (derived from the official module trees; see docs/pretrained.md):

* backbone (PResNet "vd" -> timm ``resnet*d`` inside ``TimmBackbone``): ``conv1.conv1_{1,2,3}.conv`` ->
  ``conv1.{0,3,6}``, ``conv1.conv1_{1,2}.norm`` -> ``conv1.{1,4}``, ``conv1.conv1_3.norm`` -> ``bn1``,
  ``res_layers.s.blocks.b`` -> ``layer{s+1}.b``, ``branch2{a,b,c}.{conv,norm}`` -> ``conv{1,2,3}``/``bn{1,2,3}``,
  ``short[.conv].{conv,norm}`` -> ``downsample.{1,2}``;
* encoder: ``input_proj.l.{0|conv,1|norm}`` -> ``Conv.{conv,bn}``; ``encoder.0.layers.0`` -> ``AIFI`` with
  ``self_attn``/``linear1``/``linear2`` -> ``ma``/``fc1``/``fc2``; ``lateral_convs``, ``downsample_convs``: ``norm``
  -> ``bn``; ``fpn_blocks``/``pan_blocks`` (CSPRepLayer -> RepC3): ``conv1/2/3`` -> ``cv1/2/3``, ``bottlenecks`` ->
  ``m``, ``norm`` -> ``bn``;
* decoder: ``input_proj.l.{conv,norm}`` -> ``.{0,1}``; v2's ``enc_output.{proj,norm}`` -> ``.{0,1}``;
  ``denoising_class_embed`` drops its padding row (nc + 1 -> nc); the buffers v2 saves (``anchors``,
  ``valid_mask``, ``num_points_scale``) are computed, not loaded. Every other decoder name is Ultralytics' own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from .files import OPTIONAL_SUFFIXES, StateDict, WeightsError, read_weights

HEADS = 8  # every official config; the sampling-point count is read from the tensors with it
LEVELS = 3
DERIVED = ("decoder.anchors", "decoder.valid_mask")
DEPTHS = {("basic", (2, 2, 2, 2)): 18, ("basic", (3, 4, 6, 3)): 34, ("bottleneck", (3, 4, 6, 3)): 50}
DEPTHS[("bottleneck", (3, 4, 23, 3))] = 101
# zoo YAML per (depth, encoder width, expansion, AIFI FFN dim, decoder layers)
VARIANTS = {
    (18, 256, 0.5, 1024, 3): "r18vd",
    (34, 256, 0.5, 1024, 4): "r34vd",
    (50, 256, 0.5, 1024, 6): "r50vd-m",
    (50, 256, 1.0, 1024, 6): "r50vd",
    (101, 384, 1.0, 2048, 6): "r101vd",
}


@dataclass(frozen=True)
class Official:
    """An official checkpoint's model, as read from its tensors."""

    version: str  # "RT-DETR" (v1) or "RT-DETRv2"
    variant: str  # r18vd, r34vd, r50vd-m, r50vd, r101vd
    nc: int
    points: int  # sampling points per head and level (4 in the standard models; RT-DETRv2 "sp1..3": 1..3)

    @property
    def yaml(self) -> str:
        """The zoo YAML of this layout."""
        return f"rtdetr-{self.variant}.yaml"

    def __str__(self) -> str:
        extra = f", {self.points} sampling points" if self.points != 4 else ""
        return f"{self.version} {self.variant} ({self.nc} classes{extra}) -> {self.yaml}"


def looks_official(sd: StateDict) -> bool:
    """Whether the keys are the official RT-DETR layout (PResNet backbone, hybrid encoder, RT-DETR decoder)."""
    return any(k.startswith("backbone.res_layers.") for k in sd) and any(k.startswith("decoder.") for k in sd)


def _shape(sd: StateDict, key: str, dim: int = 0) -> int:
    if key not in sd:
        raise WeightsError(f"official RT-DETR checkpoint without '{key}' (a layout this plugin has no YAML for)")
    return int(sd[key].shape[dim])


def recognise(sd: StateDict, source: str = "checkpoint") -> Official:
    """Read the official model's variant from its tensors; a clear error for layouts the zoo has no YAML for."""
    if not looks_official(sd):
        raise WeightsError(
            f"{source}: not an official RT-DETR checkpoint (expected 'backbone.res_layers.*', 'encoder.*' and "
            f"'decoder.*' keys); first keys: {', '.join(list(sd)[:4])}"
        )
    v2 = any(k.startswith("decoder.enc_output.proj.") or k.endswith(".num_points_scale") for k in sd)
    blocks: dict[int, set[int]] = {}
    for k in sd:
        m = re.match(r"backbone\.res_layers\.(\d+)\.blocks\.(\d+)\.", k)
        if m:
            blocks.setdefault(int(m[1]), set()).add(int(m[2]))
    kind = "bottleneck" if any(".branch2c." in k for k in sd) else "basic"
    counts = tuple(len(blocks[s]) for s in sorted(blocks))
    depth = DEPTHS.get((kind, counts))
    width = _shape(sd, "encoder.lateral_convs.0.conv.weight")
    expansion = _shape(sd, "encoder.fpn_blocks.0.conv1.conv.weight") / width
    ffn = _shape(sd, "encoder.encoder.0.layers.0.linear1.weight")
    layers = len({k.split(".")[3] for k in sd if k.startswith("decoder.decoder.layers.")})
    nc = _shape(sd, "decoder.enc_score_head.weight")
    points = _shape(sd, "decoder.decoder.layers.0.cross_attn.attention_weights.weight") // (HEADS * LEVELS)
    found = (depth, width, expansion, ffn, layers)
    variant = VARIANTS.get(found)
    if variant is None:
        what = f"PResNet-{depth}" if depth else f"a ResNet of {kind} blocks {list(counts)}"
        raise WeightsError(
            f"{source}: an official RT-DETR layout without a zoo YAML: {what}, encoder width {width}, expansion "
            f"{expansion:g}, AIFI FFN {ffn}, {layers} decoder layers (the zoo has "
            f"{', '.join('rtdetr-' + v for v in VARIANTS.values())})"
        )
    if nc == 1 and _shape(sd, "decoder.dec_score_head.0.weight") != 1:
        raise WeightsError(
            f"{source}: RT-DETRv2 with query_select_method 'agnostic' (a 1-class encoder score head) computes query "
            "selection differently from RTDETRDecoder; no zoo YAML reproduces it"
        )
    return Official("RT-DETRv2" if v2 else "RT-DETR", variant, nc, points)


_BACKBONE = [  # (official pattern, timm replacement), first match wins
    (r"conv1\.conv1_1\.conv\.", "conv1.0."),
    (r"conv1\.conv1_2\.conv\.", "conv1.3."),
    (r"conv1\.conv1_3\.conv\.", "conv1.6."),
    (r"conv1\.conv1_1\.norm\.", "conv1.1."),
    (r"conv1\.conv1_2\.norm\.", "conv1.4."),
    (r"conv1\.conv1_3\.norm\.", "bn1."),
]
_BLOCK = [  # inside res_layers.s.blocks.b.
    (r"branch2a\.conv\.", "conv1."),
    (r"branch2b\.conv\.", "conv2."),
    (r"branch2c\.conv\.", "conv3."),
    (r"branch2a\.norm\.", "bn1."),
    (r"branch2b\.norm\.", "bn2."),
    (r"branch2c\.norm\.", "bn3."),
    (r"short\.conv\.conv\.", "downsample.1."),  # vd: average pool, then ConvNormLayer
    (r"short\.conv\.norm\.", "downsample.2."),
    (r"short\.conv\.", "downsample.1."),  # plain ConvNormLayer (stride 1: layer1 block 0)
    (r"short\.norm\.", "downsample.2."),
]
_ENCODER = [  # inside encoder.
    (r"input_proj\.(\d+)\.(?:0|conv)\.", r"input_proj.\1.conv."),
    (r"input_proj\.(\d+)\.(?:1|norm)\.", r"input_proj.\1.bn."),
    (r"encoder\.0\.layers\.0\.self_attn\.", "aifi.0.ma."),
    (r"encoder\.0\.layers\.0\.linear([12])\.", r"aifi.0.fc\1."),
    (r"encoder\.0\.layers\.0\.(norm[12])\.", r"aifi.0.\1."),
    (r"(lateral_convs|downsample_convs)\.(\d+)\.conv\.", r"\1.\2.conv."),
    (r"(lateral_convs|downsample_convs)\.(\d+)\.norm\.", r"\1.\2.bn."),
    (r"(fpn_blocks|pan_blocks)\.(\d+)\.conv([123])\.conv\.", r"\1.\2.cv\3.conv."),
    (r"(fpn_blocks|pan_blocks)\.(\d+)\.conv([123])\.norm\.", r"\1.\2.cv\3.bn."),
    (r"(fpn_blocks|pan_blocks)\.(\d+)\.bottlenecks\.(\d+)\.conv([12])\.conv\.", r"\1.\2.m.\3.conv\4.conv."),
    (r"(fpn_blocks|pan_blocks)\.(\d+)\.bottlenecks\.(\d+)\.conv([12])\.norm\.", r"\1.\2.m.\3.conv\4.bn."),
]
_DECODER = [  # inside decoder.
    (r"input_proj\.(\d+)\.conv\.", r"input_proj.\1.0."),
    (r"input_proj\.(\d+)\.norm\.", r"input_proj.\1.1."),
    (r"enc_output\.proj\.", "enc_output.0."),
    (r"enc_output\.norm\.", "enc_output.1."),
]


def rename(key: str, rules: list[tuple[str, str]]) -> str | None:
    """``key`` rewritten by the first ``(pattern, replacement)`` rule that matches its start, else None."""
    for pattern, repl in rules:
        new, n = re.subn("^" + pattern, repl, key, count=1)
        if n:
            return new
    return None


def _role_key(key: str) -> str | None:
    """The role key of one official key, '' for a buffer to drop, None when it maps nowhere."""
    if key in DERIVED or key.endswith(".num_points_scale"):
        return ""
    section, _, rest = key.partition(".")
    if section == "backbone":
        m = re.match(r"res_layers\.(\d+)\.blocks\.(\d+)\.(.*)$", rest)
        if m:
            inner = rename(m[3], _BLOCK)
            return None if inner is None else f"backbone.0.model.layer{int(m[1]) + 1}.{m[2]}.{inner}"
        inner = rename(rest, _BACKBONE)
        return None if inner is None else f"backbone.0.model.{inner}"
    if section == "encoder":
        return rename(rest, _ENCODER)
    if section == "decoder":
        return "decoder." + (rename(rest, _DECODER) or rest)
    return None


def map_to_roles(sd: StateDict, role_key: Callable[[str], str | None], official, source: str) -> StateDict:
    """``sd`` under the role keys ``role_key`` gives (``''`` drops a key); a key that maps nowhere is an error that
    lists them (``official`` names the layout and its YAML in it)."""
    out, unmapped = {}, []
    for key, value in sd.items():
        role = role_key(key)
        if role is None:
            unmapped.append(key)
        elif role:
            out[role] = value
    if unmapped:
        raise WeightsError(
            f"{source}: {len(unmapped)} tensors of the official {official.version} layout map to no part of "
            f"{official.yaml}: {', '.join(unmapped[:8])}{', ...' if len(unmapped) > 8 else ''}. Nothing was loaded."
        )
    return out


def role_state_dict(sd: StateDict, official: Official, source: str = "checkpoint") -> StateDict:
    """The official tensors under ``warm_start`` role keys; every key maps, or an error lists those that do not."""
    out = map_to_roles(sd, _role_key, official, source)
    embed = out.get("decoder.denoising_class_embed.weight")
    if embed is not None and embed.shape[0] == official.nc + 1:  # the official padding row (index nc)
        out["decoder.denoising_class_embed.weight"] = embed[: official.nc]
    return out


def build(official: Official, sd: StateDict, source: str = "checkpoint") -> tuple[nn.Module, int]:
    """The zoo model of ``official`` with every tensor of ``sd`` (release layout) loaded, eval mode, float32; and the
    number of file tensors loaded (all but the computed buffers)."""
    from ultralytics.nn.tasks import yaml_model_load

    d = yaml_model_load(official.yaml)
    if official.points != 4:  # RTDETRDecoder args: [nc, hidden, queries, points, ...]
        d["head"][-1][3][3] = official.points
    roles = role_state_dict(sd, official, source)
    return load_by_role(d, official.nc, roles, official.yaml, source), len(roles)


def load_by_role(d: dict, nc: int, roles: StateDict, what: str, source: str = "checkpoint") -> nn.Module:
    """The RT-DETR model of the YAML dict ``d`` with ``nc`` classes and every tensor of ``roles`` (role keys) loaded,
    eval mode, float32; a model tensor nothing fills, a file tensor without a place or a shape that differs is an
    error naming the keys, and nothing is loaded."""
    from ultralytics.nn.tasks import RTDETRDetectionModel

    from .warm_start import role_keys

    d["nc"] = nc
    model = RTDETRDetectionModel(d, nc=nc, verbose=False)
    keys = role_keys(model)
    target = model.state_dict()
    missing = [k for k, r in keys.items() if r not in roles and not k.endswith(OPTIONAL_SUFFIXES)]
    extra = sorted(set(roles) - set(keys.values()))
    wrong = [k for k, r in keys.items() if r in roles and roles[r].shape != target[k].shape]
    if missing or extra or wrong:
        parts = []
        if wrong:
            parts.append(
                "shapes differ: "
                + ", ".join(f"{k} {tuple(roles[keys[k]].shape)} vs {tuple(target[k].shape)}" for k in wrong[:4])
            )
        if missing:
            parts.append(f"{len(missing)} model tensors not in the file: {', '.join(missing[:6])}")
        if extra:
            parts.append(f"{len(extra)} file tensors without a place: {', '.join(extra[:6])}")
        raise WeightsError(f"{source}: does not fit {what}: {'; '.join(parts)}. Nothing was loaded.")
    full = {k: (roles[r].to(target[k].dtype) if r in roles else target[k]) for k, r in keys.items()}
    model.load_state_dict(full, strict=True)
    return model.float().eval()


def coco_names() -> dict[int, str]:
    """The 80 COCO class names in Ultralytics' ``coco.yaml`` order (the official checkpoints' order)."""
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    return dict(YAML.load(check_yaml("coco.yaml"))["names"])


def load_official(path: str | Path) -> tuple[nn.Module, Official, int, int] | None:
    """``(model, official, loaded, total)`` for an official RT-DETR file, ``None`` for any other weights file.

    ``total`` counts the file's tensors but the buffers the model computes (v2's anchors, valid_mask,
    num_points_scale); ``loaded`` equals it, or an error was raised.
    """
    sd, _ = read_weights(path)
    if not looks_official(sd):
        return None
    source = str(path)
    if "dsp" in Path(source).name.lower():
        raise WeightsError(
            f"{source}: an RT-DETRv2 'dsp' (discrete sampling) checkpoint: its decoder samples with rounded positions "
            "instead of grid_sample, which RTDETRDecoder does not do, so its outputs would differ. Use the "
            "checkpoint of the same model without '_dsp'."
        )
    official = recognise(sd, source)
    model, loaded = build(official, sd, source)
    if official.nc == 80:
        model.names = coco_names()
    total = sum(1 for k in sd if _role_key(k) != "")
    return model, official, loaded, total
