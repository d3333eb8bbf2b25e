"""Per-module compute counts: thop's rules, attributed to modules, plus the project's rules for work thop misses.

How the numbers relate to Ultralytics:

* Ultralytics' ``get_flops(model, imgsz)`` returns ``thop.profile(...)[0] / 1e9 * 2``: thop counts multiply-accumulates
  (MACs) and Ultralytics reports GFLOPs = 2 * MACs / 1e9. It profiles small stride-aligned proxy images and
  extrapolates to ``imgsz`` (exact for convolutional and attention costs). Here thop runs once on the full-size image
  with ``ret_layer_info=True`` so that every module gets its own count; the sum is the same figure (a test checks it).
* thop counts a module with a rule (Conv2d, Linear, BatchNorm, ``nn.MultiheadAttention`` including its attention
  products, ...) by hook, and products run functionally outside such modules (``torch.matmul``, ``@``, ``einsum``,
  ``F.linear``, ``scaled_dot_product_attention``) in one lump. The lump is attributed here to the innermost module
  that ran it, so the per-module rows add up to thop's total.
* Work no thop rule sees is counted by :data:`EXTRA_RULES` and kept separate ("extra"), so the thop total still
  matches Ultralytics while the decoder is not under-reported. See :func:`msdeform_attn_macs`.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import thop
import torch
from thop.vision.calc_func import calculate_softmax
from torch import nn

thop_profile = sys.modules["thop.profile"]  # the submodule (``thop.profile`` the attribute is the function)


@dataclass
class Counts:
    """Compute counts of one model at one image size, keyed by module name (``""`` is the model itself).

    ``thop``, ``extra`` and ``params`` hold each module's OWN share (children excluded); use :meth:`inclusive` for a
    module with its descendants. MACs are multiply-accumulates; GFLOPs = 2 * MACs / 1e9 as Ultralytics reports them.
    """

    imgsz: tuple[int, int]
    thop: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    extra: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    params: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    thop_total: float = 0.0  # MACs as thop.profile returns them for the whole model

    def inclusive(self, prefix: str) -> tuple[int, float, float]:
        """(params, thop MACs, extra MACs) of the module named ``prefix`` and everything below it."""

        def under(name: str) -> bool:
            return not prefix or name == prefix or name.startswith(prefix + ".")

        return (
            sum(v for k, v in self.params.items() if under(k)),
            sum(v for k, v in self.thop.items() if under(k)),
            sum(v for k, v in self.extra.items() if under(k)),
        )

    @property
    def total_params(self) -> int:
        """Parameters of the whole model (shared tensors once)."""
        return sum(self.params.values())

    @property
    def gflops(self) -> float:
        """thop's GFLOPs for the whole model: the figure Ultralytics prints."""
        return 2 * self.thop_total / 1e9

    @property
    def extra_gflops(self) -> float:
        """GFLOPs of the work thop does not see, by the project's rules."""
        return 2 * sum(self.extra.values()) / 1e9


def msdeform_attn_macs(m: nn.Module, query: torch.Tensor, value_shapes) -> float:
    """MACs of multi-scale deformable attention that thop misses (its four Linear layers thop does count).

    Rule, for batch B, queries Q, heads H, levels L, points P and head width d = d_model / H:
    bilinear sampling (``F.grid_sample``) reads 4 neighbours and weights each: 4 MACs per sampled channel value,
    ``4*B*Q*H*L*P*d``; weighting the samples by their attention weights and summing: ``B*Q*H*L*P*d``; the softmax
    over the L*P attention logits of each query and head, with thop's own softmax rule.
    """
    b, q = query.shape[:2]
    h, levels, points = m.n_heads, len(value_shapes), m.n_points
    d = m.d_model // h
    samples = b * q * h * levels * points
    return 4 * samples * d + samples * d + float(calculate_softmax(b * q * h, levels * points))


def mha_macs(m: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor) -> float:
    """Attention products of ``nn.MultiheadAttention`` (QK^T and AV, E MACs per query-key pair each).

    Only used when the installed thop has no rule for ``nn.MultiheadAttention`` (thop >= 2.2 on torch >= 2.0 counts
    projections, both products and the softmax itself, so this rule then adds nothing).
    """
    bf = getattr(m, "batch_first", False)
    lq, lk = (query.shape[-2], key.shape[-2]) if bf or query.dim() == 2 else (query.shape[0], key.shape[0])
    b = 1 if query.dim() == 2 else query.shape[0 if bf else 1]
    return 2.0 * b * lq * lk * m.embed_dim


