"""The RT-DETR variants of the redundancy study: each knob turns a baseline model into a cheaper one.

No retraining needed (the trained weights stay valid, the model is changed in place of a copy):

* ``decoder_layers=k``: keep the first k decoder layers and their heads (RT-DETR can stop early at inference).
* ``queries=q``: select q object queries instead of ``num_queries``.

A new model (rebuilt from the edited YAML dict, so it needs training):

* ``ccff_depth=n``: the fusion blocks of the encoder (FPN and PAN blocks, ``RepC3`` in stock models) repeat n times.
* ``drop_s3``: the encoder and decoder use P4/P5 only (the stride-8 FPN step, its PAN step and the lateral conv that
  fed it are removed; the P4 FPN block becomes the first decoder input).
* ``hidden_dim=c``: the encoder width (input projections, lateral, downsample and fusion blocks; AIFI's feed-forward
  width scales with it). The decoder keeps its width; its input projections adapt.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..weights.roles import FUSION_ROLES, Layers, absolute_inputs, analyse

KNOBS = ("decoder_layers", "queries", "ccff_depth", "drop_s3", "hidden_dim")
NO_RETRAINING = ("decoder_layers", "queries")


class VariantError(ValueError):
    """A knob cannot be applied to this model; the message names the layer or YAML part."""


@dataclass
class Variant:
    """A named variant of the baseline: ``baseline``, ``<knob>=<value>`` or ``drop_s3``."""

    name: str
    knob: str | None
    value: int | None
    make: Callable[[], nn.Module]

    @property
    def needs_retraining(self) -> bool:
        """Whether the variant is a new model (random weights) rather than the trained one changed."""
        return self.knob is not None and self.knob not in NO_RETRAINING


def resolved_yaml(model: nn.Module) -> dict:
    """A deep copy of the model's YAML dict with per-scale arguments resolved to the model's scale."""
    d = copy.deepcopy(model.yaml)
    scales = d.get("scales") or {}
    scale = d.get("scale") or next(iter(scales), None)
    if scale and scales:
        d["scale"] = scale
    for section in ("backbone", "head"):
        for row in d.get(section, []):
            row[3] = [a[scale] if isinstance(a, dict) and scale in a and set(a) <= set(scales) else a for a in row[3]]
    return d


def _rows(d: dict) -> list[list]:
    return [*d["backbone"], *d["head"]]


def _depth_gain(d: dict) -> float:
    scales = d.get("scales") or {}
    if scales and d.get("scale") in scales:
        return scales[d["scale"]][0]
    return d.get("depth_multiple", 1.0)


def build(d: dict, like: nn.Module) -> nn.Module:
    """Build a model of the same class as ``like`` from the YAML dict ``d``."""
    return type(like)(copy.deepcopy(d), ch=d.get("channels", 3), nc=d.get("nc"), verbose=False).eval()


def _decoder(model: nn.Module, layers: Layers) -> nn.Module:
    if not layers.is_rtdetr:
        raise VariantError("the model has no RTDETRDecoder; the sweep knobs apply to RT-DETR models")
    return model.model[layers.decoder]


def with_decoder_layers(model: nn.Module, k: int, layers: Layers | None = None) -> nn.Module:
    """A copy of ``model`` whose decoder runs (and keeps) only its first ``k`` layers."""
    layers = layers or analyse(model)
    new = copy.deepcopy(model)
    head = _decoder(new, layers)
    n = len(head.decoder.layers)
    if not 1 <= k <= n:
        raise VariantError(f"layer {layers.decoder}: RTDETRDecoder: decoder_layers={k} outside 1..{n}")
    head.decoder.layers = head.decoder.layers[:k]
    head.dec_bbox_head = head.dec_bbox_head[:k]
    head.dec_score_head = head.dec_score_head[:k]
    head.decoder.num_layers = head.num_decoder_layers = k
    head.decoder.eval_idx = k - 1
    return new


def with_queries(model: nn.Module, q: int, layers: Layers | None = None) -> nn.Module:
    """A copy of ``model`` that selects ``q`` object queries."""
    layers = layers or analyse(model)
    new = copy.deepcopy(model)
    head = _decoder(new, layers)
    if q < 1:
        raise VariantError(f"layer {layers.decoder}: RTDETRDecoder: queries={q} must be positive")
    if getattr(head, "learnt_init_query", False) and q > head.num_queries:
        raise VariantError(
            f"layer {layers.decoder}: RTDETRDecoder: learnt queries cannot grow above {head.num_queries}"
        )
    head.num_queries = q
    if getattr(head, "learnt_init_query", False):
        head.tgt_embed.weight = nn.Parameter(head.tgt_embed.weight[:q].clone())
        head.tgt_embed.num_embeddings = q
    return new


def fusion_blocks(d: dict, layers: Layers) -> list[int]:
    """Indices of the encoder's repeated fusion blocks (FPN/PAN role with YAML repeats > 1)."""
    rows = _rows(d)
    found = [i for i, r in sorted(layers.roles.items()) if r in FUSION_ROLES and rows[i][1] > 1]
    if not found:
        raise VariantError("ccff_depth: the encoder has no FPN/PAN fusion block with repeats > 1 in its YAML")
    return found


