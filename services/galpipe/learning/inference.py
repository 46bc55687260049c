"""(onnxruntime, no torch) Batched GZ2 fractions from an exported morphology network.

The predicting processes load the ONNX bytes written by
:func:`galpipe.learning.onnx_export.export_onnx` and need only onnxruntime and numpy: this module
imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from galpipe.errors import ConfigurationError, InputError
from galpipe.science.gz2 import N_ANSWERS

__all__ = ["DEVICES", "MorphologyModel"]

#: Where :class:`MorphologyModel` may run: "auto" takes CUDA when onnxruntime offers it.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


def _providers(device: str) -> list[str]:
    """The execution providers for ``device``, best first."""
    if device not in DEVICES:
        raise InputError(f"unknown inference device {device!r}; choose one of {', '.join(DEVICES)}")
    available = ort.get_available_providers()
    if device == "cuda" and _CUDA not in available:
        raise ConfigurationError(
            "inference device 'cuda' asked for, but this onnxruntime offers only "
            f"{', '.join(available)}; install onnxruntime-gpu or use device 'cpu' or 'auto'"
        )
    if device in ("cuda", "auto") and _CUDA in available:
        _preload_cuda_libraries()
        return [_CUDA, _CPU]
    return [_CPU]


def _preload_cuda_libraries() -> None:
    """Load the CUDA and cuDNN libraries of the ``nvidia-*`` wheels before a CUDA session.

    onnxruntime-gpu's CUDA provider is loaded when the first CUDA session is made, and it
    needs libcudart, libcublas, libcudnn ...; installed from PyPI (the GPU image) they live in
    ``site-packages/nvidia/*/lib``, which the dynamic loader does not search. ``preload_dlls``
    (onnxruntime-gpu >= 1.21) loads them from there first; an older build or a system CUDA
    needs nothing.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        preload()


class MorphologyModel:
    """An exported morphology network ready to predict GZ2 fractions.

    Build it with :meth:`from_bytes`. ``predict`` runs the images through the graph in
    batches of ``batch_size``, so any number of galaxies fits in memory.

    Attributes
    ----------
    in_channels : int
        Channels C the network takes.
    size : int
        Side S of the square images it takes, in pixels.
    providers : tuple of str
        The onnxruntime execution providers in use, best first.
    batch_size : int
        Images per run of the graph.
    """

    def __init__(self, session: ort.InferenceSession, batch_size: int) -> None:
        self._session = session
        inputs = session.get_inputs()
        outputs = session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise InputError(
                f"a morphology network has one input and one output; this ONNX model has "
                f"{len(inputs)} inputs and {len(outputs)} outputs"
            )
        shape = inputs[0].shape
        if (
            len(shape) != 4
            or not all(isinstance(d, int) for d in shape[1:])
            or shape[2] != shape[3]
        ):
            raise InputError(
                f"a morphology network takes (N, C, S, S) images; this ONNX model's input "
                f"{inputs[0].name!r} has shape {shape}"
            )
        out_shape = outputs[0].shape
        if len(out_shape) != 2 or out_shape[1] != N_ANSWERS:
            raise InputError(
                f"a morphology network outputs (N, {N_ANSWERS}) fractions; this ONNX model's "
                f"output {outputs[0].name!r} has shape {out_shape}"
            )
        self._input_name = inputs[0].name
        self.in_channels = int(shape[1])
        self.size = int(shape[2])
        self.providers = tuple(session.get_providers())
        self.batch_size = batch_size

    @classmethod
    def from_bytes(
        cls,
        onnx_bytes: bytes,
        device: str = "auto",
        *,
        intra_op_threads: int | None = None,
        batch_size: int = 256,
    ) -> MorphologyModel:
        """Load a serialised ONNX morphology network.

        Parameters
        ----------
        onnx_bytes : bytes
            The model as :func:`galpipe.learning.onnx_export.export_onnx` returns it.
        device : {"auto", "cpu", "cuda"}, optional
            "cuda" requires onnxruntime's CUDA provider; "auto" uses it when available, else
            the CPU.
        intra_op_threads : int, optional
            Threads one operator may use on the CPU; None lets onnxruntime choose (all
            cores). A worker sharing its node with others sets its CPU request here.
        batch_size : int, optional
            Images per run of the graph, >= 1.

        Raises
        ------
        InputError
            If the bytes are not an ONNX morphology network, the device is unknown or a count
            is not positive.
        ConfigurationError
            If "cuda" is asked for and this onnxruntime has no CUDA provider.
        """
        for name, value in (("batch_size", batch_size), ("intra_op_threads", intra_op_threads)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InputError(f"inference {name} must be a positive integer, got {value!r}")
        providers = _providers(device)
        options = ort.SessionOptions()
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        try:
            session = ort.InferenceSession(
                bytes(onnx_bytes), sess_options=options, providers=providers
            )
        except Exception as exc:  # onnxruntime's own exception classes derive from Exception
            raise InputError(
                f"the {len(onnx_bytes)} bytes given are not a loadable ONNX model: {exc}"
            ) from exc
        return cls(session, batch_size)

    def predict(self, images: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """GZ2 fractions of a stack of images.

        Parameters
        ----------
        images : array_like
            ``(N, C, S, S)`` network inputs (:mod:`galpipe.science.morphology_input`),
            converted to float32; C and S must be the network's.

        Returns
        -------
        numpy.ndarray
            ``(N, 37)`` float64 tree-normalised fractions in the order of
            :data:`galpipe.science.gz2.ANSWER_COLUMNS`.

        Raises
        ------
        InputError
            If the images' shape is not the network's or a value is not finite.
        """
        x = np.ascontiguousarray(images, dtype=np.float32)
        want = (self.in_channels, self.size, self.size)
        if x.ndim != 4 or x.shape[1:] != want:
            raise InputError(
                f"images must have shape (N, {want[0]}, {want[1]}, {want[2]}) for this "
                f"network, got {x.shape}"
            )
        if not np.isfinite(x).all():
            row = int(np.argwhere(~np.isfinite(x))[0][0])
            raise InputError(f"image {row} of {x.shape[0]} has values that are not finite")
        out = np.empty((x.shape[0], N_ANSWERS), dtype=np.float64)
        for start in range(0, x.shape[0], self.batch_size):
            batch = x[start : start + self.batch_size]
            result: Sequence[npt.NDArray[np.float32]] = self._session.run(
                None, {self._input_name: batch}
            )
            out[start : start + batch.shape[0]] = result[0]
        return out
