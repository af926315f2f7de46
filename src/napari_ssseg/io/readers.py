"""Read multimodal brain MRI cases and label files with SimpleITK.

Supported inputs (see ``docs/data-formats.md``):

* a folder in BraTS 2019-2021 naming (``*_t1``, ``*_t1ce``, ``*_t2``, ``*_flair``, ``*_seg``),
* a folder in BraTS 2023+ naming (``*-t1n``, ``*-t1c``, ``*-t2w``, ``*-t2f``, ``*-seg``),
* an MSD Task01 4D image (channels FLAIR, T1w, T1gd, T2w) with its label file,
* explicit per-modality files, any non-empty subset of the four modalities;

in ``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``/``.mhd`` or as DICOM series folders.

Arrays returned by :func:`read_image` are in **file order** ``(Z, Y, X)``; a :class:`Case`
holds them in canonical orientation (see :mod:`napari_ssseg.core.case`).
"""

from __future__ import annotations

import locale
import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from napari_ssseg.core.case import (
    CONVENTION_SIBLINGS,
    CONVENTIONS,
    MODALITIES,
    Case,
    Geometry,
    LabelConvention,
    Orientation,
    get_convention,
    warn_oblique,
)
from napari_ssseg.core.progress import ProgressCallback, report
from napari_ssseg.errors import GeometryError, InputError, check_choice
from napari_ssseg.io.naming import (
    IMAGE_SUFFIXES,
    MSD_CHANNELS,
    NAMING_CONVENTION,
    is_image_file,
    match_modality,
    match_series,
    split_image_name,
)

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

#: Maximum difference (mm, and unitless for direction cosines) for two grids to count as equal.
GRID_TOLERANCE = 1e-3


