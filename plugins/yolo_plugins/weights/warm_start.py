"""Warm starts by role: RT-DETR tensors move between models by what they do, never by layer number.

Ultralytics' ``BaseModel.load`` copies every tensor whose ``model.N.`` name and shape happen to agree, so a checkpoint
of one RT-DETR loaded into another YAML fills layers that merely share an index. ``role_keys`` names each tensor of a
YAML-built RT-DETR by its part of the official architecture instead, derived from the data flow (``roles.analyse``):

* ``backbone.<layer>.…`` the YAML's ``backbone:`` rows (moved only as a whole: same keys and shapes, else skipped);
* ``input_proj.<level>.…`` the 1x1 projections of the backbone maps, level 0 = the shallowest map they read;
* ``aifi.<k>.…``, ``lateral_convs.<k>.…``, ``fpn_blocks.<k>.…``, ``downsample_convs.<k>.…``, ``pan_blocks.<k>.…``
  the hybrid encoder's parts, numbered in data-flow order as the official ``HybridEncoder`` numbers them (a part
  made of several YAML rows adds the row's position: ``fpn_blocks.0.1.…``);
* ``decoder.…`` the ``RTDETRDecoder`` (its own names); tensors whose shape depends on the class count
  (``denoising_class_embed``, ``enc_score_head``, ``dec_score_head``) are re-initialised when the counts differ.

``transfer`` copies every target tensor whose role key and shape the source has, and reports per role what it
loaded and why it skipped the rest. The hook routes ``BaseModel.load`` here when both models are RT-DETRs and one of
them is built from plugin blocks (stock-to-stock loads stay the host's).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn

from .files import OPTIONAL_SUFFIXES, WeightsError
from .roles import analyse

ROLE_NAMES = {
    "input projections": "input_proj",
    "AIFI": "aifi",
    "lateral convs": "lateral_convs",
    "FPN blocks": "fpn_blocks",
    "downsample convs": "downsample_convs",
    "PAN blocks": "pan_blocks",
}
ROLE_ORDER = ("backbone", *ROLE_NAMES.values(), "decoder", "other")
CLASS_DEPENDENT = ("decoder.denoising_class_embed.", "decoder.enc_score_head.", "decoder.dec_score_head.")


def is_rtdetr(model: object) -> bool:
    """Whether ``model`` is a YAML-built Ultralytics model whose last layer is an ``RTDETRDecoder``."""
    from ultralytics.nn.modules.head import RTDETRDecoder

    layers = getattr(model, "model", None)
    return isinstance(layers, nn.Sequential) and len(layers) > 0 and isinstance(layers[-1], RTDETRDecoder)


def role_keys(model: nn.Module) -> dict[str, str]:
    """Map each ``state_dict()`` key of a YAML-built RT-DETR model to its role key (see the module docstring)."""
    if not is_rtdetr(model):
        raise WeightsError(
            f"{type(model).__name__} is not a YAML-built RT-DETR model (its last layer is no RTDETRDecoder)"
        )
    info = analyse(model)
    instance: dict[int, tuple[str, int]] = {}
    projections = sorted((i for i, r in info.roles.items() if r == "input projections"), key=lambda i: info.inputs[i])
    instance.update({i: ("input_proj", level) for level, i in enumerate(projections)})
    counts: dict[str, int] = defaultdict(int)
    for i in sorted(info.roles):
        name = ROLE_NAMES.get(info.roles[i])
        if name is None or i in instance:
            continue
        same = [instance[j] for j in info.inputs[i] if instance.get(j, ("",))[0] == name]
        if same:  # a row reading a row of the same part continues that part (Upsample -> Concat -> RepC3)
            instance[i] = same[0]
        else:
            instance[i] = (name, counts[name])
            counts[name] += 1
    layers = list(model.model)
    holders = defaultdict(list)  # part -> its rows that hold tensors, in order
    for i in sorted(instance):
        if any(True for _ in layers[i].state_dict()):
            holders[instance[i]].append(i)
    out = {}
    for key in model.state_dict():
        _, index, rest = key.split(".", 2)  # model.<i>.<rest>
        i = int(index)
        if i < info.n_backbone:
            out[key] = f"backbone.{i}.{rest}"
        elif i == info.decoder:
            out[key] = f"decoder.{rest}"
        elif i in instance:
            part, rows = instance[i], holders[instance[i]]
            pos = "" if len(rows) == 1 else f"{rows.index(i)}."
            out[key] = f"{part[0]}.{part[1]}.{pos}{rest}"
        else:
            out[key] = f"other.{i}.{rest}"
    return out


def role_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s tensors under their role keys."""
    sd = model.state_dict()
    return {role: sd[key] for key, role in role_keys(model).items()}


