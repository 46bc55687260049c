"""Labelled images and their split: the data a morphology network learns from, as arrays.

:class:`LabelledImages` holds network inputs row for row with their 37 Galaxy Zoo fractions
and the SHA-256 of both (the training data hash a model records); :func:`split_by_id` assigns
train / validation / test by a hash of each id, so a galaxy is always in the same split
whatever else is in the set. The readers of files and stores that make them live in
:mod:`galpipe.catalog.morphology_data` and :mod:`galpipe.morphology.datasets`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from galpipe.science.gz2 import N_ANSWERS

__all__ = ["LabelledImages", "split_by_id"]

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class LabelledImages:
    """Images and their Galaxy Zoo fractions, row for row.

    Attributes
    ----------
    ids : numpy.ndarray
        ``(N,)`` int64 galaxy ids (Kaggle ``GalaxyID`` or galpipe ``source_id``).
    images : numpy.ndarray
        ``(N, C, S, S)`` float32 network input (dimensionless).
    fractions : numpy.ndarray
        ``(N, 37)`` float64 tree-normalised vote fractions, columns in
        :data:`galpipe.science.gz2.ANSWER_COLUMNS` order.
    source : str
        What the data came from (directory or files, matching), for the model's record.
    unmatched : numpy.ndarray
        int64 ids of galaxies that had an image but no label (empty for the Kaggle layout).
    sha256 : str
        Hex SHA-256 of the shapes and the little-endian bytes of ``ids``, ``fractions`` and
        ``images``: the training data hash; computed, not given.
    """

    ids: npt.NDArray[np.int64]
    images: npt.NDArray[np.float32]
    fractions: npt.NDArray[np.float64]
    source: str
    unmatched: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        ids = np.ascontiguousarray(self.ids, dtype="<i8")
        images = np.ascontiguousarray(self.images, dtype="<f4")
        fractions = np.ascontiguousarray(self.fractions, dtype="<f8")
        n = ids.shape[0] if ids.ndim == 1 else -1
        if images.ndim != 4 or images.shape[0] != n or images.shape[2] != images.shape[3]:
            raise ValueError(f"images of shape {images.shape} do not fit {n} ids of (N, C, S, S)")
        if fractions.shape != (n, N_ANSWERS):
            raise ValueError(f"fractions of shape {fractions.shape}, expected ({n}, {N_ANSWERS})")
        digest = hashlib.sha256()
        # The shapes first, so differently shaped data with the same bytes hash differently.
        digest.update(repr((ids.shape, images.shape, fractions.shape)).encode())
        for array in (ids, fractions, images):
            digest.update(array.tobytes())
        object.__setattr__(self, "ids", ids.astype(np.int64, copy=False))
        object.__setattr__(self, "images", images.astype(np.float32, copy=False))
        object.__setattr__(self, "fractions", fractions.astype(np.float64, copy=False))
        object.__setattr__(self, "unmatched", np.asarray(self.unmatched, dtype=np.int64))
        object.__setattr__(self, "sha256", digest.hexdigest())

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def _splitmix64(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64's finaliser (Steele et al. 2014): a bijective, well-mixed 64-bit hash."""
    # uint64 arithmetic wraps modulo 2**64, which is what the hash wants.
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))) & _MASK64


def split_by_id(
    ids: npt.ArrayLike,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Train / validation / test indices from a hash of each id.

    Each id is hashed with the seed (SplitMix64) to a number ``u`` uniform in [0, 1); it goes
    to train if ``u < f_train``, to validation if ``u < f_train + f_val``, else to test. A
    galaxy's split depends only on its id and the seed, never on which other galaxies are
    present, so adding or removing galaxies moves none of the others.

    Parameters
    ----------
    ids : array_like
        ``(N,)`` integer galaxy ids (repeats get the same split).
    fractions : tuple of 3 floats, optional
        Expected shares of train, validation and test, each in [0, 1], summing to 1.
    seed : int, optional
        Another seed, another assignment.

    Returns
    -------
    train, val, test : numpy.ndarray
        Ascending indices into ``ids``; disjoint, together every index once.

    Raises
    ------
    ValueError
        If ``ids`` is not a 1-D integer array or ``fractions`` are not three numbers in
        [0, 1] summing to 1 (within 1e-9).
    """
    values = np.asarray(ids)
    if values.ndim != 1 or not (values.size == 0 or np.issubdtype(values.dtype, np.integer)):
        raise ValueError(f"ids must be a 1-D array of integers, got {values.dtype} {values.shape}")
    shares = np.asarray(fractions, dtype=np.float64)
    if (
        shares.shape != (3,)
        or not np.isfinite(shares).all()
        or (shares < 0).any()
        or (shares > 1).any()
        or abs(shares.sum() - 1.0) > 1e-9
    ):
        raise ValueError(
            f"split fractions must be three numbers in [0, 1] (train, val, test) summing to 1, "
            f"got {fractions!r}"
        )
    key = _splitmix64(np.asarray([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    hashed = _splitmix64(values.astype(np.int64).view(np.uint64) ^ key)
    # The top 53 bits as a double in [0, 1).
    u = (hashed >> np.uint64(11)).astype(np.float64) * 2.0**-53
    train_end = shares[0]
    # With no test share, rounding of the sum must not send anyone to test.
    val_end = shares[0] + shares[1] if shares[2] > 0 else np.inf
    train = np.flatnonzero(u < train_end)
    val = np.flatnonzero((u >= train_end) & (u < val_end))
    test = np.flatnonzero(u >= val_end)
    return train, val, test
