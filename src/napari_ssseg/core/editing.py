"""Segment-Editor style label edits: fill between slices, islands, volumes, masks, click prompts.

The computations behind the napari "Edit tools" panel (:mod:`napari_ssseg._napari.widgets.
edit`). Every function takes plain arrays, never modifies its inputs and returns what to write
(a boolean mask of voxels to change, or values) so that the caller can write it as one
undoable step and record the changed voxels' provenance.

* :func:`fill_between_slices` -- a label painted on a few slices along one axis becomes a 3D
  region: between two consecutive annotated slices the label is interpolated by linear
  interpolation of the slices' signed distance maps (in millimetres), the method of 3D
  Slicer's "Fill between slices" family of tools (morphological contour interpolation).
* :func:`threshold_mask` -- the voxels whose intensity lies in ``[low, high]``
  ("paint only where FLAIR is within [a, b]").
* :func:`brush_size_for_mm` / :func:`brush_diameter_mm` -- napari's brush size (an integer
  in voxels of the finest painted axis) for a diameter in millimetres, and back.
* :func:`island_mask` -- connected components to remove: all but the largest, or those below
  a volume in ml, per class or for the whole tumour.
* :func:`label_volumes_ml` -- per-class and per-region volumes in ml from one ``np.bincount``.
* :func:`click_region` / :func:`click_change` -- a click prompt: the superpixel under the
  click grown with Thompson et al.'s Algorithm 1 (:class:`~napari_ssseg.core.refine.
  RefinementSession`), then added to or removed from a class.

numpy / scipy only (part of :mod:`napari_ssseg.core`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from napari_ssseg.core.case import INTERNAL_CLASSES, REGIONS
from napari_ssseg.errors import InputError, check_choice

if TYPE_CHECKING:  # pragma: no cover
    from napari_ssseg.core.refine import RefinementSession

__all__ = [
    "minor_components_mask",
    "ISLAND_MODES",
    "ISLAND_TARGETS",
    "annotated_slices",
    "brush_diameter_mm",
    "brush_size_for_mm",
    "click_change",
    "click_region",
    "fill_between_slices",
    "island_mask",
    "label_volumes_ml",
    "region_for_class",
    "threshold_mask",
    "voxel_volume_ml",
]

#: How :func:`island_mask` chooses the components to remove.
ISLAND_MODES = ("keep largest", "remove small")
#: What :func:`island_mask` splits into components: each tumour class on its own, one class,
#: or the whole tumour (WT, all classes together: a removed component loses all its classes).
ISLAND_TARGETS = ("each class", "NCR", "ED", "ET", "WT")


# --------------------------------------------------------------------------- validation
def _labels3d(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise InputError(f"{name} must be a (Z, Y, X) array; got shape {arr.shape}.")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise InputError(
            f"{name} must hold integer label values; got dtype {arr.dtype}. Convert it with "
            "astype(np.uint8)."
        )
    return arr


def _spacing3(spacing: Sequence[float]) -> tuple[float, float, float]:
    sp = tuple(abs(float(s)) for s in np.ravel(spacing))
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise InputError(
            f"spacing must be three positive voxel sizes in mm (z, y, x); got {spacing!r}."
        )
    return sp


def _axis(axis: int) -> int:
    if int(axis) not in (0, 1, 2, -1, -2, -3):
        raise InputError(f"axis={axis!r} is not an axis of a 3D volume; use 0, 1 or 2.")
    return int(axis) % 3


def _label_value(label: int, name: str = "label") -> int:
    value = int(label)
    if value not in INTERNAL_CLASSES or value == 0:
        raise InputError(
            f"{name}={label!r} is not a tumour class; use one of "
            + ", ".join(f"{k} ({v})" for k, v in INTERNAL_CLASSES.items() if k)
            + "."
        )
    return value


# --------------------------------------------------------------------------- fill between
def annotated_slices(labels: np.ndarray, label: int, axis: int = 0) -> np.ndarray:
    """Indices of the slices along ``axis`` that hold at least one voxel of ``label``.

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of int
    label : int
        Class value.
    axis : int
        Slicing axis (0, 1 or 2).

    Returns
    -------
    (K,) ndarray of int
        Sorted slice indices.
    """
    labels = _labels3d(labels)
    axis = _axis(axis)
    other = tuple(a for a in range(3) if a != axis)
    return np.flatnonzero(np.any(labels == int(label), axis=other))


def _signed_distance(mask: np.ndarray, sampling: tuple[float, float]) -> np.ndarray:
    """Signed distance (mm) of a 2D mask: negative inside, positive outside.

    Inside voxels get minus their distance to the nearest outside voxel, outside voxels their
    distance to the nearest inside voxel (so the zero level lies between the two).
    """
    outside = ndimage.distance_transform_edt(~mask, sampling=sampling)
    inside = ndimage.distance_transform_edt(mask, sampling=sampling)
    return np.where(mask, -inside, outside)


def _bbox2(mask: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([[rows[0], rows[-1] + 1], [cols[0], cols[-1] + 1]])


def _interpolate_pair(
    target: np.ndarray,
    m0: np.ndarray,
    m1: np.ndarray,
    k0: int,
    k1: int,
    sampling: tuple[float, float],
) -> None:
    """Fill ``target[k0 + 1 : k1]`` by shape-based interpolation of ``m0`` and ``m1``.

    Each shape is moved (whole voxels) to the linearly interpolated centroid, then the two
    signed distance maps are blended. Plain blending of the unmoved maps makes a region
    that shifts sideways shrink halfway (or vanish when the two shapes do not overlap); ITK's
    morphological contour interpolator aligns such shapes in the same way. All work is done
    on a box around both shapes, large enough to hold them at every intermediate centroid,
    with a background frame (which keeps the cropped distances exact).
    """
    b0, b1 = _bbox2(m0), _bbox2(m1)
    half = np.maximum(b0[:, 1] - b0[:, 0], b1[:, 1] - b1[:, 0]) // 2 + 2
    lo = np.maximum(np.minimum(b0[:, 0], b1[:, 0]) - half, 0)
    hi = np.minimum(np.maximum(b0[:, 1], b1[:, 1]) + half, m0.shape)
    box = (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])))
    m0, m1 = m0[box], m1[box]
    c0 = np.array(ndimage.center_of_mass(m0))
    c1 = np.array(ndimage.center_of_mass(m1))
    for t in range(k0 + 1, k1):
        w = (t - k0) / (k1 - k0)
        c = (1.0 - w) * c0 + w * c1
        s0 = ndimage.shift(m0, np.round(c - c0), order=0, cval=0, prefilter=False)
        s1 = ndimage.shift(m1, np.round(c - c1), order=0, cval=0, prefilter=False)
        if not (s0.any() and s1.any()):
            continue
        d = (1.0 - w) * _signed_distance(s0, sampling) + w * _signed_distance(s1, sampling)
        target[t][box] = d <= 0.0


def fill_between_slices(
    labels: np.ndarray,
    label: int,
    axis: int = 0,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    fill_holes: bool = True,
    overwrite: bool = False,
) -> np.ndarray:
    """Voxels that fill the gaps between the slices where ``label`` was painted.

    The slices along ``axis`` holding ``label`` are the *annotated* slices (contours or filled
    regions, e.g. painted every 3-5 slices). With ``fill_holes`` each annotated slice's region
    is first hole-filled (a closed contour becomes a disc). Between two consecutive annotated
    slices ``k0 < k1`` the slice ``t`` (``w = (t - k0) / (k1 - k0)``) gets a shape-based
    interpolation: both regions are moved to the interpolated centroid ``(1 - w) c0 + w c1``
    and the region where their blended signed distance ``(1 - w) d0 + w d1`` (mm, with the
    in-plane spacing) is ``<= 0`` is taken. The shape morphs from one slice to the next,
    following a region that shifts sideways. Nothing is added before the first or after the
    last annotated slice. Several blobs on one slice are interpolated as one shape (their
    joint centroid): annotate such slices more densely.

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of int
        Current labels (not modified).
    label : int
        The class to interpolate (1 NCR, 2 ED, 3 ET).
    axis : int
        Slicing axis: the axis the annotated slices are perpendicular to.
    spacing : 3 floats
        Voxel size ``(z, y, x)`` in mm (only the two in-plane values matter).
    fill_holes : bool
        Fill the holes of the annotated slices' regions (so contours can be drawn) and
        return those voxels too.
    overwrite : bool
        ``False`` (default): only background voxels are filled, other classes are kept.
        ``True``: voxels of other classes inside the interpolated region change too.

    Returns
    -------
    (Z, Y, X) ndarray of bool
        Voxels to set to ``label`` (none of them already holds ``label``).

    Raises
    ------
    InputError
        Fewer than two annotated slices (nothing to interpolate), or bad arguments.
    """
    labels = _labels3d(labels)
    label = _label_value(label)
    axis = _axis(axis)
    sp = _spacing3(spacing)
    s0, s1 = (s for a, s in enumerate(sp) if a != axis)
    sampling = (s0, s1)
    lab = np.moveaxis(labels, axis, 0)  # view: slices along axis first
    present = lab == label
    slices = np.flatnonzero(present.reshape(present.shape[0], -1).any(axis=1))
    if slices.size < 2:
        raise InputError(
            f"fill between slices needs {INTERNAL_CLASSES[label]} painted on at least two "
            f"slices along axis {axis}; found {slices.size}. Paint the class on a few slices "
            "(e.g. every 3-5 slices) of the current view, then fill."
        )
    target = np.zeros(lab.shape, bool)
    regions = {}
    for k in slices:
        reg = present[k]
        if fill_holes:
            reg = ndimage.binary_fill_holes(reg)
        regions[int(k)] = reg
        if fill_holes:
            target[k] = reg & ~present[k]
    for k0, k1 in zip(slices[:-1], slices[1:]):
        k0, k1 = int(k0), int(k1)
        if k1 - k0 >= 2:
            _interpolate_pair(target, regions[k0], regions[k1], k0, k1, sampling)
    target &= ~present
    if not overwrite:
        target &= lab == 0
    return np.moveaxis(target, 0, axis).copy()


# --------------------------------------------------------------------------- masks, brush
def threshold_mask(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Voxels of ``image`` with ``low <= value <= high`` (NaN never qualifies).

    Parameters
    ----------
    image : ndarray
        Intensities (any shape).
    low, high : float
        Inclusive range; ``low <= high``.

    Returns
    -------
    ndarray of bool, shape of ``image``
    """
    low, high = float(low), float(high)
    if not (np.isfinite(low) and np.isfinite(high)) or low > high:
        raise InputError(
            f"threshold range [{low}, {high}] is invalid: it needs finite bounds with "
            "low <= high. Move the range slider's handles apart."
        )
    image = np.asarray(image)
    return (image >= low) & (image <= high)


