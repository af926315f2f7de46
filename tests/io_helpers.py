"""Helpers for io tests: tiny synthetic images written with SimpleITK."""

from __future__ import annotations

import locale
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from napari_ssseg.core.case import Geometry

#: Small file-order shape (Z, Y, X) used across io tests.
SHAPE = (10, 14, 12)

DIRECTIONS = {
    "LPS": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "RAS": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
    # i -> P, j -> S, k -> L (a sagittal-like acquisition; proper rotation)
    "PSL": (0, 0, 1, 1, 0, 0, 0, 1, 0),
    # i -> A, j -> S, k -> R
    "ASR": (0, 0, -1, -1, 0, 0, 0, 1, 0),
}


def oblique_direction(angle_deg: float = 20.0) -> tuple[float, ...]:
    """LPS direction rotated about the z axis by ``angle_deg``."""
    a = np.deg2rad(angle_deg)
    r = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    return tuple(r.ravel())


def seg_blocks(values=(1, 2, 4)) -> np.ndarray:
    """A label volume on :data:`SHAPE` with one small block per value (file order)."""
    seg = np.zeros(SHAPE, np.uint8)
    for i, v in enumerate(values):
        seg[2 + i, 3:6, 4:7] = v
    return seg


def imported_heavy_modules(imports: str, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` a fresh interpreter has in ``sys.modules`` after ``import imports``."""
    import subprocess
    import sys

    code = f"import sys, {imports}\nprint(','.join(m for m in {names!r} if m in sys.modules))\n"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in res.stdout.strip().split(",") if m]


def random_volume(shape=SHAPE, seed: int = 0, dtype=np.float32) -> np.ndarray:
    """Positive integer-valued volume (so it survives int16 DICOM exactly)."""
    rng = np.random.default_rng(seed)
    return rng.integers(1, 1000, size=shape).astype(dtype)


def write_volume(path: Path, array: np.ndarray, geometry: Geometry | None = None, **kw) -> Path:
    """Write a file-order (Z, Y, X) or (C, Z, Y, X) array with SimpleITK (no package code)."""
    geometry = geometry or Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    array = np.asarray(array)
    img = sitk.GetImageFromArray(array, isVector=False)
    if array.ndim == 4:
        img.SetSpacing(tuple(geometry.spacing) + (1.0,))
        img.SetOrigin(tuple(geometry.origin) + (0.0,))
        d = np.eye(4)
        d[:3, :3] = geometry.direction_matrix
        img.SetDirection(tuple(d.ravel()))
    elif array.ndim == 3:
        img.SetSpacing(geometry.spacing)
        img.SetOrigin(geometry.origin)
        img.SetDirection(geometry.direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), True)
    return path


def write_dicom_series(
    folder: Path,
    array: np.ndarray,
    geometry: Geometry,
    series_uid: str = "1.2.826.0.1.3680043.2.1125.1.12345",
    prefix: str = "slice",
) -> Path:
    """Write a file-order (Z, Y, X) array as a DICOM series (one int16 file per slice).

    GDCM's writer resets the process locale to "C" (which makes Python's ``open()`` default to
    ASCII for the rest of the process), so the locale is restored afterwards.
    """
    saved_locale = locale.setlocale(locale.LC_ALL)
    try:
        return _write_dicom_series(folder, array, geometry, series_uid, prefix)
    finally:
        locale.setlocale(locale.LC_ALL, saved_locale)


def _write_dicom_series(
    folder: Path, array: np.ndarray, geometry: Geometry, series_uid: str, prefix: str
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(array.astype(np.int16))
    img.SetSpacing(geometry.spacing)
    img.SetOrigin(geometry.origin)
    img.SetDirection(geometry.direction)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = geometry.direction
    common = [
        ("0008|0031", "120000"),
        ("0008|0021", "20260101"),
        ("0008|0060", "MR"),
        ("0020|000e", series_uid),
        ("0020|000d", series_uid + ".1"),
        ("0020|0037", "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7]))),
        ("0008|103e", "ssseg test series"),
        ("0010|0010", "Phantom"),
    ]
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        for tag, value in common:
            sl.SetMetaData(tag, value)
        pos = img.TransformIndexToPhysicalPoint((0, 0, k))
        sl.SetMetaData("0020|0032", "\\".join(str(v) for v in pos))
        sl.SetMetaData("0020|0013", str(k + 1))
        sl.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        writer.SetFileName(str(folder / f"{prefix}{k:03d}.dcm"))
        writer.Execute(sl)
    return folder


def write_brats_case(
    folder: Path,
    name: str = "BraTS2021_00001",
    naming: str = "brats2021",
    modalities=("t1", "t1ce", "t2", "flair"),
    seg: np.ndarray | None = None,
    geometry: Geometry | None = None,
    suffix: str = ".nii.gz",
) -> dict[str, np.ndarray]:
    """Write a case folder with SimpleITK directly; return the file-order arrays written."""
    from napari_ssseg.io.naming import MODALITY_SUFFIX

    out = {}
    for i, m in enumerate(modalities):
        arr = random_volume(seed=i)
        write_volume(folder / f"{name}{MODALITY_SUFFIX[naming][m]}{suffix}", arr, geometry)
        out[m] = arr
    if seg is not None:
        write_volume(folder / f"{name}{MODALITY_SUFFIX[naming]['seg']}{suffix}", seg, geometry)
        out["seg"] = seg
    return out
