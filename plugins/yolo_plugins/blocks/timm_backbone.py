"""``TimmBackbone``: any timm model that supports ``features_only`` as a multi-output YAML layer.

YAML ``[-1, 1, TimmBackbone, [model, out_indices, pretrained, first_projection]]`` (trailing arguments optional), e.g.
``[-1, 1, TimmBackbone, [resnet18, [-3, -2, -1]]]``: the layer returns the feature maps timm's ``features_only``
model returns, and the parser learns their channels and strides from timm's ``feature_info``, read from a model built
on the meta device (no memory, no forward, no download). Select maps with ``Pick``.

* ``out_indices`` are timm's own feature-level indices for that model (``resnet18`` has five levels, strides
  2..32; ``convnext_atto`` four, strides 4..32); negative ones count from the deepest, so ``[-3, -2, -1]`` is
  P3/P4/P5 for the usual strides-8/16/32 families. ``None`` returns every level timm exposes.
* ``pretrained`` is a local weights file (a timm classifier state dict, a timm ``features_only`` state dict, or a
  wrapped checkpoint; see ``yolo_plugins.weights``), or ``True``: timm's default ImageNet weights for the model name
  (its pretrained config's Hugging Face Hub repo, e.g. ``timm/resnet18.a1_in1k``), read from the Hugging Face cache
  and downloaded into it only when missing (``yolo_plugins.weights.hub``). Either way the file is loaded by the same
  validated all-or-nothing loader; ``False``/``None``: random weights. Nothing downloads unless ``True`` is given.
* ``first_projection=True`` gives block 0 of the first stage of a timm ResNet a 1x1 conv + BN projection shortcut
  where timm has the identity (BasicBlock depths: ``resnet18d``/``resnet34d``). The official RT-DETR PResNet-18/34
  backbones have it, so their checkpoints need it. It starts as an exact identity (unit kernel, BN statistics that
  leave the input unchanged), so ImageNet weights without it compute what timm's model computes.
* ``fuse()`` runs timm's own ``reparameterize_model`` in place: every module timm gives a ``fuse()``,
  ``reparameterize()`` or ``switch_to_deploy()`` (RepViT, FastViT, MobileOne, EfficientViT-M, LeViT conv+BN pairs,
  ...) is folded. Then the conv + BN of every timm module listed in ``CONV_BN_MODULES`` (whose forward runs ``conv``
  then ``bn`` first: HGNetV2's ``ConvBNAct``) is folded into one conv by Ultralytics' ``fuse_conv_and_bn``. Plain
  conv/BN pairs elsewhere (ResNet, ConvNeXt) stay as they are.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import torch
from torch import nn

from ..registry import register
from ..weights.files import LoadReport, StateDict
from .timm_base import TimmBasedBackbone

OutIndices = Union[Sequence[int], int, None]
CONV_BN_MODULES = ("timm.models.hgnet.ConvBNAct",)  # forward: conv, bn, then anything (fused: bn -> Identity)


def fold_conv_bn(net: nn.Module) -> int:
    """Fold ``bn`` into ``conv`` in every module of a ``CONV_BN_MODULES`` class; returns how many were folded."""
    from ultralytics.utils.torch_utils import fuse_conv_and_bn

    n = 0
    for m in net.modules():
        name = f"{type(m).__module__}.{type(m).__qualname__}"
        if name in CONV_BN_MODULES and type(m.conv) is nn.Conv2d and isinstance(m.bn, nn.BatchNorm2d):
            m.conv, m.bn = fuse_conv_and_bn(m.conv, m.bn), nn.Identity()
            n += 1
    return n


def _check_name(model: str) -> str:
    """The timm model name, or a clear error with the closest registered names; hub names are refused."""
    import timm

    if not isinstance(model, str) or not model:
        raise ValueError(f"TimmBackbone: model must be a timm model name (a string), got {model!r}")
    if model.startswith(("hf-hub:", "hf_hub:", "local-dir:")):
        raise ValueError(
            f"TimmBackbone: {model!r} would fetch a model config from outside timm's registry; use a registered timm "
            "name and pass local weights with pretrained=<path>"
        )
    if not timm.is_model(model):
        arch = model.split(".")[0]
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        close += [m for m in timm.list_models(f"*{arch}*")[:5] if m not in close]
        hint = f"; close names: {', '.join(close[:6])}" if close else ""
        raise ValueError(f"TimmBackbone: unknown timm model {model!r}{hint} (see timm.list_models())")
    return model


def _out_indices(out_indices: OutIndices) -> tuple[int, ...] | None:
    if out_indices is None:
        return None
    if isinstance(out_indices, int) and not isinstance(out_indices, bool):
        return (out_indices,)
    if not isinstance(out_indices, Sequence) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in out_indices
    ):
        raise ValueError(f"TimmBackbone: out_indices must be a list of ints (timm feature levels), got {out_indices!r}")
    return tuple(out_indices)


def _add_first_projection(net: nn.Module, model: str) -> None:
    """Give block 0 of a timm ResNet's first stage a 1x1 conv + BN projection shortcut, initialised as the identity.

    The shortcut is ``downsample`` as timm names it (``[pool, conv, norm]``, the pool an identity at stride 1), so its
    tensors are ``layer1.0.downsample.1.weight`` and ``layer1.0.downsample.2.*`` like every other stage's projection.
    """
    block = next(iter(getattr(net, "layer1", None) or []), None)
    if block is None or not hasattr(block, "downsample"):
        raise ValueError(
            f"TimmBackbone: first_projection needs a timm ResNet (a 'layer1' of blocks with a 'downsample' shortcut); "
            f"{model!r} has none"
        )
    if block.downsample is not None:
        raise ValueError(
            f"TimmBackbone: {model!r} already has a projection shortcut in layer1.0; drop first_projection"
        )
    conv = block.conv1
    c = int(conv.in_channels)
    if c != int(getattr(block, "conv3", getattr(block, "conv2", conv)).out_channels):
        raise ValueError(f"TimmBackbone: layer1.0 of {model!r} changes the width; it has a projection already")
    proj = nn.Conv2d(c, c, 1, bias=False, device=conv.weight.device, dtype=conv.weight.dtype)
    norm = type(block.bn1)(c, device=conv.weight.device, dtype=conv.weight.dtype)
    if conv.weight.device.type != "meta":
        with torch.no_grad():
            proj.weight.copy_(torch.eye(c).view(c, c, 1, 1))
            norm.running_var.fill_(1.0 - norm.eps)  # (x - 0) / sqrt(1 - eps + eps) * 1 + 0 == x
    block.downsample = nn.Sequential(nn.Identity(), proj, norm)


def _create(
    model: str, out_indices: tuple[int, ...] | None, in_chans: int, first_projection: bool = False
) -> nn.Module:
    """timm's ``features_only`` model, never with pretrained weights; a clear error when it cannot be built."""
    import timm

    kwargs = {"features_only": True, "pretrained": False, "in_chans": in_chans}
    if out_indices is not None:
        kwargs["out_indices"] = out_indices
    try:
        net = timm.create_model(model, **kwargs)
    except IndexError:
        with torch.device("meta"):
            levels = len(timm.create_model(model, features_only=True, pretrained=False).feature_info.out_indices)
        raise ValueError(
            f"TimmBackbone: out_indices {list(out_indices)} out of range for {model!r}, which has {levels} feature "
            f"levels (valid: 0..{levels - 1}, or negative from the deepest)"
        ) from None
    except RuntimeError as e:
        if "features_only" in str(e) or "feature" in str(e).lower():
            raise ValueError(f"TimmBackbone: timm model {model!r} does not support features_only: {e}") from None
        raise
    if first_projection:
        _add_first_projection(net, model)
    return net


