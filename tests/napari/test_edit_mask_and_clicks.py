"""Edit tools panel: threshold-masked painting and click prompts, driven as a user would.

The panel is opened through the Plugins menu path; brush strokes and clicks are real vispy
mouse events sent to the viewer's canvas (press, moves, release), which napari turns into
its own brush / pan-zoom handling and the viewer's mouse callbacks.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from napari_ssseg._napari.layers import case_to_layer_data
from napari_ssseg.core.provenance import HUMAN, PROVENANCE_KEY

pytestmark = pytest.mark.gui

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
REAL_CASE = "BraTS-GLI-00000-000"
#: Slice (data z of the tiny case) on which the strokes are drawn.
Z = 16
#: Session set-up on the tiny case takes well under a second; generous for slow CI.
READY_MS = 120_000


# --------------------------------------------------------------------------- helpers
def _open(viewer, case, labels=None):
    from napari.layers import Layer

    empty = np.zeros(case.shape, np.uint8) if labels is None else labels
    for data, kwargs, layer_type in case_to_layer_data(case, labels=empty):
        viewer.add_layer(Layer.create(data, kwargs, layer_type))
    _, widget = viewer.window.add_plugin_dock_widget("napari-ssseg", "Edit tools")
    return widget, viewer.layers[f"{case.name} labels"]


@pytest.fixture
def panel(make_napari_viewer, tiny_case):
    viewer = make_napari_viewer()
    widget, layer = _open(viewer, tiny_case)
    return viewer, widget, layer


def _world(layer, zyx):
    """World coordinates of the labels voxel ``zyx``."""
    return np.asarray(layer.data_to_world(np.asarray(zyx, float)), float)


def _canvas_pos(viewer, world):
    """Canvas pixel (x, y) under the world point ``world`` (2D view of dims 1, 2)."""
    canvas = viewer.window._qt_viewer.canvas
    view = canvas.view
    transform = view.transform * view.scene.transform
    shown = [world[d] for d in viewer.dims.displayed]
    # a real mouse reports whole pixels
    xy = np.rint(np.asarray(transform.map([shown[1], shown[0]]), float)[:2])
    back = canvas._map_canvas2world(list(xy), view)  # what napari will compute
    size = np.abs(np.asarray(transform.imap([1.0, 1.0])) - np.asarray(transform.imap([0.0, 0.0])))
    np.testing.assert_allclose(
        [back[d] for d in viewer.dims.displayed], shown, atol=float(np.max(size[:2]))
    )
    return (int(xy[0]), int(xy[1]))


def _show_slice(viewer, layer, z):
    viewer.dims.ndisplay = 2
    viewer.dims.set_point(0, float(_world(layer, (z, 0, 0))[0]))


def _mouse(viewer, kind, pos, press_pos=None, modifiers=()):
    """One vispy mouse event on the canvas (what Qt delivers for a real mouse)."""
    from vispy.app.canvas import MouseEvent

    events = viewer.window._qt_viewer.canvas._scene_canvas.events
    kwargs = {"pos": pos, "modifiers": modifiers, "button": 1}
    if press_pos is not None:
        kwargs["press_event"] = MouseEvent(
            pos=press_pos, type="mouse_press", button=1, modifiers=modifiers
        )
    getattr(events, kind)(**kwargs)
    if kind == "mouse_move":  # napari throttles canvas mouse moves (5 ms): let each through
        _pause(15)


def _pause(ms):
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.002)


def _stroke(viewer, layer, voxels, modifiers=()):
    """Press at the first voxel, drag through the others, release at the last."""
    pos = [_canvas_pos(viewer, _world(layer, v)) for v in voxels]
    _mouse(viewer, "mouse_press", pos[0], modifiers=modifiers)
    for p in pos[1:]:
        _mouse(viewer, "mouse_move", p, press_pos=pos[0], modifiers=modifiers)
    _mouse(viewer, "mouse_release", pos[-1], modifiers=modifiers)


def _ramp_image(viewer, layer, name="ramp x", scale=None, translate=None, shape=None):
    """An image layer whose value is the world x coordinate of each voxel centre."""
    scale = np.asarray(layer.scale if scale is None else scale, float)
    translate = np.asarray(layer.translate if translate is None else translate, float)
    shape = tuple(layer.data.shape if shape is None else shape)
    x = translate[2] + scale[2] * np.arange(shape[2], dtype=np.float32)
    data = np.broadcast_to(x, shape).astype(np.float32)
    return viewer.add_image(data, name=name, scale=scale, translate=translate)


def _mask(widget, image, low, high):
    widget.mask_image.value = image
    widget.mask_low.value = low
    widget.mask_high.value = high
    widget.mask_on.value = True


def _paint_mode(viewer, layer, label, brush=3):
    viewer.layers.selection.active = layer
    layer.selected_label = label
    layer.n_edit_dimensions = 2
    layer.brush_size = brush
    layer.mode = "paint"


def _human(layer):
    return layer.metadata[PROVENANCE_KEY] == HUMAN


def _dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))


# --------------------------------------------------------------------------- masked painting
def test_masked_brush_stroke_undo_redo_and_provenance(panel):
    viewer, widget, layer = panel
    image = _ramp_image(viewer, layer)
    # world x of labels voxel i is -39 + 2 i: the window [-15, 1] is x indices 12..20
    _mask(widget, image, -15.0, 1.0)
    inside = (-39.0 + 2.0 * np.arange(40) >= -15.0) & (-39.0 + 2.0 * np.arange(40) <= 1.0)
    # an existing NCR voxel outside the window on the stroke's path keeps its label
    layer.data_setitem(tuple(np.array([v]) for v in (Z, 20, 6)), 1)
    before = layer.data.copy()
    prov_before = layer.metadata[PROVENANCE_KEY].copy()
    _show_slice(viewer, layer, Z)
    _paint_mode(viewer, layer, 2)
    _stroke(viewer, layer, [(Z, 20, x) for x in range(4, 34, 2)])

    changed = layer.data != before
    xs = np.nonzero(changed)[2]
    assert changed.sum() == 9 * 3, "the window (x 12..20) under the brush (3 rows)"
    assert inside[xs].all(), f"painted outside the window at x = {sorted(set(xs[~inside[xs]]))}"
    assert set(np.nonzero(inside)[0]) <= set(xs), "the window was not fully painted"
    assert (layer.data[changed] == 2).all()
    assert layer.data[Z, 20, 6] == 1
    np.testing.assert_array_equal(_human(layer), changed | (prov_before == HUMAN))
    assert "outside the window" in widget.status.value

    layer.undo()  # ONE undo removes the whole masked stroke, and its provenance
    np.testing.assert_array_equal(layer.data, before)
    np.testing.assert_array_equal(layer.metadata[PROVENANCE_KEY], prov_before)
    layer.redo()
    np.testing.assert_array_equal(layer.data != before, changed)
    np.testing.assert_array_equal(_human(layer), changed | (prov_before == HUMAN))
    layer.undo()
    layer.undo()  # the NCR voxel's own step
    assert not layer.data.any()


def test_unmasked_stroke_paints_outside(panel):
    """The same stroke with the mask off paints outside the window (the control)."""
    viewer, widget, layer = panel
    image = _ramp_image(viewer, layer)
    _mask(widget, image, -15.0, 1.0)
    widget.mask_on.value = False
    _show_slice(viewer, layer, Z)
    _paint_mode(viewer, layer, 2)
    _stroke(viewer, layer, [(Z, 20, x) for x in range(4, 34, 2)])
    xs = np.nonzero(layer.data)[2]
    assert xs.min() < 12 and xs.max() > 20


def test_erasing_is_not_masked(panel):
    viewer, widget, layer = panel
    image = _ramp_image(viewer, layer)
    block = np.zeros(layer.data.shape, bool)
    block[Z, 15:26, 2:38] = True
    layer.data_setitem(np.nonzero(block), 2)
    _mask(widget, image, -15.0, 1.0)
    _show_slice(viewer, layer, Z)
    _paint_mode(viewer, layer, 2)
    layer.mode = "erase"
    _stroke(viewer, layer, [(Z, 20, x) for x in range(4, 36, 2)])
    erased = block & (layer.data == 0)
    xs = np.nonzero(erased)[2]
    assert xs.min() < 12 and xs.max() > 20, "erasing was restricted to the window"
    assert _human(layer)[erased].all()
    layer.undo()
    assert (layer.data[block] == 2).all()


def test_masked_fill_bucket(panel):
    viewer, widget, layer = panel
    image = _ramp_image(viewer, layer)
    _mask(widget, image, -15.0, 1.0)
    viewer.layers.selection.active = layer
    layer.n_edit_dimensions = 2
    layer.fill((Z, 20, 30), 3)  # what the fill bucket's click calls: the whole slice
    filled = layer.data == 3
    assert filled[Z].sum() == 40 * 9 and filled.sum() == 40 * 9
    assert (np.nonzero(filled)[2] >= 12).all() and (np.nonzero(filled)[2] <= 20).all()
    layer.undo()
    assert not layer.data.any()


def test_mask_image_on_another_grid(panel):
    """A finer image (1 mm, half-voxel shift) covering part of the labels grid."""
    viewer, widget, layer = panel
    lt = np.asarray(layer.translate, float)
    # image voxel j has world x = lt_x - 1 + j; it covers labels x indices 0..29 (world <= 19)
    image = _ramp_image(
        viewer, layer, scale=(1.0, 1.0, 1.0), translate=lt - 1.0, shape=(66, 82, 60)
    )
    from napari_ssseg._napari.widgets.edit import voxel_map

    mat, off = voxel_map(layer, image)
    np.testing.assert_allclose(mat, 2.0 * np.eye(3))
    np.testing.assert_allclose(off, [1.0, 1.0, 1.0])
    # window [-20, 100]: labels x indices 10..29 (30..39 lie beyond the image's extent)
    _mask(widget, image, -20.0, 100.0)
    _show_slice(viewer, layer, Z)
    _paint_mode(viewer, layer, 2)
    _stroke(viewer, layer, [(Z, 20, x) for x in range(2, 39, 2)])
    xs = np.nonzero(layer.data)[2]
    assert xs.min() == 10 and xs.max() == 29, (xs.min(), xs.max())


def test_default_mask_image_is_the_case_flair(panel):
    viewer, widget, layer = panel
    assert widget.mask_image.value is viewer.layers["tiny FLAIR"]
    assert widget.mask_low.value < widget.mask_high.value
    assert "percentile" in widget.mask_range.value and "e+" not in widget.mask_range.value


# --------------------------------------------------------------------------- click prompts
def _ready(qtbot, widget):
    qtbot.waitUntil(lambda: widget.click_session() is not None, timeout=READY_MS)


def _click_at(viewer, layer, zyx, modifiers=()):
    _show_slice(viewer, layer, zyx[0])
    pos = _canvas_pos(viewer, _world(layer, zyx))
    _mouse(viewer, "mouse_press", pos, modifiers=modifiers)
    _mouse(viewer, "mouse_release", pos, modifiers=modifiers)


def _oedema_voxel(labels):
    """A voxel deep inside the phantom's oedema (largest distance to its border)."""
    dist = ndimage.distance_transform_edt(labels == 2)
    return tuple(int(v) for v in np.unravel_index(np.argmax(dist), dist.shape))


