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


class LayerIndexError(LayerError, IndexError):
    """A row reads a layer that does not exist before it (an ``IndexError``, as the host's own failure was)."""


REGISTER_HINT = (
    "neither Ultralytics nor yolo-plugins defines it; to bring your own block, decorate its class with "
    "@yolo_plugins.register() in a module named in YOLO_PLUGINS_IMPORT"
)


class UnknownModuleError(PluginError, KeyError):
    """YAML layers name modules that neither Ultralytics nor the plugin knows (all of them, in layer order)."""

    def __init__(self, unknown: list[tuple[int, str, list[str]]], note: str = "") -> None:
        self.unknown = unknown
        self.index, self.name, self.suggestions = unknown[0]

        def one(index: int, name: str, suggestions: list[str]) -> str:
            hint = f" — did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
            return f"layer {index}: unknown module '{name}'{hint}"

        lines = [one(*u) for u in unknown]
        hint = note or not all(s for _, _, s in unknown)  # a fork's own module may look like a known one
        if len(lines) == 1:
            text = f"{lines[0]} ({REGISTER_HINT})" if hint else lines[0]
        else:
            text = f"{len(lines)} unknown modules: " + "; ".join(lines) + (f" ({REGISTER_HINT})" if hint else "")
        super().__init__(f"{text}; {note}" if note else text)

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class HostVersionError(PluginError, RuntimeError):
    """The installed Ultralytics is not one the parser hook can handle."""
