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
    rule: Rule
    source: str  # "yolo-plugins" for blocks the plugin defines, "ultralytics" for host classes it teaches rules to
    fuse: bool  # the engine's model.fuse() calls cls.fuse() on every instance (plugin blocks only)

    def describe(self) -> str:
        """One line for listings."""
        rule = getattr(self.rule, "__name__", repr(self.rule))
        return f"{self.name:<16} {self.source:<13} rule={rule:<13} fuse={'yes' if self.fuse else 'no ':<3} {self.path}"

    @property
    def path(self) -> str:
        """Import path of the class."""
        return f"{self.cls.__module__}.{self.cls.__qualname__}"


_ENTRIES: dict[str, Entry] = {}
_listeners: list[Callable[[Entry], None]] = []


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
        rule: channel rule: "conv", "conv_repeat", "same", "multi_output", "pick" or a callable ``rule(layer)``.
        fuse: call ``module.fuse()`` on every instance when the engine fuses the model.
        force: replace an earlier registration of the same name.
    """
    if isinstance(name, type):  # bare @register
        return register(rule=rule, fuse=fuse, force=force)(name)

    def decorator(cls: type) -> type:
        _add(name or getattr(cls, "__name__", ""), cls, rule, fuse, force, source="yolo-plugins")
        return cls

    return decorator


def teach(cls: type, rule: str | Rule, name: str | None = None) -> None:
    """Give a class the host Ultralytics already defines a channel rule it lacks (the class itself is used as is)."""
    _add(name or cls.__name__, cls, rule, False, False, source="ultralytics")


def _add(name: str, cls: type, rule: str | Rule, fuse: bool, force: bool, source: str) -> None:
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
        resolved = resolve_rule(rule)
    except KeyError as e:
        raise RegistrationError(f"cannot register {name!r}: {e.args[0]}") from None
    entry = Entry(name, cls, resolved, source, fuse)
    _ENTRIES[name] = entry
    for listener in _listeners:
        listener(entry)


def unregister(name: str) -> None:
    """Remove a registration (mainly for tests); unknown names are ignored."""
    _ENTRIES.pop(name, None)


def entries() -> dict[str, Entry]:
    """Every registered name with its entry (a copy)."""
    return dict(_ENTRIES)


def entry_for(cls: type) -> Entry | None:
    """The entry whose class is ``cls`` (identity), if any."""
    for e in _ENTRIES.values():
        if e.cls is cls:
            return e
    return None


def closest(name: str, candidates: list[str], n: int = 3) -> list[str]:
    """Registered or host names closest to ``name`` (case-insensitive first)."""
    lower = {c.lower(): c for c in candidates}
    exact = [lower[name.lower()]] if name.lower() in lower else []
    fuzzy = difflib.get_close_matches(name, candidates, n=n, cutoff=0.6)
    return list(dict.fromkeys(exact + fuzzy))[:n]
