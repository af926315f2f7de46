"""Refine panel driven as a user would: pick a degraded pseudo-label, compute superpixels,
move the sliders, accept, undo."""

from __future__ import annotations

import time

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_ssseg._napari.layers import CASE_KEY, case_to_layer_data, handle_of_layer
from napari_ssseg._napari.widgets.refine import (
    REGION_CHOICES,
    SIM0_FULL_RANGE,
    SIM0_RANGE,
    RefineWidget,
)
from napari_ssseg.core.degrade import degrade
from napari_ssseg.core.provenance import PROVENANCE_KEY, SUPERPIXEL, UNTOUCHED
from napari_ssseg.core.refine import DEFAULT_NC
from napari_ssseg.core.refine_preview import MaskCache, preview_box, preview_masks

pytestmark = pytest.mark.gui

BOTH, WT, TC = list(REGION_CHOICES)


@pytest.fixture
def errors(monkeypatch):
    """Messages shown through notify_error (SsegErrors) and notify_info."""
    shown: dict[str, list[str]] = {"error": [], "info": []}
    monkeypatch.setattr(
        "napari_ssseg._napari.widgets._common.show_error", lambda m: shown["error"].append(m)
    )
    monkeypatch.setattr(
        "napari_ssseg._napari.widgets.refine.notify_info", lambda m: shown["info"].append(m)
    )
    return shown


@pytest.fixture
def default_panel(make_napari_viewer, tiny_case):
    """Viewer with the tiny phantom whose labels were under-segmented, and the panel as
    opened (sim0 over SIM0_RANGE, n_c hidden)."""
    viewer = make_napari_viewer()
    brain = np.any(tiny_case.images != 0, axis=0)
    degraded = degrade(
        tiny_case.labels, "undersegmented_oedema", brain=brain, spacing=tiny_case.scale, seed=3
    )
    from napari.layers import Layer

    for data, kwargs, layer_type in case_to_layer_data(tiny_case, labels=degraded):
        viewer.add_layer(Layer.create(data, kwargs, layer_type))
    widget = RefineWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Refine")
    return viewer, widget


@pytest.fixture
def refine_panel(default_panel):
    """:func:`default_panel` with **Advanced** ticked: the tests below drive sim0 over 0-1."""
    viewer, widget = default_panel
    widget.advanced.value = True
    return viewer, widget


def _click(qtbot, button):
    qtbot.mouseClick(button.native, Qt.MouseButton.LeftButton)


def _compute(qtbot, widget, timeout=60_000):
    _click(qtbot, widget.compute_button)
    assert widget.task is not None
    qtbot.waitUntil(lambda: not widget.task.running, timeout=timeout)


def test_choices_list_case_labels_only(refine_panel):
    viewer, widget = refine_panel
    viewer.add_labels(np.zeros((4, 4, 4), np.uint8), name="foreign")
    names = [name for name, _ in widget._labels_choices()]
    assert names == ["tiny labels"]
    assert widget.labels_layer.value is viewer.layers["tiny labels"]


def test_compute_preview_accept_undo(refine_panel, qtbot, errors, accept_refine):
    viewer, widget = refine_panel
    labels = viewer.layers["tiny labels"]
    before = labels.data.copy()
    widget.sim0.value = 1.0  # no growth at first
    _compute(qtbot, widget)
    assert errors["error"] == []
    assert widget.setup is not None and widget.setup.regions == ("wt", "tc")
    assert widget.status.value.startswith("ready")
    # superpixel boundaries shown as outlines
    sp_layer = viewer.layers["tiny superpixels WT"]
    assert sp_layer.contour == 1 and sp_layer.visible and sp_layer.data.max() > 10
    widget.show_boundaries.value = False
    assert not sp_layer.visible
    widget.show_boundaries.value = True
    assert sp_layer.visible
    # at sim0 = 1 nothing grows: the pseudo-label plus the superpixels it covers by half
    preview = viewer.layers["tiny refine preview"]
    assert np.all(preview.data[(before > 0) & widget.setup.brain] > 0)
    grown_before = int(np.count_nonzero(preview.data))
    # move the slider: the region grows, live
    widget.sim0.value = 0.0
    qtbot.waitUntil(lambda: np.count_nonzero(preview.data) > grown_before, timeout=10_000)
    qtbot.waitUntil(lambda: widget.status.value.startswith("preview sim0=0.00"), timeout=10_000)
    preview_wt = preview.data > 0
    gt_wt = widget.setup.case.labels > 0
    dice = lambda a, b: 2 * np.sum(a & b) / (a.sum() + b.sum())  # noqa: E731
    assert dice(preview_wt, gt_wt) > dice(before > 0, gt_wt)
    # accept: one undoable step, provenance recorded
    n_undo = len(labels._undo_history)
    changed = accept_refine(widget)
    assert changed is not None and changed.any()
    after = labels.data.copy()
    assert not np.array_equal(after, before)
    np.testing.assert_array_equal(after != before, changed)
    np.testing.assert_array_equal(after > 0, preview_wt)
    assert len(labels._undo_history) == n_undo + 1
    prov = labels.metadata[PROVENANCE_KEY]
    assert prov.shape == before.shape and prov.dtype == np.uint8
    assert np.all(prov[changed] == SUPERPIXEL)
    assert np.all(prov[~changed & (after == 0)] == UNTOUCHED)
    assert "accepted" in widget.status.value
    labels.undo()
    np.testing.assert_array_equal(labels.data, before)
    labels.redo()
    np.testing.assert_array_equal(labels.data, after)


