"""A label painted on canonical voxel (z, y, x) lands on the same voxel and world point.

For each source grid (LPS, RAS, permuted axes with and without flips, anisotropic
0.9 x 0.9 x 3 mm, oblique), an image is written with SimpleITK directly, loaded with
:func:`load_case`, labelled on canonical voxels, saved with :func:`save_labels`, and the saved
file is checked with the package (read_labels, load_case), with SimpleITK and with nibabel.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from io_helpers import DIRECTIONS, SHAPE, oblique_direction, random_volume, write_volume

from napari_ssseg.core.case import Geometry
from napari_ssseg.io import load_case, read_labels, save_labels

GRIDS = {
    "LPS": Geometry((1.0, 1.0, 1.0), (-5.5, 12.25, 30.0), DIRECTIONS["LPS"]),
    "RAS": Geometry((1.0, 1.0, 1.0), (90.0, 126.0, -72.0), DIRECTIONS["RAS"]),
    "PSL-permuted": Geometry((1.2, 0.8, 1.5), (-60.0, -80.5, 10.0), DIRECTIONS["PSL"]),
    "ASR-permuted-flipped": Geometry((1.0, 2.0, 0.5), (40.0, 60.0, -20.0), DIRECTIONS["ASR"]),
    "RAS-anisotropic": Geometry((0.9, 0.9, 3.0), (100.25, 110.5, -40.0), DIRECTIONS["RAS"]),
    "oblique": Geometry((1.0, 1.0, 2.0), (3.0, -4.0, 5.0), oblique_direction(20.0)),
}
#: canonical voxels painted (z, y, x) -> internal class
PAINT = {(2, 3, 4): 3, (7, 1, 9): 1, (0, 0, 0): 2, (1, 5, 2): 2}


def _write_source(folder: Path, geometry: Geometry) -> np.ndarray:
    arr = random_volume(SHAPE, seed=3)
    write_volume(folder / "P_flair.nii.gz", arr, geometry)
    write_volume(folder / "P_t1.nii.gz", random_volume(SHAPE, seed=4), geometry)
    return arr


def _load(folder: Path, geometry: Geometry):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        case = load_case(folder)
    oblique_warned = any("oblique" in str(w.message) for w in rec)
    assert oblique_warned == geometry.is_oblique()
    return case


def _painted(case) -> np.ndarray:
    labels = np.zeros(case.shape, np.uint8)
    for zyx, v in PAINT.items():
        labels[zyx] = v
    return labels


def _file_voxel_of_world(geometry: Geometry, world_lps: np.ndarray) -> tuple[int, ...]:
    """File-order (z, y, x) index whose centre is at ``world_lps`` (inverse affine)."""
    ijk = np.linalg.solve(geometry.affine_lps()[:3, :3], world_lps - np.asarray(geometry.origin))
    rounded = np.round(ijk)
    assert np.allclose(ijk, rounded, atol=1e-4)
    return tuple(int(v) for v in rounded[::-1])


@pytest.mark.parametrize("grid", list(GRIDS))
def test_label_lands_on_same_voxel_and_world(tmp_path: Path, grid: str) -> None:
    geometry = GRIDS[grid]
    source = _write_source(tmp_path / "case", geometry)
    case = _load(tmp_path / "case", geometry)
    canon = case.canonical_geometry

    # the canonical image holds the same voxel values at the same world points
    for zyx in PAINT:
        world = canon.index_to_world(np.array(zyx))
        fz = _file_voxel_of_world(geometry, world)
        assert case.channel("flair")[zyx] == source[fz]
        if not geometry.is_oblique():  # napari: world (z, y, x) = translate + scale * index
            napari_world = np.asarray(case.translate) + np.asarray(case.scale) * np.array(zyx)
            np.testing.assert_allclose(napari_world, world[::-1], atol=1e-5)

    labels = _painted(case)
    out = save_labels(labels, case, tmp_path / "case" / "P_seg.nii.gz")

    # package: read_labels and load_case
    np.testing.assert_array_equal(read_labels(out, case), labels)
    reloaded = _load(tmp_path / "case", geometry)
    np.testing.assert_array_equal(reloaded.labels, labels)
    assert reloaded.convention.name == "brats2021"

    # SimpleITK directly: same voxels, same world points, brats2021 values (ET = 4)
    img = sitk.ReadImage(str(out))
    arr = sitk.GetArrayFromImage(img)
    assert arr.shape == source.shape
    np.testing.assert_allclose(img.GetDirection(), geometry.direction, atol=1e-5)
    np.testing.assert_allclose(img.GetOrigin(), geometry.origin, atol=1e-5)
    np.testing.assert_allclose(img.GetSpacing(), geometry.spacing, atol=1e-5)
    enc = {1: 1, 2: 2, 3: 4}
    assert int((arr > 0).sum()) == len(PAINT)
    for zyx, v in PAINT.items():
        world = canon.index_to_world(np.array(zyx))
        fz = _file_voxel_of_world(geometry, world)
        assert arr[fz] == enc[v]
        np.testing.assert_allclose(
            img.TransformIndexToPhysicalPoint(tuple(int(i) for i in fz[::-1])), world, atol=1e-5
        )

    # nibabel: affine equals the RAS affine of the source geometry; world points agree
    nii = nib.load(str(out))
    np.testing.assert_allclose(nii.affine, geometry.affine_ras(), atol=1e-5)
    data = np.asarray(nii.dataobj)
    ijk_all = np.argwhere(data > 0)
    assert len(ijk_all) == len(PAINT)
    worlds_ras = nib.affines.apply_affine(nii.affine, ijk_all)
    expected = {
        tuple(np.round(canon.index_to_world(np.array(zyx)) * [-1, -1, 1], 4)): enc[v]
        for zyx, v in PAINT.items()
    }
    for ijk, w in zip(ijk_all, worlds_ras):
        key = tuple(np.round(w, 4))
        assert key in expected, (grid, w)
        assert data[tuple(ijk)] == expected[key]


@pytest.mark.parametrize("grid", ["LPS", "RAS", "RAS-anisotropic", "PSL-permuted"])
def test_cropped_subgrid_reembedded(tmp_path: Path, grid: str) -> None:
    """Labels drawn on a crop of the canonical grid, re-embedded, land on the same world point."""
    geometry = GRIDS[grid]
    _write_source(tmp_path / "case", geometry)
    case = load_case(tmp_path / "case")
    canon = case.canonical_geometry
    start = (2, 3, 1)
    crop_shape = (5, 6, 7)
    crop_geom = canon.cropped(start)
    crop = np.zeros(crop_shape, np.uint8)
    crop[1, 2, 3] = 3
    crop[4, 5, 6] = 1
    # world of the painted crop voxels, from the crop's own geometry
    worlds = {v: crop_geom.index_to_world(np.argwhere(crop == v)[0]) for v in (1, 3)}

    full = np.zeros(case.shape, np.uint8)
    sl = tuple(slice(s, s + n) for s, n in zip(start, crop_shape))
    full[sl] = crop
    out = save_labels(full, case, tmp_path / "full_seg.nii.gz", "brats2023")

    img = sitk.ReadImage(str(out))
    arr = sitk.GetArrayFromImage(img)
    for v in (1, 3):
        (fz,) = np.argwhere(arr == v)
        world = img.TransformIndexToPhysicalPoint(tuple(int(i) for i in fz[::-1]))
        np.testing.assert_allclose(world, worlds[v], atol=1e-5)
    np.testing.assert_allclose(nib.load(str(out)).affine, geometry.affine_ras(), atol=1e-5)
    np.testing.assert_array_equal(read_labels(out, case, "brats2023"), full)

    # the crop written as its own file (crop geometry) is resampled onto the case grid by
    # load_case (nearest neighbour, with a warning) and lands on the same voxels
    write_volume(tmp_path / "case" / "P_seg.nii.gz", crop, crop_geom)
    with pytest.warns(UserWarning, match="resampled onto the reference grid"):
        reloaded = load_case(tmp_path / "case", convention="brats2023")
    np.testing.assert_array_equal(reloaded.labels, full)


def test_cropped_file_on_wrong_grid_is_refused_by_read_labels(tmp_path: Path) -> None:
    geometry = GRIDS["RAS"]
    _write_source(tmp_path / "case", geometry)
    case = load_case(tmp_path / "case")
    crop_geom = case.canonical_geometry.cropped((1, 1, 1))
    write_volume(tmp_path / "crop.nii.gz", np.zeros((4, 4, 4), np.uint8), crop_geom)
    from napari_ssseg.errors import GeometryError

    with pytest.raises(GeometryError, match="different grid"):
        read_labels(tmp_path / "crop.nii.gz", case)


@pytest.mark.parametrize("suffix", [".nii", ".nrrd", ".mha", ".mhd"])
def test_roundtrip_other_formats(tmp_path: Path, suffix: str) -> None:
    geometry = GRIDS["RAS-anisotropic"]
    folder = tmp_path / "case"
    arr = random_volume(SHAPE, seed=1)
    write_volume(folder / f"P_flair{suffix}", arr, geometry)
    case = load_case(folder)
    labels = _painted(case)
    out = save_labels(labels, case, folder / f"P_seg{suffix}")
    np.testing.assert_array_equal(read_labels(out, case), labels)
    img = sitk.ReadImage(str(out))
    np.testing.assert_allclose(img.GetOrigin(), geometry.origin, atol=1e-5)
    np.testing.assert_allclose(img.GetDirection(), geometry.direction, atol=1e-6)
    np.testing.assert_array_equal(load_case(folder).labels, labels)


def test_read_labels_accepts_same_voxels_in_other_axis_order(tmp_path: Path) -> None:
    """A label file saved LPS for an RAS case (same voxel centres) is read exactly."""
    geometry = GRIDS["RAS-anisotropic"]
    _write_source(tmp_path / "case", geometry)
    case = load_case(tmp_path / "case")
    labels = _painted(case)
    # the canonical grid is an LPS grid with the same voxel centres as the RAS source
    canon = case.canonical_geometry
    write_volume(tmp_path / "lps_seg.nii.gz", labels * (labels != 3) + 4 * (labels == 3), canon)
    np.testing.assert_array_equal(read_labels(tmp_path / "lps_seg.nii.gz", case), labels)
