"""Preprocessing of multimodal brain MRI: brain mask, crop/uncrop, clip, z-score, N4.

The pipeline of :func:`preprocess` follows common BraTS practice (and the papers this package
implements):

1. brain mask = voxels non-zero in any modality (BraTS images are skull-stripped with a zero
   background), holes filled per axial slice and in 3D, largest connected component;
2. crop every channel to the mask's bounding box plus a margin (:func:`uncrop` is the exact
   inverse, so results computed on the crop map back to the original voxels);
3. optional N4 bias-field correction (SimpleITK) per channel, fitted on a shrunk image and
   applied at full resolution;
4. per-channel percentile clipping over brain voxels;
5. per-channel z-score over brain voxels, 0 outside the brain.

Every function returns new arrays and never modifies its inputs. :func:`preprocess_case`
caches its results in memory (a small LRU keyed by a hash of the image bytes and the
parameters).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_ssseg.errors import InputError

__all__ = [
    "brain_mask",
    "background_value",
    "bounding_box",
    "crop",
    "uncrop",
    "clip_percentiles",
    "zscore",
    "n4_correct",
    "Preprocessed",
    "preprocess",
    "preprocess_case",
    "clear_cache",
    "cache_info",
    "CACHE_SIZE",
]

#: Number of preprocessed cases kept by :func:`preprocess_case`.
CACHE_SIZE = 4

BBox = tuple[slice, slice, slice]


# ------------------------------------------------------------------------- validation
def _as_images(images: Any, what: str = "images") -> np.ndarray:
    """Validate ``(C, Z, Y, X)`` (or ``(Z, Y, X)``) finite numeric images; return a 4D view."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise InputError(
            f"{what} must be a (C, Z, Y, X) or (Z, Y, X) array; got shape {arr.shape}. Pass the "
            "modalities stacked on the first axis."
        )
    if arr.size == 0 or min(arr.shape[1:]) < 2:
        raise InputError(f"{what} has shape {arr.shape}; each spatial axis needs >= 2 voxels.")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"{what} has dtype {arr.dtype}; expected a numeric image.")
    if np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating):
        bad = ~np.isfinite(arr)
        if bad.any():
            ch = sorted({int(c) for c in np.nonzero(bad.reshape(arr.shape[0], -1).any(1))[0]})
            raise InputError(
                f"{what} contains {int(bad.sum())} NaN or infinite voxels (channel(s) {ch}). "
                "Fix or re-export the image (e.g. replace NaN by 0 outside the brain) before "
                "preprocessing."
            )
    return arr


def _as_mask(mask: Any, shape: tuple[int, ...], what: str = "mask") -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise InputError(
            f"{what} has shape {m.shape} but the images have spatial shape {tuple(shape)}; "
            "give a mask on the same grid."
        )
    if m.dtype != bool:
        if np.issubdtype(m.dtype, np.floating) and not np.all(np.isfinite(m)):
            raise InputError(f"{what} contains NaN or infinite values.")
        m = m != 0
    return m


# ------------------------------------------------------------------------- brain mask
def background_value(channel: np.ndarray) -> float:
    """The constant background value of a skull-stripped image (0 unless it was z-scored).

    Skull-stripped images have a constant background: 0 usually, but a negative constant
    when the intensities were z-scored after stripping (e.g. BRATS 2013-2015 derived data).
    The background is the most common value on the grid's border faces when it covers more
    than half of them; otherwise 0.

    Parameters
    ----------
    channel : (Z, Y, X) ndarray

    Returns
    -------
    float
    """
    c = np.asarray(channel)
    faces = np.concatenate(
        [c[0].ravel(), c[-1].ravel(), c[:, 0].ravel(), c[:, -1].ravel()]
        + [c[:, :, 0].ravel(), c[:, :, -1].ravel()]
    )
    values, counts = np.unique(faces, return_counts=True)
    k = int(np.argmax(counts))
    if counts[k] * 2 > faces.size:
        return float(values[k])
    return 0.0