def test_click_adds_and_ctrl_click_removes(panel, qtbot, tiny_phantom):
    viewer, widget, layer = panel
    widget.klass.value = "ED (2)"
    widget.click_on.value = True
    assert layer.mode == "pan_zoom"
    _ready(qtbot, widget)
    seed = _oedema_voxel(tiny_phantom.labels)
    _click_at(viewer, layer, seed)
    added = layer.data == 2
    assert added[seed] and added.sum() > 20
    assert not (layer.data[~added]).any()
    n_comp = ndimage.label(added, structure=np.ones((3, 3, 3)))[1]
    assert n_comp == 1
    assert _human(layer)[added].all() and not _human(layer)[~added].any()
    wt = tiny_phantom.labels > 0
    dice = _dice(added, wt)
    inside = np.count_nonzero(added & wt) / np.count_nonzero(added)
    print(
        f"tiny phantom: click on ED -> {int(added.sum())} voxels, {inside:.2f} inside WT, "
        f"Dice vs WT {dice:.3f}"
    )
    assert inside > 0.8 and dice > 0.2
    layer.undo()  # one step
    assert not layer.data.any()
    layer.redo()
    np.testing.assert_array_equal(layer.data == 2, added)

    _click_at(viewer, layer, seed, modifiers=("Control",))
    assert not layer.data.any(), "Ctrl+click did not remove the region"
    layer.undo()  # one step brings it back
    np.testing.assert_array_equal(layer.data == 2, added)


