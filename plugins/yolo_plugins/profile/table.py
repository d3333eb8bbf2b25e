"""Hierarchical module table (module, #parameters, GFLOPs, CPU ms) in the style of fvcore's ``flop_count_table``.

Rows form a tree: the model; its sections (backbone, encoder, decoder for RT-DETR, else backbone, neck and head); for
RT-DETR the roles inside the encoder and decoder (see :mod:`yolo_plugins.profile.roles`); the YAML layers; then their
submodules. ``depth`` says how many levels below the model are shown (the model itself is depth 0). Given a
:class:`~yolo_plugins.profile.timing.Timing`, rows also get CPU ms: layers, sections, roles and the decoder's steps
are timed; deeper submodules are not (``-``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..weights.roles import DECODER_ORDER, ENCODER_ROLES, Layers, analyse, decoder_role
from .counting import Counts
from .timing import Timing


@dataclass
class Row:
    """One table row: a label and the module names whose inclusive counts it sums."""

    label: str
    names: list[str]
    depth: int
    params: int = 0
    thop_macs: float = 0.0
    extra_macs: float = 0.0
    children: list[Row] = field(default_factory=list)
    ms: float | None = None  # median CPU ms with hooks; None when not timed
    time_keys: list[str] | None = None  # timing keys of a row that is a step, not a module (e.g. top-k)

    @property
    def gflops(self) -> float:
        """thop GFLOPs (2 * MACs / 1e9, as Ultralytics counts)."""
        return 2 * self.thop_macs / 1e9

    @property
    def extra_gflops(self) -> float:
        """GFLOPs thop does not see, by the project's rules."""
        return 2 * self.extra_macs / 1e9

    def walk(self, depth: int):
        """This row and its descendants down to ``depth``, parents first."""
        if self.depth <= depth:
            yield self
            for c in self.children:
                yield from c.walk(depth)


def _module_row(name: str, module: nn.Module, depth: int, label: str | None = None) -> Row:
    row = Row(label or f"{name} ({type(module).__name__})", [name], depth)
    for child, sub in module.named_children():
        row.children.append(_module_row(f"{name}.{child}", sub, depth + 1))
    return row


def build(model: nn.Module, counts: Counts, layers: Layers | None = None, timing: Timing | None = None) -> Row:
    """The full row tree of ``model`` with its counts (and, given ``timing``, its CPU ms) filled in."""
    layers = layers or analyse(model)
    root = Row("model", [""], 0)
    prefix = next((n for n, m in model.named_modules() if m is model.model), "model")
    sections: dict[str, Row] = {}
    groups: dict[tuple[str, str], Row] = {}

    def section(name: str) -> Row:
        if name not in sections:
            sections[name] = Row(name, [], 1)
        return sections[name]

    def group(sec: str, role: str) -> Row:
        if (sec, role) not in groups:
            groups[sec, role] = Row(f"{sec}: {role}", [], 2)
        return groups[sec, role]

    for i, m in enumerate(model.model):
        name = f"{prefix}.{i}"
        sec = layers.section(i)
        if sec == "decoder":
            for child, sub in m.named_children():
                parent = group(sec, decoder_role(child))
                parent.children.append(_module_row(f"{name}.{child}", sub, 3))
            steps = (
                (f"{name}:anchors", f"{name} anchors (_generate_anchors, cached per input size)"),
                (f"{name}:topk", f"{name} top-k, gathers (rest of _get_decoder_input)"),
            )
            for key, label in steps:  # steps of query selection that are no module: timed, no GFLOPs
                if timing is not None and key in timing.steps:
                    group(sec, "query selection").children.append(Row(label, [], 3, time_keys=[key]))
            own = Row(f"{name} ({type(m).__name__}, own work: output top-k)", [name], 3)
            own.children = []
            group(sec, "other").children.append(own)  # output top-k and other work of the decoder itself
            continue
        parent = group(sec, layers.roles.get(i, "other")) if sec == "encoder" else section(sec)
        parent.children.append(_module_row(name, m, parent.depth + 1))

    for sec in ("backbone", "encoder", "decoder", "neck", "head"):
        if sec in sections:
            root.children.append(sections[sec])
        order = ENCODER_ROLES if sec == "encoder" else DECODER_ORDER if sec == "decoder" else ()
        for role in order:
            if (sec, role) in groups:
                section(sec).children.append(groups[sec, role])
                if sections[sec] not in root.children:
                    root.children.append(sections[sec])
    own_only = {f"{prefix}.{layers.decoder}"} if layers.is_rtdetr else set()
    _fill(root, counts, own_only)
    if timing is not None:
        _fill_ms(root, timing, own_only)
    _prune(root)
    leftover = counts.thop.get("", 0.0) + sum(v for k, v in counts.thop.items() if k and k.split(".")[0] != prefix)
    if leftover:
        root.children.append(Row("other (model-level work)", [], 1, thop_macs=leftover))
    return root


