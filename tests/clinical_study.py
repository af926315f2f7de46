"""A tiny synthetic clinical study for fast tests (issue 13): series on two grids, one moved.

A phantom head (scalp shell, darker brain, bright lesion) in world millimetres; FLAIR and T2 on
a 2 mm grid, T1 on a 2 x 2 x 3 mm grid with the head moved 4 mm along x (so registration has
something to find). Used by tests/ml/test_clinical_cache.py and
tests/commands/test_refine_clinical.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

FINE = (2.0, 2.0, 2.0)
THICK = (2.0, 2.0, 3.0)
#: Lesion centre offset (mm, x y z) from the head centre and its radius (mm).
LESION = ((6.0, -4.0, 0.0), 6.0)


def head(shape, spacing, shift_mm=(0.0, 0.0, 0.0), seed=0) -> np.ndarray:
    """Phantom head on a grid of ``shape`` (z, y, x) and ``spacing`` (x, y, z), origin 0."""
    zz, yy, xx = np.indices(shape).astype(float)
    x, y, z = (xx * spacing[0], yy * spacing[1], zz * spacing[2])
    c = np.array([32.0, 32.0, 30.0]) + np.asarray(shift_mm)
    r = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + ((z - c[2]) * 1.2) ** 2)
    img = np.where(r < 26, 100.0, 0.0) + np.where(r < 20, -40.0, 0.0)
    off, rad = LESION
    les = np.sqrt((x - c[0] - off[0]) ** 2 + (y - c[1] - off[1]) ** 2 + (z - c[2]) ** 2) < rad
    img = img + np.where(les, 90.0, 0.0)
    rng = np.random.default_rng(seed)
    return (img + rng.normal(0, 1.0, shape)).astype(np.float32)


def lesion_mask(shape, spacing) -> np.ndarray:
    """The (unmoved) lesion on a grid, file order (z, y, x)."""
    zz, yy, xx = np.indices(shape).astype(float)
    x, y, z = (xx * spacing[0], yy * spacing[1], zz * spacing[2])
    (ox, oy, _), rad = LESION
    return np.sqrt((x - 32 - ox) ** 2 + (y - 32 - oy) ** 2 + (z - 30) ** 2) < rad


def write(path, arr, spacing) -> Path:
    """Write a (z, y, x) array with ``spacing`` (x, y, z) and origin 0."""
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(img, str(path))
    return Path(path)


def make_study(folder: Path) -> dict[str, Path]:
    """Write the study into ``folder``; returns ``{"flair", "t2", "t1"}`` -> file."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "flair": write(folder / "flair.nii.gz", head((30, 32, 32), FINE, seed=1), FINE),
        "t2": write(folder / "t2.nii.gz", head((30, 32, 32), FINE, seed=2), FINE),
        "t1": write(folder / "t1.nii.gz", head((20, 32, 32), THICK, (4.0, 0, 0), 3), THICK),
    }


def fake_brain_extraction(monkeypatch) -> list:
    """Replace deepbet by a T1 threshold (> 30: the phantom head's brain and scalp shell).

    deepbet itself is tested in tests/ml/test_brain_extraction.py. Returns the list that
    gets one item per extraction run (to count them).
    """
    import napari_ssseg.ml.brain_extraction as brain_extraction

    calls: list = []

    def extract(images, modalities, spacing_zyx, **kwargs):
        calls.append(1)
        return images[list(modalities).index("t1")] > 30, {"sequence": "t1", "check": {}}

    monkeypatch.setattr(brain_extraction, "extract_brain_case", extract)
    return calls