def ccff_depth_yaml(d: dict, n: int, layers: Layers) -> dict:
    """The YAML dict with every fusion block repeating ``n`` times (after the scale's depth gain)."""
    if n < 1:
        raise VariantError(f"ccff_depth={n} must be at least 1")
    d = copy.deepcopy(d)
    gd = _depth_gain(d)
    yaml_n = next((y for y in range(1, 100) if (max(round(y * gd), 1) if y > 1 else y) == n), None)
    if yaml_n is None:
        raise VariantError(f"ccff_depth={n} cannot be reached with depth gain {gd}")
    rows = _rows(d)
    for i in fusion_blocks(d, layers):
        rows[i][1] = yaml_n
    return d


def built_repeats(d: dict, i: int) -> int:
    """The repeats the parser builds for YAML layer ``i`` (depth gain applied as Ultralytics does)."""
    n = _rows(d)[i][1]
    return max(round(n * _depth_gain(d)), 1) if n > 1 else n


def drop_s3_yaml(d: dict, layers: Layers) -> dict:
    """The YAML dict with the encoder and decoder on P4/P5 only."""
    d = copy.deepcopy(d)
    rows = _rows(d)
    dec = layers.decoder
    outs = list(layers.inputs[dec])
    if len(outs) < 3:
        raise VariantError(f"drop_s3: layer {dec}: RTDETRDecoder reads {len(outs)} levels; need 3 to drop the first")
    o0, o1 = outs[0], outs[1]
    down = [j for j in layers.consumers(o0) if layers.roles.get(j) == "downsample convs"]
    cat = [j for j in layers.consumers(down[0]) if len(layers.inputs[j]) > 1] if down else []
    lateral = [x for x in layers.inputs[cat[0]] if x != down[0]] if cat else []
    if not (down and cat and len(lateral) == 1 and layers.roles.get(lateral[0]) == "lateral convs"):
        raise VariantError(
            f"drop_s3: cannot find the stride-8 PAN step (downsample conv reading layer {o0}, Concat with a lateral "
            "conv) in this encoder"
        )
    y4 = lateral[0]
    x4 = layers.inputs[y4][0]  # the P4 FPN block the lateral conv reads becomes the P4 output
    removed = set(range(y4, o1 + 1))
    keep = [i for i in range(len(rows)) if i not in removed]
    remap = {old: new for new, old in enumerate(keep)}
    for i in keep:
        f = layers.inputs[i]
        if i == dec:
            f = [x for x in f if x != o0]
        f = [x4 if x == o1 else x for x in f]
        if any(x in removed for x in f):
            bad = next(x for x in f if x in removed)
            raise VariantError(
                f"drop_s3: layer {i}: {rows[i][2]} reads layer {bad}, which belongs to the stride-8 path being removed"
            )
        orig = rows[i][0] if isinstance(rows[i][0], list) else [rows[i][0]]
        if i == dec:
            orig = [x for x, a in zip(orig, layers.inputs[i]) if a != o0]
        written = []
        for x, a in zip(orig, f):  # keep each entry's style: relative stays relative, absolute stays absolute
            if a < 0:
                written.append(x)  # -1 in layer 0 is the image
            else:
                written.append(remap[a] - remap[i] if x < 0 else remap[a])
        rows[i][0] = written[0] if isinstance(rows[i][0], int) else written
    nb = len(d["backbone"])
    d["head"] = [rows[i] for i in keep if i >= nb]
    return d


def encoder_width(model: nn.Module, layers: Layers) -> int:
    """The encoder width as built: the output channels of its input projections."""
    proj = [i for i, r in sorted(layers.roles.items()) if r == "input projections"]
    widths = {getattr(model.model[i], "conv", None) and model.model[i].conv.out_channels for i in proj}
    if not proj or len(widths) != 1 or None in widths:
        raise VariantError(f"hidden_dim: the encoder's input projections {proj} do not give one width: {widths}")
    return widths.pop()


def _width_gain(d: dict) -> tuple[float, int]:
    scales = d.get("scales") or {}
    if scales and d.get("scale") in scales:
        return scales[d["scale"]][1], scales[d["scale"]][2]
    return d.get("width_multiple", 1.0), d.get("max_channels", 1024)


