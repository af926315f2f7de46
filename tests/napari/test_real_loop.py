"""The annotator's whole loop in napari on a REAL scan, driven as a user would (issue 11).

One real BraTS 2023 glioma from ``../shared/data/real`` in a workspace; every panel opened
through the Plugins menu path. Open the case, propose, take the proposal into the labels,
refine and accept, scribble and accept (earlier hand paint kept), paint a correction,
undo / redo (provenance follows), save a version, close the viewer with an unsaved edit and
reopen it (the edit is there, no stale lock), retrain briefly, and the new model re-proposes.
A 20 ms heartbeat timer measures the event loop's longest stall for each step; the figures
are printed (``-s``) and recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

from qtpy.QtCore import Qt, QTimer  # noqa: E402

from napari_ssseg.core.preprocess import brain_mask  # noqa: E402
from napari_ssseg.core.provenance import (  # noqa: E402
    HUMAN,
    MODEL,
    PROVENANCE_KEY,
    SCRIBBLE,
    SUPERPIXEL,
)
from napari_ssseg.core.scribbles import simulate_scribbles  # noqa: E402
from napari_ssseg.io.workspace import Workspace  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
CASE = "BraTS-GLI-00000-000"

pytestmark = [
    pytest.mark.gui,
    pytest.mark.slow,
    pytest.mark.skipif(not (REAL / CASE).is_dir(), reason="../shared/data/real is absent"),
]


class Heartbeat:
    """A 20 ms QTimer; the longest gap between ticks is the event loop's longest stall."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(20)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.stalls: dict[str, float] = {}

    def step(self, name: str) -> None:
        """End of a step: record its longest gap (s) and start the next one.

        The step's end counts as a tick, so a step done synchronously on the GUI thread (a
        button whose work runs in the click) is a stall as long as that work.
        """
        gaps = np.diff([*self.ticks, time.perf_counter()])
        self.stalls[name] = float(gaps.max())
        self.ticks = [time.perf_counter()]

    def mark(self) -> None:
        """A user action starts now (the test's own checks before it are not counted)."""
        self.ticks = [time.perf_counter()]

    def start(self) -> None:
        self.ticks = [time.perf_counter()]
        self.timer.start()


def _shot(viewer, tmp_path: Path, name: str) -> Path:
    """A real screenshot of the window (Xvfb + Mesa), into ``tmp_path``; also into the folder
    named by ``SSSEG_SCREENSHOTS`` (to look at them)."""
    import os

    from PIL import Image
    from qtpy.QtWidgets import QApplication

    viewer.reset_view()
    for _ in range(10):  # let the canvas take its size and repaint
        QApplication.processEvents()
        time.sleep(0.02)
    image = Image.fromarray(np.asarray(viewer.screenshot(canvas_only=False, flash=False))[..., :3])
    assert np.asarray(image).std() > 5, "blank screenshot"
    folder = Path(os.environ.get("SSSEG_SCREENSHOTS") or tmp_path)
    if image.width > 1200:
        image = image.resize((1200, round(image.height * 1200 / image.width)))
    image = image.quantize(colors=128, dither=Image.Dither.NONE)
    image.save(folder / f"{name}.png", optimize=True)
    return folder / f"{name}.png"


def _click(qtbot, button):
    qtbot.mouseClick(button.native, Qt.MouseButton.LeftButton)


def _workspace(tmp_path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / CASE).symlink_to((REAL / CASE).resolve(), target_is_directory=True)
    Workspace.create(tmp_path / "ws", from_dir=src).close()
    return tmp_path / "ws"


def _far_voxel(brain: np.ndarray, labels: np.ndarray) -> tuple[int, int, int]:
    """A brain voxel far from every label (a hand edit no automatic step would touch)."""
    tumour = np.argwhere(labels > 0).mean(0)
    cand = np.argwhere(brain & (labels == 0))[::97]
    return tuple(int(v) for v in cand[np.argmax(np.linalg.norm(cand - tumour, axis=1))])