def test_click_before_ready_is_applied_when_ready(panel, qtbot, tiny_phantom):
    viewer, widget, layer = panel
    widget.klass.value = "ED (2)"
    seed = _oedema_voxel(tiny_phantom.labels)
    _show_slice(viewer, layer, seed[0])
    viewer.layers.selection.active = layer
    layer.mode = "pan_zoom"
    widget.click_on.value = True
    assert widget.click_session() is None and widget.click_task.running
    _click_at(viewer, layer, seed)
    assert not layer.data.any() and "when they are ready" in widget.status.value
    _ready(qtbot, widget)
    qtbot.waitUntil(lambda: bool(layer.data[seed] == 2), timeout=10_000)
    assert (layer.data == 2).sum() > 20
    layer.undo()
    assert not layer.data.any()


def test_drag_is_not_a_click(panel, qtbot, tiny_phantom):
    viewer, widget, layer = panel
    widget.click_on.value = True
    _ready(qtbot, widget)
    seed = _oedema_voxel(tiny_phantom.labels)
    _show_slice(viewer, layer, seed[0])
    start = _canvas_pos(viewer, _world(layer, seed))
    end = (start[0] + 30, start[1] + 20)
    _mouse(viewer, "mouse_press", start)
    _mouse(viewer, "mouse_move", (start[0] + 15, start[1]), press_pos=start)
    _mouse(viewer, "mouse_move", end, press_pos=start)
    _mouse(viewer, "mouse_release", end)
    assert not layer.data.any(), "a drag was taken for a click"
    # a drag that comes back to its start is a drag too (it moved on the way)
    _mouse(viewer, "mouse_press", start)
    _mouse(viewer, "mouse_move", end, press_pos=start)
    _mouse(viewer, "mouse_move", start, press_pos=start)
    _mouse(viewer, "mouse_release", start)
    assert not layer.data.any(), "a drag back to the start was taken for a click"
    _click_at(viewer, layer, seed)  # the control: a click at the same place adds
    assert layer.data[seed] == 2


