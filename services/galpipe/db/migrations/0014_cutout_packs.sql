-- compatible-with-previous: yes
-- Cutout packs (GALPIPE_CUTOUT_PACKING=healpix): the cutouts of one fetch batch that fall in one
-- HEALPix tile, stored as ONE object, their FITS byte strings concatenated unchanged, instead of
-- one object per galaxy (10^10 galaxies would be 10^10 PUTs and as many GETs).
--
-- A packed galaxy's `cutouts` row keeps its own key, size and SHA-256 and says where its bytes
-- are: the pack's key and the byte offset of its first byte there; its length is `nbytes`. A
-- per-galaxy object has neither (NULL). New nullable columns without a default change only the
-- catalogue, and the constraints are NOT VALID (enforced on every new or changed row, existing
-- rows - all NULL - not rescanned), so this runs at once on a table of any size and a previous
-- release keeps reading and writing per-galaxy rows. Turn GALPIPE_CUTOUT_PACKING on only once
-- every reader runs a release that knows packs: an older one looks for a packed galaxy at its
-- own key and fails it as missing.

CREATE TABLE cutout_packs (
    pack_key      text PRIMARY KEY,
    healpix_order smallint NOT NULL CHECK (healpix_order BETWEEN 0 AND 29),
    tile          bigint NOT NULL CHECK (tile >= 0),
    sha256        text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    nbytes        bigint NOT NULL CHECK (nbytes > 0),
    n_cutouts     integer NOT NULL CHECK (n_cutouts > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (tile < 12 * (4::bigint ^ healpix_order))
);
COMMENT ON TABLE cutout_packs IS
    'one stored object holding the cutouts of one fetch batch in one HEALPix tile, their FITS '
    'bytes concatenated; recorded in the transaction that completes those fetch tasks';
COMMENT ON COLUMN cutout_packs.tile IS 'NESTED HEALPix index (ICRS) at healpix_order';
COMMENT ON COLUMN cutout_packs.sha256 IS 'hex SHA-256 of the whole pack, checked after its PUT';
COMMENT ON COLUMN cutout_packs.n_cutouts IS
    'cutouts written into the pack (rows referencing it may be fewer: a lost lease, a re-fetch)';
CREATE INDEX cutout_packs_tile ON cutout_packs (healpix_order, tile);

ALTER TABLE cutouts
    ADD COLUMN pack_key text,
    ADD COLUMN pack_offset bigint;
ALTER TABLE cutouts
    ADD CONSTRAINT cutouts_pack_key_fkey FOREIGN KEY (pack_key)
        REFERENCES cutout_packs (pack_key) NOT VALID,
    ADD CONSTRAINT cutouts_pack_slice CHECK (
        (pack_key IS NULL AND pack_offset IS NULL)
        OR (pack_key IS NOT NULL AND pack_offset >= 0)
    ) NOT VALID;
COMMENT ON COLUMN cutouts.pack_key IS
    'the cutout_packs object holding this cutout; NULL: it is its own object at object_key';
COMMENT ON COLUMN cutouts.pack_offset IS
    'byte offset of the cutout''s first byte in its pack; the slice is nbytes long';
-- No index on cutouts.pack_key: building one would scan (and block writes to) the whole table
-- here, and no hot path needs it. Readers reach a pack from the galaxy's row; the orphan sweep
-- (packs no row references, db/cutout_packs.py) is one anti-join pass, like galpipe check's.

GRANT SELECT, INSERT ON cutout_packs TO galpipe_app;
