"""Tests for napari_ssseg.core.refine: Algorithm 1, the literal oracle, properties, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from skimage.segmentation import slic

from napari_ssseg.core.refine import (
    DEFAULT_NC,
    DEFAULT_SIM0,
    RefinementSession,
    SimilarityWeights,
    check_nc,
    check_sim0,
    refine_labels,
    refine_region,
    refine_region_literal,
    region_channels,
)
from napari_ssseg.errors import GeometryError, InputError

SHAPE = (18, 30, 30)


def _slic(channels: np.ndarray, mask: np.ndarray, n_segments: int) -> np.ndarray:
    """skimage SLIC with the gotchas handled (per-channel normalisation, no Lab)."""
    ch = channels.astype(np.float64).copy()
    for c in range(ch.shape[0]):
        v = ch[c][mask]
        lo, hi = v.min(), v.max()
        ch[c] = (ch[c] - lo) / (hi - lo if hi > lo else 1.0)
    return slic(
        np.moveaxis(ch, 0, -1),
        n_segments=n_segments,
        compactness=0.1,
        sigma=1,
        mask=mask,
        channel_axis=-1,
        convert2lab=False,
        start_label=1,
    ).astype(np.int32)


def _toy(seed: int):
    """Small random brain with a bright ellipsoidal tumour; p0 = part of the tumour."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(SHAPE)
    brain = ((zz - 9) / 8.5) ** 2 + ((yy - 15) / 14) ** 2 + ((xx - 15) / 14) ** 2 < 1
    c = rng.uniform([7, 12, 12], [11, 18, 18])
    r = rng.uniform([4, 6, 6], [7, 10, 10])
    tum = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 < 1
    n_ch = int(rng.integers(1, 3))
    img = np.stack(
        [
            np.where(
                brain,
                1.0 + rng.uniform(0.2, 0.8) * tum + rng.normal(0, rng.uniform(0.05, 0.25), SHAPE),
                0,
            )
            for _ in range(n_ch)
        ]
    ).astype(np.float32)
    sp = _slic(img, brain, int(rng.integers(60, 140)))
    p0 = tum & (xx < rng.uniform(c[2] - r[2] / 2, c[2] + r[2] / 3)) & brain
    if not p0.any():
        p0 = tum & brain
    return img, sp, brain, p0, tum


