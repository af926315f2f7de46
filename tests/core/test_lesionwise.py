"""Lesion-wise Dice / HD95 (BraTS 2023+ rules) on small hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ssseg.core import lesionwise as L
from napari_ssseg.core.metrics import hd95
from napari_ssseg.errors import InputError

SHAPE = (20, 40, 40)
P = L.LESION_PENALTY_HD95


def cube(mask, start, size):
    mask[tuple(slice(s, s + n) for s, n in zip(start, size))] = True
    return mask


def empty():
    return np.zeros(SHAPE, bool)


def test_tp_fn_fp_scores():
    gt = cube(empty(), (2, 2, 2), (4, 4, 4))  # 64 mm3 > 50: counted
    cube(gt, (2, 30, 30), (4, 4, 4))  # a second lesion, missed
    pred = cube(empty(), (2, 2, 2), (4, 4, 4))  # the first, exactly
    cube(pred, (14, 2, 30), (3, 3, 3))  # a false positive far from any lesion
    r = L.lesion_wise(pred, gt, dilation=3, min_volume_mm3=50)
    assert (r["n_tp"], r["n_fn"], r["n_fp"], r["n_small"]) == (1, 1, 1, 0)
    # (1 + 0) / (2 lesions + 1 FP); (0 + 374 + 374) / 3
    assert r["dice"] == pytest.approx(1 / 3)
    assert r["hd95"] == pytest.approx(2 * P / 3)
    assert [d["dice"] for d in r["lesions"]] == [1.0, 0.0]
    assert [d["hd95"] for d in r["lesions"]] == [0.0, P]
    assert [d["volume_mm3"] for d in r["lesions"]] == [64.0, 64.0]


def test_both_empty_is_perfect_and_only_fp_is_penalised():
    r = L.lesion_wise(empty(), empty())
    assert (r["dice"], r["hd95"], r["n_fp"]) == (1.0, 0.0, 0)
    r = L.lesion_wise(cube(empty(), (5, 5, 5), (2, 2, 2)), empty())
    assert (r["dice"], r["hd95"], r["n_fp"]) == (0.0, P, 1)


def test_small_lesions_are_ignored_and_their_matches_are_not_fp():
    gt = cube(empty(), (2, 2, 2), (3, 3, 3))  # 27 mm3 <= 50
    r = L.lesion_wise(empty(), gt, min_volume_mm3=50)
    assert (r["n_small"], r["n_fn"], r["dice"], r["hd95"]) == (1, 0, 1.0, 0.0)
    r = L.lesion_wise(gt.copy(), gt, min_volume_mm3=50)
    assert (r["n_small"], r["n_fp"], r["dice"]) == (1, 0, 1.0)
    # the threshold is exclusive and in mm3: 27 voxels of 1 mm3 count above 26 mm3
    r = L.lesion_wise(empty(), gt, min_volume_mm3=26)
    assert (r["n_fn"], r["dice"], r["hd95"]) == (1, 0.0, P)
    # with 0.5 mm voxels a 4x4x4 lesion is 8 mm3
    big = cube(empty(), (2, 2, 2), (4, 4, 4))
    r = L.lesion_wise(empty(), big, (0.5, 0.5, 0.5), min_volume_mm3=2)
    assert r["lesions"][0]["volume_mm3"] == pytest.approx(8.0)
    assert r["n_fn"] == 1


def test_gt_components_merge_within_the_dilation():
    gt = cube(empty(), (5, 5, 5), (4, 4, 4))
    cube(gt, (5, 5, 12), (4, 4, 4))  # gap of 3 voxels along x
    pred = gt.copy()
    merged = L.lesion_wise(pred, gt, dilation=3, min_volume_mm3=0)
    assert len(merged["lesions"]) == 1
    assert merged["lesions"][0]["volume_mm3"] == 128.0
    assert merged["lesions"][0]["n_matched"] == 2
    separate = L.lesion_wise(pred, gt, dilation=1, min_volume_mm3=0)
    assert len(separate["lesions"]) == 2
    assert separate["n_tp"] == 2 and separate["dice"] == 1.0


def test_prediction_near_a_lesion_matches_through_the_dilation():
    gt = cube(empty(), (5, 5, 5), (4, 4, 4))
    pred = cube(empty(), (5, 5, 11), (4, 4, 4))  # gap of 2 voxels, no overlap
    r3 = L.lesion_wise(pred, gt, dilation=3, min_volume_mm3=0)
    assert (r3["n_tp"], r3["n_fp"]) == (1, 0)
    assert r3["dice"] == 0.0
    assert r3["hd95"] == pytest.approx(hd95(pred, gt, definition="surface-distance"))
    assert 0 < r3["hd95"] < P
    r1 = L.lesion_wise(pred, gt, dilation=1, min_volume_mm3=0)
    assert (r1["n_tp"], r1["n_fn"], r1["n_fp"]) == (0, 1, 1)
    assert r1["hd95"] == P


def test_lesionwise_metrics_per_region_and_challenge():
    gt = np.zeros(SHAPE, np.uint8)
    gt[2:8, 2:8, 2:8] = 2
    gt[3:7, 3:7, 3:7] = 3  # 64 mm3 ET
    pred = gt.copy()
    pred[pred == 3] = 2  # ET missed entirely
    r = L.lesionwise_metrics(pred, gt, challenge="glioma")
    assert list(r) == ["WT", "TC", "ET"]
    assert r["WT"]["dice"] == 1.0
    assert (r["ET"]["dice"], r["ET"]["hd95"], r["ET"]["n_fn"]) == (0.0, P, 1)
    assert (r["ET"]["challenge"], r["ET"]["dilation"], r["ET"]["min_volume_mm3"]) == (
        "glioma",
        3,
        50.0,
    )
    met = L.lesionwise_metrics(pred, gt, challenge="BraTS-MET", regions=["ET"])
    assert (met["ET"]["dilation"], met["ET"]["min_volume_mm3"]) == (1, 2.0)
    post = L.get_rules("post-treatment")
    assert (post.threshold("WT"), post.threshold("ET")) == (20.0, 10.0)


def test_bad_input():
    with pytest.raises(InputError, match="challenge"):
        L.get_rules("gliomaa")
    with pytest.raises(InputError, match="same grid"):
        L.lesion_wise(np.zeros((3, 3, 3)), np.zeros((3, 3, 4)))
    with pytest.raises(InputError, match="dilation"):
        L.lesion_wise(empty(), empty(), dilation=-1)
    with pytest.raises(InputError, match="internal labels"):
        L.lesionwise_metrics(np.full(SHAPE, 4, np.uint8), np.zeros(SHAPE, np.uint8))
