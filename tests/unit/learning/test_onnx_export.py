"""An exported network predicts through onnxruntime what it predicts through torch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from galpipe.errors import InputError
from galpipe.learning.inference import MorphologyModel
from galpipe.learning.networks import ARCHITECTURES, build_network, predict_fractions
from galpipe.learning.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
from galpipe.science.gz2 import N_ANSWERS


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_onnxruntime_output_equals_torch_output(architecture: str) -> None:
    torch.manual_seed(0)
    model = build_network(architecture, 4)
    model.train()  # the export must use eval mode (batch-norm statistics, no dropout) anyway
    onnx_bytes = export_onnx(model, 4, 40)
    assert model.training  # and leave the caller's model as it was

    # Five images in batches of two: not the exporter's example batch, and a ragged last one.
    images = np.random.default_rng(1).normal(size=(5, 4, 40, 40)).astype(np.float32)
    predicted = MorphologyModel.from_bytes(onnx_bytes, "cpu", batch_size=2).predict(images)

    expected = predict_fractions(model, images)
    assert predicted.dtype == np.float64
    assert predicted.shape == (5, N_ANSWERS)
    np.testing.assert_allclose(predicted, expected, rtol=0.0, atol=1e-5)


def test_the_graph_names_its_input_and_output_with_a_dynamic_batch(small_cnn_onnx: bytes) -> None:
    graph = onnx.load_from_string(small_cnn_onnx).graph
    (model_input,) = graph.input
    (model_output,) = graph.output
    assert (model_input.name, model_output.name) == (INPUT_NAME, OUTPUT_NAME)
    dims = model_input.type.tensor_type.shape.dim
    assert dims[0].dim_param  # symbolic: any batch size
    assert [d.dim_value for d in dims[1:]] == [4, 40, 40]


def test_a_network_that_does_not_take_the_size_is_refused() -> None:
    with pytest.raises(InputError, match=r"does not accept \(3, 40, 40\) images"):
        export_onnx(build_network("small_cnn", 4), 3, 40)
