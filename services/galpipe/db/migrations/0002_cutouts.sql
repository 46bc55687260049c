-- The fetch pipeline's results: one stored FITS cutout per galaxy.

CREATE TABLE cutouts (
    source_id     bigint PRIMARY KEY REFERENCES galaxies (source_id),
    layer         text NOT NULL,
    bands         text NOT NULL,
    missing_bands text NOT NULL DEFAULT '',
    size          integer NOT NULL CHECK (size > 0),
    pixscale      double precision NOT NULL CHECK (pixscale > 0),
    survey        text,
    object_key    text NOT NULL UNIQUE,
    sha256        text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    nbytes        bigint NOT NULL CHECK (nbytes > 0),
    fetched_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN cutouts.pixscale IS 'arcseconds per pixel';
COMMENT ON COLUMN cutouts.missing_bands IS 'bands the service returned blank (e.g. i in the north)';
COMMENT ON COLUMN cutouts.sha256 IS 'hex SHA-256 of the stored bytes; checked on every read';