# ----------------------------------------------------------------------------- low level
def _one_line(exc: BaseException, limit: int = 160) -> str:
    """An exception's text on one line (messages must stay one paragraph)."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__


def _check_path(path: str | Path, what: str = "Input") -> Path:
    if path is None or str(path) == "":
        raise InputError(f"{what}: no path given. Pass a case folder or an image file.")
    p = Path(path).expanduser()
    if not p.exists():
        parent = p.parent if str(p.parent) else Path(".")
        hint = ""
        if parent.is_dir():
            near = sorted(c.name for c in parent.iterdir() if not c.name.startswith("."))
            import difflib

            close = difflib.get_close_matches(p.name, near, n=3)
            if close:
                hint = f" Similar names in {str(parent)!r}: {', '.join(close)}."
        raise InputError(
            f"{what} {str(p)!r} does not exist. Check the path (it is relative to the current "
            f"folder {str(Path.cwd())!r} unless absolute).{hint}"
        )
    return p


def _dicom_series_files(folder: Path) -> list[str]:
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise InputError(
            f"{str(folder)!r} is a folder but holds no DICOM series and is not a recognised case "
            "folder. Point to a case folder (BraTS or MSD naming), an image file "
            f"({', '.join(IMAGE_SUFFIXES)}) or a folder holding one DICOM series."
        )
    if len(ids) > 1:
        raise InputError(
            f"DICOM folder {str(folder)!r} holds {len(ids)} series ({', '.join(ids)}). Put each "
            "series in its own folder and pass that folder."
        )
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]))


def read_sitk(path: str | Path, what: str = "Image") -> sitk.Image:
    """Read an image file or a DICOM series folder into a SimpleITK image.

    Parameters
    ----------
    path : path-like
        ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd`` file, or a folder that
        holds exactly one DICOM series.
    what : str
        Word used in error messages (``"Image"``, ``"Label file"``...).

    Raises
    ------
    InputError
        Missing path, unsupported extension, or a file SimpleITK cannot read (corrupt or
        truncated).
    """
    p = _check_path(path, what)
    try:
        if p.is_dir():
            saved_locale = locale.setlocale(locale.LC_ALL)
            try:
                files = _dicom_series_files(p)
                reader = sitk.ImageSeriesReader()
                reader.SetFileNames(files)
                return reader.Execute()
            finally:  # GDCM may reset the process locale to "C" (open() would default to ASCII)
                locale.setlocale(locale.LC_ALL, saved_locale)
        if not is_image_file(p) and p.suffix.lower() not in (".dcm", ".ima", ""):
            raise InputError(
                f"{what} {str(p)!r} has an unsupported extension. Supported: "
                f"{', '.join(IMAGE_SUFFIXES)} and DICOM series folders. Convert the file "
                "(e.g. with SimpleITK or dcm2niix) or rename it if the extension is wrong."
            )
        if p.name.lower().endswith((".nii", ".nii.gz")):
            _check_nifti_complete(p, what)
        return sitk.ReadImage(str(p))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = next(
            (ln for ln in first if "rror" in ln or "annot" in ln), first[-1] if first else ""
        )
        raise InputError(
            f"{what} {str(p)!r} could not be read: it is corrupt, truncated or not an image "
            f"({detail.strip()[:200]}). Re-download or re-export the file and check that the "
            "copy finished."
        ) from None


def _truncated_error(path: Path, detail: str, what: str = "Image") -> InputError:
    return InputError(
        f"{what} {str(path)!r} is truncated or corrupt ({detail}). The file is incomplete, "
        "usually because a download or copy was interrupted. Re-download or re-export it."
    )


def _check_nifti_complete(path: Path, what: str = "Image") -> None:
    """Raise if a NIfTI file is truncated, or holds NaN/Inf voxels.

    ITK silently zero-fills a truncated NIfTI file, so this is checked before reading: for
    ``.nii`` from the file size; for ``.nii.gz`` from the gzip trailer (uncompressed size
    modulo 2**32), falling back to streaming the whole file when the trailer disagrees
    (concatenated gzip members, or a truncated file).
    """
    import gzip
    import zlib

    import nibabel as nib

    try:
        img = nib.load(str(path))
        header = img.header
        shape = header.get_data_shape()
        itemsize = np.dtype(header.get_data_dtype()).itemsize
        offset = int(getattr(img.dataobj, "offset", header.get_data_offset()))
    except Exception as exc:  # noqa: BLE001 - any header failure is a corrupt file
        raise _truncated_error(path, f"header unreadable: {_one_line(exc)}", what) from None
    expected = offset + int(np.prod(shape, dtype=np.int64)) * itemsize
    is_float = np.issubdtype(header.get_data_dtype(), np.floating)
    if path.name.lower().endswith(".gz"):
        trailer_ok = False
        if path.stat().st_size >= 18:
            with open(path, "rb") as fh:
                fh.seek(-4, os.SEEK_END)
                trailer_ok = int.from_bytes(fh.read(4), "little") == expected % 2**32
        if not trailer_ok and not is_float:  # float data is fully decompressed below anyway
            total = 0
            try:
                with gzip.open(path, "rb") as fh:
                    while chunk := fh.read(1 << 22):
                        total += len(chunk)
            except (EOFError, OSError, zlib.error) as exc:
                raise _truncated_error(path, f"gzip stream: {exc}", what) from None
            if total < expected:
                raise _truncated_error(
                    path, f"{total} of {expected} bytes after decompression", what
                )
    elif path.stat().st_size < expected:
        raise _truncated_error(path, f"{path.stat().st_size} of {expected} bytes", what)
    if is_float:
        # ITK's NIfTI reader silently turns NaN voxels into 0, so check the raw voxels here.
        try:
            raw = np.asarray(img.dataobj)
        except Exception as exc:  # noqa: BLE001 - unreadable voxel data
            raise _truncated_error(path, f"voxel data unreadable: {_one_line(exc)}", what) from None
        n_bad = int(raw.size - np.count_nonzero(np.isfinite(raw)))
        if n_bad:
            raise InputError(
                f"{what} {str(path)!r} contains {n_bad} NaN or Inf voxel(s). Fix the file (e.g. "
                "replace them with 0 in the tool that produced it) or re-export the scan."
            )


def read_header(path: str | Path) -> sitk.ImageFileReader:
    """A SimpleITK reader holding the header of ``path`` (no voxels are read).

    It answers ``GetSize``, ``GetSpacing``, ``GetOrigin``, ``GetDirection`` and
    ``GetDimension`` like an image, so :func:`geometry_of` accepts it.

    Raises
    ------
    InputError
        If the header cannot be read (corrupt file, not an image).
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(
            f"Image {str(path)!r} could not be read: its header is corrupt or it is not an "
            "image. Re-download or re-export the file."
        ) from None
    return reader


