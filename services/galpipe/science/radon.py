"""Step 3 of the paper: the Radon transform, as one cached linear operator.

The paper's literal method (section 3, step 3): for each projection angle ``theta_k`` (181
angles, 0, 1, ..., 180 degrees) rotate the masked stamp about its centre with bicubic
interpolation and sum it column-wise::

    sino[..., s, k] = sum_row scipy.ndimage.rotate(img, theta_k, reshape=False, order=3)[row, s]

(``mode="constant"``, ``cval=0``, spline prefilter on -- the scipy defaults). Axis -2 of the
sinogram is the projection position ``s`` (a column of the rotated stamp), axis -1 the angle.
:func:`literal_radon` is that method, kept for tests and the benchmark.

The transform is linear in the image, so :class:`RadonOperator` builds it once per
(size, angles, interpolation order) by pushing basis images through the same
``scipy.ndimage.rotate`` call, and applies it to a whole batch as matrix products.

Storage: the operator is **dense**, stored float32 on disk and held in memory in its compute
dtype (float64 by default); why dense and why float64 is in ``docs/decisions.md``, "The Radon
transform as one dense, cached operator". Two exact symmetries shrink the dense product:

- Point symmetry: rotating a stamp by 180 degrees about its centre reverses the flattened pixel
  order (pixel ``p`` <-> ``S*S-1-p``) and reverses every projection (``s`` <-> ``S-1-s``), and it
  commutes with the rotation by ``theta``. So the operator splits into a part acting on the
  symmetric half ``x_p + x_p'`` (giving symmetric projections) and one acting on the
  antisymmetric half ``x_p - x_p'`` (antisymmetric projections); each needs only half the
  pixels and half the projection positions: a quarter of the work each, half in all, and half
  the memory.
- The circular mask: pixels outside the inscribed circle are 0 after step 2, so their rows of
  the operator are skipped (``apply(..., circular=True)``): another ~21 % less work.

Precision: with float64 products (default) the operator agrees with :func:`literal_radon` to
~1e-7 relative (the float32 rounding of its stored entries and of the float32 output); with
``compute_dtype=np.float32`` to ~1e-6. Memory for S=40 and 181 angles: 22 MB in float32, 44 MB
in float64 (MiB).

Cache: the operator is written to ``<cache_dir>/radon-S{S}-A{A}-o{order}-{angles hash}-v{N}.npz``
(default ``~/.cache/galpipe``), atomically (temporary file + rename); a file that cannot be
read or does not match its key is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from galpipe.science.preprocess import circular_mask

__all__ = [
    "DEFAULT_ANGLES_DEG",
    "DEFAULT_STAMP_SIZE",
    "FORMAT_VERSION",
    "FoldedSinogram",
    "RadonOperator",
    "default_cache_dir",
    "literal_radon",
]

log = logging.getLogger(__name__)

#: Bump when the stored layout or the construction changes: old cache files are then ignored.
FORMAT_VERSION = 1
#: The paper's 181 projection angles, degrees.
DEFAULT_ANGLES_DEG: np.ndarray = np.arange(181, dtype=np.float64)
#: Stamp side by default, pixels: the paper's 40, which is the Legacy Survey cutout size of
#: ``galpipe.survey.layout.CUTOUT_SIZE_PX``. Science imports nothing else of galpipe, so the
#: value is repeated here and a test keeps the two equal.
DEFAULT_STAMP_SIZE = 40
# Axes argument that makes ndimage.rotate turn each (S, S) plane of an (M, S, S) stack exactly as
# it turns a 2-D image with its default axes=(1, 0).
_STACK_AXES = (2, 1)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/galpipe`` or ``~/.cache/galpipe``: where operators are cached."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "galpipe"


def _as_angles(angles: np.ndarray | None) -> np.ndarray:
    if angles is None:
        return DEFAULT_ANGLES_DEG.copy()
    arr = np.asarray(angles, dtype=np.float64).reshape(-1)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"angles: expected a non-empty array of finite degrees, got {angles!r}")
    return arr


def literal_radon(
    image: np.ndarray, angles: np.ndarray | None = None, order: int = 3
) -> np.ndarray:
    """The paper's literal Radon transform: rotate per angle, then sum the columns (step 3).

    Parameters
    ----------
    image : numpy.ndarray
        ``(..., S, S)`` stamp(s); leading axes are a stack, each plane transformed alone.
    angles : numpy.ndarray, optional
        Projection angles in degrees (default: 0, 1, ..., 180).
    order : int
        Spline interpolation order of ``scipy.ndimage.rotate`` (3 = bicubic, the paper's).

    Returns
    -------
    numpy.ndarray
        float64 sinogram ``(..., S, A)``: axis -2 the projection position (column of the
        rotated stamp), axis -1 the angle.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim < 2 or img.shape[-1] != img.shape[-2]:
        raise ValueError(f"image: expected (..., S, S) square stamps, got shape {img.shape}")
    theta = _as_angles(angles)
    lead = img.shape[:-2]
    size = img.shape[-1]
    stack = img.reshape(-1, size, size)
    out = np.empty((stack.shape[0], size, theta.size), dtype=np.float64)
    for k, angle in enumerate(theta):  # the literal method: one rotation per angle
        rotated = ndimage.rotate(stack, angle, axes=_STACK_AXES, reshape=False, order=order)
        out[:, :, k] = rotated.sum(axis=1)
    return out.reshape(*lead, size, theta.size)


@dataclass(frozen=True)
class _Layout:
    """Index bookkeeping of the point-symmetric split for a stamp side ``size``."""

    size: int
    half_pixels: np.ndarray  # flat indices p of the kept half (inside-circle ones first)
    partner_pixels: np.ndarray  # S*S-1-p
    n_inside: int  # how many of half_pixels lie inside the circular mask
    n_pos: int  # projection positions computed: ceil(S/2)

    @classmethod
    def for_size(cls, size: int) -> _Layout:
        n_pix = size * size
        half = np.arange((n_pix + 1) // 2)  # includes the centre pixel when S is odd
        inside = circular_mask(size).reshape(-1)[half]
        ordered = np.concatenate([half[inside], half[~inside]])
        return cls(
            size=size,
            half_pixels=ordered,
            partner_pixels=n_pix - 1 - ordered,
            n_inside=int(inside.sum()),
            n_pos=(size + 1) // 2,
        )


class RadonOperator:
    """The paper's Radon transform (step 3) as a fixed linear operator on ``S x S`` stamps.

    Build with :meth:`build` or, cached on disk, :meth:`load_or_build`; apply to a batch with
    :meth:`apply`. Stored dense float32, split by the stamp's point symmetry (module docstring):
    ``sym`` and ``anti``, each ``(ceil(S*S/2), A * ceil(S/2))``.

    Parameters
    ----------
    size, angles, order
        The key: stamp side (pixels), projection angles (degrees), spline order.
    sym, anti : numpy.ndarray
        The two halves of the operator, rows in :class:`_Layout` pixel order.
    compute_dtype : numpy dtype
        dtype the matrices are held in and the products computed in (float64 or float32).
    """

    def __init__(
        self,
        size: int,
        angles: np.ndarray,
        order: int,
        sym: np.ndarray,
        anti: np.ndarray,
        compute_dtype: type[np.floating] = np.float64,
    ) -> None:
        self.size = int(size)
        self.angles = _as_angles(angles)
        self.order = int(order)
        self._layout = _Layout.for_size(self.size)
        expected = (self._layout.half_pixels.size, self.angles.size * self._layout.n_pos)
        if sym.shape != expected or anti.shape != expected:
            raise ValueError(
                f"operator halves: expected shape {expected} for size {size} and "
                f"{self.angles.size} angles, got {sym.shape} and {anti.shape}"
            )
        self.compute_dtype = np.dtype(compute_dtype)
        if self.compute_dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"compute_dtype: expected float32 or float64, got {compute_dtype}")
        # Rounded to float32 first so that a built operator and a cached one are identical.
        self.sym = np.ascontiguousarray(np.asarray(sym, np.float32), dtype=self.compute_dtype)
        self.anti = np.ascontiguousarray(np.asarray(anti, np.float32), dtype=self.compute_dtype)

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        size: int = DEFAULT_STAMP_SIZE,
        angles: np.ndarray | None = None,
        order: int = 3,
        compute_dtype: type[np.floating] = np.float64,
    ) -> RadonOperator:
        """Build the operator by transforming the basis images with the literal method.

        Parameters
        ----------
        size : int
            Stamp side ``S`` in pixels.
        angles : numpy.ndarray, optional
            Projection angles in degrees (default: 0, 1, ..., 180).
        order : int
            Spline order (3 = bicubic).
        compute_dtype : numpy dtype
            float64 (default, exact to ~1e-7) or float32 (faster, ~1e-6).

        Returns
        -------
        RadonOperator
        """
        if size < 2:
            raise ValueError(f"size: expected a stamp side of at least 2 pixels, got {size}")
        theta = _as_angles(angles)
        layout = _Layout.for_size(size)
        n_half = layout.half_pixels.size
        basis = np.zeros((n_half, size * size), dtype=np.float64)
        basis[np.arange(n_half), layout.half_pixels] = 1.0
        # (n_half, S, A): the projection of each basis pixel, by the literal method itself.
        columns = literal_radon(basis.reshape(n_half, size, size), theta, order)
        mirrored = columns[:, ::-1, :]
        pos = slice(0, layout.n_pos)
        sym = 0.5 * (columns[:, pos, :] + mirrored[:, pos, :])
        anti = 0.5 * (columns[:, pos, :] - mirrored[:, pos, :])
        if size % 2 == 1:
            # The centre pixel is its own partner: the symmetric input carries it twice.
            centre_row = int(np.flatnonzero(layout.half_pixels == (size * size) // 2)[0])
            sym[centre_row] *= 0.5
        # Column order (angle, position) so that a product reshapes to (M, A, n_pos).
        sym_t = np.ascontiguousarray(sym.transpose(0, 2, 1).reshape(n_half, -1), dtype=np.float32)
        anti_t = np.ascontiguousarray(anti.transpose(0, 2, 1).reshape(n_half, -1), dtype=np.float32)
        return cls(size, theta, order, sym_t, anti_t, compute_dtype)

    @staticmethod
    def cache_path(
        size: int, angles: np.ndarray | None, order: int, cache_dir: Path | str | None = None
    ) -> Path:
        """The cache file of the operator with this key (module docstring)."""
        theta = _as_angles(angles)
        digest = hashlib.sha1(theta.tobytes()).hexdigest()[:10]
        directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        name = f"radon-S{size}-A{theta.size}-o{order}-{digest}-v{FORMAT_VERSION}.npz"
        return directory / name

    @classmethod
    def load_or_build(
        cls,
        size: int = DEFAULT_STAMP_SIZE,
        angles: np.ndarray | None = None,
        order: int = 3,
        cache_dir: Path | str | None = None,
        compute_dtype: type[np.floating] = np.float64,
    ) -> RadonOperator:
        """The operator from the disk cache, or built and cached (atomically) if absent/bad.

        Parameters
        ----------
        size, angles, order, compute_dtype
            As :meth:`build`.
        cache_dir : pathlib.Path or str, optional
            Cache directory (default :func:`default_cache_dir`); created if missing.

        Returns
        -------
        RadonOperator
        """
        theta = _as_angles(angles)
        path = cls.cache_path(size, theta, order, cache_dir)
        cached = cls._read_cache(path, size, theta, order, compute_dtype)
        if cached is not None:
            return cached
        operator = cls.build(size, theta, order, compute_dtype)
        try:
            operator._write_cache(path)
        except OSError as exc:
            # A read-only root (the container's baked cache is for the default layout): the
            # operator just built is correct, only the next process will build it again.
            log.warning(
                "Radon operator not cached at %s (%s); set GALPIPE_RADON_CACHE_DIR to "
                "a writable directory to keep it",
                path,
                exc,
            )
        return operator

    @classmethod
    def _read_cache(
        cls,
        path: Path,
        size: int,
        theta: np.ndarray,
        order: int,
        compute_dtype: type[np.floating],
    ) -> RadonOperator | None:
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = data["meta"]
                ok = (
                    int(meta[0]) == FORMAT_VERSION
                    and int(meta[1]) == size
                    and int(meta[2]) == order
                    and np.array_equal(data["angles"], theta)
                )
                sym, anti = data["sym"], data["anti"]
            if not ok or not (np.all(np.isfinite(sym)) and np.all(np.isfinite(anti))):
                raise ValueError("key or contents do not match")
            return cls(size, theta, order, sym, anti, compute_dtype)
        except (OSError, KeyError, ValueError, IndexError, zipfile.BadZipFile, EOFError) as exc:
            log.warning("radon operator cache %s is unusable (%s); rebuilding it", path, exc)
            return None

    def _write_cache(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = np.array([FORMAT_VERSION, self.size, self.order], dtype=np.int64)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(
                    handle,
                    meta=meta,
                    angles=self.angles,
                    sym=self.sym.astype(np.float32),
                    anti=self.anti.astype(np.float32),
                )
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    # -- use ------------------------------------------------------------------------------

    @property
    def nbytes(self) -> int:
        """Memory held by the operator's matrices, bytes."""
        return int(self.sym.nbytes + self.anti.nbytes)

    def apply_folded(self, images: np.ndarray, *, circular: bool = False) -> FoldedSinogram:
        """The sinograms of a batch in folded form (step 3; see :class:`FoldedSinogram`).

        Parameters
        ----------
        images : numpy.ndarray
            ``(..., S, S)`` stamps (cast to the compute dtype).
        circular : bool
            The caller guarantees that pixels outside the inscribed circle are 0 (step 2 was
            applied); their operator rows are then skipped. Wrong if that is not true.

        Returns
        -------
        FoldedSinogram
            ``even`` and ``odd`` of shape ``(..., A, ceil(S/2))`` in the compute dtype.
        """
        arr = np.asarray(images)
        size = self.size
        if arr.ndim < 2 or arr.shape[-2:] != (size, size):
            raise ValueError(f"images: expected (..., {size}, {size}) stamps, got {arr.shape}")
        lead = arr.shape[:-2]
        flat = arr.reshape(-1, size * size)
        layout = self._layout
        rows = slice(0, layout.n_inside) if circular else slice(None)
        first = flat[:, layout.half_pixels[rows]].astype(self.compute_dtype, copy=False)
        second = flat[:, layout.partner_pixels[rows]].astype(self.compute_dtype, copy=False)
        shape = (*lead, self.angles.size, layout.n_pos)
        even = ((first + second) @ self.sym[rows]).reshape(shape)
        odd = ((first - second) @ self.anti[rows]).reshape(shape)
        return FoldedSinogram(even=even, odd=odd, size=size)

    def apply(self, images: np.ndarray, *, circular: bool = False) -> np.ndarray:
        """The sinograms of a batch: ``(N, B, S, S) -> (N, B, S, A)`` float32 (step 3).

        Parameters
        ----------
        images : numpy.ndarray
            ``(..., S, S)`` stamps (cast to the compute dtype).
        circular : bool
            As :meth:`apply_folded`.

        Returns
        -------
        numpy.ndarray
            float32 ``(..., S, A)`` sinograms, equal to :func:`literal_radon` of the same
            stamps to float32 rounding. A view whose axis -2 (position) is the contiguous one.
        """
        return self.apply_folded(images, circular=circular).unfold()


@dataclass(frozen=True)
class FoldedSinogram:
    """Sinograms split by the stamp's point symmetry (module docstring), as computed.

    For ``s < S // 2``: ``sino[..., s, k] = even[..., k, s] + odd[..., k, s]`` and
    ``sino[..., S-1-s, k] = even[..., k, s] - odd[..., k, s]``; for odd ``S`` the middle
    position is ``even[..., k, S // 2]`` (``odd`` is 0 there). Max pooling and projection
    moments can be read from the halves without unfolding (:mod:`galpipe.science.features`).

    Attributes
    ----------
    even, odd : numpy.ndarray
        ``(..., A, ceil(S/2))``, same units as the sinogram.
    size : int
        Stamp side ``S``.
    """

    even: np.ndarray
    odd: np.ndarray
    size: int

    def unfold(self) -> np.ndarray:
        """The full float32 sinograms ``(..., S, A)`` (a view with axis -2 contiguous)."""
        size = self.size
        n_low = size // 2
        lead = self.even.shape[:-1]
        out = np.empty((*lead, size), dtype=np.float32)
        even, odd = self.even, self.odd
        np.add(even[..., :n_low], odd[..., :n_low], out=out[..., :n_low])
        np.subtract(
            even[..., n_low - 1 :: -1], odd[..., n_low - 1 :: -1], out=out[..., size - n_low :]
        )
        if size % 2 == 1:
            out[..., n_low] = even[..., n_low]
        return np.swapaxes(out, -1, -2)
