"""Label conventions (detection from values and naming) and reading label files.

:func:`detect_convention` picks the convention of a label array; :func:`read_labels` and
:func:`read_label_values` read a label file drawn on a case's grid; ``_load_labels`` reads
the label file of a case being loaded by :func:`napari_ssseg.io.readers.load_case`. Part of
:mod:`napari_ssseg.io.readers`, which re-exports the public names.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_ssseg.core.case import (
    CONVENTION_SIBLINGS,
    CONVENTIONS,
    Case,
    Geometry,
    LabelConvention,
    Orientation,
    get_convention,
)
from napari_ssseg.errors import GeometryError, InputError
from napari_ssseg.io.grids import _onto_reference, _reorient_exactly, describe_grid, same_grid
from napari_ssseg.io.image_read import _array_of, geometry_of, read_sitk

__all__ = ["detect_convention", "read_label_values", "read_labels"]


# ----------------------------------------------------------------------------- conventions
def _fits(values: np.ndarray, conv: LabelConvention) -> bool:
    return bool(np.all(np.isin(values, list(conv.to_internal))))


def _unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` with a fast path (bincount) for small non-negative integer labels."""
    if values.size and values.dtype.kind in "ui":
        lo, hi = int(values.min()), int(values.max())
        if lo >= 0 and hi < 65536:
            return np.flatnonzero(np.bincount(values.ravel().astype(np.intp, copy=False)))
    return np.unique(values)


def detect_convention(
    values: np.ndarray, preferred: str | None = None, source: str = "label file"
) -> LabelConvention:
    """Choose the label convention of a label array from its values and a naming hint.

    ``preferred`` (from the file naming) wins when the values fit it. Otherwise:

    * values 3 and 4 together: BRATS 2013-2015 (``brats2013``) or BraTS 2024 post-treatment
      (``brats2024``, 4 = resection cavity). Underscore naming (``brats2021``, ``upenn``)
      means ``brats2013``, hyphen naming (``brats2023``) means ``brats2024``; without a hint
      this is ambiguous and refused (name the convention with ``--convention``);
    * a 4 without a 3: BraTS 2017-2021 (``brats2021``);
    * values within {0, 1, 2, 3}: BraTS 2023 (MSD uses the same values, so MSD is only chosen
      from naming or an explicit override).

    Switching away from ``preferred`` emits a warning.

    Parameters
    ----------
    values : ndarray
        The label array, or its unique values.
    preferred : str, optional
        Convention implied by the naming scheme.
    source : str
        Name used in messages.

    Raises
    ------
    InputError
        If the values fit no convention (the message names the unknown values), or fit two
        conventions that the naming cannot tell apart.
    """
    uniq = _unique(np.asarray(values))
    if uniq.size and not np.all(np.isfinite(uniq.astype(float))):
        raise InputError(f"{source} contains NaN or Inf values; a label file must hold integers.")
    if uniq.size and np.any(uniq != np.round(uniq)):
        frac = [float(v) for v in uniq[uniq != np.round(uniq)][:5]]
        raise InputError(
            f"{source} holds non-integer values ({frac}); label values must be whole numbers "
            "(one class per voxel). Use the label file, not a probability map."
        )
    uniq_list = [int(v) for v in uniq.tolist()]
    if preferred is not None:
        conv = get_convention(preferred)
        if _fits(uniq, conv):
            return conv
    known = set().union(*(c.to_internal for c in CONVENTIONS.values()))
    unknown = [v for v in uniq_list if v not in known]
    if unknown:
        valid = "; ".join(
            f"{c.name} {sorted(c.to_internal)} ({c.description})" for c in CONVENTIONS.values()
        )
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise InputError(
            f"{source} holds label values {uniq_list[:20]}; the value(s) {unknown[:10]}{more} "
            f"belong to no supported convention ({valid}). Check that this is a tumour "
            "label file, or remap those values (e.g. to 0) before reading it."
        )
    if 3 in uniq_list and 4 in uniq_list:
        hint = CONVENTION_SIBLINGS.get(preferred or "")
        if hint is None:
            a, b = CONVENTIONS["brats2013"], CONVENTIONS["brats2024"]
            raise InputError(
                f"{source} holds label values {uniq_list}: both {a.name} ({a.description}) and "
                f"{b.name} ({b.description}) use them, and the file naming does not say which. "
                "Name it: --convention brats2013 or --convention brats2024 "
                "(Python: convention='brats2013')."
            )
        chosen = CONVENTIONS[hint]
    elif 4 in uniq_list:
        chosen = CONVENTIONS["brats2021"]
    else:
        chosen = CONVENTIONS["brats2023"]
    if preferred is not None:
        warnings.warn(
            f"{source}: values {uniq_list} do not fit the {preferred} convention implied by "
            f"the file naming; reading it as {chosen.name} ({chosen.description}"
            + (f"; {chosen.lossy}" if chosen.lossy else "")
            + "). Pass convention=... (CLI: --convention) to override.",
            UserWarning,
            stacklevel=3,
        )
    return chosen


