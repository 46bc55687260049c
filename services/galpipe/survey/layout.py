"""The Legacy Survey cutout layout: what one galaxy's cutout is, defined once.

The fetch pipeline asks the cutout service for this layout (``settings`` defaults), the
synthetic sky renders it, the radon pipeline decodes and measures it, and validation renders its
truth galaxies in it. :mod:`galpipe.science` imports nothing of galpipe, so it takes the stamp
side as a parameter; its tests check that the default equals :data:`CUTOUT_SIZE_PX`.
"""

from __future__ import annotations

__all__ = ["BANDS", "CUTOUT_SIZE_PX", "LAYER", "PIXSCALE_ARCSEC"]

#: Data release layer of the cutout service: DR10 (south: DECam g, r, i, z; north of
#: Dec 32.375 in the north galactic cap: DR9 BASS/MzLS g, r, z, where the i plane comes back
#: all zero). Always sent: the service's own default is an older release.
LAYER = "ls-dr10"

#: Band letters of a cutout, in the order of the cube's planes (dimensionless).
BANDS = "griz"

#: Pixel scale, arcseconds per pixel: the native scale of the DR10 coadds, so the cutout is
#: not resampled.
PIXSCALE_ARCSEC = 0.262

#: Width and height of a cutout, pixels (the paper's 40, i.e. 10.48 arcsec at
#: :data:`PIXSCALE_ARCSEC`).
CUTOUT_SIZE_PX = 40
