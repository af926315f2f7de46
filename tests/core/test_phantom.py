"""Tests of the synthetic phantom generator."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

from napari_ssseg.core.case import MODALITIES, Case
from napari_ssseg.core.phantom import (
    DEFAULT_INTENSITIES,
    Phantom,
    PhantomStyle,
    make_phantom,
)
from napari_ssseg.errors import InputError

T1, T1CE, T2, FLAIR = range(4)
NCR, ED, ET = 1, 2, 3
CSF, GM, WM = 1, 2, 3


def _median(p: Phantom, channel: int, where: np.ndarray) -> float:
    return float(np.median(p.images[channel][where]))


def test_types_shapes_and_ranges(tiny_phantom: Phantom) -> None:
    p = tiny_phantom
    assert p.images.shape == (4, 32, 40, 40)
    assert p.images.dtype == np.float32
    assert p.labels.shape == p.brain.shape == (32, 40, 40)
    assert p.labels.dtype == np.uint8 and p.brain.dtype == bool
    assert set(np.unique(p.labels).tolist()) == {0, 1, 2, 3}
    assert p.modalities == MODALITIES
    assert np.all(np.isfinite(p.images))
    assert p.images.min() >= 0
    # skull-stripped: exactly zero outside the brain, positive inside
    assert np.all(p.images[:, ~p.brain] == 0)
    assert np.all(p.images[:, p.brain] > 0)
    # the tumour lies inside the brain
    assert not np.any(p.labels[~p.brain])


def test_deterministic_by_seed() -> None:
    a = make_phantom((32, 40, 40), seed=5)
    b = make_phantom((32, 40, 40), seed=5)
    c = make_phantom((32, 40, 40), seed=6)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.style == b.style
    assert not np.array_equal(a.labels, c.labels)


def test_style_does_not_change_anatomy_or_tumour() -> None:
    a = make_phantom((32, 40, 40), seed=3, style=PhantomStyle())
    b = make_phantom((32, 40, 40), seed=3, style=PhantomStyle(noise=0.0, bias=0.0))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.tissues, b.tissues)
    assert not np.allclose(a.images, b.images)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relative_contrasts(seed: int) -> None:
    """Clinical orderings hold in the rendered images (medians over each class)."""
    p = make_phantom((64, 80, 80), seed=seed)
    healthy = p.labels == 0
    wm, gm, csf = (healthy & (p.tissues == t) for t in (WM, GM, CSF))
    ncr, ed, et = (p.labels == v for v in (NCR, ED, ET))
    m = lambda ch, where: _median(p, ch, where)  # noqa: E731
    # healthy tissue
    assert m(T1, wm) > m(T1, gm) > m(T1, csf)
    assert m(T2, csf) > m(T2, gm) > m(T2, wm)
    assert m(FLAIR, gm) > m(FLAIR, csf)
    # tumour
    assert m(FLAIR, ed) > m(FLAIR, wm)  # oedema bright on FLAIR
    assert m(T2, ed) > m(T2, wm)  # and on T2
    assert m(T1CE, et) > m(T1CE, wm)  # enhancing rim bright on T1Gd
    assert m(T1CE, et) > m(T1CE, ncr)
    assert m(T1, ncr) < m(T1, wm) and m(T1CE, ncr) < m(T1CE, wm)  # necrosis dark on T1
    assert m(T2, ncr) > m(T2, wm)  # necrosis bright on T2


def test_tumour_structure(small_phantom: Phantom) -> None:
    """Rim encloses necrosis; oedema surrounds the core; WT is one connected piece."""
    from scipy import ndimage as ndi

    p = small_phantom
    ncr, et = p.labels == NCR, p.labels == ET
    # voxels next to necrosis are mostly tumour core (rim), not healthy tissue
    ring = ndi.binary_dilation(ncr) & ~ncr
    assert np.mean(np.isin(p.labels[ring], (NCR, ET))) > 0.8
    # a dilated core is mostly inside the whole tumour (oedema around it)
    core = ncr | et
    shell = ndi.binary_dilation(core, iterations=2) & ~core & p.brain
    assert np.mean(p.labels[shell] == ED) > 0.5
    _, n = ndi.label(p.labels > 0, structure=np.ones((3, 3, 3)))
    assert n == 1


def test_oedema_prefers_white_matter() -> None:
    """Oedema occupies a larger share of the WM around the core than of the GM."""
    from scipy import ndimage as ndi

    ratios = []
    for seed in range(3):
        p = make_phantom((64, 96, 96), seed=seed)
        core = np.isin(p.labels, (NCR, ET))
        near = ndi.binary_dilation(core, iterations=6) & ~core
        ed = p.labels == ED
        wm, gm = near & (p.tissues == WM), near & (p.tissues == GM)
        if wm.sum() > 20 and gm.sum() > 20:
            ratios.append(ed[wm].mean() / max(ed[gm].mean(), 1e-3))
    assert ratios and np.median(ratios) > 1.5


def test_tumour_scales_with_grid() -> None:
    small = make_phantom((40, 60, 60), spacing=(1.0, 1.0, 1.0), seed=4)
    large = make_phantom((80, 120, 120), spacing=(1.0, 1.0, 1.0), seed=4)
    ratio = (large.labels > 0).sum() / max((small.labels > 0).sum(), 1)
    assert 3 < ratio < 16  # volume scales ~ 8x when the grid doubles
    # brain fills a similar fraction of each grid
    assert abs(small.brain.mean() - large.brain.mean()) < 0.05


def test_bias_field_and_noise_follow_style() -> None:
    shape = (32, 48, 48)
    clean = make_phantom(shape, seed=2, style=PhantomStyle(noise=0.0, bias=0.0, texture=0.0))
    noisy = make_phantom(shape, seed=2, style=PhantomStyle(noise=0.08, bias=0.0, texture=0.0))
    biased = make_phantom(shape, seed=2, style=PhantomStyle(noise=0.0, bias=0.3, texture=0.0))
    np.testing.assert_allclose(clean.bias_field, 1.0)
    assert biased.bias_field[:, biased.brain].std() > 0.1
    interior = clean.brain.copy()
    from scipy import ndimage as ndi

    interior = ndi.binary_erosion(interior, iterations=3) & (clean.tissues == WM)
    interior &= clean.labels == 0
    d_noise = (noisy.images[0] - clean.images[0])[interior]
    assert d_noise.std() > 0.03 * clean.style.lut("t1")["WM"]
    cv = lambda p: p.images[0][interior].std() / p.images[0][interior].mean()  # noqa: E731
    assert cv(biased) > 2 * cv(clean)


def test_to_case_geometry(tiny_phantom: Phantom) -> None:
    case = tiny_phantom.to_case(name="p0")
    assert isinstance(case, Case)
    assert case.name == "p0"
    assert case.modalities == MODALITIES
    assert case.geometry.orientation_code() == "LPS"
    np.testing.assert_array_equal(case.labels, tiny_phantom.labels)
    np.testing.assert_array_equal(case.images, tiny_phantom.images)
    # the volume is centred on the world origin
    g = case.geometry
    corner0 = g.index_to_world(np.zeros(3))
    corner1 = g.index_to_world(np.asarray(tiny_phantom.shape, float) - 1)
    np.testing.assert_allclose(corner0 + corner1, 0.0, atol=1e-9)
    # copies: modifying the case leaves the phantom intact
    case.images[0, 0, 0, 0] = 123.0
    assert tiny_phantom.images[0, 0, 0, 0] == 0


def test_anisotropic_spacing_is_recorded() -> None:
    p = make_phantom((24, 48, 48), spacing=(3.0, 1.0, 1.0), seed=0)
    assert p.spacing == (3.0, 1.0, 1.0)
    assert p.to_case().scale == (3.0, 1.0, 1.0)
    assert p.brain.any() and (p.labels > 0).any()


@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0, 2.0])
def test_style_sample_keeps_orderings(strength: float) -> None:
    for seed in range(20):
        st = PhantomStyle.sample(np.random.default_rng(seed), strength=strength)
        i = st.intensities
        assert i["flair"]["ED"] > i["flair"]["WM"]
        assert i["t1ce"]["ET"] > i["t1ce"]["WM"]
        assert i["t2"]["CSF"] > i["t2"]["GM"]
        assert i["t1"]["WM"] > i["t1"]["GM"]
        assert 0 <= st.noise <= 0.1 and st.bias >= 0
    assert PhantomStyle.sample(0, strength=0.0).intensities == DEFAULT_INTENSITIES


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (8, 40, 40)}, "shape"),
        ({"shape": (32, 40)}, "shape"),
        ({"spacing": (0.0, 1.0, 1.0)}, "spacing"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"anatomy": "atlas"}, "anatomy"),
        ({"style": "bright"}, "PhantomStyle"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"shape": (32, 40, 40)} | kwargs
    with pytest.raises(InputError, match=match):
        make_phantom(**args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noise": -0.1}, "noise"),
        ({"gain": (1.0, 1.0, 1.0)}, "gain"),
        ({"intensities": {"t1": {}}}, "t1ce|WM"),
    ],
)
def test_bad_style(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        PhantomStyle(**kwargs)


def test_small_grid_is_fast() -> None:
    make_phantom((32, 40, 40), seed=0)  # warm up imports
    t0 = time.perf_counter()
    make_phantom((32, 40, 40), seed=1)
    assert time.perf_counter() - t0 < 0.5


@pytest.mark.skipif(importlib.util.find_spec("nilearn") is not None, reason="nilearn installed")
def test_mni_without_nilearn_is_a_clear_error() -> None:
    with pytest.raises(InputError, match=r"napari-ssseg\[anatomy\]"):
        make_phantom((32, 40, 40), seed=0, anatomy="mni")


@pytest.mark.skipif(importlib.util.find_spec("nilearn") is None, reason="needs nilearn")
def test_mni_anatomy() -> None:
    p = make_phantom((64, 80, 80), seed=0, anatomy="mni")
    assert p.anatomy == "mni"
    assert set(np.unique(p.labels).tolist()) == {0, 1, 2, 3}
    assert np.all(p.images[:, ~p.brain] == 0)
    healthy = p.labels == 0
    wm, gm = healthy & (p.tissues == WM), healthy & (p.tissues == GM)
    assert _median(p, T1, wm) > _median(p, T1, gm)
    # deterministic
    q = make_phantom((64, 80, 80), seed=0, anatomy="mni")
    np.testing.assert_array_equal(p.images, q.images)


# --------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize(
    ("naming", "expected"),
    [
        ("brats2021", ["phantom_00007_flair.nii.gz", "phantom_00007_seg.nii.gz"]),
        ("brats2023", ["phantom_00007-t2f.nii.gz", "phantom_00007-seg.nii.gz"]),
        ("msd", ["phantom_00007.nii.gz", "phantom_00007_label.nii.gz"]),
    ],
)
def test_cli_phantom_writes_loadable_cases(tmp_path, capsys, naming: str, expected) -> None:
    from napari_ssseg.cli import main
    from napari_ssseg.io.readers import load_case

    rc = main(
        ["phantom", str(tmp_path), "--cases", "2", "--seed", "7", "--shape", "32", "40", "40"]
        + ["--naming", naming]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "phantom_00007" in out and "phantom_00008" in out
    folder = tmp_path / "phantom_00007"
    names = {p.name for p in folder.iterdir()}
    assert set(expected) <= names
    case = load_case(folder)
    ref = make_phantom((32, 40, 40), seed=7)
    np.testing.assert_array_equal(case.labels, ref.labels)
    np.testing.assert_allclose(case.channel("flair"), ref.images[3], rtol=1e-6)
    np.testing.assert_allclose(case.translate, ref.to_case().translate, atol=1e-5)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--naming", "nifti"], "naming"),
        (["--cases", "0"], "cases"),
        (["--shape", "4", "40", "40"], "shape"),
        (["--prefix", "a/b"], "prefix"),
    ],
)
def test_cli_phantom_bad_arguments(tmp_path, capsys, args, match: str) -> None:
    from napari_ssseg.cli import main

    rc = main(["phantom", str(tmp_path / "out"), "--shape", "32", "40", "40"] + args)
    assert rc == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_tumour_kinds() -> None:
    """Some seeds draw solid (no NCR) or non-enhancing (no ET) tumours; kinds are recorded."""
    kinds = {s: make_phantom((32, 40, 40), seed=s) for s in (0, 13, 14)}
    assert [p.tumour_kind for p in kinds.values()] == ["classic", "solid", "non-enhancing"]
    solid, nonenh = kinds[13], kinds[14]
    assert not np.any(solid.labels == NCR) and np.any(solid.labels == ET)
    assert not np.any(nonenh.labels == ET) and np.any(nonenh.labels == NCR)
    wm = (nonenh.labels == 0) & (nonenh.tissues == WM)
    core = nonenh.labels == NCR
    assert _median(nonenh, FLAIR, core) > _median(nonenh, FLAIR, wm)
    assert _median(nonenh, T1CE, core) < _median(nonenh, T1CE, wm)  # no enhancement


@pytest.mark.parametrize("seed", [0, 3, 7])
def test_mass_effect_pushes_deep_structures_away(seed: int) -> None:
    """With mass effect the ventricles' centroid moves away from the tumour centre."""
    from dataclasses import replace

    from scipy import ndimage as ndi

    from napari_ssseg.core import phantom as ph

    shape, sp = (64, 96, 96), (1.0, 1.0, 1.0)
    scale = 0.45
    semi = tuple(a * scale for a in ph._BRAIN_SEMI_AXES)
    tum = ph._draw_tumour(np.random.default_rng(seed), scale, semi, 1.0)
    centroids = []
    for me in (0.0, 0.6):
        t = replace(tum, mass_effect=me)
        tissues, brain, _ = ph._synthetic_anatomy(shape, sp, np.random.default_rng(seed), scale, t)
        # the ventricles: CSF deep inside, below the corpus callosum (no fissure there)
        zyx = np.argwhere(ndi.binary_erosion(brain, iterations=8) & (tissues == CSF))
        zyx = zyx - (np.asarray(shape) - 1) / 2.0
        zyx = zyx[(zyx[:, 0] < 18 * scale) & (np.abs(zyx[:, 1]) < 35 * scale)]
        centroids.append(zyx.mean(0))
    shift = centroids[1] - centroids[0]
    away = centroids[0] - tum.centre
    assert float(shift @ away) > 0


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_wide_style_keeps_the_label_defining_contrasts(strength: float) -> None:
    flags = {"cortex_flair": 0, "net_fraction": 0, "enhancement_heterogeneity": 0}
    spread = []
    for seed in range(30):
        st = PhantomStyle.sample(np.random.default_rng(seed), strength=strength, variety="wide")
        i = st.intensities
        assert i["t1ce"]["ET"] > i["t1ce"]["WM"] and i["t1ce"]["ET"] > i["t1ce"]["ED"]
        assert i["flair"]["ED"] > i["flair"]["WM"] and i["t2"]["ED"] > i["t2"]["WM"]
        assert i["t1"]["WM"] > i["t1"]["CSF"] and i["t2"]["CSF"] > i["t2"]["WM"]
        for k in flags:
            flags[k] += getattr(st, k) > 0
        spread.append(i["t1ce"]["NCR"] / i["t1ce"]["WM"])
    assert all(5 <= v <= 25 for v in flags.values()), flags  # each option in some draws only
    # necrosis is not always dark: its T1Gd level relative to WM varies widely
    assert max(spread) / min(spread) > 1.8
    assert PhantomStyle.sample(0, strength=0.0, variety="wide").intensities == (DEFAULT_INTENSITIES)


