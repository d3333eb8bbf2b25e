"""The D-FINE family (D-FINE, DEIM): its encoder blocks, its decoder head and the box distributions they share."""

from . import decoder, encoder  # noqa: F401  (registers FDRDecoder, DFineSCDown, DFineCSP, DFineELAN)
