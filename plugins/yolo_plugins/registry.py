"""The block registry: YAML name -> class, channel rule, fuse support and where the class comes from."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

from .channels import Rule, resolve_rule
from .errors import RegistrationError


@dataclass(frozen=True)
class Entry:
    """What the parser needs to know about one YAML name."""

    name: str
    cls: type
    rule: Rule | None  # channel rule for classes that reach the parser's fall-through; None: the host's chain decides
    source: str  # "yolo-plugins" for blocks the plugin defines, "ultralytics" for host classes it adds to
    fuse: bool  # the engine's model.fuse() calls cls.fuse() on every instance (plugin blocks only)
    check: Callable[[dict], None] | None = None  # build-time validation of a layer the host's chain built the args of

    @property
    def rule_name(self) -> str:
        """Name of the channel rule, or 'check' / 'host' for host classes whose channels the host decides."""
        if self.rule is not None:
            return getattr(self.rule, "__name__", repr(self.rule))
        return "check" if self.check is not None else "host"

    @property
    def path(self) -> str:
        """Import path of the class."""
        return f"{self.cls.__module__}.{self.cls.__qualname__}"


_ENTRIES: dict[str, Entry] = {}
_DEPLOY_FORMS: dict[str, Callable] = {}  # "module.Class" of a host/library module -> convert(instance) -> deploy form
_listeners: list[Callable[[Entry, bool], None]] = []  # listener(entry, present): the active hook follows changes


def register(
    name: str | type | None = None,
    *,
    rule: str | Rule = "conv",
    fuse: bool = False,
    force: bool = False,
) -> Callable[[type], type]:
    """Register an ``nn.Module`` class as a YAML block; use as ``@register()`` or ``@register("Name", rule="same")``.

    Args:
        name: YAML name; defaults to the class name.
        rule: channel rule: "conv", "conv_repeat", "same", "multi_output", "pick", "detr_head" or a callable
            ``rule(layer)``.
        fuse: call ``module.fuse()`` on every instance when the engine fuses the model.
        force: replace an earlier registration of the same name.
    """
    if isinstance(name, type):  # bare @register
        return register(rule=rule, fuse=fuse, force=force)(name)

    def decorator(cls: type) -> type:
        _add(name or getattr(cls, "__name__", ""), cls, rule, fuse, force, source="yolo-plugins")
        return cls

    return decorator


def teach(
    cls: type, rule: str | Rule | None = None, name: str | None = None, check: Callable[[dict], None] | None = None
) -> None:
    """Add to a class the host Ultralytics already defines (used as is, never shadowed).

    Args:
        cls: the host class.
        rule: a channel rule, for classes the host parser passes through verbatim (e.g. ``RepVGGDW``).
        name: YAML name; defaults to the class name.
        check: ``check(frame)`` run before the layer is built, for classes whose channels the host's chain already
            decides (e.g. ``PSA``); ``frame`` is the parser's locals (``i``, ``f``, ``args``, ``c2``, ``ch``, ...).
    """
    _add(name or cls.__name__, cls, rule, False, False, source="ultralytics", check=check)


def check(cls: type) -> Callable[[Callable[[dict], None]], Callable[[dict], None]]:
    """Decorator form of ``teach(cls, check=fn)``: validate a host-built layer before it is constructed."""

    def decorator(fn: Callable[[dict], None]) -> Callable[[dict], None]:
        teach(cls, check=fn)
        return fn

    return decorator


def _add(
    name: str,
    cls: type,
    rule: str | Rule | None,
    fuse: bool,
    force: bool,
    source: str,
    check: Callable[[dict], None] | None = None,
) -> None:
    import torch

    if not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
        raise RegistrationError(f"cannot register {name!r}: {cls!r} is not a torch.nn.Module subclass")
    if not name.isidentifier():
        raise RegistrationError(f"cannot register {name!r}: a YAML module name must be a Python identifier")
    old = _ENTRIES.get(name)
    if old is not None and old.cls is not cls and not force:
        raise RegistrationError(
            f"cannot register {name!r} as {cls.__module__}.{cls.__qualname__}: already registered as {old.path} "
            "(pick another name, or pass force=True to replace it)"
        )
    if fuse and not callable(getattr(cls, "fuse", None)):
        raise RegistrationError(f"cannot register {name!r} with fuse=True: {cls.__qualname__} has no fuse() method")
    try:
        resolved = None if rule is None else resolve_rule(rule)
    except KeyError as e:
        raise RegistrationError(f"cannot register {name!r}: {e.args[0]}") from None
    if old is not None and old.cls is cls and not force:  # teaching a host class twice adds to it
        resolved, check = resolved or old.rule, check or old.check
    entry = Entry(name, cls, resolved, source, fuse, check)
    for listener in _listeners:  # the active parser hook may refuse (e.g. a host name); then nothing is stored
        listener(entry, True)
    _ENTRIES[name] = entry


def unregister(name: str) -> None:
    """Remove a registration, from the active parser too (mainly for tests); unknown names are ignored."""
    entry = _ENTRIES.pop(name, None)
    if entry is not None:
        for listener in _listeners:
            listener(entry, False)


def entries() -> dict[str, Entry]:
    """Every registered name with its entry (a copy)."""
    return dict(_ENTRIES)


def entry_for(cls: type) -> Entry | None:
    """The entry whose class is ``cls`` (identity), if any."""
    for e in _ENTRIES.values():
        if e.cls is cls:
            return e
    return None


def deploy_form(host: str) -> Callable[[Callable], Callable]:
    """Register ``convert(module) -> module``: the exact deploy form of a host or library module.

    ``host`` is the dotted class path (``"ultralytics.nn.modules.transformer.MSDeformAttn"``), so nothing is imported
    to register it. ``model.fuse()`` replaces every instance of exactly that class with ``convert(instance)``, but only
    inside models that contain a yolo-plugins block (stock models stay stock); ``convert`` must return a module that
    computes the same outputs (one that keeps the replaced module as a child sets ``is_deploy_form = True``).
    """

    def decorator(convert: Callable) -> Callable:
        _DEPLOY_FORMS[host] = convert
        return convert

    return decorator


def deploy_form_for(cls: type) -> Callable | None:
    """The converter registered for exactly this class (not its subclasses), if any."""
    return _DEPLOY_FORMS.get(f"{cls.__module__}.{cls.__qualname__}")


def closest(name: str, candidates: list[str], n: int = 3) -> list[str]:
    """Registered or host names closest to ``name``: the one that differs only in case, else fuzzy matches."""
    lower = {c.lower(): c for c in candidates}
    if name.lower() in lower:  # only the case differs: that is the answer
        return [lower[name.lower()]]
    return difflib.get_close_matches(name, candidates, n=n, cutoff=0.6)
