"""Grid comparison and resampling onto a reference grid (SimpleITK).

Two grids are the same when shape and geometry agree within :data:`GRID_TOLERANCE`; a grid
holding the same voxel centres in another axis order is reoriented exactly; otherwise the
array is resampled (with a warning) when the fields of view overlap. Part of
:mod:`napari_ssseg.io.readers`, which re-exports the public names.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from napari_ssseg.core.case import Geometry, Orientation
from napari_ssseg.errors import GeometryError, InputError

__all__ = ["GRID_TOLERANCE", "describe_grid", "same_grid"]

log = logging.getLogger("napari_ssseg.io.readers")  # the façade's name, as before the split

#: Maximum difference (mm, and unitless for direction cosines) for two grids to count as equal.
GRID_TOLERANCE = 1e-3


# ----------------------------------------------------------------------------- grids
def same_grid(
    g1: Geometry,
    shape1: Sequence[int],
    g2: Geometry,
    shape2: Sequence[int],
    tol: float = GRID_TOLERANCE,
) -> bool:
    """True if two grids have the same shape and geometry within ``tol`` (mm / cosine)."""
    return tuple(shape1[-3:]) == tuple(shape2[-3:]) and g1.allclose(g2, atol=tol)


def describe_grid(geometry: Geometry, shape_zyx: Sequence[int]) -> str:
    """Human-readable grid description used in warnings and errors."""
    return geometry.describe(tuple(shape_zyx[-3:]))


def _world_box(geometry: Geometry, shape_zyx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned LPS bounding box (min, max) of the grid's voxel extents."""
    shape = np.asarray(shape_zyx[-3:], dtype=float)
    corners = np.array(
        [
            [z, y, x]
            for z in (-0.5, shape[0] - 0.5)
            for y in (-0.5, shape[1] - 0.5)
            for x in (-0.5, shape[2] - 0.5)
        ]
    )
    world = geometry.index_to_world(corners)
    return world.min(axis=0), world.max(axis=0)


def _check_overlap(
    g_ref: Geometry,
    shape_ref: Sequence[int],
    g: Geometry,
    shape: Sequence[int],
    ref_name: str,
    name: str,
) -> None:
    lo1, hi1 = _world_box(g_ref, shape_ref)
    lo2, hi2 = _world_box(g, shape)
    overlap = np.minimum(hi1, hi2) - np.maximum(lo1, lo2)
    if np.any(overlap <= 0):
        raise GeometryError(
            f"{name} ({describe_grid(g, shape)}) does not overlap the reference {ref_name} "
            f"({describe_grid(g_ref, shape_ref)}): their fields of view are disjoint in world "
            "space, so they cannot be resampled onto one grid. Check that both files belong to "
            "the same scan session, or register them first."
        )


def _to_sitk3d(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(geometry.spacing)
    img.SetOrigin(geometry.origin)
    img.SetDirection(geometry.direction)
    return img


def _resample(
    array: np.ndarray,
    geometry: Geometry,
    ref_geometry: Geometry,
    ref_shape: Sequence[int],
    *,
    nearest: bool,
) -> np.ndarray:
    """Resample a file-order 3D array onto a reference grid (SimpleITK, linear / nearest)."""
    moving = _to_sitk3d(array, geometry)
    ref = sitk.Image([int(s) for s in ref_shape[::-1]], moving.GetPixelID())
    ref.SetSpacing(ref_geometry.spacing)
    ref.SetOrigin(ref_geometry.origin)
    ref.SetDirection(ref_geometry.direction)
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    out = sitk.Resample(moving, ref, sitk.Transform(), interp, 0.0, moving.GetPixelID())
    return sitk.GetArrayFromImage(out)


def _reorient_exactly(
    array: np.ndarray, geometry: Geometry, ref_geometry: Geometry, ref_shape: Sequence[int]
) -> np.ndarray | None:
    """``array`` on the reference grid if the two grids hold the same voxel centres in another
    axis order or direction (a transpose and flips, no interpolation); otherwise None."""
    try:
        o_mov = Orientation.from_geometry(geometry)
        o_ref = Orientation.from_geometry(ref_geometry)
    except InputError:
        return None
    shape_mov = tuple(int(array.shape[a]) for a in o_mov.axes)  # canonical shapes
    shape_ref = tuple(int(ref_shape[a]) for a in o_ref.axes)
    if shape_mov != shape_ref:
        return None
    g_mov = o_mov.canonical_geometry(geometry, array.shape)
    g_ref = o_ref.canonical_geometry(ref_geometry, tuple(ref_shape))
    if not g_mov.allclose(g_ref, atol=GRID_TOLERANCE):
        return None
    return o_ref.from_canonical(o_mov.to_canonical(array))


def _onto_reference(
    array: np.ndarray,
    geometry: Geometry,
    ref_geometry: Geometry,
    ref_shape: Sequence[int],
    *,
    name: str,
    ref_name: str,
    nearest: bool,
) -> np.ndarray:
    if same_grid(geometry, array.shape, ref_geometry, ref_shape):
        return array
    exact = _reorient_exactly(array, geometry, ref_geometry, ref_shape)
    if exact is not None:
        log.info("%s: same voxels as the reference grid in another axis order; reoriented", name)
        return exact
    _check_overlap(ref_geometry, ref_shape, geometry, array.shape, ref_name, name)
    warnings.warn(
        f"{name} is on a different grid ({describe_grid(geometry, array.shape)}) than the "
        f"reference {ref_name} ({describe_grid(ref_geometry, ref_shape)}); it was resampled "
        f"onto the reference grid ({'nearest-neighbour' if nearest else 'linear'} "
        "interpolation).",
        UserWarning,
        stacklevel=3,
    )
    return _resample(array, geometry, ref_geometry, ref_shape, nearest=nearest)
