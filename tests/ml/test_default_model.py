"""The shipped default model segments a held-out phantom (seed and style outside training)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ssseg.ml.checkpoint import default_checkpoint_path


@pytest.mark.slow
@pytest.mark.skipif(not default_checkpoint_path().is_file(), reason="default model missing")
def test_default_model_wt_dice_on_heldout_phantom():
    from napari_ssseg.core.phantom import PhantomStyle, make_phantom
    from napari_ssseg.ml.inference import predict_case

    seed = 50007  # training used 10000-10099, validation 20000-20003
    style = PhantomStyle.sample(np.random.default_rng(seed), strength=1.5)  # training: <= 1
    ph = make_phantom(shape=(155, 240, 240), seed=seed, style=style)
    res = predict_case(ph.to_case(), None, device="cpu")
    pred, gt = res["labels"] > 0, ph.labels > 0
    dice = 2 * np.logical_and(pred, gt).sum() / (pred.sum() + gt.sum())
    assert dice >= 0.70, f"WT Dice {dice:.3f}"
