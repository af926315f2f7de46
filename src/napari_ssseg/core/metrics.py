"""Segmentation metrics: Dice, IoU, HD95, ASD, NSD and RAVD, per tumour region and class.

All functions take two arrays of the same shape, ``(Z, Y, X)`` (or ``(Y, X)``), and treat
every non-zero voxel as foreground. Distances are in millimetres: ``spacing`` is the voxel
size along the array axes, in ``(Z, Y, X)`` order (:attr:`Geometry.spacing_zyx
<napari_ssseg.core.case.Geometry.spacing_zyx>`).

Surface-based metrics follow MONAI's definitions (``monai.metrics``) exactly, and are
cross-checked against them in the tests, but are implemented with numpy and scipy only so
that they work without torch:

* the surface (border) of a mask is ``mask & ~binary_erosion(mask)`` with the face-connected
  (6-neighbour in 3D) structuring element and voxels outside the image counted as background,
  as in ``monai.metrics.utils.get_mask_edges``;
* the distance from a border voxel of one mask to the other mask is the Euclidean distance,
  in mm, to the nearest border voxel of the other mask, as in
  ``monai.metrics.utils.get_surface_distance``; it is found exactly either with
  ``scipy.ndimage.distance_transform_edt(..., sampling=spacing)`` or with a k-d tree over the
  border voxels (MONAI's CPU method), whichever is faster for the masks at hand;
* the work is done on the bounding box of the union of both masks plus a one-voxel margin,
  which gives identical results and is much faster on a full BraTS grid.

Conventions for empty masks (the BraTS challenge conventions; see ``docs/metrics.md``):

=================  ======  ======  ===============  ===============  ======  ======
case               dice    iou     hd95             asd              nsd     ravd
=================  ======  ======  ===============  ===============  ======  ======
both empty         1       1       0                0                1       0
one empty          0       0       ``empty_distance`` (default: image diagonal in mm)  0
=================  ======  ======  ===============  ===============  ======  ======

``ravd`` with an empty ground truth and a non-empty prediction is undefined and returned as
NaN (JSON ``null``, see :func:`to_jsonable`); with an empty prediction and a non-empty ground
truth it is 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from napari_ssseg.core.case import INTERNAL_CLASSES, REGIONS
from napari_ssseg.errors import InputError, check_choice

__all__ = [
    "METRIC_NAMES",
    "dice",
    "iou",
    "hd95",
    "asd",
    "nsd",
    "ravd",
    "surface_distances",
    "binary_metrics",
    "region_metrics",
    "image_diagonal",
    "to_jsonable",
]

#: Metric names in the order they appear in :func:`region_metrics` results.
METRIC_NAMES: tuple[str, ...] = ("dice", "hd95", "iou", "nsd", "asd", "ravd")

#: Name of each foreground internal class, used as key for per-class results.
CLASS_KEYS: dict[int, str] = {k: v for k, v in INTERNAL_CLASSES.items() if k != 0}

#: Use k-d trees over border voxels (MONAI's CPU method) when the borders are fewer than this
#: fraction of the cropped box's voxels, else two Euclidean distance transforms. Both are
#: exact; this only picks the faster one (measured crossover about 0.08 on 2 cores).
_KDTREE_FRACTION = 0.05

_SpacingLike = float | Sequence[float] | np.ndarray


# ------------------------------------------------------------------------- validation
def _as_mask(array: Any, name: str) -> np.ndarray:
    """Return ``array != 0`` as a bool ndarray (no copy for bool input)."""
    arr = np.asarray(array)
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.number)):
        raise InputError(f"{name} must be a numeric or boolean array; got dtype {arr.dtype}.")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or infinite values; a mask must be finite.")
    return arr != 0


def _check_pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _as_mask(pred, "pred")
    g = _as_mask(gt, "gt")
    if p.shape != g.shape:
        raise InputError(
            f"pred has shape {p.shape} but gt has shape {g.shape}; metrics need both masks on "
            "the same grid. Resample the prediction onto the ground-truth grid first."
        )
    if p.ndim not in (2, 3):
        raise InputError(
            f"Masks must be 2D (Y, X) or 3D (Z, Y, X); got {p.ndim} dimensions (shape "
            f"{p.shape}). Remove channel or batch axes first."
        )
    if p.size == 0:
        raise InputError(f"Masks are empty arrays (shape {p.shape}).")
    return p, g


def _check_spacing(spacing: _SpacingLike, ndim: int) -> tuple[float, ...]:
    sp = np.atleast_1d(np.asarray(spacing, dtype=float)).ravel()
    if sp.size == 1:
        sp = np.repeat(sp, ndim)
    if sp.size != ndim:
        raise InputError(
            f"spacing={tuple(sp.tolist())} has {sp.size} values but the masks have {ndim} "
            f"dimensions; give one voxel size per array axis, in (Z, Y, X) order."
        )
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InputError(f"spacing={tuple(sp.tolist())} must be positive and finite (mm).")
    return tuple(float(s) for s in sp)


def _check_tolerance(tolerance_mm: float) -> float:
    tol = float(tolerance_mm)
    if not math.isfinite(tol) or tol < 0:
        raise InputError(
            f"tolerance_mm={tolerance_mm!r} must be a finite distance >= 0 mm (e.g. 1.0)."
        )
    return tol


def image_diagonal(shape: Sequence[int], spacing: _SpacingLike = 1.0) -> float:
    """Length in mm of the diagonal of a grid: ``sqrt(sum((shape * spacing) ** 2))``.

    This is the distance used for HD95 and ASD when exactly one mask is empty (373.13 mm on
    the 240 x 240 x 155 1 mm BraTS grid, the value the BraTS evaluation uses).
    """
    sp = _check_spacing(spacing, len(shape))
    return float(np.sqrt(np.sum((np.asarray(shape, dtype=float) * np.asarray(sp)) ** 2)))


# ---------------------------------------------------------------------- overlap metrics
def dice(pred: Any, gt: Any) -> float:
    """Dice similarity coefficient ``2 |P & G| / (|P| + |G|)``.

    Parameters
    ----------
    pred, gt : (Z, Y, X) or (Y, X) array_like
        Masks; non-zero is foreground.

    Returns
    -------
    float
        In [0, 1]. 1 if both masks are empty, 0 if exactly one is.
    """
    p, g = _check_pair(pred, gt)
    return _dice_from_counts(*_counts(p, g))


def iou(pred: Any, gt: Any) -> float:
    """Intersection over union (Jaccard index) ``|P & G| / |P | G|``.

    Returns 1 if both masks are empty, 0 if exactly one is.
    """
    p, g = _check_pair(pred, gt)
    return _iou_from_counts(*_counts(p, g))


def ravd(pred: Any, gt: Any) -> float:
    """Relative absolute volume difference ``| |P| - |G| | / |G|``.

    Spacing cancels out, so this is computed from voxel counts. A fraction, not a
    percentage: 0 is a perfect volume, 1 means the volumes differ by the whole reference
    volume.

    Returns
    -------
    float
        0 if both masks are empty; NaN if ``gt`` is empty and ``pred`` is not (undefined).
    """
    p, g = _check_pair(pred, gt)
    _, n_p, n_g = _counts(p, g)
    return _ravd_from_counts(n_p, n_g)


def _counts(p: np.ndarray, g: np.ndarray) -> tuple[int, int, int]:
    inter = int(np.count_nonzero(p & g))
    return inter, int(np.count_nonzero(p)), int(np.count_nonzero(g))


def _dice_from_counts(inter: int, n_p: int, n_g: int) -> float:
    if n_p + n_g == 0:
        return 1.0
    return 2.0 * inter / (n_p + n_g)


def _iou_from_counts(inter: int, n_p: int, n_g: int) -> float:
    union = n_p + n_g - inter
    if union == 0:
        return 1.0
    return inter / union


def _ravd_from_counts(n_p: int, n_g: int) -> float:
    if n_g == 0:
        return 0.0 if n_p == 0 else float("nan")
    return abs(n_p - n_g) / n_g


# ---------------------------------------------------------------------- surface metrics
def _borders(mask: np.ndarray) -> np.ndarray:
    """Border voxels of a mask (outside the array counts as background), like MONAI."""
    return mask & ~ndimage.binary_erosion(mask)


def surface_distances(
    pred: Any, gt: Any, spacing: _SpacingLike = (1.0, 1.0, 1.0), *, method: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Distances between the borders of two masks, in mm.

    Parameters
    ----------
    pred, gt : (Z, Y, X) or (Y, X) array_like
        Masks; non-zero is foreground.
    spacing : float or sequence of float
        Voxel size in mm along the array axes (``(Z, Y, X)`` order).
    method : {"auto", "edt", "kdtree"}
        How nearest border voxels are found: Euclidean distance transforms of the cropped
        box (``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing``), k-d trees
        over the border voxels' coordinates in mm (``scipy.spatial.cKDTree``), or whichever
        is faster for these masks. All give the same distances.

    Returns
    -------
    pred_to_gt : (n_pred_border,) ndarray of float64
        For each border voxel of ``pred`` (C order), the Euclidean distance in mm to the
        nearest border voxel of ``gt``; ``inf`` if ``gt`` is empty.
    gt_to_pred : (n_gt_border,) ndarray of float64
        The same from ``gt`` to ``pred``.
    """
    p, g = _check_pair(pred, gt)
    sp = _check_spacing(spacing, p.ndim)
    method = check_choice("method", method, ("auto", "edt", "kdtree"))
    return _surface_distances(p, g, sp, method)


