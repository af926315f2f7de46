"""Radiological 2D views and orientation letters, checked on the rendered canvas of a real case.

The letters come from the case's direction cosines (:func:`axis_letters`); on the canvas, a
label blob placed at the superior end of the brain must be drawn at the top of a sagittal
view, one at the anterior end on the left, and the letters at the edges must say so.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_ssseg._napari.orientation import (
    LETTER_COLOR,
    OVERLAY_KEYS,
    axis_letters,
    radiological_orientation2d,
    view_letters,
)
from napari_ssseg.core.case import CLASS_COLORS, Geometry

pytestmark = pytest.mark.gui

_REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
_CASE = _REAL / "BraTS-GLI-00000-000"


def _fake_case(direction):
    geometry = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.ravel(direction)))
    return SimpleNamespace(canonical_geometry=geometry)


def test_letters_follow_the_direction_cosines():
    assert axis_letters(_fake_case(np.eye(3))) == [("I", "S"), ("A", "P"), ("R", "L")]
    # index axis i (array axis 2) pointing to world -x (right), k (axis 0) slightly oblique
    d = np.array([[-1.0, 0, 0], [0, 1, 0.1], [0, 0, 0.995]])
    assert axis_letters(_fake_case(d)) == [("I", "S"), ("A", "P"), ("L", "R")]


@pytest.mark.parametrize("geometry", ["lps", "ras", "aniso", "las_aniso"])
def test_cases_read_from_any_source_orientation_get_canonical_letters(make_geo_case, geometry):
    """Whatever the file's axis directions (RAS, LAS, LPS), the canonical arrays run I->S,
    A->P, R->L, and the letters derived from the canonical direction cosines say so."""
    case = make_geo_case(geometry)
    assert axis_letters(case) == [("I", "S"), ("A", "P"), ("R", "L")]


def test_radiological_orientation_of_each_view():
    letters = [("I", "S"), ("A", "P"), ("R", "L")]
    cases = {
        (1, 2): ("down", "right", {"top": "A", "bottom": "P", "left": "R", "right": "L"}),
        (0, 1): ("up", "right", {"top": "S", "bottom": "I", "left": "A", "right": "P"}),
        (0, 2): ("up", "right", {"top": "S", "bottom": "I", "left": "R", "right": "L"}),
    }
    for displayed, (vertical, horizontal, shown) in cases.items():
        assert radiological_orientation2d(letters, displayed) == (vertical, horizontal)
        assert view_letters(letters, displayed, (vertical, horizontal)) == shown


def _letters(viewer):
    overlays = viewer.canvas.overlays
    return {
        edge: overlays[key].text if overlays[key].visible else None
        for edge, key in OVERLAY_KEYS.items()
    }


def _blob_centre(img, rgb):
    match = np.all(np.abs(img[..., :3].astype(int) - np.asarray(rgb)) < 40, axis=-1)
    rows, cols = np.nonzero(match)
    assert rows.size > 20, f"blob of colour {rgb} not found on the canvas"
    return rows.mean() / img.shape[0], cols.mean() / img.shape[1]


def test_sagittal_view_is_upright_with_letters_on_a_real_case(make_napari_viewer, qtbot):
    if not _CASE.is_dir():
        pytest.skip(f"real MRI folder {_CASE} not present")
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-ssseg", "Loader")
    widget.folder.value = _CASE
    qtbot.mouseClick(widget.load_button.native, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.task is not None and not widget.task.running, timeout=120_000)
    case = widget.last_case
    labels = next(x for x in viewer.layers if x.metadata.get("ssseg_role") == "labels")
    assert _letters(viewer) == {"top": "A", "bottom": "P", "left": "R", "right": "L"}  # axial

    # markers from the brain itself: its superior, inferior and anterior ends on one slice
    brain = np.any(case.images != 0, axis=0)
    x = int(np.round(np.nonzero(brain.any(axis=(0, 1)))[0].mean()))
    zs, ys = np.nonzero(brain[:, :, x])
    z_hi, z_lo, y_lo = zs.max(), zs.min(), ys.min()
    marks = np.zeros(case.shape, np.uint8)
    yc = int(np.median(ys[zs == z_hi]))
    marks[z_hi - 12 : z_hi + 1, yc - 6 : yc + 7, x - 2 : x + 3] = 3  # superior: ET yellow
    yc = int(np.median(ys[zs == z_lo]))
    marks[z_lo : z_lo + 13, yc - 6 : yc + 7, x - 2 : x + 3] = 1  # inferior: NCR red
    zc = int(np.median(zs[ys == y_lo]))
    marks[zc - 6 : zc + 7, y_lo : y_lo + 13, x - 2 : x + 3] = 2  # anterior: ED green
    labels.data = marks
    labels.opacity = 1.0
    for layer in viewer.layers:
        if layer is not labels:
            layer.visible = False

    viewer.dims.order = (2, 0, 1)  # sagittal: displayed axes z (vertical), y (horizontal)
    viewer.dims.set_point(2, case.translate[2] + x * case.scale[2])
    viewer.reset_view()
    assert _letters(viewer) == {"top": "S", "bottom": "I", "left": "A", "right": "P"}
    img = viewer.screenshot(canvas_only=True, flash=False)
    rgb = {k: tuple(int(255 * c) for c in CLASS_COLORS[k][:3]) for k in (1, 2, 3)}
    sup_row, _ = _blob_centre(img, rgb[3])
    inf_row, _ = _blob_centre(img, rgb[1])
    _, ant_col = _blob_centre(img, rgb[2])
    assert sup_row < 0.4 < 0.6 < inf_row  # superior up, inferior down
    assert ant_col < 0.4  # anterior on the left
    # the letters are drawn at their edges (text pixels of the letter colour there)
    letter = tuple(int(LETTER_COLOR[i : i + 2], 16) for i in (1, 3, 5))
    text = np.all(np.abs(img[..., :3].astype(int) - np.asarray(letter)) < 60, axis=-1)
    h, w = text.shape
    regions = {
        "top": text[: h // 8, w // 3 : 2 * w // 3],
        "bottom": text[-h // 8 :, w // 3 : 2 * w // 3],
        "left": text[h // 3 : 2 * h // 3, : w // 8],
        "right": text[h // 3 : 2 * h // 3, -w // 8 :],
    }
    assert all(region.sum() > 5 for region in regions.values()), {
        k: int(v.sum()) for k, v in regions.items()
    }
    assert text[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].sum() == 0  # none over the brain

    viewer.dims.order = (1, 0, 2)  # coronal
    assert _letters(viewer) == {"top": "S", "bottom": "I", "left": "R", "right": "L"}
    viewer.dims.order = (0, 1, 2)  # back to axial: anterior up again
    assert _letters(viewer) == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    viewer.dims.ndisplay = 3
    assert set(_letters(viewer).values()) == {None}  # no letters in 3D
