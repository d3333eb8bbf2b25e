"""YOLOv10 blocks in any YAML: the host's ``SCDown``, ``C2fCIB``, ``PSA``, ``RepVGGDW`` and ``CIB``, used as they are.

Ultralytics already defines all five (``ultralytics.nn.modules.block``), so nothing is re-implemented or shadowed and
stock checkpoints load unchanged. The plugin adds only what the host parser lacks:

* ``RepVGGDW`` and ``CIB`` fall through the host's channel chain (their channels had to be typed by hand and did not
  follow width scaling): they get channel rules. ``RepVGGDW`` keeps its input channels (YAML ``[]``); ``CIB`` is
  conv-like (YAML ``[c2, shortcut, e, lk]``, ``c2`` width-scaled).
* ``SCDown``, ``C2fCIB`` and ``PSA`` are built by the host's chain; they get build-time checks that turn inputs the
  block cannot take into an error naming the layer instead of a bare ``assert`` or a shape error at the first forward.

Re-parameterisation is the host's: ``model.fuse()`` folds every Conv+BN and turns each ``RepVGGDW`` into one 7x7
depthwise conv.
"""

from __future__ import annotations

from ultralytics.nn.modules.block import CIB, PSA, C2fCIB, RepVGGDW, SCDown

from ..channels import RULES, Layer, single_input
from ..errors import LayerError
from ..registry import check, teach


def repvggdw_channels(layer: Layer) -> None:
    """``RepVGGDW`` keeps its channels: inferred from the input; a typed count must match the input.

    A typed count is accepted if it equals the input channels either as written or after the YAML's width scaling
    (so ``[256]`` after a 256-channel layer works at every scale).
    """
    c1 = single_input(layer)
    if len(layer.args) > 1:
        raise layer.fail(f"args must be [] (channels inferred) or [channels], got {layer.args!r}")
    if layer.args:
        typed, src = layer.args[0], layer.f if layer.f >= 0 else layer.index + layer.f
        if isinstance(typed, bool) or not isinstance(typed, int) or c1 not in (typed, layer.scaled(typed)):
            raise layer.fail(
                f"is channel-preserving (7x7 + 3x3 depthwise): its input (layer {src}) has {c1} channels but "
                f"args ask for {typed!r}; write [] to infer the channels"
            )
    layer.c2 = c1
    layer.args = [c1]


def cib_channels(layer: Layer) -> None:
    """``CIB`` is conv-like: YAML ``[c2, shortcut=True, e=0.5, lk=False]``, ``c2`` scaled by the YAML width."""
    if len(layer.args) > 4:
        raise layer.fail(f"args must be [c2, shortcut, e, lk], got {layer.args!r}")
    RULES["conv"](layer)  # args -> [c1, c2, *rest], c2 width-scaled
    c1, c2 = layer.args[0], layer.c2
    e = layer.args[3] if len(layer.args) > 3 else 0.5
    if not isinstance(e, (int, float)) or int(c2 * e) < 1:
        raise layer.fail(f"expansion e={e!r} leaves no hidden channels (int({c2} * e) must be >= 1)")
    if layer.n > 1 and c1 != c2:
        raise layer.fail(
            f"{layer.n} repeats need equal input and output channels (input {c1}, output {c2}): repeat it after a "
            "layer that sets the channels, or use C2fCIB"
        )


teach(RepVGGDW, rule=repvggdw_channels)
teach(CIB, rule=cib_channels)


def _int_arg(frame: dict, name: str, k: int, what: str) -> int:
    args = frame["args"]
    if len(args) <= k or isinstance(args[k], bool) or not isinstance(args[k], int):
        got = args[k] if len(args) > k else "nothing"
        raise LayerError(frame["i"], name, f"{what} must be an int, got {got!r} (YAML args {_yaml_args(frame)})")
    return args[k]


def _yaml_args(frame: dict) -> list:
    """The layer's args as written in the YAML row (the host chain has already rewritten ``frame["args"]``)."""
    d, i = frame["d"], frame["i"]
    return list((list(d.get("backbone") or []) + list(d.get("head") or []))[i][3])


def _source(frame: dict) -> str:
    """The input layer as an absolute index."""
    f, i = frame["f"], frame["i"]
    return f"layer {f if f >= 0 else i + f}" if isinstance(f, int) else f"layers {f}"


