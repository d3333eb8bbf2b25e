"""Every failure while building or running a YAML model names its row; no exception changes its type.

Ultralytics builds a model in two steps, then runs it; the plugin names the YAML row wherever it fails:

* ``parse_model`` (arguments, channels, construction): the row comes from the ``i``/``m`` locals of the parser's
  frame in the traceback, so nothing runs per layer when nothing fails. The error is re-raised as a *named error*: an
  instance of the original exception's class whose message is ``layer i: Module: what was wrong``, with ``.layer``
  set to the row and the original chained as ``__cause__``. It is the class itself (``type(err) is type(original)``)
  where ``type(original)(message)`` builds one that reads as the message; otherwise (a ``KeyError``, which would quote
  the message, or a class whose constructor takes other arguments) it is a subclass of it, with the same name, that
  the plugin defines once per class. Either way ``except TheOriginalClass`` still catches it, and the original's
  attributes are copied over.
* every forward of a model (the build-time stride forward of ``DetectionModel.__init__``, ``BaseModel._predict_once``,
  ``RTDETRDetectionModel.predict``), stock or plugin: the exception is not replaced at all. The very object the layer
  raised propagates, with the row, the module and the shapes of the inputs it received added as a note
  (``BaseException.add_note``, Python 3.11+). On Python 3.9/3.10 the note becomes a new line of the message where the
  exception's text is its single string argument (the whole message of a bare ``assert``), and the exception is left
  untouched otherwise (a ``KeyError`` would quote it, a user's ``__str__`` decides its own text).

Errors that already name their layer (``LayerError``, ``UnknownModuleError``) pass through; the plugin's other
errors raised while a row is built (a ``WeightsError`` from a block's ``pretrained=``) get the prefix like any other.
"""

from __future__ import annotations

import ast
import functools
import linecache
from types import TracebackType
from typing import Any, Callable

from ..errors import PluginError, layer_message
from . import yaml_rows

NOTES = hasattr(BaseException, "add_note")  # Python 3.11+ (PEP 678); before, the row becomes a line of the message
_SUBCLASSES: dict[type, type] = {}  # original class -> the subclass that carries a named message for it


def _subclass(cls: type[BaseException]) -> type[BaseException]:
    """A subclass of ``cls``, with its name, built from one message and reading as it (one per class)."""
    sub = _SUBCLASSES.get(cls)
    if sub is not None:
        return sub

    def __init__(self, message: str) -> None:  # the original's constructor may take other arguments
        BaseException.__init__(self, message)

    def __str__(self) -> str:  # KeyError and custom classes would not read as it
        return str(self.args[0]) if self.args else ""

    def __reduce__(self):  # by the original class, which pickle can import
        return _rebuild, (cls, str(self), dict(vars(self)))

    namespace = {"__init__": __init__, "__str__": __str__, "__reduce__": __reduce__, "__module__": cls.__module__}
    namespace.update(__qualname__=cls.__qualname__, __doc__=f"A named {cls.__name__} (yolo-plugins, layer_errors).")
    return _SUBCLASSES.setdefault(cls, type(cls.__name__, (cls,), namespace))


def _rebuild(cls: type[BaseException], message: str, state: dict) -> BaseException:
    out = _subclass(cls)(message)
    vars(out).update(state)
    return out


def _same_class(cls: type[BaseException], message: str) -> BaseException | None:
    """``cls(message)`` if that builds exactly a ``cls`` that reads as ``message``."""
    try:
        out = cls(message)
        return out if type(out) is cls and str(out) == message else None
    except Exception:
        return None


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


def named(e: BaseException, index: int, module: str, detail: str | None = None) -> BaseException:
    """``e`` as a named error: an instance of ``type(e)`` saying ``layer index: module: detail``, ``.layer = index``.

    It is ``type(e)`` itself where ``type(e)(message)`` builds one that reads as the message, else the class's named
    subclass; ``e``'s attributes are copied (its notes stay on ``e``, the cause). A class that admits neither (a
    custom ``__new__``) gets the message as a note instead, and ``e`` itself is returned.
    """
    message = layer_message(index, module, detail if detail is not None else _detail(e))
    out = _same_class(type(e), message)
    if out is None:
        try:
            out = _subclass(type(e))(message)
        except Exception:
            add_row(e, message)
            return e
    vars(out).update((k, v) for k, v in vars(e).items() if k != "__notes__")
    try:
        out.layer = index  # type: ignore[attr-defined]
    except Exception:  # a read-only ``layer`` of the user's class
        pass
    return out


def add_row(e: BaseException, text: str) -> None:
    """Add ``text`` (a row's name) to ``e`` in place: a note on Python 3.11+; before that a new line of the message
    where ``e`` reads as its single string argument (the message, where it has none); else nothing. Never twice."""
    notes = getattr(e, "__notes__", None)
    if (isinstance(notes, list) and text in notes) or text in _text(e):
        return
    if NOTES:
        try:
            e.add_note(text)  # type: ignore[attr-defined]
        except Exception:  # ``__notes__`` replaced by something that is not a list
            pass
        return
    args = e.args
    if args == () and _text(e) == "":  # a bare ``assert``: the row becomes the message
        e.args = (text,)
    elif len(args) == 1 and isinstance(args[0], str) and _text(e) == args[0]:
        e.args = (f"{args[0]}\n{text}",)
    else:
        return
    if _text(e) != e.args[0]:  # the class does not read as its argument after all
        e.args = args


def _text(e: BaseException) -> str:
    try:
        return str(e)
    except Exception:  # a user's ``__str__`` that fails
        return ""


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
            out = named(e, index, module, detail)
            if out is e:
                raise
            raise out.with_traceback(e.__traceback__) from e

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


def forward_note(e: BaseException, *codes: Any) -> str | None:
    """``layer i: Module: ...`` for an exception raised while a model's forward loop (one of ``codes``) ran a layer:
    the row, the module and the shapes of the inputs it received; None when no layer of that loop was running."""
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
        detail = f"raised by this layer (input {', '.join(inputs)})"
    return layer_message(m.i, module, detail)


def _naming(original: Callable, code: Any) -> Callable:
    """``original`` whose failures inside the forward loop ``code`` carry a note naming the YAML row that failed, with
    the shapes it received; the exception itself propagates. Nothing runs per layer, nothing changes when nothing
    fails."""

    @functools.wraps(original)
    def wrapper(self, *args, **kwargs):
        try:
            return original(self, *args, **kwargs)
        except Exception as e:
            if not isinstance(e, PluginError):
                note = forward_note(e, code)
                if note is not None:
                    add_row(e, note)
            raise

    return wrapper


def wrap_forward(original: Callable) -> Callable:
    """A model's forward loop (``BaseModel._predict_once``, ``RTDETRDetectionModel.predict``) whose failures name the
    YAML row that failed."""
    return _naming(original, original.__code__)


def wrap_model_init(original: Callable, predict_once: Any) -> Callable:
    """``DetectionModel.__init__`` whose build-time forward (stride computation) names the layer that failed."""
    return _naming(original, predict_once)
