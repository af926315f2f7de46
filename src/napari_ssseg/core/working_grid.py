"""An isotropic working grid for clinical scans, and the exact way back to the native grid.

Clinical series come with thick slices (e.g. 0.9 x 0.9 x 5.5 mm), each sequence on its own
grid. The model and the superpixels work on an isotropic *working grid* (1 mm by default)
that shares the reference sequence's direction (so an oblique reference stays oblique, no
rotation is invented) and covers the reference's whole field of view, centred on it. Every
label is mapped back onto the reference's **native** grid - the exact shape, spacing, origin
and direction of the reference file - by :func:`labels_to_native`.

All arrays here are in *file* order ``(Z, Y, X)`` = ITK index ``(k, j, i)`` of their own
:class:`~napari_ssseg.core.case.Geometry`; the caller converts to and from the canonical order
with :class:`~napari_ssseg.core.case.Orientation` (the working grid and the reference have the
same direction, hence the same orientation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from napari_ssseg.core.case import Geometry
from napari_ssseg.errors import GeometryError, InputError

__all__ = [
    "WorkingGrid",
    "make_working_grid",
    "to_sitk",
    "resample_to",
    "labels_to_native",
    "labels_from_native",
    "image_to_native",
]

#: Interpolated weight of an edit above which a native voxel counts as touched by it.
_TOUCH = 1e-4
#: Relative spacing tolerance under which a grid already *is* the requested working grid.
SPACING_TOLERANCE = 0.02


def to_sitk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A SimpleITK image of a file-order ``(Z, Y, X)`` array with ``geometry``."""
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise InputError(f"expected a 3D (Z, Y, X) array; got shape {arr.shape}.")
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    img.SetSpacing(geometry.spacing)
    img.SetOrigin(geometry.origin)
    img.SetDirection(geometry.direction)
    return img


def _reference_image(geometry: Geometry, shape_zyx: Sequence[int], pixel: int) -> sitk.Image:
    ref = sitk.Image([int(s) for s in tuple(shape_zyx)[::-1]], pixel)
    ref.SetSpacing(geometry.spacing)
    ref.SetOrigin(geometry.origin)
    ref.SetDirection(geometry.direction)
    return ref


@dataclass(frozen=True)
class WorkingGrid:
    """The working grid of a study and its reference (native) grid.

    Attributes
    ----------
    geometry : Geometry
        Working grid (file order), same direction as the reference.
    shape : tuple of 3 int
        Working grid array shape ``(Z, Y, X)`` (file order).
    reference_geometry : Geometry
        The reference sequence's native grid, exactly as in its file.
    reference_shape : tuple of 3 int
        Native array shape ``(Z, Y, X)`` (file order).
    """

    geometry: Geometry
    shape: tuple[int, int, int]
    reference_geometry: Geometry
    reference_shape: tuple[int, int, int]

    @property
    def is_native(self) -> bool:
        """True if the working grid is the reference grid itself (nothing is resampled)."""
        return self.shape == self.reference_shape and self.geometry.allclose(
            self.reference_geometry, atol=1e-6
        )

    def to_dict(self) -> dict:
        """JSON-friendly description (also the cache key part of the grid)."""
        return {
            "spacing": list(self.geometry.spacing),
            "origin": list(self.geometry.origin),
            "direction": list(self.geometry.direction),
            "shape_zyx": list(self.shape),
            "reference_spacing": list(self.reference_geometry.spacing),
            "reference_origin": list(self.reference_geometry.origin),
            "reference_direction": list(self.reference_geometry.direction),
            "reference_shape_zyx": list(self.reference_shape),
        }

    @classmethod
    def from_dict(cls, d: dict) -> WorkingGrid:
        """Inverse of :meth:`to_dict`."""
        return cls(
            Geometry(tuple(d["spacing"]), tuple(d["origin"]), tuple(d["direction"])),
            tuple(int(s) for s in d["shape_zyx"]),  # type: ignore[arg-type]
            Geometry(
                tuple(d["reference_spacing"]),
                tuple(d["reference_origin"]),
                tuple(d["reference_direction"]),
            ),
            tuple(int(s) for s in d["reference_shape_zyx"]),  # type: ignore[arg-type]
        )


