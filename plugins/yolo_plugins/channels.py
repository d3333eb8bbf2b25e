"""Channel rules: how the parser learns a registered block's input/output channels and constructor arguments.

A rule is a callable ``rule(layer: Layer) -> None`` that may rewrite ``layer.args`` and ``layer.n`` and must set
``layer.c2`` (the output channels the parser records for later layers). The built-in rules cover the common cases.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import LayerError


class FeatureChannels(list):
    """Output channels of a multi-output layer (one entry per returned feature map), with their strides."""

    def __init__(self, channels: list[int], strides: list[int] | None = None) -> None:
        super().__init__(int(c) for c in channels)
        self.strides = [int(s) for s in strides] if strides is not None else None


@dataclass
class Layer:
    """One YAML row as the parser sees it when it reaches a registered block."""

    index: int  # layer number in the YAML
    module: type  # the registered class
    name: str  # the name registered for it
    f: int | list  # 'from'
    n: int  # repeats, already multiplied by the depth gain
    args: list  # YAML args, strings already evaluated by the parser
    ch: list  # channels of every earlier layer (the parser's list)
    width: float = 1.0
    max_channels: float = float("inf")
    scale: str | None = None
    yaml: dict = field(default_factory=dict)
    c2: Any = None

    @property
    def c1(self) -> Any:
        """Input channels: one value for an int 'from', a list for a list 'from'."""
        return [self.ch[x] for x in self.f] if isinstance(self.f, list) else self.ch[self.f]

    def fail(self, message: str) -> LayerError:
        """An error naming this layer and module."""
        return LayerError(self.index, self.name, message)

    def scaled(self, c: int) -> int:
        """Scale output channels by the YAML width, capped by max_channels, to a multiple of 8 (like Ultralytics)."""
        from ultralytics.utils.ops import make_divisible

        return make_divisible(min(c, self.max_channels) * self.width, 8)


Rule = Callable[[Layer], None]


def single_input(layer: Layer) -> int:
    """The input channels of a block that takes one feature map; a clear layer error for a list or multi-output."""
    c1 = layer.c1
    if isinstance(layer.f, list) or isinstance(c1, list):
        src = layer.f if isinstance(layer.f, list) else f"layer {layer.f} (a multi-output layer, use Pick)"
        raise layer.fail(f"takes one input feature map, got {src}")
    return c1


def conv(repeat_arg: bool = False) -> Rule:
    """Like ``Conv``: args[0] is the output channels (width-scaled, capped); input channels are injected first.

    With ``repeat_arg`` the repeat count goes into the constructor as its third argument (like ``C2f``);
    otherwise ``n > 1`` builds an ``nn.Sequential`` of ``n`` copies.
    """

    def rule(layer: Layer) -> None:
        c1 = single_input(layer)
        if not layer.args or not isinstance(layer.args[0], int):
            raise layer.fail(f"args[0] must be the output channels (an int), got {layer.args!r}")
        layer.c2 = layer.scaled(layer.args[0])
        layer.args = [c1, layer.c2, *layer.args[1:]]
        if repeat_arg:
            layer.args.insert(2, layer.n)
            layer.n = 1

    rule.__name__ = "conv_repeat" if repeat_arg else "conv"
    return rule


def same(layer: Layer) -> None:
    """Channel-preserving: input channels are injected first, output = input."""
    layer.c2 = single_input(layer)
    layer.args = [layer.c2, *layer.args]


def multi_output(layer: Layer) -> None:
    """Multi-output backbone: the class declares its feature channels and strides for the given args.

    The class must provide ``feature_info_for(*args, in_chans=...) -> (channels, strides)`` (a classmethod);
    the module's own ``.channels`` are checked against it after construction.
    """
    c1 = single_input(layer)
    cls = layer.module
    try:
        bound = inspect.signature(cls).bind(*layer.args)
    except TypeError as e:
        raise layer.fail(f"bad arguments {layer.args!r}: {e}") from None
    if "in_chans" in inspect.signature(cls).parameters:
        bound.arguments["in_chans"] = c1
    bound.apply_defaults()
    layer.args = list(bound.args)
    try:
        channels, strides = cls.feature_info_for(*bound.args, **bound.kwargs)
    except (ValueError, TypeError, KeyError) as e:
        raise layer.fail(str(e.args[0]) if e.args else repr(e)) from e
    layer.c2 = FeatureChannels(channels, strides)


def pick(layer: Layer) -> None:
    """Select one output of a multi-output layer; its channels come from that layer (nothing to type)."""
    c1 = layer.c1
    if not isinstance(c1, FeatureChannels):
        raise layer.fail(f"input layer {layer.f} is not a multi-output layer (it has {c1} channels)")
    if len(layer.args) != 1 or not isinstance(layer.args[0], int):
        raise layer.fail(f"args must be [index], got {layer.args!r}")
    k = layer.args[0]
    if not -len(c1) <= k < len(c1):
        raise layer.fail(f"index {k} out of range: layer {layer.f} has {len(c1)} outputs with channels {list(c1)}")
    layer.c2 = c1[k]


def detr_head(layer: Layer) -> None:
    """A DETR head (like ``RTDETRDecoder``): ``from`` lists the levels; their channels go in as the second argument."""
    if not isinstance(layer.f, list):
        raise layer.fail(f"takes a list of feature levels as 'from' (e.g. [15, 18, 21]), got {layer.f!r}")
    c1 = layer.c1
    if any(isinstance(c, list) for c in c1):
        raise layer.fail(f"inputs {layer.f} include a multi-output layer (select its maps with Pick)")
    if not layer.args:
        raise layer.fail("args must start with the class count (nc)")
    layer.args = [layer.args[0], list(c1), *layer.args[1:]]
    layer.c2 = layer.args[2] if len(layer.args) > 2 and isinstance(layer.args[2], int) else c1[-1]


RULES: dict[str, Rule] = {
    "conv": conv(),
    "conv_repeat": conv(repeat_arg=True),
    "same": same,
    "multi_output": multi_output,
    "pick": pick,
    "detr_head": detr_head,
}


def resolve_rule(rule: str | Rule) -> Rule:
    """Turn a rule name or callable into a rule callable."""
    if callable(rule):
        return rule
    if rule not in RULES:
        raise KeyError(f"unknown channel rule {rule!r}; built-in rules: {', '.join(RULES)} (or pass a callable)")
    return RULES[rule]
