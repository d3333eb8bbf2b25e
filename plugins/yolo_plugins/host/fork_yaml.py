"""Fork-style model YAMLs run unchanged: translate the forks' backbone-row convention into native rows.

Forks of Ultralytics that add backbones by editing ``parse_model`` share one convention: row 0 is a module that
returns a *list* of feature maps (``EfficientViT_M0`` … ``EfficientViT_M5``, or a bare timm model name such as
``resnet18`` with ``[pretrained]`` or ``[pretrained, weights file]``); the fork pads its channel list in front to five
entries, so layer indices 0-4 belong to the backbone, **2, 3, 4 are P3, P4, P5** and the next YAML row is layer 5.
``[True]`` (a timm name's pretrained flag, or ``EfficientViT_M*``'s weights argument) takes timm's default ImageNet
weights through the Hugging Face cache, as the forks' ``timm.create_model(..., pretrained=True)`` does; with
``[True, weights file]`` or ``[False, weights file]`` that local file is loaded instead.

``translate`` turns such a YAML into native rows with the same numbering: row 0 becomes our ``EfficientViT`` or
``TimmBackbone`` (returning the backbone's deepest maps), followed by four ``Pick`` rows at indices 1-4, so every
later row keeps its ``from`` and its index, and errors name layers as the fork numbers them. Index 0 and empty
padding slots cannot be fed to a later row; doing so is a layer error. Native and stock YAMLs are never touched:
only a row-0 module that neither Ultralytics nor the registry defines, and that is a fork backbone name, a timm
model name or looks like a backbone factory (lower case with ``_`` or a digit, such as ``lsknet_t``; not merely a
case typo of a known module like ``conv``), marks a YAML as fork-style.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import LayerError

EFFICIENTVIT = re.compile(r"^EfficientViT_M([0-5])$")
SLOTS = 5  # the forks pad the backbone's channel list to five entries: indices 0-4


@dataclass(frozen=True)
class ForkBackbone:
    """What a fork's row 0 becomes: the native row and which fork index each native output serves."""

    fork_name: str  # as written in the fork YAML, e.g. EfficientViT_M0 or resnet18
    row: list  # the native row 0, e.g. [-1, 1, "EfficientViT", ["m0"]]
    outputs: int  # maps the native block returns (its deepest ones), at fork indices SLOTS - outputs ... 4
    strides: list[int]

    def slot(self, fork_index: int) -> int | None:
        """The native output behind a fork index 1-4, or None for an empty padding slot."""
        k = fork_index - (SLOTS - self.outputs)
        return k if 0 <= k < self.outputs else None

    def rows(self) -> list[list]:
        """Native rows 0-4: the backbone, then one ``Pick`` per fork index 1-4 (an empty slot repeats P3)."""
        picks = [[0, 1, "Pick", [self.slot(j) if self.slot(j) is not None else 0]] for j in range(1, SLOTS)]
        return [self.row, *picks]


def looks_like_fork(d: dict, namespace: dict) -> bool:
    """Whether row 0 is a backbone in the forks' convention (a name neither the host nor the plugin defines)."""
    rows = list(d.get("backbone") or [])
    if not rows or not isinstance(rows[0], (list, tuple)) or len(rows[0]) != 4 or not isinstance(rows[0][2], str):
        return False
    name = rows[0][2]
    if name in namespace or name.startswith(("nn.", "torchvision.")):
        return False
    if EFFICIENTVIT.match(name):
        return True
    if not name[:1].islower() or name.lower() in {k.lower() for k in namespace}:  # 'conv' is a typo of Conv
        return False
    import timm

    return timm.is_model(name) or bool(re.search(r"[_\d]", name))  # a timm name or a factory such as lsknet_t


def backbone(name: str, args: list, index: int = 0) -> ForkBackbone | None:
    """The native backbone for a fork's row-0 module ``name`` with ``args``; None if it is not one we know."""
    m = EFFICIENTVIT.match(name)
    if m:
        from ..blocks.efficientvit import EfficientViT

        if len(args) > 1:
            raise LayerError(index, name, f"takes [], [True] (timm's ImageNet weights) or [weights file], got {args!r}")
        variant = f"m{m[1]}"
        native = [-1, 1, "EfficientViT", [variant, *args]]
        channels, strides = EfficientViT.feature_info_for(variant)
        return ForkBackbone(name, native, len(channels), strides)
    import timm

    if not timm.is_model(name):
        return None
    if len(args) > 2:
        raise LayerError(index, name, f"takes [pretrained] or [pretrained, weights file], got {args!r}")
    pretrained = args[0] if args else False
    if pretrained is not True and pretrained not in (False, None, 0):
        raise LayerError(index, name, f"args[0] must be pretrained True/False, got {pretrained!r}")
    weights = args[1:] if len(args) > 1 and args[1] else ([True] if pretrained is True else [])
    from ..blocks.timm_backbone import TimmBackbone

    _, strides = TimmBackbone.feature_info_for(name)
    if len(strides) > SLOTS:
        raise LayerError(index, name, f"returns {len(strides)} maps; the fork convention has room for {SLOTS}")
    outputs = min(len(strides), SLOTS - 1)  # fork index 0 (the stride-2 map of five) is never fed to a later row
    out_indices = list(range(-outputs, 0))
    native = [-1, 1, "TimmBackbone", [name, out_indices, *weights]]
    return ForkBackbone(name, native, outputs, strides[-outputs:])


def _check_sources(rows: list, fork: ForkBackbone) -> None:
    """No later row may read index 0 or an empty padding slot of the backbone."""
    for i, row in enumerate(rows[SLOTS:], start=SLOTS):
        sources = row[0] if isinstance(row[0], list) else [row[0]]
        for f in sources:
            if not isinstance(f, int) or isinstance(f, bool):
                continue
            j = i + f if f < 0 else f
            if j == 0 or (0 < j < SLOTS and fork.slot(j) is None):
                filled = ", ".join(f"{SLOTS - fork.outputs + k} = stride {s}" for k, s in enumerate(fork.strides))
                raise LayerError(
                    i,
                    str(row[2]),
                    f"reads index {j}, an empty slot of the fork's padded backbone: {fork.fork_name} fills {filled}",
                )


def translate(d: dict, index_of_row0: int = 0) -> tuple[dict, ForkBackbone | None]:
    """The native form of a fork-style model dict (a new dict) and its backbone; ``(d, None)`` if row 0 is unknown."""
    rows = list(d["backbone"])
    f, n, name, args = rows[0]
    fork = backbone(name, list(args), index_of_row0)
    if fork is None:
        return d, None
    if f != -1 or n != 1:
        raise LayerError(0, name, f"a fork backbone row is [-1, 1, {name}, args], got {rows[0]!r}")
    native = {**d, "backbone": [*fork.rows(), *rows[1:]], "head": list(d.get("head") or [])}
    _check_sources(native["backbone"] + native["head"], fork)
    return native, fork
