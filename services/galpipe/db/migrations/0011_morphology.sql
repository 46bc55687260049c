-- compatible-with-previous: yes
-- The morphology pipeline: trained networks as artefacts, and their predictions.
--
-- A model is addressed by the SHA-256 of its ONNX bytes (model_version); the bytes live in the
-- object store under object_key, and a worker refuses bytes whose hash differs. Predictions are
-- keyed by (galaxy, model_version), so a new model adds rows beside an older one's.

CREATE TABLE models (
    model_version        text PRIMARY KEY CHECK (model_version ~ '^[0-9a-f]{64}$'),
    pipeline             text NOT NULL,
    architecture         text NOT NULL,
    input_mode           text NOT NULL,
    input_size           integer NOT NULL CHECK (input_size > 0),
    input_channels       integer NOT NULL CHECK (input_channels > 0),
    training_data_sha256 text NOT NULL CHECK (training_data_sha256 ~ '^[0-9a-f]{64}$'),
    metrics              jsonb NOT NULL DEFAULT '{}'::jsonb,
    object_key           text NOT NULL,
    nbytes               bigint NOT NULL CHECK (nbytes > 0),
    created_at           timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE models IS
    'trained networks; model_version is the sha256 (hex) of the ONNX bytes stored at object_key';
COMMENT ON COLUMN models.training_data_sha256 IS
    'sha256 of the training set (ids, images and labels) the network was trained on';
COMMENT ON COLUMN models.metrics IS
    'held-out test metrics at registration: rmse, rmse per answer, six-class accuracy, ...';

CREATE TABLE morphology_predictions (
    source_id              bigint NOT NULL REFERENCES galaxies (source_id),
    model_version          text NOT NULL REFERENCES models (model_version),
    class1_1               real NOT NULL CHECK (class1_1 BETWEEN 0 AND 1),
    class1_2               real NOT NULL CHECK (class1_2 BETWEEN 0 AND 1),
    class1_3               real NOT NULL CHECK (class1_3 BETWEEN 0 AND 1),
    class2_1               real NOT NULL CHECK (class2_1 BETWEEN 0 AND 1),
    class2_2               real NOT NULL CHECK (class2_2 BETWEEN 0 AND 1),
    class3_1               real NOT NULL CHECK (class3_1 BETWEEN 0 AND 1),
    class3_2               real NOT NULL CHECK (class3_2 BETWEEN 0 AND 1),
    class4_1               real NOT NULL CHECK (class4_1 BETWEEN 0 AND 1),
    class4_2               real NOT NULL CHECK (class4_2 BETWEEN 0 AND 1),
    class5_1               real NOT NULL CHECK (class5_1 BETWEEN 0 AND 1),
    class5_2               real NOT NULL CHECK (class5_2 BETWEEN 0 AND 1),
    class5_3               real NOT NULL CHECK (class5_3 BETWEEN 0 AND 1),
    class5_4               real NOT NULL CHECK (class5_4 BETWEEN 0 AND 1),
    class6_1               real NOT NULL CHECK (class6_1 BETWEEN 0 AND 1),
    class6_2               real NOT NULL CHECK (class6_2 BETWEEN 0 AND 1),
    class7_1               real NOT NULL CHECK (class7_1 BETWEEN 0 AND 1),
    class7_2               real NOT NULL CHECK (class7_2 BETWEEN 0 AND 1),
    class7_3               real NOT NULL CHECK (class7_3 BETWEEN 0 AND 1),
    class8_1               real NOT NULL CHECK (class8_1 BETWEEN 0 AND 1),
    class8_2               real NOT NULL CHECK (class8_2 BETWEEN 0 AND 1),
    class8_3               real NOT NULL CHECK (class8_3 BETWEEN 0 AND 1),
    class8_4               real NOT NULL CHECK (class8_4 BETWEEN 0 AND 1),
    class8_5               real NOT NULL CHECK (class8_5 BETWEEN 0 AND 1),
    class8_6               real NOT NULL CHECK (class8_6 BETWEEN 0 AND 1),
    class8_7               real NOT NULL CHECK (class8_7 BETWEEN 0 AND 1),
    class9_1               real NOT NULL CHECK (class9_1 BETWEEN 0 AND 1),
    class9_2               real NOT NULL CHECK (class9_2 BETWEEN 0 AND 1),
    class9_3               real NOT NULL CHECK (class9_3 BETWEEN 0 AND 1),
    class10_1              real NOT NULL CHECK (class10_1 BETWEEN 0 AND 1),
    class10_2              real NOT NULL CHECK (class10_2 BETWEEN 0 AND 1),
    class10_3              real NOT NULL CHECK (class10_3 BETWEEN 0 AND 1),
    class11_1              real NOT NULL CHECK (class11_1 BETWEEN 0 AND 1),
    class11_2              real NOT NULL CHECK (class11_2 BETWEEN 0 AND 1),
    class11_3              real NOT NULL CHECK (class11_3 BETWEEN 0 AND 1),
    class11_4              real NOT NULL CHECK (class11_4 BETWEEN 0 AND 1),
    class11_5              real NOT NULL CHECK (class11_5 BETWEEN 0 AND 1),
    class11_6              real NOT NULL CHECK (class11_6 BETWEEN 0 AND 1),
    six_class              text NOT NULL CHECK (six_class IN ('Elliptical', 'Star/Artifact', 'On_Edge', 'Spiral_Barred', 'Spiral', 'Irregular')),
    six_class_probability  real NOT NULL CHECK (six_class_probability BETWEEN 0 AND 1),
    predicted_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, model_version)
);
COMMENT ON TABLE morphology_predictions IS
    'Galaxy Zoo 2 vote fractions predicted from the griz cutout: classN_M is the Kaggle '
    'column ClassN.M, the fraction of all volunteers reaching that answer (tree-normalised: a '
    'question''s answers sum to its parent answer''s fraction)';
COMMENT ON COLUMN morphology_predictions.six_class IS
    'the largest of the fractions mapped to six classes (Class1.1 Elliptical, 1.3 Star/Artifact, '
    '2.1 On_Edge, 3.1 Spiral_Barred, 4.1 Spiral, 8.4 Irregular)';
COMMENT ON COLUMN morphology_predictions.six_class_probability IS
    'the winning fraction itself: the share of volunteers predicted to give that answer';

-- Workers read models and write predictions; `galpipe morphology train` registers models.
GRANT SELECT, INSERT ON models TO galpipe_app;
GRANT SELECT, INSERT, UPDATE ON morphology_predictions TO galpipe_app;
