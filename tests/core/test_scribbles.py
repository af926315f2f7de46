"""Tests of SP3-style scribble propagation (:mod:`napari_ssseg.core.scribbles`)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_ssseg.core.case import CONVENTIONS, region_masks
from napari_ssseg.core.metrics import dice
from napari_ssseg.core.phantom import make_phantom
from napari_ssseg.core.preprocess import brain_mask
from napari_ssseg.core.scribbles import (
    BACKGROUND,
    TUMOUR,
    ScribblePropagator,
    check_scribbles,
    decode_scribbles,
    expand_scribbles,
    grow_with_barriers,
    propagate_scribbles,
    simulate_scribbles,
)
from napari_ssseg.errors import GeometryError, InputError

SHAPE = (32, 40, 40)
SPACING = (2.0, 2.0, 2.0)


@pytest.fixture(scope="module")
def setup():
    """A (32, 40, 40) 2 mm phantom, its brain mask, simulated strokes and a propagator."""
    case = make_phantom(SHAPE, spacing=SPACING, seed=5000).to_case(name="p")
    brain = brain_mask(case.images)
    scr = simulate_scribbles(case.labels, brain, n_slices=3, keep=0.5)
    prop = ScribblePropagator(case.images, case.modalities, brain, case.scale, n_segments=300)
    return case, brain, scr, prop


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda s: s[:-1], GeometryError, "shape"),
        (lambda s: np.zeros_like(s), InputError, "empty"),
        (lambda s: np.where(s > 0, BACKGROUND, 0).astype(np.uint8), InputError, "only background"),
        (lambda s: np.where(s > 0, 7, 0).astype(np.uint8), InputError, "outside the scribble"),
        (lambda s: s.astype(np.float32) + 0.5, InputError, "non-integer"),
        (lambda s: s > 0, InputError, "integer array"),
    ],
)
def test_bad_scribbles_are_refused(setup, make, error, match):
    case, brain, scr, _ = setup
    with pytest.raises(error, match=match):
        check_scribbles(make(scr), SHAPE, brain)


def test_strokes_outside_the_brain_are_ignored_with_a_warning(setup):
    case, brain, scr, _ = setup
    s = scr.copy()
    s[0, 0, 0] = 2
    assert not brain[0, 0, 0]
    with pytest.warns(UserWarning, match="outside the brain"):
        out = check_scribbles(s, SHAPE, brain)
    assert out[0, 0, 0] == 0
    assert s[0, 0, 0] == 2  # input not modified


def test_strokes_only_outside_the_brain_count_as_empty(setup):
    _, brain, _, _ = setup
    s = np.zeros(SHAPE, np.uint8)
    s[0, 0, :3] = 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match="empty"):
            check_scribbles(s, SHAPE, brain)


@pytest.mark.parametrize(
    ("convention", "values", "expected"),
    [
        ("brats2021", [0, 1, 2, 4, 255], [0, 1, 2, 3, BACKGROUND]),
        ("brats2023", [0, 1, 2, 3, 255], [0, 1, 2, 3, BACKGROUND]),
    ],
)
def test_decode_scribbles(convention, values, expected):
    out = decode_scribbles(np.array(values), CONVENTIONS[convention], 255)
    assert out.tolist() == expected


@pytest.mark.parametrize("bg", [0, 1, 4])
def test_decode_rejects_background_label_colliding_with_tumour_values(bg):
    with pytest.raises(InputError, match="collides"):
        decode_scribbles(np.array([0, 1]), CONVENTIONS["brats2021"], bg)


def test_decode_rejects_values_outside_the_convention():
    with pytest.raises(InputError):
        decode_scribbles(np.array([0, 7]), CONVENTIONS["brats2021"], 255)


# ---------------------------------------------------------------- expansion
@pytest.mark.parametrize(
    ("strokes", "expected"),
    [
        ({1: [2]}, {1: 2, 2: 0}),  # one class -> that class
        ({1: [2, 2], 2: [BACKGROUND]}, {1: 2, 2: BACKGROUND}),
        ({1: [2, 3]}, {1: -1, 2: 0}),  # conflict
        ({2: [BACKGROUND, 1]}, {1: 0, 2: -1}),
    ],
)
def test_expansion_rule(strokes, expected):
    labels = np.zeros((1, 4, 4), np.int32)
    labels[0, :2] = 1
    labels[0, 2:] = 2
    scr = np.zeros_like(labels, dtype=np.uint8)
    for sp, codes in strokes.items():
        ys = np.flatnonzero(labels[0, :, 0] == sp)
        for i, c in enumerate(codes):
            scr[0, ys[0], i] = c
    cls, present = expand_scribbles(labels, scr, 2)
    assert {k: int(cls[k]) for k in (1, 2)} == expected
    assert present.shape == (3, 6)


@pytest.mark.parametrize(
    ("strokes", "expected"),
    [
        ({1: [TUMOUR]}, {1: TUMOUR, 2: 0}),  # region stroke alone -> tumour
        ({1: [TUMOUR, 3]}, {1: 3, 2: 0}),  # a class stroke refines the region stroke
        ({1: [TUMOUR, 1, 3]}, {1: -1, 2: 0}),  # two classes conflict
        ({1: [TUMOUR, BACKGROUND]}, {1: -1, 2: 0}),  # tumour vs background conflict
    ],
)
def test_expansion_rule_with_region_strokes(strokes, expected):
    test_expansion_rule(strokes, expected)


# ---------------------------------------------------------------- cold start
def test_cold_start_result_is_sensible(setup):
    case, brain, scr, prop = setup
    res = prop.update(scr)
    assert res.labels.dtype == np.uint8 and res.labels.shape == SHAPE
    assert res.weights.dtype == np.float32 and res.ignore.dtype == bool
    assert set(np.unique(res.labels)) <= {0, 1, 2, 3}
    rg, rp = region_masks(case.labels), region_masks(res.labels)
    # propagation reaches far beyond the strokes and follows the tumour
    assert rp["WT"].sum() > 5 * (scr > 0).sum()
    assert dice(rp["WT"], rg["WT"]) > 0.6
    assert 0 < res.annotated_fraction < 0.2
    assert res.info["mode"] == "cold-start"
    assert not res.labels[~brain].any()


def test_scribbled_voxels_keep_their_class(setup):
    _, _, scr, prop = setup
    res = prop.update(scr)
    tum = (scr > 0) & (scr < BACKGROUND)
    np.testing.assert_array_equal(res.labels[tum], scr[tum])
    assert not res.labels[scr == BACKGROUND].any()
    assert not res.ignore[scr > 0].any()


def test_regions_are_nested(setup):
    _, _, scr, prop = setup
    r = region_masks(prop.update(scr).labels)
    assert not (r["TC"] & ~r["WT"]).any()
    assert not (r["ET"] & ~r["TC"]).any()


@pytest.mark.parametrize("method", ["nearest", "grow"])
def test_deterministic(setup, method):
    case, brain, scr, prop = setup
    p2 = ScribblePropagator(
        case.images,
        case.modalities,
        brain,
        case.scale,
        superpixels={r: _full_sp(s) for r, s in prop.sessions.items()},
        method=method,
    )
    a = p2.update(scr)
    b = p2.update(scr.copy())
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.weights, b.weights)


def _full_sp(session) -> np.ndarray:
    out = np.zeros(session.shape, np.int32)
    out[session.crop] = session.labels
    return out


def test_background_strokes_reduce_the_tumour(setup):
    """Healthy-tissue strokes act as barriers: removing them never shrinks WT."""
    _, _, scr, prop = setup
    with_bg = prop.update(scr).labels > 0
    without = prop.update(np.where(scr == BACKGROUND, 0, scr).astype(np.uint8)).labels > 0
    assert with_bg.sum() <= without.sum()


def test_grow_with_barriers_never_merges_a_barrier(setup):
    _, _, scr, prop = setup
    ses = prop.sessions["wt"]
    n1 = ses.n_superpixels + 1
    seed = np.zeros(n1, bool)
    seed[ses.labels[ses.labels > 0][0]] = True
    free = ses.model.counts > 0
    free[0] = False
    # generous growth first, then forbid half of what it reached
    grown = grow_with_barriers(ses, seed, np.zeros(n1, bool), 0.0, 30, tolerance=0.5)
    reached = np.flatnonzero(grown & ~seed)
    barrier = np.zeros(n1, bool)
    barrier[reached[::2]] = True
    out = grow_with_barriers(ses, seed, barrier, 0.0, 30, tolerance=0.5)
    assert not (out & barrier).any()
    assert out[seed].all()


def test_update_is_fast(setup):
    _, _, scr, prop = setup
    res = prop.update(scr)
    assert res.info["seconds"] < 1.0


# ---------------------------------------------------------------- model-assisted
def _probs(labels: np.ndarray, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    onehot = np.stack([labels == k for k in range(4)]).astype(np.float32)
    p = onehot + noise * rng.random(onehot.shape, dtype=np.float32)
    return p / p.sum(axis=0, keepdims=True)


def test_model_assisted_outputs_and_thresholds(setup):
    case, brain, scr, prop = setup
    p2 = ScribblePropagator(
        case.images,
        case.modalities,
        brain,
        case.scale,
        superpixels={r: _full_sp(s) for r, s in prop.sessions.items()},
    )
    res = p2.update(scr, _probs(case.labels, 0.3))
    assert res.info["mode"] == "model-assisted"
    tau1 = np.array(res.info["model"]["tau"])
    # first update: tau starts at 1/K and moves by (1 - lambda) towards the mean confidence
    assert np.all(tau1 >= 0.25 - 1e-9) and np.all(tau1 < 0.26)
    res2 = p2.update(scr, _probs(case.labels, 0.3))
    assert np.all(np.array(res2.info["model"]["tau"]) >= tau1 - 1e-12)
    assert ((res.weights > 0) & (res.weights <= 1)).any()
    assert np.all(res.weights[res.ignore] == 0)
    tum = (scr > 0) & (scr < BACKGROUND)
    np.testing.assert_array_equal(res.labels[tum], scr[tum])
    # a confident model is followed: labels close to the truth
    assert dice(res.labels > 0, case.labels > 0) > 0.8


def test_uncertain_superpixels_get_low_weight(setup):
    case, brain, scr, prop = setup
    p2 = ScribblePropagator(
        case.images,
        case.modalities,
        brain,
        case.scale,
        superpixels={r: _full_sp(s) for r, s in prop.sessions.items()},
        purity=0.0,
    )
    sharp = p2.update(scr, _probs(case.labels, 0.05)).weights
    flat = p2.update(scr, _probs(case.labels, 3.0)).weights
    free = scr == 0
    assert flat[free].mean() < sharp[free].mean()


@pytest.mark.parametrize(
    ("shape", "error", "match"),
    [((3, *SHAPE), InputError, "4 \\(internal"), ((4, 2, 2, 2), GeometryError, "shape")],
)
def test_bad_probabilities(setup, shape, error, match):
    _, _, scr, prop = setup
    with pytest.raises(error, match=match):
        prop.update(scr, np.full(shape, 0.25, np.float32))


# ---------------------------------------------------------------- misc
@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"lam": 1.5}, "lam"),
        ({"purity": -0.1}, "purity"),
        ({"method": "magic"}, "method"),
        ({"margin": 0}, "margin"),
        ({"box_extend": -1}, "box_extend"),
        ({"tolerance": 1.0}, "tolerance"),
    ],
)
def test_bad_parameters(setup, kw, match):
    case, brain, _, prop = setup
    with pytest.raises(InputError, match=match):
        ScribblePropagator(
            case.images,
            case.modalities,
            brain,
            case.scale,
            superpixels={r: _full_sp(s) for r, s in prop.sessions.items()},
            **kw,
        )


def test_one_shot_validates_before_superpixels(setup):
    case, _, scr, _ = setup
    with pytest.raises(InputError, match="empty"):
        propagate_scribbles(case.images, case.modalities, np.zeros(SHAPE, np.uint8))


def test_simulated_scribbles_are_thin_and_follow_the_truth(setup):
    case, brain, scr, _ = setup
    tum = (scr > 0) & (scr < BACKGROUND)
    np.testing.assert_array_equal(scr[tum], case.labels[tum])
    assert not (case.labels[scr == BACKGROUND] > 0).any()
    assert (scr > 0).sum() < 0.2 * (case.labels > 0).sum()
    assert len(np.unique(np.nonzero(scr)[0])) <= 3


@pytest.mark.parametrize("name", ["brats2021", "brats2023", "msd"])
def test_encode_decode_scribbles_round_trip(name):
    from napari_ssseg.core.case import CONVENTIONS
    from napari_ssseg.core.scribbles import BACKGROUND, decode_scribbles, encode_scribbles

    codes = np.array([0, 1, 2, 3, BACKGROUND], np.uint8).reshape(1, 1, 5)
    values = encode_scribbles(codes, CONVENTIONS[name])
    assert values[0, 0, 4] == 255 and values[0, 0, 0] == 0
    np.testing.assert_array_equal(decode_scribbles(values, CONVENTIONS[name]), codes)
    with pytest.raises(InputError, match="codes"):
        encode_scribbles(np.array([[[7]]]), CONVENTIONS[name])


@pytest.mark.parametrize(("name", "tumour_label"), [("brats2021", 254), ("msd", 200)])
def test_region_strokes_round_trip(name, tumour_label):
    from napari_ssseg.core.scribbles import decode_scribbles, encode_scribbles

    conv = CONVENTIONS[name]
    codes = np.array([0, 1, 2, 3, BACKGROUND, TUMOUR], np.uint8).reshape(1, 1, 6)
    values = encode_scribbles(codes, conv, 255, tumour_label)
    assert values[0, 0, 5] == tumour_label and values[0, 0, 4] == 255
    np.testing.assert_array_equal(decode_scribbles(values, conv, 255, tumour_label), codes)


def test_region_strokes_default_file_value_is_254():
    from napari_ssseg.core.scribbles import DEFAULT_TUMOUR_LABEL, encode_scribbles

    assert DEFAULT_TUMOUR_LABEL == 254
    out = encode_scribbles(np.array([[[TUMOUR]]], np.uint8), CONVENTIONS["brats2021"])
    assert out[0, 0, 0] == 254


def test_region_strokes_refused_without_a_tumour_label():
    from napari_ssseg.core.scribbles import encode_scribbles

    with pytest.raises(InputError, match="region-mode"):
        encode_scribbles(np.array([[[TUMOUR]]], np.uint8), CONVENTIONS["brats2021"], 255, None)
    # without region strokes None is fine, and 254 is then not a valid file value
    out = encode_scribbles(np.array([[[2]]], np.uint8), CONVENTIONS["brats2021"], 255, None)
    assert out[0, 0, 0] == 2
    with pytest.raises(InputError):
        decode_scribbles(np.array([[[254]]]), CONVENTIONS["brats2021"], 255, None)


@pytest.mark.parametrize("tumour_label", [0, 255, 4, 1])
def test_tumour_label_colliding_is_refused(tumour_label):
    with pytest.raises(InputError, match="collides"):
        decode_scribbles(np.array([0, 1]), CONVENTIONS["brats2021"], 255, tumour_label)


# ---------------------------------------------------------------- region mode
def _region_strokes(scr, keep_classes=()):
    """Class strokes turned into region-mode tumour strokes (except ``keep_classes``)."""
    out = scr.copy()
    out[np.isin(scr, (1, 2, 3)) & ~np.isin(scr, keep_classes)] = TUMOUR
    return out


def test_region_only_strokes_give_the_whole_tumour_as_ed(setup):
    case, brain, scr, prop = setup
    region = _region_strokes(scr)
    res = prop.update(region)
    assert set(np.unique(res.labels)) == {0, 2}  # no class strokes, no model: all ED
    wt_region = res.labels > 0
    wt_class = prop.update(scr).labels > 0
    # the whole tumour is propagated as with class strokes (same WT seeds and barriers)
    np.testing.assert_array_equal(wt_region, wt_class)
    assert dice(wt_region, case.labels > 0) > 0.6
    assert (res.labels[region == TUMOUR] == 2).all()
    assert not res.labels[region == BACKGROUND].any()


def test_region_strokes_with_class_strokes_take_classes_inside(setup):
    case, brain, scr, prop = setup
    mixed = _region_strokes(scr, keep_classes=(1, 3))  # ED strokes -> tumour strokes
    res = prop.update(mixed)
    ref = prop.update(scr)
    r, rr = region_masks(res.labels), region_masks(ref.labels)
    np.testing.assert_array_equal(r["WT"], rr["WT"])
    # TC / ET grow from the class strokes; the ED strokes that became tumour strokes are no
    # longer TC barriers, so TC can only grow
    assert r["TC"].any() and r["ET"].any()
    assert not (rr["TC"] & ~r["TC"]).any() and not (rr["ET"] & ~r["ET"]).any()
    assert not (r["TC"] & ~r["WT"]).any() and not (r["ET"] & ~r["TC"]).any()
    assert dice(r["TC"], region_masks(case.labels)["TC"]) > 0.5
    keep = np.isin(mixed, (1, 3))
    np.testing.assert_array_equal(res.labels[keep], mixed[keep])


def test_region_strokes_with_a_model_take_the_models_class(setup):
    case, brain, scr, prop = setup
    p2 = ScribblePropagator(
        case.images,
        case.modalities,
        brain,
        case.scale,
        superpixels={r: _full_sp(s) for r, s in prop.sessions.items()},
    )
    region = _region_strokes(scr)
    res = p2.update(region, _probs(case.labels, 0.3))
    at = region == TUMOUR
    assert set(np.unique(res.labels[at])) <= {1, 2, 3}
    # the model is confident: region strokes get the true classes
    assert (res.labels[at] == case.labels[at]).mean() > 0.9
    assert len(np.unique(res.labels[at])) > 1
    assert np.all(res.weights[at] == 1) and not res.ignore[at].any()


def test_only_background_and_no_region_strokes_still_refused(setup):
    _, brain, scr, _ = setup
    s = np.where(scr == BACKGROUND, BACKGROUND, 0).astype(np.uint8)
    with pytest.raises(InputError, match="only background"):
        check_scribbles(s, SHAPE, brain)
    s[scr == 2] = TUMOUR
    assert (check_scribbles(s, SHAPE, brain) == TUMOUR).any()


def test_background_label_254_disables_the_default_tumour_label():
    out = decode_scribbles(np.array([0, 2, 254]), CONVENTIONS["brats2021"], 254)
    assert out.tolist() == [0, 2, BACKGROUND]
