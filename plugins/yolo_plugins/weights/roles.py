"""Roles of an RT-DETR model's layers, derived from its structure (not from layer numbers).

A model built from a YAML is a list of layers, each with its absolute inputs. The backbone is the YAML's ``backbone:``
section; the encoder is every ``head:`` layer before the ``RTDETRDecoder``; the decoder is the ``RTDETRDecoder``.
Encoder layers get their role from the data flow:

* ``AIFI``: a transformer encoder layer (``AIFI`` or any ``TransformerEncoderLayer``), or whatever block sits where
  AIFI sits (between the S5 input projection and its lateral conv, e.g. ``PSA``);
* ``downsample convs``: a layer holding a strided convolution or pooling;
* ``input projections``: a layer that reads only backbone outputs;
* ``lateral convs``: a layer whose output an ``nn.Upsample`` reads;
* ``FPN blocks``: the fusion block after a merge (``Concat``, ``FeatureSum``: a parameter-free layer reading several
  layers) fed by an ``nn.Upsample`` (top-down path), with that upsample;
* ``PAN blocks``: the fusion block after a merge fed by a downsample conv (bottom-up path);
* a merge takes the role of the layer that reads it; a layer reading one fusion block continues its role.

Decoder children are grouped by what they do: input projections, decoder layers (with the query position MLP run
by every layer), query selection (the ``enc_*`` heads; when timed, also anchors, top-k and gathers), score/box heads
(``dec_*``), denoising/query embeddings (training only). Models without an ``RTDETRDecoder`` are grouped as backbone
(the YAML's ``backbone:``), neck (the ``head:`` layers before the last) and head (the last layer: Detect, Segment,
Classify, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

ENCODER_ROLES = (
    "input projections",
    "AIFI",
    "lateral convs",
    "FPN blocks",
    "downsample convs",
    "PAN blocks",
    "other",
)
DECODER_ROLES = {
    "input_proj": "input projections",
    "decoder": "decoder layers",
    "query_pos_head": "decoder layers",
    "enc_output": "query selection",
    "enc_score_head": "query selection",
    "enc_bbox_head": "query selection",
    "dec_score_head": "score/box heads",
    "dec_bbox_head": "score/box heads",
    "denoising_class_embed": "embeddings (training only)",
    "tgt_embed": "embeddings (training only)",
}
DECODER_ORDER = (
    "input projections",
    "query selection",
    "decoder layers",
    "score/box heads",
    "embeddings (training only)",
    "other",
)
FUSION_ROLES = ("FPN blocks", "PAN blocks")


@dataclass
class Layers:
    """The structure of a YAML-built model: per-layer absolute inputs, backbone size, decoder index and roles."""

    inputs: list[list[int]]  # absolute indices each layer reads (-1 resolved)
    n_backbone: int
    decoder: int | None  # index of the RTDETRDecoder, None when the model has none
    roles: dict[int, str]  # encoder layer index -> role (RT-DETR only)
    transformers: set[int] = field(default_factory=set)  # encoder layers that are transformer encoder layers
    n_layers: int = 0  # number of layers (0: unknown, then every non-backbone layer of a non-RT-DETR model is head)

    @property
    def is_rtdetr(self) -> bool:
        """Whether the model ends in an RT-DETR decoder."""
        return self.decoder is not None

    def section(self, i: int) -> str:
        """``backbone``, ``encoder``/``decoder`` (RT-DETR) or ``neck``/``head`` (the last layer)."""
        if i < self.n_backbone:
            return "backbone"
        if not self.is_rtdetr:
            return "neck" if self.n_layers and i < self.n_layers - 1 else "head"
        return "decoder" if i == self.decoder else "encoder"

    def consumers(self, i: int) -> list[int]:
        """Layers that read layer ``i``."""
        return [j for j, f in enumerate(self.inputs) if i in f]


def absolute_inputs(i: int, f: int | list[int]) -> list[int]:
    """A YAML ``from`` as absolute layer indices."""
    return [x if x >= 0 else i + x for x in (f if isinstance(f, (list, tuple)) else [f])]


def _is_decoder(m: nn.Module) -> bool:
    from ultralytics.nn.modules.head import RTDETRDecoder

    return isinstance(m, RTDETRDecoder)


def _is_transformer(m: nn.Module) -> bool:
    from ultralytics.nn.modules.transformer import TransformerEncoderLayer

    return isinstance(m, TransformerEncoderLayer) or "AIFI" in type(m).__name__


def _is_strided(m: nn.Module) -> bool:
    for sub in m.modules():
        stride = getattr(sub, "stride", None)
        if isinstance(sub, (nn.modules.conv._ConvNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)):
            s = stride if isinstance(stride, (tuple, list)) else (stride,)
            if any(x is not None and x > 1 for x in s):
                return True
    return False


def analyse(model: nn.Module) -> Layers:
    """Derive backbone/encoder/decoder sections and encoder roles of a YAML-built Ultralytics model."""
    layers = list(model.model)
    inputs = [absolute_inputs(i, m.f) for i, m in enumerate(layers)]
    yaml = getattr(model, "yaml", None) or {}
    nb = len(yaml.get("backbone", [])) or next((i for i, f in enumerate(inputs) if len(f) > 1), len(layers))
    decoder = next((i for i, m in enumerate(layers) if _is_decoder(m)), None)
    info = Layers(inputs=inputs, n_backbone=nb, decoder=decoder, roles={}, n_layers=len(layers))
    if decoder is None:
        return info

    roles = info.roles
    upsample = {i for i, m in enumerate(layers) if isinstance(m, nn.Upsample)}
    # merges: parameter-free layers reading several layers (Concat, FeatureSum)
    concat = {i for i, m in enumerate(layers) if len(inputs[i]) > 1 and next(m.parameters(), None) is None}
    down: set[int] = set()
    for i in range(nb, decoder):
        m, f = layers[i], inputs[i]
        if i in upsample or i in concat:
            continue
        if _is_transformer(m):
            roles[i] = "AIFI"
            info.transformers.add(i)
        elif _is_strided(m):
            roles[i] = "downsample convs"
            down.add(i)
        elif all(x < nb for x in f):
            roles[i] = "input projections"
        elif any(j in upsample for j in info.consumers(i)):
            roles[i] = "lateral convs"
        elif len(f) == 1 and f[0] in concat:
            fed = inputs[f[0]]
            roles[i] = "FPN blocks" if set(fed) & upsample else "PAN blocks" if set(fed) & down else "other"
        elif len(f) == 1 and roles.get(f[0]) in FUSION_ROLES:
            roles[i] = roles[f[0]]
        else:
            roles[i] = "other"
    for i, role in list(roles.items()):  # whatever sits where AIFI sits (e.g. PSA): S5 projection -> it -> lateral
        f = inputs[i]
        if role == "other" and len(f) == 1 and roles.get(f[0]) == "input projections":
            if any(roles.get(j) == "lateral convs" for j in info.consumers(i)):
                roles[i] = "AIFI"
    for i in sorted(upsample | concat):
        if nb <= i < decoder:
            readers = [j for j in info.consumers(i) if j in roles]
            roles[i] = "FPN blocks" if i in upsample else roles[readers[0]] if readers else "other"
    return info


def decoder_role(child: str) -> str:
    """Role of a direct child of the RT-DETR decoder, by its attribute name."""
    return DECODER_ROLES.get(child, "other")
