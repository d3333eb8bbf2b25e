"""Single-field mutants of the zoo YAMLs and the verdict on building one (used by test_yaml_fuzz.py).

A mutant is a zoo YAML (scale n) with ONE field of ONE row of ``backbone + head`` changed: the module name, one
argument, ``from``, the repeats, one argument dropped or one added. The contract: the mutant builds and runs one
forward pass (eval mode, 1x3x64x64), or building or that forward raises one of ``ALLOWED`` (subclasses too) whose
message or notes name the row (``layer k``), or a later row ``layer j`` (j > k) where the mutation changed what a later
row consumes. ``ALLOWED`` is what a YAML mistake makes the host or a block raise: ValueError, TypeError, KeyError,
IndexError, FileNotFoundError, RuntimeError, and the types the plugin used to re-type and now keeps: SyntaxError (the
host's ``literal_eval`` of a text argument), AssertionError (a block's bare ``assert``), ZeroDivisionError (a zero
width or group count), AttributeError (an argument of the wrong kind). Anything else (NameError, UnboundLocalError, a
plain Exception) is a bug, not a YAML mistake. A build error the plugin named must be an instance of the class of the
exception it names (its ``__cause__``): naming never changes the type.

Only torch, Ultralytics and hypothesis are imported here, so a plain script can run the same mutants against another
checkout of the plugin.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import re
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

ZOO = Path(__file__).resolve().parents[1] / "cfg" / "models"
NC = 6
ALLOWED = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    FileNotFoundError,
    RuntimeError,
    SyntaxError,
    AssertionError,
    ZeroDivisionError,
    AttributeError,
)
BUILD_TIMEOUT_S = 60

# Values drawn for a replaced argument. Large ints only at position 0 (channel counts, nc, indices), never for
# nn.* layers (nn.Upsample's first argument is an output size): a 2048 kernel or 2048 decoder layers is not a typo
# worth building.
LARGE_INTS = [64, 512, 2048]
SMALL_INTS = [0, -1, -8, 1, 2, 3, 7, 16]
FLOATS = [0.5, 1.5, -2.5, 1e-3]
STRINGS = ["abc", "/abs/path.pth", "./w.pth", "None", "nc", ""]
OTHERS = [None, True, False, [1, 2], [], {"s": 64}, {"n": 3}]
REAL_NAMES = [
    "Conv",
    "Concat",
    "AIFI",
    "RepC3",
    "Pick",
    "EfficientViT",
    "TimmBackbone",
    "RTDETRDecoder",
    "v10Detect",
    "Detect",
    "SCDown",
    "PSA",
    "C2f",
    "C2fCIB",
    "CIB",
    "RepVGGDW",
    "SPPF",
    "Index",
    "nn.Upsample",
    "nn.Identity",
]
NON_STRING_NAMES = [None, 3, 1.5, True, ["Conv"], {"n": "Conv"}]
REPEATS = [0, -1, 2, 3.5, "x", "3", None]
BAD_REPEATS = ("x", "3", None)  # fail in the host's depth arithmetic, at the row itself


class BuildTimeout(BaseException):
    """A build ran past BUILD_TIMEOUT_S (a BaseException so that no ``except Exception`` swallows it)."""


@dataclass
class Mutant:
    yaml: str
    k: int  # row index in backbone + head, as Ultralytics numbers layers
    kind: str  # module | arg | from | repeats | drop_arg | add_arg
    before: list
    after: list
    exact: bool  # the failure, if any, must name row k itself (not a later one)
    cfg: dict = field(repr=False)

    def __repr__(self) -> str:
        return f"{self.yaml} layer {self.k} [{self.kind}]: {self.before!r} -> {self.after!r}"

    def _repr_pretty_(self, printer, cycle) -> None:  # what hypothesis prints as the falsifying example
        printer.text(repr(self))


@dataclass
class Verdict:
    category: str  # built | named | unnamed | wrong-layer | bad-type (not ALLOWED, or named as another type) | timeout
    error: str = ""  # "Type: message" of the exception, if any

    @property
    def ok(self) -> bool:
        return self.category in ("built", "named")


@functools.cache
def _base(name: str) -> dict:
    from ultralytics.nn import tasks

    d = tasks.yaml_model_load(ZOO / name)
    d["scale"], d["nc"] = "n", NC
    return d


def base_cfg(name: str) -> dict:
    """The zoo YAML as the host parses it, at scale n with NC classes (a fresh deep copy)."""
    return copy.deepcopy(_base(name))


def is_rtdetr(cfg: dict) -> bool:
    return cfg["head"][-1][2] == "RTDETRDecoder"


def known(name: Any) -> bool:
    """Whether the hooked host resolves this module name."""
    if not isinstance(name, str):
        return False
    import torch
    from ultralytics.nn import tasks

    if name.startswith("nn."):
        return hasattr(torch.nn, name[3:])
    return name.startswith("torchvision.ops.") or name in vars(tasks)


def _differs(value: Any, old: Any) -> bool:
    """Whether ``value`` really changes a field holding ``old`` (``True == 1``, so types count)."""
    return type(value) is not type(old) or value != old


def _typos(name: str) -> list[str]:
    out = [name[1:], name[:-1], name + "x", name.swapcase(), name[0] + name[0] + name[1:]]
    if len(name) > 2:
        out.append(name[0] + name[2] + name[1] + name[3:])
    return [t for t in dict.fromkeys(out) if t and t != name]


def _arg_values(position: int, module: str) -> list:
    ints = LARGE_INTS + SMALL_INTS if position == 0 and not module.startswith("nn.") else SMALL_INTS
    return ints + FLOATS + STRINGS + OTHERS


def _from_values(f: Any, k: int, nrows: int) -> list[tuple[Any, bool]]:
    """Replacement ``from`` values, each with whether it is certainly invalid at row k (then row k must be named)."""
    bad: list[Any] = [nrows + 3, k + 1, -(k + 2), "abc", "-1", 1.5, None]
    if isinstance(f, int):
        bad += [[f, nrows + 3], [f, "x"], [f, None]]
        valid: list[Any] = [0, []]
    else:
        bad += [[*f[:j], v, *f[j + 1 :]] for j in range(len(f)) for v in (nrows + 3, k, "x", 1.5)]
        valid = [-1, [], f[:1]]
    return [(v, True) for v in bad] + [(v, False) for v in valid]


# Mutation groups: the kinds each draws, how many mutants the fuzz test builds and its fixed hypothesis seed (the
# measurement script uses the same table, so it sees exactly the mutants the tests see).
GROUPS: dict[str, tuple[tuple[str, ...], int, int]] = {
    "module": (("module",), 80, 101),
    "arg": (("arg",), 100, 202),
    "from": (("from",), 60, 303),
    "repeats": (("repeats",), 40, 404),
    "arity": (("drop_arg", "add_arg"), 70, 505),
    "size": (("size",), 40, 606),
    "cat_up": (("cat_up",), 40, 707),
    "from_list": (("from_list",), 30, 808),
}
SIZES = [0, -1, -16, "abc", "64x", 2.5, None]  # a channel count (args[0]) that is zero, negative or not a number
CONCAT_DIMS = [0, 2, 3, -1, 4, "x", 1.5, None]
UPSAMPLE_ARGS = [
    [None, None, "nearest"],
    [None, 0, "nearest"],
    [None, -2, "nearest"],
    [None, "x", "nearest"],
    [None, 2, "bogus"],
    [None, 2],
    [],
]
ROW_KINDS = {  # kinds that only apply to some rows: which rows
    "size": lambda row: bool(row[3]) and isinstance(row[3][0], int) and not isinstance(row[3][0], bool),
    "cat_up": lambda row: row[2] in ("Concat", "nn.Upsample"),
    "from_list": lambda row: isinstance(row[0], list) and len(row[0]) > 1,
}


def zoo_names() -> list[str]:
    return sorted(p.name for p in ZOO.glob("*.yaml"))


def _rows(name: str) -> list:
    base = _base(name)
    return base["backbone"] + base["head"]


@st.composite
def mutants(draw, group: str) -> Mutant:
    """One single-field mutant of a zoo YAML, of a kind from ``GROUPS[group]``."""
    kinds = GROUPS[group][0]
    needs_args = all(kind in ("arg", "drop_arg") for kind in kinds)
    fits = ROW_KINDS.get(kinds[0], lambda row: bool(row[3]) or not needs_args)
    name = draw(st.sampled_from([n for n in zoo_names() if any(fits(r) for r in _rows(n))]), label="yaml")
    base = _base(name)
    rows = base["backbone"] + base["head"]
    k = draw(st.sampled_from([i for i, row in enumerate(rows) if fits(row)]), label="row")
    f, n, m, args = rows[k]
    kind = draw(st.sampled_from([kind for kind in kinds if args or kind not in ("arg", "drop_arg")]), label="kind")
    new = [f, n, m, list(args)]
    exact = False
    if kind == "module":
        name_ = draw(st.sampled_from(_typos(m) + [x for x in REAL_NAMES if x != m] + NON_STRING_NAMES), label="name")
        new[2], exact = name_, not known(name_)
    elif kind == "arg":
        j = draw(st.integers(0, len(args) - 1), label="position")
        new[3][j] = draw(st.sampled_from([v for v in _arg_values(j, m) if _differs(v, args[j])]), label="value")
    elif kind == "drop_arg":
        del new[3][draw(st.integers(0, len(args) - 1), label="position")]
    elif kind == "add_arg":
        new[3].append(draw(st.sampled_from(_arg_values(len(args), m)), label="value"))
    elif kind == "size":
        new[3][0] = draw(st.sampled_from([v for v in SIZES if _differs(v, args[0])]), label="size")
    elif kind == "cat_up" and m == "Concat":
        new[3] = [draw(st.sampled_from([v for v in CONCAT_DIMS if [v] != list(args)]), label="dim")]
    elif kind == "cat_up":
        new[3] = draw(st.sampled_from([v for v in UPSAMPLE_ARGS if v != list(args)]), label="upsample args")
    elif kind == "from_list":
        options = [f[::-1], f[:-1], [*f, -1], [*f, f[0]], [f[0]]]
        new[0] = draw(st.sampled_from([v for v in options if v != f]), label="from")
    elif kind == "from":
        values = [(v, bad) for v, bad in _from_values(f, k, len(rows)) if _differs(v, f)]
        new[0], exact = draw(st.sampled_from(values), label="from")
    else:
        new[1] = draw(st.sampled_from([r for r in REPEATS if _differs(r, n)]), label="repeats")
        exact = new[1] in BAD_REPEATS
    cfg = copy.deepcopy(base)
    part, at = ("backbone", k) if k < len(base["backbone"]) else ("head", k - len(base["backbone"]))
    cfg[part][at] = copy.deepcopy(new)
    return Mutant(yaml=name, k=k, kind=kind, before=list(rows[k]), after=new, exact=exact, cfg=cfg)


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise BuildTimeout after ``seconds`` (main thread with SIGALRM only; elsewhere no guard)."""
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise BuildTimeout(f"build took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def build(cfg: dict, rtdetr: bool):
    """Build ``cfg`` with the model class its YAML is for."""
    from ultralytics.nn import tasks

    cls = tasks.RTDETRDetectionModel if rtdetr else tasks.DetectionModel
    return cls(cfg, nc=NC, verbose=False)


_LAYER = re.compile(r"\blayer (\d+)\b")


def forward(model) -> None:
    """One inference forward pass at 64 px, as a first ``predict`` would run it."""
    import torch

    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 64, 64))