def _msdeform(m, args, kwargs):
    names = ("query", "refer_bbox", "value", "value_shapes")
    bound = dict(zip(names, args)) | {k: v for k, v in kwargs.items() if k in names}
    return msdeform_attn_macs(m, bound["query"], bound["value_shapes"])


def _mha(m, args, kwargs):
    if any(t in thop_profile.register_hooks for t in type(m).__mro__):
        return 0.0  # thop counts it already
    query = args[0] if args else kwargs["query"]
    key = args[1] if len(args) > 1 else kwargs["key"]
    return mha_macs(m, query, key)


def _extra_rules() -> dict[type, Callable]:
    from ultralytics.nn.modules.transformer import MSDeformAttn

    return {MSDeformAttn: _msdeform, nn.MultiheadAttention: _mha}


EXTRA_RULES: dict[type, Callable] = {}  # filled on first use: {module class: fn(module, args, kwargs) -> MACs}


def _has_thop_rule(m: nn.Module) -> bool:
    """Whether thop counts this module by a rule of its own (then thop also stops counting functional products)."""
    for t in type(m).__mro__:
        fn = thop_profile.register_hooks.get(t)
        if fn is not None:
            return fn is not thop_profile.zero_ops
    return False


class _FunctionAttribution(torch.overrides.TorchFunctionMode):
    """Attribute the functional products thop counts to the innermost module running them."""

    def __init__(self, stack: list, sink: dict):
        super().__init__()
        self.stack, self.sink = stack, sink

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        y = func(*args, **kwargs)
        rule = thop_profile.functional_hooks.get(func)
        if rule is not None and self.stack and not any(ruled for _, ruled in self.stack):
            self.sink[self.stack[-1][0]] += rule(args, kwargs, y)
        return y


def count(model: nn.Module, imgsz: int | tuple[int, int] = 640) -> Counts:
    """Count parameters, thop MACs and extra MACs of every module of ``model`` for one image of size ``imgsz``."""
    if not EXTRA_RULES:
        EXTRA_RULES.update(_extra_rules())
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    p = next(model.parameters())
    counts = Counts(imgsz=(h, w))
    names = {m: n for n, m in model.named_modules()}

    seen = set()
    for n, m in model.named_modules():
        for t in m.parameters(recurse=False):
            if id(t) not in seen:
                seen.add(id(t))
                counts.params[n] += t.numel()

    stack: list[tuple[str, bool]] = []
    functional: dict[str, float] = defaultdict(float)
    handles = []

    def push(m, *_):
        stack.append((names[m], _has_thop_rule(m)))

    def pop(m, *_):
        stack.pop()

    def extra(m, args, kwargs, y):
        rule = next((EXTRA_RULES[t] for t in type(m).__mro__ if t in EXTRA_RULES), None)
        counts.extra[names[m]] += float(rule(m, args, kwargs))

    for m in names:
        handles.append(m.register_forward_pre_hook(push))
        handles.append(m.register_forward_hook(pop))
        if any(t in EXTRA_RULES for t in type(m).__mro__):
            handles.append(m.register_forward_hook(extra, with_kwargs=True))
    try:
        im = torch.zeros((1, p.shape[1], h, w), device=p.device, dtype=p.dtype)
        with _FunctionAttribution(stack, functional):
            total, _, tree = thop.profile(model, inputs=[im], verbose=False, ret_layer_info=True)
    finally:
        for handle in handles:
            handle.remove()

    def walk(prefix: str, node: dict) -> float:
        """Store each module's own MACs (its inclusive count minus its children's); return the inclusive count."""
        children = 0.0
        for child, (ops, _, sub) in node.items():
            name = f"{prefix}.{child}" if prefix else child
            walk(name, sub)
            counts.thop[name] += ops - sum(v[0] for v in sub.values())
            children += ops
        return children

    module_ops = walk("", tree)
    for name, ops in functional.items():
        counts.thop[name] += ops
    counts.thop_total = float(total)
    rest = counts.thop_total - module_ops - sum(functional.values())  # functional work outside every module
    if abs(rest) > 0.5:
        counts.thop[""] += rest
    return counts


def ultralytics_gflops(model: nn.Module, imgsz: int | tuple[int, int] = 640) -> float:
    """Ultralytics' own GFLOPs figure (``ultralytics.utils.torch_utils.get_flops``) for comparison."""
    from ultralytics.utils.torch_utils import get_flops

    return get_flops(model, list(imgsz) if isinstance(imgsz, tuple) else imgsz)
