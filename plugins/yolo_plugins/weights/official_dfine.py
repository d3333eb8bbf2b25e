"""The official D-FINE, DEIM-D-FINE and DEIMv2 checkpoints (Peterande/D-FINE, ShihuaHuang95/DEIM,
Intellindust-AI-Lab/DEIMv2) as zoo models.

A release file holds ``{'model': state_dict}`` (D-FINE) or ``{'ema': {'module': state_dict}}`` (DEIM, DEIMv2), or is
DEIMv2's Hugging Face ``model.safetensors`` (shared tensors stored once), with the keys of the official
``DFINE``/``DEIM(backbone=HGNetv2, encoder=HybridEncoder|LiteEncoder, decoder=DFINETransformer|DEIMTransformer)``.
``recognise`` reads the model from the tensors (DEIMv2's SwiGLU decoder, light or hybrid encoder, levels, hidden width,
decoder layers, class count) and picks the zoo YAML (``dfine-n.yaml``, ``deimv2-pico.yaml`` …). D-FINE and DEIM-D-FINE
have the same tensors and differ only in the decoder's activations (ReLU vs SiLU), so which of the two a file is comes
from the file: a name with ``deim`` is DEIM, one with ``dfine`` only is D-FINE, otherwise the container says it
(``ema`` DEIM, ``model`` D-FINE); ``family=`` overrides. DEIMv2's DINOv3 models (S and larger) are refused.

Renames (derived from the official module trees; the rest keeps its name):

* backbone (HGNetV2 -> timm's ``hgnetv2_*`` inside ``TimmBackbone``): ``stem.*`` -> ``stem.*``, ``stages.i.*`` ->
  ``stages_i.*`` (timm's feature wrapper flattens the names);
* encoder: ``norm`` -> ``bn`` in every conv + BN; ``encoder.0.layers.0`` -> ``AIFI`` (``self_attn``/``linear1``/
  ``linear2`` -> ``ma``/``fc1``/``fc2``); ``downsample_convs.i.0`` (a Sequential around SCDown) -> ``DFineSCDown``;
  ``fpn_blocks``/``pan_blocks`` keep their inner names (``DFineELAN`` follows ``RepNCSPELAN4``); DEIMv2's light
  encoder: ``down_sample{1,2}.{1,2}`` (pool, conv, BN) -> ``PoolDown`` ``conv``/``bn``, ``bi_fusion.cv`` ->
  ``GAPFusion``, ``fpn_block``/``pan_block`` -> ``DFineELAN``;
* decoder: every name is ``FDRDecoder``'s own; the computed buffers ``anchors``, ``valid_mask`` and
  ``num_points_scale`` are dropped, and so are ``decoder.decoder.up``/``reg_scale`` (the same tensors as
  ``decoder.up``/``reg_scale``, checked equal); a box head shared by the layers and stored once fills every layer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .files import StateDict, WeightsError, read_weights
from .official_rtdetr import load_by_role, map_to_roles, rename

FAMILIES = ("D-FINE", "DEIM")
SIZES = {(2, 128): "n", (3, 256): "s"}  # (levels, hidden) -> size of the zoo
V2_SIZES = {("lite", 64): "atto", ("lite", 96): "femto", ("lite", 112): "pico", ("hybrid", 128): "n"}
DERIVED = ("decoder.anchors", "decoder.valid_mask")
ALIASES = {"decoder.decoder.up": "decoder.up", "decoder.decoder.reg_scale": "decoder.reg_scale"}


@dataclass(frozen=True)
class Official:
    """An official D-FINE-family checkpoint's model, as read from its tensors and its file."""

    version: str  # "D-FINE", "DEIM" or "DEIMv2"
    variant: str  # "n" or "s"; DEIMv2: "atto", "femto", "pico" or "n"
    nc: int

    @property
    def yaml(self) -> str:
        """The zoo YAML of this layout."""
        if self.version == "DEIMv2":
            return f"deimv2-{self.variant}.yaml"
        return f"{'deim-' if self.version == 'DEIM' else ''}dfine-{self.variant}.yaml"

    def __str__(self) -> str:
        name = {"DEIM": "DEIM-D-FINE"}.get(self.version, self.version)
        size = self.variant.upper() if len(self.variant) == 1 else self.variant.capitalize()
        return f"{name}-{size} ({self.nc} classes) -> {self.yaml}"