def test_preview_follows_the_sliders(refine_panel, qtbot):
    viewer, widget = refine_panel
    _compute(qtbot, widget)
    preview = viewer.layers["tiny refine preview"]
    widget.preview_times.clear()
    for value in (0.5, 0.3, 0.2, 0.1, 0.05, 0.0, 0.1):
        widget.sim0.value = value
    widget.n_c.value = 5
    qtbot.waitUntil(
        lambda: widget.status.value.startswith("preview sim0=0.10, n_c=5"), timeout=10_000
    )
    expected, _ = preview_masks(widget.setup, widget._seeds, widget._pseudo, 0.1, 5)
    np.testing.assert_array_equal(preview.data, expected)
    assert widget.preview_times and max(widget.preview_times) < 1.0
    # masks are cached by final superpixel set: fewer entries than slider positions visited
    assert 0 < len(widget._masks) <= 8


@pytest.mark.parametrize("n_c", [30, 3])
def test_cached_preview_equals_full_refinement(refine_panel, qtbot, n_c):
    viewer, widget = refine_panel
    _compute(qtbot, widget)
    setup, seeds, pseudo = widget.setup, widget._seeds, widget._pseudo
    cache = MaskCache()
    for sim0 in (0.9, 0.5, 0.2, 0.0, 0.5, 0.9, 0.0):
        box, sub, _, _ = preview_box(setup, seeds, pseudo, sim0, n_c, cache)
        shown = np.zeros(pseudo.shape, np.uint8)
        shown[box] = sub
        np.testing.assert_array_equal(shown, preview_masks(setup, seeds, pseudo, sim0, n_c)[0])
    assert 0 < len(cache) < 7 * len(setup.regions)  # revisited values came from the cache


def test_async_preview_drops_stale_results(refine_panel, qtbot):
    viewer, widget = refine_panel
    _compute(qtbot, widget)
    preview = viewer.layers["tiny refine preview"]
    widget.last_preview_seconds = 1.0  # pretend previews are slow: debounce + worker
    shown_before = widget.status.value
    for value in (0.9, 0.6, 0.3, 0.0):
        widget.sim0.value = value
    assert widget.status.value == "previewing..." != shown_before
    qtbot.waitUntil(lambda: widget.status.value.startswith("preview sim0=0.00"), timeout=10_000)
    qtbot.wait(300)
    assert widget.status.value.startswith("preview sim0=0.00")
    expected, _ = preview_masks(widget.setup, widget._seeds, widget._pseudo, 0.0, widget.n_c.value)
    np.testing.assert_array_equal(preview.data, expected)


def test_sessions_reused_when_parameters_come_back(refine_panel, qtbot):
    viewer, widget = refine_panel
    _compute(qtbot, widget)
    first = widget.setup.sessions["wt"]
    widget.n_segments.value = 200
    assert widget.setup is None and not widget.sim0.enabled
    _compute(qtbot, widget)
    assert widget.setup.sessions["wt"] is not first
    widget.n_segments.value = 350
    assert widget.setup is not None and widget.setup.sessions["wt"] is first
    assert widget.sim0.enabled


