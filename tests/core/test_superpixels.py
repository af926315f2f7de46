"""Tests of napari_ssseg.core.superpixels (3D SLIC, both backends, quality metrics)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_ssseg.core.progress import Cancelled
from napari_ssseg.core.superpixels import (
    _enforce_connectivity,
    boundary_recall,
    channels_for_region,
    normalise_channels,
    region_superpixels,
    slic_superpixels,
    undersegmentation_error,
)
from napari_ssseg.errors import GeometryError, InputError

BACKENDS = ["fast", "skimage"]


@pytest.fixture(scope="module")
def phantom():
    from napari_ssseg.core.phantom import make_phantom

    return make_phantom(shape=(32, 48, 48), seed=11)


def _blobs(shape=(24, 32, 32), seed=0):
    """Two bright ellipsoids in a noisy sphere: image, mask, ground-truth classes."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=float)
    c = np.array(shape) / 2
    mask = ((z - c[0]) / (0.48 * shape[0])) ** 2 + ((y - c[1]) / (0.48 * shape[1])) ** 2 + (
        (x - c[2]) / (0.48 * shape[2])
    ) ** 2 < 1
    gt = np.zeros(shape, np.uint8)
    gt[((z - c[0]) ** 2 + (y - c[1] + 6) ** 2 + (x - c[2]) ** 2) < 25] = 1
    gt[((z - c[0]) ** 2 + (y - c[1] - 7) ** 2 + (x - c[2] - 3) ** 2) < 16] = 2
    img = 0.3 + 0.4 * (gt == 1) + 0.6 * (gt == 2) + rng.normal(0, 0.03, shape)
    img = np.where(mask, img, 0).astype(np.float32)
    return img, mask, gt & mask