def _painted_scale(scale: Sequence[float], dims: Iterable[int] | None) -> float:
    sc = [abs(float(s)) for s in np.ravel(scale)]
    if not sc or not all(np.isfinite(s) and s > 0 for s in sc):
        raise InputError(f"layer scale must be positive voxel sizes in mm; got {scale!r}.")
    chosen = [sc[d] for d in dims] if dims is not None else sc
    if not chosen:
        raise InputError("no painted dimension was given to convert the brush size.")
    return min(chosen)


def brush_size_for_mm(
    diameter_mm: float, scale: Sequence[float], dims: Iterable[int] | None = None
) -> int:
    """napari brush size giving a brush of about ``diameter_mm`` across.

    napari's Labels brush paints, on the painted dimensions, the voxels within
    ``floor(brush_size / 2) + 0.5`` voxels of the finest painted axis from the centre (an odd
    number ``2 * floor(brush_size / 2) + 1`` of finest voxels across; coarser axes get
    proportionally fewer voxels). The returned size is odd (even sizes paint like the next
    odd one) and at least 1.

    Parameters
    ----------
    diameter_mm : float
        Wanted brush diameter in mm (> 0).
    scale : sequence of float
        The layer's scale (mm per voxel, one per data axis).
    dims : iterable of int, optional
        The painted data axes (the displayed ones for a 2D brush, all for a 3D sphere);
        default all axes.

    Returns
    -------
    int
    """
    d = float(diameter_mm)
    if not np.isfinite(d) or d <= 0:
        raise InputError(f"brush diameter must be a positive number of mm; got {diameter_mm!r}.")
    finest = _painted_scale(scale, dims)
    voxels = d / finest
    return int(max(1, 2 * int(np.floor(max(voxels - 1.0, 0.0) / 2.0 + 0.5)) + 1))


