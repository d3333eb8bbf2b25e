"""Run at interpreter start-up by ``yolo_plugins.pth``: activate yolo-plugins when Ultralytics is first used.

A top-level module of its own (not part of ``yolo_plugins``) so that start-up imports only this file and the standard
library: ``yolo_plugins`` itself is imported once ``import ultralytics`` has finished, and then
``yolo_plugins.host.first_use.arm()`` sets the trampolines that activate the plugin when a model is first built or
loaded (``import ultralytics`` alone stays as cheap as without the plugin). With ``YOLO_PLUGINS_AUTOLOAD=0`` the
``.pth`` line does not import this module at all. Because every Python process runs the ``.pth``, this also reaches
``yolo`` CLI runs and the worker processes Ultralytics starts for multi-GPU training.
"""

from __future__ import annotations

import os
import sys

TARGET = "ultralytics"
OFF = {"0", "false", "no", "off"}


def enabled() -> bool:
    """Whether autoloading is on (``YOLO_PLUGINS_AUTOLOAD`` unset or not 0/false/no/off)."""
    return os.environ.get("YOLO_PLUGINS_AUTOLOAD", "1").strip().lower() not in OFF


def _activate() -> None:
    import importlib.util

    if importlib.util.find_spec("yolo_plugins") is None:  # e.g. the checkout of an editable install was deleted
        return
    from yolo_plugins.host import first_use

    first_use.arm(when_imported)


class _ThenLoader:
    """Runs the real loader of a module, then ``then(module)`` (duck-typed: ``importlib.abc`` costs about 10 ms of
    imports at every interpreter start)."""

    def __init__(self, loader, then) -> None:
        self.loader, self.then = loader, then

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        self.then(module)

    def __getattr__(self, name):  # get_resource_reader, is_package, ... of the real loader
        return getattr(self.loader, name)


class ImportHook:
    """Finds nothing itself; wraps the loader of one module once, to run ``then(module)`` after it is executed."""

    def __init__(self, name: str, then) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # one shot, and never recursive
        for finder in sys.meta_path:
            spec = getattr(finder, "find_spec", lambda *a: None)(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _ThenLoader(spec.loader, self.then)
                return spec
        return None


def when_imported(name: str, then) -> None:
    """Run ``then(module)`` once module ``name`` is first imported."""
    sys.meta_path.insert(0, ImportHook(name, then))


def install() -> None:
    """Activate now if Ultralytics is already imported, else when it is (nothing when autoloading is off)."""
    if not enabled():
        return
    if TARGET in sys.modules:
        _activate()
    elif not any(isinstance(f, ImportHook) and f.name == TARGET for f in sys.meta_path):
        when_imported(TARGET, lambda module: _activate())