@pytest.mark.parametrize("backend", BACKENDS)
def test_labels_consecutive_int32_zero_outside_mask(backend):
    img, mask, _ = _blobs()
    sp = slic_superpixels(img, n_segments=40, mask=mask, backend=backend)
    assert sp.dtype == np.int32 and sp.shape == img.shape
    assert np.all(sp[~mask] == 0)
    assert np.all(sp[mask] > 0)
    assert np.array_equal(np.unique(sp[mask]), np.arange(1, sp.max() + 1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_degenerate_masks_are_fully_labelled(backend):
    img = np.random.default_rng(0).random((10, 20, 20)).astype(np.float32)
    one = np.zeros(img.shape, bool)
    one[3, 4, 5] = True
    sp = slic_superpixels(img, mask=one, backend=backend)
    assert sp[3, 4, 5] == 1 and sp.max() == 1
    islands = np.zeros(img.shape, bool)
    islands[2:4, 2:5, 2:5] = True
    islands[7:9, 15:18, 15:18] = True
    sp = slic_superpixels(img, mask=islands, n_segments=2, backend=backend)
    assert np.all(sp[islands] > 0) and np.all(sp[~islands] == 0)
    assert sp.max() >= 2  # two disconnected islands cannot share a superpixel
    assert set(np.unique(sp[2:4, 2:5, 2:5])).isdisjoint(np.unique(sp[7:9, 15:18, 15:18]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic_and_input_untouched(backend):
    img, mask, _ = _blobs(seed=1)
    before = img.copy()
    a = slic_superpixels(img, n_segments=30, mask=mask, backend=backend)
    b = slic_superpixels(img, n_segments=30, mask=mask, backend=backend)
    assert np.array_equal(a, b)
    assert np.array_equal(img, before)


def test_fast_result_independent_of_threads():
    img, mask, _ = _blobs(seed=2)
    a = slic_superpixels(img, n_segments=50, mask=mask, n_threads=1)
    b = slic_superpixels(img, n_segments=50, mask=mask, n_threads=2)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_segments", [15, 60, 200])
def test_number_of_superpixels_close_to_request(backend, n_segments):
    img, mask, _ = _blobs(shape=(32, 40, 40), seed=3)
    sp = slic_superpixels(img, n_segments=n_segments, mask=mask, compactness=0.1, backend=backend)
    n = int(sp.max())
    assert n_segments / 3 <= n <= n_segments * 3, n


def test_every_fast_superpixel_is_connected(phantom):
    sp = slic_superpixels(
        phantom.images[3], n_segments=80, compactness=0.01, mask=phantom.brain, backend="fast"
    )
    for lab, sl in enumerate(ndimage.find_objects(sp), start=1):
        _, n = ndimage.label(sp[sl] == lab)
        assert n == 1, f"superpixel {lab} has {n} components"


@pytest.mark.parametrize(("search", "radius"), [("octant", 1), ("full", 1), ("octant", 2)])
def test_fast_search_variants_give_valid_labels(monkeypatch, search, radius):
    import napari_ssseg.core.superpixels as sp_mod

    monkeypatch.setattr(sp_mod, "_SEARCH", search)
    monkeypatch.setattr(sp_mod, "_RADIUS", radius)
    img, mask, gt = _blobs(seed=7)
    sp = slic_superpixels(img, n_segments=40, mask=mask)
    assert np.all(sp[~mask] == 0) and np.all(sp[mask] > 0)
    assert np.array_equal(np.unique(sp[mask]), np.arange(1, sp.max() + 1))
    assert 40 / 3 <= sp.max() <= 120
    assert boundary_recall(sp, gt) > 0.8


def test_enforce_connectivity_splits_and_merges():
    lab = np.zeros((6, 8, 8), np.int32)
    lab[:, :4] = 1
    lab[:, 4:] = 2
    lab[0:2, 6:8, 6:8] = 1  # two 8-voxel fragments of label 1 inside label 2
    lab[4:6, 6:8, 0:2] = 1
    out = _enforce_connectivity(lab, min_size=4)
    assert out.max() == 4  # fragments >= min_size become superpixels of their own
    out = _enforce_connectivity(lab, min_size=10)
    assert out.max() == 2  # fragments < min_size join the label around them
    assert np.all(out[lab == 2] == out[0, 7, 0])
    assert np.all(out[0:2, 6:8, 6:8] == out[0, 7, 0])
    for k in range(1, out.max() + 1):
        assert ndimage.label(out == k)[1] == 1


def test_anisotropic_spacing_gives_fewer_voxels_along_coarse_axis():
    rng = np.random.default_rng(4)
    img = rng.normal(0.5, 0.01, (30, 60, 60)).astype(np.float32)
    sp = slic_superpixels(img, n_segments=40, compactness=10.0, spacing=(3.0, 1.0, 1.0))
    ext = np.array([[s.stop - s.start for s in sl] for sl in ndimage.find_objects(sp)], float)
    mean_ext = ext.mean(axis=0)
    # 3 mm slices: superpixels span ~3x fewer voxels along z than along y and x
    assert mean_ext[0] * 2 < mean_ext[1]
    assert mean_ext[0] * 2 < mean_ext[2]
    iso = slic_superpixels(img, n_segments=40, compactness=10.0, spacing=(1.0, 1.0, 1.0))
    ext_iso = np.array([[s.stop - s.start for s in sl] for sl in ndimage.find_objects(iso)])
    assert ext_iso.mean(axis=0)[0] > mean_ext[0] * 1.5


def test_fast_boundary_quality_not_worse_than_skimage():
    from napari_ssseg.core.phantom import make_phantom

    res = {"fast": [], "skimage": []}
    for seed in (21, 22, 23):
        ph = make_phantom(shape=(40, 56, 56), seed=seed)
        for backend in BACKENDS:
            sp = slic_superpixels(
                ph.images[3], n_segments=120, compactness=0.01, mask=ph.brain, backend=backend
            )
            res[backend].append(
                (boundary_recall(sp, ph.labels), undersegmentation_error(sp, ph.labels))
            )
    fast, ref = np.mean(res["fast"], axis=0), np.mean(res["skimage"], axis=0)
    assert fast[0] >= ref[0] - 0.03, (fast, ref)
    assert fast[1] <= ref[1] + 0.02, (fast, ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_multichannel_without_lab_conversion(backend):
    img, mask, _ = _blobs(seed=5)
    three = np.stack([img, 1.0 - img, img**2])  # 3 channels: skimage would convert to Lab
    sp = slic_superpixels(three * 1000.0, n_segments=30, mask=mask, backend=backend)
    assert sp.max() >= 3  # runs (no Lab conversion error) and segments


def test_progress_called_every_iteration_and_cancel():
    img, mask, _ = _blobs(seed=6)
    calls = []
    slic_superpixels(
        img, n_segments=30, mask=mask, max_num_iter=5, progress=lambda f, m: calls.append((f, m))
    )
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert sum("iteration" in m for _, m in calls) >= 2

    n = {"checks": 0}

    def stop():
        n["checks"] += 1
        return n["checks"] >= 3

    with pytest.raises(Cancelled, match="cancelled"):
        slic_superpixels(img, n_segments=30, mask=mask, should_stop=stop)


def test_cancel_before_start_skimage():
    img, mask, _ = _blobs(seed=6)
    with pytest.raises(Cancelled):
        slic_superpixels(img, mask=mask, backend="skimage", should_stop=lambda: True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_segments": 0}, "n_segments"),
        ({"n_segments": 2.5}, "n_segments"),
        ({"compactness": 0}, "compactness"),
        ({"compactness": float("nan")}, "compactness"),
        ({"sigma": -1}, "sigma"),
        ({"spacing": (1, 1)}, "spacing"),
        ({"spacing": (1, 0, 1)}, "spacing"),
        ({"max_num_iter": 0}, "max_num_iter"),
        ({"backend": "fats"}, "Did you mean 'fast'"),
        ({"n_threads": 0}, "n_threads"),
        ({"mask": np.zeros((24, 32, 32), bool)}, "mask is empty"),
    ],
)
def test_bad_parameters_are_named(kwargs, match):
    img, _, _ = _blobs()
    with pytest.raises(InputError, match=match):
        slic_superpixels(img, **kwargs)


def test_bad_shapes():
    img, mask, _ = _blobs()
    with pytest.raises(GeometryError, match="mask has shape"):
        slic_superpixels(img, mask=mask[:-1])
    with pytest.raises(InputError, match="volume"):
        slic_superpixels(img[0])
    bad = img.copy()
    bad[mask] = np.nan
    with pytest.raises(InputError, match="NaN"):
        slic_superpixels(bad, mask=mask)


def test_normalise_channels_robust_range():
    img, mask, _ = _blobs()
    two = np.stack([img * 500.0 + 7.0, img])
    out = normalise_channels(two, mask)
    assert out.dtype == np.float32 and out.shape == two.shape
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.all(out[:, ~mask] == 0)
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)  # scale-invariant
    const = normalise_channels(np.ones((4, 5, 6)), None)
    assert np.all(const == 0)


@pytest.mark.parametrize(
    ("modalities", "region", "expected", "warns"),
    [
        (("t1", "t1ce", "t2", "flair"), "WT", [3], False),
        (("t1", "t1ce", "t2", "flair"), "TC", [2, 1], False),
        (("t1", "t1ce", "t2", "flair"), "ET", [1], False),
        (("t1", "t2", "flair"), "TC", [1], True),
        (("t1", "t1ce"), "WT", [0, 1], True),
    ],
)
def test_channels_for_region(modalities, region, expected, warns):
    if warns:
        with pytest.warns(UserWarning, match="lacks"):
            assert channels_for_region(modalities, region) == expected
    else:
        assert channels_for_region(modalities, region) == expected


def test_region_superpixels_uses_region_channels(phantom):
    kw = {"n_segments": 50, "spacing": phantom.spacing}
    wt = region_superpixels(phantom.images, phantom.modalities, "wt", **kw)
    direct = slic_superpixels(phantom.images[3], mask=phantom.images.any(axis=0), **kw)
    assert np.array_equal(wt, direct)
    tc = region_superpixels(phantom.images, ["T1", "T1Gd", "T2", "FLAIR"], "TC", **kw)
    direct_tc = slic_superpixels(phantom.images[[2, 1]], mask=phantom.images.any(axis=0), **kw)
    assert np.array_equal(tc, direct_tc)
    with pytest.warns(UserWarning, match="lacks flair"):
        region_superpixels(phantom.images[:3], phantom.modalities[:3], "WT", **kw)
    with pytest.raises(InputError, match="region"):
        region_superpixels(phantom.images, phantom.modalities, "XX")
    with pytest.raises(InputError, match="modality names"):
        region_superpixels(phantom.images, phantom.modalities[:2], "WT")


def test_metrics_on_known_cases():
    gt = np.zeros((4, 6, 6), np.uint8)
    gt[:, :, 3:] = 1
    assert boundary_recall(gt, gt, tolerance=0) == 1.0
    assert undersegmentation_error(gt + 1, gt) == 0.0
    one = np.ones_like(gt, dtype=np.int32)
    assert boundary_recall(one, gt) == 0.0
    # one superpixel over two equal halves: each half contributes min(72, 72)
    assert undersegmentation_error(one, gt) == pytest.approx(1.0)
    shifted = np.ones_like(one)
    shifted[:, :, 4:] = 2  # boundary one voxel off
    assert boundary_recall(shifted, gt, tolerance=0) == pytest.approx(0.5)
    assert boundary_recall(shifted, gt, tolerance=1) == 1.0
    # sp 1 = 3 cols of class 0 + 1 col of class 1 -> min(72, 24) + min(24, 72) = 48 voxels
    assert undersegmentation_error(shifted, gt) == pytest.approx(48 / gt.size)
    assert np.isnan(boundary_recall(one, np.zeros_like(gt)))
    with pytest.raises(GeometryError):
        boundary_recall(one[:-1], gt)
    with pytest.raises(InputError, match="tolerance"):
        boundary_recall(one, gt, tolerance=-1)
