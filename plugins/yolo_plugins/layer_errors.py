"""Every failure while building a model YAML names its row: ``layer i: Module: what was wrong``.

Ultralytics builds a model in two steps, and an error in either is re-raised with the YAML layer it belongs to:

* ``parse_model`` (arguments, channels, construction): the row comes from the ``i``/``m`` locals of the parser's
  frame in the traceback, so nothing runs per layer when nothing fails;
* the build-time forward of ``DetectionModel.__init__`` (stride computation), and every later forward of a YAML-built
  model (``BaseModel._predict_once``, ``RTDETRDetectionModel.predict``, which runs no forward while it is built): the
  row is the layer the forward loop was calling, with the shapes of the inputs it received.

The exception keeps its type where it is one callers expect (``ValueError``, ``TypeError``, ``KeyError``,
``IndexError``, ``OSError``, ``RuntimeError``); what a YAML typo raises deep inside a block (``SyntaxError`` from the
host's ``literal_eval``, a bare ``AssertionError``, ``ZeroDivisionError``, ``AttributeError``) becomes the nearest of
those. Errors that already name their layer (``LayerError``, ``UnknownModuleError``) pass through; the plugin's other
errors raised while a row is built (a ``WeightsError`` from a block's ``pretrained=``) get the prefix and keep their
type.
"""

from __future__ import annotations

import ast
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
            row = yaml_rows.rows(prepared)[index]  # ``before`` checked every row: [from, n, name, args]
            module = row[2]
            if isinstance(e, SyntaxError) and isinstance(arg, str):  # the host's literal_eval of a string argument
                detail = f"argument {arg!r} is neither a Python literal nor a known name ({e.msg})"
            elif isinstance(e, TypeError) and "str" in str(e):
                detail = _text_where_a_number_belongs(row[3], frame.f_locals, e)
            raise named(e, index, module, detail).with_traceback(e.__traceback__) from e

    return parse_model


def _text_where_a_number_belongs(args: list, names: dict, e: BaseException) -> str | None:
    """``args[k] is the text 'abc' ...`` for a row whose text argument reached arithmetic (``'<' not supported``)."""
    texts = []
    for k, a in enumerate(args):
        if not isinstance(a, str) or a in names:
            continue
        try:
            ast.literal_eval(a)
        except (ValueError, SyntaxError):
            texts.append(f"args[{k}] is the text {a!r}")
    if not texts:
        return None
    return f"{', '.join(texts)} where a number belongs (e.g. 64 for channels, 3 for a kernel) ({e})"


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


def _failing_layer(e: BaseException, codes: tuple[Any, ...]) -> tuple[Any, Any] | None:
    """``(layer, its input)`` of the model layer that was running when ``e`` was raised inside one of ``codes``.

    The layer is the first module called from the forward loop's frame whose ``self`` is a layer of that model (its
    ``m.i`` is the row); its input is that call's first argument. An error in the loop itself (reading the inputs of
    ``m``) falls back to the loop's ``m`` and ``x`` locals.
    """
    frames = list(_frames(e.__traceback__))
    at = next((k for k in range(len(frames) - 1, -1, -1) if frames[k].f_code in codes), None)
    if at is None:
        return None
    loop = frames[at].f_locals
    layers = getattr(loop.get("self"), "model", None)
    members = {id(m) for m in layers} if layers is not None else set()
    for frame in frames[at + 1 :]:
        callee = frame.f_locals.get("self")
        if id(callee) in members and isinstance(getattr(callee, "i", None), int):
            args = frame.f_locals.get("args")
            x = args[0] if isinstance(args, tuple) and args else frame.f_locals.get("x", loop.get("x"))
            return callee, x
    m = loop.get("m")
    return (m, loop.get("x")) if isinstance(getattr(m, "i", None), int) else None


def forward_error(e: BaseException, *codes: Any) -> Exception | None:
    """The named error for an exception raised while a model's forward loop (one of ``codes``) ran a layer, else None.

    The message names the row and module and gives the shapes of the inputs the layer received.
    """
    found = _failing_layer(e, codes)
    if found is None:
        return None
    m, x = found
    module = getattr(m, "type", type(m).__name__).rsplit(".", 1)[-1]
    inputs = _inputs(m, x)
    sizes = {tuple(v.shape[2:]) for v in x if hasattr(v, "shape")} if isinstance(x, (list, tuple)) else set()
    if module == "Concat" and len(sizes) > 1:
        detail = f"inputs of different sizes ({', '.join(inputs)})"
    else:
        detail = f"{_detail(e)} (input {', '.join(inputs)})"
    return named(e, m.i, module, detail)


def _naming(original: Callable, code: Any) -> Callable:
    """``original`` whose failures inside the forward loop ``code`` name the YAML row that failed, with the shapes
    it received; nothing runs per layer, nothing changes when nothing fails."""

    @functools.wraps(original)
    def wrapper(self, *args, **kwargs):
        try:
            return original(self, *args, **kwargs)
        except Exception as e:
            if getattr(e, "layer", None) is not None or isinstance(e, PluginError):
                raise
            out = forward_error(e, code)
            if out is None:
                raise
            raise out.with_traceback(e.__traceback__) from e

    return wrapper


def wrap_forward(original: Callable) -> Callable:
    """A model's forward loop (``BaseModel._predict_once``, ``RTDETRDetectionModel.predict``) whose failures name the
    YAML row that failed."""
    return _naming(original, original.__code__)


def wrap_model_init(original: Callable, predict_once: Any) -> Callable:
    """``DetectionModel.__init__`` whose build-time forward (stride computation) names the layer that failed."""
    return _naming(original, predict_once)
