"""Built-in blocks. Importing this package registers them; each file holds one block family."""

from . import pick  # noqa: F401
from .efficientvit import EfficientViT  # noqa: F401
from . import yolov10  # noqa: F401
from .timm_backbone import TimmBackbone  # noqa: F401
