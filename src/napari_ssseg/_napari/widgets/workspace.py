"""Workspace panel: browse a workspace's cases, open / next / previous, autosave, verify,
restore a version, suggest the next case, evaluate.

The panel is thin: all state lives in :class:`napari_ssseg.io.workspace.Workspace` on disk.
Opening a case shows its layers (from :func:`napari_ssseg._napari.layers.case_to_layer_data`)
with the latest label version; edits to its labels layer mark it dirty, and an
:class:`~napari_ssseg.io.workspace.Autosaver` saves a new version every N seconds, on case
switch, and when the panel closes. Voxels changed since the last save that no other panel
claimed in ``layer.metadata["ssseg_provenance"]`` are recorded as human-painted.

Long work runs off the GUI thread (:func:`napari_ssseg._napari.workers.start_task`) with a
progress bar and a **Cancel** button: reading a case (images, latest labels, provenance),
*Suggest* with diversity (image features of every candidate) and *Evaluate* / *Export*. The
workers only read the workspace; layers, the tables and the manifest writes (features) are
touched on the GUI thread. While a case loads, the current case's layers stay (and can be
edited); the switch -- saving the current case's edits, then replacing its layers -- happens
on the GUI thread when the load has finished, one layer per event-loop turn. A second open
request cancels the first. The panel's own saves stay on the GUI thread (one compressed label
file, ~0.1-0.2 s for a full-size case).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_ssseg._napari.widgets._common import notify_error, notify_info
from napari_ssseg._napari.workers import (
    TURN_PAUSE_MS,
    TaskHandle,
    below_total,
    callback_generator,
    start_task,
)
from napari_ssseg.errors import InputError, SsegError

__all__ = [
    "WorkspaceWidget",
    "evaluate_job",
    "load_case_job",
    "metrics_rows",
    "suggest_job",
]

_COLUMNS = ("case", "status", "versions", "uncertainty")
_REGIONS = ("WT", "TC", "ET")
#: (metric key, column title) of the evaluation table; one column per region and metric
_TABLE_METRICS = (("dice", "Dice"), ("hd95", "HD95"), ("nsd", "NSD"))


# ----------------------------------------------------------------------------- worker jobs
# These generator functions run in a worker thread: they read the workspace and never touch
# widgets or layers. They never report step == total: napari's progress bar reaching 100 %
# costs ~0.2 s of GUI-thread time (measured), and the bar is closed right after anyway.
def _step(
    func: Callable[..., Any], *args: Any, step: int, total: int, message: str, **kwargs: Any
) -> Generator[dict[str, Any], None, Any]:
    """Run ``func(*args, **kwargs)`` (no progress hook) in a helper thread, reporting
    ``message`` with the elapsed time every 0.2 s until it returns its result."""
    t0 = time.perf_counter()
    yield {"step": step, "total": total, "message": message}
    gen = callback_generator(func, *args, progress_kwarg="", heartbeat=0.2, **kwargs)
    try:
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value
            yield {
                "step": step,
                "total": total,
                "message": f"{message} ({time.perf_counter() - t0:.1f} s)",
            }
    finally:
        gen.close()  # on cancel: stop waiting for the helper thread now


def load_case_job(ws: Any, case_id: str, version: int | None):
    """Read a case's images, the labels of ``version`` and its provenance (worker thread).

    Parameters
    ----------
    ws : Workspace
    case_id : str
    version : int or None
        Label version to read (chosen on the GUI thread, so a save made meanwhile does not
        change what is read); None: no labels.

    Yields
    ------
    dict
        Progress reports (at least every 0.2 s).

    Returns
    -------
    dict
        ``{"case_id", "version", "case": Case (labels (Z, Y, X) uint8 or None),
        "layer_data": case_to_layer_data(case) (contrast limits computed here, off the GUI
        thread), "provenance": (Z, Y, X) uint8 or None, "seconds"}``.
    """
    from napari_ssseg._napari.layers import case_to_layer_data

    t0 = time.perf_counter()
    total = 4
    if ws.case(case_id).clinical:
        return (yield from _clinical_case_job(ws, case_id, version, t0))
    case = yield from _step(
        ws.load_case, case_id, labels="none", step=0, total=total,
        message=f"{case_id}: reading images",
    )  # fmt: skip
    labels = prov = None
    if version is not None:
        labels = yield from _step(
            ws.read_version, case_id, version, step=1, total=total,
            message=f"{case_id}: reading labels v{version}",
        )  # fmt: skip
        prov = yield from _step(
            ws.read_provenance, case_id, version, step=2, total=total,
            message=f"{case_id}: reading provenance",
        )  # fmt: skip
    case = dataclasses.replace(case, labels=labels)
    layer_data = yield from _step(
        case_to_layer_data, case, step=3, total=total, message=f"{case_id}: preparing layers"
    )
    return {
        "case_id": case_id,
        "version": version,
        "case": case,
        "layer_data": layer_data,
        "provenance": prov,
        "seconds": time.perf_counter() - t0,
        "clinical": None,
    }


def _clinical_case_job(ws: Any, case_id: str, version: int | None, t0: float):
    """:func:`load_case_job` for a case marked clinical: prepared on its working grid.

    :func:`~napari_ssseg.ml.clinical.prepare_workspace_case` (brain extraction,
    registration, working grid, cached in the workspace) reads the version onto the working
    grid; the result's ``"clinical"`` is the :class:`~napari_ssseg.ml.clinical.ClinicalCase`
    that saving maps the labels back to the native grid with.
    """
    from napari_ssseg._napari.layers import case_to_layer_data
    from napari_ssseg.ml.clinical import prepare_workspace_case

    yield {"message": f"{case_id}: preparing the clinical study"}
    clin, prov = yield from below_total(
        callback_generator(
            prepare_workspace_case,
            ws,
            case_id,
            version,
            progress_kwarg="progress",
            keep_unmasked=True,  # so a corrected brain mask can be applied (Apply brain mask)
        )
    )
    yield {"message": f"{case_id}: preparing layers"}
    layer_data = case_to_layer_data(clin.case, clinical=clin)
    grid_meta = clin.grid.to_dict()
    for _, kwargs, _ in layer_data:
        kwargs["metadata"]["ssseg_working_grid"] = grid_meta
    return {
        "case_id": case_id,
        "version": version,
        "case": clin.case,
        "layer_data": layer_data,
        "provenance": prov,
        "seconds": time.perf_counter() - t0,
        "clinical": clin,
    }


def evaluate_job(ws: Any, case_ids: list[str], lesion_wise: bool = False):
    """Per-case metrics with :func:`~napari_ssseg.io.evaluation.evaluate_workspace`, one
    case at a time (progress per case), then the dataset summary (worker thread).

    ``lesion_wise`` adds the BraTS 2023+ lesion-wise Dice/HD95 (glioma rules).

    Returns
    -------
    dict
        Same layout as ``evaluate_workspace(ws, None)``: ``cases``, ``summary``, ``skipped``.
    """
    from napari_ssseg.io.evaluation import evaluate_workspace, summarise

    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    n = len(case_ids)
    for i, cid in enumerate(case_ids):
        rep = yield from _step(
            evaluate_workspace, ws, None, cases=[cid], plot=False, lesion_wise=lesion_wise,
            step=i, total=n, message=f"evaluating {cid} ({i + 1}/{n})",
        )  # fmt: skip
        results.update(rep["cases"])
        skipped.update(rep["skipped"])
    return {"cases": results, "summary": summarise(results), "skipped": skipped}


def metrics_rows(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the evaluation table: one row per case, then ``mean`` and ``median``.

    Returns
    -------
    header : list of str
        ``["case", "WT Dice", "TC Dice", "ET Dice", "WT HD95", ...]``, then ``"WT LW Dice"``,
        ``"WT LW HD95"``, ... when the report has lesion-wise values.
    rows : list of list
        ``[name, value or None, ...]``.
    """
    cols = [(r, m) for m, _ in _TABLE_METRICS for r in _REGIONS]
    titles = dict(_TABLE_METRICS)
    header = ["case"] + [f"{r} {titles[m]}" for r, m in cols]
    lesion = any(
        res.get(r, {}).get("lesion_wise") for res in report["cases"].values() for r in _REGIONS
    )
    lw_cols = [(r, m) for m in ("dice", "hd95") for r in _REGIONS] if lesion else []
    header += [f"{r} LW {titles[m]}" for r, m in lw_cols]

    def lw_value(res: dict, r: str, m: str) -> Any:
        return (res[r].get("lesion_wise") or {}).get(m)

    rows = [
        [cid] + [res[r][m] for r, m in cols] + [lw_value(res, r, m) for r, m in lw_cols]
        for cid, res in report["cases"].items()
    ]
    for stat in ("mean", "median"):
        summ = report["summary"]
        rows.append(
            [stat]
            + [summ[r][m][stat] for r, m in cols]
            + [summ[r].get("lesion_wise", {}).get(m, {}).get(stat) for r, m in lw_cols]
        )
    return header, rows