def _config(seed: int):
    rng = np.random.default_rng(seed + 100)
    w = SimilarityWeights(
        ward=bool(seed % 4 == 3),
        region_features=("centroid", "union")[seed % 2],
        clip=(3.0, 0.0)[(seed // 2) % 2],
    )
    return w, float(rng.choice([0.0, 0.05, 0.1, 0.2])), int(rng.choice([1, 3, 30]))


ORACLE_SEEDS = list(range(24))


@pytest.mark.parametrize("seed", ORACLE_SEEDS)
def test_fast_equals_literal(seed):
    img, sp, brain, p0, _ = _toy(seed)
    w, sim0, n_c = _config(seed)
    session = RefinementSession(img, None, sp, brain, weights=w)
    fast = session.refine(p0, sim0, n_c)
    lit = session.refine(p0, sim0, n_c, literal=True)
    assert fast.merged == lit.merged
    np.testing.assert_array_equal(fast.members, lit.members)
    np.testing.assert_array_equal(fast.mask, lit.mask)


def test_oracle_cases_exercise_merging():
    """The oracle table is not vacuous: most cases merge something."""
    merges, with_merge = 0, 0
    for seed in ORACLE_SEEDS:
        img, sp, brain, p0, _ = _toy(seed)
        w, sim0, n_c = _config(seed)
        res = RefinementSession(img, None, sp, brain, weights=w).refine(p0, sim0, n_c)
        merges += len(res.merged)
        with_merge += bool(res.merged)
    assert merges >= 20
    assert with_merge >= len(ORACLE_SEEDS) // 2


def test_one_shot_functions_agree():
    img, sp, brain, p0, _ = _toy(5)
    a = refine_region(img, sp, p0, brain=brain, sim0=0.05, n_c=3)
    b = refine_region_literal(img, sp, p0, brain=brain, sim0=0.05, n_c=3)
    np.testing.assert_array_equal(a, b)
    assert a.sum() > (p0 & brain).sum()


@pytest.mark.parametrize("seed", [0, 5, 9, 14])
@pytest.mark.parametrize("output", ["added", "union", "superpixels"])
def test_properties(seed, output):
    img, sp, brain, p0, _ = _toy(seed)
    img0, sp0, p00 = img.copy(), sp.copy(), p0.copy()
    session = RefinementSession(img, None, sp, brain)
    seed_fit = session.fit(p0)
    res = session.refine(seed_fit, 0.0, 30, output=output, fill_edge=np.inf)
    # contains the fitted seed (superpixels) and stays in the brain
    assert np.all(res.members[seed_fit.members])
    seed_vox = session.superpixel_mask(seed_fit.members)
    if output == "superpixels":
        assert np.all(res.mask[seed_vox])
    else:
        assert np.all(res.mask[p0 & brain])
    if output == "union":
        assert np.all(res.mask[seed_vox])
    assert not np.any(res.mask & ~brain)
    # provenance = voxels not in p0
    np.testing.assert_array_equal(res.provenance, res.mask & ~(p0 & brain))
    # deterministic, also across sessions
    again = RefinementSession(img, None, sp, brain).refine(
        p0, 0.0, 30, output=output, fill_edge=np.inf
    )
    np.testing.assert_array_equal(res.mask, again.mask)
    assert res.merged == again.merged
    # inputs untouched
    np.testing.assert_array_equal(img, img0)
    np.testing.assert_array_equal(sp, sp0)
    np.testing.assert_array_equal(p0, p00)


def test_sim0_one_never_grows_and_nc_limits():
    img, sp, brain, p0, _ = _toy(9)
    session = RefinementSession(img, None, sp, brain)
    fit = session.fit(p0)
    assert session.refine(fit, 1.0, 30).merged == []
    grown = session.refine(fit, 0.0, 30)
    assert grown.merged  # this toy grows at sim0 = 0
    assert np.all(grown.members >= fit.members)


def test_shrink_removes_far_blob_and_is_off_by_default():
    img, sp, brain, p0, tum = _toy(3)
    zz, yy, xx = np.indices(SHAPE)
    # a spurious blob of healthy tissue far from the tumour, covering whole superpixels
    far = (np.abs(zz - 9) < 5) & brain & ~tum
    dist = np.where(far, (yy - 15) ** 2 + (xx - 15) ** 2, -1)
    far_label = sp[np.unravel_index(np.argmax(dist), SHAPE)]
    blob = sp == far_label
    p_blob = p0 | blob
    session = RefinementSession(img, None, sp, brain)
    # the paper's behaviour (component pre-step off): the blob stays without shrink
    plain = session.refine(p_blob, 0.2, 30, components=False)
    assert plain.removed == []
    assert np.all(plain.mask[blob])
    shrunk = session.refine(p_blob, 0.2, 30, shrink=True, components=False)
    assert far_label in shrunk.removed
    assert not np.any(shrunk.mask[blob])
    assert np.all(shrunk.members <= plain.members)


def test_region_features_union_and_ward_run():
    img, sp, brain, p0, _ = _toy(2)
    for w in (SimilarityWeights(region_features="union"), SimilarityWeights(ward=True)):
        s = RefinementSession(img, None, sp, brain, weights=w)
        r = s.refine(p0, 0.0, 30)
        assert r.mask.shape == SHAPE
        assert np.all((0 <= s.model.edge_sim) & (s.model.edge_sim <= 1))


def _four_channel_case(seed: int = 0):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(SHAPE)
    brain = ((zz - 9) / 8.5) ** 2 + ((yy - 15) / 14) ** 2 + ((xx - 15) / 14) ** 2 < 1
    d = np.sqrt(((zz - 9) / 1.0) ** 2 + ((yy - 15) / 1.2) ** 2 + ((xx - 16) / 1.2) ** 2)
    labels = np.zeros(SHAPE, np.uint8)
    labels[d < 7] = 2
    labels[d < 4.5] = 3
    labels[d < 2.5] = 1
    labels[~brain] = 0
    base = {"t1": 1.0, "t1ce": 1.0, "t2": 1.0, "flair": 1.0}
    contrast = {  # NCR, ED, ET per modality
        "t1": (0.6, 0.9, 0.9),
        "t1ce": (0.6, 1.0, 2.0),
        "t2": (2.0, 1.6, 1.4),
        "flair": (1.4, 1.8, 1.5),
    }
    imgs = []
    for m in ("t1", "t1ce", "t2", "flair"):
        im = np.full(SHAPE, base[m], np.float32)
        for cls, val in zip((1, 2, 3), contrast[m]):
            im[labels == cls] = val
        im += rng.normal(0, 0.05, SHAPE).astype(np.float32)
        imgs.append(np.where(brain, im, 0))
    images = np.stack(imgs).astype(np.float32)
    sp_wt = _slic(images[3:4], brain, 120)
    sp_tc = _slic(images[[2, 1]], brain, 120)
    degraded = labels.copy()
    degraded[(labels == 2) & (xx > 18)] = 0  # missed oedema on one side
    degraded[(labels == 3) & (xx > 18)] = 2
    return images, labels, degraded, sp_wt, sp_tc, brain


def test_refine_labels_properties():
    images, gt, degraded, sp_wt, sp_tc, brain = _four_channel_case()
    deg0 = degraded.copy()
    out, prov, info = refine_labels(
        images, ("t1", "t1ce", "t2", "flair"), degraded, sp_wt, sp_tc, brain, sim0=0.0
    )
    np.testing.assert_array_equal(degraded, deg0)
    assert out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 1, 2, 3}
    wt = out > 0
    tc = np.isin(out, (1, 3))
    assert not np.any(tc & ~wt)  # TC within WT (trivially by labels) ...
    assert not np.any(wt & ~brain)
    # ... and the refined WT contains the input WT, grown voxels are flagged
    assert np.all(wt[degraded > 0])
    assert np.all(prov == (prov & wt))
    assert np.all(out[prov & ~np.isin(degraded, (1, 3)) & ~tc] == 2)
    assert info["regions"]["wt"]["seed_superpixels"] > 0

    def dice(a, b):
        return 2 * (a & b).sum() / (a.sum() + b.sum())

    assert dice(wt, gt > 0) >= dice(degraded > 0, gt > 0) - 0.01
    # deterministic
    out2, prov2, _ = refine_labels(
        images, ("t1", "t1ce", "t2", "flair"), degraded, sp_wt, sp_tc, brain, sim0=0.0
    )
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(prov, prov2)


def test_refine_labels_tc_clipped_to_wt():
    images, gt, degraded, sp_wt, sp_tc, brain = _four_channel_case()
    # TC grown with the "superpixels" output can leave the WT; the result must not
    out, _, info = refine_labels(
        images,
        ("t1", "t1ce", "t2", "flair"),
        degraded,
        sp_wt,
        sp_tc,
        brain,
        sim0={"wt": 1.0, "tc": 0.0},
        output="superpixels",
    )
    wt_sp = (
        RefinementSession(images, ("t1", "t1ce", "t2", "flair"), sp_wt, brain, region="wt")
        .refine(degraded > 0, 1.0, 30, output="superpixels")
        .mask
    )
    assert not np.any(np.isin(out, (1, 3)) & ~wt_sp)
    assert set(info["regions"]) == {"wt", "tc"}


def test_refine_labels_new_tc_voxels_take_nearest_class():
    images, gt, degraded, sp_wt, sp_tc, brain = _four_channel_case()
    out, prov, _ = refine_labels(
        images,
        ("t1", "t1ce", "t2", "flair"),
        degraded,
        sp_wt,
        sp_tc,
        brain,
        sim0=0.0,
        regions=("tc",),
    )
    new_tc = np.isin(out, (1, 3)) & ~np.isin(degraded, (1, 3))
    if new_tc.any():  # grown core voxels are ET or NCR, never ED
        assert set(np.unique(out[new_tc])) <= {1, 3}
    # WT untouched except where TC grew
    assert np.all((out > 0) == ((degraded > 0) & brain))


# --------------------------------------------------------------------------- bad input
def test_bad_grid():
    img, sp, brain, p0, _ = _toy(0)
    s = RefinementSession(img, None, sp, brain)
    with pytest.raises(GeometryError, match="same grid"):
        s.refine(p0[:, :-1])
    with pytest.raises(GeometryError, match="superpixels have shape"):
        RefinementSession(img, None, sp[:-1], None)
    with pytest.raises(GeometryError, match="brain mask"):
        RefinementSession(img, None, sp, brain[1:])
    with pytest.raises(GeometryError, match="case's grid"):
        refine_labels(
            np.stack([img[0]] * 4),
            ("t1", "t1ce", "t2", "flair"),
            p0[1:].astype(np.uint8),
            sp,
            sp,
            brain,
        )


def test_empty_pseudo_label():
    img, sp, brain, p0, _ = _toy(0)
    s = RefinementSession(img, None, sp, brain)
    with pytest.raises(InputError, match="nothing to grow from"):
        s.refine(np.zeros_like(p0))
    with pytest.raises(InputError, match="nothing to grow from"):
        s.refine(~brain)  # only outside the brain
    with pytest.raises(InputError, match="nothing to grow from"):
        refine_labels(
            np.stack([img[0]] * 4),
            ("t1", "t1ce", "t2", "flair"),
            np.zeros(SHAPE, np.uint8),
            sp,
            sp,
            brain,
        )


def test_whole_brain_pseudo_label_warns():
    img, sp, brain, p0, _ = _toy(0)
    s = RefinementSession(img, None, sp, brain)
    with pytest.warns(UserWarning, match="brain mask rather than a tumour"):
        res = s.refine(brain)
    np.testing.assert_array_equal(res.mask, brain)
    assert res.merged == []


def test_notices_are_returned_and_warn_false_issues_none():
    """``warn=False`` returns the notices without warnings (a GUI shows them itself, with no
    need to change the process-wide filters, which is not thread-safe)."""
    img, sp, brain, p0, _ = _toy(0)
    s = RefinementSession(img, None, sp, brain)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        fit = s.fit(brain, warn=False)
        res = s.refine(brain, warn=False)
    assert len(fit.notices) == 1 and "brain mask rather than a tumour" in fit.notices[0]
    assert fit.notices[0] in fit.messages
    assert res.notices == fit.notices
    with pytest.warns(UserWarning, match="brain mask rather than a tumour"):
        assert s.fit(brain).notices == fit.notices
    assert s.fit(p0).notices == []


def test_refine_labels_notes_and_warn_false():
    img, sp, brain, p0, _ = _toy(0)
    images = np.stack([img[0]] * 4)
    mods = ("t1", "t1ce", "t2", "flair")
    oedema = np.where(p0, 2, 0).astype(np.uint8)  # no tumour core: TC is skipped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = refine_labels(images, mods, oedema, sp, sp, brain, warn=False)
    assert out.info["notes"] == [out.info["regions"]["tc"]["skipped"]]
    with pytest.warns(UserWarning, match="TC refinement skipped"):
        again = refine_labels(images, mods, oedema, sp, sp, brain)
    assert again.info["notes"] == out.info["notes"]
    np.testing.assert_array_equal(again.labels, out.labels)


@pytest.mark.parametrize(
    "sim0, match",
    [
        (-0.1, r"sim0=-0.1 is out of range.*\[0, 1\]"),
        (1.5, r"\[0, 1\]"),
        (float("nan"), r"\[0, 1\]"),
        ("abc", "not a number"),
    ],
)
def test_bad_sim0(sim0, match):
    with pytest.raises(InputError, match=match):
        check_sim0(sim0)
    img, sp, brain, p0, _ = _toy(0)
    with pytest.raises(InputError, match=match):
        RefinementSession(img, None, sp, brain).refine(p0, sim0)


@pytest.mark.parametrize(
    "n_c, match",
    [
        (0, "n_c=0 is out of range.*>= 1"),
        (-3, ">= 1"),
        (2.5, "integer >= 1"),
        ("x", "integer >= 1"),
    ],
)
def test_bad_nc(n_c, match):
    with pytest.raises(InputError, match=match):
        check_nc(n_c)


def test_good_parameters_pass():
    assert check_sim0(0) == 0.0
    assert check_sim0(1) == 1.0
    assert check_nc(1) == 1
    assert check_nc(np.int64(30)) == 30
    assert check_nc(4.0) == 4
    assert 0.0 <= DEFAULT_SIM0 <= 1.0
    assert DEFAULT_NC >= 1


@pytest.mark.parametrize(
    "modalities, region, expect, warn",
    [
        (("t1", "t1ce", "t2", "flair"), "wt", ["flair"], None),
        (("t1", "t1ce", "t2", "flair"), "tc", ["t1ce", "t2"], None),
        (("t1", "t1ce", "t2"), "wt", None, "lacks"),
        (("t1", "t2", "flair"), "tc", ["t2"], "lacks"),
        (("t1",), "tc", ["t1"], "lacks"),
    ],
)
def test_missing_modality_falls_back(modalities, region, expect, warn):
    if warn:
        with pytest.warns(UserWarning, match=warn):
            idx, names = region_channels(modalities, region)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            idx, names = region_channels(modalities, region)
    assert [modalities[i] for i in idx] == names
    if expect is not None:
        assert sorted(names) == sorted(expect)
    assert names


def test_session_without_flair_warns_and_works():
    img, sp, brain, p0, _ = _toy(1)
    three = np.stack([img[0]] * 3)
    with pytest.warns(UserWarning, match="lacks"):
        s = RefinementSession(three, ("t1", "t1ce", "t2"), sp, brain, region="wt")
    assert s.refine(p0, 0.1).mask.any()


def test_bad_weights_and_options():
    with pytest.raises(InputError, match="content"):
        SimilarityWeights(content=-1)
    with pytest.raises(InputError, match="both be 0"):
        SimilarityWeights(content=0, border=0)
    with pytest.raises(InputError, match="region_features"):
        SimilarityWeights(region_features="mean")
    img, sp, brain, p0, _ = _toy(0)
    with pytest.raises(InputError, match="output"):
        RefinementSession(img, None, sp, brain).refine(p0, output="voxels")


def test_session_progress_and_cancel():
    from napari_ssseg.core.progress import Cancelled

    img, sp, brain, p0, _ = _toy(0)
    calls = []
    s = RefinementSession(img, None, sp, brain, progress=lambda f, m: calls.append((f, m)))
    fr = [f for f, _ in calls]
    assert fr[0] == 0.0 and fr[-1] == 1.0 and fr == sorted(fr)
    assert set(s.timings) >= {"prepare", "stats", "adjacency", "similarity", "total"}
    with pytest.raises(Cancelled):
        RefinementSession(img, None, sp, brain, should_stop=lambda: True)


def test_session_feature_cache(tmp_path):
    from napari_ssseg.core.cache import Cache

    img, sp, brain, p0, _ = _toy(9)
    cache = Cache(tmp_path, namespace="features")
    a = RefinementSession(img, None, sp, brain, cache=cache)
    assert not a.cache_hit
    b = RefinementSession(img, None, sp, brain, cache=cache)
    assert b.cache_hit
    disk = RefinementSession(img, None, sp, brain, cache=Cache(tmp_path, namespace="features"))
    assert disk.cache_hit
    ra, rb, rd = (s.refine(p0, 0.0, 30) for s in (a, b, disk))
    np.testing.assert_array_equal(ra.mask, rb.mask)
    np.testing.assert_array_equal(ra.mask, rd.mask)
    assert ra.merged == rb.merged == rd.merged
    # the literal oracle still works on a cache hit (per-voxel data rebuilt on demand)
    assert b.refine(p0, 0.0, 30, literal=True).merged == ra.merged
    # a different superpixel map is a different key
    c = RefinementSession(img, None, np.where(sp == 1, 2, sp), brain, cache=cache)
    assert not c.cache_hit


def test_fill_threshold_between_added_and_union():
    img, sp, brain, p0, _ = _toy(14)
    s = RefinementSession(img, None, sp, brain)
    fit = s.fit(p0)
    union = s.refine(fit, 0.0, 30, output="union", fill=0.5).mask
    added = s.refine(fit, 0.0, 30, output="added").mask
    mid = s.refine(fit, 0.0, 30, output="union", fill=0.8).mask
    top = s.refine(fit, 0.0, 30, output="union", fill=1.0).mask
    assert np.all(added <= mid) and np.all(mid <= union)
    np.testing.assert_array_equal(top | added, top)
    with pytest.raises(InputError, match=r"fill=0.2 is out of range.*\[0.5, 1\]"):
        s.refine(fit, 0.0, 30, fill=0.2)


def test_cli_refine_end_to_end(tmp_path, capsys):
    """`ssseg refine` on a small phantom case written to disk (brats2021 naming)."""
    import argparse

    from napari_ssseg.commands import refine as cmd
    from napari_ssseg.core.degrade import degrade
    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.io.readers import load_case, read_labels
    from napari_ssseg.io.writers import save_labels, write_case

    ph = make_phantom((40, 56, 56), (3.0, 3.0, 3.0), seed=2)
    folder = write_case(ph.to_case(), tmp_path)
    case = load_case(folder)
    pseudo = degrade(case.labels, "undersegmented_oedema", spacing=case.scale, seed=0)
    save_labels(pseudo, case, tmp_path / "pseudo.nii.gz")
    gt = next(folder.glob("*seg.nii.gz"))
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    out = tmp_path / "refined.nii.gz"
    args = parser.parse_args(
        [
            str(folder),
            "--pseudo",
            str(tmp_path / "pseudo.nii.gz"),
            "--out",
            str(out),
            "--gt",
            str(gt),
            "--n-segments",
            "200",
        ]
    )
    assert cmd.run(args) == 0
    captured = capsys.readouterr()
    assert "Dice" in captured.out and "WT" in captured.out
    assert "timing (cold start" in captured.err
    refined = read_labels(out, case)
    assert refined.shape == case.shape
    # WT only grows with the defaults, except tiny components dropped by the pre-step [ours]
    assert ((pseudo > 0) & ~(refined > 0)).sum() <= 0.01 * (pseudo > 0).sum()
    bad = parser.parse_args(
        [str(folder), "--pseudo", str(tmp_path / "pseudo.nii.gz"), "--out", str(out)]
        + ["--mutual-tolerance", "1.5"]
    )
    with pytest.raises(InputError, match="--mutual-tolerance"):
        cmd.run(bad)
    # empty pseudo-label: clear message before any heavy work
    save_labels(np.zeros(case.shape, np.uint8), case, tmp_path / "empty.nii.gz")
    args = parser.parse_args(
        [str(folder), "--pseudo", str(tmp_path / "empty.nii.gz"), "--out", str(out)]
    )
    with pytest.raises(InputError, match="nothing to grow from"):
        cmd.run(args)


def test_fill_edge_keeps_boundaries_on_image_edges():
    img, sp, brain, p0, tum = _toy(5)
    s = RefinementSession(img, None, sp, brain)
    # the true tumour as pseudo-label: its boundary lies on the strongest image edge, so with
    # a strict edge rule no cut superpixel is filled and the exact boundary is kept
    fit = s.fit(tum)
    assert np.any(fit.cut_border > 0)
    keep = s.refine(fit, 1.0, 30, output="union", fill_edge=0.0).mask
    np.testing.assert_array_equal(keep, tum & brain)
    always = s.refine(fit, 1.0, 30, output="union", fill_edge=np.inf).mask
    default = s.refine(fit, 1.0, 30, output="union").mask
    assert np.all(keep <= default) and np.all(default <= always)
    assert always.sum() > keep.sum()
    with pytest.raises(InputError, match="fill_edge=-1.0 is out of range"):
        s.refine(fit, 1.0, 30, fill_edge=-1)


def test_refine_case_end_to_end():
    import json

    from napari_ssseg.core.degrade import degrade_labels
    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.core.refine import refine_case

    ph = make_phantom((40, 56, 56), (3.0, 3.0, 3.0), seed=4)
    case = ph.to_case()
    pseudo = degrade_labels(case.labels, kind="under_oedema", spacing=case.scale, seed=0)
    calls = []
    out = refine_case(
        case, pseudo, brain=ph.brain, n_segments=150, progress=lambda f, m: calls.append(f)
    )
    assert out.labels.shape == case.shape and out.labels.dtype == np.uint8
    # contains the pseudo-label except tiny components dropped by the pre-step [ours]
    lost = (pseudo > 0) & ph.brain & ~(out.labels > 0)
    assert lost.sum() <= 0.01 * (pseudo > 0).sum()
    paper = refine_case(case, pseudo, brain=ph.brain, n_segments=150, components=False)
    assert np.all((paper.labels > 0)[(pseudo > 0) & ph.brain])
    assert not np.any((out.labels > 0) & ~ph.brain)
    json.dumps(out.info)  # JSON-friendly (the demo writes it to summary.json)
    assert set(out.info["regions"]) == {"wt", "tc"}
    assert calls[-1] == 1.0 and calls == sorted(calls)
    # per-stage timings (the CLI prints them), in order, adding up to the total
    assert list(out.info["timings"]) == [
        "brain mask",
        "superpixels WT",
        "superpixels TC",
        "features+graph WT",
        "features+graph TC",
        "refine",
    ]
    assert all(t >= 0 for t in out.info["timings"].values())
    assert sum(out.info["timings"].values()) <= out.info["seconds"]
    assert set(out.info["feature_cache_hit"]) == {"wt", "tc"}
    assert out.info["superpixels"]["wt"] > 1 and out.info["notes"] == []
    # the assembly options reach refine_labels
    union = refine_case(
        case, pseudo, brain=ph.brain, n_segments=150, output="union", fill=0.5, fill_edge=np.inf
    )
    added = refine_case(case, pseudo, brain=ph.brain, n_segments=150, output="added")
    assert np.all((added.labels > 0) <= (union.labels > 0))
    assert (union.labels > 0).sum() > (added.labels > 0).sum()
    with pytest.raises(GeometryError, match="case's grid"):
        refine_case(case, pseudo[1:])


def test_session_grow_matches_refine():
    img, sp, brain, p0, _ = _toy(14)
    s = RefinementSession(img, None, sp, brain)
    fit = s.fit(p0)
    members, merged = s.grow(fit, 0.0, 30)
    res = s.refine(fit, 0.0, 30)
    np.testing.assert_array_equal(members, res.members)
    assert merged == res.merged


# --------------------------------------------------------------------------- extensions [ours]
EXT_SEEDS = list(range(8))


@pytest.mark.parametrize("seed", EXT_SEEDS)
@pytest.mark.parametrize("mutual,tol", [("member", 0.0), ("region", 0.2), ("member", 0.1)])
def test_fast_equals_literal_extensions(seed, mutual, tol):
    """The relaxed mutual-best rules agree between the fast and the literal implementation."""
    img, sp, brain, p0, _ = _toy(seed)
    w, sim0, n_c = _config(seed)
    session = RefinementSession(img, None, sp, brain, weights=w)
    kw = dict(mutual=mutual, mutual_tolerance=tol)
    fast = session.refine(p0, sim0, n_c, **kw)
    lit = session.refine(p0, sim0, n_c, literal=True, **kw)
    assert fast.merged == lit.merged
    np.testing.assert_array_equal(fast.mask, lit.mask)


def test_relaxed_mutual_grows_at_least_as_far_on_the_oracle_table():
    strict = relaxed = 0
    for seed in EXT_SEEDS:
        img, sp, brain, p0, _ = _toy(seed)
        w, sim0, n_c = _config(seed)
        session = RefinementSession(img, None, sp, brain, weights=w)
        fit = session.fit(p0)
        strict += len(session.refine(fit, sim0, n_c).merged)
        relaxed += len(session.refine(fit, sim0, n_c, mutual_tolerance=0.2).merged)
    assert relaxed > strict


def _two_lesions():
    """Brain with a bright main lesion and a bright, smaller second lesion far from it."""
    rng = np.random.default_rng(7)
    shape = (20, 40, 40)
    zz, yy, xx = np.indices(shape)
    brain = ((zz - 10) / 9.5) ** 2 + ((yy - 20) / 19) ** 2 + ((xx - 20) / 19) ** 2 < 1
    main = ((zz - 10) / 5) ** 2 + ((yy - 14) / 7) ** 2 + ((xx - 12) / 6) ** 2 < 1
    second = (zz - 10) ** 2 + (yy - 27) ** 2 + (xx - 28) ** 2 < 3.5**2
    img = np.where(brain, 1.0 + 0.8 * (main | second) + rng.normal(0, 0.08, shape), 0)
    img = img[None].astype(np.float32)
    sp = _slic(img, brain, 120)
    # a small spurious blob of healthy tissue, far from both lesions
    blob = (zz - 10) ** 2 + (yy - 30) ** 2 + (xx - 10) ** 2 < 3.0**2
    return img, sp, brain, main, second, blob & brain


def test_component_prestep_drops_dissimilar_blob_keeps_similar_lesion():
    img, sp, brain, main, second, blob = _two_lesions()
    assert not (blob & (main | second)).any()
    session = RefinementSession(img, None, sp, brain)
    p0 = main | second | blob
    fit = session.fit(p0)
    assert fit.dropped_components == 1
    np.testing.assert_array_equal(fit.dropped, blob[session.crop])
    kept = [c for c in fit.components if c["kept"]]
    assert len(kept) == 2 and len(fit.components) == 3
    res = session.refine(p0, 0.45, 30, output="added")
    assert res.dropped_components == 1
    assert not res.mask[blob].any()
    assert res.mask[second].all() and res.mask[main].all()
    # switched off: the paper's behaviour keeps everything
    off = session.refine(p0, 0.45, 30, output="added", components=False)
    assert off.dropped_components == 0
    assert off.mask[blob].all()
    # a component as large as the largest is never dropped, whatever it looks like
    big = session.fit(p0, component_keep=0.0)
    assert big.dropped_components == 0


def test_component_prestep_single_component_untouched():
    img, sp, brain, main, _, _ = _two_lesions()
    session = RefinementSession(img, None, sp, brain)
    fit = session.fit(main)
    assert fit.dropped_components == 0 and fit.dropped is None
    np.testing.assert_array_equal(fit.p0, (main & brain)[session.crop])


@pytest.mark.parametrize("seed", [0, 5, 9])
def test_properties_with_extensions(seed):
    """Default extensions on (region WT): contains the kept seed, in brain, deterministic."""
    img, sp, brain, p0, tum = _toy(seed)
    zz, yy, xx = np.indices(SHAPE)
    blob = ((zz - 9) ** 2 + (yy - 15) ** 2 + (xx - 3) ** 2 < 6) & brain & ~tum
    p = p0 | blob
    img = img[:1]
    session = RefinementSession(img, ["flair"], sp, brain, region="wt")
    fit = session.fit(p)
    res = session.refine(fit)
    assert np.all(res.members[fit.members])
    kept = np.zeros(SHAPE, bool)
    kept[session.crop] = fit.p0
    assert np.all(res.mask[kept])
    assert not np.any(res.mask & ~brain)
    again = RefinementSession(img, ["flair"], sp, brain, region="wt").refine(p)
    np.testing.assert_array_equal(res.mask, again.mask)
    assert res.merged == again.merged


def test_refine_labels_tc_within_wt_with_extensions():
    img, sp, brain, p0, tum = _toy(2)
    labels = np.where(p0, 2, 0).astype(np.uint8)
    zz, yy, xx = np.indices(SHAPE)
    core = p0 & ((xx - xx[p0].mean()) ** 2 + (yy - yy[p0].mean()) ** 2 < 6)
    labels[core] = 1
    images = np.concatenate([img[:1]] * 4)
    mods = ["t1", "t1ce", "t2", "flair"]
    a = refine_labels(images, mods, labels, sp, sp, brain, mutual_tolerance={"wt": 0.2, "tc": 0.1})
    b = refine_labels(images, mods, labels, sp, sp, brain, mutual_tolerance={"wt": 0.2, "tc": 0.1})
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.any(a.labels[~brain])
    # TC (NCR/ET) is inside WT by construction of the classes; WT contains the kept core
    assert np.all(a.labels[core & brain] > 0)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"mutual": "both"}, "mutual"),
        ({"mutual_tolerance": 1.0}, "mutual_tolerance"),
        ({"mutual_tolerance": -0.1}, "mutual_tolerance"),
        ({"component_sim": 2.0}, "component_sim"),
        ({"component_keep": float("nan")}, "component_keep"),
    ],
)
def test_bad_extension_options(kw, match):
    img, sp, brain, p0, _ = _toy(0)
    with pytest.raises(InputError, match=match):
        RefinementSession(img, None, sp, brain).refine(p0, **kw)