def brain_mask(images: np.ndarray) -> np.ndarray:
    """Brain mask of skull-stripped images: not background in any modality, holes filled.

    Parameters
    ----------
    images : (C, Z, Y, X) or (Z, Y, X) ndarray
        Skull-stripped modalities with a constant background: 0, or the constant that a
        z-scoring after skull stripping left there (see :func:`background_value`).

    Returns
    -------
    (Z, Y, X) ndarray of bool
        Voxels that differ from their channel's background in any channel, with holes filled
        in every axial slice and in 3D, reduced to the largest 26-connected component.

    Raises
    ------
    InputError
        If the images are not 3D/4D, hold NaN/Inf, or are zero everywhere.
    """
    arr = _as_images(images)
    nz = np.zeros(arr.shape[1:], bool)
    for channel in arr:
        nz |= channel != background_value(channel)
    if not nz.any():
        raise InputError(
            "All images are zero everywhere, so no brain mask can be derived. Check that the "
            "files hold image data (not an empty export)."
        )
    # largest component first (so filling does not merge stray specks)
    lab, n = ndi.label(nz, structure=np.ones((3, 3, 3), bool))
    if n > 1:
        counts = np.bincount(lab.ravel())
        counts[0] = 0
        nz = lab == int(np.argmax(counts))
    # per-slice hole filling: in-plane connectivity only; pad z so that the first and last
    # slices are not treated as all-border
    st2 = np.zeros((3, 3, 3), bool)
    st2[1] = ndi.generate_binary_structure(2, 1)
    padded = np.pad(nz, ((1, 1), (0, 0), (0, 0)))
    filled = ndi.binary_fill_holes(padded, structure=st2)[1:-1]
    filled = ndi.binary_fill_holes(filled)
    return filled


def bounding_box(mask: np.ndarray, margin: int = 2) -> BBox:
    """Bounding box of a mask, grown by ``margin`` voxels and clipped to the grid.

    Parameters
    ----------
    mask : (Z, Y, X) ndarray of bool
    margin : int
        Voxels added on each side (>= 0).

    Returns
    -------
    tuple of 3 slice
        ``(slice_z, slice_y, slice_x)`` with explicit ``start`` and ``stop``.
    """
    m = np.asarray(mask)
    if m.ndim != 3:
        raise InputError(f"mask must be (Z, Y, X); got shape {m.shape}.")
    margin = _check_margin(margin)
    if not m.any():
        raise InputError("The mask is empty, so it has no bounding box. Check the brain mask.")
    out = []
    for ax in range(3):
        proj = np.any(m, axis=tuple(a for a in range(3) if a != ax))
        idx = np.nonzero(proj)[0]
        out.append(slice(max(0, int(idx[0]) - margin), min(m.shape[ax], int(idx[-1]) + 1 + margin)))
    return tuple(out)  # type: ignore[return-value]


def bounding_box_or_none(mask: np.ndarray) -> BBox | None:
    """:func:`bounding_box` with no margin, or None for an empty (or 0-size) mask."""
    m = np.asarray(mask)
    return bounding_box(m, margin=0) if m.size and m.any() else None


def _check_bbox(bbox: Any) -> BBox:
    if not isinstance(bbox, (tuple, list)) or len(bbox) != 3:
        raise InputError(f"bbox must be 3 slices (z, y, x); got {bbox!r}.")
    for s in bbox:
        if not isinstance(s, slice) or s.start is None or s.stop is None or s.step not in (None, 1):
            raise InputError(f"bbox must hold slices with explicit start and stop; got {bbox!r}.")
        if s.start < 0 or s.stop <= s.start:
            raise InputError(f"bbox slice {s} is empty or negative.")
    return tuple(bbox)