def make_working_grid(
    reference_geometry: Geometry,
    reference_shape: Sequence[int],
    spacing: float | None = 1.0,
) -> WorkingGrid:
    """Isotropic grid covering the reference's field of view, with the reference's direction.

    Parameters
    ----------
    reference_geometry : Geometry
        Native grid of the reference sequence.
    reference_shape : 3 ints
        Its file-order array shape ``(Z, Y, X)``.
    spacing : float or None
        Working voxel size in mm (> 0). ``None``: the reference grid itself. A reference whose
        voxels are already this size (within 2 %) is kept as it is, so an already isotropic
        case (BraTS, 1 mm) is never resampled.

    Returns
    -------
    WorkingGrid
        Voxel centres are symmetric about the reference's field-of-view centre; the working
        field of view is the reference's, rounded up to whole working voxels.
    """
    shape = tuple(int(s) for s in reference_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"reference_shape must be 3 positive sizes (Z, Y, X); got {shape}.")
    if spacing is None:
        return WorkingGrid(reference_geometry, shape, reference_geometry, shape)
    w = float(spacing)
    if not math.isfinite(w) or w <= 0:
        raise InputError(
            f"working grid spacing {spacing!r} mm must be a positive number, e.g. 1 (mm)."
        )
    ref_sp = np.asarray(reference_geometry.spacing, float)
    if np.all(np.abs(ref_sp - w) <= SPACING_TOLERANCE * w):
        return WorkingGrid(reference_geometry, shape, reference_geometry, shape)
    n_ijk = np.asarray(shape[::-1], float)
    length = n_ijk * ref_sp  # field of view per index axis (voxel edges to voxel edges)
    m_ijk = np.maximum(1, np.ceil(length / w - 1e-6)).astype(int)
    centre_local = (n_ijk - 1) * ref_sp / 2.0  # FOV centre in the reference's axis frame
    start_local = centre_local - (m_ijk - 1) * w / 2.0
    d = reference_geometry.direction_matrix
    origin = np.asarray(reference_geometry.origin) + d @ start_local
    geom = Geometry((w, w, w), tuple(origin), reference_geometry.direction)
    return WorkingGrid(geom, tuple(int(m) for m in m_ijk[::-1]), reference_geometry, shape)  # type: ignore[arg-type]


def resample_to(
    image: sitk.Image | np.ndarray,
    geometry: Geometry | None,
    target_geometry: Geometry,
    target_shape: Sequence[int],
    *,
    transform: sitk.Transform | None = None,
    interpolation: str = "linear",
    default: float = 0.0,
) -> np.ndarray:
    """Resample an image onto a target grid (optionally through a rigid transform).

    Parameters
    ----------
    image : SimpleITK image or (Z, Y, X) ndarray
        The moving image (an array needs ``geometry``).
    geometry : Geometry or None
        Grid of ``image`` when it is an array.
    target_geometry, target_shape
        Target grid and its file-order shape ``(Z, Y, X)``.
    transform : SimpleITK transform, optional
        Maps target (fixed) world points to moving world points, as returned by
        :func:`~napari_ssseg.core.registration.register_rigid`. Default: identity (world
        coordinates are trusted).
    interpolation : {"linear", "nearest", "bspline"}
    default : float
        Value outside the moving image.

    Returns
    -------
    (Z, Y, X) ndarray of float32 (``"nearest"``: the input dtype)
    """
    interp = {
        "linear": sitk.sitkLinear,
        "nearest": sitk.sitkNearestNeighbor,
        "bspline": sitk.sitkBSpline,
    }.get(interpolation)
    if interp is None:
        raise InputError(
            f"interpolation {interpolation!r} is not one of 'linear', 'nearest', 'bspline'."
        )
    if isinstance(image, np.ndarray):
        if geometry is None:
            raise InputError("resample_to: an array image needs its geometry.")
        arr = image if interpolation == "nearest" else image.astype(np.float32, copy=False)
        img = to_sitk(arr, geometry)
    elif interpolation != "nearest":
        img = sitk.Cast(image, sitk.sitkFloat32)
    else:
        img = image
    ref = _reference_image(target_geometry, target_shape, img.GetPixelID())
    tx = transform if transform is not None else sitk.Transform()
    out = sitk.Resample(img, ref, tx, interp, float(default), img.GetPixelID())
    return sitk.GetArrayFromImage(out)


def _check_on(array: np.ndarray, shape: Sequence[int], what: str, grid: str) -> np.ndarray:
    arr = np.asarray(array)
    if arr.shape[-3:] != tuple(shape):
        raise GeometryError(
            f"{what} has shape {arr.shape[-3:]} but the {grid} grid has shape {tuple(shape)} "
            "(file order Z, Y, X); pass an array on that grid."
        )
    return arr


