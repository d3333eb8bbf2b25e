"""``Pick``: select one output of a multi-output layer, with its channels inferred."""

from __future__ import annotations

import torch
from torch import nn

from ..registry import register


@register(rule="pick")
class Pick(nn.Module):
    """Return ``x[index]`` from a layer that outputs a list of feature maps (YAML: ``[0, 1, Pick, [2]]``)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Select the feature map."""
        return x[self.index]
