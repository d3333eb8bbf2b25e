"""Built-in blocks. Importing this package registers them; each file holds one block family."""

from . import efficientvit, pick, timm_backbone, yolov10  # noqa: F401  (importing registers the blocks)
