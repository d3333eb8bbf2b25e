"""Build hook: an editable install ships only the start-up .pth; the checkout's plugins/ folder provides the rest.

hatchling copies force-included files into editable installs too, which would leave a stale copy of the start-up
module (and of cfg/) in site-packages; wheels keep the full force-include list of pyproject.toml.
"""

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class EditableStartupOnly(BuildHookInterface):
    """For ``pip install -e .``: force-include just ``yolo_plugins.pth``."""

    def initialize(self, version: str, build_data: dict) -> None:
        if version == "editable":
            build_data["force_include_editable"] = {"plugins/yolo_plugins.pth": "yolo_plugins.pth"}
