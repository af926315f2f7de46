"""Next-case ranking: uncertainty scores, disagreement, diversity, random baseline."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ssseg.core.suggest import (
    disagreement_score,
    entropy_map,
    histogram_features,
    rank_cases,
    uncertainty_score,
)
from napari_ssseg.errors import InputError

SHAPE = (6, 8, 8)


def test_entropy_map_bounds():
    p = np.zeros((4, *SHAPE))
    p[0] = 1.0  # certain
    h = entropy_map(p)
    assert h.max() == pytest.approx(0.0, abs=1e-6)
    p = np.full((4, *SHAPE), 0.25)  # uniform
    np.testing.assert_allclose(entropy_map(p), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "probs",
    [np.zeros((1, *SHAPE)), np.full((2, *SHAPE), np.nan), np.full((2, *SHAPE), 2.0)],
)
def test_entropy_map_bad_input(probs):
    with pytest.raises(InputError):
        entropy_map(probs)


def test_uncertainty_score_inside_predicted_tumour():
    u = np.full(SHAPE, 0.1)
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:4, 2:4, 2:4] = 2
    u[lab > 0] = 0.9
    assert uncertainty_score(u, lab) == pytest.approx(0.9)
    # no predicted tumour: mean over the voxels with any uncertainty
    u2 = np.zeros(SHAPE)
    u2[0, 0, :4] = 0.5
    assert uncertainty_score(u2, np.zeros(SHAPE, np.uint8)) == pytest.approx(0.5)
    assert uncertainty_score(np.zeros(SHAPE)) == 0.0
    with pytest.raises(InputError, match="differs"):
        uncertainty_score(u, lab[:-1])


def test_disagreement_score():
    a = np.zeros(SHAPE, np.uint8)
    b = np.zeros(SHAPE, np.uint8)
    assert disagreement_score(a, b) == 0.0
    a[0, 0, :4] = 1
    b[0, 0, :2] = 1
    b[0, 0, 2:4] = 3
    assert disagreement_score(a, b) == pytest.approx(0.5)
    assert disagreement_score(a, a) == 0.0


def test_histogram_features_shape_and_normalised():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(2, *SHAPE)).astype(np.float32) + 5
    f = histogram_features(img, bins=8)
    assert f.shape == (16,)
    np.testing.assert_allclose([f[:8].sum(), f[8:].sum()], 1.0)


def test_rank_by_score_unscored_last():
    ranked = rank_cases({"a": 0.2, "b": None, "c": 0.9, "d": 0.5}, n=4)
    assert [s.case_id for s in ranked] == ["c", "d", "a", "b"]
    assert [s.rank for s in ranked] == [1, 2, 3, 4]
    assert "ranked last" in ranked[-1].reason
    assert [s.case_id for s in rank_cases({"a": 0.2, "c": 0.9}, n=1)] == ["c"]


def test_random_baseline_seeded_and_reproducible():
    ids = [f"c{i}" for i in range(10)]
    r1 = [s.case_id for s in rank_cases(ids, strategy="random", seed=3, n=5)]
    r2 = [s.case_id for s in rank_cases(ids, strategy="random", seed=3, n=5)]
    r3 = [s.case_id for s in rank_cases(ids, strategy="random", seed=4, n=5)]
    assert r1 == r2 and r1 != r3 and len(set(r1)) == 5


def test_diversity_avoids_near_duplicates():
    # a and a2 are near-duplicates with top scores; b is different with a lower score
    scores = {"a": 0.9, "a2": 0.89, "b": 0.6}
    feats = {"a": np.array([0.0, 0.0]), "a2": np.array([0.01, 0.0]), "b": np.array([1.0, 1.0])}
    plain = [s.case_id for s in rank_cases(scores, n=2)]
    diverse = [s.case_id for s in rank_cases(scores, n=2, features=feats, diversity=0.5)]
    assert plain == ["a", "a2"]
    assert diverse == ["a", "b"]


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (["a", "b"], {"strategy": "entropy"}, "needs uncertainty scores"),
        ({"a": float("nan")}, {}, "finite"),
        ({"a": 1.0}, {"n": -1}, "non-negative"),
        ({"a": 1.0}, {"strategy": "magic"}, "strategy='magic'"),
        ({"a": 1.0, "b": 0.5}, {"diversity": 0.5}, "feature vector"),
        ({"a": 1.0}, {"diversity": 2.0}, "within"),
    ],
)
def test_rank_cases_bad_input(args, kwargs, match):
    with pytest.raises(InputError, match=match):
        rank_cases(args, **kwargs)
