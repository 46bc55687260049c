-- compatible-with-previous: yes
-- The photo-z pipeline: redshifts estimated from each galaxy's pixels.
--
-- A photo-z model is registered in `models` like a morphology network (pipeline 'photoz',
-- model_version the SHA-256 of its bytes); predictions are keyed by (galaxy, model_version).

CREATE TABLE photoz_predictions (
    source_id      bigint NOT NULL REFERENCES galaxies (source_id),
    model_version  text NOT NULL REFERENCES models (model_version),
    z_phot         real NOT NULL CHECK (z_phot >= 0),
    z_err          real NOT NULL CHECK (z_err >= 0),
    n_pixels       integer NOT NULL CHECK (n_pixels > 0),
    error_source   text NOT NULL CHECK (error_source IN ('sky_noise', 'invvar', 'sdss_sky_hdu')),
    predicted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, model_version)
);
COMMENT ON TABLE photoz_predictions IS
    'photometric redshifts from pixels: every pixel of the galaxy''s segment gets a redshift '
    'from the model, and the pixels'' redshifts are combined into the galaxy''s';
COMMENT ON COLUMN photoz_predictions.z_phot IS 'the galaxy''s redshift, combined from its pixels';
COMMENT ON COLUMN photoz_predictions.z_err IS
    'half the weighted 16-84 % spread of the pixels'' redshifts';
COMMENT ON COLUMN photoz_predictions.n_pixels IS 'pixels of the galaxy''s segment that were used';
COMMENT ON COLUMN photoz_predictions.error_source IS
    'where the per-pixel errors came from: sky_noise (measured in the stamp), invvar (the '
    'survey''s inverse variance) or sdss_sky_hdu (the SDSS frame''s sky and calibration)';

GRANT SELECT, INSERT, UPDATE ON photoz_predictions TO galpipe_app;
