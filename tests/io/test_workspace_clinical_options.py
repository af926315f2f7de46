"""Workspace manifest paths and clinical options (io only: no images are read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_ssseg.errors import InputError
from napari_ssseg.io.workspace import Workspace
from napari_ssseg.io.workspace.records import check_clinical_options


def test_resolve_path_of_manifest_references(tmp_path):
    with Workspace.create(tmp_path / "ws") as ws:
        assert ws.resolve_path(None) is None
        assert ws.resolve_path("") is None
        assert ws.resolve_path("runs/run-001") == ws.root / "runs" / "run-001"
        outside = tmp_path / "elsewhere" / "run"
        assert ws.resolve_path(str(outside)) == outside
        # what the workspace records resolves back to the same place
        assert ws.resolve_path(ws._ref(ws.root / "cases" / "a")) == ws.root / "cases" / "a"
        assert ws.resolve_path(ws._ref(outside)) == outside.absolute()
        assert isinstance(ws.resolve_path("x"), Path)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (None, None),
        ({}, {"brain_extraction": "auto", "register": "auto", "resample": None}),
        ({"resample": "1.5"}, {"brain_extraction": "auto", "register": "auto", "resample": 1.5}),
        (
            {"brain_extraction": "off", "register": "on", "resample": 1},
            {"brain_extraction": "off", "register": "on", "resample": 1.0},
        ),
    ],
)
def test_clinical_options_are_completed(options, expected):
    assert check_clinical_options(options) == expected


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"register": "yes"}, "register='yes' must be one of auto, on, off"),
        ({"resample": 0}, "voxel size in mm > 0"),
        ({"resample": "fine"}, "voxel size in mm > 0"),
        ({"n4": True}, "Unknown clinical option"),
    ],
)
def test_bad_clinical_options_are_named(options, match):
    with pytest.raises(InputError, match=match):
        check_clinical_options(options)
