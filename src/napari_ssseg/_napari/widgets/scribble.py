"""Scribble panel: draw a few strokes, see the SP3-style propagated 3D label, accept it.

* **New scribble layer** adds ``"<case> scribbles"``: a labels layer on the case's grid
  (same scale/translate) with the codes of :mod:`napari_ssseg.core.scribbles` — 1 NCR,
  2 ED, 3 ET, 4 background (healthy tissue) — a thin brush (size 2) and class 2 selected.
  Keys ``1``-``4`` on the layer select the class.
* **Propagate** (and, with *live preview*, every stroke after a 400 ms pause) runs
  :meth:`~napari_ssseg.core.scribbles.ScribblePropagator.update` in a worker thread; the
  propagator (superpixels, features) is built once per case on the first run. The result
  is shown in ``"<case> scribble preview"``; the effort counter shows the scribbled voxels
  and their share of the preview's tumour volume.
* **Accept** writes the preview into the case's labels layer as ONE undoable step and marks
  the changed voxels with provenance :data:`~napari_ssseg.core.provenance.SCRIBBLE`.
* **Save scribbles** writes the strokes with the case's geometry (tumour classes in the
  case's label convention, healthy strokes as 255), readable by ``ssseg propagate``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton
from qtpy.QtCore import QTimer

from napari_ssseg._napari.layers import (
    CASE_KEY,
    CaseHandle,
    cases_in_viewer,
    label_colormap,
    labels_layer_of_case,
)
from napari_ssseg._napari.widgets._common import notify_error, notify_info
from napari_ssseg._napari.workers import start_task
from napari_ssseg.core.provenance import PROVENANCE_KEY, SCRIBBLE, update_provenance
from napari_ssseg.errors import InputError

__all__ = ["DEBOUNCE_MS", "ScribbleWidget", "propagate_job", "scribble_colormap"]

#: pause after the last stroke before a live preview runs
DEBOUNCE_MS = 400
_ROLE = "scribbles"
_ROLE_PREVIEW = "scribble preview"


def scribble_colormap() -> Any:
    """The BraTS class colours plus light grey for background strokes (code 4)."""
    from napari.utils.colormaps import DirectLabelColormap

    from napari_ssseg.core.case import CLASS_COLORS

    colors: dict[int | None, Any] = {k: np.asarray(v, float) for k, v in CLASS_COLORS.items()}
    colors[4] = np.array([0.8, 0.8, 0.8, 1.0])
    colors[None] = np.array([1.0, 0.0, 1.0, 1.0])
    return DirectLabelColormap(color_dict=colors, background_value=0)


def propagate_job(state: dict, case: Any, scribbles: np.ndarray):
    """Worker generator: build the propagator once per case (cached in ``state``), update.

    Returns
    -------
    PropagationResult
    """
    from napari_ssseg.core.scribbles import ScribblePropagator

    prop = state.get("propagator")
    if prop is None or state.get("case") is not case:
        yield {"step": 0, "total": 2, "message": "superpixels and features"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            prop = ScribblePropagator(case.images, case.modalities, None, case.scale)
        state["propagator"], state["case"] = prop, case
    yield {"step": 1, "total": 2, "message": "propagating"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return prop.update(scribbles)


class ScribbleWidget(Container):
    """Dock widget: scribble layer, live propagation preview, accept, save."""

    def __init__(self, viewer: Any) -> None:
        super().__init__(labels=False)
        self.viewer = viewer
        self.case_box = ComboBox(label="case", choices=self._case_choices)
        self.new_button = PushButton(text="New scribble layer")
        self.live = CheckBox(text="live preview", value=True)
        self.propagate_button = PushButton(text="Propagate")
        self.accept_button = PushButton(text="Accept into labels")
        self.save_path = FileEdit(mode="w", label="save to", filter="*.nii.gz")
        self.save_button = PushButton(text="Save scribbles")
        self.effort = Label(value="no scribbles")
        self.status = Label(value="")
        self.extend(
            [
                self.case_box,
                self.new_button,
                self.live,
                self.propagate_button,
                self.effort,
                self.accept_button,
                self.save_path,
                self.save_button,
                self.status,
            ]
        )
        self._state: dict = {}
        self.task = None
        self.result = None
        self._pending = False
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.propagate)
        self.new_button.changed.connect(self.new_scribble_layer)
        self.propagate_button.changed.connect(self.propagate)
        self.accept_button.changed.connect(self.accept)
        self.save_button.changed.connect(self.save)
        viewer.layers.events.inserted.connect(lambda *_: self.case_box.reset_choices())
        viewer.layers.events.removed.connect(lambda *_: self.case_box.reset_choices())

    # ------------------------------------------------------------------ helpers
    def _case_choices(self, *_: Any) -> list:
        return list(cases_in_viewer(self.viewer).values())

    @property
    def case(self):
        case = self.case_box.value
        if case is None:
            raise InputError("No case is open: load a case with the Loader panel first.")
        return case

    def _layer(self, role: str):
        case = self.case_box.value
        for layer in self.viewer.layers:
            handle = layer.metadata.get(CASE_KEY)
            if (
                layer.metadata.get("ssseg_role") == role
                and isinstance(handle, CaseHandle)
                and handle.case is case
            ):
                return layer
        return None

    @property
    def scribble_layer(self):
        """The case's scribble layer, or ``None``."""
        return self._layer(_ROLE)

    # ------------------------------------------------------------------ actions
    def new_scribble_layer(self, *_: Any):
        """Add (or return) the case's scribble layer."""
        try:
            case = self.case
        except InputError as exc:
            notify_error(exc)
            return None
        layer = self.scribble_layer
        if layer is not None:
            return layer
        layer = self.viewer.add_labels(
            np.zeros(case.shape, np.uint8),
            name=f"{case.name} scribbles",
            scale=case.scale,
            translate=case.translate,
            colormap=scribble_colormap(),
            metadata={CASE_KEY: CaseHandle(case), "ssseg_role": _ROLE},
        )
        layer.brush_size = 2
        layer.selected_label = 2
        layer.mode = "paint"
        for key in range(1, 5):
            layer.bind_key(str(key), _selector(key), overwrite=True)
        layer.events.paint.connect(self._on_paint)
        return layer

    def _on_paint(self, *_: Any) -> None:
        self._update_effort(None)
        if self.live.value:
            self._timer.start()

    def _update_effort(self, result) -> None:
        layer = self.scribble_layer
        n = 0 if layer is None else int(np.count_nonzero(layer.data))
        if result is None:
            self.effort.value = f"{n} scribbled voxels"
        else:
            tum = int(np.count_nonzero(result.labels))
            self.effort.value = (
                f"{n} scribbled voxels = {100 * n / max(tum, 1):.2f}% of {tum} label voxels"
            )

    def propagate(self, *_: Any) -> None:
        """Propagate the current strokes in a worker (re-runs once if strokes change)."""
        layer = self.scribble_layer
        if layer is None:
            notify_error(InputError("No scribble layer: press 'New scribble layer' and draw."))
            return
        if self.task is not None and self.task.running:
            self._pending = True
            return
        try:
            case = self.case
        except InputError as exc:
            notify_error(exc)
            return
        self.status.value = "propagating..."
        self.task = start_task(
            propagate_job,
            self._state,
            case,
            np.asarray(layer.data).copy(),
            desc="scribble propagation",
            on_returned=self._show,
            on_error=self._failed,
            on_finished=self._finished,
            show_progress=False,
        )

    def _failed(self, exc: BaseException) -> None:
        self.status.value = "propagation failed"
        notify_error(exc)

    def _finished(self) -> None:
        if self._pending:
            self._pending = False
            QTimer.singleShot(0, self.propagate)

    def _show(self, result) -> None:
        self.result = result
        case = self.case
        layer = self._layer(_ROLE_PREVIEW)
        if layer is None:
            layer = self.viewer.add_labels(
                result.labels,
                name=f"{case.name} scribble preview",
                scale=case.scale,
                translate=case.translate,
                colormap=label_colormap(),
                opacity=0.5,
                metadata={CASE_KEY: CaseHandle(case), "ssseg_role": _ROLE_PREVIEW},
            )
            scr = self.scribble_layer
            if scr is not None:  # keep drawing on the scribbles
                self.viewer.layers.selection.active = scr
        else:
            layer.data = result.labels
        self._update_effort(result)
        self.status.value = (
            f"preview: {result.info['mode']}, {result.info['seconds'] * 1000:.0f} ms"
        )

    def accept(self, *_: Any) -> np.ndarray | None:
        """Write the preview into the case's labels layer (one undoable step).

        Returns
        -------
        (Z, Y, X) ndarray of bool or None
            Voxels changed.
        """
        if self.result is None:
            notify_error(InputError("Nothing to accept: propagate the scribbles first."))
            return None
        case = self.case
        target = labels_layer_of_case(self.viewer, case)
        if target is None:
            target = self.viewer.add_labels(
                np.zeros(case.shape, np.uint8),
                name=f"{case.name} labels",
                scale=case.scale,
                translate=case.translate,
                colormap=label_colormap(),
                metadata={CASE_KEY: CaseHandle(case), "ssseg_role": "labels"},
            )
        current = np.asarray(target.data)
        new = self.result.labels.astype(current.dtype, copy=False)
        changed = current != new
        n = int(np.count_nonzero(changed))
        if n:
            indices = np.nonzero(changed)
            with target.block_history():
                target.data_setitem(indices, new[indices])
            target.metadata[PROVENANCE_KEY] = update_provenance(
                target.metadata.get(PROVENANCE_KEY), changed, SCRIBBLE
            )
        self.status.value = f"accepted: {n} voxels changed in {target.name!r} (undo: Ctrl+Z)"
        return changed

    def save(self, *_: Any) -> None:
        """Save the strokes (case convention, background 255) with the case's geometry."""
        from napari_ssseg.core.scribbles import encode_scribbles
        from napari_ssseg.io.writers import save_image

        layer = self.scribble_layer
        path = self.save_path.value
        if layer is None or not str(path) or str(path) == ".":
            notify_error(InputError("Choose a file name and draw scribbles before saving."))
            return
        case = self.case
        data = np.asarray(layer.data)
        try:
            save_image(encode_scribbles(data, case.convention), case, path)
        except Exception as exc:  # noqa: BLE001
            notify_error(exc)
            return
        notify_info(f"saved scribbles to {path}")


def _selector(code: int):
    def select(layer: Any) -> None:
        layer.selected_label = code

    return select