@check(SCDown)
def check_scdown(frame: dict) -> None:
    """``SCDown`` (YAML ``[c2, k, s]``): what "fits" means.

    The depthwise conv is padded by ``k // 2`` (Ultralytics' autopad), so with an odd kernel and ``1 <= s <= k`` the
    output is exactly ``ceil(H / s)`` x ``ceil(W / s)`` and every input pixel is seen; that is the contract the
    feature pyramid relies on. An even kernel shifts the map by half a pixel and grows it by one (``k=2, s=2`` on 40
    gives 21, which no longer concatenates with the stride-2 level), a stride larger than the kernel skips pixels, and
    a stride below 1 is not a convolution.
    """
    i = frame["i"]
    if len(frame["args"]) != 4:
        raise LayerError(i, "SCDown", f"args must be [c2, k, s] (kernel and stride required), got {_yaml_args(frame)}")
    k = _int_arg(frame, "SCDown", 2, "kernel k")
    s = _int_arg(frame, "SCDown", 3, "stride s")
    if s < 1:
        raise LayerError(i, "SCDown", f"stride s={s} must be >= 1")
    if k < 1 or k % 2 == 0:
        raise LayerError(
            i, "SCDown", f"kernel k={k} must be odd and >= 1 (padding k//2 keeps the output at ceil(H/s) only then)"
        )
    if s > k:
        raise LayerError(i, "SCDown", f"stride s={s} is larger than kernel k={k}: pixels would be skipped; use s <= k")


@check(C2fCIB)
def check_c2fcib(frame: dict) -> None:
    """``C2fCIB`` (YAML ``[c2, shortcut, lk, g, e]``): the hidden width ``int(c2 * e)`` must be a usable split."""
    i, args = frame["i"], frame["args"]  # [c1, c2, n, shortcut, lk, g, e]
    c2 = args[1]
    for k, what in ((3, "shortcut"), (4, "lk")):
        if len(args) > k and not isinstance(args[k], (bool, int)):
            raise LayerError(i, "C2fCIB", f"{what} must be True or False, got {args[k]!r}")
    g = args[5] if len(args) > 5 else 1
    e = args[6] if len(args) > 6 else 0.5
    if len(args) > 7:
        raise LayerError(i, "C2fCIB", f"args must be [c2, shortcut, lk, g, e], got {_yaml_args(frame)}")
    if not isinstance(e, (int, float)) or not 0 < e <= 1:
        raise LayerError(i, "C2fCIB", f"expansion e={e!r} must be in (0, 1]")
    c = int(c2 * e)
    if c < 1:
        raise LayerError(i, "C2fCIB", f"hidden channels int({c2} * {e}) = {c}: nothing to split; raise c2 or e")
    if not isinstance(g, int) or g < 1 or c % g:
        raise LayerError(
            i, "C2fCIB", f"groups g={g!r} must divide the hidden channels int({c2} * {e}) = {c}; use g=1 or a divisor"
        )


@check(PSA)
def check_psa(frame: dict) -> None:
    """``PSA`` (YAML ``[c2, e]``): channel-preserving, and its attention must split into whole heads."""
    i, args = frame["i"], frame["args"]  # [c1, c2, e]
    c1, c2 = args[0], args[1]
    if c1 != c2:
        raise LayerError(
            i,
            "PSA",
            f"keeps its channels (output must equal input) but its input ({_source(frame)}) has {c1} channels and "
            f"args[0]={_yaml_args(frame)[0]!r} gives {c2} at this scale; write the input layer's channel count",
        )
    if len(args) > 3:
        raise LayerError(i, "PSA", f"args must be [c2] or [c2, e], got {_yaml_args(frame)}")
    e = args[2] if len(args) > 2 else 0.5
    if not isinstance(e, (int, float)) or not 0 < e <= 1:
        raise LayerError(i, "PSA", f"expansion e={e!r} must be in (0, 1]")
    c = int(c1 * e)
    heads = max(c // 64, 1)  # what the host's PSA uses
    if c < 2 or c % heads:
        raise LayerError(
            i,
            "PSA",
            f"attention width int({c1} * {e}) = {c} does not split into {heads} head(s) of equal size >= 2 "
            "(heads = max(width // 64, 1)); use a channel count whose half is a multiple of 64 or below 128",
        )