def test_cancel_leaves_no_setup(refine_panel, qtbot, monkeypatch):
    viewer, widget = refine_panel
    import napari_ssseg.core.superpixels as sp
    from napari_ssseg.core.progress import Cancelled

    real = sp.slic_superpixels

    def slow(*args, progress=None, should_stop=None, **kw):
        for i in range(200):
            if should_stop is not None and should_stop():
                raise Cancelled("stopped")
            if progress is not None:
                progress(i / 200, "slow")
            time.sleep(0.02)
        return real(*args, **kw)

    monkeypatch.setattr(sp, "slic_superpixels", slow)
    widget.n_segments.value = 123  # not cached on disk by another test
    _click(qtbot, widget.compute_button)
    qtbot.waitUntil(lambda: "superpixels" in widget.status.value, timeout=5_000)
    _click(qtbot, widget.cancel_button)
    qtbot.waitUntil(lambda: not widget.task.running, timeout=10_000)
    assert widget.setup is None
    assert widget.status.value == "cancelled"
    assert "tiny refine preview" not in [layer.name for layer in viewer.layers]
    assert widget.compute_button.enabled and not widget.cancel_button.enabled


@pytest.mark.parametrize(
    ("make", "region", "expected"),
    [
        (lambda d: np.zeros_like(d), BOTH, "nothing to grow from"),
        (lambda d: np.where(d == 2, 2, 0).astype(np.uint8), TC, "no tumour core"),
        (lambda d: np.where(d > 0, 7, 0).astype(np.uint8), BOTH, "internal labels 0-3"),
    ],
    ids=["empty", "tc-without-core", "foreign-values"],
)
def test_bad_pseudo_label_notifies(refine_panel, qtbot, errors, make, region, expected):
    viewer, widget = refine_panel
    labels = viewer.layers["tiny labels"]
    labels.data = make(labels.data)
    widget.region.value = region
    _click(qtbot, widget.compute_button)
    if widget.task is not None:
        qtbot.waitUntil(lambda: not widget.task.running, timeout=60_000)
    assert errors["error"], "no notification"
    assert expected in errors["error"][-1]
    assert widget.setup is None and not widget.accept_button.enabled


def test_tc_skipped_with_message_when_refining_both(refine_panel, qtbot, errors):
    viewer, widget = refine_panel
    labels = viewer.layers["tiny labels"]
    labels.data = np.where(labels.data > 0, 2, 0).astype(np.uint8)  # oedema only
    _compute(qtbot, widget)
    assert widget.setup.regions == ("wt",)
    assert any("TC refinement skipped" in m for m in errors["info"])


def test_pseudo_label_covering_the_brain_warns(refine_panel, qtbot, errors):
    viewer, widget = refine_panel
    labels = viewer.layers["tiny labels"]
    brain = np.any(widget_case(labels).images != 0, axis=0)
    labels.data = np.where(brain, 2, 0).astype(np.uint8)
    widget.region.value = WT
    _compute(qtbot, widget)
    assert any("covers" in m and "brain" in m for m in errors["info"]), errors["info"]


def widget_case(layer):
    return handle_of_layer(layer).case


def test_layer_on_another_grid_notifies(refine_panel, qtbot, errors):
    viewer, widget = refine_panel
    handle = handle_of_layer(viewer.layers["tiny labels"])
    viewer.add_labels(
        np.ones((10, 12, 12), np.uint8),
        name="other grid",
        metadata={CASE_KEY: handle, "ssseg_role": "labels"},
    )
    widget.labels_layer.value = viewer.layers["other grid"]
    _click(qtbot, widget.compute_button)
    assert widget.task is None
    assert errors["error"] and "another grid" in errors["error"][-1]


def test_accept_without_setup_notifies(refine_panel, errors):
    viewer, widget = refine_panel
    assert widget.accept() is None
    assert "compute superpixels first" in errors["error"][-1]


