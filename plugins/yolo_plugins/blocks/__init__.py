"""Built-in blocks. Importing this package registers them and the deploy forms ``fuse()`` swaps in; each file holds
one block family (or one deploy form)."""

from . import cascaded_attention, deform_attention, dfine, efficientvit, pick, timm_backbone, yolov10  # noqa: F401
