"""Layer-data tuples of a case: names, geometry, colours, class names, case handle."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from napari.layers import Layer

from napari_ssseg._napari.layers import (
    CASE_KEY,
    CaseHandle,
    case_of_layer,
    case_to_layer_data,
    robust_contrast_limits,
)
from napari_ssseg.core.case import CLASS_COLORS

GEOMETRY_NAMES = ["lps", "ras", "aniso", "las_aniso"]  # see conftest.GEOMETRIES


def test_layer_names_types_and_geometry(tiny_case):
    data = case_to_layer_data(tiny_case)
    assert [t for _, _, t in data] == ["image"] * 4 + ["labels"]
    assert [kw["name"] for _, kw, _ in data] == [
        "tiny T1",
        "tiny T1Gd",
        "tiny T2",
        "tiny FLAIR",
        "tiny labels",
    ]
    for _, kw, _ in data:
        np.testing.assert_allclose(kw["scale"], tiny_case.scale)
        np.testing.assert_allclose(kw["translate"], tiny_case.translate)
        assert kw["metadata"][CASE_KEY].case is tiny_case
    # only FLAIR visible at first; all additive gray
    assert [kw["visible"] for _, kw, t in data if t == "image"] == [False, False, False, True]
    assert {kw["blending"] for _, kw, t in data if t == "image"} == {"additive"}


def test_labels_data_is_a_copy_with_class_features(tiny_case):
    *_, (labels, kw, _) = case_to_layer_data(tiny_case)
    np.testing.assert_array_equal(labels, tiny_case.labels)
    labels[0, 0, 0] = 3
    assert tiny_case.labels[0, 0, 0] == 0, "the case's labels must not be modified"
    assert kw["features"]["class"] == ["background", "NCR", "ED", "ET"]
    cmap = kw["colormap"]
    for value in (1, 2, 3):
        np.testing.assert_allclose(cmap.map(np.array([value]))[0], CLASS_COLORS[value], atol=1e-6)
    assert cmap.map(np.array([0]))[0][3] == 0.0  # background transparent


def test_case_without_labels_gets_empty_labels_layer(tiny_case):
    tiny_case.labels = None
    *_, (labels, _, kind) = case_to_layer_data(tiny_case)
    assert kind == "labels" and labels.dtype == np.uint8
    assert labels.shape == tiny_case.shape and not labels.any()


def test_contrast_limits_are_brain_percentiles(tiny_case):
    data = case_to_layer_data(tiny_case)
    flair = tiny_case.channel("flair")
    brain = np.any(tiny_case.images != 0, axis=0)
    lo, hi = data[3][1]["contrast_limits"]
    np.testing.assert_allclose([lo, hi], np.percentile(flair[brain], [1, 99.5]), rtol=1e-5)
    assert lo > 0, "background zeros must not pull the lower limit to 0"


@pytest.mark.parametrize(
    ("image", "mask", "expected"),
    [
        (np.zeros((4, 4, 4)), None, (0.0, 1.0)),  # empty -> all voxels, flat -> +1
        (np.arange(64.0).reshape(4, 4, 4), None, None),
        (np.full((4, 4, 4), np.nan), None, (0.0, 1.0)),
    ],
)
def test_robust_contrast_limits_edge_cases(image, mask, expected):
    lo, hi = robust_contrast_limits(image, mask)
    assert hi > lo
    if expected is not None:
        assert (lo, hi) == expected
    else:
        np.testing.assert_allclose([lo, hi], np.percentile(np.arange(1.0, 64.0), [1, 99.5]))


def test_handle_is_never_copied(tiny_case):
    handle = CaseHandle(tiny_case)
    meta = {CASE_KEY: handle}
    assert copy.deepcopy(meta)[CASE_KEY] is handle
    assert copy.copy(handle) is handle
    assert "tiny" in repr(handle) and "array" not in repr(handle)


@pytest.mark.parametrize("geometry", GEOMETRY_NAMES)
def test_layer_world_coordinates_match_case_geometry(make_geo_case, geometry):
    """A voxel's napari world coordinate is its LPS scanner coordinate (z, y, x)."""
    case = make_geo_case(geometry)
    data = case_to_layer_data(case)
    layers = [Layer.create(*t) for t in data]
    voxel = np.array([5, 17, 23])
    expected_xyz = case.canonical_geometry.index_to_world(voxel)
    for layer in layers:
        np.testing.assert_allclose(layer.data_to_world(voxel), expected_xyz[::-1], atol=1e-5)
        assert case_of_layer(layer) is case
    # and the same voxel in the source file grid has the same world coordinate
    file_voxel = np.argwhere(case.to_file_order(_one_hot(case.shape, voxel)))[0]
    np.testing.assert_allclose(case.geometry.index_to_world(file_voxel), expected_xyz, atol=1e-5)


@pytest.mark.gui
@pytest.mark.parametrize(("value", "name"), [(1, "NCR"), (2, "ED"), (3, "ET")])
def test_labels_status_shows_class_name(make_napari_viewer, tiny_case, value, name):
    viewer = make_napari_viewer()
    *_, labels_tuple = case_to_layer_data(tiny_case)
    layer = viewer.add_layer(Layer.create(*labels_tuple))
    zyx = np.argwhere(tiny_case.labels == value)[0]
    world = layer.data_to_world(zyx)
    viewer.dims.set_point(0, world[0])
    status = layer.get_status(world, world=True)
    assert status["value"].startswith(f"{value}; ")
    assert f"class: {name}" in status["value"]


def test_rejects_non_case():
    with pytest.raises(TypeError, match="needs a Case"):
        case_to_layer_data(np.zeros((4, 4, 4)))


def _one_hot(shape, voxel):
    arr = np.zeros(shape, bool)
    arr[tuple(voxel)] = True
    return arr
