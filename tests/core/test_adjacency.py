"""Tests for napari_ssseg.core.adjacency: numpy superpixel graph vs brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_ssseg.core.adjacency import boundary_faces, build_adjacency
from napari_ssseg.errors import GeometryError, InputError


def _bruteforce(labels, edge):
    out: dict[tuple[int, int], list[float]] = {}
    Z, Y, X = labels.shape
    for z, y, x in itertools.product(range(Z), range(Y), range(X)):
        a = labels[z, y, x]
        for dz, dy, dx in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
            z2, y2, x2 = z + dz, y + dy, x + dx
            if z2 >= Z or y2 >= Y or x2 >= X:
                continue
            b = labels[z2, y2, x2]
            if a == b or a == 0 or b == 0:
                continue
            key = (min(a, b), max(a, b))
            out.setdefault(key, []).append(0.5 * (edge[z, y, x] + edge[z2, y2, x2]))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_matches_bruteforce(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, size=(5, 6, 4)).astype(np.int32)
    edge = rng.random(labels.shape).astype(np.float32)
    adj = build_adjacency(labels, edge)
    ref = _bruteforce(labels, edge)
    assert [tuple(p) for p in adj.pairs] == sorted(ref)
    for k, (a, b) in enumerate(adj.pairs):
        faces = ref[(a, b)]
        assert adj.face_count[k] == len(faces)
        assert adj.face_gsum[k] == pytest.approx(sum(faces), rel=1e-6)
        assert adj.mean_border[k] == pytest.approx(np.mean(faces), rel=1e-6)


def test_simple_layout_and_csr():
    # three slabs along x: 1 | 2 | 3, and a background column that touches nothing
    labels = np.zeros((2, 2, 4), np.int32)
    labels[..., 0] = 1
    labels[..., 1] = 2
    labels[..., 2] = 3
    adj = build_adjacency(labels)
    assert adj.pairs.tolist() == [[1, 2], [2, 3]]
    assert adj.face_count.tolist() == [4.0, 4.0]
    assert adj.neighbours(2).tolist() == [1, 3]
    assert adj.neighbours(1).tolist() == [2]
    assert adj.neighbours(0).tolist() == []
    e = adj.edges_of(2)
    assert [adj.pairs[i].tolist() for i in e] == [[1, 2], [2, 3]]
    members = np.zeros(4, bool)
    members[1] = True
    assert adj.region_neighbours(members).tolist() == [2]
    members[2] = True
    assert adj.region_neighbours(members).tolist() == [3]


def test_no_faces_without_edge_map():
    labels = np.ones((3, 3, 3), np.int32)
    lo, hi, val = boundary_faces(labels)
    assert lo.size == hi.size == val.size == 0
    adj = build_adjacency(labels)
    assert adj.n_edges == 0
    assert adj.neighbours(1).size == 0


@pytest.mark.parametrize(
    "labels, edge, err, match",
    [
        (np.ones((3, 3), np.int32), None, InputError, "3D integer"),
        (np.ones((3, 3, 3), float), None, InputError, "3D integer"),
        (np.ones((3, 3, 3), np.int32), np.ones((3, 3, 2)), GeometryError, "border map"),
    ],
)
def test_bad_input(labels, edge, err, match):
    with pytest.raises(err, match=match):
        build_adjacency(labels, edge)


def test_boundary_mask():
    from napari_ssseg.core.adjacency import boundary_mask

    labels = np.zeros((3, 4, 6), np.int32)
    labels[:, :, 1:3] = 1
    labels[:, :, 3:5] = 2
    m = boundary_mask(labels)
    assert m.dtype == bool and m.shape == labels.shape
    # every labelled voxel here touches another label or the background along x
    np.testing.assert_array_equal(m, labels > 0)
    labels[:, :, 0] = 1
    labels[:, :, 5] = 2
    m = boundary_mask(labels)
    assert m[:, :, 2].all() and m[:, :, 3].all()
    assert not m[:, :, 0].any() and not m[:, :, 5].any()
    with pytest.raises(InputError, match="3D"):
        boundary_mask(np.zeros((3, 3)))