def _read_info(path: Path) -> tuple[int, tuple[int, ...]]:
    """(dimension, size) of an image file from its header only."""
    reader = read_header(path)
    size = tuple(int(s) for s in reader.GetSize())
    ncomp = int(reader.GetNumberOfComponents())
    if ncomp > 1:
        return len(size) + 1, size + (ncomp,)
    return len(size), size


def geometry_of(image: sitk.Image | sitk.ImageFileReader) -> Geometry:
    """The 3D :class:`Geometry` of a SimpleITK image or header (first three axes of 4D)."""
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)[:3, :3]
    return Geometry(
        tuple(image.GetSpacing()[:3]), tuple(image.GetOrigin()[:3]), tuple(direction.ravel())
    )


def _array_of(image: sitk.Image, source: str) -> np.ndarray:
    """File-order array ``(Z, Y, X)`` or ``(C, Z, Y, X)``; rejects 2D and >4D images."""
    spatial = image.GetDimension()
    ncomp = image.GetNumberOfComponentsPerPixel()
    if spatial < 3:
        raise InputError(
            f"{source} is a 2D image (size {tuple(image.GetSize())}); a 3D volume is needed. "
            "Use the full 3D scan (all slices), not a single slice or a screenshot."
        )
    if spatial > 4 or (spatial == 4 and ncomp > 1):
        raise InputError(
            f"{source} has more than 4 dimensions (size {tuple(image.GetSize())}, {ncomp} "
            "component(s) per voxel); expected a 3D volume or a 4D image whose 4th axis holds "
            "the modalities."
        )
    arr = sitk.GetArrayFromImage(image)
    if ncomp > 1:  # 3D vector image: (Z, Y, X, C) -> (C, Z, Y, X)
        arr = np.moveaxis(arr, -1, 0)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if min(arr.shape[-3:]) < 2:
        raise InputError(
            f"{source} is a 2D image: its shape (Z, Y, X) is {arr.shape[-3:]}, with a single "
            "voxel along one axis. Use the full 3D scan (all slices), not a single slice."
        )
    return arr