def _surface_distances(
    p: np.ndarray, g: np.ndarray, sp: tuple[float, ...], method: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    union = p | g
    if not union.any():
        return np.zeros(0), np.zeros(0)
    # bounding box of the union plus a one-voxel margin: borders and nearest-border distances
    # inside it are exactly those of the full grid (everything outside is background).
    coords = np.nonzero(union)
    box = tuple(
        slice(max(int(c.min()) - 1, 0), min(int(c.max()) + 2, n))
        for c, n in zip(coords, union.shape)
    )
    bp = _borders(p[box])
    bg = _borders(g[box])
    if not bg.any():
        return np.full(int(np.count_nonzero(bp)), np.inf), np.zeros(0)
    if not bp.any():
        return np.zeros(0), np.full(int(np.count_nonzero(bg)), np.inf)
    n_border = int(np.count_nonzero(bp)) + int(np.count_nonzero(bg))
    if method == "auto":
        method = "kdtree" if n_border < _KDTREE_FRACTION * bp.size else "edt"
    if method == "edt":
        to_gt = ndimage.distance_transform_edt(~bg, sampling=sp)
        to_pred = ndimage.distance_transform_edt(~bp, sampling=sp)
        return to_gt[bp], to_pred[bg]
    scale = np.asarray(sp, dtype=float)
    cp = np.argwhere(bp) * scale
    cg = np.argwhere(bg) * scale
    d_pg = cKDTree(cg, leafsize=32).query(cp, k=1)[0]
    d_gp = cKDTree(cp, leafsize=32).query(cg, k=1)[0]
    return np.asarray(d_pg, dtype=float), np.asarray(d_gp, dtype=float)


def _distance_metrics(
    d_pg: np.ndarray,
    d_gp: np.ndarray,
    tolerance: float,
    empty_distance: float,
) -> dict[str, float]:
    """HD95, ASD and NSD from the two sets of border distances."""
    if d_pg.size == 0 and d_gp.size == 0:  # both masks empty
        return {"hd95": 0.0, "asd": 0.0, "nsd": 1.0}
    if d_pg.size == 0 or d_gp.size == 0 or np.isinf(d_pg).any() or np.isinf(d_gp).any():
        return {"hd95": float(empty_distance), "asd": float(empty_distance), "nsd": 0.0}
    hd = max(float(np.percentile(d_pg, 95)), float(np.percentile(d_gp, 95)))
    both = np.concatenate([d_pg, d_gp])
    # a tiny relative slack so a distance equal to the tolerance (up to rounding) counts
    within = int(np.count_nonzero(both <= tolerance * (1 + 1e-9) + 1e-12))
    return {"hd95": hd, "asd": float(both.mean()), "nsd": within / both.size}


def _empty_distance(shape: Sequence[int], sp: tuple[float, ...], value: float | None) -> float:
    if value is None:
        return image_diagonal(shape, sp)
    return float(value)


def hd95(
    pred: Any,
    gt: Any,
    spacing: _SpacingLike = (1.0, 1.0, 1.0),
    *,
    empty_distance: float | None = None,
) -> float:
    """95th-percentile symmetric Hausdorff distance between mask borders, in mm.

    ``max(P95(d(pred -> gt)), P95(d(gt -> pred)))`` over border voxels, with linear
    interpolation between order statistics: MONAI's
    ``compute_hausdorff_distance(percentile=95, directed=False)``.

    Parameters
    ----------
    pred, gt : (Z, Y, X) or (Y, X) array_like
        Masks; non-zero is foreground.
    spacing : float or sequence of float
        Voxel size in mm, ``(Z, Y, X)`` order.
    empty_distance : float, optional
        Value returned when exactly one mask is empty. Default: the image diagonal in mm
        (:func:`image_diagonal`, the BraTS convention). Pass ``float("nan")`` for NaN.

    Returns
    -------
    float
        Distance in mm; 0 if both masks are empty.
    """
    p, g = _check_pair(pred, gt)
    sp = _check_spacing(spacing, p.ndim)
    d = _distance_metrics(
        *_surface_distances(p, g, sp), 0.0, _empty_distance(p.shape, sp, empty_distance)
    )
    return d["hd95"]


def asd(
    pred: Any,
    gt: Any,
    spacing: _SpacingLike = (1.0, 1.0, 1.0),
    *,
    empty_distance: float | None = None,
) -> float:
    """Average symmetric surface distance, in mm.

    The mean of all border distances in both directions, pooled:
    ``(sum d(pred -> gt) + sum d(gt -> pred)) / (n_pred_border + n_gt_border)``; MONAI's
    ``compute_average_surface_distance(symmetric=True)``.

    Returns 0 if both masks are empty and ``empty_distance`` (default the image diagonal)
    if exactly one is.
    """
    p, g = _check_pair(pred, gt)
    sp = _check_spacing(spacing, p.ndim)
    d = _distance_metrics(
        *_surface_distances(p, g, sp), 0.0, _empty_distance(p.shape, sp, empty_distance)
    )
    return d["asd"]


def nsd(
    pred: Any,
    gt: Any,
    spacing: _SpacingLike = (1.0, 1.0, 1.0),
    tolerance_mm: float = 1.0,
) -> float:
    """Normalised surface Dice (surface Dice at a tolerance), in [0, 1].

    The fraction of border voxels of both masks that lie within ``tolerance_mm`` of the other
    mask's border: ``(#{d(pred -> gt) <= tau} + #{d(gt -> pred) <= tau}) / (n_pred_border +
    n_gt_border)``; MONAI's ``compute_surface_dice(use_subvoxels=False)``.

    Returns 1 if both masks are empty and 0 if exactly one is.
    """
    p, g = _check_pair(pred, gt)
    sp = _check_spacing(spacing, p.ndim)
    tol = _check_tolerance(tolerance_mm)
    return _distance_metrics(*_surface_distances(p, g, sp), tol, 0.0)["nsd"]


# ---------------------------------------------------------------------- all at once
def binary_metrics(
    pred: Any,
    gt: Any,
    spacing: _SpacingLike = (1.0, 1.0, 1.0),
    *,
    tolerance_mm: float = 1.0,
    empty_distance: float | None = None,
) -> dict[str, float]:
    """All six metrics of one pair of masks, computing the border distances once.

    Returns
    -------
    dict of str to float
        Keys :data:`METRIC_NAMES`: ``dice``, ``hd95`` (mm), ``iou``, ``nsd``, ``asd`` (mm),
        ``ravd``.
    """
    p, g = _check_pair(pred, gt)
    sp = _check_spacing(spacing, p.ndim)
    tol = _check_tolerance(tolerance_mm)
    return _binary_metrics(p, g, sp, tol, _empty_distance(p.shape, sp, empty_distance))


def _binary_metrics(
    p: np.ndarray, g: np.ndarray, sp: tuple[float, ...], tol: float, empty: float
) -> dict[str, float]:
    inter, n_p, n_g = _counts(p, g)
    dist = _distance_metrics(*_surface_distances(p, g, sp), tol, empty)
    return {
        "dice": _dice_from_counts(inter, n_p, n_g),
        "hd95": dist["hd95"],
        "iou": _iou_from_counts(inter, n_p, n_g),
        "nsd": dist["nsd"],
        "asd": dist["asd"],
        "ravd": _ravd_from_counts(n_p, n_g),
    }


def region_metrics(
    pred_labels: Any,
    gt_labels: Any,
    spacing: _SpacingLike = (1.0, 1.0, 1.0),
    *,
    tolerance_mm: float = 1.0,
    regions: Iterable[str] = ("WT", "TC", "ET"),
    per_class: bool = False,
    empty_distance: float | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics of each tumour region (and optionally each class) of two internal label maps.

    Parameters
    ----------
    pred_labels, gt_labels : (Z, Y, X) array_like of int
        Internal labels (0 background, 1 NCR, 2 ED, 3 ET); decode dataset conventions first
        (:meth:`LabelConvention.decode <napari_ssseg.core.case.LabelConvention.decode>`).
    spacing : float or sequence of float
        Voxel size in mm, ``(Z, Y, X)`` order.
    tolerance_mm : float
        NSD tolerance in mm.
    regions : iterable of str
        Regions among :data:`~napari_ssseg.core.case.REGIONS` (``WT`` = 1, 2, 3; ``TC`` =
        1, 3; ``ET`` = 3).
    per_class : bool
        Also report each class on its own, keyed ``NCR``, ``ED`` and ``ET``. Class ET and
        region ET are the same mask, so they share the key ``ET``.
    empty_distance : float, optional
        HD95/ASD when exactly one mask is empty; default the image diagonal in mm.

    Returns
    -------
    dict of str to dict of str to float
        ``{"WT": {"dice": ..., "hd95": ..., "iou": ..., "nsd": ..., "asd": ..., "ravd": ...},
        ...}``. Values can be NaN (``ravd`` when the reference is empty); use
        :func:`to_jsonable` before writing JSON.
    """
    pred = np.asarray(pred_labels)
    gt = np.asarray(gt_labels)
    if pred.shape != gt.shape:
        raise InputError(
            f"Predicted labels have shape {pred.shape} but the ground truth has {gt.shape}; "
            "both must be on the same grid."
        )
    for name, arr in (("predicted labels", pred), ("ground-truth labels", gt)):
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
            raise InputError(
                f"The {name} must be an integer label array (0 bg, 1 NCR, 2 ED, 3 ET); got "
                f"dtype {arr.dtype}."
            )
        uniq = np.unique(arr)
        bad = np.setdiff1d(uniq, list(INTERNAL_CLASSES))
        if bad.size:
            raise InputError(
                f"The {name} contain values {bad.tolist()[:10]}; expected internal labels 0, 1, "
                "2, 3 (0 bg, 1 NCR, 2 ED, 3 ET). Decode the file's label convention first "
                "(BraTS 2019-2021 uses 4 for ET)."
            )
    region_list = [check_choice("region", r, REGIONS) for r in regions]
    p0, _ = _check_pair(pred, gt)
    sp = _check_spacing(spacing, p0.ndim)
    tol = _check_tolerance(tolerance_mm)
    empty = _empty_distance(pred.shape, sp, empty_distance)
    out: dict[str, dict[str, float]] = {}
    for r in region_list:
        values = list(REGIONS[r])
        out[r] = _binary_metrics(np.isin(pred, values), np.isin(gt, values), sp, tol, empty)
    if per_class:
        for value, key in CLASS_KEYS.items():
            if key in out:
                continue
            out[key] = _binary_metrics(pred == value, gt == value, sp, tol, empty)
    return out


def to_jsonable(result: Any) -> Any:
    """Copy of a (nested) metrics result with NaN and infinities replaced by ``None``.

    ``json.dumps(to_jsonable(r))`` is then valid JSON (``null`` instead of ``NaN``).
    """
    if isinstance(result, dict):
        return {str(k): to_jsonable(v) for k, v in result.items()}
    if isinstance(result, list | tuple):
        return [to_jsonable(v) for v in result]
    if isinstance(result, float | np.floating):
        v = float(result)
        return v if math.isfinite(v) else None
    if isinstance(result, np.integer):
        return int(result)
    return result
