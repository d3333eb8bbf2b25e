"""Deploy forms: the export-friendly modules ``fuse()`` swaps in for blocks (ours, D-FINE's and the host's)."""

from . import affine_conv, cascaded_attention, deform_attention, shift_max_pool  # noqa: F401  (registers them)
