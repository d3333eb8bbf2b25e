"""Built-in blocks. Importing this package registers them and the deploy forms ``fuse()`` swaps in; each file holds
one block family (or one deploy form)."""

from . import (  # noqa: F401
    affine_conv,
    cascaded_attention,
    deform_attention,
    dfine,
    efficientvit,
    peak_queries,
    pick,
    shift_max_pool,
    timm_backbone,
    yolov10,
)
