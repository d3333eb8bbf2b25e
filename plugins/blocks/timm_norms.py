"""Keep timm's BatchNorm settings inside Ultralytics models.

Ultralytics' ``initialize_weights`` sets ``eps=1e-3, momentum=0.03`` on every module whose type *is*
``nn.BatchNorm2d``; timm backbones (and their pretrained statistics) use ``eps=1e-5, momentum=0.1``. Retyping their
BatchNorms to a subclass that adds nothing keeps timm's values while every ``isinstance(m, nn.BatchNorm2d)`` check
(fusing, thop, the engine) still holds.
"""

from __future__ import annotations

from torch import nn


class TimmBatchNorm2d(nn.BatchNorm2d):
    """A ``BatchNorm2d`` that Ultralytics' weight initialisation leaves alone; nothing else differs."""


def keep_timm_norms(module: nn.Module) -> None:
    """Retype every plain ``nn.BatchNorm2d`` inside ``module`` to :class:`TimmBatchNorm2d`, in place."""
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = TimmBatchNorm2d