def test_refine_case_passes_every_option_to_refine_labels(monkeypatch):
    """refine_case used to drop ``weights`` and ``component_keep`` (issue 15): every option of
    refine_labels now reaches it."""
    import napari_ssseg.core.refine as refine_mod
    from napari_ssseg.core.degrade import degrade_labels
    from napari_ssseg.core.phantom import make_phantom

    ph = make_phantom((40, 56, 56), (3.0, 3.0, 3.0), seed=4)
    case = ph.to_case()
    pseudo = degrade_labels(case.labels, kind="under_oedema", spacing=case.scale, seed=0)
    seen = {}
    real = refine_mod.refine_labels

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(refine_mod, "refine_labels", spy)
    weights = refine_mod.SimilarityWeights(content=0.9, border=0.1)
    refine_mod.refine_case(
        case, pseudo, brain=ph.brain, n_segments=150, weights=weights, component_keep=0.3
    )
    options = seen["options"]  # the whole RefineOptions is passed on: nothing can be dropped
    assert options.weights is weights and options.component_keep == 0.3
    assert options.n_c == refine_mod.DEFAULT_NC


def test_refine_options_are_checked_and_named():
    from napari_ssseg.core.refine import (
        RefineOptions,
        SimilarityWeights,
        refine_case,
        refine_labels,
    )
    from napari_ssseg.errors import InputError

    per = RefineOptions(sim0={"WT": 0.3, "tc": 0.5})
    assert per.for_region("wt")["sim0"] == 0.3 and per.for_region("tc")["sim0"] == 0.5
    opts = RefineOptions(mutual_tolerance={"wt": 0.1})
    assert opts.for_region("wt")["mutual_tolerance"] == 0.1
    with pytest.raises(InputError, match="no entry for region 'tc'"):
        opts.for_region("tc")  # mutual_tolerance names only WT
    paper = RefineOptions.paper(sim0=0.2)
    assert (paper.components, paper.mutual, paper.mutual_tolerance, paper.sim0) == (
        False,
        "region",
        0.0,
        0.2,
    )
    assert opts.replace() is opts and opts.replace(n_c=3).n_c == 3
    for bad, match in [
        ({"sim0": 1.5}, "sim0=1.5 is out of range"),
        ({"n_c": 0}, "n_c=0 is out of range"),
        ({"output": "everything"}, "output"),
        ({"mutual": "nearest"}, "mutual"),
        ({"mutual_tolerance": 1.0}, "mutual_tolerance=1.0 is out of range"),
        ({"fill": -0.1}, "fill=-0.1 is out of range"),
        ({"fill_edge": float("nan")}, "fill_edge=nan is out of range"),
        ({"component_keep": 2}, "component_keep=2 is out of range"),
    ]:
        with pytest.raises(InputError, match=match):
            RefineOptions(**bad)
    assert RefineOptions(fill_edge=float("inf")).fill_edge == float("inf")
    info = RefineOptions(weights={"wt": SimilarityWeights()}).to_info()
    assert info["weights"]["wt"]["content"] == 0.5 and set(info) == set(RefineOptions.names())
    img = np.zeros((1, 4, 4, 4), np.float32)
    lab = np.zeros((4, 4, 4), np.uint8)
    calls = [(refine_labels, (img, ["flair"], lab, None, None)), (refine_case, (None, lab))]
    for fn, args in calls:
        with pytest.raises(TypeError, match="unexpected keyword argument.*simzero.*sim0"):
            fn(*args, simzero=0.3)


