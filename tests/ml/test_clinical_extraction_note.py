"""``ClinicalCase.extraction_note``: the one sentence the CLI and the Loader share."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from napari_ssseg.ml.clinical import ClinicalCase

DETECTED = {"stripped": False, "reasons": ["bright skull rim"]}


def _clin(report: dict, brain: bool) -> ClinicalCase:
    mask = np.ones((2, 2, 2), bool) if brain else None
    return ClinicalCase(case=SimpleNamespace(name="raw"), grid=None, brain=mask, report=report)


def test_no_note_for_a_skull_stripped_study() -> None:
    assert _clin({"skull_stripped": {"stripped": True}}, brain=False).extraction_note() is None


def test_without_extraction_the_detection_advice_is_given() -> None:
    report = {"skull_stripped": DETECTED, "skull_strip_message": "run brain extraction"}
    assert _clin(report, brain=False).extraction_note() == "run brain extraction"


def test_after_deepbet_it_says_what_was_done_not_what_to_do() -> None:
    report = {
        "skull_stripped": DETECTED,
        "skull_strip_message": "run brain extraction",
        "brain_extraction": {"sequence": "t1gd", "check": {"volume_ml": 1234.4}},
    }
    note = _clin(report, brain=True).extraction_note()
    assert note is not None
    assert "raw does not look skull-stripped (bright skull rim)" in note
    assert "extracted with deepbet on t1gd (1234 ml)" in note
    assert "run brain extraction" not in note


def test_a_corrected_mask_is_named_as_the_users_own() -> None:
    report = {
        "skull_stripped": DETECTED,
        "brain_extraction": {"sequence": "t1", "corrected": True},
    }
    note = _clin(report, brain=True).extraction_note()
    assert note is not None and "the one you corrected and applied before" in note
    assert "deepbet" not in note
