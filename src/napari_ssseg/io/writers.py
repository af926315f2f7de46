"""Write labels, images and whole cases with the source geometry, atomically (SimpleITK).

Every writer maps canonical arrays back to the source file's array order
(:meth:`napari_ssseg.core.case.Case.to_file_order`) and writes them with the case's exact
source geometry (spacing, origin, direction), so a saved label lands on the voxels and world
coordinates it was drawn on. Files are written through :func:`napari_ssseg.io.atomic.atomic_path`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import SimpleITK as sitk

from napari_ssseg.core.case import (
    MODALITIES,
    Case,
    Geometry,
    LabelConvention,
    Orientation,
    get_convention,
)
from napari_ssseg.errors import InputError, check_choice
from napari_ssseg.io.atomic import atomic_path, check_writable_dir
from napari_ssseg.io.naming import (
    IMAGE_SUFFIXES,
    MSD_CHANNELS,
    NAMING_CONVENTION,
    NAMINGS,
    is_image_file,
    modality_filename,
    split_image_name,
)
from napari_ssseg.io.readers import _one_line

__all__ = ["save_labels", "save_image", "write_case", "case_from_arrays", "to_sitk", "write_sitk"]


def _check_output_path(path: str | Path, what: str) -> Path:
    if path is None or str(path) == "":
        raise InputError(f"{what}: no output path given.")
    p = Path(path).expanduser()
    _, suffix = split_image_name(p)
    if not suffix:
        raise InputError(
            f"{what} {str(p)!r} has no supported image extension; use one of "
            f"{', '.join(IMAGE_SUFFIXES)} (e.g. {p.name}.nii.gz)."
        )
    if p.is_dir():
        raise InputError(f"{what} {str(p)!r} is a folder; give a file name such as seg.nii.gz.")
    return p


def to_sitk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """SimpleITK image of a file-order array with ``geometry``.

    Parameters
    ----------
    array : (Z, Y, X) or (C, Z, Y, X) ndarray
        File-order voxels. A 4D array becomes a 4D image whose 4th axis holds the channels
        (spacing 1, origin 0 along it), as in MSD files.
    geometry : Geometry
    """
    array = np.asarray(array)
    if array.ndim == 3:
        img = sitk.GetImageFromArray(array)
        img.SetSpacing(geometry.spacing)
        img.SetOrigin(geometry.origin)
        img.SetDirection(geometry.direction)
        return img
    if array.ndim == 4:
        img = sitk.GetImageFromArray(array, isVector=False)
        img.SetSpacing(tuple(geometry.spacing) + (1.0,))
        img.SetOrigin(tuple(geometry.origin) + (0.0,))
        d = np.eye(4)
        d[:3, :3] = geometry.direction_matrix
        img.SetDirection(tuple(d.ravel()))
        return img
    raise InputError(f"Cannot write an array of shape {array.shape}; expected 3D or 4D.")


def write_sitk(image: sitk.Image, path: str | Path, compress: bool = True) -> Path:
    """Write a SimpleITK image atomically (``.mhd``/``.nhdr`` write a separate data file too)."""
    path = Path(path)
    stem, suffix = split_image_name(path)
    if suffix.lower() in (".mhd", ".nhdr"):
        # header + data file: write both into a private temp folder, then move each into place
        # atomically (data first, so the header never points at a missing file).
        parent = check_writable_dir(path.parent if str(path.parent) else ".")
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent))
        try:
            try:
                sitk.WriteImage(image, str(tmpdir / path.name), compress)
            except RuntimeError as exc:
                raise InputError(
                    f"Could not write {str(path)!r}: {_one_line(exc)}. Check the folder and "
                    "the free disk space, or choose another location."
                ) from None
            written = sorted(tmpdir.iterdir(), key=lambda q: q.name == path.name)
            for item in written:
                with atomic_path(parent / item.name, suffix=item.suffix) as tmp:
                    os.replace(item, tmp)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
        return path
    with atomic_path(path) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), compress)
        except RuntimeError as exc:
            raise OSError(f"SimpleITK could not write the file: {_one_line(exc)}") from None
    return path


def save_labels(
    labels: np.ndarray,
    case: Case,
    path: str | Path,
    convention: str | LabelConvention | None = None,
) -> Path:
    """Save internal canonical labels to a file with the case's exact source geometry.

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of int
        Internal labels (0 bg, 1 NCR, 2 ED, 3 ET) in canonical orientation (``case.shape``).
    case : Case
        Case the labels belong to (source geometry and orientation).
    path : path-like
        Output file (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``, ``.mhd``).
    convention : str or LabelConvention, optional
        Convention of the written values; default ``case.convention``.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    InputError
        Wrong shape or values, unsupported extension, unwritable output path.
    """
    path = _check_output_path(path, "Label output")
    internal = case.check_labels(labels)
    conv = get_convention(convention) if convention is not None else case.convention
    values = conv.encode(internal).astype(np.uint8)
    return write_sitk(to_sitk(case.to_file_order(values), case.geometry), path)


def save_image(array: np.ndarray, case: Case, path: str | Path) -> Path:
    """Save a canonical float image (or stack) with the case's exact source geometry.

    Parameters
    ----------
    array : (Z, Y, X) or (C, Z, Y, X) ndarray
        Canonical voxels (``case.shape``). A 4D array is written as a 4D file whose 4th axis
        holds the channels. Floats are written as float32; integer arrays keep their type and
        bool arrays become uint8 (e.g. a brain mask).
    case : Case
    path : path-like
        Output file.

    Returns
    -------
    Path
    """
    path = _check_output_path(path, "Image output")
    array = np.asarray(array)
    if array.ndim not in (3, 4) or tuple(array.shape[-3:]) != case.shape:
        raise InputError(
            f"Image to save has shape {array.shape}; expected {case.shape} or (C, *{case.shape}) "
            f"for case {case.name!r}."
        )
    if array.dtype.kind == "f" and array.dtype != np.float32:
        array = array.astype(np.float32)
    elif array.dtype.kind == "b":
        array = array.astype(np.uint8)
    elif array.dtype.kind not in "fiu":
        raise InputError(f"Cannot save an image of dtype {array.dtype}; use a numeric array.")
    return write_sitk(to_sitk(case.to_file_order(array), case.geometry), path)


def write_case(
    case: Case, out_dir: str | Path, naming: str = "brats2021", name: str | None = None
) -> Path:
    """Write a case's modalities (and labels) as a case folder in a dataset naming scheme.

    Layouts (``NAME`` = ``name`` or ``case.name``), all NIfTI ``.nii.gz``:

    * ``brats2021``: ``NAME/NAME_t1``, ``_t1ce``, ``_t2``, ``_flair`` and ``_seg`` (labels in
      the BraTS 2021 convention: 1, 2, 4).
    * ``brats2023``: ``NAME/NAME-t1n``, ``-t1c``, ``-t2w``, ``-t2f`` and ``-seg`` (1, 2, 3).
    * ``msd``: ``NAME/NAME.nii.gz``, a 4D image with channels FLAIR, T1w, T1gd, T2w (all four
      modalities required), and ``NAME/NAME_label.nii.gz`` (MSD convention).

    Labels are written in the convention of the naming scheme, so :func:`load_case` reads
    them back without a convention hint. Writing again over the same files is allowed; a
    folder that already holds *other* images (another naming or case) is refused.

    Returns
    -------
    Path
        The case folder ``out_dir / NAME``.
    """
    naming = check_choice("naming", naming, NAMINGS)
    name = name or case.name
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise InputError(f"Case name {name!r} is not a valid folder name.")
    conv_name = NAMING_CONVENTION[naming]
    if conv_name is None:  # every writable naming has a label convention
        raise InputError(f"naming={naming!r} has no label convention; use one of {NAMINGS}.")
    conv = get_convention(conv_name)
    if naming == "msd":
        missing = [m for m in MSD_CHANNELS if m not in case.modalities]
        if missing:
            raise InputError(
                f"Case {case.name!r} lacks {', '.join(missing)}; the MSD layout needs all four "
                "modalities (FLAIR, T1w, T1gd, T2w). Write it with naming='brats2021' or "
                "'brats2023' instead."
            )
        plan = [("msd", f"{name}.nii.gz")]
        if case.labels is not None:
            plan.append(("seg", f"{name}_label.nii.gz"))
    else:
        plan = [(m, modality_filename(name, m, naming)) for m in case.modalities]
        if case.labels is not None:
            plan.append(("seg", modality_filename(name, "seg", naming)))
    folder = check_writable_dir(Path(out_dir).expanduser() / name)
    ours = {fname for _, fname in plan}
    others = sorted(
        p.name
        for p in folder.iterdir()
        if not p.name.startswith(".") and is_image_file(p) and p.name not in ours
    )
    if others:
        raise InputError(
            f"Case folder {str(folder)!r} already holds other images ({', '.join(others[:6])}); "
            f"writing the {naming} files there would mix two cases or namings, which cannot be "
            "read back. Write into an empty or new folder, or remove those files."
        )
    for key, fname in plan:
        target = folder / fname
        if key == "msd":
            save_image(np.stack([case.channel(m) for m in MSD_CHANNELS]), case, target)
        elif key == "seg":
            if case.labels is None:  # planned only for a case with labels
                raise InputError(f"Case {case.name!r} has no labels to write.")
            save_labels(case.labels, case, target, conv)
        else:
            save_image(case.channel(key), case, target)
    return folder


def case_from_arrays(
    images: np.ndarray | Sequence[np.ndarray],
    modalities: Sequence[str] | str,
    *,
    spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: Sequence[float] | np.ndarray | None = None,
    labels: np.ndarray | None = None,
    convention: str | LabelConvention = "brats2021",
    name: str = "case",
) -> Case:
    """Build a :class:`Case` from canonical arrays (e.g. a phantom) and a source grid.

    Parameters
    ----------
    images : (C, Z, Y, X) ndarray, (Z, Y, X) ndarray or sequence of (Z, Y, X) ndarrays
        Modalities in **canonical** orientation (axis 0 inferior->superior, 1
        anterior->posterior, 2 right->left).
    modalities : sequence of str
        One name per channel, from :data:`MODALITIES`.
    spacing_zyx : 3 floats
        Voxel size of the source file grid in file array order ``(Z, Y, X)``, mm.
    origin : 3 floats
        LPS world coordinate ``(x, y, z)`` (ITK order, like :attr:`Geometry.origin`) of voxel
        ``(0, 0, 0)`` of the source file grid.
    direction : 9 floats or (3, 3) array, optional
        Direction cosines of the source file grid (ITK row-major, columns = index axes i, j,
        k). Default identity (LPS), in which case the file grid is the canonical grid.
        Any other direction describes the grid the case will be *saved* on: files written by
        :func:`write_case` / :func:`save_labels` hold the arrays reoriented to it.
    labels : (Z, Y, X) ndarray of int, optional
        Internal labels (0, 1 NCR, 2 ED, 3 ET), canonical orientation.
    convention : str
        Label convention used when saving.
    name : str
        Case name.

    Returns
    -------
    Case
    """
    if isinstance(modalities, str):
        modalities = (modalities,)
    if isinstance(images, np.ndarray):
        stack = images[None] if images.ndim == 3 else images
    else:
        items = [np.asarray(a) for a in images]
        if not items:
            raise InputError("case_from_arrays: images is empty; give at least one 3D array.")
        shapes = {a.shape for a in items}
        if len(shapes) != 1 or items[0].ndim != 3:
            raise InputError(
                f"case_from_arrays: images must be 3D arrays of one shape; got {sorted(shapes)}."
            )
        stack = np.stack(items)
    stack = np.asarray(stack, dtype=np.float32)
    if stack.ndim != 4:
        raise InputError(
            f"case_from_arrays: images must be (C, Z, Y, X) or (Z, Y, X); got {stack.shape}."
        )
    sp = [float(s) for s in spacing_zyx]
    if len(sp) != 3:
        raise InputError(f"spacing_zyx must have 3 values; got {list(spacing_zyx)}.")
    dr = np.eye(3) if direction is None else np.asarray(direction, dtype=float).reshape(3, 3)
    # Geometry checks that origin has 3 values
    org = cast("tuple[float, float, float]", tuple(float(o) for o in origin))
    geometry = Geometry((sp[2], sp[1], sp[0]), org, tuple(dr.ravel()))
    orientation = Orientation.from_geometry(geometry)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != stack.shape[1:]:
            raise InputError(
                f"case_from_arrays: labels shape {labels.shape} differs from images "
                f"{stack.shape[1:]}."
            )
    for m in modalities:
        check_choice("modality", m, MODALITIES)
    return Case(
        images=stack,
        modalities=tuple(modalities),
        geometry=geometry,
        orientation=orientation,
        labels=labels,
        convention=get_convention(convention),
        name=name,
        sources={},
        naming="explicit",
    )