def suggest_job(ws: Any, n: int):
    """:func:`~napari_ssseg.io.workspace.suggest.suggest_next` with diversity 0.5 (worker
    thread: it may read the images of candidates without stored features; the caller stores
    the new features on the GUI thread).

    Returns
    -------
    SuggestResult
    """
    from napari_ssseg.io.workspace.suggest import suggest_next

    return (
        yield from below_total(
            callback_generator(
                suggest_next,
                ws,
                n,
                strategy="entropy",
                diversity=0.5,
                progress_kwarg="progress",
                stop_kwarg="should_stop",
            )
        )
    )


def _notes_text(notes: list[str]) -> str:
    """The suggestion's notes for the status line (``" (note; note)"``, or ``""``)."""
    return f" ({'; '.join(notes)})" if notes else ""


class WorkspaceWidget(QWidget):
    """Dock widget managing an annotation workspace.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Attributes
    ----------
    task : TaskHandle or None
        The running (or last) background task: a case load, a suggestion, an evaluation or an
        export.
    last_report : dict or None
        The last evaluation report (``cases``, ``summary``, ``skipped``).
    last_suggestion : list or None
        The last ranking (:class:`~napari_ssseg.core.suggest.RankedCase` list).
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        from napari_ssseg._napari.warmup import warm_up_layers

        warm_up_layers()  # napari's first-layer costs, off the GUI thread
        self.ws = None
        self.case_id: str | None = None
        self.labels_layer = None
        self._layers: list[Any] = []
        self._saved_labels: np.ndarray | None = None
        self._saved_prov: np.ndarray | None = None
        #: The ClinicalCase of the current case when it is a clinical study, else None.
        self._clinical: Any = None
        self.task: TaskHandle | None = None
        self._task_kind = ""
        self._token = 0  # identifies the current task; results of older ones are ignored
        self._steps: list[Callable[[], None]] = []
        self._pending: list[Any] = []  # layers of a case being shown, not yet switched to
        self.last_report: dict | None = None
        self.last_suggestion: list | None = None
        self.last_load_seconds: float | None = None
        from napari_ssseg.io.workspace import Autosaver

        self.autosaver = Autosaver(self._save_current, interval=60.0)

        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("workspace folder")
        self.open_ws_btn = QPushButton("Open workspace")
        self.table = QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(_COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.open_btn = QPushButton("Open case")
        self.prev_btn = QPushButton("Previous")
        self.next_btn = QPushButton("Next")
        self.cancel_btn = QPushButton("Cancel")
        self.save_btn = QPushButton("Save now")
        self.verify_btn = QPushButton("Mark verified")
        self.apply_mask_btn = QPushButton("Apply brain mask")
        self.apply_mask_btn.setToolTip(
            "Clinical studies: zero the images outside the case's brain-mask layer as you "
            "corrected it (kept in the workspace for the next open of the case)."
        )
        self.version_combo = QComboBox()
        self.restore_btn = QPushButton("Restore version")
        self.autosave_spin = QSpinBox()
        self.autosave_spin.setRange(5, 3600)
        self.autosave_spin.setValue(60)
        self.autosave_spin.setSuffix(" s")
        self.suggest_btn = QPushButton("Suggest next case")
        self.diversity_box = QCheckBox("diversity")
        self.random_box = QCheckBox("random baseline")
        self.evaluate_btn = QPushButton("Evaluate (ground truth)")
        self.lesion_box = QCheckBox("lesion-wise (BraTS 2023+)")
        self.lesion_box.setToolTip(
            "Also compute the BraTS 2023+ lesion-wise Dice and HD95 (glioma rules: lesions "
            "matched after a 3-voxel dilation of the ground truth, missed or spurious lesions "
            "score 0 / 374 mm, ground-truth lesions under 50 mm3 ignored)."
        )
        self.metrics_table = QTableWidget(0, 0)
        self.metrics_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.export_edit = QLineEdit()
        self.export_edit.setPlaceholderText("folder for metrics.csv / .json / dice_boxplot.png")
        self.export_btn = QPushButton("Export…")
        self.status_label = QLabel("no workspace open")
        self.status_label.setWordWrap(True)

        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.path_edit)
        row.addWidget(self.open_ws_btn)
        layout.addLayout(row)
        layout.addWidget(self.table)
        row = QHBoxLayout()
        for b in (self.open_btn, self.prev_btn, self.next_btn, self.cancel_btn):
            row.addWidget(b)
        layout.addLayout(row)
        row = QHBoxLayout()
        for b in (self.save_btn, self.verify_btn, self.apply_mask_btn):
            row.addWidget(b)
        row.addWidget(QLabel("autosave every"))
        row.addWidget(self.autosave_spin)
        layout.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(self.version_combo)
        row.addWidget(self.restore_btn)
        layout.addLayout(row)
        row = QHBoxLayout()
        for w in (self.suggest_btn, self.diversity_box, self.random_box):
            row.addWidget(w)
        layout.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(self.evaluate_btn)
        row.addWidget(self.lesion_box)
        layout.addLayout(row)
        layout.addWidget(self.metrics_table)
        row = QHBoxLayout()
        row.addWidget(self.export_edit)
        row.addWidget(self.export_btn)
        layout.addLayout(row)
        from napari_ssseg._napari.widgets.workspace_dataset import WorkspaceDatasetBox

        self.dataset_box = WorkspaceDatasetBox(self)
        layout.addWidget(self.dataset_box)
        layout.addWidget(self.status_label)

        self.open_ws_btn.clicked.connect(
            lambda: self._guard(self.open_workspace, self.path_edit.text())
        )
        self.open_btn.clicked.connect(lambda: self._guard(self.open_selected))
        self.table.doubleClicked.connect(lambda *_: self._guard(self.open_selected))
        self.prev_btn.clicked.connect(lambda: self._guard(self.previous_case))
        self.next_btn.clicked.connect(lambda: self._guard(self.next_case))
        self.cancel_btn.clicked.connect(lambda: self._guard(self.cancel))
        self.save_btn.clicked.connect(lambda: self._guard(self.save_now))
        self.verify_btn.clicked.connect(lambda: self._guard(self.mark_verified))
        self.apply_mask_btn.clicked.connect(lambda: self._guard(self.apply_brain_mask))
        self.restore_btn.clicked.connect(lambda: self._guard(self.restore_selected_version))
        self.suggest_btn.clicked.connect(lambda: self._guard(self.suggest))
        self.evaluate_btn.clicked.connect(lambda: self._guard(self.evaluate))
        self.export_btn.clicked.connect(
            lambda: self._guard(self.export_evaluation, self.export_edit.text())
        )
        self.autosave_spin.valueChanged.connect(self._set_interval)
        self._install_shortcuts()

        self._closing_guard: Any = None
        self._removing_own = False
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        from napari_ssseg._napari.orientation import install_orientation

        install_orientation(self.viewer)  # radiological 2D views + L/R, A/P, S/I letters
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(lambda: self._guard(self.close_workspace))

        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(lambda: self._guard(self.autosave_tick))
        self.timer.start()
        self._update_buttons()

    # -- helpers
    def _install_shortcuts(self) -> None:
        """Save / Next / Previous on the keyboard (:mod:`napari_ssseg._napari.shortcuts`)."""
        from napari_ssseg._napari.shortcuts import install_shortcuts, tooltip_with_key

        for button, text, action in (
            (self.save_btn, "Save the labels as a new version now", "workspace_save"),
            (self.next_btn, "Save, then open the next case", "next_case"),
            (self.prev_btn, "Save, then open the previous case", "previous_case"),
        ):
            button.setToolTip(tooltip_with_key(text, action))
        buttons = {
            "workspace_save": self.save_btn,
            "next_case": self.next_btn,
            "previous_case": self.prev_btn,
        }
        # a key acts like its button: not while it is disabled (no workspace, busy)
        install_shortcuts(
            self,
            self.viewer,
            {
                action: (lambda b=button: b.click() if b.isEnabled() else None)
                for action, button in buttons.items()
            },
        )

    def _guard(self, fn, *args: Any) -> Any:
        try:
            return fn(*args)
        except SsegError as exc:
            notify_error(exc)
            self.status_label.setText(str(exc)[:300])
        return None

    def _on_layer_removed(self, event: Any) -> None:
        """The case's labels layer was removed by someone else (the user, or the viewer
        closing: ``viewer.close()`` removes every layer first): save its edits now -- the
        layer object still holds the data."""
        if self._removing_own or self.labels_layer is None:
            return
        if getattr(event, "value", None) is self.labels_layer:
            self._guard(self.autosaver.flush)

    def _watch_window(self) -> None:
        """Save and release the workspace when the main window closes (once per window)."""
        top = self.window()
        if top is self or self._closing_guard is not None:
            return
        self._closing_guard = _CloseWatcher(self._on_window_close)
        top.installEventFilter(self._closing_guard)

    def _on_window_close(self, event: Any) -> None:
        self._guard(self.autosaver.flush)  # whatever happens next, the edits are on disk
        if not event.spontaneous():  # viewer.close() / File > Close: no dialog can cancel it
            self._guard(self.close_workspace)
            return
        top = self.window()
        # a confirmation dialog may still cancel the close: release only if it went through
        QTimer.singleShot(0, lambda: None if top.isVisible() else self._guard(self.close_workspace))

    def _set_interval(self, value: int) -> None:
        self.autosaver.interval = float(value)

    @property
    def running(self) -> bool:
        """True while a background task runs or a loaded case's layers are being added."""
        return bool(self._steps) or (self.task is not None and self.task.running)

    def _update_buttons(self) -> None:
        has_ws = self.ws is not None
        has_case = has_ws and self.case_id is not None
        busy = self.running
        for b in (self.open_btn, self.prev_btn, self.next_btn, self.suggest_btn, self.evaluate_btn):
            b.setEnabled(has_ws and not busy)
        self.export_btn.setEnabled(has_ws and not busy)
        self.open_ws_btn.setEnabled(not busy)
        self.cancel_btn.setEnabled(busy)
        for b in (self.verify_btn, self.restore_btn, self.version_combo):
            b.setEnabled(bool(has_case) and not busy)
        # saving the current case stays possible while another case loads
        self.save_btn.setEnabled(bool(has_case))
        clin = self._clinical
        self.apply_mask_btn.setEnabled(
            bool(has_case) and not busy and clin is not None and clin.unmasked is not None
        )
        if hasattr(self, "dataset_box"):
            self.dataset_box.update_buttons(has_ws, busy)

    def _start(
        self, kind: str, gen_func: Any, *args: Any, desc: str, on_returned: Any
    ) -> TaskHandle:
        """Start a background task; its results are ignored if another task replaced it."""
        self._token += 1
        token = self._token
        self._task_kind = kind

        def returned(result: Any) -> None:
            if token != self._token or (self.task and self.task.stop_event.is_set()):
                return
            try:
                on_returned(result)
            except Exception as exc:  # noqa: BLE001 - a Qt slot must not raise: show it
                notify_error(exc)
                self.status_label.setText(f"{desc} failed: " + " ".join(str(exc).split())[:250])

        def errored(exc: BaseException) -> None:
            if token != self._token:
                return
            notify_error(exc)
            self.status_label.setText(f"{desc} failed: " + " ".join(str(exc).split())[:250])

        def aborted() -> None:
            if token == self._token:
                self.status_label.setText(f"{desc}: cancelled")

        def yielded(report: dict[str, Any]) -> None:
            if token == self._token and report.get("message"):
                self.status_label.setText(str(report["message"]))

        def finished() -> None:
            if token == self._token:
                self._update_buttons()

        self.task = start_task(
            gen_func,
            *args,
            desc=desc,
            on_returned=returned,
            on_error=errored,
            on_yielded=yielded,
            on_aborted=aborted,
            on_finished=finished,
        )
        self._update_buttons()
        return self.task

    def cancel(self) -> None:
        """Cancel the running task (a cancelled load keeps the current case and its layers)."""
        if self.task is not None and self.task.running:
            self.task.cancel()
            self.status_label.setText("cancelling...")
        if self._steps or self._pending:
            self._discard_pending()
            self.status_label.setText("cancelled")
        self._update_buttons()

    def _check_idle(self) -> None:
        if self.running:
            raise InputError(
                f"The panel is busy ({self._task_kind or 'working'}): wait for it to finish or "
                "press Cancel."
            )

    # -- workspace
    def open_workspace(self, path: str | Path, readonly: bool = False) -> None:
        """Open (or switch to) the workspace at ``path``."""

        if not str(path).strip():
            raise InputError(
                "Type the workspace folder first (made by `ssseg workspace init`, or create "
                "one with the panel's Create workspace button)."
            )
        self._check_idle()
        self._open_workspace(path, readonly)

    def _open_workspace(self, path: str | Path, readonly: bool = False) -> None:
        """:meth:`open_workspace` without the idle check (for a task's own result)."""
        from napari_ssseg.io.workspace import Workspace

        self.close_workspace()
        self.ws = Workspace.open(path, readonly=readonly)
        self._watch_window()
        self.path_edit.setText(str(self.ws.root))
        self.refresh()
        s = self.ws.summary()
        self.status_label.setText(f"{s['n_cases']} case(s); missing: {len(s['missing'])}")
        self._update_buttons()

    def close_workspace(self) -> None:
        """Cancel any task, save pending edits and release the workspace."""
        if self.ws is None:
            return
        self._token += 1  # results of a running task are ignored from now on
        if self.task is not None and self.task.running:
            self.task.cancel()
        self._discard_pending()
        try:
            self.autosaver.flush()
        finally:
            self._remove_layers()
            self.ws.close()
            self.ws = None
            self.case_id = None
            self._clinical = None
            self.table.setRowCount(0)
            self.metrics_table.setRowCount(0)
            self._update_buttons()

    def refresh(self) -> None:
        """Re-read the case list into the table."""
        recs = self.ws.cases if self.ws is not None else []
        self.table.setRowCount(len(recs))
        for i, r in enumerate(recs):
            score = r.scores.get("entropy")
            status = r.status + (" (missing)" if r.missing else "")
            values = (
                r.case_id,
                status,
                str(r.n_versions),
                "-" if score is None else f"{score:.3f}",
            )
            for j, v in enumerate(values):
                self.table.setItem(i, j, QTableWidgetItem(v))
            if r.case_id == self.case_id:
                self.table.selectRow(i)
        self._refresh_versions()

    def _refresh_versions(self) -> None:
        self.version_combo.clear()
        if self.ws is None or self.case_id is None:
            return
        for v in reversed(self.ws.versions(self.case_id)):
            self.version_combo.addItem(f"v{v.version} {v.source} {v.time[:19]} {v.note}", v.version)

    def _selected_id(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.table.item(rows[0].row(), 0).text()

    # -- cases
    def open_selected(self) -> TaskHandle | None:
        """Open the case selected in the table."""
        cid = self._selected_id()
        if cid is None:
            raise InputError("Select a case in the table first.")
        return self.open_case(cid)

    def _step_case(self, delta: int) -> TaskHandle | None:
        ids = self.ws.case_ids
        if not ids:
            return None
        i = ids.index(self.case_id) + delta if self.case_id in ids else 0
        return self.open_case(ids[i % len(ids)])

    def next_case(self) -> TaskHandle | None:
        """Save and open the next case in the list (in the background)."""
        return self._step_case(1)

    def previous_case(self) -> TaskHandle | None:
        """Save and open the previous case in the list (in the background)."""
        return self._step_case(-1)

    def open_case(self, case_id: str) -> TaskHandle:
        """Save the current case if dirty, then read ``case_id`` in a worker and show it with
        its latest labels when read.

        A load already running is cancelled (the newest request wins). If reading fails or is
        cancelled, the current case and its layers stay. Edits made to the current case while
        the new one loads are saved just before its layers are replaced.

        Returns
        -------
        TaskHandle
            The load task (``.running``, ``.cancel()``).
        """
        if self.ws is None:
            raise InputError("Open a workspace first.")
        if self.running:
            if self._task_kind != "load":
                self._check_idle()
            self.cancel()
        self.ws.case(case_id)  # unknown id: InputError now, not in the worker
        self.autosaver.flush()  # save-on-switch first: nothing below can lose these edits
        if self._clinical is not None:  # a corrected brain mask: kept before it is read again
            from napari_ssseg._napari.widgets.loader import keep_unapplied_brain_masks

            keep_unapplied_brain_masks(self._layers)
        versions = self.ws.versions(case_id)
        version = versions[-1].version if versions else None
        self.status_label.setText(f"opening {case_id}...")
        return self._start(
            "load",
            load_case_job,
            self.ws,
            case_id,
            version,
            desc=f"Opening {case_id}",
            on_returned=self._on_loaded,
        )

    def _on_loaded(self, result: dict[str, Any]) -> None:
        """GUI thread: add the new case's layers one per event-loop turn, then switch.

        The layers are added with :func:`~napari_ssseg._napari.layers.iter_show_case`, as the
        Loader panel does (visible layers first, so the case is seen after two turns); the
        layers it adds become the panel's own once the switch happens.
        """
        from napari_ssseg._napari.layers import find_open_case

        self.last_load_seconds = float(result["seconds"])
        self._pending = []
        self._steps = []
        if find_open_case(self.viewer, result["case"]) is None:
            self._steps.append(self._show_step_of(result))
        else:
            # the same case is already shown (this workspace's current case, or loaded by
            # another panel): iter_show_case would reuse those layers, which the switch then
            # removes, so this case gets layers of its own
            self._steps.extend(self._create_steps(result["layer_data"]))
        self._steps.append(lambda: self._switch_to(result))
        clin = result.get("clinical")
        if clin is not None and clin.brain is not None:  # a turn of its own, after the switch
            self._steps.append(lambda: self._add_brain_mask(result))
        self._update_buttons()
        # each new layer costs napari some time on the GUI thread: one per event-loop turn
        QTimer.singleShot(0, self._run_steps)

    def _create_steps(self, layer_data: list[Any]) -> list[Callable[[], None]]:
        from napari.layers import Layer

        steps = []
        for data, kwargs, layer_type in layer_data:

            def add(data: Any = data, kwargs: Any = kwargs, layer_type: str = layer_type) -> None:
                layer = Layer.create(data, kwargs, layer_type)
                self.viewer.add_layer(layer)
                self._pending.append(layer)

            steps.append(add)
        return steps

    def _show_step_of(self, result: dict[str, Any]) -> Callable[[], None]:
        """A step adding the next layer of ``result`` with iter_show_case; it puts itself
        back at the head of the steps until the generator is done."""
        from napari_ssseg._napari.layers import iter_show_case

        gen = iter_show_case(self.viewer, result["case"], result["layer_data"])

        def step() -> None:
            before = {id(x) for x in self.viewer.layers}
            try:
                next(gen)
                more = True
            except StopIteration:
                more = False
            self._pending.extend(x for x in self.viewer.layers if id(x) not in before)
            if more:
                self._steps.insert(0, step)
            else:
                self._pending.sort(key=lambda x: self.viewer.layers.index(x))

        return step

    def _run_steps(self) -> None:
        if not self._steps:
            self._update_buttons()
            return
        step = self._steps.pop(0)
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - shown; the current case stays
            self._discard_pending()
            notify_error(exc)
            self.status_label.setText("opening failed: " + " ".join(str(exc).split())[:250])
            self._update_buttons()
            return
        if self._steps:
            QTimer.singleShot(TURN_PAUSE_MS, self._run_steps)  # a turn between two layers
        else:
            self._update_buttons()

    def _discard_pending(self) -> None:
        self._steps = []
        for layer in self._pending:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._pending = []

    def _switch_to(self, result: dict[str, Any]) -> None:
        """Save the current case's latest edits, drop its layers, adopt the new ones."""
        from napari_ssseg.core.provenance import PROVENANCE_KEY

        self.autosaver.switch_case()  # raises (edits stay dirty, old layers stay) on failure
        self._remove_layers()
        self._layers, self._pending = self._pending, []
        self.labels_layer = next(
            (lyr for lyr in self._layers if lyr._type_string == "labels"), None
        )
        case_id = result["case_id"]
        self.case_id = case_id
        self._clinical = result.get("clinical")
        prov = result["provenance"]
        if prov is not None and self.labels_layer is not None:
            self.labels_layer.metadata[PROVENANCE_KEY] = prov
        if self.labels_layer is not None:
            from napari_ssseg._napari.provenance import track

            track(self.labels_layer)  # every paint is 'human' at once; undo/redo follow
        if self.labels_layer is not None:
            self._saved_labels = np.array(self.labels_layer.data, copy=True)
            for name in ("paint", "data", "set_data"):
                ev = getattr(self.labels_layer.events, name, None)
                if ev is not None:
                    ev.connect(self._on_edit)
        self._saved_prov = None if prov is None else prov.copy()
        self.refresh()
        self.status_label.setText(
            f"{case_id}: {self.ws.case(case_id).status} (read in {self.last_load_seconds:.1f} s)"
        )

    def _add_brain_mask(self, result: dict[str, Any]) -> None:
        """Show a clinical case's brain mask as a layer of the case (GUI thread).

        The user may correct it; a corrected mask is kept in the workspace's clinical cache
        when its layer goes (case switch, viewer closing: ``keep_unapplied_brain_masks``),
        so the next open of the case uses it (the images are zeroed outside it then).
        """
        from napari_ssseg._napari.widgets.loader import add_brain_mask_layer, watch_brain_masks

        if self.case_id != result["case_id"]:
            return  # another case was opened meanwhile
        watch_brain_masks(self.viewer)
        self._layers.append(add_brain_mask_layer(self.viewer, result["clinical"], result["case"]))

    def apply_brain_mask(self) -> None:
        """Zero the clinical case's images outside its (corrected) brain-mask layer.

        As the Loader's button (:func:`~napari_ssseg._napari.widgets.loader.apply_brain_mask`):
        the mask is kept in the workspace's clinical cache, so the next open of the case
        starts from it.
        """
        from napari_ssseg._napari.widgets.loader import apply_brain_mask

        self.status_label.setText(apply_brain_mask(self.viewer, self._clinical))

    def _on_edit(self, *_: Any) -> None:
        self.autosaver.mark_dirty()

    def _remove_layers(self) -> None:
        self._removing_own = True
        try:
            for layer in self._layers:
                if layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)
        finally:
            self._removing_own = False
        self._layers = []
        self.labels_layer = None

    def _save_current(self) -> None:
        """Save the labels layer as a new version (the Autosaver's save function)."""
        if self.ws is None or self.case_id is None or self.labels_layer is None:
            return
        from napari_ssseg.core.provenance import HUMAN, PROVENANCE_KEY, update_provenance

        labels = np.asarray(self.labels_layer.data)
        if self._saved_labels is not None and np.array_equal(labels, self._saved_labels):
            return
        prov = self.labels_layer.metadata.get(PROVENANCE_KEY)
        changed = labels != self._saved_labels if self._saved_labels is not None else labels > 0
        if self._saved_prov is not None and prov is not None and prov.shape == labels.shape:
            unclaimed = changed & (prov == self._saved_prov)
        elif prov is not None and prov.shape == labels.shape:
            unclaimed = changed & (prov == 0)
        else:
            unclaimed = changed
        prov = update_provenance(prov, unclaimed, HUMAN)
        clin = self._clinical
        if clin is None:
            self.ws.save_labels(self.case_id, labels, source="human", provenance=prov)
        else:  # a clinical study: versions stay on the reference series' native grid
            native = clin.mask_to_native(labels, base=clin.native_labels)
            native_prov = clin.mask_to_native(prov, base=clin.native_provenance)
            self.ws.save_labels(self.case_id, native, source="human", provenance=native_prov)
            clin.native_labels, clin.native_provenance = native, native_prov
        self.labels_layer.metadata[PROVENANCE_KEY] = prov
        self._saved_labels = labels.copy()
        self._saved_prov = prov.copy()
        self.refresh()

    def save_now(self) -> None:
        """Save the current labels as a new version now."""
        self.autosaver.mark_dirty()
        self.autosaver.flush()
        self.status_label.setText(f"{self.case_id}: saved")

    def autosave_tick(self) -> bool:
        """Timer callback: save if dirty and the interval has passed."""
        return self.autosaver.maybe_save()

    def mark_verified(self) -> None:
        """Save, then mark the current case verified."""
        self.autosaver.flush()
        self.ws.set_status(self.case_id, "verified")
        self.refresh()

    def restore_selected_version(self) -> None:
        """Restore the version chosen in the combo box (as a new version) and show it."""
        version = self.version_combo.currentData()
        if version is None:
            raise InputError("This case has no saved version to restore.")
        self.restore_version(int(version))

    def restore_version(self, version: int) -> None:
        """Restore ``version`` of the current case and show it in the labels layer."""
        self.autosaver.flush()
        self.ws.restore(self.case_id, version)
        labels = self.ws.latest_labels(self.case_id)
        prov = self.ws.read_provenance(self.case_id)
        clin = self._clinical
        if clin is not None:  # stored on the native grid: shown on the working grid
            clin.native_labels, clin.native_provenance = labels, prov
            labels = clin.labels_from_native(labels)
            prov = None if prov is None else clin.labels_from_native(prov)
        self.labels_layer.data = labels
        from napari_ssseg.core.provenance import PROVENANCE_KEY

        if prov is not None:
            self.labels_layer.metadata[PROVENANCE_KEY] = prov
        self._saved_labels = labels.copy()
        self._saved_prov = None if prov is None else prov.copy()
        self.autosaver.switch_case()  # the restore is saved: not dirty
        self.refresh()

    # -- suggestion and evaluation
    def suggest(self, n: int = 5) -> TaskHandle | list:
        """Rank new/proposed cases (stored uncertainty, or random) and select the best.

        The policy is :func:`~napari_ssseg.io.workspace.suggest.suggest_next` (the one of
        ``ssseg workspace suggest``): *random baseline* = ``strategy="random"``, *diversity* =
        ``diversity=0.5`` (the CLI's ``--diversity`` without a value). Without diversity the
        ranking is immediate and returned (a list); with diversity the image features of
        candidates without stored ones are read in a worker and the :class:`TaskHandle` is
        returned (the ranking lands in :attr:`last_suggestion`).
        """
        from napari_ssseg.io.workspace.suggest import suggest_next

        if self.ws is None:
            raise InputError("Open a workspace first.")
        self._check_idle()
        strategy = "random" if self.random_box.isChecked() else "entropy"
        if strategy == "random" or not self.diversity_box.isChecked():
            result = suggest_next(self.ws, n, strategy=strategy)
            return self._show_suggestion(result.ranked, _notes_text(result.notes))

        def done(result: Any) -> None:
            if not self.ws.readonly:
                for cid, f in result.new_features.items():
                    self.ws.set_features(cid, f)
            note = " (with diversity)" if result.strategy != "random" else ""
            self._show_suggestion(result.ranked, note + _notes_text(result.notes))

        return self._start("suggest", suggest_job, self.ws, n, desc="Suggesting", on_returned=done)

    def _show_suggestion(self, ranked: list, note: str = "") -> list:
        self.last_suggestion = ranked
        best = ranked[0].case_id
        self.table.selectRow(self.ws.case_ids.index(best))
        self.status_label.setText("suggested: " + ", ".join(s.case_id for s in ranked) + note)
        return ranked

    def evaluate(self) -> TaskHandle:
        """Save, then compute metrics of the latest labels vs ground truth in a worker and
        fill the evaluation table (cases, then mean and median rows)."""
        if self.ws is None:
            raise InputError("Open a workspace first.")
        self._check_idle()
        self.autosaver.flush()
        return self._start(
            "evaluate",
            evaluate_job,
            self.ws,
            list(self.ws.case_ids),
            self.lesion_box.isChecked(),
            desc="Evaluating",
            on_returned=self._fill,
        )

    def _fill(self, report: dict[str, Any]) -> None:
        self.last_report = report
        header, rows = metrics_rows(report)
        t = self.metrics_table
        t.clear()
        t.setColumnCount(len(header))
        t.setHorizontalHeaderLabels(header)
        t.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, v in enumerate(row):
                text = v if isinstance(v, str) else ("-" if v is None else f"{v:.4g}")
                t.setItem(i, j, QTableWidgetItem(text))
        if not report["cases"]:
            notify_info("No case has both saved labels and ground truth.")
        parts = [
            f"{r} Dice {m['dice']['mean']:.3f}"
            for r, m in report["summary"].items()
            if m["dice"]["mean"] is not None
        ]
        self.status_label.setText(f"{len(report['cases'])} case(s): " + ", ".join(parts))

    def export_evaluation(self, folder: str | Path) -> TaskHandle:
        """Write ``metrics.csv``, ``metrics.json`` and ``dice_boxplot.png`` to ``folder``
        (:func:`~napari_ssseg.io.workspace_export.evaluate_workspace`, in a worker)."""
        from napari_ssseg.io.evaluation import evaluate_workspace

        if self.ws is None:
            raise InputError("Open a workspace first.")
        if not str(folder).strip():
            raise InputError(
                "Type the export folder first (metrics.csv, metrics.json and dice_boxplot.png "
                "are written there; existing files are not overwritten)."
            )
        self._check_idle()
        self.autosaver.flush()
        out = Path(str(folder).strip()).expanduser()

        lesion_wise = self.lesion_box.isChecked()

        def job(ws: Any, out: Path):
            rep = yield from _step(evaluate_workspace, ws, out, step=0, total=1,
                                   lesion_wise=lesion_wise,
                                   message=f"exporting to {out}")  # fmt: skip
            return rep

        def done(report: dict[str, Any]) -> None:
            self._fill(report)
            self.status_label.setText("exported: " + ", ".join(report["files"]))

        return self._start("export", job, self.ws, out, desc="Exporting metrics", on_returned=done)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        """Save pending edits and release the lock when the panel closes."""
        self._guard(self.close_workspace)
        self.timer.stop()
        super().closeEvent(event)


class _CloseWatcher(QObject):
    """Event filter calling ``callback(event)`` when the watched window gets a close event."""

    def __init__(self, callback: Callable[[Any], None]) -> None:
        super().__init__()
        self._callback = callback

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 - Qt API
        if event.type() == QEvent.Close:
            self._callback(event)
        return False
