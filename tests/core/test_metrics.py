"""Tests of napari_ssseg.core.metrics: hand-computed cases, empty-mask conventions, input
validation, and a cross-check against MONAI's metric functions."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from napari_ssseg.core import metrics as M
from napari_ssseg.errors import InputError


# ---------------------------------------------------------------------------- helpers
def cube(shape, start, size):
    """Bool array with a box of ``size`` voxels per axis starting at ``start``."""
    a = np.zeros(shape, bool)
    a[tuple(slice(s, s + n) for s, n in zip(start, size))] = True
    return a


def blob(shape, seed, quantile=0.6, sigma=2.0):
    """Irregular smooth random blob(s), deterministic by seed."""
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.random(shape), sigma)
    return f > np.quantile(f, quantile)


SHAPE = (24, 26, 28)


# --------------------------------------------------------------- hand-computed values
@pytest.mark.parametrize(
    ("axis", "k", "spacing"),
    [
        (0, 1, (1.0, 1.0, 1.0)),
        (0, 2, (1.0, 1.0, 1.0)),
        (0, 3, (3.0, 0.9, 0.9)),
        (1, 2, (3.0, 0.9, 0.9)),
        (2, 4, (3.0, 0.9, 1.2)),
        (2, 1, (0.5, 2.0, 0.7)),
    ],
)
def test_shifted_cubes(axis, k, spacing):
    n = 10
    start = [6, 7, 8]
    gt = cube(SHAPE, start, (n, n, n))
    start[axis] += k
    pred = cube(SHAPE, start, (n, n, n))
    assert M.dice(pred, gt) == pytest.approx((n - k) / n)
    assert M.iou(pred, gt) == pytest.approx((n - k) / (n + k))
    assert M.ravd(pred, gt) == 0.0
    # the whole shifted face (1/6 of the border) is exactly k voxels away; nothing is farther
    assert M.hd95(pred, gt, spacing) == pytest.approx(k * spacing[axis])
    d_pg, d_gp = M.surface_distances(pred, gt, spacing)
    assert d_pg.max() == pytest.approx(k * spacing[axis])
    assert d_gp.max() == pytest.approx(k * spacing[axis])
    assert 0 < M.asd(pred, gt, spacing) < k * spacing[axis]
    # NSD: everything within tolerance k*s; strictly less below the smallest non-zero distance
    assert M.nsd(pred, gt, spacing, tolerance_mm=k * spacing[axis]) == 1.0
    nsd_tight = M.nsd(pred, gt, spacing, tolerance_mm=0.99 * min(spacing))
    assert 0 < nsd_tight < 1


def test_identical_masks_are_perfect():
    gt = blob(SHAPE, 3)
    r = M.binary_metrics(gt, gt.copy(), (2.0, 1.0, 0.5))
    assert r == {"dice": 1.0, "hd95": 0.0, "iou": 1.0, "nsd": 1.0, "asd": 0.0, "ravd": 0.0}


@pytest.mark.parametrize(
    ("pred_size", "gt_size", "expected"),
    [(4, 4, 0.0), (2, 4, 1 - 8 / 64), (4, 2, (64 - 8) / 8), (3, 6, 1 - 27 / 216)],
)
def test_ravd_of_nested_cubes(pred_size, gt_size, expected):
    pred = cube(SHAPE, (2, 2, 2), (pred_size,) * 3)
    gt = cube(SHAPE, (2, 2, 2), (gt_size,) * 3)
    assert M.ravd(pred, gt) == pytest.approx(expected)


def test_asd_of_concentric_cubes():
    # a 6^3 cube inside an 8^3 cube, isotropic 2 mm: every border voxel of the inner cube is
    # 1 voxel (2 mm) from the outer border; outer border voxels are 1, sqrt(2) or sqrt(3)
    # voxels from the inner border (faces, edges, corners of the shell).
    gt = cube(SHAPE, (4, 4, 4), (8, 8, 8))
    pred = cube(SHAPE, (5, 5, 5), (6, 6, 6))
    d_pg, d_gp = M.surface_distances(pred, gt, 2.0)
    n_inner = 6**3 - 4**3
    n_outer = 8**3 - 6**3
    assert d_pg.size == n_inner and d_gp.size == n_outer
    np.testing.assert_allclose(d_pg, 2.0)
    faces, edges, corners = 6 * 6 * 6, 12 * 6, 8
    assert faces + edges + corners == n_outer
    expected = n_inner * 2 + faces * 2 + edges * 2 * math.sqrt(2) + corners * 2 * math.sqrt(3)
    assert M.asd(pred, gt, 2.0) == pytest.approx(expected / (n_inner + n_outer))
    assert M.hd95(pred, gt, 2.0) == pytest.approx(2 * math.sqrt(2))  # 95th pct of the shell


def test_masks_touching_the_image_border_have_borders_there():
    full = np.ones((5, 6, 7), bool)
    d_pg, d_gp = M.surface_distances(full, full)
    # every voxel on the array's outer faces is a border voxel
    assert d_pg.size == full.size - 3 * 4 * 5
    assert M.hd95(full, full) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 0.9, 1.1)])
def test_edt_and_kdtree_give_the_same_distances(seed, spacing):
    pred, gt = blob(SHAPE, seed), blob(SHAPE, seed + 50)
    a = M.surface_distances(pred, gt, spacing, method="edt")
    b = M.surface_distances(pred, gt, spacing, method="kdtree")
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)


def test_crop_gives_the_same_result_as_the_full_grid():
    # the same small pair placed in a small and in a large grid
    pred, gt = blob((12, 14, 16), 7), blob((12, 14, 16), 8)
    big_p = np.zeros((40, 50, 60), bool)
    big_g = np.zeros((40, 50, 60), bool)
    big_p[10:22, 20:34, 30:46] = pred
    big_g[10:22, 20:34, 30:46] = gt
    small = M.binary_metrics(pred, gt, (2.0, 1.0, 1.5))
    big = M.binary_metrics(big_p, big_g, (2.0, 1.0, 1.5))
    # masks touching the small grid's faces get borders there; the big grid has none
    touching = any(
        m.take(0, axis=a).any() or m.take(-1, axis=a).any() for m in (pred, gt) for a in range(3)
    )
    if not touching:
        assert small == pytest.approx(big)
    inner_p = np.pad(pred, 1)
    inner_g = np.pad(gt, 1)
    big_p2 = np.zeros((40, 50, 60), bool)
    big_g2 = np.zeros((40, 50, 60), bool)
    big_p2[10:24, 20:36, 30:48] = inner_p
    big_g2[10:24, 20:36, 30:48] = inner_g
    assert M.binary_metrics(inner_p, inner_g, (2.0, 1.0, 1.5)) == pytest.approx(
        M.binary_metrics(big_p2, big_g2, (2.0, 1.0, 1.5))
    )


def test_spacing_scales_distances():
    pred, gt = blob(SHAPE, 11), blob(SHAPE, 12)
    a = M.binary_metrics(pred, gt, 1.0)
    b = M.binary_metrics(pred, gt, 2.5)
    for key in ("hd95", "asd"):
        assert b[key] == pytest.approx(2.5 * a[key])
    for key in ("dice", "iou", "ravd"):
        assert b[key] == a[key]


def test_anisotropic_spacing_is_applied_per_axis():
    gt = cube(SHAPE, (5, 5, 5), (8, 8, 8))
    pred_z = cube(SHAPE, (7, 5, 5), (8, 8, 8))
    pred_x = cube(SHAPE, (5, 5, 7), (8, 8, 8))
    sp = (3.0, 1.0, 0.5)  # (Z, Y, X)
    assert M.hd95(pred_z, gt, sp) == pytest.approx(6.0)
    assert M.hd95(pred_x, gt, sp) == pytest.approx(1.0)


def test_2d_masks_are_supported():
    gt = np.zeros((20, 20), bool)
    gt[5:15, 5:15] = True
    pred = np.roll(gt, 2, axis=1)
    assert M.hd95(pred, gt, (1.0, 0.5)) == pytest.approx(1.0)
    assert M.dice(pred, gt) == pytest.approx(0.8)


def test_inputs_are_not_modified():
    pred = blob(SHAPE, 1).astype(np.uint8) * 3
    gt = blob(SHAPE, 2).astype(np.uint8)
    p0, g0 = pred.copy(), gt.copy()
    M.region_metrics(pred, gt, (1, 1, 1), per_class=True)
    M.binary_metrics(pred, gt)
    np.testing.assert_array_equal(pred, p0)
    np.testing.assert_array_equal(gt, g0)


# ----------------------------------------------------------------- empty-mask conventions
EMPTY = np.zeros((10, 12, 14), bool)
SOME = cube((10, 12, 14), (2, 3, 4), (4, 4, 4))
DIAG = M.BRATS_MISSED_HD95  # the BraTS penalty, whatever the grid


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        (EMPTY, EMPTY, {"dice": 1, "hd95": 0, "iou": 1, "nsd": 1, "asd": 0, "ravd": 0}),
        (EMPTY, SOME, {"dice": 0, "hd95": DIAG, "iou": 0, "nsd": 0, "asd": DIAG, "ravd": 1}),
        (SOME, EMPTY, {"dice": 0, "hd95": DIAG, "iou": 0, "nsd": 0, "asd": DIAG, "ravd": None}),
    ],
    ids=["both-empty", "pred-empty", "gt-empty"],
)
def test_empty_mask_conventions(pred, gt, expected):
    sp = (2.0, 1.0, 0.5)
    got = M.binary_metrics(pred, gt, sp)
    assert list(got) == list(M.METRIC_NAMES)
    for key, value in expected.items():
        if value is None:
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value), key
    # the single-metric functions follow the same conventions
    assert M.dice(pred, gt) == got["dice"]
    assert M.iou(pred, gt) == got["iou"]
    assert M.hd95(pred, gt, sp) == got["hd95"]
    assert M.asd(pred, gt, sp) == got["asd"]
    assert M.nsd(pred, gt, sp) == got["nsd"]


def test_empty_distance_can_be_overridden():
    assert math.isnan(M.hd95(EMPTY, SOME, empty_distance=float("nan")))
    assert M.asd(SOME, EMPTY, empty_distance=99.0) == 99.0
    r = M.region_metrics(
        np.zeros((5, 5, 5), np.uint8), np.full((5, 5, 5), 3, np.uint8), empty_distance=-1.0
    )
    assert r["ET"]["hd95"] == -1.0


def test_brats_grid_diagonal():
    assert M.image_diagonal((155, 240, 240), (1, 1, 1)) == pytest.approx(373.13, abs=0.01)
    assert M.BRATS_MISSED_HD95 == pytest.approx(373.13, abs=0.01)
    # the grid diagonal is still available as the penalty
    sp = (2.0, 1.0, 0.5)
    diag = math.sqrt((10 * 2.0) ** 2 + (12 * 1.0) ** 2 + (14 * 0.5) ** 2)
    assert M.hd95(EMPTY, SOME, sp, empty_distance=M.image_diagonal(EMPTY.shape, sp)) == (
        pytest.approx(diag)
    )


# ---------------------------------------------------------------------- regions, classes
def _tumour(shape=(20, 22, 24), shift=0):
    lab = np.zeros(shape, np.uint8)
    zz, yy, xx = np.indices(shape)
    r = np.sqrt((zz - 10) ** 2 + (yy - 11 - shift) ** 2 + (xx - 12) ** 2)
    lab[r <= 8] = 2
    lab[r <= 5] = 3
    lab[r <= 3] = 1
    return lab


def test_region_metrics_structure_and_values():
    gt = _tumour()
    pred = _tumour(shift=1)
    sp = (1.0, 1.0, 1.0)
    r = M.region_metrics(pred, gt, sp)
    assert list(r) == ["WT", "TC", "ET"]
    for region, values in {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}.items():
        assert list(r[region]) == list(M.METRIC_NAMES)
        assert r[region] == pytest.approx(
            M.binary_metrics(np.isin(pred, values), np.isin(gt, values), sp)
        )


def test_region_metrics_relabelled_core_changes_only_tc():
    gt = _tumour()
    pred = gt.copy()
    pred[pred == 1] = 2  # call the necrotic core oedema
    r = M.region_metrics(pred, gt)
    assert r["WT"]["dice"] == 1.0 and r["ET"]["dice"] == 1.0
    assert r["TC"]["dice"] < 1.0


def test_region_metrics_per_class_and_subset():
    gt = _tumour()
    pred = _tumour(shift=2)
    r = M.region_metrics(pred, gt, regions=["wt"], per_class=True)
    assert list(r) == ["WT", "NCR", "ED", "ET"]
    assert r["ED"]["dice"] == pytest.approx(M.dice(pred == 2, gt == 2))
    r2 = M.region_metrics(pred, gt, per_class=True)
    assert list(r2) == ["WT", "TC", "ET", "NCR", "ED"]  # class ET is region ET
    assert r2["ET"] == pytest.approx(M.binary_metrics(pred == 3, gt == 3))


def test_region_dice_matches_region_metrics_and_empty_conventions():
    gt = _tumour()
    pred = _tumour(shift=2)
    full = M.region_metrics(pred, gt)
    d = M.region_dice(pred, gt)
    assert list(d) == ["WT", "TC", "ET"]
    assert d == pytest.approx({r: full[r]["dice"] for r in d})
    assert 0.0 < d["WT"] < 1.0
    assert M.region_dice(pred, gt, regions=["et"]) == pytest.approx({"ET": d["ET"]})
    empty = np.zeros_like(gt)
    assert M.region_dice(empty, empty) == {"WT": 1.0, "TC": 1.0, "ET": 1.0}
    assert M.region_dice(empty, gt) == {"WT": 0.0, "TC": 0.0, "ET": 0.0}
    with pytest.raises(InputError, match="same grid"):
        M.region_dice(gt[:-1], gt)
    with pytest.raises(InputError, match="region"):
        M.region_dice(gt, gt, regions=["XX"])


def test_to_jsonable_gives_strict_json():
    r = M.region_metrics(np.full((4, 5, 6), 3, np.uint8), np.zeros((4, 5, 6), np.uint8))
    assert math.isnan(r["ET"]["ravd"])
    with pytest.raises(ValueError):
        json.dumps(r, allow_nan=False)
    text = json.dumps(M.to_jsonable(r), allow_nan=False)
    back = json.loads(text)
    assert back["ET"]["ravd"] is None
    assert back["WT"]["dice"] == 0.0
    assert M.to_jsonable({"a": [np.float32(1.5), np.int64(2), float("inf")]}) == {
        "a": [1.5, 2, None]
    }


# -------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: M.dice(np.zeros((3, 4, 5)), np.zeros((3, 4, 6))), "same grid"),
        (lambda: M.hd95(np.zeros((3, 4, 5)), np.zeros((3, 4, 5)), (1, 1)), "spacing"),
        (lambda: M.hd95(np.zeros((3, 4, 5)), np.zeros((3, 4, 5)), (1, 0, 1)), "positive"),
        (lambda: M.asd(np.zeros((2, 3, 4, 5)), np.zeros((2, 3, 4, 5))), "3D"),
        (lambda: M.iou(np.full((3, 4, 5), np.nan), np.zeros((3, 4, 5))), "NaN"),
        (lambda: M.nsd(np.zeros((3, 4, 5)), np.zeros((3, 4, 5)), 1, -1.0), "tolerance_mm"),
        (lambda: M.surface_distances(SOME, SOME, method="fast"), "method"),
        (
            lambda: M.region_metrics(np.zeros((3, 4, 5), int), np.full((3, 4, 5), 4)),
            r"values \[4\].*convention",
        ),
        (
            lambda: M.region_metrics(np.zeros((3, 4, 5), int), np.zeros((3, 4, 6), int)),
            "same grid",
        ),
        (
            lambda: M.region_metrics(
                np.zeros((3, 4, 5), int), np.zeros((3, 4, 5), int), regions=["WTT"]
            ),
            "Did you mean 'WT'",
        ),
        (
            lambda: M.region_metrics(np.zeros((3, 4, 5), bool), np.zeros((3, 4, 5), int)),
            "integer label array",
        ),
    ],
)
def test_bad_input_raises_input_error(call, match):
    with pytest.raises(InputError, match=match):
        call()


# ------------------------------------------------------------------- MONAI cross-check
CROSS_CASES = [
    # (shape, spacing, seeds, tolerance)
    ((16, 24, 20), (2.5, 0.9, 1.1), (0, 100), 1.5),
    ((16, 24, 20), (1.0, 1.0, 1.0), (1, 101), 1.0),
    ((20, 18, 22), (3.0, 0.5, 0.7), (2, 102), 2.0),
    ((20, 18, 22), (0.8, 1.2, 2.2), (3, 3), 1.0),  # identical masks
    ((30, 30), (0.7, 1.3), (4, 104), 1.5),  # 2D
]


@pytest.mark.parametrize(("shape", "spacing", "seeds", "tol"), CROSS_CASES)
def test_matches_monai(shape, spacing, seeds, tol):
    torch = pytest.importorskip("torch")
    mm = pytest.importorskip("monai.metrics")
    pred = blob(shape, seeds[0])
    gt = blob(shape, seeds[1], quantile=0.55)

    def t(m):
        return torch.as_tensor(m[None, None].astype(np.float32))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai = {
            "dice": mm.compute_dice(t(pred), t(gt)),
            "iou": mm.compute_iou(t(pred), t(gt)),
            "hd95": mm.compute_hausdorff_distance(
                t(pred), t(gt), include_background=True, percentile=95, spacing=spacing
            ),
            "asd": mm.compute_average_surface_distance(
                t(pred), t(gt), include_background=True, symmetric=True, spacing=spacing
            ),
            "nsd": mm.compute_surface_dice(
                t(pred), t(gt), [tol], include_background=True, spacing=spacing
            ),
        }
        monai["nsd_surfels"] = mm.compute_surface_dice(
            t(pred), t(gt), [tol], include_background=True, spacing=spacing, use_subvoxels=True
        )
    ours = M.binary_metrics(
        pred, gt, spacing, tolerance_mm=tol, definition="directed-max", nsd_method="voxels"
    )
    ours["nsd_surfels"] = M.binary_metrics(pred, gt, spacing, tolerance_mm=tol)["nsd"]
    assert 0 < ours["dice"] <= 1
    for key, value in monai.items():
        assert ours[key] == pytest.approx(float(value), rel=1e-5, abs=1e-5), key
    # and the single-metric functions
    hd_monai = float(monai["hd95"])
    assert M.hd95(pred, gt, spacing, definition="directed-max") == pytest.approx(hd_monai, rel=1e-5)
    # the pooled (BraTS) definition is never above MONAI's
    assert M.hd95(pred, gt, spacing) <= hd_monai + 1e-9
    assert M.nsd(pred, gt, spacing, tol, nsd_method="voxels") == pytest.approx(
        float(monai["nsd"]), rel=1e-5
    )
    assert M.nsd(pred, gt, spacing, tol) == pytest.approx(float(monai["nsd_surfels"]), rel=1e-5)


def test_region_metrics_match_monai_per_region():
    torch = pytest.importorskip("torch")
    mm = pytest.importorskip("monai.metrics")
    gt = _tumour()
    rng = np.random.default_rng(5)
    pred = _tumour(shift=1)
    flip = rng.random(pred.shape) < 0.03
    pred[flip] = rng.integers(0, 4, int(flip.sum()))
    sp = (2.0, 0.9, 1.1)
    ours = M.region_metrics(
        pred, gt, sp, tolerance_mm=1.0, definition="directed-max", nsd_method="voxels"
    )

    def onehot(lab):
        return torch.as_tensor(
            np.stack([np.isin(lab, v) for v in ((1, 2, 3), (1, 3), (3,))])[None].astype(np.float32)
        )

    p, g = onehot(pred), onehot(gt)
    hd = mm.compute_hausdorff_distance(p, g, include_background=True, percentile=95, spacing=sp)
    nsd = mm.compute_surface_dice(p, g, [1.0] * 3, include_background=True, spacing=sp)
    asd = mm.compute_average_surface_distance(
        p, g, include_background=True, symmetric=True, spacing=sp
    )
    dsc = mm.compute_dice(p, g)
    for i, region in enumerate(("WT", "TC", "ET")):
        assert ours[region]["hd95"] == pytest.approx(float(hd[0, i]), rel=1e-5)
        assert ours[region]["nsd"] == pytest.approx(float(nsd[0, i]), rel=1e-5)
        assert ours[region]["asd"] == pytest.approx(float(asd[0, i]), rel=1e-5)
        assert ours[region]["dice"] == pytest.approx(float(dsc[0, i]), rel=1e-6)


# --------------------------------------------------------- HD95 definitions, surfel NSD
def test_hd95_definitions_hand_computed():
    # 2D, unit spacing: every foreground pixel is a border pixel
    gt = np.zeros((5, 15), bool)
    gt[2, 2] = gt[2, 12] = True
    pred = np.zeros_like(gt)
    pred[2, 2] = True
    # d(pred -> gt) = [0]; d(gt -> pred) = [0, 10]
    # pooled: P95 of [0, 0, 10] = 0 + 0.9 * 10 (position 0.95 * 2 = 1.9)
    assert M.hd95(pred, gt, 1.0) == pytest.approx(9.0)
    assert M.hd95(pred, gt, 1.0, definition="pooled") == pytest.approx(9.0)
    # directed-max: max(P95([0]), P95([0, 10]) = 9.5)
    assert M.hd95(pred, gt, 1.0, definition="directed-max") == pytest.approx(9.5)
    # surface-distance (DeepMind): surfels on the corner grid, no interpolation: the far
    # pixel's four surfels are 10 away and hold half of gt's surface
    assert M.hd95(pred, gt, 1.0, definition="surface-distance") == pytest.approx(10.0)
    with pytest.raises(InputError, match="definition"):
        M.hd95(pred, gt, 1.0, definition="pooledd")


def test_nsd_surfels_hand_computed_on_a_coarse_grid():
    # one pixel each, shifted by one pixel along axis 1 whose spacing is 2 mm. Each pixel's
    # contour is a diamond through the edge midpoints: 4 segments of 0.5 * hypot(1, 2) mm,
    # whose surfels sit at the pixel corners (+-0.5 mm, +-1 mm). The two shared corners are at
    # distance 0, the others 2 mm away: at 1 mm tolerance half of each surface is within.
    a = np.zeros((3, 6), bool)
    b = np.zeros((3, 6), bool)
    a[1, 2] = True
    b[1, 3] = True
    sp = (1.0, 2.0)
    d_ab, d_ba, w_a, w_b = M.surfel_distances(a, b, sp)
    np.testing.assert_allclose(sorted(d_ab), [0, 0, 2, 2])
    np.testing.assert_allclose(w_a, [0.5 * math.hypot(1, 2)] * 4)
    assert M.nsd(a, b, sp, 1.0) == pytest.approx(0.5)
    assert M.nsd(a, b, sp, 2.0) == pytest.approx(1.0)
    # counting border pixels, nothing is within 1 mm on this grid
    assert M.nsd(a, b, sp, 1.0, nsd_method="voxels") == 0.0
    with pytest.raises(InputError, match="nsd_method"):
        M.nsd(a, b, sp, 1.0, nsd_method="surface")


def test_surfel_area_of_a_box():
    # the marching-cubes surface of an a x b x c voxel box, cut at the edge midpoints, is the
    # box shrunk by half a voxel with chamfered edges; its faces have (a-1)(b-1) ... areas
    box = cube((8, 9, 10), (2, 2, 2), (3, 4, 5))
    _, _, w, _ = M.surfel_distances(box, box, (1.0, 1.0, 1.0))
    faces = 2 * (2 * 3 + 2 * 4 + 3 * 4)
    edges = 4 * (2 + 3 + 4) * math.sqrt(0.5)  # chamfer strips of width sqrt(2)/2
    corners = 8 * math.sqrt(3) / 8  # corner triangles
    assert w.sum() == pytest.approx(faces + edges + corners)


def test_surfel_table_matches_monai_for_every_code():
    torch = pytest.importorskip("torch")
    mu = pytest.importorskip("monai.metrics.utils")
    import itertools

    kernel = np.array(mu.ENCODING_KERNEL[3])
    for sp in ((1.0, 1.0, 1.0), (2.5, 0.8, 1.3)):
        theirs = mu.get_code_to_measure_table(sp)[0].cpu().numpy()
        ours = M._surfel_area_table(sp)
        for bits in itertools.product((0, 1), repeat=8):
            block = np.array(bits).reshape(2, 2, 2)
            our_code = int(M._neighbour_codes(block.astype(bool))[0, 0, 0])
            their_code = int((block * kernel).sum())
            assert ours[our_code] == pytest.approx(float(theirs[their_code]), abs=1e-5), bits
    del torch