def _first_projection(value: object) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    raise ValueError(f"TimmBackbone: first_projection must be true or false, got {value!r}")


@functools.lru_cache(maxsize=64)
def _feature_info(
    model: str, out_indices: tuple[int, ...] | None, in_chans: int, first_projection: bool = False
) -> tuple[list[int], list[int]]:
    try:
        with torch.device("meta"):  # no memory, no initialisation cost, no forward
            net = _create(model, out_indices, in_chans, first_projection)
    except (NotImplementedError, RuntimeError):  # a model whose constructor cannot run on meta tensors
        net = _create(model, out_indices, in_chans)
    return [int(c) for c in net.feature_info.channels()], [int(r) for r in net.feature_info.reduction()]


@register(rule="multi_output", fuse=True)
class TimmBackbone(TimmBasedBackbone):
    """A timm ``features_only`` model returning a list of feature maps (YAML: ``[-1, 1, TimmBackbone, [resnet18]]``).

    Args:
        model: timm model name (``timm.list_models()``), e.g. ``"resnet18"``, ``"convnext_atto"``.
        out_indices: timm feature levels to return (negative: from the deepest); ``None``: all of them.
        pretrained: a local weights file (relative paths: see ``paths.weights_dirs``), or ``True`` for timm's default
            ImageNet weights through the Hugging Face cache (downloaded only if not cached); ``None``/``False``: none.
        first_projection: add a 1x1 conv + BN projection shortcut to block 0 of a ResNet's first stage (official
            RT-DETR PResNet-18/34 layout); it starts as the identity.
        in_chans: input channels (the YAML parser passes the input layer's channels).
    """

    def __init__(
        self,
        model: str = "resnet18",
        out_indices: OutIndices = None,
        pretrained: str | Path | bool | None = None,
        first_projection: bool = False,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.name = _check_name(model)
        self.out_indices = _out_indices(out_indices)
        self.first_projection = _first_projection(first_projection)
        self.model = _create(self.name, self.out_indices, in_chans, self.first_projection)
        self.channels = [int(c) for c in self.model.feature_info.channels()]
        self.strides = [int(r) for r in self.model.feature_info.reduction()]
        self._finish_init(self.model, pretrained)

    @classmethod
    def feature_info_for(
        cls,
        model: str = "resnet18",
        out_indices: OutIndices = None,
        pretrained: str | Path | bool | None = None,
        first_projection: bool = False,
        in_chans: int = 3,
    ) -> tuple[list[int], list[int]]:
        """Channels and strides of the returned maps, from timm's ``feature_info`` of a model built on meta."""
        channels, strides = _feature_info(
            _check_name(model), _out_indices(out_indices), int(in_chans), _first_projection(first_projection)
        )
        return list(channels), list(strides)  # copies: the cached lists stay as timm reported them

    def _to_features_layout(self, sd: StateDict) -> tuple[StateDict, str]:
        """Rename a timm classifier state dict to the ``features_only`` model's keys.

        timm's feature wrapper flattens one level of ``nn.Sequential`` children into its top level (``stages.0`` ->
        ``stages_0``) and some wrappers keep the whole network under ``model.``; keys of a features-only state dict
        already match and are left alone. Keys with no counterpart (the classifier head) are reported as skipped.
        """
        top = {name for name, _ in self.model.named_children()}
        if any(k.split(".")[0] in top for k in sd):
            return sd, ""
        if top == {"model"}:
            return {f"model.{k}": v for k, v in sd.items()}, "timm classifier"
        out = {}
        for k, v in sd.items():
            parts = k.split(".")
            if len(parts) > 2 and f"{parts[0]}_{parts[1]}" in top and parts[0] not in top:
                k = f"{parts[0]}_{parts[1]}." + ".".join(parts[2:])
            out[k] = v
        return out, "timm classifier"

    def _timm_name(self) -> str:
        return self.name

    def _load(self, path: str | Path) -> LoadReport:
        """Load a local timm classifier or features_only state dict into the wrapped model."""
        from ..weights.files import WeightsError, load_pretrained

        name = f"TimmBackbone({self.name})"
        try:
            return load_pretrained(self.model, path, remap=self._to_features_layout, name=name)
        except WeightsError as e:
            if not self.first_projection or "layer1.0.downsample" not in str(e):
                raise
        # A timm (ImageNet) file has no first projection: load everything else, keep the projection as it is.
        block = self.model.layer1[0]
        projection, block.downsample = block.downsample, None
        try:
            report = load_pretrained(self.model, path, remap=self._to_features_layout, name=name)
        finally:
            block.downsample = projection
        report.defaulted += [f"layer1.0.downsample.{k}" for k in projection.state_dict()]
        report.total += len(projection.state_dict())
        return report

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the selected feature maps (channels ``self.channels``, strides ``self.strides``)."""
        return list(self.model(x))

    @torch.no_grad()
    def fuse(self) -> TimmBackbone:
        """Re-parameterise in place with timm's ``reparameterize_model`` (idempotent)."""
        if self.fused:
            return self
        from timm.utils.model import reparameterize_model

        training = self.training
        reparameterize_model(self.model, inplace=True)
        fold_conv_bn(self.model)
        self.train(training)
        self.fused = True
        return self

    def extra_repr(self) -> str:
        idx = list(self.out_indices) if self.out_indices is not None else None
        extra = ", first_projection=True" if getattr(self, "first_projection", False) else ""
        return f"model={self.name}, out_indices={idx}{extra}, fused={self.fused}"
