-- The radon pipeline's results (paper step 6): per band and combined, keyed by algo_version so a
-- re-run with other parameters adds rows instead of overwriting earlier science.

CREATE TABLE radon_measurements (
    source_id                bigint NOT NULL REFERENCES galaxies (source_id),
    algo_version             text NOT NULL,
    band                     text NOT NULL CHECK (band IN ('g', 'r', 'i', 'z', 'combined')),
    angle_image_deg          double precision CHECK (angle_image_deg >= 0 AND angle_image_deg < 180),
    position_angle_deg       double precision CHECK (position_angle_deg >= 0 AND position_angle_deg < 180),
    angle_err_deg            double precision,
    angle_err_window_deg     double precision,
    angle_err_window_std_deg double precision,
    angle_argmax_deg         double precision,
    sinusoid_a               double precision,
    sinusoid_b               double precision,
    anisotropy               double precision,
    moments_angle_deg        double precision,
    moments_position_angle_deg double precision,
    moments_err_deg          double precision,
    moments_ellipticity      double precision,
    band_spread_deg          double precision,
    n_bands                  smallint,
    nonfinite_pixels         integer,
    masked_fraction          real,
    contaminated             boolean,
    flags                    integer NOT NULL,
    measured_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, algo_version, band)
);
COMMENT ON TABLE radon_measurements IS
    'angles in degrees, [0, 180); image angle CCW from +x (column) towards +y (row), row 0 = FITS '
    'y=1; position angle east of north from the cutout WCS; NULL only where flags say why';
COMMENT ON COLUMN radon_measurements.flags IS 'galpipe.science.core.Flag bits';
COMMENT ON COLUMN radon_measurements.angle_err_deg IS
    'per band: sinusoid fit standard error of theta0; combined: from the 1/sigma^2 weights';
