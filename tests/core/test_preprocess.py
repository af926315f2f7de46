"""Tests of brain masking, crop/uncrop, clipping, z-scoring, N4 and the cached pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_ssseg.core import preprocess as pp
from napari_ssseg.core.phantom import Phantom, PhantomStyle, make_phantom
from napari_ssseg.errors import InputError


@pytest.fixture(autouse=True)
def _fresh_cache():
    pp.clear_cache()
    yield
    pp.clear_cache()


# ----------------------------------------------------------------------- brain mask
def test_brain_mask_matches_phantom(tiny_phantom: Phantom) -> None:
    m = pp.brain_mask(tiny_phantom.images)
    assert m.dtype == bool and m.shape == tiny_phantom.shape
    np.testing.assert_array_equal(m, tiny_phantom.brain)


def test_brain_mask_fills_holes_and_keeps_largest_component() -> None:
    img = np.zeros((2, 20, 30, 30), np.float32)
    img[0, 3:17, 5:25, 5:25] = 1.0
    img[0, 8:12, 12:18, 12:18] = 0.0  # 3D hole (e.g. dark necrosis or ventricle)
    img[1, 5, 8:10, 8:10] = 0.0  # not a hole: channel 0 is non-zero there
    img[0, 10, 10:20, 5:7] = 0.0  # in-plane notch open to the outside: not filled
    img[1, 0:2, 0:2, 0:2] = 5.0  # speck in a corner: not the largest component
    img[0, 3, 10:14, 10:14] = 0.0  # hole in the first brain slice (open in 3D below)
    m = pp.brain_mask(img)
    assert m[10, 15, 15]
    assert m[3, 12, 12]  # filled per slice
    assert not m[0, 0, 0]
    assert not m[10, 15, 5]
    assert m.sum() == 14 * 20 * 20 - 10 * 2  # box minus the open notch


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((2, 8, 8, 8)), "zero everywhere"),
        (np.ones((8, 8)), "shape"),
        (np.ones((1, 2, 3, 4, 5)), "shape"),
    ],
)
def test_brain_mask_bad_input(images: np.ndarray, match: str) -> None:
    with pytest.raises(InputError, match=match):
        pp.brain_mask(images)


# ------------------------------------------------------------------------ crop/uncrop
@pytest.mark.parametrize("margin", [0, 2, 50])
def test_bounding_box_margin_and_clipping(margin: int) -> None:
    m = np.zeros((20, 30, 40), bool)
    m[5:9, 10:12, 0:40] = True
    bbox = pp.bounding_box(m, margin=margin)
    assert bbox[0] == slice(max(0, 5 - margin), min(20, 9 + margin))
    assert bbox[1] == slice(max(0, 10 - margin), min(30, 12 + margin))
    assert bbox[2] == slice(0, 40)


def test_bounding_box_errors() -> None:
    with pytest.raises(InputError, match="empty"):
        pp.bounding_box(np.zeros((4, 4, 4), bool))
    with pytest.raises(InputError, match="margin"):
        pp.bounding_box(np.ones((4, 4, 4), bool), margin=-1)


@pytest.mark.parametrize("lead", [(), (3,), (2, 2)])
def test_crop_uncrop_exact(lead: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    shape = (11, 13, 17)
    arr = rng.normal(size=lead + shape).astype(np.float32)
    bbox = (slice(2, 9), slice(0, 5), slice(4, 17))
    c = pp.crop(arr, bbox)
    assert c.shape == lead + (7, 5, 13)
    full = pp.uncrop(c, bbox, shape)
    assert full.dtype == arr.dtype and full.shape == arr.shape
    np.testing.assert_array_equal(full[(..., *bbox)], arr[(..., *bbox)])
    outside = np.ones(shape, bool)
    outside[bbox] = False
    assert np.all(full[..., outside] == 0)
    # crop returns a copy: writing to it leaves the input alone
    c[...] = 7
    assert not np.any(arr == 7)
    # fill value
    assert np.all(pp.uncrop(c, bbox, shape, fill=-1)[..., outside] == -1)


def test_uncrop_shape_mismatch() -> None:
    with pytest.raises(InputError, match="box size"):
        pp.uncrop(np.zeros((3, 3, 3)), (slice(0, 4), slice(0, 3), slice(0, 3)), (5, 5, 5))
    with pytest.raises(InputError, match="does not fit"):
        pp.uncrop(np.zeros((3, 3, 3)), (slice(4, 7), slice(0, 3), slice(0, 3)), (5, 5, 5))


# ------------------------------------------------------------------------ intensities
def test_clip_percentiles_inside_mask_only() -> None:
    rng = np.random.default_rng(1)
    img = rng.normal(100, 10, (1, 10, 10, 10)).astype(np.float32)
    img[0, 5, 5, 5] = 1e6  # outlier
    mask = np.zeros((10, 10, 10), bool)
    mask[1:9, 1:9, 1:9] = True
    img[0, 0, 0, 0] = -1e6  # outside the mask: untouched
    out = pp.clip_percentiles(img, mask, 1, 99)
    lo, hi = np.percentile(img[0][mask], [1, 99])
    assert out[0][mask].max() == pytest.approx(hi) and out[0][mask].min() == pytest.approx(lo)
    assert out[0, 0, 0, 0] == -1e6
    assert img[0, 5, 5, 5] == 1e6  # input not mutated


def test_zscore_inside_brain(tiny_phantom: Phantom) -> None:
    z = pp.zscore(tiny_phantom.images, tiny_phantom.brain)
    assert z.dtype == np.float32
    for c in range(4):
        v = z[c][tiny_phantom.brain]
        assert abs(float(v.mean())) < 1e-4
        assert float(v.std()) == pytest.approx(1.0, abs=1e-4)
    assert np.all(z[:, ~tiny_phantom.brain] == 0)


def test_zscore_constant_channel() -> None:
    img = np.ones((2, 6, 6, 6), np.float32)
    img[0] = np.arange(216, dtype=np.float32).reshape(6, 6, 6)
    with pytest.raises(InputError, match="Channel 1 is constant"):
        pp.zscore(img, np.ones((6, 6, 6), bool))


# --------------------------------------------------------------------------------- N4
def test_n4_reduces_bias_field() -> None:
    """N4 lowers the coefficient of variation of white matter under a strong bias field."""
    style = PhantomStyle(noise=0.01, bias=0.35, texture=0.0, blur_mm=0.5)
    p = make_phantom((48, 64, 64), seed=2, style=style)
    wm = ndi.binary_erosion(p.tissues == 3, iterations=1) & (p.labels == 0)
    img = p.images[0]
    before = img[wm].std() / img[wm].mean()
    original = img.copy()
    out = pp.n4_correct(img, p.brain, shrink=4, iterations=(50, 50, 30))
    after = out[wm].std() / out[wm].mean()
    np.testing.assert_array_equal(img, original)  # not mutated
    assert out.shape == img.shape and out.dtype == np.float32
    assert after < 0.7 * before, (before, after)


def test_n4_bad_mask() -> None:
    with pytest.raises(InputError, match="64 positive voxels"):
        pp.n4_correct(np.ones((8, 8, 8)), np.zeros((8, 8, 8), bool))


# ---------------------------------------------------------------------------- pipeline
def test_preprocess_pipeline(tiny_phantom: Phantom) -> None:
    before = tiny_phantom.images.copy()
    res = pp.preprocess(tiny_phantom.images, margin=2)
    np.testing.assert_array_equal(tiny_phantom.images, before)  # never mutates
    assert res.full_shape == tiny_phantom.shape
    assert res.images.shape[1:] == res.mask.shape
    assert res.images.shape[0] == 4 and res.images.dtype == np.float32
    for c in range(4):
        v = res.images[c][res.mask]
        assert abs(float(v.mean())) < 1e-4 and float(v.std()) == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_array_equal(res.uncrop(res.mask), tiny_phantom.brain)
    # labels round-trip exactly through the crop
    lab = res.crop(tiny_phantom.labels)
    np.testing.assert_array_equal(res.uncrop(lab), tiny_phantom.labels)
    assert res.params == {"margin": 2, "clip": [0.5, 99.5], "n4": False, "mask": "auto"}


def test_preprocess_deterministic(tiny_phantom: Phantom) -> None:
    a = pp.preprocess(tiny_phantom.images)
    b = pp.preprocess(tiny_phantom.images.copy())
    np.testing.assert_array_equal(a.images, b.images)
    assert a.bbox == b.bbox


def test_preprocess_with_given_mask(tiny_phantom: Phantom) -> None:
    m = np.zeros(tiny_phantom.shape, bool)
    m[10:20, 10:30, 10:30] = tiny_phantom.brain[10:20, 10:30, 10:30]
    res = pp.preprocess(tiny_phantom.images, mask=m, margin=0, clip=None)
    assert res.mask.shape == (10, 20, 20)
    assert res.params["mask"] == "given" and res.params["clip"] is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"clip": (50, 10)}, "clip"),
        ({"clip": "high"}, "clip"),
        ({"margin": -2}, "margin"),
        ({"mask": np.ones((3, 3, 3), bool)}, "shape"),
    ],
)
def test_preprocess_bad_parameters(tiny_phantom: Phantom, kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        pp.preprocess(tiny_phantom.images, **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_input_is_an_input_error(tiny_phantom: Phantom, bad: float) -> None:
    img = tiny_phantom.images.copy()
    img[2, 16, 20, 20] = bad
    with pytest.raises(InputError, match=r"NaN or infinite.*channel\(s\) \[2\]"):
        pp.preprocess(img)
    with pytest.raises(InputError, match="NaN"):
        pp.brain_mask(img)


def test_preprocess_case_cache(tiny_case) -> None:
    a = pp.preprocess_case(tiny_case)
    assert pp.cache_info()["entries"] == 1
    b = pp.preprocess_case(tiny_case)
    assert pp.cache_info()["entries"] == 1  # a hit
    np.testing.assert_array_equal(a.images, b.images)
    assert a.bbox == b.bbox and a.params == b.params
    assert a.images is not b.images  # copies: the cache cannot be corrupted by a caller
    a.images[...] = 0
    c = pp.preprocess_case(tiny_case)
    np.testing.assert_array_equal(c.images, b.images)
    # a changed parameter misses
    d = pp.preprocess_case(tiny_case, margin=0)
    assert pp.cache_info()["entries"] == 2
    assert d.images.shape != b.images.shape
    e = pp.preprocess_case(tiny_case, clip=(1, 99))
    assert pp.cache_info()["entries"] == 3
    assert not np.array_equal(e.images, b.images)
    # changed data misses
    tiny_case.images[0, 16, 20, 20] += 1.0
    pp.preprocess_case(tiny_case)
    assert pp.cache_info()["entries"] == 4


def test_preprocess_case_geometry(tiny_case) -> None:
    res = pp.preprocess_case(tiny_case)
    start = np.asarray(res.start, float)
    expected = tiny_case.canonical_geometry.index_to_world(start)
    np.testing.assert_allclose(res.geometry.index_to_world(np.zeros(3)), expected)


def test_preprocess_case_unknown_parameter(tiny_case) -> None:
    with pytest.raises(InputError, match="unknown parameter"):
        pp.preprocess_case(tiny_case, clamp=(1, 99))


def test_cache_is_bounded(tiny_case) -> None:
    for margin in range(pp.CACHE_SIZE + 3):
        pp.preprocess_case(tiny_case, margin=margin)
    assert pp.cache_info()["entries"] == pp.CACHE_SIZE


# --------------------------------------------------------------------------------- CLI
def test_cli_preprocess_round_trip(tmp_path, capsys, tiny_phantom: Phantom) -> None:
    """Outputs are on the original grid with the source geometry and reload as a case."""
    import json

    from napari_ssseg.cli import main
    from napari_ssseg.io.readers import load_case, read_image
    from napari_ssseg.io.writers import write_case

    case = tiny_phantom.to_case(name="p0")
    src = write_case(case, tmp_path / "in", naming="brats2023")
    rc = main(["preprocess", str(src), "--out", str(tmp_path / "out"), "--margin", "1"])
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    out = load_case(tmp_path / "out")
    assert out.shape == case.shape
    assert out.geometry.allclose(case.geometry, atol=1e-6)
    expected = pp.preprocess(case.images, margin=1)
    np.testing.assert_allclose(out.images, expected.uncrop(expected.images), atol=1e-6)
    np.testing.assert_array_equal(out.labels, case.labels)
    mask, _ = read_image(tmp_path / "out" / "p0_brainmask.nii.gz")
    np.testing.assert_array_equal(np.asarray(mask) > 0, tiny_phantom.brain)
    meta = json.loads((tmp_path / "out" / "preprocess.json").read_text())
    assert meta["params"]["margin"] == 1
    assert meta["crop_start_zyx"] == [s.start for s in expected.bbox]


def test_cli_preprocess_missing_case(tmp_path, capsys) -> None:
    from napari_ssseg.cli import main

    rc = main(["preprocess", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"margin": "two"}, "margin"),
        ({"margin": 1.5}, "margin"),
        ({"clip": (1,)}, "clip"),
        ({"spacing": (1, 0, 1)}, "spacing"),
    ],
)
def test_preprocess_case_bad_parameters(tiny_case, kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        pp.preprocess_case(tiny_case, **kwargs)


def test_progress_callback(tiny_case) -> None:
    calls: list[tuple[float, str]] = []
    pp.preprocess_case(tiny_case, progress=lambda f, m: calls.append((f, m)))
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    calls.clear()
    pp.preprocess_case(tiny_case, progress=lambda f, m: calls.append((f, m)))  # cache hit
    assert calls == [(1.0, "preprocessing: cached result")]