def looks_official(sd: StateDict) -> bool:
    """Whether the keys are the official D-FINE layout (HGNetV2 backbone, hybrid encoder, D-FINE decoder)."""
    return "backbone.stem.stem1.conv.weight" in sd and any(k.startswith("decoder.decoder.lqe_layers.") for k in sd)


def _dinov3(sd: StateDict) -> bool:
    """Whether the file is a DEIMv2 model on DINOv3 (S and larger), which has no zoo YAML."""
    return any("dinov3" in k or k.startswith("backbone.sta.") for k in sd)


def family_of(source: str, where: str, family: str | None = None) -> str:
    """D-FINE or DEIM: ``family`` if given, else from the file name, else from the container (see the docstring)."""
    if family is not None:
        for f in FAMILIES:
            if family.replace("-", "").lower() in (f.replace("-", "").lower(), f"{f}-dfine".replace("-", "").lower()):
                return f
        raise WeightsError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    name = Path(source).name.lower()
    if "deim" in name:
        return "DEIM"
    if "dfine" in name or "d-fine" in name:
        return "D-FINE"
    return "DEIM" if where.startswith("['ema']") else "D-FINE"


def _shape(sd: StateDict, key: str, source: str, dim: int = 0) -> int:
    if key not in sd:
        raise WeightsError(
            f"{source}: official D-FINE checkpoint without '{key}' (a layout this plugin has no YAML for)"
        )
    return int(sd[key].shape[dim])


def recognise(sd: StateDict, source: str = "checkpoint", where: str = "", family: str | None = None) -> Official:
    """Read the official model's size and class count from its tensors; a clear error for layouts without a YAML."""
    if _dinov3(sd):
        raise WeightsError(
            f"{source}: a DEIMv2 model on a DINOv3 backbone (DEIMv2-S and larger), which has no zoo YAML. Supported "
            "official files: D-FINE-N/S, DEIM-D-FINE-N/S and DEIMv2-Atto/Femto/Pico/N. Nothing was written."
        )
    if not looks_official(sd):
        raise WeightsError(
            f"{source}: not an official D-FINE / DEIM checkpoint (expected 'backbone.stem.*', 'encoder.*' and "
            f"'decoder.decoder.lqe_layers.*' keys); first keys: {', '.join(list(sd)[:4])}"
        )
    layers = len({k.split(".")[3] for k in sd if k.startswith("decoder.decoder.layers.")})
    nc = _shape(sd, "decoder.enc_score_head.weight", source)
    if any(".swish_ffn." in k for k in sd):  # DEIMv2's decoder
        hidden = _shape(sd, "decoder.enc_score_head.weight", source, dim=1)
        encoder = "lite" if any(k.startswith("encoder.bi_fusion.") for k in sd) else "hybrid"
        variant = V2_SIZES.get((encoder, hidden))
        if variant is None or layers != 3:
            raise WeightsError(
                f"{source}: an official DEIMv2 layout without a zoo YAML: {encoder} encoder, hidden width {hidden}, "
                f"{layers} decoder layers (the zoo has Atto/Femto/Pico: light encoder, 64/96/112; N: hybrid, 128)"
            )
        return Official("DEIMv2", variant, nc)
    levels = len({k.split(".")[2] for k in sd if k.startswith("encoder.input_proj.")})
    hidden = _shape(sd, "decoder.enc_output.proj.weight", source)
    variant = SIZES.get((levels, hidden))
    if variant is None or layers != 3:
        raise WeightsError(
            f"{source}: an official D-FINE layout without a zoo YAML: {levels} levels, hidden width {hidden}, "
            f"{layers} decoder layers (the zoo has D-FINE-N: 2 levels, 128; D-FINE-S: 3 levels, 256; 3 layers each)"
        )
    return Official(family_of(source, where, family), variant, nc)


