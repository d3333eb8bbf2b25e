"""The D-FINE family (D-FINE, DEIM, DEIMv2): its backbones, encoder blocks, decoder head and box distributions."""

from . import decoder, encoder, hgnetv2  # noqa: F401  (registers the blocks and DEIMv2's timm backbones)