def role_of(key: str) -> str:
    """The role group of a role key (its first component)."""
    return key.split(".", 1)[0]


@dataclass
class WarmStartReport:
    """What ``transfer`` did, per role: tensors loaded, tensors of the target, skipped keys with the reason."""

    source: str
    loaded: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    total: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    skipped: dict[str, dict[str, list[str]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))

    @property
    def n_loaded(self) -> int:
        """Tensors copied into the target."""
        return sum(self.loaded.values())

    @property
    def n_total(self) -> int:
        """Tensors of the target (bookkeeping buffers such as ``num_batches_tracked`` included)."""
        return sum(self.total.values())

    def __str__(self) -> str:
        lines = [f"warm start by role from {self.source}: loaded {self.n_loaded}/{self.n_total} tensors"]
        for role in ROLE_ORDER:
            if not self.total.get(role):
                continue
            why = "; ".join(
                f"{reason}: {len(keys)} ({keys[0]}{', ...' if len(keys) > 1 else ''})"
                for reason, keys in self.skipped.get(role, {}).items()
            )
            lines.append(
                f"  {role:<17}{self.loaded.get(role, 0):>5}/{self.total[role]:<5}{'  skipped ' + why if why else ''}"
            )
        return "\n".join(lines)


def _backbone_matches(src: dict[str, torch.Tensor], dst: dict[str, torch.Tensor]) -> str:
    """'' when the backbones are the same (keys and shapes, bookkeeping buffers aside), else why not."""

    def core(sd):
        return {
            k: tuple(v.shape) for k, v in sd.items() if k.startswith("backbone.") and not k.endswith(OPTIONAL_SUFFIXES)
        }

    a, b = core(src), core(dst)
    if not a:
        return "the source has no backbone tensors"
    if a == b:
        return ""
    same = sum(1 for k in b if a.get(k) == b[k])
    return f"a different backbone ({same} of {len(b)} tensors agree in name and shape; it moves only as a whole)"


@torch.no_grad()
def transfer(source: nn.Module | dict[str, torch.Tensor], target: nn.Module, name: str = "") -> WarmStartReport:
    """Copy into ``target`` every tensor whose role key and shape ``source`` has; returns the per-role report.

    ``source`` is a YAML-built RT-DETR model or a state dict already under role keys. Nothing is copied when the
    source has no RT-DETR part in common with the target (an error lists what each side has).
    """
    src = role_state_dict(source) if isinstance(source, nn.Module) else dict(source)
    keys = role_keys(target)
    dst_sd = target.state_dict()
    dst = {role: dst_sd[key] for key, role in keys.items()}
    report = WarmStartReport(name or getattr(source, "pt_path", None) or type(source).__name__)
    backbone_reason = _backbone_matches(src, dst)
    src_nc, dst_nc = _classes(src), _classes(dst)
    plan = {}
    for role, tensor in dst.items():
        group = role_of(role)
        report.total[group] += 1
        reason = ""
        if group == "other":
            reason = "no role in the RT-DETR layout"
        elif group == "backbone" and backbone_reason:
            reason = backbone_reason
        elif role not in src:
            reason = "not in the source" if not role.endswith(OPTIONAL_SUFFIXES) else "bookkeeping buffer not in source"
        elif src[role].shape != tensor.shape:
            if role.startswith(CLASS_DEPENDENT) and src_nc != dst_nc:
                reason = f"class-dependent, re-initialised (nc {src_nc} -> {dst_nc})"
            else:
                reason = "other shape"
        if reason:
            report.skipped[group][reason].append(role)
        else:
            plan[role] = src[role]
    if not plan:
        raise WeightsError(
            f"{report.source}: no tensor of the source fits the target by role; source roles: "
            f"{sorted({role_of(k) for k in src})}, target roles: {sorted({role_of(k) for k in dst})}"
        )
    for role, value in plan.items():
        dst[role].copy_(value.to(dst[role].dtype))
        report.loaded[role_of(role)] += 1
    return report


def _classes(sd: dict[str, torch.Tensor]) -> int | None:
    t = sd.get("decoder.enc_score_head.bias")
    return int(t.shape[0]) if t is not None else None