def hidden_dim_yaml(d: dict, c: int, layers: Layers) -> dict:
    """The YAML dict whose encoder is ``c`` channels wide as built (the YAML value is c / the scale's width gain)."""
    from ultralytics.utils.ops import make_divisible

    d = copy.deepcopy(d)
    rows = _rows(d)
    proj = [i for i, r in layers.roles.items() if r == "input projections"]
    widths = {rows[i][3][0] for i in proj}
    if len(widths) != 1:
        raise VariantError(f"hidden_dim: the encoder's input projections {proj} do not share one YAML width: {widths}")
    old = widths.pop()
    if c < 8 or c % 8:
        raise VariantError(f"hidden_dim={c} must be a positive multiple of 8")
    gw, max_ch = _width_gain(d)
    new = next((y for y in range(8, 8 * 4096) if make_divisible(min(y, max_ch) * gw, 8) == c), None)
    if new is None:
        raise VariantError(f"hidden_dim={c} cannot be built with width gain {gw} and max_channels {max_ch}")
    for i, role in layers.roles.items():
        args = rows[i][3]
        if i in layers.transformers:
            heads = args[1] if len(args) > 1 else 8
            if c % heads:
                raise VariantError(f"hidden_dim={c}: layer {i}: {rows[i][2]}: not divisible by its {heads} heads")
            args[0] = int(math.ceil(args[0] * new / old / 8) * 8)  # feed-forward width keeps its ratio
        elif args and args[0] == old and role != "other":
            args[0] = new
    return d


def default_values(model: nn.Module, layers: Layers, knob: str) -> list[int | None]:
    """The values a knob sweeps by default, all below the baseline's."""
    if knob == "drop_s3":
        return [None]
    d = resolved_yaml(model)
    if knob == "decoder_layers":
        n = len(_decoder(model, layers).decoder.layers)
        return sorted({v for v in (n * 2 // 3, n // 3) if 0 < v < n}, reverse=True)
    if knob == "queries":
        q = _decoder(model, layers).num_queries
        return [v for v in (200, 100, 50) if v < q] or [max(1, q // 2)]
    if knob == "ccff_depth":
        n = max(built_repeats(d, i) for i in fusion_blocks(d, layers))
        return [v for v in (3, 2, 1) if v != n]
    if knob == "hidden_dim":
        w = encoder_width(model, layers)
        return [v for v in (w * 3 // 4 // 8 * 8, w // 2 // 8 * 8) if v >= 8]
    raise VariantError(f"unknown knob {knob!r}; knobs: {', '.join(KNOBS)}")


def make_variant(model: nn.Module, layers: Layers, knob: str, value: int | None) -> Callable[[], nn.Module]:
    """A function building the variant ``knob=value`` of ``model``."""
    if knob == "decoder_layers":
        return lambda: with_decoder_layers(model, value, layers)
    if knob == "queries":
        return lambda: with_queries(model, value, layers)
    d = edited_yaml(model, layers, knob, value)  # edited now, so a bad edit fails before anything runs
    return lambda: build(d, model)


def edited_yaml(model: nn.Module, layers: Layers, knob: str, value: int | None) -> dict:
    """The YAML dict of the variant ``knob=value`` for the knobs that rebuild the model."""
    d = resolved_yaml(model)
    if knob == "ccff_depth":
        return ccff_depth_yaml(d, value, layers)
    if knob == "drop_s3":
        return drop_s3_yaml(d, layers)
    if knob == "hidden_dim":
        return hidden_dim_yaml(d, value, layers)
    raise VariantError(f"unknown knob {knob!r}; knobs: {', '.join(KNOBS)}")


def parse_sweep(spec: str | list | tuple) -> list[tuple[str, list[int] | None]]:
    """``all``, ``queries,ccff_depth`` or with values ``queries:200/100,decoder_layers:3`` -> [(knob, values)]."""
    items = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    out = []
    for item in (str(x).strip() for x in items):
        if not item:
            continue
        if item == "all":
            out += [(k, None) for k in KNOBS]
            continue
        knob, _, values = item.partition(":")
        if knob not in KNOBS:
            raise VariantError(f"sweep: unknown knob {knob!r}; knobs: {', '.join(KNOBS)} or all")
        out.append((knob, [int(v) for v in values.split("/")] if values else None))
    return out


def variants(model: nn.Module, spec: str | list, layers: Layers | None = None) -> list[Variant]:
    """The baseline and every variant the sweep spec asks for (checked up front: nothing runs half-done)."""
    layers = layers or analyse(model)
    if not layers.is_rtdetr:
        raise VariantError("sweep: the model has no RTDETRDecoder; the study's knobs apply to RT-DETR models")
    out = [Variant("baseline", None, None, lambda: model)]
    for knob, values in parse_sweep(spec):
        for v in values or default_values(model, layers, knob):
            name = knob if knob == "drop_s3" else f"{knob}={v}"
            if any(x.name == name for x in out):
                continue
            out.append(Variant(name, knob, v, make_variant(model, layers, knob, v)))
    return out


__all__ = ["KNOBS", "Variant", "VariantError", "absolute_inputs", "variants"]
