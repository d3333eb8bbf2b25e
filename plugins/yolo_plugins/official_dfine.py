"""The official D-FINE and DEIM-D-FINE checkpoints (Peterande/D-FINE, ShihuaHuang95/DEIM) as zoo models.

A release file holds ``{'model': state_dict}`` (D-FINE) or ``{'ema': {'module': state_dict}}`` (DEIM) with the keys of
the official ``DFINE(backbone=HGNetv2, encoder=HybridEncoder, decoder=DFINETransformer)``. ``recognise`` reads the size
from the tensors (levels, hidden width, decoder layers, class count) and picks the zoo YAML (``dfine-n.yaml`` …). D-FINE
and DEIM-D-FINE have the same tensors and differ only in the decoder's activations (ReLU vs SiLU), so which of the two
a file is comes from the file: a name with ``deim`` is DEIM, one with ``dfine`` only is D-FINE, otherwise the
container says it (``ema`` DEIM, ``model`` D-FINE); ``family=`` overrides.

Renames (derived from the official module trees; the rest keeps its name):

* backbone (HGNetV2 -> timm's ``hgnetv2_*`` inside ``TimmBackbone``): ``stem.*`` -> ``stem.*``, ``stages.i.*`` ->
  ``stages_i.*`` (timm's feature wrapper flattens the names);
* encoder: ``norm`` -> ``bn`` in every conv + BN; ``encoder.0.layers.0`` -> ``AIFI`` (``self_attn``/``linear1``/
  ``linear2`` -> ``ma``/``fc1``/``fc2``); ``downsample_convs.i.0`` (a Sequential around SCDown) -> ``DFineSCDown``;
  ``fpn_blocks``/``pan_blocks`` keep their inner names (``DFineELAN`` follows ``RepNCSPELAN4``);
* decoder: every name is ``FDRDecoder``'s own; the computed buffers ``anchors``, ``valid_mask`` and
  ``num_points_scale`` are dropped, and so are ``decoder.decoder.up``/``reg_scale`` (the same tensors as
  ``decoder.up``/``reg_scale``, checked equal).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .official_rtdetr import load_by_role
from .weights import StateDict, WeightsError, read_weights

FAMILIES = ("D-FINE", "DEIM")
SIZES = {(2, 128): "n", (3, 256): "s"}  # (levels, hidden) -> size of the zoo
DERIVED = ("decoder.anchors", "decoder.valid_mask")
ALIASES = {"decoder.decoder.up": "decoder.up", "decoder.decoder.reg_scale": "decoder.reg_scale"}


@dataclass(frozen=True)
class Official:
    """An official D-FINE-family checkpoint's model, as read from its tensors and its file."""

    version: str  # "D-FINE" or "DEIM"
    variant: str  # "n" or "s"
    nc: int

    @property
    def yaml(self) -> str:
        """The zoo YAML of this layout."""
        return f"{'deim-' if self.version == 'DEIM' else ''}dfine-{self.variant}.yaml"

    def __str__(self) -> str:
        name = "DEIM-D-FINE" if self.version == "DEIM" else "D-FINE"
        return f"{name}-{self.variant.upper()} ({self.nc} classes) -> {self.yaml}"


def looks_official(sd: StateDict) -> bool:
    """Whether the keys are the official D-FINE layout (HGNetV2 backbone, hybrid encoder, D-FINE decoder)."""
    return "backbone.stem.stem1.conv.weight" in sd and any(k.startswith("decoder.decoder.lqe_layers.") for k in sd)


def _deimv2(sd: StateDict) -> str | None:
    """What marks a DEIMv2 file, if it is one (its decoder and backbones differ from D-FINE's)."""
    if any(".swish_ffn." in k for k in sd):
        return "a DEIMv2 decoder (SwiGLU FFN, RMSNorm)"
    if any("dinov3" in k or k.startswith("backbone.sta.") for k in sd):
        return "a DEIMv2 DINOv3 backbone (DEIMv2-S and larger)"
    return None


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
    v2 = _deimv2(sd)
    if v2:
        raise WeightsError(
            f"{source}: {v2}. Supported official files: D-FINE-N/S and DEIM-D-FINE-N/S "
            "(dfine_n_coco.pth, dfine_s_coco.pth, deim_dfine_hgnetv2_{n,s}_coco_*.pth). Nothing was written."
        )
    if not looks_official(sd):
        raise WeightsError(
            f"{source}: not an official D-FINE / DEIM checkpoint (expected 'backbone.stem.*', 'encoder.*' and "
            f"'decoder.decoder.lqe_layers.*' keys); first keys: {', '.join(list(sd)[:4])}"
        )
    levels = len({k.split(".")[2] for k in sd if k.startswith("encoder.input_proj.")})
    hidden = _shape(sd, "decoder.enc_output.proj.weight", source)
    layers = len({k.split(".")[3] for k in sd if k.startswith("decoder.decoder.layers.")})
    nc = _shape(sd, "decoder.enc_score_head.weight", source)
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
        for pattern, repl in _ENCODER:
            new, n = re.subn("^" + pattern, repl, rest, count=1)
            if n:
                return new.replace(".norm.", ".bn.") if not new.startswith("aifi.") else new
        return None
    if section == "decoder":
        return key
    return None


def role_state_dict(sd: StateDict, official: Official, source: str = "checkpoint") -> StateDict:
    """The official tensors under ``warm_start`` role keys; every key maps, or an error lists those that do not."""
    out, unmapped = {}, []
    for key, value in sd.items():
        role = _role_key(key)
        if role is None:
            unmapped.append(key)
        elif role:
            out[role] = value
    if unmapped:
        raise WeightsError(
            f"{source}: {len(unmapped)} tensors of the official {official.version} layout map to no part of "
            f"{official.yaml}: {', '.join(unmapped[:8])}{', ...' if len(unmapped) > 8 else ''}. Nothing was loaded."
        )
    for alias, key in ALIASES.items():
        if alias in sd and key in sd and not torch.equal(sd[alias], sd[key]):
            raise WeightsError(f"{source}: '{alias}' differs from '{key}' (the official model shares them)")
    return out


def build(official: Official, sd: StateDict, source: str = "checkpoint") -> tuple[nn.Module, int]:
    """The zoo model of ``official`` with every tensor of ``sd`` loaded, eval mode, float32; and the count loaded."""
    from ultralytics.nn.tasks import yaml_model_load

    roles = role_state_dict(sd, official, source)
    return load_by_role(yaml_model_load(official.yaml), official.nc, roles, official.yaml, source), len(roles)


def load_official(path: str | Path, family: str | None = None) -> tuple[nn.Module, Official, int, int] | None:
    """``(model, official, loaded, total)`` for an official D-FINE / DEIM file, ``None`` for any other weights file."""
    from .official_rtdetr import coco_names

    sd, where = read_weights(path)
    if not (looks_official(sd) or _deimv2(sd)):
        return None
    official = recognise(sd, str(path), where, family)
    model, loaded = build(official, sd, str(path))
    if official.nc == 80:
        model.names = coco_names()
    total = sum(1 for k in sd if _role_key(k) != "")
    return model, official, loaded, total