def crop(array: np.ndarray, bbox: BBox) -> np.ndarray:
    """Crop the last three axes of ``array`` to ``bbox`` (returns a copy).

    Parameters
    ----------
    array : (..., Z, Y, X) ndarray
    bbox : tuple of 3 slice

    Returns
    -------
    (..., z, y, x) ndarray
    """
    arr = np.asarray(array)
    bbox = _check_bbox(bbox)
    if arr.ndim < 3:
        raise InputError(f"crop needs an array with >= 3 dimensions; got shape {arr.shape}.")
    for s, n in zip(bbox, arr.shape[-3:]):
        if s.stop > n:
            raise InputError(f"bbox {bbox} does not fit the array's grid {arr.shape[-3:]}.")
    index = (Ellipsis, *bbox)
    return np.array(arr[index], copy=True)


def uncrop(
    array: np.ndarray, bbox: BBox, shape: tuple[int, int, int], fill: float = 0
) -> np.ndarray:
    """Place a cropped array back on the full grid (exact inverse of :func:`crop`).

    Parameters
    ----------
    array : (..., z, y, x) ndarray
        Data on the box (shape must equal the box size).
    bbox : tuple of 3 slice
        The box it was cropped with.
    shape : tuple of 3 int
        Full grid ``(Z, Y, X)``.
    fill : scalar
        Value outside the box.

    Returns
    -------
    (..., Z, Y, X) ndarray
        Same dtype as ``array``.
    """
    arr = np.asarray(array)
    bbox = _check_bbox(bbox)
    grid = tuple(int(s) for s in shape)
    if len(grid) != 3:
        raise InputError(f"shape must be (Z, Y, X); got {grid}.")
    box_shape = tuple(s.stop - s.start for s in bbox)
    if arr.ndim < 3 or arr.shape[-3:] != box_shape:
        raise InputError(
            f"uncrop: array shape {arr.shape} does not end with the box size {box_shape}."
        )
    if any(s.stop > n for s, n in zip(bbox, grid)):
        raise InputError(f"uncrop: bbox {bbox} does not fit in the full grid {grid}.")
    out = np.full(arr.shape[:-3] + grid, fill, dtype=arr.dtype)
    index = (Ellipsis, *bbox)
    out[index] = arr
    return out


# ---------------------------------------------------------------------- intensities
def clip_percentiles(
    images: np.ndarray, mask: np.ndarray, lower: float = 0.5, upper: float = 99.5
) -> np.ndarray:
    """Clip each channel to its ``[lower, upper]`` percentiles over brain voxels.

    Parameters
    ----------
    images : (C, Z, Y, X) ndarray
    mask : (Z, Y, X) ndarray of bool
        Brain voxels (percentiles are computed, and clipping applied, only there).
    lower, upper : float
        Percentiles in ``[0, 100]``, ``lower < upper``.

    Returns
    -------
    (C, Z, Y, X) ndarray of float32
        Voxels outside the mask keep their values.
    """
    arr = _as_images(images)
    m = _as_mask(mask, arr.shape[1:])
    if not (0 <= lower < upper <= 100):
        raise InputError(
            f"clip percentiles ({lower}, {upper}) are invalid; expected 0 <= lower < upper <= "
            "100, e.g. (0.5, 99.5)."
        )
    if not m.any():
        raise InputError("The brain mask is empty; cannot compute percentiles.")
    out = arr.astype(np.float32, copy=True)
    for c in range(out.shape[0]):
        vals = out[c][m]
        lo, hi = np.percentile(vals, [lower, upper])
        out[c][m] = np.clip(vals, lo, hi)
    return out