def _read_label_array(path: str | Path) -> tuple[np.ndarray, Geometry]:
    image = read_sitk(path, "Label file")
    arr = _array_of(image, f"Label file {str(path)!r}")
    if arr.ndim != 3:
        raise InputError(
            f"Label file {str(path)!r} is 4D (shape {arr.shape}); a label map must be a single "
            "3D volume with one integer class per voxel."
        )
    return arr, geometry_of(image)


def _decode(arr: np.ndarray, conv: LabelConvention, source: str) -> np.ndarray:
    if not np.issubdtype(arr.dtype, np.integer) and not np.all(np.isfinite(arr)):
        raise InputError(f"{source} contains NaN or Inf values; a label file must hold integers.")
    return conv.decode(arr, source=source)


def read_label_values(path: str | Path, case: Case, what: str = "Label file") -> np.ndarray:
    """Read a label-like file drawn on ``case``'s grid, values untouched, in the file's order.

    The grid check of :func:`read_labels` without decoding the values (used for scribble
    files, whose background stroke value is not a label of any convention).

    Parameters
    ----------
    path : path-like
    case : Case
    what : str
        How the file is named in messages (e.g. ``"Scribble file"``).

    Returns
    -------
    (Z, Y, X) ndarray
        Values in the **file's** array order on ``case.file_shape`` (map them with
        ``case.orientation.to_canonical`` after decoding).

    Raises
    ------
    GeometryError
        If the file's grid differs from the case's (a file holding the same voxel centres in
        another axis order or direction is accepted and reoriented exactly).
    """
    arr, geom = _read_label_array(path)
    if not same_grid(geom, arr.shape, case.geometry, case.file_shape):
        exact = _reorient_exactly(arr, geom, case.geometry, case.file_shape)
        if exact is None:
            raise GeometryError(
                f"{what} {str(path)!r} is on a different grid ({describe_grid(geom, arr.shape)}) "
                f"than case {case.name!r} ({describe_grid(case.geometry, case.file_shape)}). Use "
                "a file saved for this case, or resample it onto the case's grid first."
            )
        arr = exact  # same voxel centres stored in another axis order: mapped exactly
    return arr


def read_labels(
    path: str | Path, case: Case, convention: str | LabelConvention | None = None
) -> np.ndarray:
    """Read a label file drawn on ``case``'s grid, as internal labels in canonical order.

    Parameters
    ----------
    path : path-like
        Label file (any supported format).
    case : Case
        The case the labels belong to; the file must be on ``case.geometry``'s grid.
    convention : str or LabelConvention, optional
        Convention of the file's values. Default: ``case.convention`` if the values fit it,
        otherwise detected from the values (with a warning).

    Returns
    -------
    (Z, Y, X) ndarray of uint8
        Internal labels (0 bg, 1 NCR, 2 ED, 3 ET), canonical orientation (``case.shape``).

    Raises
    ------
    GeometryError
        If the file's grid differs from the case's beyond :data:`GRID_TOLERANCE` (a file
        holding the same voxel centres in another axis order or direction is accepted and
        reoriented exactly).
    InputError
        Missing/corrupt file, values outside the convention.
    """
    source = f"Label file {str(path)!r}"
    arr = read_label_values(path, case, what="Label file")
    if convention is not None:
        conv = get_convention(convention)
    else:
        conv = detect_convention(arr, case.convention.name, source)
    internal = _decode(arr, conv, source)
    return case.orientation.to_canonical(internal).astype(np.uint8, copy=False)


def _load_labels(
    seg: Path,
    conv_override: LabelConvention | None,
    naming_conv: str | None,
    ref_geom: Geometry,
    ref_shape: Sequence[int],
    ref_name: str,
    orientation: Orientation,
) -> tuple[np.ndarray, LabelConvention]:
    """Read, decode and map a case's label file onto the reference grid (canonical order)."""
    lab, lgeom = _read_label_array(seg)
    source = f"Label file {str(seg)!r}"
    if conv_override is None:
        conv = detect_convention(lab, naming_conv, source)
    else:
        conv = conv_override
    internal = _decode(lab, conv, source)
    if conv.name == "brats2024" and np.any(lab == 4):
        warnings.warn(
            f"{source}: {int(np.count_nonzero(lab == 4))} resection-cavity voxels (BraTS 2024 "
            "value 4) are read as background (the cavity is not tumour: outside WT, TC and ET) "
            "and are not written back when labels are saved.",
            UserWarning,
            stacklevel=3,
        )
    internal = _onto_reference(
        internal, lgeom, ref_geom, ref_shape, name=source, ref_name=ref_name, nearest=True
    )
    return orientation.to_canonical(internal).astype(np.uint8, copy=False), conv
