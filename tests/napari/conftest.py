"""Fixtures for the napari plugin tests: tiny phantom cases and case folders on disk."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_ssseg.core.phantom import make_phantom  # noqa: E402
from napari_ssseg.io.writers import case_from_arrays, write_case  # noqa: E402

#: Tiny grid (Z, Y, X) used by every GUI test: fast to build, load and render.
TINY_SHAPE = (32, 40, 40)

#: Source-grid variants for geometry tests: name -> (spacing_zyx, origin_xyz, direction).
GEOMETRIES = {
    "lps": ((2.0, 2.0, 2.0), (-39.0, -41.0, -31.0), None),
    "ras": ((2.0, 2.0, 2.0), (40.0, 38.0, -30.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1)),
    "aniso": ((3.0, 0.9, 0.9), (10.5, -20.25, 5.0), None),
    "las_aniso": ((3.0, 0.9, 0.9), (17.0, 2.0, -44.0), (-1, 0, 0, 0, 1, 0, 0, 0, 1)),
}


@pytest.fixture(scope="session")
def tiny_phantom():
    """Phantom on the tiny grid (seed 0), 2 mm isotropic (tests/phantoms.py ``tiny_2mm``)."""
    from phantoms import SPECS, master

    assert SPECS["tiny_2mm"]["shape"] == TINY_SHAPE
    return master("tiny_2mm")


@pytest.fixture
def tiny_case(tiny_phantom):
    """A fresh Case of the tiny phantom (identity LPS grid centred on 0)."""
    return tiny_phantom.to_case(name="tiny")


@pytest.fixture
def make_geo_case(tiny_phantom):
    """Factory: ``make_geo_case(geometry, name="geo")`` -> the tiny phantom on one of the
    :data:`GEOMETRIES` source grids (``"lps"``, ``"ras"``, ``"aniso"``, ``"las_aniso"``)."""

    def make(geometry: str, name: str = "geo"):
        spacing, origin, direction = GEOMETRIES[geometry]
        return case_from_arrays(
            tiny_phantom.images,
            tiny_phantom.modalities,
            spacing_zyx=spacing,
            origin=origin,
            direction=None if direction is None else np.asarray(direction, float),
            labels=tiny_phantom.labels,
            convention="brats2021",
            name=name,
        )

    return make


@pytest.fixture
def case_folder(tmp_path, tiny_case):
    """The tiny phantom written as a BraTS 2021 case folder; returns the folder."""
    return write_case(tiny_case, tmp_path / "data", naming="brats2021", name="Tiny_001")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Retrain tests: 4 phantom case folders at 2 mm, P_000, P_001 labelled, P_002, P_003
    unlabelled (one folder per test module)."""
    import dataclasses

    root = tmp_path_factory.mktemp("retrain") / "data"
    for i in range(4):
        case = make_phantom(shape=TINY_SHAPE, spacing=(2.0, 2.0, 2.0), seed=i).to_case(name=f"P{i}")
        if i >= 2:
            case = dataclasses.replace(case, labels=None)
        write_case(case, root, naming="brats2021", name=f"P_{i:03d}")
    return root


@pytest.fixture
def accept_refine(qtbot):
    """``accept_refine(widget)``: press the Refine panel's Accept (its worker refines the
    whole volume), wait until the result is written, return the voxels it changed (None if
    nothing was written)."""

    def run(widget):
        task = widget.accept()
        if task is None:
            return None
        qtbot.waitUntil(lambda: not task.running, timeout=60_000)
        qtbot.wait(10)  # the GUI-thread callbacks
        return widget.last_accepted

    return run
