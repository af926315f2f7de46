"""Workspace panel: browse a workspace's cases, open / next / previous, autosave, verify,
restore a version, suggest the next case, evaluate.

The panel is thin: all state lives in :class:`napari_ssseg.io.workspace.Workspace` on disk.
Opening a case shows its layers (from :func:`napari_ssseg._napari.layers.case_to_layer_data`)
with the latest label version; edits to its labels layer mark it dirty, and an
:class:`~napari_ssseg.io.workspace.Autosaver` saves a new version every N seconds, on case
switch, and when the panel closes. Voxels changed since the last save that no other panel
claimed in ``layer.metadata["ssseg_provenance"]`` are recorded as human-painted.

Cases are loaded on the GUI thread (a few hundred ms for a BraTS case); the panel's own
writes are small (one compressed label file, ~0.1-0.2 s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
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
from napari_ssseg.errors import InputError, SsegError

__all__ = ["WorkspaceWidget"]

_COLUMNS = ("case", "status", "versions", "uncertainty")


class WorkspaceWidget(QWidget):
    """Dock widget managing an annotation workspace.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.ws = None
        self.case_id: str | None = None
        self.labels_layer = None
        self._layers: list[Any] = []
        self._saved_labels: np.ndarray | None = None
        self._saved_prov: np.ndarray | None = None
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
        self.save_btn = QPushButton("Save now")
        self.verify_btn = QPushButton("Mark verified")
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
        self.status_label = QLabel("no workspace open")
        self.status_label.setWordWrap(True)

        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.path_edit)
        row.addWidget(self.open_ws_btn)
        layout.addLayout(row)
        layout.addWidget(self.table)
        row = QHBoxLayout()
        for b in (self.open_btn, self.prev_btn, self.next_btn):
            row.addWidget(b)
        layout.addLayout(row)
        row = QHBoxLayout()
        for b in (self.save_btn, self.verify_btn):
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
        layout.addWidget(self.evaluate_btn)
        layout.addWidget(self.status_label)

        self.open_ws_btn.clicked.connect(
            lambda: self._guard(self.open_workspace, self.path_edit.text())
        )
        self.open_btn.clicked.connect(lambda: self._guard(self.open_selected))
        self.table.doubleClicked.connect(lambda *_: self._guard(self.open_selected))
        self.prev_btn.clicked.connect(lambda: self._guard(self.previous_case))
        self.next_btn.clicked.connect(lambda: self._guard(self.next_case))
        self.save_btn.clicked.connect(lambda: self._guard(self.save_now))
        self.verify_btn.clicked.connect(lambda: self._guard(self.mark_verified))
        self.restore_btn.clicked.connect(lambda: self._guard(self.restore_selected_version))
        self.suggest_btn.clicked.connect(lambda: self._guard(self.suggest))
        self.evaluate_btn.clicked.connect(lambda: self._guard(self.evaluate))
        self.autosave_spin.valueChanged.connect(self._set_interval)

        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(lambda: self._guard(self.autosave_tick))
        self.timer.start()
        self._update_buttons()

    # -- helpers
    def _guard(self, fn, *args: Any) -> Any:
        try:
            return fn(*args)
        except SsegError as exc:
            notify_error(exc)
            self.status_label.setText(str(exc)[:300])
        return None

    def _set_interval(self, value: int) -> None:
        self.autosaver.interval = float(value)

    def _update_buttons(self) -> None:
        has_ws = self.ws is not None
        has_case = has_ws and self.case_id is not None
        for b in (self.open_btn, self.prev_btn, self.next_btn, self.suggest_btn, self.evaluate_btn):
            b.setEnabled(has_ws)
        for b in (self.save_btn, self.verify_btn, self.restore_btn, self.version_combo):
            b.setEnabled(bool(has_case))

    # -- workspace
    def open_workspace(self, path: str | Path, readonly: bool = False) -> None:
        """Open (or switch to) the workspace at ``path``."""
        from napari_ssseg.io.workspace import Workspace

        if not str(path).strip():
            raise InputError("Type the workspace folder first (created by `ssseg workspace init`).")
        self.close_workspace()
        self.ws = Workspace.open(path, readonly=readonly)
        self.path_edit.setText(str(self.ws.root))
        self.refresh()
        s = self.ws.summary()
        self.status_label.setText(f"{s['n_cases']} case(s); missing: {len(s['missing'])}")
        self._update_buttons()

    def close_workspace(self) -> None:
        """Save pending edits and release the workspace."""
        if self.ws is None:
            return
        try:
            self.autosaver.flush()
        finally:
            self._remove_layers()
            self.ws.close()
            self.ws = None
            self.case_id = None
            self.table.setRowCount(0)
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
    def open_selected(self) -> None:
        """Open the case selected in the table."""
        cid = self._selected_id()
        if cid is None:
            raise InputError("Select a case in the table first.")
        self.open_case(cid)

    def _step(self, delta: int) -> None:
        ids = self.ws.case_ids
        if not ids:
            return
        i = ids.index(self.case_id) + delta if self.case_id in ids else 0
        self.open_case(ids[i % len(ids)])

    def next_case(self) -> None:
        """Save and open the next case in the list."""
        self._step(1)

    def previous_case(self) -> None:
        """Save and open the previous case in the list."""
        self._step(-1)

    def open_case(self, case_id: str) -> None:
        """Save the current case if dirty, then show ``case_id`` with its latest labels."""
        from napari.layers import Layer

        from napari_ssseg._napari.layers import case_to_layer_data

        if self.ws is None:
            raise InputError("Open a workspace first.")
        self.autosaver.switch_case()
        case = self.ws.load_case(case_id)
        self._remove_layers()
        self.case_id = case_id
        for data, kwargs, layer_type in case_to_layer_data(case):
            layer = Layer.create(data, kwargs, layer_type)
            self.viewer.add_layer(layer)
            self._layers.append(layer)
            if layer_type == "labels":
                self.labels_layer = layer
        prov = self.ws.read_provenance(case_id) if case.labels is not None else None
        if prov is not None:
            from napari_ssseg.core.provenance import PROVENANCE_KEY

            self.labels_layer.metadata[PROVENANCE_KEY] = prov
        self._saved_labels = np.array(self.labels_layer.data, copy=True)
        self._saved_prov = None if prov is None else prov.copy()
        for name in ("paint", "data", "set_data"):
            ev = getattr(self.labels_layer.events, name, None)
            if ev is not None:
                ev.connect(self._on_edit)
        self.refresh()
        self._update_buttons()
        self.status_label.setText(f"{case_id}: {self.ws.case(case_id).status}")

    def _on_edit(self, *_: Any) -> None:
        self.autosaver.mark_dirty()

    def _remove_layers(self) -> None:
        for layer in self._layers:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
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
        self.ws.save_labels(self.case_id, labels, source="human", provenance=prov)
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
        self.labels_layer.data = labels
        from napari_ssseg.core.provenance import PROVENANCE_KEY

        if prov is not None:
            self.labels_layer.metadata[PROVENANCE_KEY] = prov
        self._saved_labels = labels.copy()
        self._saved_prov = None if prov is None else prov.copy()
        self.autosaver.switch_case()  # the restore is saved: not dirty
        self.refresh()

    # -- suggestion and evaluation
    def suggest(self, n: int = 5) -> list:
        """Rank new/proposed cases (stored uncertainty, or random) and select the best."""
        from napari_ssseg.core.suggest import histogram_features, rank_cases

        cand = [r for r in self.ws.cases if r.status in ("new", "proposed") and not r.missing]
        if not cand:
            raise InputError("No case is 'new' or 'proposed': nothing to suggest.")
        scores = {r.case_id: r.scores.get("entropy") for r in cand}
        note = ""
        if self.random_box.isChecked() or all(v is None for v in scores.values()):
            ranked = rank_cases(list(scores), n=n, strategy="random", seed=0)
            if not self.random_box.isChecked():
                note = " (no stored uncertainty: random order)"
        else:
            feats = None
            div = 0.5 if self.diversity_box.isChecked() else 0.0
            if div:
                feats = {}
                for cid, v in scores.items():
                    if v is None:
                        continue
                    f = self.ws.features(cid)
                    if f is None:
                        f = histogram_features(self.ws.load_case(cid, labels="none").images)
                        if not self.ws.readonly:
                            self.ws.set_features(cid, f)
                    feats[cid] = f
            ranked = rank_cases(scores, n=n, features=feats, diversity=div)
        best = ranked[0].case_id
        ids = self.ws.case_ids
        self.table.selectRow(ids.index(best))
        self.status_label.setText("suggested: " + ", ".join(s.case_id for s in ranked) + note)
        return ranked

    def evaluate(self) -> dict:
        """Metrics of the latest labels vs ground truth; shows the mean Dice per region."""
        from napari_ssseg.io.workspace_export import evaluate_workspace

        self.autosaver.flush()
        rep = evaluate_workspace(self.ws, None)
        if not rep["cases"]:
            notify_info("No case has both saved labels and ground truth.")
        parts = [
            f"{r} Dice {m['dice']['mean']:.3f}"
            for r, m in rep["summary"].items()
            if m["dice"]["mean"] is not None
        ]
        self.status_label.setText(f"{len(rep['cases'])} case(s): " + ", ".join(parts))
        return rep

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        """Save pending edits and release the lock when the panel closes."""
        self._guard(self.close_workspace)
        self.timer.stop()
        super().closeEvent(event)
