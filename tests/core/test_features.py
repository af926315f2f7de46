"""Tests for napari_ssseg.core.features: additive statistics and the 36 features/channel."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sstats

from napari_ssseg.core.features import (
    FEATURES_PER_CHANNEL,
    GLCM_OFFSETS,
    N_GREY,
    SuperpixelStats,
    compute_stats,
    feature_blocks,
    feature_names,
    features_from_sums,
    prepare_channels,
    region_sums_from_voxels,
)
from napari_ssseg.errors import GeometryError, InputError


def _volume(seed: int, n_channels: int = 2, shape=(9, 11, 10)):
    rng = np.random.default_rng(seed)
    images = rng.gamma(2.0, 1.0, size=(n_channels,) + shape).astype(np.float32)
    # blocky superpixels: 3 x 3 x 2 grid of boxes, plus a hole outside the domain
    zz, yy, xx = np.indices(shape)
    labels = (zz * 3 // shape[0]) * 6 + (yy * 3 // shape[1]) * 2 + (xx * 2 // shape[2]) + 1
    labels = labels.astype(np.int32)
    labels[0, 0, :] = 0
    return images, labels


def test_shapes_and_names():
    images, labels = _volume(0)
    prep = prepare_channels(images, labels)
    st = compute_stats(prep)
    f = st.features()
    assert f.shape == (labels.max() + 1, 2 * FEATURES_PER_CHANNEL)
    assert len(feature_names(2)) == 72
    assert len(set(feature_names(2))) == 72
    assert feature_blocks(2).shape == (72,)
    assert np.bincount(feature_blocks(1)).tolist() == [1, 1, 1, 10, 1, 1, 1, 10, 10]


@pytest.mark.parametrize("seed", range(6))
def test_merge_is_exact(seed):
    """Sum of superpixel rows == statistics recomputed from the voxels of the union."""
    images, labels = _volume(seed)
    prep = prepare_channels(images, labels, spacing=(2.0, 1.0, 0.5))
    st = compute_stats(prep)
    rng = np.random.default_rng(seed)
    members = rng.choice(np.arange(1, labels.max() + 1), size=5, replace=False)
    merged = st.region(members)
    a, b = st.sums[members[0]], st.sums[members[1]]
    np.testing.assert_allclose(SuperpixelStats.merge(a, b), a + b)
    mask = np.isin(prep.labels, members)
    direct = region_sums_from_voxels(prep, mask)
    np.testing.assert_allclose(merged, direct, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(
        features_from_sums(merged, 2), features_from_sums(direct, 2), rtol=1e-9, atol=1e-9
    )


@pytest.mark.parametrize("seed", range(4))
def test_moments_and_histograms_match_scipy(seed):
    images, labels = _volume(seed, n_channels=1)
    prep = prepare_channels(images, labels)
    st = compute_stats(prep)
    f = st.features()
    for s in (1, 5, 12):
        x = prep.x[0][prep.labels == s].astype(np.float64)
        assert f[s, 0] == pytest.approx(x.mean(), rel=1e-9)
        assert f[s, 1] == pytest.approx(x.var(), rel=1e-7)
        assert f[s, 2] == pytest.approx(sstats.skew(x), rel=1e-6, abs=1e-9)
        hist = f[s, 3:13]
        assert hist.sum() == pytest.approx(1.0)
        expect = np.bincount(np.clip(np.floor(x * 10), 0, 9).astype(int), minlength=10) / x.size
        np.testing.assert_allclose(hist, expect)
        assert f[s, 16:26].sum() == pytest.approx(1.0)  # orientation, L1
        assert f[s, 26:36].sum() == pytest.approx(1.0)  # magnitude, L1


def _glcm_bruteforce(grey, labels, s):
    g = np.zeros((N_GREY, N_GREY))
    Z, Y, X = grey.shape
    for z, y, x in itertools.product(range(Z), range(Y), range(X)):
        if labels[z, y, x] != s:
            continue
        for dz, dy, dx in GLCM_OFFSETS:
            z2, y2, x2 = z + dz, y + dy, x + dx
            if 0 <= z2 < Z and 0 <= y2 < Y and 0 <= x2 < X and labels[z2, y2, x2] > 0:
                g[grey[z, y, x], grey[z2, y2, x2]] += 1
    g = g + g.T
    return g / g.sum()


@pytest.mark.parametrize("seed", range(3))
def test_glcm_matches_bruteforce(seed):
    images, labels = _volume(seed, n_channels=1, shape=(6, 7, 5))
    prep = prepare_channels(images, labels)
    st = compute_stats(prep)
    f = st.features()
    i, j = np.indices((N_GREY, N_GREY))
    for s in (2, 7):
        p = _glcm_bruteforce(prep.grey[0], prep.labels, s)
        assert f[s, 13] == pytest.approx((p * (i - j) ** 2).sum(), rel=1e-9)
        assert f[s, 14] == pytest.approx(np.sqrt((p**2).sum()), rel=1e-9)
        nz = p[p > 0]
        assert f[s, 15] == pytest.approx(-(nz * np.log2(nz)).sum(), rel=1e-9)


def test_glcm_of_constant_region():
    images = np.ones((1, 6, 6, 6), np.float32)
    images[0, :, :, 3:] = 5.0
    labels = np.ones((6, 6, 6), np.int32)
    labels[:, :, 3:] = 2
    st = compute_stats(prepare_channels(images, labels))
    f = st.features()
    # label 1 is constant but its anchored pairs reach into label 2 (different grey level)
    assert f[1, 13] > 0
    assert f[1, 14] < 1.0
    # a region touching no other grey level: contrast 0, energy 1, entropy 0
    st2 = compute_stats(prepare_channels(np.ones((1, 5, 5, 5), np.float32), labels[:5, :5, :5]))
    f2 = st2.features()
    assert f2[1, 13] == pytest.approx(0.0)
    assert f2[1, 14] == pytest.approx(1.0)
    assert f2[1, 15] == pytest.approx(0.0)


def test_features_change_with_spacing():
    images, labels = _volume(1, n_channels=1)
    a = compute_stats(prepare_channels(images, labels, spacing=(1, 1, 1))).features()
    b = compute_stats(prepare_channels(images, labels, spacing=(3, 1, 1))).features()
    assert not np.allclose(a[:, 16:36], b[:, 16:36])  # gradient histograms depend on spacing
    np.testing.assert_allclose(a[:, :13], b[:, :13])  # intensity features do not


def test_inputs_not_mutated():
    images, labels = _volume(2)
    i0, l0 = images.copy(), labels.copy()
    compute_stats(prepare_channels(images, labels))
    np.testing.assert_array_equal(images, i0)
    np.testing.assert_array_equal(labels, l0)


@pytest.mark.parametrize(
    "kind, err, match",
    [
        ("shape", GeometryError, "superpixels have shape"),
        ("float", InputError, "integer label image"),
        ("empty", InputError, "no label > 0"),
        ("nan", InputError, "NaN"),
        ("spacing", InputError, "spacing"),
        ("ndim", InputError, r"\(C, Z, Y, X\)"),
    ],
)
def test_bad_input(kind, err, match):
    images, labels = _volume(0)
    spacing = (1, 1, 1)
    if kind == "shape":
        labels = labels[:-1]
    elif kind == "float":
        labels = labels.astype(float)
    elif kind == "empty":
        labels = np.zeros_like(labels)
    elif kind == "nan":
        images = images.copy()
        images[0, 4, 4, 4] = np.nan
    elif kind == "spacing":
        spacing = (1, 0, 1)
    elif kind == "ndim":
        images = images[0, 0]
    with pytest.raises(err, match=match):
        prepare_channels(images, labels, spacing=spacing)


def test_features_from_sums_bad_columns():
    with pytest.raises(InputError, match="columns"):
        features_from_sums(np.zeros((2, 10)), 1)