@pytest.mark.parametrize("seed", range(4))
def test_component_similarity_in_the_pseudo_labels_box_equals_the_whole_crop(seed):
    """The component pre-step works in the box around p0 (plus its ring's margin), so its
    cost follows the pseudo-label, not the brain: same components and similarities as on
    the whole crop, also for blobs at the crop's edge."""
    img, sp, brain, p0, _ = _toy(seed)
    session = RefinementSession(img, None, sp, brain)
    pc = p0[session.crop] & session._domain
    rng = np.random.default_rng(seed)
    for _ in range(3):  # remote false positives, some on the crop's border
        z, y, x = (int(rng.integers(0, n)) for n in pc.shape)
        pc[max(z - 1, 0) : z + 1, max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 1] = True
    pc &= session._domain
    comp, info = session.component_similarity(pc)
    full_comp, full_info = session._component_similarity_in(pc, session._labels, 6.0)
    np.testing.assert_array_equal(comp, full_comp)
    np.testing.assert_array_equal(info, full_info)
    assert info.shape[0] >= 2


def _assemble_on_the_whole_crop(session, seed, members, output, fill, fill_edge):
    """_assemble as it was written before it worked in a box (the oracle)."""
    from napari_ssseg.core.refine_params import FIT_FRACTION

    lab = session._labels
    if output == "superpixels":
        crop_mask = members[lab]
    elif output == "union":
        filled = members.copy()
        if seed.coverage is not None and fill > FIT_FRACTION:
            filled &= ~(seed.members & (seed.coverage < fill))
        if seed.cut_border is not None and np.isfinite(fill_edge):
            filled &= ~(seed.members & (seed.cut_border > fill_edge * session.model.sigma_b))
        crop_mask = (seed.p0 & ~(seed.members & ~members)[lab]) | filled[lab]
    else:
        added, removed = members & ~seed.members, seed.members & ~members
        crop_mask = (seed.p0 & ~removed[lab]) | added[lab]
    mask = np.zeros(session.shape, bool)
    mask[session.crop] = crop_mask
    prov = np.zeros(session.shape, bool)
    prov[session.crop] = crop_mask & ~seed.p0
    return mask, prov


@pytest.mark.parametrize("seed", range(4))
def test_assembly_in_a_box_equals_the_whole_crop(seed):
    """The refined mask is assembled in the box of p0 and the superpixels that can add to
    it: the same mask and provenance as the whole-crop computation, for every output rule."""
    img, sp, brain, p0, _ = _toy(seed)
    session = RefinementSession(img, None, sp, brain)
    fit = session.fit(p0)
    rng = np.random.default_rng(seed)
    for _ in range(4):
        members = fit.members.copy()
        members[rng.integers(1, session.n_superpixels + 1, size=3)] ^= True
        members[0] = False
        for output, fill, edge in [
            ("union", 0.5, np.inf),
            ("union", 0.8, 0.5),
            ("added", 0.5, np.inf),
            ("superpixels", 0.5, np.inf),
        ]:
            got = session._assemble(fit, members, output, fill, edge)
            want = _assemble_on_the_whole_crop(session, fit, members, output, fill, edge)
            for a, b in zip(got, want, strict=True):
                np.testing.assert_array_equal(a, b)
    nothing = np.zeros_like(fit.members)
    mask, prov = session._assemble(fit, nothing, "superpixels", 0.5)
    assert not mask.any() and not prov.any()