def _expected_preview(widget, data, sim0):
    """The preview computed from scratch (fresh seeds) for labels ``data``."""
    import warnings

    masks = {"wt": data > 0, "tc": (data == 1) | (data == 3)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        seeds = {r: widget.setup.sessions[r].fit(masks[r]) for r in widget.setup.regions}
    return preview_masks(widget.setup, seeds, data, sim0, widget.n_c.value)[0]


def test_painting_and_undo_after_compute_are_used_by_next_preview(refine_panel, qtbot):
    from scipy import ndimage

    viewer, widget = refine_panel
    widget.sim0.value = 1.0
    _compute(qtbot, widget)
    labels = viewer.layers["tiny labels"]
    preview = viewer.layers["tiny refine preview"]
    original = labels.data.copy()
    # the user paints oedema around the tumour (data_setitem records history, emits paint)
    shell = ndimage.binary_dilation(original > 0, iterations=2) & (original == 0)
    shell &= widget.setup.brain
    idx = np.nonzero(shell)
    labels.data_setitem(idx, 2)
    painted = labels.data.copy()
    assert not np.array_equal(
        _expected_preview(widget, painted, 0.99), _expected_preview(widget, original, 0.99)
    )
    widget.sim0.value = 0.99
    qtbot.waitUntil(lambda: widget.status.value.startswith("preview sim0=0.99"), timeout=10_000)
    np.testing.assert_array_equal(preview.data, _expected_preview(widget, painted, 0.99))
    # undoing the paint is picked up too
    labels.undo()
    np.testing.assert_array_equal(labels.data, original)
    widget.sim0.value = 0.98
    qtbot.waitUntil(lambda: widget.status.value.startswith("preview sim0=0.98"), timeout=10_000)
    np.testing.assert_array_equal(preview.data, _expected_preview(widget, original, 0.98))


def test_accept_then_slider_still_refines_the_original(refine_panel, qtbot, accept_refine):
    viewer, widget = refine_panel
    labels = viewer.layers["tiny labels"]
    original = labels.data.copy()
    _compute(qtbot, widget)
    widget.sim0.value = 0.0
    qtbot.waitUntil(lambda: widget.status.value.startswith("preview sim0=0.00"), timeout=10_000)
    accept_refine(widget)
    viewer.dims.set_point(0, float(viewer.dims.point[0]) + 2.0)  # refreshes the layer
    widget.sim0.value = 0.5
    qtbot.waitUntil(lambda: widget.status.value.startswith("preview sim0=0.50"), timeout=10_000)
    np.testing.assert_array_equal(widget._pseudo, original)  # not the accepted labels


@pytest.mark.slow
def test_preview_latency_full_size(make_napari_viewer, qtbot):
    """Benchmark: slider-move-to-preview latency on a 155 x 240 x 240 phantom (printed).

    Latency = from setting the slider value to the preview of that value being on display
    (including the debounce when previews run in the worker).
    """
    from napari.layers import Layer

    from napari_ssseg.core.phantom import make_phantom

    case = make_phantom(shape=(155, 240, 240), spacing=(1.0, 1.0, 1.0), seed=5).to_case(name="big")
    brain = np.any(case.images != 0, axis=0)
    degraded = degrade(case.labels, "undersegmented_oedema", brain=brain, spacing=case.scale)
    viewer = make_napari_viewer()
    for data, kwargs, layer_type in case_to_layer_data(case, labels=degraded):
        viewer.add_layer(Layer.create(data, kwargs, layer_type))
    widget = RefineWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Refine")
    widget.advanced.value = True  # the moves below go down to sim0 = 0
    t0 = time.perf_counter()
    _compute(qtbot, widget, timeout=600_000)
    setup_s = time.perf_counter() - t0
    latencies, misses, sync = [], [], 0
    moves = [("sim0", float(v)) for v in np.round(np.linspace(0.40, 0.0, 21), 2)]
    moves += [("n_c", int(v)) for v in (20, 10, 5, 3, 1, 50, 100)]
    for name, value in moves:
        slider = getattr(widget, name)
        if value == slider.value:
            continue
        start = time.perf_counter()
        was_sync = widget.last_preview_seconds <= 0.05
        cached = len(widget._masks)
        slider.value = value
        want = f"preview sim0={widget.sim0.value:.2f}, n_c={widget.n_c.value}"
        qtbot.waitUntil(lambda w=want: widget.status.value.startswith(w), timeout=10_000)
        latencies.append(time.perf_counter() - start)
        misses.append(len(widget._masks) > cached)
        sync += was_sync
        qtbot.wait(30)
    ms = np.array(latencies) * 1000
    miss = ms[np.array(misses)]
    print(
        f"superpixels + sessions {setup_s:.1f} s; slider-to-preview latency over "
        f"{ms.size} moves ({sync} on the GUI thread): median {np.median(ms):.0f} ms, "
        f"p90 {np.percentile(ms, 90):.0f} ms, max {ms.max():.0f} ms; {miss.size} moves gave "
        f"a new superpixel set: median {np.median(miss) if miss.size else 0:.0f} ms, "
        f"max {miss.max() if miss.size else 0:.0f} ms"
    )
    # worst case: every move needs the full refinement (mask cache emptied before each move)
    cold = []
    for value in np.round(np.linspace(0.9, 0.0, 10), 2):
        if float(value) == widget.sim0.value:
            continue
        widget._masks.clear()
        widget._shown = None
        start = time.perf_counter()
        widget.sim0.value = float(value)
        want = f"preview sim0={widget.sim0.value:.2f}, n_c={widget.n_c.value}"
        qtbot.waitUntil(lambda w=want: widget.status.value.startswith(w), timeout=10_000)
        cold.append(time.perf_counter() - start)
        qtbot.wait(30)
    cold_ms = np.array(cold) * 1000
    print(
        f"cache emptied before each move ({cold_ms.size} moves): median "
        f"{np.median(cold_ms):.0f} ms, max {cold_ms.max():.0f} ms"
    )
    assert ms.size >= 20 and np.median(ms) < 500
    assert np.median(cold_ms) < 1000


# ------------------------------------------------------------------ the sim0 slider's range
def test_sim0_slider_spans_where_it_acts_and_advanced_widens_it(default_panel):
    viewer, widget = default_panel
    assert (widget.sim0.min, widget.sim0.max) == SIM0_RANGE
    assert SIM0_RANGE[0] <= widget.sim0.value <= SIM0_RANGE[1]
    assert widget.n_c.native.isHidden()  # n_c lives behind Advanced
    with pytest.raises(ValueError, match="outside"):
        widget.sim0.value = 0.0
    widget.advanced.value = True
    assert (widget.sim0.min, widget.sim0.max) == SIM0_FULL_RANGE
    assert not widget.n_c.native.isHidden()
    widget.sim0.value = 0.05
    widget.n_c.value = 3
    widget.advanced.value = False
    # back in the useful range, at its nearest end; the hidden n_c is at its default again
    assert (widget.sim0.min, widget.sim0.max) == SIM0_RANGE
    assert widget.sim0.value == pytest.approx(SIM0_RANGE[0])
    assert widget.n_c.value == DEFAULT_NC
    assert widget.n_c.native.isHidden()


def _sweep_sim0(qtbot, widget, preview, values):
    """Move the slider to each value as a user would; the WT / TC voxel counts shown."""
    counts = []
    for value in values:
        if round(float(widget.sim0.value), 2) != round(float(value), 2):
            widget.sim0.value = float(value)
            want = f"preview sim0={widget.sim0.value:.2f}"
            qtbot.waitUntil(lambda w=want: widget.status.value.startswith(w), timeout=60_000)
        # (at the slider's start value the preview shown after Compute is that value's)
        data = preview.data
        counts.append((int(np.count_nonzero(data)), int(np.count_nonzero(data == 2))))
    return counts


def test_moving_sim0_across_its_range_changes_the_refinement(default_panel, qtbot):
    viewer, widget = default_panel
    _compute(qtbot, widget)
    preview = viewer.layers["tiny refine preview"]
    values = np.round(np.arange(SIM0_RANGE[0], SIM0_RANGE[1] + 1e-9, 0.05), 2)
    counts = _sweep_sim0(qtbot, widget, preview, values)
    wt = [c[0] for c in counts]
    # the user sees the region change at several slider positions, and shrink as sim0 rises
    assert len(set(wt)) >= 3, dict(zip(values.tolist(), counts))
    assert all(a >= b for a, b in zip(wt, wt[1:])), wt
    assert wt[0] > wt[-1]
    # what is shown is the refinement at the slider's value
    expected, _ = preview_masks(widget.setup, widget._seeds, widget._pseudo, 0.8, widget.n_c.value)
    np.testing.assert_array_equal(preview.data, expected)


REAL_CASE = "BraTS-GLI-00012-000"


@pytest.mark.slow
def test_sim0_slider_acts_on_a_real_case(make_napari_viewer, qtbot):
    """The panel on a real glioma (missed-lobe pseudo-label, as benchmarks/refine_slider_range.py):
    several distinct results across the slider's range."""
    import warnings
    from pathlib import Path

    from napari.layers import Layer

    from napari_ssseg.core.degrade import DEGRADATIONS
    from napari_ssseg.core.refine_preview import case_brain_mask
    from napari_ssseg.io.readers import load_case

    folder = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real" / REAL_CASE
    if not folder.is_dir():
        pytest.skip(f"real case not found at {folder} (../shared/data/real is absent)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case = load_case(folder)
    brain = case_brain_mask(case)
    seed = 100 + DEGRADATIONS.index("missed_lobe")
    degraded = degrade(case.labels, "missed_lobe", brain=brain, spacing=case.scale, seed=seed)
    viewer = make_napari_viewer()
    for data, kwargs, layer_type in case_to_layer_data(case, labels=degraded.astype(np.uint8)):
        viewer.add_layer(Layer.create(data, kwargs, layer_type))
    widget = RefineWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Refine")
    _compute(qtbot, widget, timeout=600_000)
    preview = viewer.layers[f"{case.name} refine preview"]
    values = np.round(np.arange(SIM0_RANGE[0], SIM0_RANGE[1] + 1e-9, 0.05), 2)
    counts = _sweep_sim0(qtbot, widget, preview, values)
    wt = [c[0] for c in counts]
    print(dict(zip(values.tolist(), counts)))
    assert len(set(wt)) >= 3, dict(zip(values.tolist(), counts))
    assert wt[0] > wt[-1]


def test_accept_runs_in_a_worker_and_keeps_paint_made_meanwhile(
    refine_panel, qtbot, errors, monkeypatch
):
    """Accept refines the whole volume off the GUI thread (0.3-0.9 s on a real case); a
    stroke painted before its result arrives is not overwritten, and becomes part of the
    pseudo-label the sliders refine next."""
    import threading

    from napari_ssseg._napari.widgets import refine as refine_mod

    viewer, widget = refine_panel
    _compute(qtbot, widget)
    labels = widget._target
    widget.sim0.value = 0.0
    qtbot.waitUntil(lambda: widget.status.value.startswith("preview sim0=0.00"), timeout=10_000)
    gui, ran_in, release = threading.get_ident(), [], threading.Event()
    real = refine_mod.refine_for_accept

    def slow(*args, **kwargs):
        ran_in.append(threading.get_ident())
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(refine_mod, "refine_for_accept", slow)
    task = widget.accept()
    assert task is not None and task.running  # the click returned at once
    assert not widget.accept_button.enabled and "refining the whole volume" in widget.status.value
    # meanwhile the user paints label 1 over voxels this accept is about to change
    from napari_ssseg._napari.provenance import track

    plan = real(
        widget.setup,
        widget._pseudo,
        np.asarray(labels.data),
        track(labels).provenance,
        0.0,
        int(widget.n_c.value),
        keep_human=True,
    )
    painted = plan.changed & (plan.new != 1) & (np.asarray(labels.data) != 1)
    zs = np.nonzero(painted)[0]
    painted[: int(np.median(zs))] = False  # some of them: the rest is still accepted
    assert painted.sum() > 10 and (plan.changed & ~painted).sum() > 10
    labels.data_setitem(np.nonzero(painted), 1)
    release.set()
    qtbot.waitUntil(lambda: not task.running, timeout=30_000)
    qtbot.wait(10)
    assert ran_in and ran_in[0] != gui
    assert not errors["error"], errors
    changed = widget.last_accepted
    assert changed is not None and changed.any()
    assert not (changed & painted).any()
    assert (labels.data[painted] == 1).all()  # the paint made meanwhile survives
    assert "painted meanwhile kept" in widget.status.value
    assert widget.accept_button.enabled


def test_computed_setup_is_shown_one_layer_per_event_loop_turn(refine_panel, qtbot, errors):
    """The boundary and preview layers are added in separate event-loop turns (each napari
    layer of a full case costs 60-160 ms on the GUI thread), while the task still runs; the
    timer ticking between two inserts proves the GUI thread was free in between."""
    from qtpy.QtCore import QTimer

    viewer, widget = refine_panel
    ticks = [0]
    timer = QTimer()
    timer.setInterval(0)
    timer.timeout.connect(lambda: ticks.__setitem__(0, ticks[0] + 1))
    inserted: list[tuple[str, int, bool]] = []

    def on_inserted(event):
        running = widget.task is not None and widget.task.running
        inserted.append((event.value.name, ticks[0], running))

    viewer.layers.events.inserted.connect(on_inserted)
    timer.start()
    try:
        _compute(qtbot, widget)
    finally:
        timer.stop()
        viewer.layers.events.inserted.disconnect(on_inserted)
    assert errors["error"] == []
    names = [n for n, _, _ in inserted]
    assert names == ["tiny superpixels WT", "tiny superpixels TC", "tiny refine preview"], names
    turns = [t for _, t, _ in inserted]
    assert turns[0] < turns[1] < turns[2], turns  # the timer ran between two inserts
    assert all(running for _, _, running in inserted)  # the task ends after the last one
    assert not viewer.layers["tiny superpixels TC"].visible  # created hidden (WT shown)
    assert widget.status.value.startswith("ready")