_ENCODER = [  # inside encoder.
    (r"input_proj\.(\d+)\.conv\.", r"input_proj.\1.conv."),
    (r"input_proj\.(\d+)\.norm\.", r"input_proj.\1.bn."),
    (r"encoder\.0\.layers\.0\.self_attn\.", "aifi.0.ma."),
    (r"encoder\.0\.layers\.0\.linear([12])\.", r"aifi.0.fc\1."),
    (r"encoder\.0\.layers\.0\.(norm[12])\.", r"aifi.0.\1."),
    (r"lateral_convs\.(\d+)\.", r"lateral_convs.\1."),
    (r"downsample_convs\.(\d+)\.0\.", r"downsample_convs.\1."),
    (r"(fpn_blocks|pan_blocks)\.(\d+)\.", r"\1.\2."),
    (r"down_sample1\.1\.", "downsample_convs.0.conv."),  # DEIMv2's light encoder
    (r"down_sample1\.2\.", "downsample_convs.0.bn."),
    (r"down_sample2\.1\.", "downsample_convs.1.conv."),
    (r"down_sample2\.2\.", "downsample_convs.1.bn."),
    (r"bi_fusion\.cv\.", "lateral_convs.0."),
    (r"(fpn|pan)_block\.", r"\1_blocks.0."),
]


def _role_key(key: str) -> str | None:
    """The role key of one official key, '' for a buffer to drop, None when it maps nowhere."""
    if key in DERIVED or key in ALIASES or key.endswith(".num_points_scale"):
        return ""
    section, _, rest = key.partition(".")
    if section == "backbone":
        m = re.match(r"(stem\..*|stages\.(\d+)\.(.*))$", rest)
        if m is None:
            return None
        return f"backbone.0.model.{rest if m[2] is None else f'stages_{m[2]}.{m[3]}'}"
    if section == "encoder":
        new = rename(rest, _ENCODER)
        return new.replace(".norm.", ".bn.") if new and not new.startswith("aifi.") else new
    if section == "decoder":
        return key
    return None


def role_state_dict(sd: StateDict, official: Official, source: str = "checkpoint") -> StateDict:
    """The official tensors under ``warm_start`` role keys; every key maps, or an error lists those that do not."""
    sd = dict(sd)
    for alias, key in ALIASES.items():  # a file that stored the shared tensor under the other name only
        if key not in sd and alias in sd:
            sd[key] = sd[alias]
    out = map_to_roles(sd, _role_key, official, source)
    for alias, key in ALIASES.items():
        if alias in sd and key in sd and not torch.equal(sd[alias], sd[key]):
            raise WeightsError(f"{source}: '{alias}' differs from '{key}' (the official model shares them)")
    if official.version == "DEIMv2" and official.variant != "n":  # one box head for every layer, maybe stored once
        first = next((k for k in out if k.startswith("decoder.dec_bbox_head.")), "...")
        for key in [k for k in out if k.startswith(f"decoder.dec_bbox_head.{first.split('.')[2]}.")]:
            for i in range(3):  # the zoo's DEIMv2 models have 3 decoder layers (checked by recognise)
                out.setdefault(f"decoder.dec_bbox_head.{i}.{key.split('.', 3)[3]}", out[key])
    return out


def build(official: Official, sd: StateDict, source: str = "checkpoint") -> tuple[nn.Module, int]:
    """The zoo model of ``official`` with every tensor of ``sd`` loaded, eval mode, float32; and the count loaded."""
    from ultralytics.nn.tasks import yaml_model_load

    roles = role_state_dict(sd, official, source)
    loaded = sum(1 for k in sd if _role_key(k))  # file tensors (a shared head stored once fills several roles)
    return load_by_role(yaml_model_load(official.yaml), official.nc, roles, official.yaml, source), loaded


def load_official(path: str | Path, family: str | None = None) -> tuple[nn.Module, Official, int, int] | None:
    """``(model, official, loaded, total)`` for an official D-FINE / DEIM file, ``None`` for any other weights file."""
    from .official_rtdetr import coco_names

    sd, where = read_weights(path)
    if not (looks_official(sd) or _dinov3(sd)):
        return None
    official = recognise(sd, str(path), where, family)
    model, loaded = build(official, sd, str(path))
    if official.nc == 80:
        model.names = coco_names()
    total = sum(1 for k in sd if _role_key(k) != "")
    return model, official, loaded, total
