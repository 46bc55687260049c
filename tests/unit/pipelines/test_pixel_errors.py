"""Photo-z pixel errors of decoded cutouts: a cutout's own error planes, else the sky noise."""

from __future__ import annotations

import numpy as np

from galpipe.pipelines.stored_cutouts import decode_cutout, pixel_errors
from galpipe.science.photoz_pixels import sky_noise_errors
from galpipe.survey.sdss_cutout import SdssStamp, sdss_cutout_bytes, stamp_header
from galpipe.synthetic.fitsfile import cube_fits_bytes

RA, DEC, SIZE = 150.0, 2.0, 40


def test_error_planes_are_used_where_a_cutout_has_them() -> None:
    rng = np.random.default_rng(5)
    cube = rng.normal(0.0, 0.1, (4, SIZE, SIZE)).astype(np.float32)
    planes = rng.uniform(0.05, 0.3, (2, SIZE, SIZE)).astype(np.float32)
    # An SDSS cutout of two bands: the bands it lacks get errors of 0, no data.
    sdss = SdssStamp(cube[1:3], planes, stamp_header(RA, DEC, SIZE, 0.262), "ri")
    with_planes = decode_cutout(
        sdss_cutout_bytes(sdss, run=1, rerun="301", camcol=1, field=1), SIZE, "ri"
    )
    without = decode_cutout(cube_fits_bytes(cube, RA, DEC, 0.262, "griz"), SIZE, "griz")
    assert without.errors is None
    cubes = np.stack([with_planes.data, without.data])
    sigmas, sources = pixel_errors(cubes, [with_planes, without])
    assert sources == ["sdss_sky_hdu", "sky_noise"]
    np.testing.assert_array_equal(sigmas[0, 1:3], planes)
    assert not sigmas[0, [0, 3]].any()
    np.testing.assert_array_equal(sigmas[1], sky_noise_errors(cubes)[1])


def test_the_services_inverse_variance_is_read_only_where_errors_are_asked_for() -> None:
    rng = np.random.default_rng(6)
    cube = rng.normal(0.0, 0.1, (4, SIZE, SIZE)).astype(np.float32)
    invvar = np.broadcast_to(
        np.array([100.0, 25.0, 0.0, 4.0], np.float32)[:, None, None], cube.shape
    )
    body = cube_fits_bytes(cube, RA, DEC, 0.262, "griz", invvar=np.ascontiguousarray(invvar))
    decoded = decode_cutout(body, SIZE, "griz")
    assert decoded.error_source == "invvar"
    sigmas, sources = pixel_errors(decoded.data[None], [decoded])
    assert sources == ["invvar"]
    np.testing.assert_allclose(sigmas[0, [0, 1, 3], 0, 0], [0.1, 0.2, 0.5], rtol=1e-6)
    assert np.isinf(sigmas[0, 2]).all()  # no exposure in i
    # The stages that measure the cube alone skip the extension, and get the same cube.
    cube_only = decode_cutout(body, SIZE, "griz", errors=False)
    assert cube_only.errors is None
    assert cube_only.error_source is None
    np.testing.assert_array_equal(cube_only.data, decoded.data)
