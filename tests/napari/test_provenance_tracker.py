"""Provenance follows every paint and napari's undo / redo (ProvenanceTracker)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari.layers import Labels  # noqa: E402

from napari_ssseg._napari.provenance import track  # noqa: E402
from napari_ssseg.core.provenance import (  # noqa: E402
    HUMAN,
    MODEL,
    PROVENANCE_KEY,
    SCRIBBLE,
    UNTOUCHED,
)


def _layer():
    layer = Labels(np.zeros((6, 8, 8), np.uint8))
    track(layer)
    return layer


def _prov(layer):
    return layer.metadata[PROVENANCE_KEY]


def test_hand_paint_is_human_at_once_and_undo_redo_follow():
    layer = _layer()
    layer.selected_label = 2
    layer.brush_size = 1
    layer.paint((2, 3, 3), 2)
    painted = layer.data == 2
    assert painted.any()
    assert (_prov(layer)[painted] == HUMAN).all()
    assert (_prov(layer)[~painted] == UNTOUCHED).all()
    layer.undo()
    assert not layer.data.any()
    assert (_prov(layer) == UNTOUCHED).all()
    layer.redo()
    assert (_prov(layer)[painted] == HUMAN).all()


def test_plugin_write_is_attributed_and_one_undo_step():
    layer = _layer()
    tracker = track(layer)
    idx = np.nonzero(np.ones((2, 2, 2), bool))
    idx = tuple(i + 1 for i in idx)
    with tracker.writing(SCRIBBLE), layer.block_history():
        layer.data_setitem(idx, 3)
    assert (_prov(layer)[idx] == SCRIBBLE).all()
    assert np.count_nonzero(_prov(layer)) == 8
    # hand paint on top, then undo it: the scribble provenance comes back
    layer.paint((1, 1, 1), 1)
    assert _prov(layer)[1, 1, 1] == HUMAN
    layer.undo()
    assert _prov(layer)[1, 1, 1] == SCRIBBLE
    layer.undo()
    assert not _prov(layer).any() and not layer.data.any()


def test_extra_voxels_of_a_write_follow_undo():
    layer = _layer()
    tracker = track(layer)
    also = np.zeros(layer.data.shape, bool)
    also[0] = True
    with tracker.writing(MODEL, also=also), layer.block_history():
        layer.data_setitem((np.array([5]), np.array([5]), np.array([5])), 1)
    assert (_prov(layer)[0] == MODEL).all() and _prov(layer)[5, 5, 5] == MODEL
    layer.undo()
    assert not _prov(layer).any()


def test_edits_before_tracking_do_not_shift_the_pairing():
    layer = Labels(np.zeros((4, 4, 4), np.uint8))
    layer.brush_size = 1
    layer.paint((1, 1, 1), 1)  # before the tracker exists: napari history only
    track(layer)
    first = layer.data == 1
    layer.paint((3, 3, 3), 2)
    layer.undo()  # undoes the tracked paint
    assert (_prov(layer)[first] == HUMAN).all() and np.count_nonzero(_prov(layer)) == first.sum()
    layer.undo()  # the adopted one: labels and provenance revert together
    assert not layer.data.any() and not _prov(layer).any()


def test_edits_before_tracking_are_adopted_as_human_with_undo_and_redo():
    """Paint before any panel is open (nothing tracks yet): still the user's work."""
    layer = Labels(np.zeros((6, 8, 8), np.uint8))
    layer.brush_size = 1
    layer.paint((1, 1, 1), 1)
    layer.paint((4, 6, 6), 2)
    layer.undo()  # the second stroke waits in napari's redo queue
    tracker = track(layer)
    assert tracker.adopted == 2
    one, two = layer.data == 1, np.zeros(layer.data.shape, bool)
    assert one.any() and (_prov(layer)[one] == HUMAN).all()
    assert np.count_nonzero(_prov(layer)) == one.sum()  # the undone stroke is not there
    layer.redo()
    two = layer.data == 2
    assert two.any() and (_prov(layer)[two] == HUMAN).all()
    layer.undo()
    assert not _prov(layer)[two].any() and (_prov(layer)[one] == HUMAN).all()
    layer.undo()
    assert not layer.data.any() and not _prov(layer).any()
    layer.redo()
    assert (_prov(layer)[one] == HUMAN).all() and not _prov(layer)[two].any()
    # a panel's write after adoption keeps its own code and undo step
    with tracker.writing(SCRIBBLE), layer.block_history():
        layer.data_setitem((np.array([5]), np.array([0]), np.array([0])), 3)
    assert _prov(layer)[5, 0, 0] == SCRIBBLE
    layer.undo()
    assert _prov(layer)[5, 0, 0] == UNTOUCHED and (_prov(layer)[one] == HUMAN).all()


def test_a_layer_without_history_adopts_nothing():
    layer = Labels(np.zeros((3, 3, 3), np.uint8))
    tracker = track(layer)
    assert tracker.adopted == 0
    assert not tracker.provenance.any()


def test_track_returns_the_same_tracker():
    layer = _layer()
    assert track(layer) is track(layer)
