"""Exceptions raised by yolo-plugins: each one says what was wrong and what to do."""

from __future__ import annotations


class PluginError(Exception):
    """Base class of every error yolo-plugins raises on purpose."""


class RegistrationError(PluginError, TypeError):
    """A block could not be registered (name taken, not an ``nn.Module``, bad rule)."""


def layer_message(index: int, module: str, message: str) -> str:
    """``layer i: Module: message``, without repeating a ``Module:`` prefix the message already has."""
    message = message.removeprefix(f"{module}: ")
    return f"layer {index}: {module}: {message}"


class LayerError(PluginError, ValueError):
    """A YAML layer cannot be built: names the layer index, the module and what was wrong."""

    def __init__(self, index: int, module: str, message: str) -> None:
        self.index, self.module = index, module
        super().__init__(layer_message(index, module, message))


class UnknownModuleError(PluginError, KeyError):
    """A YAML layer names a module that neither Ultralytics nor the plugin knows."""

    def __init__(self, index: int, name: str, suggestions: list[str]) -> None:
        self.index, self.name, self.suggestions = index, name, suggestions
        hint = f" — did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(f"layer {index}: unknown module '{name}'{hint}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class HostVersionError(PluginError, RuntimeError):
    """The installed Ultralytics is not one the parser hook can handle."""
