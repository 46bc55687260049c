-- The combined angle's error has been the band stack's fit error, Birge-scaled, since
-- radon-v3; the column's description still named the weighted mean of the band angles.
COMMENT ON COLUMN radon_measurements.angle_err_deg IS
    'per band: sinusoid fit standard error of theta0; combined: the band stack''s fit error '
    'scaled by the Birge ratio of the band angles (docs/science.md)';
