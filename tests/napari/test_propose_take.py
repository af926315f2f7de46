"""Propose panel, opened from the Plugins menu: take the proposal into the labels layer as a
user would (merge, hand paint kept, one undo step that restores labels and provenance), a new
labels layer on the images' exact geometry, and the missing-modality note shown to the user."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from qtpy.QtCore import Qt

pytest.importorskip("torch")
pytest.importorskip("monai")

from tiny_checkpoints import make_tiny_checkpoint as make_checkpoint  # noqa: E402

from napari_ssseg._napari.layers import case_of_layer, case_to_layer_data  # noqa: E402
from napari_ssseg.core.provenance import HUMAN, MODEL, PROVENANCE_KEY, UNTOUCHED  # noqa: E402

pytestmark = pytest.mark.gui

#: A tiny UNet (windows must be multiples of 4), random weights.


def _add_case(viewer, case, *, labels=True):
    from napari.layers import Layer

    for data, kwargs, layer_type in case_to_layer_data(case):
        if layer_type == "labels" and not labels:
            continue
        viewer.add_layer(Layer.create(data, kwargs, layer_type))


def _open_propose(viewer, checkpoint):
    _, widget = viewer.window.add_plugin_dock_widget("napari-ssseg", "Propose")
    widget.model_source.value = "checkpoint file (.pt)"
    widget.checkpoint_file.value = checkpoint
    widget.device.value = "cpu"
    return widget


def _click(qtbot, button):
    qtbot.mouseClick(button.native, Qt.MouseButton.LeftButton)


def _propose(qtbot, widget):
    _click(qtbot, widget.propose_button)
    assert widget.task is not None
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)


@pytest.fixture
def errors(monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr("napari_ssseg._napari.widgets._common.show_error", shown.append)
    return shown


def test_take_proposal_merges_keeps_hand_paint_and_undoes_in_one_step(
    make_napari_viewer, qtbot, tiny_case, tmp_path, errors
):
    viewer = make_napari_viewer()
    widget = _open_propose(viewer, make_checkpoint(tmp_path / "tiny.pt"))
    _add_case(viewer, tiny_case)  # loaded after the panel was opened, as with the Loader
    labels = viewer.layers["tiny labels"]
    _propose(qtbot, widget)
    assert not errors
    proposal = viewer.layers["tiny proposal"].data.copy()
    assert (proposal == 0).any() and (proposal > 0).any()  # a merge has something to keep
    # the user paints class 1 by hand where the proposal says another tumour class
    z, y, x = np.argwhere((proposal > 1) & (labels.data != 1))[len(proposal) // 2]
    labels.selected_label = 1
    labels.brush_size = 3
    labels.paint((z, y, x), 1)
    hand = labels.metadata[PROVENANCE_KEY] == HUMAN
    assert hand.any() and (labels.data[hand] == 1).all()
    assert (proposal[hand] != 1).any(), "the proposal must disagree with the hand paint"
    before = labels.data.copy()
    prov_before = labels.metadata[PROVENANCE_KEY].copy()
    n_history = len(labels._undo_history)

    _click(qtbot, widget.take_button)

    assert not errors
    after = labels.data
    assert (after[hand] == 1).all(), "hand-painted voxels were overwritten"
    free = ~hand
    np.testing.assert_array_equal(after[free & (proposal > 0)], proposal[free & (proposal > 0)])
    np.testing.assert_array_equal(after[proposal == 0], before[proposal == 0])  # merge kept
    prov = labels.metadata[PROVENANCE_KEY]
    changed = after != before
    assert changed.any() and (prov[changed] == MODEL).all()
    assert (prov[hand] == HUMAN).all() and (prov[~changed & ~hand] == UNTOUCHED).all()
    assert len(labels._undo_history) == n_history + 1, "take must be ONE undo step"
    assert not viewer.layers["tiny proposal"].visible
    assert viewer.layers.selection.active is labels
    assert widget.status.value.startswith("took the proposal")
    taken = after.copy()
    # undo restores labels and provenance; redo re-applies both
    labels.undo()
    np.testing.assert_array_equal(labels.data, before)
    np.testing.assert_array_equal(labels.metadata[PROVENANCE_KEY], prov_before)
    labels.redo()
    np.testing.assert_array_equal(labels.data, taken)
    assert (labels.metadata[PROVENANCE_KEY][changed] == MODEL).all()
    # replace, hand paint unlocked: the proposal everywhere
    labels.undo()
    widget.take_mode.value = "replace"
    widget.keep_human.value = False
    widget.take_proposal()
    np.testing.assert_array_equal(labels.data, proposal)


def test_take_creates_labels_on_the_images_geometry(
    make_napari_viewer, qtbot, make_geo_case, tmp_path, errors
):
    case = make_geo_case("las_aniso", name="geo")
    viewer = make_napari_viewer()
    widget = _open_propose(viewer, make_checkpoint(tmp_path / "tiny.pt"))
    _add_case(viewer, case, labels=False)
    image = viewer.layers["geo FLAIR"]
    rot = np.array([[1.0, 0, 0, 0], [0, 0.8, -0.6, 0], [0, 0.6, 0.8, 0], [0, 0, 0, 1]])
    for layer in viewer.layers:  # images shown through an extra (oblique) transform
        layer.affine = rot
    _propose(qtbot, widget)
    assert not errors
    _click(qtbot, widget.take_button)
    labels = viewer.layers["geo labels"]
    assert case_of_layer(labels) is case and labels.metadata["ssseg_role"] == "labels"
    for attr in ("scale", "translate", "rotate", "shear"):
        np.testing.assert_allclose(getattr(labels, attr), getattr(image, attr), atol=1e-9)
    np.testing.assert_allclose(labels.affine.affine_matrix, image.affine.affine_matrix)
    np.testing.assert_allclose(labels.affine.affine_matrix, rot)
    proposal = viewer.layers["geo proposal"]
    np.testing.assert_allclose(proposal.affine.affine_matrix, rot)
    np.testing.assert_array_equal(labels.data, proposal.data)
    assert (labels.metadata[PROVENANCE_KEY][labels.data > 0] == MODEL).all()
    labels.undo()
    assert not labels.data.any() and not labels.metadata[PROVENANCE_KEY].any()


def test_take_without_proposal_says_so(make_napari_viewer, tiny_case, tmp_path, errors):
    viewer = make_napari_viewer()
    widget = _open_propose(viewer, make_checkpoint(tmp_path / "tiny.pt"))
    _add_case(viewer, tiny_case)
    assert widget.take_proposal() is None
    assert errors and "No proposal for tiny" in errors[-1]


def test_missing_modality_note_reaches_the_user(make_napari_viewer, qtbot, tiny_case, tmp_path):
    """A model trained with modality dropout proposes a case without T1Gd; the engine's note
    (inputs set to zero, weaker core) is shown as a napari notification."""
    from napari.utils.notifications import notification_manager

    keep = [i for i, m in enumerate(tiny_case.modalities) if m != "t1ce"]
    case = dataclasses.replace(
        tiny_case,
        images=tiny_case.images[keep],
        modalities=tuple(tiny_case.modalities[i] for i in keep),
        name="no_t1ce",
    )
    viewer = make_napari_viewer()
    ckpt = make_checkpoint(tmp_path / "dropout.pt", provenance={"modality_dropout": 0.3})
    widget = _open_propose(viewer, ckpt)
    _add_case(viewer, case)
    messages: list[str] = []
    notification_manager.notification_ready.connect(lambda n: messages.append(str(n.message)))
    _propose(qtbot, widget)
    assert "no_t1ce proposal" in [layer.name for layer in viewer.layers], widget.status.value
    assert widget.last_result["info"]["notes"], "the engine gave no note"
    note = widget.last_result["info"]["notes"][0]
    assert "t1ce" in note and "zero" in note
    assert note in messages, f"the note was not shown; notifications: {messages}"


def test_refine_accept_keeps_hand_paint_and_undo_restores_provenance(
    make_napari_viewer, qtbot, tiny_case, errors, accept_refine
):
    """Refine's Accept goes through the provenance tracker: hand paint kept, one undo step
    restores labels *and* provenance, redo re-applies both."""
    from napari_ssseg.core.degrade import degrade
    from napari_ssseg.core.provenance import SUPERPIXEL

    viewer = make_napari_viewer()
    _, refine = viewer.window.add_plugin_dock_widget("napari-ssseg", "Refine")
    brain = np.any(tiny_case.images != 0, axis=0)
    rough = degrade(
        tiny_case.labels, "undersegmented_oedema", brain=brain, spacing=tiny_case.scale, seed=3
    )
    _add_case(viewer, dataclasses.replace(tiny_case, labels=rough))
    labels = viewer.layers["tiny labels"]
    assert refine.labels_layer.value is labels
    # a small blob painted by hand in healthy brain, far from the tumour
    far = np.argwhere(brain & (tiny_case.labels == 0))
    z, y, x = far[np.argmax(np.linalg.norm(far - np.argwhere(rough > 0).mean(0), axis=1))]
    labels.selected_label = 2
    labels.brush_size = 2
    labels.paint((z, y, x), 2)
    hand = labels.metadata[PROVENANCE_KEY] == HUMAN
    assert hand.any()
    refine.advanced.value = True  # sim0 = 0 lies outside the slider's default range
    refine.sim0.value = 0.0
    _click(qtbot, refine.compute_button)
    qtbot.waitUntil(lambda: refine.setup is not None and not refine.task.running, timeout=60_000)
    before, prov_before = labels.data.copy(), labels.metadata[PROVENANCE_KEY].copy()
    n_history = len(labels._undo_history)
    changed = accept_refine(refine)
    assert not errors and changed is not None and changed.any()
    assert (labels.data[hand] == 2).all() and (labels.metadata[PROVENANCE_KEY][hand] == HUMAN).all()
    assert (labels.metadata[PROVENANCE_KEY][changed] == SUPERPIXEL).all()
    assert len(labels._undo_history) == n_history + 1
    after, prov_after = labels.data.copy(), labels.metadata[PROVENANCE_KEY].copy()
    labels.undo()
    np.testing.assert_array_equal(labels.data, before)
    np.testing.assert_array_equal(labels.metadata[PROVENANCE_KEY], prov_before)
    assert not (labels.metadata[PROVENANCE_KEY] == SUPERPIXEL).any()
    labels.redo()
    np.testing.assert_array_equal(labels.data, after)
    np.testing.assert_array_equal(labels.metadata[PROVENANCE_KEY], prov_after)
    # unticked, the refinement may overwrite the hand paint (it drops the isolated blob)
    labels.undo()
    refine.keep_human.value = False
    accept_refine(refine)
    assert not (labels.data[hand] == 2).all(), "the test blob must be one Refine would change"


def test_rerun_updates_the_proposal_as_one_undo_step(
    make_napari_viewer, qtbot, tiny_case, tmp_path, errors
):
    viewer = make_napari_viewer()
    widget = _open_propose(viewer, make_checkpoint(tmp_path / "a.pt"))
    _add_case(viewer, tiny_case)
    _propose(qtbot, widget)
    proposal = viewer.layers["tiny proposal"]
    proposal.selected_label = 3
    proposal.paint((16, 20, 20), 3)  # a hand correction on the proposal layer
    first, prov_first = proposal.data.copy(), proposal.metadata[PROVENANCE_KEY].copy()
    assert (prov_first == HUMAN).any()
    widget.checkpoint_file.value = make_checkpoint(tmp_path / "b.pt", seed=5)
    _propose(qtbot, widget)
    assert viewer.layers["tiny proposal"] is proposal
    assert not np.array_equal(proposal.data, first)
    np.testing.assert_array_equal(proposal.data, widget.last_result["labels"])
    assert (proposal.metadata[PROVENANCE_KEY] == MODEL).all()
    proposal.undo()  # the previous proposal, with its hand correction, comes back
    np.testing.assert_array_equal(proposal.data, first)
    np.testing.assert_array_equal(proposal.metadata[PROVENANCE_KEY], prov_first)


def test_hand_paint_made_before_the_panel_was_opened_is_kept(
    make_napari_viewer, qtbot, tiny_case, tmp_path, errors
):
    """File > Open, paint, *then* open Propose: that paint is the user's too (was overwritten)."""
    from napari_ssseg.ml.inference import predict_case

    checkpoint = make_checkpoint(tmp_path / "tiny.pt")
    proposal = predict_case(tiny_case, str(checkpoint), device="cpu")["labels"]
    viewer = make_napari_viewer()
    _add_case(viewer, tiny_case)  # no plugin panel open: nothing tracks the labels layer yet
    labels = viewer.layers["tiny labels"]
    z, y, x = np.argwhere((proposal > 1) & (labels.data != 1))[len(proposal) // 2]
    labels.selected_label = 1
    labels.brush_size = 3
    labels.paint((z, y, x), 1)
    hand = labels.data != np.asarray(tiny_case.labels)
    assert hand.any() and (proposal[hand] > 1).any()
    widget = _open_propose(viewer, checkpoint)
    assert (labels.metadata[PROVENANCE_KEY][hand] == HUMAN).all()
    _propose(qtbot, widget)
    assert widget.keep_human.value and widget.take_mode.value == "merge"
    _click(qtbot, widget.take_button)
    assert not errors
    assert (labels.data[hand] == 1).all(), "hand paint made before the panel was overwritten"
    assert (labels.metadata[PROVENANCE_KEY][hand] == HUMAN).all()
    taken = (proposal > 0) & ~hand
    assert (labels.data[taken] == proposal[taken]).all()
