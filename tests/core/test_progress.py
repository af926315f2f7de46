"""core.progress: the one progress / cancel protocol's helpers."""

from __future__ import annotations

import pytest

from napari_ssseg.core.progress import Cancelled, check_cancel, report, stage_progress


def test_report_clips_and_ignores_none():
    seen = []
    report(lambda f, m: seen.append((f, m)), 1.7, "x")
    report(None, 0.5, "nothing happens")
    assert seen == [(1.0, "x")]


def test_stage_progress_maps_a_stage_into_its_range():
    seen = []
    stage = stage_progress(lambda f, m: seen.append((round(f, 6), m)), 0.5, 0.75, "WT features")
    stage(0.0, "")
    stage(0.5, "graph")
    stage(2.0, "done")  # clipped to the stage's end, not past it
    assert seen == [
        (0.5, "WT features"),
        (0.625, "WT features: graph"),
        (0.75, "WT features: done"),
    ]
    assert stage_progress(None, 0.0, 1.0, "x") is None


def test_check_cancel():
    check_cancel(None)
    check_cancel(lambda: False)
    with pytest.raises(Cancelled, match="smoothing cancelled"):
        check_cancel(lambda: True, "smoothing")
