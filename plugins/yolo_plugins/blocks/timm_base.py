"""What the timm-based backbones (``EfficientViT``, ``TimmBackbone``) share.

* BatchNorm settings: Ultralytics' ``initialize_weights`` sets ``eps=1e-3, momentum=0.03`` on every module whose type
  *is* ``nn.BatchNorm2d``; timm backbones (and their pretrained statistics) use ``eps=1e-5, momentum=0.1``. Retyping
  their BatchNorms to a subclass that adds nothing keeps timm's values while every ``isinstance(m, nn.BatchNorm2d)``
  check (fusing, thop, the engine) still holds.
* Pretrained weights and the fused state: ``pretrained=`` loads a local file, or with ``True`` timm's default ImageNet
  weights through the Hugging Face cache (``yolo_plugins.weights.hub``: cache first, downloaded only when missing and
  the hub is online), at construction (never after ``fuse()``); both go through the same validated all-or-nothing
  loader. The load report is kept for the user but left out of pickles (checkpoints hold tensors and plain attributes
  only).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..weights.files import LoadReport


class TimmBatchNorm2d(nn.BatchNorm2d):
    """A ``BatchNorm2d`` that Ultralytics' weight initialisation leaves alone; nothing else differs."""


def keep_timm_norms(module: nn.Module) -> None:
    """Retype every plain ``nn.BatchNorm2d`` inside ``module`` to :class:`TimmBatchNorm2d`, in place."""
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = TimmBatchNorm2d


class TimmBasedBackbone(nn.Module):
    """Base of the multi-output backbones built from timm: call :meth:`_finish_init` at the end of ``__init__``."""

    fused: bool = False
    load_report: LoadReport | None = None

    def _finish_init(self, net: nn.Module, pretrained: str | Path | bool | None) -> None:
        """Keep timm's BatchNorm settings in ``net``, then load ``pretrained`` (a local file or ``True``) if given."""
        keep_timm_norms(net)
        self.fused = False
        self.load_report = self.load(pretrained) if pretrained else None

    def load(self, path: str | Path | bool) -> LoadReport:
        """Load a local weights file, or with ``True`` timm's default ImageNet weights for this model through the
        Hugging Face cache (see ``yolo_plugins.weights.hub``); all tensors are validated first, or nothing is loaded
        (see ``yolo_plugins.weights.files``)."""
        if self.fused:
            raise RuntimeError(f"{type(self).__name__}: load weights before fuse(); fused layers have no BatchNorm")
        if path is True:
            from ..weights.hub import timm_weights_file

            path = timm_weights_file(self._timm_name(), type(self).__name__)
        return self._load(path)

    def _timm_name(self) -> str:
        """The timm model name whose default pretrained weights ``pretrained=True`` loads."""
        raise NotImplementedError

    def _load(self, path: str | Path) -> LoadReport:
        raise NotImplementedError

    def __getstate__(self) -> dict:
        """Pickle without the load report: checkpoints keep tensors and plain attributes only (no Path objects)."""
        return {**super().__getstate__(), "load_report": None}
