"""Low-level image reading with SimpleITK: files, DICOM series folders and headers.

Paths are checked with messages that name the fix; NIfTI files are checked for truncation and
NaN/Inf voxels before ITK reads them (ITK silently zero-fills or zeroes them). Arrays come back
in **file order** ``(Z, Y, X)`` or ``(C, Z, Y, X)``. Part of :mod:`napari_ssseg.io.readers`,
which re-exports the public names.
"""

from __future__ import annotations

import locale
import os
from pathlib import Path
from typing import cast

import numpy as np
import SimpleITK as sitk

from napari_ssseg.core.case import Geometry
from napari_ssseg.errors import InputError
from napari_ssseg.io.naming import IMAGE_SUFFIXES, is_image_file

__all__ = ["geometry_of", "read_header", "read_image", "read_sitk"]


# ----------------------------------------------------------------------------- low level
def _one_line(exc: BaseException, limit: int = 160) -> str:
    """An exception's text on one line (messages must stay one paragraph)."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__


def _check_path(path: str | os.PathLike | None, what: str = "Input") -> Path:
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
        # a .nii/.nii.gz path (NIfTI-1 or -2); nibabel types load() as the base class
        img = cast("nib.Nifti1Image", nib.load(str(path)))
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
