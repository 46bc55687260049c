"""(torch) A morphology network to ONNX bytes: the graph the predicting processes run.

The exported graph takes float32 ``(N, C, S, S)`` images under the input name ``images``,
with N dynamic, and outputs float32 ``(N, 37)`` tree-normalised fractions (``fractions``):
the tree normalisation is part of the network's ``forward``
(:mod:`galpipe.learning.tree`). Prediction needs only onnxruntime
(:mod:`galpipe.learning.inference`).
"""

from __future__ import annotations

import copy
import logging
import warnings

import torch
from torch import nn

from galpipe.errors import InputError

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "export_onnx"]

INPUT_NAME = "images"
OUTPUT_NAME = "fractions"

# ONNX opset of the exported graph: 18 is torch's dynamo exporter's own and runs on every
# onnxruntime since 1.14.
OPSET = 18
#: Loggers of the exporter and of the ONNX IR passes it runs.
_EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "onnx_ir", "onnxscript")


def export_onnx(model: nn.Module, in_channels: int, size: int) -> bytes:
    """The network in eval mode as a serialised ONNX model with a dynamic batch dimension.

    The model is copied to the CPU for the export; the caller's model is left as it was.

    Parameters
    ----------
    model : torch.nn.Module
        A network mapping ``(N, in_channels, size, size)`` images to ``(N, 37)`` fractions.
    in_channels : int
        Channels C of the input images.
    size : int
        Side S of the square input images, in pixels.

    Returns
    -------
    bytes
        The ONNX model (weights inside), input ``images``, output ``fractions``.

    Raises
    ------
    InputError
        If the model does not accept ``(2, in_channels, size, size)`` images.
    """
    frozen = copy.deepcopy(model).to("cpu").float().eval()
    # Batch 2, not 1: an example of size 1 lets the exporter specialise the batch dimension.
    example = torch.zeros((2, in_channels, size, size), dtype=torch.float32)
    try:
        with torch.no_grad():
            frozen(example)
    except RuntimeError as exc:
        raise InputError(
            f"the network does not accept ({in_channels}, {size}, {size}) images: {exc}"
        ) from exc
    batch = torch.export.Dim("batch", min=1)
    # The exporter and its graph passes narrate their internals at INFO (one line per
    # deduplicated initializer) and warn about their own deprecations: nothing to act on.
    loggers = [logging.getLogger(name) for name in _EXPORTER_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(
                frozen,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"x": {0: batch}},
                opset_version=OPSET,
                external_data=False,
                optimize=True,
                verbose=False,
            )
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
    if program is None:  # only the legacy exporter writes to a file and returns None
        raise AssertionError("torch.onnx.export returned no program")
    return bytes(program.model_proto.SerializeToString())