def _fill(row: Row, counts: Counts, own_only: set[str]) -> None:
    for c in row.children:
        _fill(c, counts, own_only)
    if row.names == [""]:
        row.params, row.thop_macs, row.extra_macs = counts.inclusive("")
    elif row.names:
        for n in row.names:
            if n in own_only:  # the decoder's own work, its children are listed elsewhere
                row.params += counts.params.get(n, 0)
                row.thop_macs += counts.thop.get(n, 0.0)
                row.extra_macs += counts.extra.get(n, 0.0)
            else:
                p, t, e = counts.inclusive(n)
                row.params, row.thop_macs, row.extra_macs = row.params + p, row.thop_macs + t, row.extra_macs + e
    else:  # a group: the sum of its rows
        row.params = sum(c.params for c in row.children)
        row.thop_macs = sum(c.thop_macs for c in row.children)
        row.extra_macs = sum(c.extra_macs for c in row.children)


def _fill_ms(row: Row, timing: Timing, own_only: set[str]) -> list[str]:
    """Set ``row.ms`` (median over runs of the summed time of the row's keys); return those keys."""
    below = [k for c in row.children for k in _fill_ms(c, timing, own_only)]
    if row.time_keys is not None:
        keys = [k for k in row.time_keys if k in timing.steps]
    elif row.names == [""]:
        keys = list(timing.steps)
    elif row.names:
        keys = [k for n in row.names for k in ([n] if n in own_only else timing.keys_under(n)) if k in timing.steps]
    else:  # a group: the keys of its rows
        keys = below
    row.ms = timing.ms(keys)
    return keys


def _prune(row: Row) -> None:
    """Drop empty 'other' groups and the decoder's own row when it has no work (and takes no time)."""
    row.children = [
        c
        for c in row.children
        if c.params or c.thop_macs or c.extra_macs or c.ms or not ("other" in c.label or "own" in c.label)
    ]
    for c in row.children:
        _prune(c)


def sections(root: Row) -> dict[str, float]:
    """GFLOPs (thop + extra) of each top-level section: the components of a stacked plot."""
    return {c.label: c.gflops + c.extra_gflops for c in root.children}


def fmt_params(n: float) -> str:
    """fvcore-style short number: 1.2K, 3.4M."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.{3 if abs(n) < 10 * scale else 2 if abs(n) < 100 * scale else 1}f}{unit}"
    return f"{int(n)}"


def fmt_gflops(g: float) -> str:
    """GFLOPs with enough digits to see small modules."""
    if g == 0:
        return "0"
    return f"{g:.3f}" if g >= 0.001 else f"{g:.2e}"


def fmt_ms(ms: float | None) -> str:
    """Milliseconds with about three significant digits (``-`` when not timed)."""
    if ms is None:
        return "-"
    return f"{ms:.1f}" if ms >= 100 else f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}"


def to_markdown(root: Row, depth: int = 3) -> str:
    """The table as a Markdown (pipe) table, indented by depth like fvcore's ``flop_count_table``.

    When the rows are timed, two columns follow: ``CPU ms`` (median, hooks on) and its share of the model's.
    """
    total = root.gflops + root.extra_gflops or 1.0
    timed = root.ms is not None
    head = "| module | #parameters | GFLOPs (thop) | GFLOPs (extra) | GFLOPs (total) | GFLOPs share |"
    sep = "|:--|--:|--:|--:|--:|--:|"
    if timed:
        head, sep = head + " CPU ms | time share |", sep + "--:|--:|"
    lines = [head, sep]
    for r in root.walk(depth):
        label = "\u00a0\u00a0" * r.depth + r.label  # non-breaking spaces keep the indent in rendered Markdown
        g = r.gflops + r.extra_gflops
        line = (
            f"| {label} | {fmt_params(r.params)} | {fmt_gflops(r.gflops)} | "
            f"{fmt_gflops(r.extra_gflops) if r.extra_macs else '-'} | {fmt_gflops(g)} | {100 * g / total:.1f}% |"
        )
        if timed:
            share = "-" if r.ms is None else f"{100 * r.ms / (root.ms or 1.0):.1f}%"
            line += f" {fmt_ms(r.ms)} | {share} |"
        lines.append(line)
    return "\n".join(lines)


def to_records(root: Row, depth: int = 3) -> list[dict]:
    """The table rows as plain dicts (module, depth, params, gflops, gflops_extra, gflops_total, cpu_ms, cpu_share).

    ``cpu_ms`` (median ms, hooks on) and ``cpu_share`` (of the model's ms) are None for rows that were not timed.
    """
    return [
        {
            "module": r.label,
            "depth": r.depth,
            "params": int(r.params),
            "gflops": r.gflops,
            "gflops_extra": r.extra_gflops,
            "gflops_total": r.gflops + r.extra_gflops,
            "cpu_ms": None if r.ms is None else round(r.ms, 4),
            "cpu_share": None if r.ms is None or not root.ms else round(r.ms / root.ms, 4),
        }
        for r in root.walk(depth)
    ]