def read_image(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Read a 3D or 4D image as a float32 array in file order, with its geometry.

    Parameters
    ----------
    path : path-like
        Image file (``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``, ``.mhd``) or DICOM series folder.

    Returns
    -------
    array : (Z, Y, X) or (C, Z, Y, X) ndarray of float32
        Voxels in the file's array order (C = 4th file axis, e.g. MSD modalities).
    geometry : Geometry
        Spacing, origin and direction of the first three axes (ITK/LPS conventions).

    Raises
    ------
    InputError
        Missing or unreadable file, 2D image, more than 4 dimensions.
    """
    image = read_sitk(path)
    arr = _array_of(image, f"Image {str(path)!r}")
    return arr.astype(np.float32, copy=False), geometry_of(image)


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


# ----------------------------------------------------------------------------- case files
@dataclass
class CaseFiles:
    """Files making up one case, as found by :func:`find_case_files`.

    Attributes
    ----------
    naming : str
        ``"brats2021"``, ``"brats2023"``, ``"msd"`` or ``"explicit"``.
    files : dict of str to Path
        Modality -> file (or DICOM folder). For MSD every modality maps to the 4D image.
    seg : Path or None
        Label file, if any.
    msd_image : Path or None
        The 4D MSD image, if the case is in MSD layout.
    name : str
        Case name (e.g. ``BraTS2021_00000``).
    matched_by : dict of str to str
        For a PACS / TCIA folder (naming ``"pacs"``): modality -> the sequence keywords of
        its file name that chose it.
    """

    naming: str
    files: dict[str, Path] = field(default_factory=dict)
    seg: Path | None = None
    msd_image: Path | None = None
    name: str = "case"
    matched_by: dict[str, str] = field(default_factory=dict)

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities present, in :data:`MODALITIES` order (t1, t1ce, t2, flair)."""
        return tuple(m for m in MODALITIES if m in self.files)


def _is_label_stem(stem: str) -> bool:
    s = stem.lower()
    return s in ("label", "labels", "seg", "segmentation") or s.endswith(
        ("_label", "_labels", "-label", "-labels")
    )


def _candidates(folder: Path) -> list[Path]:
    out = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_file() and is_image_file(child):
            out.append(child)
        elif child.is_dir() and match_modality(child.name) is not None:
            out.append(child)  # DICOM series folder named like a modality
    return out


def _duplicate_error(key: str, paths: Iterable[Path], folder: Path | None) -> InputError:
    names = ", ".join(repr(str(p)) for p in paths)
    where = f" in {str(folder)!r}" if folder else ""
    what = "the label file" if key == "seg" else f"the {key} modality"
    return InputError(
        f"Two or more files{where} claim {what}: {names}. A case folder must hold exactly one "
        "file per modality (one case, one format). Remove or move the extra file, or pass the "
        "files explicitly (e.g. `--t1 FILE --flair FILE`)."
    )


def _msd_label_for(image: Path) -> Path | None:
    stem, suffix = split_image_name(image)
    folder = image.parent
    options = []
    if folder.name.lower().startswith("images"):
        sibling = folder.parent / ("labels" + folder.name[len("images") :])
        options += [sibling / image.name] + [sibling / f"{stem}{s}" for s in IMAGE_SUFFIXES]
    for tag in ("_label", "_labels", "_seg", "-label", "-seg"):
        options += [folder / f"{stem}{tag}{s}" for s in IMAGE_SUFFIXES]
    for opt in options:
        if opt.is_file():
            return opt
    return None


def _msd_case(image: Path) -> CaseFiles:
    dim, size = _read_info(image)
    if dim != 4:
        raise InputError(
            f"Image {str(image)!r} has {dim} dimensions (size {size}) and its name does not say "
            "which modality it is. Name it in BraTS style (e.g. CASE_flair.nii.gz) or pass it "
            "explicitly (`--flair FILE`); a single-file MSD case must be a 4D image with the "
            "channels FLAIR, T1w, T1gd, T2w."
        )
    stem, _ = split_image_name(image)
    return CaseFiles(
        naming="msd",
        files={m: image for m in MSD_CHANNELS},
        seg=_msd_label_for(image),
        msd_image=image,
        name=stem,
    )


def _warn_unused(paths: Sequence[Path], folder: Path) -> None:
    """Warn about image files of a case folder that were not read (never drop them silently)."""
    if not paths:
        return
    labels = [p for p in paths if _is_label_stem(split_image_name(p)[0])]
    others = [p for p in paths if p not in labels]
    parts = []
    if others:
        parts.append(
            f"image file(s) {', '.join(repr(p.name) for p in others)} match no modality name "
            "(expected e.g. CASE_t1, CASE_t1ce/CASE_T1GD, CASE_t2, CASE_flair, CASE-t1n, "
            "CASE-t1c, CASE-t2w, CASE-t2f)"
        )
    if labels:
        parts.append(
            f"label-like file(s) {', '.join(repr(p.name) for p in labels)} do not follow the "
            "case's naming (CASE_seg, CASE-seg, CASE_segm)"
        )
    warnings.warn(
        f"Folder {str(folder)!r}: {'; '.join(parts)}; they were NOT read. Rename them, or pass "
        "them explicitly (--t1/--t1ce/--t2/--flair/--seg FILE).",
        UserWarning,
        stacklevel=4,
    )


class AmbiguousSeriesError(InputError):
    """The series of a PACS / TCIA folder cannot be told apart by their names."""


def _is_2d_file(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        dim, size = _read_info(path)
    except InputError:
        return False  # unreadable: reported when it is read
    return dim < 3 or min(size[:3]) < 2


def _pacs_case(
    folder: Path, candidates: Sequence[Path], assigned: dict[str, Path] | None
) -> CaseFiles | None:
    """One case from a folder of PACS / TCIA series named by sequence (FLAIR, T1 POST GAD...).

    Returns None when no file name holds a sequence keyword. Files given explicitly
    (``assigned``) settle their modality; skipped and unused files are named in a warning.

    Raises
    ------
    AmbiguousSeriesError
        Two series claim one modality, or one series could be several modalities.
    """
    assigned = dict(assigned or {})
    taken = {Path(p).resolve() for p in assigned.values()}
    per_file: dict[Path, dict[str, str]] = {}
    skipped: list[str] = []
    unknown: list[Path] = []
    labels: list[Path] = []
    for p in candidates:
        if p.resolve() in taken:
            continue
        m = match_modality(p.name)
        if _is_label_stem(split_image_name(p)[0]) or (m is not None and m[1] == "seg"):
            labels.append(p)
            continue
        cand, skip = match_series(p.name)
        if skip is not None:
            skipped.append(f"{p.name!r} ({skip})")
            continue
        if not cand:
            unknown.append(p)
            continue
        if _is_2d_file(p):
            skipped.append(f"{p.name!r} (a 2D series)")
            continue
        per_file[p] = cand
    if not per_file and not assigned:
        return None
    mapping: dict[str, tuple[Path, str]] = {}
    unused: list[str] = []
    changed = True
    while changed:
        changed = False
        for p in list(per_file):
            cand = {m: w for m, w in per_file[p].items() if m not in mapping and m not in assigned}
            if not cand:
                gone = ", ".join(per_file[p])
                unused.append(f"{p.name!r} ({gone}: already given)")
                del per_file[p]
                continue
            per_file[p] = cand
            if len(cand) == 1:
                mod = next(iter(cand))
                if sum(mod in c for c in per_file.values()) == 1:
                    mapping[mod] = (p, cand[mod])
                    del per_file[p]
                    changed = True
    if per_file:
        claims: dict[str, list[str]] = {}
        multi: list[str] = []
        for p, cand in per_file.items():
            for mod, words in cand.items():
                claims.setdefault(mod, []).append(f"{p.name!r} ({words})")
            if len(cand) > 1:
                multi.append(
                    f"{p.name!r} could be " + " or ".join(f"{m} ({w})" for m, w in cand.items())
                )
        parts = [f"{m}: {', '.join(v)}" for m, v in claims.items() if len(v) > 1] + multi
        example = next(iter(per_file))
        mod = next(iter(per_file[example]))
        raise AmbiguousSeriesError(
            f"Folder {str(folder)!r} looks like a PACS / TCIA export (series named by sequence), "
            f"but their names are ambiguous: {'; '.join(parts)}. Settle it by naming the file "
            f"of each ambiguous modality, e.g. `--modality {mod}={str(example)!r}` (modalities "
            "t1, t1ce/t1c, t2, flair; repeat the flag), or move the extra series out of the "
            "folder."
        )
    notes = []
    if skipped:
        notes.append(f"skipped series that are none of T1, T1c, T2, FLAIR: {', '.join(skipped)}")
    if unknown:
        notes.append(
            f"file(s) whose names hold no sequence keyword: "
            f"{', '.join(repr(p.name) for p in unknown)}"
        )
    if unused:
        notes.append(f"series not used: {', '.join(unused)}")
    if len(labels) > 1:
        notes.append(
            f"several label-like files ({', '.join(repr(p.name) for p in labels)}), none used"
        )
    if notes:
        warnings.warn(
            f"Folder {str(folder)!r} (PACS / TCIA series): {'; '.join(notes)}. Pass a file "
            "explicitly with --modality MOD=FILE if one of them is needed.",
            UserWarning,
            stacklevel=4,
        )
    return CaseFiles(
        naming="pacs",
        files={m: mapping[m][0] for m in MODALITIES if m in mapping},
        seg=labels[0] if len(labels) == 1 else None,
        name=folder.name,
        matched_by={m: mapping[m][1] for m in MODALITIES if m in mapping},
    )


def _find_in_folder(folder: Path, assigned: dict[str, Path] | None = None) -> CaseFiles:
    # MSD dataset layout: imagesTr/ (+ labelsTr/) with a single case
    for sub in ("imagesTr", "imagesTs"):
        images_dir = folder / sub
        if images_dir.is_dir():
            imgs = [p for p in _candidates(images_dir) if p.is_file()]
            if len(imgs) == 1:
                return _msd_case(imgs[0])
            if len(imgs) > 1:
                raise InputError(
                    f"{str(images_dir)!r} holds {len(imgs)} MSD cases; ssseg reads one case at "
                    f"a time. Pass one image file, e.g. {str(imgs[0])!r}."
                )
    matched: dict[str, list[Path]] = {}
    namings: dict[str, str] = {}
    names: dict[str, list[Path]] = {}
    unmatched: list[Path] = []
    for cand in _candidates(folder):
        m = match_modality(cand.name)
        if m is None:
            unmatched.append(cand)
            continue
        naming, key, name = m
        matched.setdefault(key, []).append(cand)
        if key != "seg" or naming == "upenn":
            namings[key] = naming
        if name:
            names.setdefault(name, []).append(cand)
    modality_keys = [k for k in matched if k != "seg"]
    unmatched_images = [p for p in unmatched if not _is_label_stem(split_image_name(p)[0])]
    if modality_keys and unmatched_images:
        conflict = len(names) > 1 or any(len(v) > 1 for v in matched.values())
        if conflict:  # dataset naming does not fit: maybe series of a PACS / TCIA export
            pacs = _pacs_case(folder, _candidates(folder), assigned)
            if pacs is not None:
                return pacs
    if modality_keys:
        for key, paths in matched.items():
            if len(paths) > 1:
                raise _duplicate_error(key, paths, folder)
        if len(names) > 1:
            listing = "; ".join(
                f"{n!r}: {', '.join(p.name for p in ps)}" for n, ps in sorted(names.items())
            )
            raise InputError(
                f"Folder {str(folder)!r} holds files of more than one case ({listing}). Put "
                "each case in its own folder, or pass the files explicitly with "
                "--t1/--t1ce/--t2/--flair/--seg."
            )
        naming_set = set(namings.values())
        if "upenn" in naming_set and naming_set <= {"upenn", "brats2021"}:
            naming_set = {"upenn"}  # _T1, _T2, _FLAIR are shared by both namings
        naming = naming_set.pop() if len(naming_set) == 1 else "brats2021"
        if len(set(namings.values()) - {"upenn"}) > 1:
            log.warning("%s mixes BraTS 2021 and 2023 file names", folder)
        _warn_unused(unmatched, folder)
        name = next(iter(names)) if names else folder.name
        seg = matched["seg"][0] if "seg" in matched else None
        return CaseFiles(
            naming=naming,
            files={k: matched[k][0] for k in MODALITIES if k in matched},
            seg=seg,
            name=name or folder.name,
        )
    images = [p for p in unmatched if p.is_file() and not _is_label_stem(split_image_name(p)[0])]
    if len(images) > 1 or (images and assigned):
        pacs = _pacs_case(folder, _candidates(folder), assigned)
        if pacs is not None:
            return pacs
    if len(images) == 1:
        return _msd_case(images[0])
    if len(images) > 1:
        raise InputError(
            f"Folder {str(folder)!r} holds {len(images)} images whose names do not follow BraTS "
            f"naming ({', '.join(p.name for p in images[:6])}), so their modalities are unknown. "
            "Rename them (CASE_t1, CASE_t1ce, CASE_t2, CASE_flair, CASE_seg), name the sequence "
            "in each (FLAIR, T1, T1 POST GAD, T2, as PACS exports do) or pass them explicitly "
            "with --t1/--t1ce/--t2/--flair/--seg (or --modality MOD=FILE)."
        )
    if any(c.is_file() for c in folder.iterdir()) and not matched:
        try:  # the folder itself may be a DICOM series
            _dicom_series_files(folder)
        except InputError:
            pass
        else:
            raise InputError(
                f"{str(folder)!r} is a DICOM series folder, so its modality is unknown. Pass "
                "it explicitly, e.g. `--flair FOLDER` (or load_case(flair=FOLDER))."
            )
    raise InputError(
        f"No images found in {str(folder)!r}. Expected BraTS 2021 names (CASE_t1.nii.gz, "
        "CASE_t1ce, CASE_t2, CASE_flair), BraTS 2023 names (CASE-t1n, -t1c, -t2w, -t2f), an MSD "
        f"4D image, or DICOM series folders named like a modality; extensions "
        f"{', '.join(IMAGE_SUFFIXES)}."
    )


def find_case_files(
    path: str | Path | None = None,
    *,
    t1: str | Path | None = None,
    t1ce: str | Path | None = None,
    t2: str | Path | None = None,
    flair: str | Path | None = None,
    seg: str | Path | None = None,
) -> CaseFiles:
    """Find the files of one case and recognise its naming scheme (no voxels are read).

    Parameters
    ----------
    path : path-like, optional
        A case folder (BraTS 2021/2023 naming, MSD layout), an MSD 4D image file, or a single
        BraTS-named modality file.
    t1, t1ce, t2, flair, seg : path-like, optional
        Explicit files (or DICOM folders). They override files found in ``path``.

    Returns
    -------
    CaseFiles

    Raises
    ------
    InputError
        Missing path, nothing recognisable, two files claiming one modality.
    """
    explicit = {
        k: v
        for k, v in {"t1": t1, "t1ce": t1ce, "t2": t2, "flair": flair}.items()
        if v is not None and str(v) != ""
    }
    if path is None or str(path) == "":
        if not explicit:
            if seg:
                raise InputError(
                    f"Only a label file was given ({str(seg)!r}); a case needs at least one "
                    "image. Add --t1/--t1ce/--t2/--flair or a case folder."
                )
            raise InputError(
                "No input given: pass a case folder, an MSD image, or at least one of "
                "--t1, --t1ce, --t2, --flair."
            )
        files = {k: _check_path(v, f"{k} file") for k, v in explicit.items()}
        seen: dict[Path, str] = {}
        for k, p in files.items():
            if p.resolve() in seen:
                raise InputError(
                    f"The same file {str(p)!r} was given for both {seen[p.resolve()]} and {k}. "
                    "Give each modality its own file."
                )
            seen[p.resolve()] = k
        name = split_image_name(next(iter(files.values())))[0]
        m = match_modality(name)
        if m and m[2]:
            name = m[2]
        cf = CaseFiles(naming="explicit", files=files, name=name)
    else:
        p = _check_path(path, "Case")
        if p.is_dir():
            try:
                cf = _find_in_folder(p, {k: Path(v) for k, v in explicit.items()})
            except InputError as exc:
                if not explicit or isinstance(exc, AmbiguousSeriesError):
                    raise
                # the explicit files are enough: ignore a folder that holds nothing usable
                log.info("ignoring folder %s (%s); using the explicit files", p, exc)
                cf = CaseFiles(naming="explicit", name=p.name)
        else:
            m = match_modality(p.name)
            if m is None:
                cf = _msd_case(p)
            elif m[1] == "seg":
                raise InputError(
                    f"{str(p)!r} is a label file, not an image. Open its case folder, or pass "
                    "images with --t1/--t1ce/--t2/--flair and this file with --seg."
                )
            else:
                cf = CaseFiles(naming=m[0], files={m[1]: p}, name=m[2] or p.parent.name)
        if explicit:
            if cf.msd_image is not None:
                raise InputError(
                    f"{str(p)!r} is an MSD 4D image holding all modalities; do not combine it "
                    "with --t1/--t1ce/--t2/--flair. Pass either the MSD image or separate files."
                )
            for k, v in explicit.items():
                cf.files[k] = _check_path(v, f"{k} file")
    if seg is not None and str(seg) != "":
        cf.seg = _check_path(seg, "Label file")
    return cf


def parse_modality_args(items: Sequence[str] | None) -> dict[str, str]:
    """Parse ``--modality MOD=FILE`` flags into ``{canonical modality: FILE}``.

    ``MOD`` is any modality name or alias (``t1c``, ``t1gd``, ``T1ce``, ``flair``, ``t2f``...).

    Raises
    ------
    InputError
        A flag without ``=``, an unknown modality, or one modality given twice.
    """
    from napari_ssseg.core.case import normalize_modality

    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(
                f"--modality {item!r}: expected MOD=FILE, e.g. --modality t1c=series.nii.gz."
            )
        mod = normalize_modality(key)
        if mod in out:
            raise InputError(f"--modality gives {mod} twice ({out[mod]!r} and {value!r}).")
        out[mod] = value.strip()
    return out


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