def test_the_whole_loop_on_a_real_glioma(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    errors: list[str] = []
    monkeypatch.setattr("napari_ssseg._napari.widgets._common.show_error", errors.append)
    ws_path = _workspace(tmp_path)
    beat = Heartbeat()
    t0 = time.perf_counter()

    # ---- open the workspace and the case (Workspace panel, Plugins menu path)
    viewer = make_napari_viewer(show=True)  # shown, as a user sees it (hidden: nothing drawn)
    _, wsw = viewer.window.add_plugin_dock_widget("napari-ssseg", "Workspace")
    _, propose = viewer.window.add_plugin_dock_widget("napari-ssseg", "Propose")
    _, refine = viewer.window.add_plugin_dock_widget("napari-ssseg", "Refine")
    _, scribble = viewer.window.add_plugin_dock_widget("napari-ssseg", "Scribble")
    propose.device.value = "cpu"
    beat.start()
    wsw.open_workspace(ws_path)
    wsw.open_case(CASE)
    qtbot.waitUntil(lambda: not wsw.running and wsw.labels_layer is not None, timeout=120_000)
    beat.step("open case")
    labels = wsw.labels_layer
    case = propose.case.value
    assert case is not None and case.name.startswith("BraTS-GLI-00000")
    gt = wsw.ws.ground_truth(CASE)
    assert gt is not None and gt.shape == labels.data.shape
    brain = brain_mask(case.images)

    # ---- propose with the shipped model, take it into the labels
    beat.mark()
    _click(qtbot, propose.propose_button)
    qtbot.waitUntil(lambda: not propose.running, timeout=300_000)
    beat.step("propose")
    assert propose.last_result is not None and not errors, errors
    beat.mark()
    _click(qtbot, propose.take_button)
    beat.step("take proposal")
    taken = labels.data.copy()
    wt = (taken > 0).sum()
    dice = 2 * ((taken > 0) & (gt > 0)).sum() / (wt + (gt > 0).sum())
    assert dice > 0.5, dice  # a real proposal on a real tumour
    assert (labels.metadata[PROVENANCE_KEY][taken > 0] == MODEL).all()
    viewer.dims.set_point(0, float(np.argwhere(gt > 0)[:, 0].mean()))  # a slice through it
    viewer.layers[f"{case.name} uncertainty"].visible = False  # the labels, as a user looks
    _shot(viewer, tmp_path, "real_loop_1_proposal_taken")

    # ---- a hand edit far from the tumour, then refine and accept: the edit is kept
    far = _far_voxel(brain, taken)
    labels.selected_label = 2
    labels.brush_size = 3
    labels.paint(far, 2)
    hand = labels.metadata[PROVENANCE_KEY] == HUMAN
    assert hand.any() and (labels.data[hand] == 2).all()
    assert refine.labels_layer.value is labels
    beat.mark()
    _click(qtbot, refine.compute_button)
    qtbot.waitUntil(lambda: refine.setup is not None and not refine.task.running, timeout=300_000)
    beat.step("refine (superpixels + preview)")
    beat.mark()
    task = refine.accept()
    qtbot.waitUntil(lambda: not task.running, timeout=60_000)
    qtbot.wait(10)
    changed = refine.last_accepted
    beat.step("refine accept")
    assert not errors, errors
    assert (labels.data[hand] == 2).all()
    if changed is not None and changed.any():
        assert (labels.metadata[PROVENANCE_KEY][changed] == SUPERPIXEL).all()

    # ---- scribble a few strokes, propagate, accept (merge): earlier paint kept
    _click(qtbot, scribble.new_button)
    strokes = simulate_scribbles(gt, brain, n_slices=3, keep=0.5)
    assert strokes.any()
    scribble.scribble_layer.data = strokes
    beat.mark()
    _click(qtbot, scribble.propagate_button)
    qtbot.waitUntil(lambda: scribble.result is not None, timeout=300_000)
    beat.step("scribble propagate")
    beat.mark()
    _click(qtbot, scribble.accept_button)
    beat.step("scribble accept")
    assert not errors, errors
    assert (labels.data[hand] == 2).all(), "scribble accept deleted hand paint"
    assert (labels.metadata[PROVENANCE_KEY] == SCRIBBLE).any()
    _shot(viewer, tmp_path, "real_loop_2_scribbles_accepted")

    # ---- paint a correction; undo / redo and provenance follow
    before = labels.data.copy()
    prov_before = labels.metadata[PROVENANCE_KEY].copy()
    z, y, x = np.argwhere(gt == 1)[0] if (gt == 1).any() else np.argwhere(gt > 0)[0]
    labels.selected_label = 1
    labels.paint((int(z), int(y), int(x)), 1)
    fixed = labels.data != before
    assert fixed.any() and (labels.metadata[PROVENANCE_KEY][fixed] == HUMAN).all()
    after, prov_after = labels.data.copy(), labels.metadata[PROVENANCE_KEY].copy()
    labels.undo()
    np.testing.assert_array_equal(labels.data, before)
    np.testing.assert_array_equal(labels.metadata[PROVENANCE_KEY], prov_before)
    labels.redo()
    np.testing.assert_array_equal(labels.data, after)
    np.testing.assert_array_equal(labels.metadata[PROVENANCE_KEY], prov_after)

    # ---- save a version
    beat.mark()
    wsw.save_btn.click()
    qtbot.waitUntil(lambda: len(wsw.ws.versions(CASE)) >= 1, timeout=30_000)
    beat.step("save version")
    saved = wsw.ws.latest_labels(CASE)
    np.testing.assert_array_equal(saved, after)

    # ---- an unsaved edit, then close the viewer
    labels.selected_label = 3
    far2 = _far_voxel(brain, labels.data)
    labels.paint(far2, 3)
    unsaved = labels.data.copy()
    assert (unsaved != saved).any() and wsw.autosaver.dirty
    n_versions = len(wsw.ws.versions(CASE))
    beat.timer.stop()
    viewer.close()

    # ---- reopen: the edit is there, no stale lock
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        viewer2 = make_napari_viewer(show=True)
        _, wsw2 = viewer2.window.add_plugin_dock_widget("napari-ssseg", "Workspace")
        _, propose2 = viewer2.window.add_plugin_dock_widget("napari-ssseg", "Propose")
        _, retrain = viewer2.window.add_plugin_dock_widget("napari-ssseg", "Retrain")
        propose2.device.value = "cpu"
        beat.start()
        wsw2.open_workspace(ws_path)
    assert not any("stale" in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert len(wsw2.ws.versions(CASE)) == n_versions + 1
    beat.mark()
    wsw2.open_case(CASE)
    qtbot.waitUntil(lambda: not wsw2.running and wsw2.labels_layer is not None, timeout=120_000)
    beat.step("reopen case")
    np.testing.assert_array_equal(wsw2.labels_layer.data, unsaved)
    prov = wsw2.labels_layer.metadata.get(PROVENANCE_KEY)
    assert prov is not None and (prov[unsaved != saved] == HUMAN).all()

    # ---- retrain briefly (data defaults to the open workspace), the new model re-proposes
    assert retrain.data.value == str(wsw2.ws.root)
    retrain.epochs.value = 1
    retrain.iterations.value = 2
    retrain.patch.value = 32
    retrain.device.value = "cpu"
    retrain.run_folder.value = str(tmp_path / "run")
    beat.mark()
    proc = retrain.retrain()
    assert proc is not None, retrain.status.value
    qtbot.waitUntil(lambda: not retrain.running, timeout=600_000)
    beat.step("retrain (child process)")
    assert retrain.outcome == "done", (retrain.status.value, proc.error_text())
    qtbot.waitUntil(
        lambda: propose2.last_result is not None and not propose2.running, timeout=300_000
    )
    beat.step("re-propose with the new model")
    assert str(propose2.checkpoint_file.value) == str(retrain.active_model)
    assert "re-proposing" in retrain.status.value
    _shot(viewer2, tmp_path, "real_loop_3_reproposed_after_retrain")
    (run,) = wsw2.ws.runs
    assert run["state"] == "done" and run.get("model")
    beat.timer.stop()
    retrain.timer.stop()
    assert not errors, errors
    total = time.perf_counter() - t0
    print(f"\nreal-case loop, {total:.0f} s; longest event-loop stall per step (ms):")
    for name, gap in beat.stalls.items():
        print(f"  {name:32s} {gap * 1000:7.0f}")
    # the viewer stays usable: no step blocks the event loop for seconds
    assert max(beat.stalls.values()) < 3.0, beat.stalls
    wsw2.close_workspace()
