"""Tests for napari_ssseg.core.degrade."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ssseg.core.degrade import DEGRADATIONS, degrade, degrade_all
from napari_ssseg.errors import InputError

SHAPE = (30, 40, 40)


def _labels():
    zz, yy, xx = np.indices(SHAPE)
    brain = ((zz - 15) / 14) ** 2 + ((yy - 20) / 19) ** 2 + ((xx - 20) / 19) ** 2 < 1
    d = np.sqrt((zz - 15) ** 2 + (yy - 18) ** 2 + (xx - 22) ** 2)
    lab = np.zeros(SHAPE, np.uint8)
    lab[d < 9] = 2
    lab[d < 5] = 3
    lab[d < 3] = 1
    return lab, brain


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize(
    "kind, check",
    [
        ("undersegmented_oedema", "smaller"),
        ("noisy_boundary", "both"),
        ("missed_lobe", "smaller"),
        ("false_positive_blob", "larger"),
    ],
)
def test_each_degradation(kind, check):
    lab, brain = _labels()
    lab0 = lab.copy()
    out = degrade(lab, kind, brain=brain, spacing=(1, 1, 1), seed=3)
    np.testing.assert_array_equal(lab, lab0)  # not mutated
    assert out.dtype == np.uint8 and out.shape == lab.shape
    assert not np.any((out > 0) & ~brain)
    wt, wt0 = out > 0, lab > 0
    assert 0.3 < _dice(wt, wt0) < 0.99
    if check == "smaller":
        assert not np.any(wt & ~wt0)
    elif check == "larger":
        assert np.all(wt[wt0])
        extra = wt & ~wt0
        assert np.all(out[extra] == 2)
        # the blob is away from the tumour
        from scipy import ndimage

        dist = ndimage.distance_transform_edt(~wt0)
        assert dist[extra].min() >= 1.9  # 10 mm on a real brain; this toy is small
    else:
        assert np.any(wt & ~wt0) and np.any(wt0 & ~wt)
    if kind == "undersegmented_oedema":
        np.testing.assert_array_equal(np.isin(out, (1, 3)), np.isin(lab, (1, 3)))


@pytest.mark.parametrize("kind", DEGRADATIONS)
def test_deterministic_and_seeded(kind):
    lab, brain = _labels()
    a = degrade(lab, kind, brain=brain, seed=1)
    b = degrade(lab, kind, brain=brain, seed=1)
    np.testing.assert_array_equal(a, b)
    if kind in ("noisy_boundary", "false_positive_blob"):
        c = degrade(lab, kind, brain=brain, seed=2)
        assert not np.array_equal(a, c)


def test_strength_scales():
    lab, brain = _labels()
    weak = degrade(lab, "missed_lobe", brain=brain, seed=0, strength=0.5)
    strong = degrade(lab, "missed_lobe", brain=brain, seed=0, strength=1.0)
    assert (weak > 0).sum() > (strong > 0).sum()


def test_degrade_all():
    lab, brain = _labels()
    out = degrade_all(lab, brain=brain, seed=0)
    assert list(out) == list(DEGRADATIONS)


@pytest.mark.parametrize(
    "labels, kind, kw, match",
    [
        (np.zeros(SHAPE, np.uint8), "missed_lobe", {}, "nothing to degrade"),
        (np.full(SHAPE, 4, np.uint8), "missed_lobe", {}, "internal labels"),
        (np.ones((3, 3), np.uint8), "missed_lobe", {}, r"\(Z, Y, X\)"),
        (None, "missed_lobes", {}, "Did you mean"),
        (None, "missed_lobe", {"strength": 0}, "strength"),
        (None, "missed_lobe", {"spacing": (1, 1)}, "spacing"),
    ],
)
def test_bad_input(labels, kind, kw, match):
    if labels is None:
        labels, _ = _labels()
    with pytest.raises(InputError, match=match):
        degrade(labels, kind, **kw)


def test_degrade_labels_aliases():
    from napari_ssseg.core.degrade import degrade_labels

    lab, brain = _labels()
    a = degrade_labels(lab, kind="under_oedema", brain=brain, seed=4)
    b = degrade(lab, "undersegmented_oedema", brain=brain, seed=4)
    np.testing.assert_array_equal(a, b)
    assert degrade_labels(lab, kind="fp_blob", seed=1).sum() > lab.sum()
