"""Tests of the Case model, geometry, orientation and label conventions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_ssseg.core.case import (
    CONVENTIONS,
    Case,
    Geometry,
    Orientation,
    get_convention,
    region_masks,
    regions_to_labels,
)
from napari_ssseg.errors import GeometryError, InputError


def _signed_permutations():
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            d = np.zeros((3, 3))
            for a, (w, s) in enumerate(zip(perm, signs)):
                d[w, a] = s
            yield d


@pytest.mark.parametrize("direction", list(_signed_permutations()))
def test_orientation_is_exact_and_keeps_world_coordinates(direction):
    geom = Geometry((0.9, 1.1, 3.0), (-12.0, 7.5, 30.0), tuple(direction.ravel()))
    orient = Orientation.from_geometry(geom)
    shape = (5, 6, 7)
    file_arr = np.arange(np.prod(shape)).reshape(shape)
    canon = orient.to_canonical(file_arr)
    np.testing.assert_array_equal(orient.from_canonical(canon), file_arr)
    cgeom = orient.canonical_geometry(geom, shape)
    np.testing.assert_allclose(cgeom.direction_matrix, np.eye(3), atol=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(10):
        idx = tuple(int(rng.integers(0, s)) for s in shape)
        cidx = np.argwhere(canon == file_arr[idx])[0]
        np.testing.assert_allclose(geom.index_to_world(idx), cgeom.index_to_world(cidx), atol=1e-9)


def test_orientation_handles_leading_channel_axis():
    geom = Geometry((1, 1, 1), (0, 0, 0), (0, 0, -1, 1, 0, 0, 0, -1, 0))
    orient = Orientation.from_geometry(geom)
    arr = np.random.default_rng(1).random((2, 4, 5, 6))
    canon = orient.to_canonical(arr)
    np.testing.assert_array_equal(canon[1], orient.to_canonical(arr[1]))
    np.testing.assert_array_equal(orient.from_canonical(canon), arr)


def test_oblique_direction_maps_to_nearest_axes():
    t = np.deg2rad(10)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    geom = Geometry((1, 1, 1), (0, 0, 0), tuple(rot.ravel()))
    assert geom.is_oblique()
    assert Orientation.from_geometry(geom).is_identity


def test_affines_match_index_to_world():
    geom = Geometry((0.9, 0.9, 3.0), (10.0, -20.0, 5.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    ijk = np.array([3.0, 4.0, 2.0])
    world = geom.index_to_world(ijk[::-1])
    np.testing.assert_allclose((geom.affine_lps() @ np.r_[ijk, 1])[:3], world)
    ras = geom.affine_ras() @ np.r_[ijk, 1]
    np.testing.assert_allclose(ras[:3], world * [-1, -1, 1])
    assert geom.orientation_code() == "RAS"


def test_cropped_geometry_keeps_world_coordinates():
    geom = Geometry((0.9, 0.9, 3.0), (10.0, -20.0, 5.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sub = geom.cropped((2, 3, 4))
    np.testing.assert_allclose(sub.index_to_world((1, 1, 1)), geom.index_to_world((3, 4, 5)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spacing": (1, 0, 1), "origin": (0, 0, 0)}, "positive"),
        ({"spacing": (1, 1), "origin": (0, 0, 0)}, "3 spacings"),
        ({"spacing": (1, 1, 1), "origin": (0, np.nan, 0)}, "finite"),
    ],
)
def test_geometry_rejects_bad_values(kwargs, match):
    with pytest.raises(InputError, match=match):
        Geometry(**kwargs)


def test_degenerate_direction_is_refused():
    geom = Geometry((1, 1, 1), (0, 0, 0), (1, 1, 0, 0, 0, 0, 0, 0, 1))
    with pytest.raises(GeometryError, match="degenerate"):
        Orientation.from_geometry(geom)


@pytest.mark.parametrize(
    ("name", "file_values", "internal"),
    [
        ("brats2021", [0, 1, 2, 4], [0, 1, 2, 3]),
        ("brats2023", [0, 1, 2, 3], [0, 1, 2, 3]),
        ("msd", [0, 1, 2, 3], [0, 2, 1, 3]),
    ],
)
def test_conventions_round_trip(name, file_values, internal):
    conv = CONVENTIONS[name]
    arr = np.array(file_values, dtype=np.int16).reshape(1, 1, -1)
    dec = conv.decode(arr)
    np.testing.assert_array_equal(dec.ravel(), internal)
    np.testing.assert_array_equal(conv.encode(dec), arr)


def test_decode_rejects_values_outside_convention():
    with pytest.raises(InputError, match=r"values \[3\] are not labels of the brats2021"):
        CONVENTIONS["brats2021"].decode(np.array([0, 1, 3]), source="seg.nii.gz")
    with pytest.raises(InputError, match="whole numbers"):
        CONVENTIONS["brats2023"].decode(np.array([0.5, 1.0]))


def test_get_convention_suggests_close_name():
    with pytest.raises(InputError, match="Did you mean 'brats2021'"):
        get_convention("bratz2021")


def test_regions_nest_and_round_trip():
    labels = np.array([0, 1, 2, 3], dtype=np.uint8).reshape(1, 1, 4)
    masks = region_masks(labels)
    assert masks["WT"].sum() == 3 and masks["TC"].sum() == 2 and masks["ET"].sum() == 1
    np.testing.assert_array_equal(regions_to_labels(masks["WT"], masks["TC"], masks["ET"]), labels)


def test_case_validates_inputs():
    geom = Geometry((1, 1, 1), (0, 0, 0))
    img = np.zeros((2, 4, 5, 6), np.float32)
    case = Case(img, ("t1", "flair"), geom)
    assert case.shape == (4, 5, 6) and case.scale == (1.0, 1.0, 1.0)
    with pytest.raises(InputError, match="2 channels but 1"):
        Case(img, ("t1",), geom)
    with pytest.raises(InputError, match="not 3D"):
        Case(np.zeros((1, 1, 5, 6)), ("t1",), geom)
    with pytest.raises(GeometryError, match="labels have shape"):
        Case(img, ("t1", "flair"), geom, labels=np.zeros((4, 5, 5)))
    assert Case(img, ("T1n", "T1Gd"), geom).modalities == ("t1", "t1ce")
    with pytest.raises(InputError, match="Did you mean 'flair'"):
        Case(img, ("t1", "flare"), geom)
    with pytest.raises(InputError, match="no 't2' image"):
        case.channel("t2")


def test_case_translate_is_world_origin_of_canonical_grid():
    geom = Geometry((1.0, 2.0, 3.0), (10.0, 20.0, 30.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    orient = Orientation.from_geometry(geom)
    file_arr = np.zeros((4, 5, 6), np.float32)
    case = Case(orient.to_canonical(file_arr), ("flair",), geom, orient)
    assert case.scale == (3.0, 2.0, 1.0)
    # canonical voxel 0 is file voxel (0, 4, 5): x = 10 - 5*1, y = 20 - 4*2
    np.testing.assert_allclose(case.translate, (30.0, 12.0, 5.0))
    assert case.file_shape == (4, 5, 6)