def labels_to_native(
    labels: np.ndarray, grid: WorkingGrid, base: np.ndarray | None = None
) -> np.ndarray:
    """Map a label image from the working grid onto the reference's native grid.

    Each native voxel gets the label covering most of its volume: every label's indicator is
    averaged over the native voxel's footprint (a box of ``native / working`` voxels per
    axis - the two grids share their direction, so the footprint is axis-aligned) and
    sampled at the native voxel's centre; the largest wins (ties: the lower label).
    Thin-slice labels therefore become thick-slice labels by majority, not by whichever
    working slice happens to sit at the native slice's centre.

    Going native -> working -> native loses detail at label boundaries when the working
    grid is coarser than the native one along an axis (e.g. 0.9 mm native, 1 mm working:
    one native voxel in ten holds no working voxel centre). With ``base``, the native labels
    ``labels`` was made from (:func:`labels_from_native`), only native voxels near a change
    are re-mapped: a voxel whose footprint (one working voxel wider on every side) holds no
    working voxel that differs from ``labels_from_native(base)`` keeps ``base``'s value, so
    an unedited label comes back exactly and an edit changes only the voxels around it.

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of int
        File-order labels on ``grid.geometry``.
    grid : WorkingGrid
    base : (Z, Y, X) ndarray of int, optional
        File-order native labels (``grid.reference_shape``) that ``labels`` started from.

    Returns
    -------
    (Z, Y, X) ndarray of uint8
        File-order labels on ``grid.reference_geometry``, shape ``grid.reference_shape``.
    """
    lab = _check_on(labels, grid.shape, "labels", "working")
    if grid.is_native:
        return lab.astype(np.uint8, copy=True)
    if lab.size and (lab.min() < 0 or lab.max() > 255):
        bad = np.unique(lab[(lab < 0) | (lab > 255)])
        raise InputError(f"labels hold values outside 0..255: {bad.tolist()[:10]}.")
    ratio = np.asarray(grid.reference_geometry.spacing) / np.asarray(grid.geometry.spacing)
    size_zyx = [max(1, int(round(r))) for r in ratio[::-1]]
    if base is not None:
        nat = _check_on(base, grid.reference_shape, "base labels", "reference (native)")
        changed = lab != labels_from_native(nat, grid)
        out = nat.astype(np.uint8, copy=True)
    else:
        changed = lab != 0
        out = np.zeros(grid.reference_shape, np.uint8)
    boxes = _write_back_boxes(changed, grid, size_zyx)
    if boxes is None:  # nothing labelled (or nothing edited): no native voxel changes
        return out
    crop, native_box = boxes
    sub = lab[crop]
    src = _sub_geometry(grid.geometry, crop)
    dst = _sub_geometry(grid.reference_geometry, native_box)
    dst_shape = tuple(s.stop - s.start for s in native_box)
    new = _majority_to_native(sub, np.unique(sub), src, dst, dst_shape, size_zyx)
    if base is not None:  # only native voxels near an edit are re-mapped
        near = ndi.maximum_filter(changed[crop].astype(np.float32), size=[s + 2 for s in size_zyx])
        # (> a tiny weight, not > 0: a sample point on a voxel centre must not flip with the
        # last bit of the box's origin)
        touched = resample_to(near, src, dst, dst_shape) > _TOUCH
        new = np.where(touched, new, out[native_box])
    out[native_box] = new
    return out


def _sub_geometry(geometry: Geometry, box: tuple[slice, ...]) -> Geometry:
    """The grid of ``array[box]`` (file-order slices) of an array on ``geometry``."""
    start_ijk = np.asarray([s.start for s in box][::-1], float)
    origin = np.asarray(geometry.origin) + geometry.direction_matrix @ (
        start_ijk * np.asarray(geometry.spacing)
    )
    org = (float(origin[0]), float(origin[1]), float(origin[2]))
    return Geometry(geometry.spacing, org, geometry.direction)


