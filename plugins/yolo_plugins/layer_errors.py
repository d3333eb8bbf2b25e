"""Every failure while building a model YAML names its row: ``layer i: Module: what was wrong``.

Ultralytics builds a model in two steps, and an error in either is re-raised with the YAML layer it belongs to:

* ``parse_model`` (arguments, channels, construction): the row comes from the ``i``/``m`` locals of the parser's
  frame in the traceback, so nothing runs per layer when nothing fails;
* the build-time forward of ``DetectionModel.__init__`` (stride computation): the row comes from the ``m`` local of
  the host's ``_predict_once`` frame, with the shapes of the inputs that layer received.

The exception keeps its type where it is one callers expect (``ValueError``, ``TypeError``, ``KeyError``,
``IndexError``, ``OSError``, ``RuntimeError``); what a YAML typo raises deep inside a block (``SyntaxError`` from the
host's ``literal_eval``, a bare ``AssertionError``, ``ZeroDivisionError``, ``AttributeError``) becomes the nearest of
those. Errors that already name their layer (``LayerError``, ``UnknownModuleError``) pass through; the plugin's other
errors raised while a row is built (a ``WeightsError`` from a block's ``pretrained=``) get the prefix and keep their
type.
"""

from __future__ import annotations

import functools
import linecache
from types import TracebackType
from typing import Any, Callable

from . import yaml_rows
from .errors import PluginError, layer_message

# What a YAML typo may raise, mapped to the type it is re-raised as (first match wins).
PUBLIC: tuple[tuple[type[BaseException], type[Exception]], ...] = (
    (SyntaxError, ValueError),  # the host literal_evals string args
    (AssertionError, ValueError),  # asserts inside blocks, e.g. PSA's c1 == c2
    (ArithmeticError, ValueError),  # a zero width or group count
    (AttributeError, TypeError),  # an argument of the wrong kind
    (KeyError, KeyError),
    (IndexError, IndexError),
    (LookupError, LookupError),
    (ValueError, ValueError),
    (TypeError, TypeError),
    (OSError, OSError),
    (RuntimeError, RuntimeError),
    (Exception, RuntimeError),
)


class _LayerKeyError(KeyError):
    """A ``KeyError`` whose message reads as written (``KeyError`` would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _detail(e: BaseException) -> str:
    """The exception's message; for a bare ``assert`` the failing line and where it is."""
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    if text:
        return text
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return type(e).__name__
    code = tb.tb_frame.f_code
    line = linecache.getline(code.co_filename, tb.tb_lineno).strip()
    return f"{type(e).__name__} in {code.co_name}() ({code.co_filename}:{tb.tb_lineno}): {line}"


def named(e: BaseException, index: int, module: str, detail: str | None = None) -> Exception:
    """A new exception of the nearest public type saying ``layer index: module: detail``, chained to ``e``."""
    message = layer_message(index, module, detail if detail is not None else _detail(e))
    public = next(t for base, t in PUBLIC if isinstance(e, base))
    if public is KeyError:
        public = _LayerKeyError
    elif type(e) is not public and issubclass(type(e), public):  # keep a subclass (FileNotFoundError) if it can be
        try:
            out = type(e)(message)
            out.layer = index
            return out
        except Exception:
            pass
    out = public(message)
    out.layer = index
    return out


def _frames(tb: TracebackType | None):
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def wrap_parse_model(patched: Callable, original: Callable, before: Callable[[dict], dict]) -> Callable:
    """``parse_model``: ``before(d)`` checks and rewrites the rows, the patched parser runs; errors name the row."""
    code = patched.__code__

    @functools.wraps(original)
    def parse_model(d, ch, verbose=True):
        prepared = before(d)
        try:
            return patched(prepared, ch, verbose)
        except Exception as e:
            if isinstance(e, PluginError) and getattr(e, "index", None) is not None:  # LayerError, UnknownModuleError
                raise
            frame = next((f for f in _frames(e.__traceback__) if f.f_code is code), None)
            index = frame.f_locals.get("i") if frame is not None else None
            if not isinstance(index, int) or getattr(e, "layer", None) is not None:
                raise
            detail = None
            arg = frame.f_locals.get("a")
            if isinstance(e, SyntaxError) and isinstance(arg, str):  # the host's literal_eval of a string argument
                detail = f"argument {arg!r} is neither a Python literal nor a known name ({e.msg})"
            module = yaml_rows.rows(prepared)[index][2]  # ``before`` checked every row: [from, n, name, args]
            raise named(e, index, module, detail).with_traceback(e.__traceback__) from e

    return parse_model


def _shape(x: Any) -> str:
    shape = getattr(x, "shape", None)
    if shape is None:
        return type(x).__name__ if not isinstance(x, (list, tuple)) else f"a list of {len(x)}"
    return "x".join(str(s) for s in shape)


def _inputs(m: Any, x: Any) -> list[str]:
    """``'1x64x40x40 from layer 11'`` for each input of layer ``m``."""
    sources = m.f if isinstance(m.f, list) else [m.f]
    values = x if isinstance(m.f, list) and isinstance(x, (list, tuple)) else [x]
    return [f"{_shape(v)} from layer {m.i + f if f < 0 else f}" for f, v in zip(sources, values)]


def forward_error(e: BaseException, predict_once: Any) -> Exception | None:
    """The named error for an exception raised while ``predict_once`` ran layer ``m``, else None."""
    frame = next((f for f in reversed(list(_frames(e.__traceback__))) if f.f_code is predict_once), None)
    m = frame.f_locals.get("m") if frame is not None else None
    if m is None or not isinstance(getattr(m, "i", None), int):
        return None
    module = getattr(m, "type", type(m).__name__).rsplit(".", 1)[-1]
    x = frame.f_locals.get("x")
    inputs = _inputs(m, x)
    sizes = {tuple(v.shape[2:]) for v in x if hasattr(v, "shape")} if isinstance(x, (list, tuple)) else set()
    if module == "Concat" and len(sizes) > 1:
        detail = f"inputs of different sizes ({', '.join(inputs)})"
    else:
        detail = f"{_detail(e)} (input {', '.join(inputs)})"
    return named(e, m.i, module, detail)


def wrap_model_init(original: Callable, predict_once: Any) -> Callable:
    """``DetectionModel.__init__`` whose build-time forward (stride computation) names the layer that failed."""

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        try:
            original(self, *args, **kwargs)
        except PluginError:
            raise
        except Exception as e:
            if getattr(e, "layer", None) is not None:
                raise
            out = forward_error(e, predict_once)
            if out is None:
                raise
            raise out.with_traceback(e.__traceback__) from e

    return __init__
