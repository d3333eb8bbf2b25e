"""Built-in blocks. Importing this package registers them and the deploy forms ``fuse()`` swaps in; each file holds
one block family; ``deploy/`` holds the deploy forms."""

from . import (  # noqa: F401
    deploy,
    dfine,
    efficientvit,
    pick,
    timm_backbone,
    yolov10,
)