def _write_back_boxes(
    changed: np.ndarray, grid: WorkingGrid, size_zyx: Sequence[int]
) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """Working-grid crop and native box that :func:`labels_to_native` needs to compute.

    A native voxel whose centre is more than ``margin`` working voxels from every changed
    voxel sees only unchanged voxels in its footprint (half a footprint) and in the linear
    interpolation (one voxel) and in the ``base`` dilation (one footprint + 1): its value is
    known without computing (background, or ``base``'s). The working crop adds another
    ``margin`` so that every computed native voxel's footprint lies inside it. The result is
    the full-volume computation's, voxel for voxel (``tests/core/test_working_grid.py``).
    """
    idx = np.nonzero(changed.any(axis=(1, 2)))[0]
    if idx.size == 0:
        return None
    iy = np.nonzero(changed.any(axis=(0, 2)))[0]
    ix = np.nonzero(changed.any(axis=(0, 1)))[0]
    lo = np.array([idx[0], iy[0], ix[0]])
    hi = np.array([idx[-1], iy[-1], ix[-1]])
    margin = int(max(size_zyx)) + 3
    shape = np.asarray(grid.shape)
    crop = tuple(
        slice(int(max(0, a - 2 * margin)), int(min(n, b + 2 * margin + 1)))
        for a, b, n in zip(lo, hi, shape, strict=True)
    )
    # the corners of the changed box + margin, in the native grid's continuous index
    w, r = grid.geometry, grid.reference_geometry
    a, b = lo - margin, hi + margin
    corners_zyx = np.array(
        [[z, y, x] for z in (a[0], b[0]) for y in (a[1], b[1]) for x in (a[2], b[2])], float
    )
    ijk = corners_zyx[:, ::-1] * np.asarray(w.spacing)
    world = np.asarray(w.origin) + ijk @ w.direction_matrix.T
    nat = np.linalg.solve(r.direction_matrix, (world - np.asarray(r.origin)).T).T
    nat_zyx = (nat / np.asarray(r.spacing))[:, ::-1]
    rshape = np.asarray(grid.reference_shape)
    nlo = np.clip(np.floor(nat_zyx.min(axis=0)).astype(int) - 1, 0, rshape)
    nhi = np.clip(np.ceil(nat_zyx.max(axis=0)).astype(int) + 2, 0, rshape)
    if np.any(nhi <= nlo):
        return None
    native_box = tuple(slice(int(a), int(b)) for a, b in zip(nlo, nhi, strict=True))
    return crop, native_box


def _majority_to_native(
    lab: np.ndarray,
    values: np.ndarray,
    src: Geometry,
    dst: Geometry,
    dst_shape: Sequence[int],
    size_zyx: Sequence[int],
) -> np.ndarray:
    """:func:`labels_to_native`'s majority vote over each native voxel's footprint.

    ``lab`` (on ``src``) is voted onto the grid ``dst`` of shape ``dst_shape``.
    """
    best = np.full(tuple(dst_shape), -1.0, np.float32)
    out = np.zeros(tuple(dst_shape), np.uint8)
    for v in values:  # background (0) votes too
        ind = (lab == v).astype(np.float32)
        if any(s > 1 for s in size_zyx):
            ind = ndi.uniform_filter(ind, size=list(size_zyx), mode="nearest")
        frac = resample_to(ind, src, dst, dst_shape)
        win = frac > best
        out[win] = int(v)
        best[win] = frac[win]
    return out


def labels_from_native(labels: np.ndarray, grid: WorkingGrid) -> np.ndarray:
    """Map a native-grid label image (file order) onto the working grid (nearest neighbour).

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of int
        On ``grid.reference_geometry``.
    grid : WorkingGrid

    Returns
    -------
    (Z, Y, X) ndarray of uint8 on ``grid.geometry``.
    """
    lab = _check_on(labels, grid.reference_shape, "labels", "reference (native)")
    if grid.is_native:
        return lab.astype(np.uint8, copy=True)
    out = resample_to(
        lab.astype(np.uint8),
        grid.reference_geometry,
        grid.geometry,
        grid.shape,
        interpolation="nearest",
    )
    return out.astype(np.uint8, copy=False)


def image_to_native(image: np.ndarray, grid: WorkingGrid) -> np.ndarray:
    """Map a float image (``(Z, Y, X)`` or ``(C, Z, Y, X)``, file order) to the native grid.

    Linear interpolation after averaging over the native voxel's footprint (as for labels),
    so probabilities stay probabilities.
    """
    arr = _check_on(image, grid.shape, "image", "working")
    if grid.is_native:
        return np.array(arr, np.float32, copy=True)
    ratio = np.asarray(grid.reference_geometry.spacing) / np.asarray(grid.geometry.spacing)
    size_zyx = [max(1, int(round(r))) for r in ratio[::-1]]
    chans = arr[None] if arr.ndim == 3 else arr
    out = np.empty((chans.shape[0], *grid.reference_shape), np.float32)
    for c in range(chans.shape[0]):
        x = chans[c].astype(np.float32, copy=False)
        if any(s > 1 for s in size_zyx):
            x = ndi.uniform_filter(x, size=size_zyx, mode="nearest")
        out[c] = resample_to(x, grid.geometry, grid.reference_geometry, grid.reference_shape)
    return out[0] if arr.ndim == 3 else out
