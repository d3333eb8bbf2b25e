"""Whether a forward pass is being traced or exported (TorchScript, ONNX, OpenVINO's tracer, ``torch.export``).

Deploy forms take their runtime-friendly graph only then: in eager PyTorch the host's own path is faster.
"""

from __future__ import annotations

import torch


def exporting() -> bool:
    """True while ``torch.jit.trace``, ``torch.onnx.export`` or ``torch.export`` records this forward pass."""
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting())