def test_click_prompts_off_and_paint_mode_leave_clicks_alone(panel, qtbot, tiny_phantom):
    viewer, widget, layer = panel
    widget.click_on.value = True
    _ready(qtbot, widget)
    seed = _oedema_voxel(tiny_phantom.labels)
    widget.click_on.value = False
    _click_at(viewer, layer, seed)
    assert not layer.data.any()
    widget.click_on.value = True
    layer.mode = "paint"  # napari's brush keeps the mouse: a click paints a dab only
    layer.selected_label = 1
    layer.brush_size = 1
    _click_at(viewer, layer, seed)
    assert not (layer.data == 2).any() and (layer.data == 1).sum() == 1
    layer.undo()
    layer.mode = "pan_zoom"
    _click_at(viewer, layer, seed)
    assert layer.data[seed] == 2


@pytest.mark.skipif(not (REAL / REAL_CASE).is_dir(), reason="../shared/data/real is absent")
def test_click_on_real_glioma_oedema(make_napari_viewer, qtbot):
    """One click in the oedema of a real BraTS glioma; Dice of the region vs the GT WT."""
    from napari_ssseg.io.readers import load_case

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case = load_case(REAL / REAL_CASE)
    gt = np.asarray(case.labels)
    viewer = make_napari_viewer()
    widget, layer = _open(viewer, case)
    widget.klass.value = "ED (2)"
    t0 = time.perf_counter()
    widget.click_on.value = True
    _ready(qtbot, widget)
    t_ready = time.perf_counter() - t0
    seed = _oedema_voxel(gt)
    t1 = time.perf_counter()
    _click_at(viewer, layer, seed)
    t_click = time.perf_counter() - t1
    added = layer.data == 2
    wt = gt > 0
    dice = _dice(added, wt)
    inside = np.count_nonzero(added & wt) / max(1, np.count_nonzero(added))
    print(
        f"{REAL_CASE}: session {t_ready:.1f} s, click {t_click:.2f} s, seed {seed}, "
        f"{int(added.sum())} voxels ({inside:.2f} inside GT WT, WT has {int(wt.sum())}), "
        f"Dice vs WT {dice:.3f}"
    )
    assert added[seed]
    assert inside > 0.5
    assert dice > 0.1
    layer.undo()
    assert not layer.data.any()
