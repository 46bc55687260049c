-- compatible-with-previous: yes
-- Since radon-v4 the combined angle's error is calibrated on the synthetic truth (by the band
-- stack's anisotropy and the neighbour masking); the column's description says so. A comment
-- only: an older release reads and writes the column as before.
COMMENT ON COLUMN radon_measurements.angle_err_deg IS
    'per band: sinusoid fit standard error of theta0; combined: the band stack''s fit error '
    'scaled by the Birge ratio, then calibrated on synthetic truth by the stack''s anisotropy '
    'and neighbour masking so that about 68 % of errors fall within it (docs/science.md)';
