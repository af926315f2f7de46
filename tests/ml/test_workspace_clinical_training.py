"""Training from a workspace trains a clinical study on what it is proposed on (issue 13).

A case marked clinical is prepared (registration, brain extraction, working grid; the
workspace's cache of the case) before training, both when it has a label version (through
the snapshot) and when it has none (the semi-supervised strategies' unlabelled cases): the
model sees zero outside the brain on the working grid, never the raw series with the skull.
"""

from __future__ import annotations

import numpy as np
from clinical_study import FINE, fake_brain_extraction, lesion_mask, make_study

from napari_ssseg.io.workspace import Workspace
from napari_ssseg.ml.data import case_sources

OPTIONS = {"brain_extraction": "on", "register": "off", "resample": 1.5}


def test_clinical_workspace_cases_train_on_their_prepared_images(tmp_path, monkeypatch):
    calls = fake_brain_extraction(monkeypatch)
    study = make_study(tmp_path / "study")
    with Workspace.create(tmp_path / "ws") as ws:
        ws.add_case(case_id="labelled", clinical=OPTIONS, **study)
        ws.add_case(case_id="unlabelled", clinical=OPTIONS, **study)
        ws.add_case(case_id="plain", **study)  # not clinical: its native series
        o = ws._grid("labelled")[1]
        native = o.to_canonical((lesion_mask((30, 32, 32), FINE) * 2).astype(np.uint8))
        ws.save_labels("labelled", native, source="import")
        ws.save_labels("plain", native, source="import")
    sources = dict(case_sources(tmp_path / "ws", tmp_path / "snap"))
    assert set(sources) == {"labelled", "unlabelled", "plain"}

    lab = sources["labelled"]()
    np.testing.assert_allclose(lab.scale, (1.5, 1.5, 1.5), atol=1e-6)  # the working grid
    assert lab.name == "labelled" and lab.labels is not None
    assert lab.labels.shape == lab.shape != native.shape
    lesion_ml = (native > 0).sum() * 8 / 1000
    assert abs((lab.labels == 2).sum() * 1.5**3 / 1000 - lesion_ml) < 0.25 * lesion_ml
    brain = lab.images[lab.modalities.index("t1")] > 0
    assert brain.any() and not lab.images[:, ~brain].any()  # zero outside the brain
    assert len(calls) == 1

    unl = sources["unlabelled"]()
    assert unl.labels is None and unl.shape == lab.shape
    assert not unl.images[:, unl.images[unl.modalities.index("t1")] <= 0].any()

    plain = sources["plain"]()  # the raw series: the scalp is still there
    np.testing.assert_allclose(plain.scale, FINE, atol=1e-6)
    assert plain.labels is not None and plain.labels.shape == native.shape


def test_exporting_a_clinical_case_says_its_images_are_raw(tmp_path):
    """Export writes a clinical study as read (io cannot run deepbet): a warning says so."""
    import pytest

    from napari_ssseg.io.dataset_export import export_workspace

    study = make_study(tmp_path / "study")
    with Workspace.create(tmp_path / "ws") as ws:
        ws.add_case(case_id="s1", clinical=OPTIONS, **study)
        o = ws._grid("s1")[1]
        native = o.to_canonical((lesion_mask((30, 32, 32), FINE) * 2).astype(np.uint8))
        ws.save_labels("s1", native, source="import")
        with pytest.warns(UserWarning, match=r"raw clinical studies \(s1\).*not brain-extracted"):
            written = export_workspace(ws, tmp_path / "out", "brats", cases=["s1"])
    assert written
