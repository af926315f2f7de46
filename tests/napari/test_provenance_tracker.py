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
    layer.paint((1, 1, 1), 1)  # before the tracker exists: napari history only
    track(layer)
    layer.paint((3, 3, 3), 2)
    layer.undo()  # undoes the tracked paint
    assert not _prov(layer).any()
    layer.undo()  # the untracked one: labels revert, provenance untouched
    assert not layer.data.any() and not _prov(layer).any()


def test_track_returns_the_same_tracker():
    layer = _layer()
    assert track(layer) is track(layer)
