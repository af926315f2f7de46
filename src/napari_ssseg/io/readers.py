"""Read multimodal brain MRI cases and label files with SimpleITK.

Supported inputs (see ``docs/data-formats.md``):

* a folder in BraTS 2019-2021 naming (``*_t1``, ``*_t1ce``, ``*_t2``, ``*_flair``, ``*_seg``),
* a folder in BraTS 2023+ naming (``*-t1n``, ``*-t1c``, ``*-t2w``, ``*-t2f``, ``*-seg``),
* an MSD Task01 4D image (channels FLAIR, T1w, T1gd, T2w) with its label file,
* explicit per-modality files, any non-empty subset of the four modalities;

in ``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``/``.mhd`` or as DICOM series folders.

Arrays returned by :func:`read_image` are in **file order** ``(Z, Y, X)``; a :class:`Case`
holds them in canonical orientation (see :mod:`napari_ssseg.core.case`).

This module is the public façade of case reading and holds :func:`load_case`; the work is
split into sibling modules, whose names are re-exported here (import them from here):

* :mod:`napari_ssseg.io.image_read`: files, DICOM series and headers (``read_sitk``,
  ``read_header``, ``read_image``, ``geometry_of``);
* :mod:`napari_ssseg.io.grids`: grid comparison and resampling (``same_grid``,
  ``describe_grid``, ``GRID_TOLERANCE``);
* :mod:`napari_ssseg.io.case_files`: finding a case's files and naming (``find_case_files``,
  ``CaseFiles``, PACS / TCIA series, ``parse_modality_args``);
* :mod:`napari_ssseg.io.label_read`: label conventions and label files
  (``detect_convention``, ``read_labels``, ``read_label_values``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_ssseg.core.case import (
    MODALITIES,
    Case,
    Geometry,
    LabelConvention,
    Orientation,
    get_convention,
    warn_oblique,
)
from napari_ssseg.core.progress import ProgressCallback, report
from napari_ssseg.errors import InputError, check_choice
from napari_ssseg.io.case_files import (
    AmbiguousSeriesError,
    CaseFiles,
    find_case_files,
    parse_modality_args,
)
from napari_ssseg.io.grids import (  # noqa: F401
    GRID_TOLERANCE,
    _onto_reference,
    _reorient_exactly,
    describe_grid,
    same_grid,
)
from napari_ssseg.io.image_read import (  # noqa: F401
    _array_of,
    _one_line,
    geometry_of,
    read_header,
    read_image,
    read_sitk,
)
from napari_ssseg.io.label_read import (
    _load_labels,
    detect_convention,
    read_label_values,
    read_labels,
)
from napari_ssseg.io.naming import MSD_CHANNELS, NAMING_CONVENTION, match_modality

# The sibling modules' names are re-exported; the private ones (``_array_of``,
# ``_reorient_exactly``, ``_one_line``) are imported from here by commands/labels.py and
# io/writers.py, so they stay importable from this module.
__all__ = [
    "AmbiguousSeriesError",
    "CaseFiles",
    "parse_modality_args",
    "read_image",
    "read_sitk",
    "geometry_of",
    "find_case_files",
    "load_case",
    "read_labels",
    "read_label_values",
    "read_header",
    "detect_convention",
    "same_grid",
    "describe_grid",
]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- load_case
def _validate_values(arr: np.ndarray, source: str) -> None:
    finite = np.isfinite(arr)
    if not finite.all():
        n = int(arr.size - finite.sum())
        raise InputError(
            f"{source} contains {n} NaN or Inf voxel(s). Fix the file (e.g. replace them with 0 "
            "in the tool that produced it) or re-export the scan."
        )
    if not np.any(arr):
        raise InputError(
            f"{source} is entirely zero: it holds no image. Check that the right file was "
            "given and that the export did not fail."
        )


def _report(progress: ProgressCallback | None, fraction: float, message: str) -> None:
    """:func:`napari_ssseg.core.progress.report`, also logged at debug level."""
    log.debug("%s", message)
    report(progress, fraction, message)


def load_case(
    path: str | Path | None = None,
    *,
    t1: str | Path | None = None,
    t1ce: str | Path | None = None,
    t2: str | Path | None = None,
    flair: str | Path | None = None,
    seg: str | Path | None = None,
    convention: str | LabelConvention | None = None,
    modalities: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    label_errors: str = "raise",
) -> Case:
    """Load a multimodal case (images, optional labels) in canonical orientation.

    Parameters
    ----------
    path : path-like, optional
        Case folder or file (see :func:`find_case_files`).
    t1, t1ce, t2, flair, seg : path-like, optional
        Explicit files, overriding those found in ``path``.
    convention : str or LabelConvention, optional
        Label convention of the label file (``"brats2021"``, ``"brats2023"``, ``"msd"``).
        Default: from the naming, checked against the values.
    modalities : sequence of str, optional
        Modalities to load, in this channel order; each must be present. Default: all found,
        in :data:`MODALITIES` order.
    progress : callable, optional
        ``progress(fraction, message)`` called as files are read.
    label_errors : {"raise", "warn"}
        What a label file that cannot be used (values of no convention, another grid, corrupt)
        does: ``"raise"`` (default; for commands that need the labels) or ``"warn"`` (the case
        is loaded without labels and a warning names the problem; for commands that only need
        the images, e.g. ``predict``).

    Returns
    -------
    Case
        ``images`` (C, Z, Y, X) float32 canonical; ``geometry`` of the reference file (FLAIR,
        else the first modality); ``labels`` internal uint8 canonical or None.

    Raises
    ------
    InputError
        Bad input (missing/corrupt file, missing modality, duplicate modality files, 2D image,
        wrong channel count, NaN/Inf, all-zero image, label values outside the convention).
    GeometryError
        Modalities whose fields of view do not overlap.

    Warns
    -----
    UserWarning
        A modality or label resampled onto the reference grid; an oblique direction.
    """
    label_errors = check_choice("label_errors", label_errors, ("raise", "warn"))
    cf = find_case_files(path, t1=t1, t1ce=t1ce, t2=t2, flair=flair, seg=seg)
    if modalities is not None:
        if isinstance(modalities, str):
            modalities = [modalities]
        wanted = [check_choice("modality", m, MODALITIES) for m in modalities]
        if not wanted:
            raise InputError("modalities is empty; ask for at least one of t1, t1ce, t2, flair.")
        if len(set(wanted)) != len(wanted):
            raise InputError(f"modalities lists a modality twice: {list(modalities)}.")
        missing = [m for m in wanted if m not in cf.files]
        if missing:
            where = repr(str(path)) if path is not None else "the given files"
            found = ", ".join(f"{k} ({v.name})" for k, v in cf.files.items()) or "none"
            raise InputError(
                f"Modality {', '.join(missing)} is missing from {where} (found: {found}). Add "
                f"the file ({' '.join('--' + m + ' FILE' for m in missing)}) or ask for the "
                "modalities that exist."
            )
    else:
        wanted = list(cf.modalities)
    conv_override = get_convention(convention) if convention is not None else None

    n_steps = len(wanted) + (1 if cf.seg else 0) + 1
    arrays: dict[str, np.ndarray] = {}
    geoms: dict[str, Geometry] = {}
    sources: dict[str, str] = {}
    if cf.msd_image is not None:
        _report(progress, 0.0, f"reading {cf.msd_image.name}")
        arr, geom = read_image(cf.msd_image)
        if arr.ndim != 4 or arr.shape[0] != len(MSD_CHANNELS):
            got = arr.shape[0] if arr.ndim == 4 else 1
            raise InputError(
                f"MSD image {str(cf.msd_image)!r} has {got} channel(s) (array shape "
                f"{arr.shape}); an MSD Task01 image has 4 channels in the order FLAIR, T1w, "
                "T1gd, T2w. Pass the modalities as separate files (--t1/--t1ce/--t2/--flair) "
                "if it is another dataset."
            )
        for m in wanted:
            arrays[m] = arr[MSD_CHANNELS.index(m)]
            geoms[m] = geom
            sources[m] = str(cf.msd_image)
    else:
        for i, m in enumerate(wanted):
            _report(progress, i / n_steps, f"reading {m}: {cf.files[m].name}")
            arr, geom = read_image(cf.files[m])
            if arr.ndim == 4:
                raise InputError(
                    f"The {m} file {str(cf.files[m])!r} is 4D with {arr.shape[0]} channels "
                    f"(array shape {arr.shape}); a single modality must be a 3D volume. Pass a "
                    "3D file, or pass a 4-channel MSD image (FLAIR, T1w, T1gd, T2w) as the case."
                )
            arrays[m] = arr
            geoms[m] = geom
            sources[m] = str(cf.files[m])
    for m in wanted:
        _validate_values(arrays[m], f"The {m} image {sources[m]!r}")

    ref = "flair" if "flair" in wanted else wanted[0]
    ref_geom, ref_shape = geoms[ref], arrays[ref].shape
    ref_name = f"{ref} image {sources[ref]!r}"
    for m in wanted:
        if m != ref:
            arrays[m] = _onto_reference(
                arrays[m],
                geoms[m],
                ref_geom,
                ref_shape,
                name=f"The {m} image {sources[m]!r}",
                ref_name=ref_name,
                nearest=False,
            ).astype(np.float32, copy=False)
    warn_oblique(ref_geom, sources[ref])
    orientation = Orientation.from_geometry(ref_geom)
    stack = np.empty((len(wanted), *ref_shape), dtype=np.float32)
    for i, m in enumerate(wanted):
        stack[i] = arrays.pop(m)  # free each source array as soon as it is copied
    images = orientation.to_canonical(stack)
    del stack

    naming_conv = NAMING_CONVENTION.get(cf.naming)
    if naming_conv is None and cf.seg is not None:  # explicit files: the label file's own name
        seg_match = match_modality(cf.seg.name)
        if seg_match is not None and seg_match[1] == "seg":
            naming_conv = NAMING_CONVENTION[seg_match[0]]
    labels = None
    conv = conv_override or get_convention(naming_conv or "brats2021")
    if cf.seg is not None:
        _report(progress, (n_steps - 1) / n_steps, f"reading labels: {cf.seg.name}")
        try:
            labels, conv = _load_labels(
                cf.seg, conv_override, naming_conv, ref_geom, ref_shape, ref_name, orientation
            )
            sources["seg"] = str(cf.seg)
        except InputError as exc:  # GeometryError is an InputError too
            if label_errors == "raise":
                raise
            warnings.warn(
                f"{_one_line(exc, 600)} The label file was NOT used: the case is loaded "
                "without labels (they are not needed here).",
                UserWarning,
                stacklevel=2,
            )
            labels = None
    _report(progress, 1.0, "case loaded")
    return Case(
        images=images,
        modalities=tuple(wanted),
        geometry=ref_geom,
        orientation=orientation,
        labels=labels,
        convention=conv,
        name=cf.name,
        sources=sources,
        naming=cf.naming,
        matched_by=dict(cf.matched_by),
    )
