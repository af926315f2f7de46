"""Create a workspace and export a dataset from the Workspace panel (no console needed).

The box sits at the bottom of the Workspace panel
(:class:`~napari_ssseg._napari.widgets.workspace.WorkspaceWidget`) and runs the same code as
``ssseg workspace init`` (:func:`napari_ssseg.io.dataset_import.create_workspace`) and
``ssseg workspace export`` (:func:`napari_ssseg.io.dataset_export.export_workspace`), in the
panel's background task (progress in the panel's status line, its Cancel button stops it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QWidget,
)

from napari_ssseg._napari.workers import callback_generator
from napari_ssseg.errors import InputError

__all__ = ["WorkspaceDatasetBox", "create_job", "export_job", "EXPORT_FORMATS"]

#: Dataset layouts the export offers (see :func:`~napari_ssseg.io.dataset_export.export_workspace`).
EXPORT_FORMATS: tuple[str, ...] = ("nnunet", "msd", "brats")
_LABELS_AS = (
    ("ground truth (for evaluation)", None),
    ("verified labels", "verified"),
    ("proposals to review", "proposed"),
)


def create_job(ws_path: str, source: str | None, copy_images: bool, labels_as: str | None):
    """Create the workspace (worker thread), release it and return its folder and counts."""
    from napari_ssseg.io.dataset_import import create_workspace

    ws, imported, status = yield from callback_generator(
        create_workspace, ws_path, source, copy_images=copy_images, labels_as=labels_as
    )
    try:
        n = len(ws.case_ids)
        root = str(ws.root)
    finally:
        ws.close()  # the panel reopens it on the GUI thread
    return {"root": root, "n_cases": n, "imported": len(imported), "status": status}


def export_job(ws: Any, out: str, fmt: str, verified: bool):
    """Export the workspace's cases to a dataset layout (worker thread)."""
    from napari_ssseg.io.dataset_export import export_workspace

    files = yield from callback_generator(export_workspace, ws, out, fmt, verified=verified)
    return {"out": out, "format": fmt, "files": [str(f) for f in files]}


class WorkspaceDatasetBox(QGroupBox):
    """ "New workspace" and "Export dataset" controls of the Workspace panel.

    Parameters
    ----------
    panel : WorkspaceWidget
        The panel whose workspace folder field, background task and status line are used.
    """

    def __init__(self, panel: Any, parent: QWidget | None = None) -> None:
        super().__init__("New workspace / export dataset", parent)
        self.panel = panel
        self.source_edit = QLineEdit()
        self.source_edit.setPlaceholderText("folder of cases, or an nnU-Net / MSD dataset")
        self.labels_combo = QComboBox()
        for text, _ in _LABELS_AS:
            self.labels_combo.addItem(text)
        self.labels_combo.setToolTip(
            "What the cases' label files are: ground truth (kept aside for evaluation), or "
            "imported as version 1 of each case (verified, or proposed for review)."
        )
        self.copy_box = QCheckBox("copy images")
        self.create_btn = QPushButton("Create workspace")
        self.create_btn.setToolTip(
            "Create a workspace in the folder typed at the top of the panel from the cases "
            "folder (as `ssseg workspace init WS --from DIR`), then open it."
        )
        self.format_combo = QComboBox()
        self.format_combo.addItems(list(EXPORT_FORMATS))
        self.all_box = QCheckBox("all cases with labels")
        self.all_box.setToolTip("Default: only verified cases (as `ssseg workspace export`).")
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("new folder for the exported dataset")
        self.export_btn = QPushButton("Export dataset")

        form = QFormLayout(self)
        form.addRow("cases from", self.source_edit)
        row = QHBoxLayout()
        row.addWidget(self.labels_combo)
        row.addWidget(self.copy_box)
        form.addRow("label files are", row)
        form.addRow(self.create_btn)
        row = QHBoxLayout()
        row.addWidget(self.format_combo)
        row.addWidget(self.all_box)
        form.addRow("export as", row)
        form.addRow("to", self.out_edit)
        form.addRow(self.export_btn)

        self.create_btn.clicked.connect(lambda: panel._guard(self.create))
        self.export_btn.clicked.connect(lambda: panel._guard(self.export))

    def update_buttons(self, has_ws: bool, busy: bool) -> None:
        """Enable the buttons that can run now."""
        self.create_btn.setEnabled(not busy)
        self.export_btn.setEnabled(has_ws and not busy)

    def create(self) -> Any:
        """Create the workspace typed in the panel's folder field, then open it."""
        panel = self.panel
        ws_path = panel.path_edit.text().strip()
        if not ws_path:
            raise InputError(
                "Type the new workspace's folder in the field at the top of the panel first."
            )
        source = self.source_edit.text().strip() or None
        if source is not None and not Path(source).expanduser().is_dir():
            raise InputError(
                f"Cases folder {source!r} is not a folder: type a folder of case folders "
                "(BraTS/MSD/UPENN naming) or of an nnU-Net / MSD dataset."
            )
        labels_as = _LABELS_AS[self.labels_combo.currentIndex()][1]
        if labels_as is not None and source is None:
            raise InputError("Importing label files needs a cases folder: type it first.")
        panel._check_idle()
        panel.close_workspace()

        def done(result: dict[str, Any]) -> None:
            panel._open_workspace(result["root"])
            extra = (
                f"; {result['imported']} label file(s) imported as {result['status']}"
                if result["imported"]
                else ""
            )
            panel.status_label.setText(
                f"created {result['root']} with {result['n_cases']} case(s){extra}"
            )

        return panel._start(
            "create",
            create_job,
            str(Path(ws_path).expanduser()),
            None if source is None else str(Path(source).expanduser()),
            self.copy_box.isChecked(),
            labels_as,
            desc="Creating the workspace",
            on_returned=done,
        )

    def export(self) -> Any:
        """Save pending edits, then export the cases to the typed folder."""
        panel = self.panel
        if panel.ws is None:
            raise InputError("Open a workspace first.")
        out = self.out_edit.text().strip()
        if not out:
            raise InputError(
                "Type the export folder first (a new folder: nothing is ever overwritten)."
            )
        panel._check_idle()
        panel.autosaver.flush()
        fmt = self.format_combo.currentText()

        def done(result: dict[str, Any]) -> None:
            panel.status_label.setText(
                f"exported {len(result['files'])} file(s) as {result['format']} to {result['out']}"
            )

        return panel._start(
            "export dataset",
            export_job,
            panel.ws,
            str(Path(out).expanduser()),
            fmt,
            not self.all_box.isChecked(),
            desc="Exporting the dataset",
            on_returned=done,
        )