def brush_diameter_mm(
    brush_size: int, scale: Sequence[float], dims: Iterable[int] | None = None
) -> float:
    """Diameter in mm of napari's brush of ``brush_size`` (along the finest painted axis)."""
    finest = _painted_scale(scale, dims)
    return float((2 * (int(brush_size) // 2) + 1) * finest)


# --------------------------------------------------------------------------- islands
def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in (6, 18, 26):
        raise InputError(f"connectivity={connectivity!r} must be 6, 18 or 26 (neighbours).")
    rank = {6: 1, 18: 2, 26: 3}[connectivity]
    return ndimage.generate_binary_structure(3, rank)


def voxel_volume_ml(spacing: Sequence[float]) -> float:
    """Volume of one voxel in ml (1 ml = 1000 mm^3)."""
    sp = _spacing3(spacing)
    return float(sp[0] * sp[1] * sp[2]) / 1000.0


def island_mask(
    labels: np.ndarray,
    mode: str = "keep largest",
    target: str = "each class",
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    min_volume_ml: float = 0.1,
    connectivity: int = 26,
) -> np.ndarray:
    """Voxels of the islands (connected components) to remove.

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of int
        Current labels (not modified).
    mode : {"keep largest", "remove small"}
        Remove every component but the largest, or every component smaller than
        ``min_volume_ml``.
    target : {"each class", "NCR", "ED", "ET", "WT"}
        Components of each tumour class separately, of one class, or of the whole tumour
        (all classes together; a removed component is cleared whatever its classes).
    spacing : 3 floats
        Voxel size in mm (for the volumes).
    min_volume_ml : float
        Volume threshold of ``"remove small"`` (components with a smaller volume go).
    connectivity : {6, 18, 26}
        Neighbours that connect voxels (26: faces, edges and corners).

    Returns
    -------
    (Z, Y, X) ndarray of bool
        Voxels to set to background (0).
    """
    labels = _labels3d(labels)
    mode = check_choice("mode", mode, ISLAND_MODES)
    target = check_choice("target", target, ISLAND_TARGETS)
    structure = _structure(int(connectivity))
    vml = voxel_volume_ml(spacing)
    min_ml = float(min_volume_ml)
    if mode == "remove small" and (not np.isfinite(min_ml) or min_ml < 0):
        raise InputError(f"min_volume_ml={min_volume_ml!r} must be a volume >= 0 in ml.")
    if target == "WT":
        groups = [labels > 0]
    elif target == "each class":
        groups = [labels == v for v in INTERNAL_CLASSES if v]
    else:
        value = {n: v for v, n in INTERNAL_CLASSES.items()}[target]
        groups = [labels == value]
    out = np.zeros(labels.shape, bool)
    for group in groups:
        if not group.any():
            continue
        comp, n = ndimage.label(group, structure=structure)
        if n < 1:
            continue
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        sizes[0] = 0
        if mode == "keep largest":
            drop = np.ones(n + 1, bool)
            drop[0] = False
            drop[int(np.argmax(sizes))] = False
        else:
            drop = sizes * vml < min_ml
            drop[0] = False
        out |= drop[comp]
    return out


def minor_components_mask(
    labels: np.ndarray, min_fraction: float, *, connectivity: int = 26
) -> np.ndarray:
    """Voxels of the whole-tumour components smaller than ``min_fraction`` x the largest.

    A proposal's post-processing (the default model's, tuned on held-out real cases, see
    docs/models.md): remote false positives (e.g. FLAIR-bright cortex called oedema) are
    usually much smaller than the tumour; a second lesion at least ``min_fraction`` of the
    largest one's size is kept.

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of int
    min_fraction : float
        In [0, 1]; 0 removes nothing, 1 keeps only the largest component (and ties).
    connectivity : {6, 18, 26}

    Returns
    -------
    (Z, Y, X) ndarray of bool
        Voxels to set to background.
    """
    labels = _labels3d(labels)
    f = float(min_fraction)
    if not (np.isfinite(f) and 0.0 <= f <= 1.0):
        raise InputError(f"min_fraction={min_fraction!r}; expected a fraction in [0, 1].")
    out = np.zeros(labels.shape, bool)
    tumour = labels > 0
    if f == 0.0 or not tumour.any():
        return out
    comp, n = ndimage.label(tumour, structure=_structure(int(connectivity)))
    if n < 2:
        return out
    sizes = np.bincount(comp.ravel(), minlength=n + 1)
    sizes[0] = 0
    drop = sizes < f * sizes.max()
    drop[0] = False
    return drop[comp]


# --------------------------------------------------------------------------- volumes
def label_volumes_ml(labels: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Volume in ml of each tumour class and region.

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of int
        Internal labels (0 bg, 1 NCR, 2 ED, 3 ET; other values are ignored).
    spacing : 3 floats
        Voxel size in mm.

    Returns
    -------
    dict of str to float
        ``"NCR"``, ``"ED"``, ``"ET"`` (classes) and ``"WT"``, ``"TC"`` (regions; the ET
        region is the ET class).
    """
    labels = _labels3d(labels)
    vml = voxel_volume_ml(spacing)
    flat = labels.ravel()
    if flat.dtype != np.uint8:
        flat = np.clip(flat, 0, 255).astype(np.uint8)
    counts = np.bincount(flat, minlength=4).astype(np.float64)
    out = {INTERNAL_CLASSES[v]: counts[v] * vml for v in (1, 2, 3)}
    for region in ("WT", "TC"):
        out[region] = float(sum(counts[v] for v in REGIONS[region])) * vml
    return {k: float(v) for k, v in out.items()}


# --------------------------------------------------------------------------- click prompts
def region_for_class(label: int) -> str:
    """Superpixel region used for clicks on ``label``: ``"wt"`` for ED, ``"tc"`` for NCR/ET.

    WT superpixels come from FLAIR (oedema shows there), TC superpixels from T2 + T1Gd.
    """
    return "wt" if _label_value(label) == 2 else "tc"


def click_region(
    session: RefinementSession,
    voxel: Sequence[int],
    *,
    grow: bool = True,
    sim0: float | None = None,
    n_c: int | None = None,
) -> tuple[np.ndarray, int]:
    """The superpixel region a click at ``voxel`` selects.

    The superpixel under the click is the seed of Thompson et al.'s Algorithm 1
    (:meth:`RefinementSession.grow <napari_ssseg.core.refine.RefinementSession.grow>`): it
    grows, superpixel by superpixel, into the neighbours that are most similar to it and
    mutually prefer it, until no candidate is more similar than ``sim0``.

    Parameters
    ----------
    session : RefinementSession
        Features and graph of the case's superpixels (built once per case).
    voxel : 3 ints
        Clicked voxel ``(z, y, x)`` on the full grid.
    grow : bool
        ``False`` selects the clicked superpixel only.
    sim0 : float, optional
        Stopping similarity (default :data:`~napari_ssseg.core.refine.DEFAULT_SIM0`); higher
        grows less.
    n_c : int, optional
        Candidates examined per merge minus one (default
        :data:`~napari_ssseg.core.refine.DEFAULT_NC`).

    Returns
    -------
    mask : (Z, Y, X) ndarray of bool
        The selected superpixels on the full grid.
    n_superpixels : int
        How many superpixels it holds.

    Raises
    ------
    InputError
        The click is outside the grid or outside the brain (no superpixel there).
    """
    from napari_ssseg.core.refine import DEFAULT_NC, DEFAULT_SIM0, FittedSeed

    pos = tuple(int(round(float(v))) for v in np.ravel(voxel))
    shape = tuple(session.shape)
    if len(pos) != 3 or not all(0 <= p < s for p, s in zip(pos, shape)):
        raise InputError(f"click at voxel {pos} is outside the case's grid {shape}.")
    crop = session.crop
    local = tuple(p - c.start for p, c in zip(pos, crop))
    inside = all(0 <= q < c.stop - c.start for q, c in zip(local, crop))
    sp = int(session.labels[local]) if inside else 0
    if sp == 0:
        raise InputError(
            f"click at voxel {pos} is outside the brain (no superpixel there): click inside "
            "the brain."
        )
    members = np.zeros(session.n_superpixels + 1, bool)
    members[sp] = True
    if grow:
        seed = FittedSeed(members=members, p0=np.zeros(session.labels.shape, bool))
        members, _ = session.grow(
            seed,
            DEFAULT_SIM0 if sim0 is None else float(sim0),
            DEFAULT_NC if n_c is None else int(n_c),
        )
    return session.superpixel_mask(members), int(np.count_nonzero(members[1:]))


def click_change(
    labels: np.ndarray,
    region: np.ndarray,
    label: int,
    positive: bool,
    *,
    preserve_other: bool = True,
) -> np.ndarray:
    """Voxels a click prompt changes.

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of int
        Current labels (not modified).
    region : (Z, Y, X) ndarray of bool
        The selected region (:func:`click_region`).
    label : int
        The selected class.
    positive : bool
        ``True`` adds the region to ``label`` (those voxels become ``label``); ``False``
        removes it (voxels of ``label`` in the region become background).
    preserve_other : bool
        With a positive click, leave voxels of other tumour classes alone (default);
        ``False`` overwrites them.

    Returns
    -------
    (Z, Y, X) ndarray of bool
        Voxels to write (to ``label`` when positive, to 0 otherwise).
    """
    labels = _labels3d(labels)
    label = _label_value(label)
    region = np.asarray(region, bool)
    if region.shape != labels.shape:
        raise InputError(
            f"click region has shape {region.shape}, the labels {labels.shape}: they must be "
            "on the same grid."
        )
    if not positive:
        return region & (labels == label)
    change = region & (labels != label)
    if preserve_other:
        change &= labels == 0
    return change