def judge(mutant: Mutant, timeout: float = BUILD_TIMEOUT_S, run_forward: bool = True) -> Verdict:
    """Build the mutant (and run one forward pass) and classify the outcome against the contract."""
    rtdetr = is_rtdetr(_base(mutant.yaml))
    try:
        with time_limit(timeout):
            model = build(copy.deepcopy(mutant.cfg), rtdetr)
            if run_forward:
                forward(model)
    except BuildTimeout as e:
        return Verdict("timeout", str(e))
    except Exception as e:  # every exception type is classified below
        message = "\n".join([str(e), *getattr(e, "__notes__", [])])  # a forward error names its row in a note
        error = f"{type(e).__name__}: {message}"
        if not isinstance(e, ALLOWED):
            return Verdict("bad-type", error)
        cause = e.__cause__
        if getattr(e, "layer", None) is not None and cause is not None and not isinstance(e, type(cause)):
            return Verdict("bad-type", f"{error} (re-typed from {type(cause).__name__}: {cause})")
        named = {int(j) for j in _LAYER.findall(message)}
        if not named:
            return Verdict("unnamed", error)
        nrows = len(mutant.cfg["backbone"]) + len(mutant.cfg["head"])
        later = set() if mutant.exact else set(range(mutant.k + 1, nrows))
        return Verdict("named" if named & ({mutant.k} | later) else "wrong-layer", error)
    return Verdict("built")
