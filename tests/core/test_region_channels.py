"""One region -> channels table (issue 15 item 4): a region's superpixels and its
refinement features are computed from the same channels, also when modalities are missing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_ssseg.core.case import REGION_MODALITIES, region_channel_indices
from napari_ssseg.core.refine import REGION_CHANNELS, RefinementSession, region_channels
from napari_ssseg.core.superpixels import (
    channels_for_region,
    region_superpixels,
    slic_superpixels,
)
from napari_ssseg.errors import InputError


@pytest.fixture(scope="module")
def phantom():
    from napari_ssseg.core.phantom import make_phantom

    return make_phantom(shape=(24, 32, 32), seed=3)


@pytest.mark.parametrize(
    "modalities",
    [
        ("t1", "t1ce", "t2", "flair"),
        ("t1", "t1ce", "t2"),  # no FLAIR: the latent bug of the two tables
        ("t1", "t2", "flair"),
        ("t1", "t1ce"),
        ("t1",),
        ("flair", "t2"),
    ],
)
@pytest.mark.parametrize("region", ["wt", "tc"])
def test_superpixels_and_features_pick_the_same_channels(modalities, region):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sp = channels_for_region(modalities, region.upper())
        feat, names = region_channels(modalities, region)
    assert feat == sp
    assert names == [modalities[i] for i in sp]


def test_case_without_flair_gets_wt_superpixels_and_features_from_the_same_channels(phantom):
    mods = ["t1", "t1ce", "t2"]
    images = phantom.images[:3]
    assert list(phantom.modalities[:3]) == mods
    brain = images.any(axis=0)
    kw = {"n_segments": 40, "spacing": phantom.spacing}
    with pytest.warns(UserWarning, match="lacks flair"):
        wt_sp = region_superpixels(images, mods, "WT", mask=brain, **kw)
    with pytest.warns(UserWarning, match="lacks flair"):
        session = RefinementSession(images, mods, wt_sp, brain, phantom.spacing, region="wt")
    used = [mods.index(n) for n in session.channel_names]
    # the superpixels are exactly those of the channels the features are computed from
    assert np.array_equal(slic_superpixels(images[used], mask=brain, **kw), wt_sp)
    assert used == [0, 1, 2]


def test_one_table_and_its_rules():
    assert REGION_CHANNELS == {"wt": REGION_MODALITIES["WT"], "tc": REGION_MODALITIES["TC"]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert region_channel_indices(["T1", "T1Gd", "T2", "FLAIR"], "tc") == [2, 1]
        assert region_channel_indices(["t1", "t1ce", "t2", "t2f"], "WT") == [3]
    with pytest.warns(UserWarning, match=r"lacks t1ce; computing .* from t2 instead"):
        assert region_channel_indices(["t1", "t2", "flair"], "TC") == [1]
    with pytest.raises(InputError, match="region"):
        region_channel_indices(["t1"], "XX")
    with pytest.raises(InputError, match="no image channels"):
        region_channel_indices([], "WT")