def test_wide_style_renders_its_options() -> None:
    base = PhantomStyle()
    plain = make_phantom((48, 56, 56), (2.0, 2.0, 2.0), seed=4, style=base)
    varied = make_phantom(
        (48, 56, 56),
        (2.0, 2.0, 2.0),
        seed=4,
        style=PhantomStyle(cortex_flair=0.8, net_fraction=0.6, enhancement_heterogeneity=0.8),
    )
    np.testing.assert_array_equal(plain.labels, varied.labels)  # same anatomy and tumour
    gm = (plain.tissues == GM) & (plain.labels == 0)
    assert np.percentile(varied.images[FLAIR][gm], 90) > 1.2 * np.percentile(
        plain.images[FLAIR][gm], 90
    )
    et = plain.labels == ET
    # weaker enhancement in patches: the low end of ET moves towards the white-matter level
    wm = np.median(plain.images[T1CE][(plain.tissues == WM) & (plain.labels == 0)])
    low_plain, low_varied = (np.percentile(p.images[T1CE][et], 10) - wm for p in (plain, varied))
    assert low_varied < 0.2 * low_plain
    ncr = plain.labels == NCR
    assert np.median(varied.images[FLAIR][ncr]) > np.median(plain.images[FLAIR][ncr])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cortex_flair": -0.1}, "cortex_flair"),
        ({"net_fraction": 1.5}, "net_fraction"),
        ({"enhancement_heterogeneity": float("nan")}, "enhancement_heterogeneity"),
    ],
)
def test_bad_wide_style_options(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        PhantomStyle(**kwargs)
    with pytest.raises(InputError, match="variety"):
        PhantomStyle.sample(0, variety="wild")
