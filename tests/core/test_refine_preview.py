"""The Refine panel's preview engine without a display (napari_ssseg.core.refine_preview)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_ssseg.core.degrade import degrade
from napari_ssseg.core.progress import Cancelled
from napari_ssseg.core.provenance import HUMAN, UNTOUCHED
from napari_ssseg.core.refine import DEFAULT_NC, refine_labels
from napari_ssseg.core.refine_preview import (
    AcceptPlan,
    MaskCache,
    RefineSetup,
    case_brain_mask,
    compute_setup,
    preview_box,
    preview_masks,
    refine_for_accept,
    region_seeds,
)
from napari_ssseg.errors import InputError

PARAMS = {"n_segments": 350, "compactness": 0.01, "sigma": 1.0}


@pytest.fixture(scope="module")
def engine():
    """The tiny phantom (32 x 40 x 40, 2 mm) with under-segmented oedema, set up for WT + TC."""
    from napari_ssseg.core.phantom import make_phantom

    case = make_phantom((32, 40, 40), spacing=(2.0, 2.0, 2.0), seed=0).to_case(name="tiny")
    brain = case_brain_mask(case)
    pseudo = degrade(case.labels, "undersegmented_oedema", brain=brain, spacing=case.scale, seed=3)
    pseudo = pseudo.astype(np.uint8)
    seeds = region_seeds(pseudo)
    reports: list[tuple[float, str]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        setup = compute_setup(
            case,
            None,
            ("wt", "tc"),
            PARAMS,
            seeds,
            progress=lambda f, m: reports.append((f, m)),
        )
        fitted = {r: setup.sessions[r].fit(seeds[r], warn=False) for r in setup.regions}
    return case, pseudo, setup, fitted, reports


def test_region_seeds():
    labels = np.array([0, 1, 2, 3, 0], np.uint8)
    seeds = region_seeds(labels)
    np.testing.assert_array_equal(seeds["wt"], [False, True, True, True, False])
    np.testing.assert_array_equal(seeds["tc"], [False, True, False, True, False])


class _Pre:
    """A stand-in for Preprocessed: a mask on a crop and its uncrop."""

    def __init__(self, mask, box, shape):
        self.mask, self.box, self.shape = mask, box, shape

    def uncrop(self, array):
        out = np.zeros(self.shape, np.asarray(array).dtype)
        out[self.box] = array
        return out


class _Case:
    def __init__(self, images):
        self.images = images
        self.shape = images.shape[1:]


def test_case_brain_mask_prefers_the_preprocessing_mask():
    images = np.zeros((2, 6, 7, 8), np.float32)
    images[:, 1:5, 1:6, 1:7] = 1.0
    case = _Case(images)
    box = (slice(2, 4), slice(2, 5), slice(3, 6))
    crop_mask = np.ones((2, 3, 3), bool)
    got = case_brain_mask(case, _Pre(crop_mask, box, case.shape))
    expected = np.zeros(case.shape, bool)
    expected[box] = True
    np.testing.assert_array_equal(got, expected)
    # a mask already on the case grid is used as is
    np.testing.assert_array_equal(case_brain_mask(case, _Pre(expected, box, case.shape)), expected)


def test_case_brain_mask_falls_back_to_the_images():
    from napari_ssseg.core.preprocess import brain_mask

    images = np.zeros((2, 6, 7, 8), np.float32)
    images[:, 1:5, 1:6, 1:7] = 1.0
    case = _Case(images)
    expected = brain_mask(images)
    assert expected.any()
    np.testing.assert_array_equal(case_brain_mask(case), expected)
    # an empty preprocessing mask is no brain: derived from the images instead
    empty = _Pre(np.zeros((2, 3, 3), bool), (slice(0, 2), slice(0, 3), slice(0, 3)), case.shape)
    np.testing.assert_array_equal(case_brain_mask(case, empty), expected)


def test_compute_setup_builds_both_regions_with_core_progress(engine):
    case, _pseudo, setup, _fitted, reports = engine
    assert isinstance(setup, RefineSetup)
    assert setup.regions == ("wt", "tc") and setup.messages == []
    assert setup.params == PARAMS
    for r in setup.regions:
        assert setup.superpixels[r].shape == tuple(case.shape)
        assert setup.sessions[r].n_superpixels > 5
    fractions = [f for f, _ in reports]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert fractions == sorted(fractions)  # monotone
    messages = [m for _, m in reports]
    assert messages[0] == "brain mask" and messages[-1] == "done"
    assert any(m.startswith("WT superpixels") for m in messages)
    assert any(m.startswith("TC features") for m in messages)


def test_compute_setup_reuses_given_sessions(engine):
    case, pseudo, setup, _fitted, _ = engine
    reuse = {r: (setup.superpixels[r], setup.sessions[r]) for r in setup.regions}
    calls: list[str] = []
    again = compute_setup(
        case,
        None,
        ("wt", "tc"),
        PARAMS,
        region_seeds(pseudo),
        reuse,
        setup.brain,
        progress=lambda f, m: calls.append(m),
    )
    assert all(again.sessions[r] is setup.sessions[r] for r in setup.regions)
    assert not any("superpixels" in m for m in calls)


def test_compute_setup_cancels(engine):
    case, pseudo, *_ = engine
    with pytest.raises(Cancelled):
        compute_setup(case, None, ("wt",), PARAMS, region_seeds(pseudo), should_stop=lambda: True)


def test_compute_setup_refuses_nothing_to_grow_from(engine):
    case, pseudo, setup, *_ = engine
    empty = region_seeds(np.zeros_like(pseudo))
    with pytest.raises(InputError, match="nothing to grow from"):
        compute_setup(case, None, ("wt", "tc"), PARAMS, empty, brain=setup.brain)
    oedema = region_seeds(np.where(pseudo > 0, 2, 0).astype(np.uint8))
    with pytest.raises(InputError, match="no tumour core"):
        compute_setup(case, None, ("tc",), PARAMS, oedema, brain=setup.brain)
    # both regions: TC is skipped with a message, WT goes on
    reuse = {"wt": (setup.superpixels["wt"], setup.sessions["wt"])}
    out = compute_setup(case, None, ("wt", "tc"), PARAMS, oedema, reuse, setup.brain)
    assert out.regions == ("wt",)
    assert any("TC refinement skipped" in m for m in out.messages)


def test_mask_cache_round_trip_and_lru():
    cache = MaskCache(max_items=2)
    rng = np.random.default_rng(0)
    masks = [rng.random((3, 5, 7)) > 0.5 for _ in range(3)]
    for i, m in enumerate(masks):
        cache.put(("wt", i), m, i * 10)
    assert len(cache) == 2
    assert cache.get(("wt", 0)) is None  # the oldest went first
    got, added = cache.get(("wt", 2))
    np.testing.assert_array_equal(got, masks[2])
    assert got.dtype == bool and added == 20
    cache.clear()
    assert len(cache) == 0 and cache.get(("wt", 2)) is None


def test_preview_box_matches_the_full_refinement(engine):
    case, pseudo, setup, fitted, _ = engine
    cache = MaskCache()
    for sim0 in (0.9, 0.6, 0.3, 0.0, 0.6, 0.0):
        box, sub, added, state = preview_box(setup, fitted, pseudo, sim0, DEFAULT_NC, cache)
        full, added_full = preview_masks(setup, fitted, pseudo, sim0, DEFAULT_NC)
        shown = np.zeros(pseudo.shape, np.uint8)
        shown[box] = sub
        np.testing.assert_array_equal(shown, full)
        assert added == added_full
        # the preview is the region refinement of each session, TC clipped to WT
        wt = setup.sessions["wt"].refine(fitted["wt"], sim0, DEFAULT_NC).mask
        tc = setup.sessions["tc"].refine(fitted["tc"], sim0, DEFAULT_NC).mask
        np.testing.assert_array_equal(full > 0, wt)
        np.testing.assert_array_equal(full == 2, tc & wt)
        assert set(np.unique(full)) <= {0, 1, 2}
        assert isinstance(state, tuple) and len(state) == 2
    assert 0 < len(cache) < 6 * 2  # revisited values came from the cache


def test_preview_changes_with_sim0(engine):
    _case, pseudo, setup, fitted, _ = engine
    counts = [
        int(np.count_nonzero(preview_masks(setup, fitted, pseudo, s, DEFAULT_NC)[0]))
        for s in (0.0, 0.5, 0.6, 0.7, 1.0)
    ]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1], counts


def test_preview_box_keeps_the_unrefined_region_from_the_pseudo_label(engine):
    case, pseudo, setup, fitted, _ = engine
    wt_only = RefineSetup(
        case=setup.case,
        brain=setup.brain,
        regions=("wt",),
        superpixels={"wt": setup.superpixels["wt"]},
        sessions={"wt": setup.sessions["wt"]},
        params=setup.params,
    )
    full, added = preview_masks(wt_only, fitted, pseudo, 0.5, DEFAULT_NC)
    assert set(added) == {"wt"}
    core = (pseudo == 1) | (pseudo == 3)
    np.testing.assert_array_equal(full == 2, core & (full > 0))


def test_refine_for_accept_plans_the_write(engine):
    case, pseudo, setup, fitted, _ = engine
    current = pseudo.copy()
    prov = np.full(pseudo.shape, UNTOUCHED, np.uint8)
    plan = refine_for_accept(setup, pseudo, current, prov, 0.3, DEFAULT_NC)
    assert isinstance(plan, AcceptPlan)
    ref = refine_labels(
        case.images,
        case.modalities,
        pseudo,
        None,
        None,
        setup.brain,
        spacing=case.scale,
        sim0=0.3,
        n_c=DEFAULT_NC,
        regions=setup.regions,
        sessions=setup.sessions,
        warn=False,
    )
    np.testing.assert_array_equal(plan.new, ref.labels)
    assert plan.new.dtype == current.dtype
    np.testing.assert_array_equal(plan.changed, current != plan.new)
    assert plan.changed.any() and plan.kept == 0
    assert not (plan.confirmed & plan.changed).any()
    # hand-painted voxels are kept (and not marked as confirmed) unless asked
    hand = plan.changed.copy()
    hand[: hand.shape[0] // 2] = False
    hand |= plan.confirmed & (np.arange(hand.shape[0]) < 16)[:, None, None]
    assert hand.any()
    prov[hand] = HUMAN
    kept = refine_for_accept(setup, pseudo, current, prov, 0.3, DEFAULT_NC)
    assert not (kept.changed & hand).any()
    assert not (kept.confirmed & hand).any()
    assert kept.kept == int(np.count_nonzero(hand & (current != plan.new)))
    overwrite = refine_for_accept(setup, pseudo, current, prov, 0.3, DEFAULT_NC, keep_human=False)
    np.testing.assert_array_equal(overwrite.changed, plan.changed)
