"""Segment-Editor style edits on tiny arrays: fill between slices, islands, volumes, brush,
threshold masks and click prompts through superpixels."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ssseg.core.editing import (
    annotated_slices,
    brush_diameter_mm,
    brush_size_for_mm,
    click_change,
    click_region,
    fill_between_slices,
    island_mask,
    label_volumes_ml,
    region_for_class,
    threshold_mask,
    voxel_volume_ml,
)
from napari_ssseg.errors import InputError


def _disc(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


# --------------------------------------------------------------------------- fill between
def test_fill_between_two_equal_discs_gives_a_cylinder():
    labels = np.zeros((9, 20, 20), np.uint8)
    disc = _disc((20, 20), (10, 10), 4)
    labels[1][disc] = 2
    labels[7][disc] = 2
    fill = fill_between_slices(labels, 2, axis=0)
    assert fill.dtype == bool and fill.shape == labels.shape
    for z in range(2, 7):
        np.testing.assert_array_equal(fill[z], disc)
    assert not fill[0].any() and not fill[8].any()  # nothing outside the annotated range
    assert not fill[1].any() and not fill[7].any()  # annotated slices already hold the label
    np.testing.assert_array_equal(labels[1][disc], 2)  # input untouched
    assert not labels[4].any()


@pytest.mark.parametrize("x0", [10, 22])  # disjoint discs (centroids aligned) / overlapping
def test_fill_interpolates_size_and_position_between_different_discs(x0):
    labels = np.zeros((11, 40, 40), np.uint8)
    labels[0][_disc((40, 40), (20, x0), 3)] = 1
    labels[10][_disc((40, 40), (20, 30), 7)] = 1
    fill = fill_between_slices(labels, 1, axis=0)
    areas = fill[1:10].sum(axis=(1, 2))
    assert np.all(np.diff(areas) > 0)  # grows from the small disc to the large one
    centres = [np.nonzero(fill[z])[1].mean() for z in range(1, 10)]
    # and moves towards x=30 (whole-voxel shifts: steps of 0 or 1 voxel)
    assert np.all(np.diff(centres) >= 0) and centres[-1] - centres[0] > 0.6 * (30 - x0)
    mid = fill[5]
    assert abs(np.nonzero(mid)[1].mean() - (x0 + 30) / 2) < 1.5
    assert abs(np.sqrt(mid.sum() / np.pi) - 5) < 1.0  # radius halfway between 3 and 7


def test_fill_along_another_axis_with_anisotropic_spacing_and_contours():
    labels = np.zeros((20, 9, 20), np.uint8)
    disc = _disc((20, 20), (10, 10), 5)
    ring = disc & ~_disc((20, 20), (10, 10), 4)  # a drawn contour, not a filled region
    labels[:, 0, :][ring] = 3
    labels[:, 8, :][ring] = 3
    fill = fill_between_slices(labels, 3, axis=1, spacing=(3.0, 1.0, 1.0))
    # the contours are hole-filled and interpolated (with anisotropic in-plane sampling)
    np.testing.assert_array_equal(fill[:, 0, :], disc & ~ring)
    assert fill[:, 4, :].sum() > 0.6 * disc.sum()
    assert fill[:, 4, :][10, 10]
    no_holes = fill_between_slices(labels, 3, axis=1, fill_holes=False)
    assert not no_holes[:, 0, :].any()


def test_fill_keeps_other_classes_unless_overwrite():
    labels = np.zeros((5, 12, 12), np.uint8)
    disc = _disc((12, 12), (6, 6), 3)
    labels[0][disc] = 2
    labels[4][disc] = 2
    labels[2, 6, 6] = 1  # a NCR voxel in between
    fill = fill_between_slices(labels, 2, axis=0)
    assert not fill[2, 6, 6] and fill[2, 6, 5]
    assert fill_between_slices(labels, 2, axis=0, overwrite=True)[2, 6, 6]


def test_fill_needs_two_annotated_slices():
    labels = np.zeros((5, 8, 8), np.uint8)
    labels[2, 3:5, 3:5] = 2
    np.testing.assert_array_equal(annotated_slices(labels, 2, 0), [2])
    with pytest.raises(InputError, match="at least two slices"):
        fill_between_slices(labels, 2, axis=0)
    with pytest.raises(InputError, match="not a tumour class"):
        fill_between_slices(labels, 0, axis=0)
    with pytest.raises(InputError, match="axis"):
        fill_between_slices(labels, 2, axis=3)


# --------------------------------------------------------------------------- islands
def _islands():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[1:5, 1:5, 1:5] = 2  # 64 voxels
    labels[7:9, 7:9, 7:9] = 2  # 8 voxels
    labels[8, 1, 8] = 2  # 1 voxel
    labels[2:4, 2:4, 6:8] = 3  # 8 voxels ET, touching nothing of class 3
    labels[6, 6, 1] = 3  # 1 voxel ET
    return labels


def test_keep_largest_per_class():
    labels = _islands()
    drop = island_mask(labels, "keep largest", "each class")
    assert drop[7, 7, 7] and drop[8, 1, 8] and drop[6, 6, 1]
    assert not drop[2, 2, 2] and not drop[2, 2, 6]
    assert int(drop.sum()) == 8 + 1 + 1
    assert _islands().sum() == labels.sum()  # input untouched


def test_remove_small_uses_ml_from_spacing():
    labels = _islands()
    # 2 mm voxels: 0.008 ml each; the 8-voxel islands are 0.064 ml
    drop = island_mask(labels, "remove small", "ED", spacing=(2, 2, 2), min_volume_ml=0.05)
    assert drop[8, 1, 8] and not drop[7, 7, 7] and not drop[6, 6, 1]  # ET left alone
    drop = island_mask(labels, "remove small", "ED", spacing=(2, 2, 2), min_volume_ml=0.07)
    assert drop[7, 7, 7] and not drop[2, 2, 2]


def test_whole_tumour_islands_and_connectivity():
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[0:2, 0:2, 0:2] = 2
    labels[2, 2, 2] = 3  # touches the ED block by a corner only
    assert not island_mask(labels, "keep largest", "WT", connectivity=26).any()
    drop6 = island_mask(labels, "keep largest", "WT", connectivity=6)
    assert drop6[2, 2, 2] and drop6.sum() == 1
    with pytest.raises(InputError, match="Did you mean"):
        island_mask(labels, "keep largst")
    with pytest.raises(InputError, match="connectivity"):
        island_mask(labels, connectivity=8)


# --------------------------------------------------------------------------- volumes
def test_label_volumes_ml():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[:1] = 1  # 100 voxels
    labels[1:3] = 2  # 200
    labels[3:6] = 3  # 300
    vol = label_volumes_ml(labels, (2.0, 1.0, 0.5))  # 1 mm^3 per voxel
    assert vol == pytest.approx({"NCR": 0.1, "ED": 0.2, "ET": 0.3, "WT": 0.6, "TC": 0.4})
    assert voxel_volume_ml((1, 1, 1)) == pytest.approx(0.001)
    with pytest.raises(InputError, match="spacing"):
        label_volumes_ml(labels, (1, 0, 1))


# --------------------------------------------------------------------------- brush, mask
@pytest.mark.parametrize(
    ("mm", "scale", "dims", "size"),
    [
        (5.0, (1, 1, 1), None, 5),
        (4.0, (1, 1, 1), None, 5),  # even voxel counts round to the odd size above
        (10.0, (2.0, 2.0, 2.0), None, 5),
        (10.0, (3.0, 0.5, 0.5), (1, 2), 21),
        (10.0, (3.0, 0.5, 0.5), (0,), 3),
        (0.1, (1, 1, 1), None, 1),
    ],
)
def test_brush_size_for_mm(mm, scale, dims, size):
    assert brush_size_for_mm(mm, scale, dims) == size
    assert brush_diameter_mm(size, scale, dims) == pytest.approx(
        size * min(scale[d] for d in (dims or range(3)))
    )


def test_brush_errors_and_threshold_mask():
    with pytest.raises(InputError, match="positive"):
        brush_size_for_mm(-1, (1, 1, 1))
    image = np.array([np.nan, 0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(threshold_mask(image, 1.0, 2.0), [0, 0, 1, 1, 0])
    with pytest.raises(InputError, match="low <= high"):
        threshold_mask(image, 2.0, 1.0)


# --------------------------------------------------------------------------- click prompts
@pytest.fixture(scope="module")
def two_lobes():
    """Two bright lobes in dark tissue, with a hand-made superpixel grid of 4x4x4 blocks."""
    shape = (8, 16, 16)
    image = np.full(shape, 100.0, np.float32)
    image[:, 0:8, 0:8] = 300.0  # lobe A: 4 blocks
    image[:, 8:16, 8:16] = 310.0  # lobe B: 4 blocks, touches A by an edge only
    rng = np.random.default_rng(0)
    image += rng.normal(0, 2.0, shape).astype(np.float32)
    sp = np.zeros(shape, np.int32)
    n = 0
    for z in range(0, 8, 4):
        for y in range(0, 16, 4):
            for x in range(0, 16, 4):
                n += 1
                sp[z : z + 4, y : y + 4, x : x + 4] = n
    from napari_ssseg.core.refine import RefinementSession

    session = RefinementSession(image[None], ["flair"], sp, None, (1.0, 1.0, 1.0))
    return image, sp, session


def test_click_grows_the_lobe_under_the_click(two_lobes):
    image, sp, session = two_lobes
    mask, n = click_region(session, (2, 2, 2), sim0=0.3)
    lobe_a = np.zeros(image.shape, bool)
    lobe_a[:, 0:8, 0:8] = True
    # grows beyond the clicked superpixel, but stays in the bright lobe it was clicked in
    assert n >= 3 and mask[2, 2, 2]
    assert not (mask & ~lobe_a).any()
    assert mask.sum() == n * 64
    # a higher stopping similarity grows less; a click in the dark tissue stays dark
    _, n_high = click_region(session, (2, 2, 2), sim0=0.8)
    assert n_high < n
    dark, _ = click_region(session, (2, 2, 14), sim0=0.3)
    assert not (dark & lobe_a).any() and not dark[:, 8:16, 8:16].any()
    single, n1 = click_region(session, (2, 2, 2), grow=False)
    np.testing.assert_array_equal(single, sp == sp[2, 2, 2])
    assert n1 == 1


def test_click_change_positive_and_negative(two_lobes):
    image, _, session = two_lobes
    mask, _ = click_region(session, (2, 2, 2), sim0=0.3)
    assert mask[0, 0, 0]
    labels = np.zeros(image.shape, np.uint8)
    labels[0, 0, 0] = 1  # NCR inside the lobe
    add = click_change(labels, mask, 2, positive=True)
    assert add.sum() == mask.sum() - 1 and not add[0, 0, 0]
    assert click_change(labels, mask, 2, True, preserve_other=False)[0, 0, 0]
    labels[mask] = 2
    labels[0, 0, 0] = 1
    remove = click_change(labels, mask, 2, positive=False)
    assert remove.sum() == mask.sum() - 1 and not remove[0, 0, 0]
    assert region_for_class(2) == "wt" and region_for_class(3) == "tc"


def test_click_outside_brain_or_grid(two_lobes):
    _, sp, _ = two_lobes
    from napari_ssseg.core.refine import RefinementSession

    image = np.ones(sp.shape, np.float32)
    brain = np.zeros(sp.shape, bool)
    brain[:, 4:12, 4:12] = True
    session = RefinementSession(image[None], None, sp, brain, (1, 1, 1))
    with pytest.raises(InputError, match="outside the brain"):
        click_region(session, (0, 0, 0))
    with pytest.raises(InputError, match="outside the case's grid"):
        click_region(session, (0, 0, 99))
    with pytest.raises(InputError, match="same grid"):
        click_change(np.zeros((2, 2, 2), np.uint8), np.zeros((3, 3, 3), bool), 2, True)
