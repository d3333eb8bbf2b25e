"""``Pick``: select one output of a multi-output layer, with its channels inferred; and a check for ``Index``."""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules import Index

from ..channels import FeatureChannels
from ..errors import LayerError
from ..registry import register, teach


@register(rule="pick")
class Pick(nn.Module):
    """Return ``x[index]`` from a layer that outputs a list of feature maps (YAML: ``[0, 1, Pick, [2]]``)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Select the feature map."""
        return x[self.index]


def check_index(frame: dict) -> None:
    """The host's ``Index`` takes typed channels: after a multi-output layer they must be the real ones."""
    c1 = frame["ch"][frame["f"]] if isinstance(frame["f"], int) else None
    if isinstance(c1, FeatureChannels):
        idx = frame["args"][0] if frame["args"] else 0
        if not -len(c1) <= idx < len(c1):
            raise LayerError(frame["i"], "Index", f"index {idx} out of range: layer {frame['f']} has {len(c1)} outputs")
        if frame["c2"] != c1[idx]:
            raise LayerError(
                frame["i"],
                "Index",
                f"typed {frame['c2']} channels but output {idx} of layer {frame['f']} has {c1[idx]} "
                f"(its outputs have {list(c1)}); fix the number, or use [{frame['f']}, 1, Pick, [{idx}]] to infer it",
            )


teach(Index, check=check_index)
