"""Which Ultralytics releases the plugin hooks: the declared range, the newest release tested, and the refusal.

``SUPPORTED`` is the range ``pyproject.toml`` declares (a test keeps the two equal); CI runs the test suite against
the newest release and a compatibility run against ``OLDEST`` (``.ci/run``). Differences inside the range are handled
by feature checks where they are used (``safe_load.host_form``), never by version lists.

* A release outside ``SUPPORTED`` is refused before anything is patched: ``HostVersionError`` names the installed
  release, the range and the command to run.
* A release inside the range that is newer than ``NEWEST_TESTED`` is hooked when every check of the host's code
  passes, with one ``HostVersionWarning`` per process; a failed check refuses it with the check that failed.
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
from typing import Any

from ..errors import HostVersionError

OLDEST = "8.4.0"  # the oldest release supported (CI's compatibility run installs exactly this one)
NEWEST_TESTED = "8.4.190"  # the newest release the full test suite ran against
UPPER = "8.5"  # first release outside the range (exclusive)
SUPPORTED = ">=8.4,<8.5"  # as declared in pyproject.toml: OLDEST <= version < UPPER
INSTALL = f"pip install 'ultralytics{SUPPORTED}'"
OFF = "or set YOLO_PLUGINS_AUTOLOAD=0 to use this Ultralytics without the plugin"


# Host layers whose YAML argument the zoo passes as None to mean "the default" (to reach a later positional argument):
# releases before 8.4.105 take None literally (RTDETRDecoder(act=None) fails at its first forward); there the
# parameter's own default is passed instead, found from the signature, not from a version number.
NONE_MEANS_DEFAULT = {"RTDETRDecoder": "act"}


class HostVersionWarning(UserWarning):
    """The installed Ultralytics is newer than the newest release the plugin was tested with (the hook applies)."""


def host_version() -> str:
    """The installed Ultralytics version (``ultralytics.__version__``)."""
    import ultralytics

    return str(getattr(ultralytics, "__version__", "unknown"))


def parse(version: str) -> tuple[int, ...] | None:
    """The leading numeric release parts of ``version`` (``'8.4.12.dev0'`` -> ``(8, 4, 12)``), ``None`` if none."""
    m = re.match(r"\d+(?:\.\d+)*", version.strip())
    return tuple(int(p) for p in m.group(0).split(".")) if m else None


def _pad(parts: tuple[int, ...]) -> tuple[int, ...]:
    return parts + (0,) * (3 - len(parts))


def in_range(version: str) -> bool:
    """Whether ``version`` lies in ``SUPPORTED`` (``OLDEST <= version < UPPER``)."""
    parts = parse(version)
    return parts is not None and _pad(parse(OLDEST)) <= _pad(parts) < _pad(parse(UPPER))


def newer_than_tested(version: str) -> bool:
    """Whether ``version`` is newer than ``NEWEST_TESTED``."""
    parts = parse(version)
    return parts is not None and _pad(parts) > _pad(parse(NEWEST_TESTED))


@functools.cache
def _default_for_none(cls: type, param: str) -> tuple[int, Any] | None:
    """(position among the constructor's arguments, default) when ``cls`` does not accept None for ``param``."""
    try:
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    for i, p in enumerate(parameters):
        if p.name == param:
            return None if p.default is None or p.default is inspect.Parameter.empty else (i, p.default)
    return None


def none_to_default(m: Any, args: list) -> list:
    """``args`` for the host layer ``m`` with a None the host does not accept replaced by a copy of its default; a
    subclass that keeps the host layer's constructor (a plugin head such as ``PeakDecoder``) counts as that layer."""
    host = next(
        (
            c
            for c in getattr(m, "__mro__", ())
            if c.__name__ in NONE_MEANS_DEFAULT and c.__module__.startswith("ultralytics.")
        ),
        None,
    )
    if host is None or m.__init__ is not host.__init__:
        return args
    found = _default_for_none(host, NONE_MEANS_DEFAULT[host.__name__])
    if found is None or found[0] >= len(args) or args[found[0]] is not None:
        return args
    args = list(args)
    args[found[0]] = copy.deepcopy(found[1])
    return args


def refuse(why: str) -> HostVersionError:
    """The error activation raises for a host it cannot hook: the installed release, what failed, what to run."""
    version = host_version()
    tested = f"tested: {OLDEST} to {NEWEST_TESTED}"
    if not in_range(version):
        return HostVersionError(
            f"yolo-plugins cannot hook ultralytics {version}: it is outside the supported range "
            f"(supported: ultralytics{SUPPORTED}, {tested}). Run: {INSTALL} ({OFF})."
        )
    return HostVersionError(
        f"yolo-plugins cannot hook ultralytics {version} (supported: ultralytics{SUPPORTED}, {tested}): {why}. "
        f"Run: pip install 'ultralytics=={NEWEST_TESTED}' ({OFF})."
    )


def check_range() -> None:
    """Refuse a release outside ``SUPPORTED`` (raises ``HostVersionError``)."""
    version = host_version()
    if not in_range(version):
        raise refuse("outside the supported range")


_warned = False


def warn_if_newer(stacklevel: int = 3) -> None:
    """One ``HostVersionWarning`` per process when the hooked release is newer than ``NEWEST_TESTED``."""
    global _warned
    version = host_version()
    if _warned or not newer_than_tested(version):
        return
    import warnings

    _warned = True
    warnings.warn(
        f"ultralytics {version} is newer than the newest release yolo-plugins was tested with ({NEWEST_TESTED}); "
        f"the hook's checks of its code passed and the plugin is active. If a model misbehaves, run: "
        f"pip install 'ultralytics=={NEWEST_TESTED}'",
        HostVersionWarning,
        stacklevel=stacklevel,
    )
