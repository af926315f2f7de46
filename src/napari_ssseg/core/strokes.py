"""Scribble strokes: their internal codes, validation, file encoding and simulated strokes.

The input side of SP3-style propagation (:mod:`napari_ssseg.core.scribbles`, which
re-exports every name here): internal codes 0 not annotated, 1 NCR, 2 ED, 3 ET,
:data:`BACKGROUND` (4) a stroke on healthy tissue, :data:`TUMOUR` (5) a region-mode stroke;
files use the case's label values for the classes, a background label (default 255) and a
tumour label (default 254). :func:`simulate_scribbles` draws strokes from a ground truth the
way an annotator would (benchmarks, tests, the demo).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_ssseg import defaults
from napari_ssseg.errors import GeometryError, InputError

__all__ = [
    "BACKGROUND",
    "CODES",
    "CODE_NAMES",
    "DEFAULT_BACKGROUND_LABEL",
    "DEFAULT_TUMOUR_LABEL",
    "TUMOUR",
    "TUMOUR_CODES",
    "check_file_labels",
    "check_scribbles",
    "decode_scribbles",
    "encode_scribbles",
    "simulate_scribbles",
]

#: internal scribble code of a stroke on healthy tissue
BACKGROUND: int = 4
#: internal scribble code of a region-mode stroke: inside the tumour, class unknown
TUMOUR: int = 5
#: value of a healthy-tissue stroke in scribble files (``--background-label``)
DEFAULT_BACKGROUND_LABEL: int = defaults.SCRIBBLE_BACKGROUND_LABEL
#: value of a region-mode tumour stroke in scribble files
DEFAULT_TUMOUR_LABEL: int = defaults.SCRIBBLE_TUMOUR_LABEL

#: every internal code, and the names of the stroke codes
CODES = (0, 1, 2, 3, BACKGROUND, TUMOUR)
CODE_NAMES = {1: "NCR", 2: "ED", 3: "ET", BACKGROUND: "background", TUMOUR: "tumour"}
TUMOUR_CODES = (1, 2, 3, TUMOUR)


# --------------------------------------------------------------------------- validation
def check_scribbles(
    scribbles: Any,
    shape: Sequence[int],
    brain: np.ndarray | None = None,
    *,
    source: str = "scribbles",
) -> np.ndarray:
    """Validate internal scribbles and drop strokes outside the brain (with a warning).

    Parameters
    ----------
    scribbles : (Z, Y, X) array-like of int
        Internal codes: 0 not annotated, 1 NCR, 2 ED, 3 ET, :data:`BACKGROUND` healthy,
        :data:`TUMOUR` tumour of unknown class.
    shape : 3 ints
        The case's grid.
    brain : (Z, Y, X) ndarray of bool, optional
        Brain mask; strokes outside it are ignored with a :class:`UserWarning`.
    source : str
        Name used in messages.

    Returns
    -------
    (Z, Y, X) ndarray of uint8
        A new array (the input is never modified).

    Raises
    ------
    GeometryError
        Wrong shape.
    InputError
        Values outside the codes, no strokes, or only background strokes (nothing to
        propagate: a tumour needs at least one tumour stroke).
    """
    arr = np.asarray(scribbles)
    shape = tuple(int(s) for s in shape)
    if arr.shape != shape:
        raise GeometryError(
            f"{source} have shape {arr.shape} but the case has shape {shape}; draw or save "
            "the scribbles on the case's own grid."
        )
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise InputError(f"{source} must be an integer array; got dtype {arr.dtype}.")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InputError(f"{source} hold non-integer values; expected codes {CODES}.")
    if np.issubdtype(arr.dtype, np.integer) and arr.size and 0 <= arr.min() and arr.max() < 256:
        seen = np.flatnonzero(np.bincount(arr.ravel().astype(np.uint8, copy=False)))
    else:
        seen = np.unique(arr)
    bad = np.setdiff1d(seen, CODES)
    if bad.size:
        raise InputError(
            f"{source} hold values {bad[:10].tolist()} outside the scribble codes: 0 (not "
            f"annotated), 1 NCR, 2 ED, 3 ET, {BACKGROUND} background, {TUMOUR} tumour (class "
            "unknown). Relabel the strokes."
        )
    out = arr.astype(np.uint8)
    if brain is not None:
        brain = np.asarray(brain, bool)
        if brain.shape != shape:
            raise GeometryError(f"brain mask has shape {brain.shape}, the case {shape}.")
        outside = (out > 0) & ~brain
        n_out = int(outside.sum())
        if n_out:
            warnings.warn(
                f"{n_out} scribbled voxel(s) lie outside the brain mask and are ignored.",
                UserWarning,
                stacklevel=2,
            )
            out[outside] = 0
    if not out.any():
        raise InputError(
            f"{source} are empty (no annotated voxel inside the brain): draw at least one "
            "stroke inside the tumour (NCR, ED, ET or tumour)."
        )
    if not np.isin(out, TUMOUR_CODES).any():
        raise InputError(
            f"{source} hold only background strokes: there is nothing to propagate. Add at "
            "least one stroke inside the tumour (NCR, ED, ET or, in region mode, tumour)."
        )
    return out


def check_file_labels(convention: Any, background_label: int, tumour_label: int | None):
    tumour_values = np.asarray(convention.encode(np.array([1, 2, 3], np.uint8))).tolist()
    bg_label = int(background_label)
    if bg_label == 0 or bg_label in tumour_values:
        raise InputError(
            f"--background-label {bg_label} collides with 0 or a tumour value of the "
            f"{convention.name} convention; choose another value (default 255)."
        )
    if tumour_label is None:
        return bg_label, None
    t_label = int(tumour_label)
    if t_label == bg_label == DEFAULT_TUMOUR_LABEL:
        # a background label chosen as 254 (the default tumour label): no region strokes
        return bg_label, None
    if t_label in (0, bg_label) or t_label in tumour_values or not 0 < t_label < 256:
        raise InputError(
            f"tumour label {t_label} (region-mode strokes) collides with 0, the background "
            f"label {bg_label} or a tumour value of the {convention.name} convention (or is "
            f"not in 1..255); choose another value (default {DEFAULT_TUMOUR_LABEL})."
        )
    return bg_label, t_label


def decode_scribbles(
    values: np.ndarray,
    convention: Any,
    background_label: int = DEFAULT_BACKGROUND_LABEL,
    tumour_label: int | None = DEFAULT_TUMOUR_LABEL,
) -> np.ndarray:
    """File values → internal scribble codes.

    Parameters
    ----------
    values : (Z, Y, X) ndarray of int
        0 not annotated, the convention's tumour values, ``background_label`` for healthy
        strokes.
    convention : LabelConvention
        The case's label convention (``.decode``).
    background_label : int
        Value of healthy-tissue strokes (must not be a tumour value of the convention).
    tumour_label : int or None
        Value of region-mode tumour strokes (:data:`TUMOUR`, default
        :data:`DEFAULT_TUMOUR_LABEL`); ``None``: the file has none (the value is then
        refused as outside the convention).

    Returns
    -------
    (Z, Y, X) ndarray of uint8
    """
    values = np.asarray(values)
    bg_label, t_label = check_file_labels(convention, background_label, tumour_label)
    bg = values == bg_label
    tum = values == t_label if t_label is not None else np.zeros(values.shape, bool)
    internal = np.asarray(convention.decode(np.where(bg | tum, 0, values), "scribble file"))
    out = internal.astype(np.uint8)
    out[bg] = BACKGROUND
    out[tum] = TUMOUR
    return out


def encode_scribbles(
    scribbles: np.ndarray,
    convention: Any,
    background_label: int = DEFAULT_BACKGROUND_LABEL,
    tumour_label: int | None = DEFAULT_TUMOUR_LABEL,
) -> np.ndarray:
    """Internal scribble codes → file values (inverse of :func:`decode_scribbles`).

    Parameters
    ----------
    scribbles : (Z, Y, X) ndarray of int
        0 not annotated, 1 NCR, 2 ED, 3 ET, :data:`BACKGROUND` healthy tissue,
        :data:`TUMOUR` tumour of unknown class.
    convention : LabelConvention
        The case's label convention (``.encode``).
    background_label : int
        File value of healthy-tissue strokes (default 255).
    tumour_label : int or None
        File value of region-mode tumour strokes (default 254). ``None`` refuses to save
        region-mode strokes (for tools that only know the convention's values).

    Returns
    -------
    (Z, Y, X) ndarray of uint8
    """
    scribbles = np.asarray(scribbles)
    bad = np.setdiff1d(np.unique(scribbles), list(CODES))
    if bad.size:
        raise InputError(
            f"scribbles contain codes {bad.tolist()}; expected 0 (none), 1 NCR, 2 ED, 3 ET, "
            f"{BACKGROUND} (background) or {TUMOUR} (tumour, class unknown)."
        )
    bg_label, t_label = check_file_labels(convention, background_label, tumour_label)
    tum = scribbles == TUMOUR
    if t_label is None and tum.any():
        raise InputError(
            f"the scribbles hold {int(tum.sum())} region-mode tumour stroke voxel(s) (class "
            "unknown), which the label convention cannot store; pass a tumour label (default "
            f"{DEFAULT_TUMOUR_LABEL}) or redraw them with a class."
        )
    bg = scribbles == BACKGROUND
    out = np.asarray(convention.encode(np.where(bg | tum, 0, scribbles).astype(np.uint8)), np.uint8)
    out[bg] = bg_label
    if t_label is not None:
        out[tum] = t_label
    return out


# --------------------------------------------------------------------------- simulation
def simulate_scribbles(
    labels: np.ndarray,
    brain: np.ndarray | None = None,
    *,
    n_slices: int = 3,
    ring: int = 3,
    classes: Sequence[int] = (1, 2, 3),
    keep: float = 1.0,
) -> np.ndarray:
    """Thin strokes drawn from a ground truth (benchmarks, tests, demo).

    On ``n_slices`` axial slices evenly spread over the middle of the tumour, each class is
    reduced to its 2D skeleton (:func:`skimage.morphology.skeletonize`) and a background
    stroke is the outline of the tumour dilated by ``ring`` voxels (inside the brain).
    Deterministic.

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of int
        Internal ground truth (0 bg, 1 NCR, 2 ED, 3 ET).
    brain : (Z, Y, X) ndarray of bool, optional
    n_slices : int >= 1
    ring : int >= 1
        Distance (voxels) of the background ring from the tumour.
    classes : sequence of int
        Tumour classes to draw.
    keep : float in (0, 1]
        Share of every stroke kept: strokes (skeletons and the ring) are cut into arcs by
        angle around the slice's tumour centroid and only arcs covering ``keep`` of the
        turn are kept (1: whole strokes). Controls the annotated fraction.

    Returns
    -------
    (Z, Y, X) ndarray of uint8
        Internal scribble codes.
    """
    from scipy import ndimage as ndi
    from skimage.morphology import skeletonize

    labels = np.asarray(labels)
    if n_slices < 1 or ring < 1:
        raise InputError(f"n_slices={n_slices} and ring={ring} must be >= 1.")
    out = np.zeros(labels.shape, np.uint8)
    tumour = labels > 0
    zs = np.flatnonzero(tumour.any(axis=(1, 2)))
    if zs.size == 0:
        raise InputError("the ground truth has no tumour voxel to draw scribbles from.")
    lo, hi = np.percentile(zs, [25, 75])
    if not 0 < keep <= 1:
        raise InputError(f"keep={keep!r} must lie in (0, 1].")
    picks = np.unique(np.round(np.linspace(lo, hi, n_slices)).astype(int))
    yy, xx = np.mgrid[0 : labels.shape[1], 0 : labels.shape[2]]
    for i, z in enumerate(picks):
        t = tumour[z]
        if not t.any():
            continue
        cy, cx = np.argwhere(t).mean(axis=0)
        # arcs: 8 sectors per turn, keep the first ceil(8 * keep), rotated per slice
        sector = (np.floor((np.arctan2(yy - cy, xx - cx) + np.pi) / (2 * np.pi) * 8) + i) % 8
        arcs = sector < np.ceil(8 * keep)
        for c in classes:
            m = labels[z] == c
            if m.sum() < 4:
                continue
            sk = skeletonize(m) & arcs
            out[z][sk] = c
        dil = ndi.binary_dilation(t, iterations=ring)
        rim = dil & ~ndi.binary_erosion(dil) & arcs
        if brain is not None:
            rim &= np.asarray(brain, bool)[z]
        out[z][rim & ~t] = BACKGROUND
    return out