def zscore(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-channel z-score over brain voxels; 0 outside the mask.

    Parameters
    ----------
    images : (C, Z, Y, X) ndarray
    mask : (Z, Y, X) ndarray of bool

    Returns
    -------
    (C, Z, Y, X) ndarray of float32
        Inside the mask each channel has mean 0 and standard deviation 1.

    Raises
    ------
    InputError
        If a channel is constant over the mask (nothing to normalise) or the mask is empty.
    """
    arr = _as_images(images)
    m = _as_mask(mask, arr.shape[1:])
    if not m.any():
        raise InputError("The brain mask is empty; cannot z-score.")
    out = np.zeros(arr.shape, np.float32)
    for c in range(arr.shape[0]):
        vals = arr[c][m].astype(np.float64)
        mu, sd = float(vals.mean()), float(vals.std())
        if sd == 0 or sd <= 1e-6 * abs(mu):
            raise InputError(
                f"Channel {c} is constant ({mu:g}) over the brain mask, so it cannot be "
                "z-scored. The image is probably empty or corrupt; check the file or leave "
                "that modality out."
            )
        out[c][m] = ((vals - mu) / sd).astype(np.float32)
    return out


def n4_correct(
    image: np.ndarray,
    mask: np.ndarray,
    shrink: int = 4,
    iterations: tuple[int, ...] = (50, 50, 30),
    *,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """N4 bias-field correction (SimpleITK), fitted on a shrunk image.

    The bias field is estimated on the image shrunk by ``shrink`` along each axis (faster by
    ~shrink^3) and then evaluated at full resolution (``GetLogBiasFieldAsImage``), so the
    corrected image keeps every detail of the input.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        One modality.
    mask : (Z, Y, X) ndarray of bool
        Voxels used to fit the field (voxels <= 0 are left out).
    shrink : int
        Shrink factor (>= 1), reduced automatically on small images.
    iterations : tuple of int
        Maximum iterations per fitting level (one level per entry).
    spacing : tuple of 3 float
        Voxel size ``(z, y, x)`` in mm (the B-spline mesh is defined in mm).

    Returns
    -------
    (Z, Y, X) ndarray of float32
        ``image / bias``. The field is evaluated everywhere, including outside the mask.
    """
    import SimpleITK as sitk

    arr = _as_images(image, "image")
    if arr.shape[0] != 1:
        raise InputError(f"n4_correct takes one (Z, Y, X) image; got shape {np.shape(image)}.")
    arr = arr[0].astype(np.float32, copy=True)
    m = _as_mask(mask, arr.shape) & (arr > 0)
    if int(shrink) != shrink or shrink < 1:
        raise InputError(f"n4 shrink={shrink!r}; expected an integer >= 1.")
    its = [int(i) for i in np.atleast_1d(iterations)]
    if not its or any(i < 1 for i in its):
        raise InputError(f"n4 iterations={iterations!r}; expected positive integers.")
    if m.sum() < 64:
        raise InputError(
            f"N4 needs at least 64 positive voxels in the mask; got {int(m.sum())}. Check the "
            "brain mask, or run without --n4."
        )
    shrink = int(max(1, min(int(shrink), min(arr.shape) // 8 or 1)))
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    msk = sitk.GetImageFromArray(m.astype(np.uint8))
    msk.CopyInformation(img)
    small = sitk.Shrink(img, [shrink] * 3) if shrink > 1 else img
    small_m = sitk.Shrink(msk, [shrink] * 3) if shrink > 1 else msk
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(its)
    corrector.Execute(small, small_m)
    log_bias = corrector.GetLogBiasFieldAsImage(img)
    bias = np.exp(sitk.GetArrayFromImage(log_bias)).astype(np.float32)
    return (arr / bias).astype(np.float32)


# ---------------------------------------------------------------------------- pipeline
@dataclass
class Preprocessed:
    """Result of :func:`preprocess`.

    Attributes
    ----------
    images : (C, z, y, x) ndarray of float32
        Cropped, (N4-corrected,) clipped and z-scored channels; 0 outside the brain.
    mask : (z, y, x) ndarray of bool
        Brain mask on the crop.
    bbox : tuple of 3 slice
        The crop box on the full grid.
    full_shape : tuple of 3 int
        Full grid ``(Z, Y, X)``.
    params : dict
        Parameters used (margin, clip, n4, whether a mask was given).
    geometry : Geometry or None
        Canonical geometry of the crop (set by :func:`preprocess_case`).
    """

    images: np.ndarray
    mask: np.ndarray
    bbox: BBox
    full_shape: tuple[int, int, int]
    params: dict[str, Any] = field(default_factory=dict)
    geometry: Any = None

    @property
    def start(self) -> tuple[int, int, int]:
        """Index ``(z, y, x)`` of the crop's first voxel on the full grid."""
        return tuple(int(s.start) for s in self.bbox)  # type: ignore[return-value]

    def crop(self, array: np.ndarray) -> np.ndarray:
        """Crop a full-grid ``(..., Z, Y, X)`` array to this result's box."""
        arr = np.asarray(array)
        if arr.ndim < 3 or arr.shape[-3:] != tuple(self.full_shape):
            raise InputError(
                f"array shape {arr.shape} does not end with the full grid {self.full_shape}."
            )
        return crop(arr, self.bbox)

    def uncrop(self, array: np.ndarray, fill: float = 0) -> np.ndarray:
        """Put a crop-sized ``(..., z, y, x)`` array back on the full grid."""
        return uncrop(array, self.bbox, self.full_shape, fill=fill)

    def copy(self) -> Preprocessed:
        """Deep copy of the arrays (bbox, params and geometry are immutable or copied)."""
        return Preprocessed(
            self.images.copy(),
            self.mask.copy(),
            tuple(self.bbox),  # type: ignore[arg-type]
            tuple(self.full_shape),  # type: ignore[arg-type]
            dict(self.params),
            self.geometry,
        )


def _report(progress: Callable[[float, str], None] | None, fraction: float, msg: str) -> None:
    if progress is not None:
        progress(float(fraction), msg)


def _check_margin(margin: Any) -> int:
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
        raise InputError(f"margin={margin!r}; expected a whole number of voxels >= 0.")
    return int(margin)


def _check_spacing(spacing: Any) -> tuple[float, float, float]:
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        sp = ()
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise InputError(
            f"spacing={spacing!r}; expected three positive voxel sizes (z, y, x) in mm."
        )
    return sp


def _check_clip(clip: Any) -> tuple[float, float] | None:
    if clip is None:
        return None
    try:
        lo, hi = (float(v) for v in clip)
    except (TypeError, ValueError):
        raise InputError(
            f"clip={clip!r}; expected two percentiles (lower, upper) or None."
        ) from None
    if not (0 <= lo < hi <= 100):
        raise InputError(
            f"clip=({lo:g}, {hi:g}); expected 0 <= lower < upper <= 100, e.g. (0.5, 99.5)."
        )
    return lo, hi


def preprocess(
    images: np.ndarray,
    *,
    margin: int = 2,
    clip: tuple[float, float] | None = (0.5, 99.5),
    n4: bool = False,
    mask: np.ndarray | None = None,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    progress: Callable[[float, str], None] | None = None,
) -> Preprocessed:
    """Brain mask, crop, optional N4, percentile clip and z-score.

    Parameters
    ----------
    images : (C, Z, Y, X) ndarray
        Modalities on one grid (not modified).
    margin : int
        Voxels kept around the brain's bounding box.
    clip : (float, float) or None
        Percentiles (over brain voxels) to clip each channel to; None skips clipping.
    n4 : bool
        Run N4 bias-field correction on each channel (slow: seconds per channel).
    mask : (Z, Y, X) ndarray of bool, optional
        Brain mask to use instead of :func:`brain_mask`.
    spacing : tuple of 3 float
        Voxel size ``(z, y, x)`` in mm, used by N4 only.
    progress : callable, optional
        ``progress(fraction, message)`` called between steps (and per channel for N4).

    Returns
    -------
    Preprocessed
    """
    arr = _as_images(images)
    clip_t = _check_clip(clip)
    margin = _check_margin(margin)
    spacing = _check_spacing(spacing)
    m_full = brain_mask(arr) if mask is None else _as_mask(mask, arr.shape[1:])
    bbox = bounding_box(m_full, int(margin))
    work = crop(arr, bbox).astype(np.float32, copy=False)
    m = crop(m_full, bbox)
    n_ch = work.shape[0]
    _report(progress, 0.1, "brain mask and crop done")
    if n4:
        corrected = []
        for c in range(n_ch):
            _report(progress, 0.1 + 0.8 * c / n_ch, f"N4 bias correction, channel {c + 1}/{n_ch}")
            corrected.append(n4_correct(work[c], m, spacing=spacing))
        work = np.stack(corrected)
    _report(progress, 0.9, "clip and z-score")
    if clip_t is not None:
        work = clip_percentiles(work, m, *clip_t)
    out = zscore(work, m)
    _report(progress, 1.0, "preprocessing done")
    params = {
        "margin": int(margin),
        "clip": list(clip_t) if clip_t is not None else None,
        "n4": bool(n4),
        "mask": "given" if mask is not None else "auto",
    }
    _, z, y, x = arr.shape  # 4D: checked by _as_images
    return Preprocessed(out, m, bbox, (int(z), int(y), int(x)), params)


# ------------------------------------------------------------------------------- cache
_CACHE: OrderedDict[str, Preprocessed] = OrderedDict()
_LOCK = threading.Lock()


def clear_cache() -> None:
    """Empty the in-memory cache of :func:`preprocess_case`."""
    with _LOCK:
        _CACHE.clear()


def _cache_key(images: np.ndarray, extra: tuple, mask: np.ndarray | None) -> str:
    h = hashlib.blake2b(digest_size=20)
    arr = np.ascontiguousarray(images)
    h.update(repr((arr.shape, arr.dtype.str, extra)).encode())
    h.update(arr.data.cast("B"))
    if mask is not None:
        mm = np.ascontiguousarray(np.asarray(mask) != 0)
        h.update(repr(mm.shape).encode())
        h.update(mm.data.cast("B"))
    return h.hexdigest()


def preprocess_case(case: Any, **kw: Any) -> Preprocessed:
    """:func:`preprocess` a :class:`~napari_ssseg.core.case.Case`, with an in-memory cache.

    The cache (last :data:`CACHE_SIZE` results) is keyed by a hash of the image bytes, the
    modality names, the spacing and the parameters, so an identical call returns an equal
    result without recomputing and any change of data or parameter recomputes. The returned
    object is a copy: modifying it does not affect the cache.

    Parameters
    ----------
    case : Case
    **kw
        Keyword arguments of :func:`preprocess` (``margin``, ``clip``, ``n4``, ``mask``,
        ``progress``). ``spacing`` defaults to the case's canonical spacing. ``progress`` is
        not part of the cache key.

    Returns
    -------
    Preprocessed
        With :attr:`Preprocessed.geometry` = canonical geometry of the crop.
    """
    images = getattr(case, "images", None)
    if images is None:
        raise InputError(f"preprocess_case needs a Case; got {type(case).__name__}.")
    unknown = set(kw) - {"margin", "clip", "n4", "mask", "spacing", "progress"}
    if unknown:
        raise InputError(
            f"preprocess_case got unknown parameter(s) {sorted(unknown)}; valid: margin, clip, "
            "n4, mask, spacing, progress."
        )
    progress = kw.get("progress")
    geom = case.canonical_geometry
    margin = _check_margin(kw.get("margin", 2))
    clip_t = _check_clip(kw.get("clip", (0.5, 99.5)))
    n4 = bool(kw.get("n4", False))
    spacing = _check_spacing(kw.get("spacing", geom.spacing_zyx))
    mask = kw.get("mask")
    extra = (tuple(case.modalities), margin, clip_t, n4, spacing)
    key = _cache_key(images, extra, mask)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            _report(progress, 1.0, "preprocessing: cached result")
            return hit.copy()
    result = preprocess(
        images, margin=margin, clip=clip_t, n4=n4, mask=mask, spacing=spacing, progress=progress
    )
    result.geometry = geom.cropped(result.start)
    with _LOCK:
        _CACHE[key] = result.copy()
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return result


def cache_info() -> dict[str, int]:
    """Number of cached entries and the cache size (for tests and diagnostics)."""
    with _LOCK:
        return {"entries": len(_CACHE), "size": CACHE_SIZE}
