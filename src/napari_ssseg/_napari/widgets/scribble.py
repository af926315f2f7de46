"""Scribble panel: draw a few strokes, see the SP3-style propagated 3D label, accept it.

* **New scribble layer** adds ``"<case> scribbles"``: a labels layer on the case's grid
  (same scale/translate) with the codes of :mod:`napari_ssseg.core.scribbles` — 1 NCR,
  2 ED, 3 ET, 4 background (healthy tissue), 5 tumour of unknown class (region mode) — a
  thin brush (size 2) and class 2 selected. Keys ``1``-``4`` on the layer select the class
  (``5``: tumour).
* **Region mode** switches the stroke palette to tumour / background: the selected label
  becomes 5 (tumour), keys ``1``-``3`` and ``5`` select tumour and ``4`` background.
  Turning it off selects ED again. Tumour strokes seed the whole tumour only (the classes
  inside come from class strokes, else the model, else ED; ``docs/scribbles.md``).
* **Use model probabilities** passes a model's class probabilities to the propagator
  (model-assisted mode): those of a docked Propose panel's last result for the case, or
  else the default model run once in the worker (:func:`napari_ssseg.ml.inference.
  predict_case`, CPU; torch is only imported there) and cached per case.
  **Show weight map** adds ``"<case> scribble 1 - weight"``: one minus the per-voxel
  pseudo-label weight, in red, additive and translucent — dark where a voxel counts fully,
  bright red where it is down-weighted, full red where it is ignored (weight 0).
* **Propagate** (and, with *live preview*, every stroke after a 400 ms pause) runs
  :meth:`~napari_ssseg.core.scribbles.ScribblePropagator.update` in a worker thread; the
  propagator (superpixels, features) is built once per case on the first run. The result
  is shown in ``"<case> scribble preview"``; the effort counter shows the scribbled voxels
  and their share of the preview's tumour volume.
* **Accept** merges the preview into the case's labels layer as ONE undoable step
  (:func:`~napari_ssseg.core.provenance.accept_mask`): in *merge* mode (default) only the
  voxels the preview labels are written and background strokes erase, every other label
  stays; *replace* writes the whole preview. Voxels painted by hand are kept unless *keep
  hand-painted voxels* is unticked. Written voxels get provenance
  :data:`~napari_ssseg.core.provenance.SCRIBBLE`; undo / redo restore labels and
  provenance together (:mod:`napari_ssseg._napari.provenance`).
* **Save scribbles** writes the strokes with the case's geometry (tumour classes in the
  case's label convention, healthy strokes as 255), readable by ``ssseg propagate``.
"""

from __future__ import annotations

import time
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
from napari_ssseg._napari.provenance import track
from napari_ssseg._napari.widgets._common import notify_error, notify_info
from napari_ssseg._napari.workers import recorded_warnings, start_task
from napari_ssseg.core.provenance import SCRIBBLE, accept_mask
from napari_ssseg.core.scribbles import BACKGROUND, TUMOUR
from napari_ssseg.errors import InputError

__all__ = ["DEBOUNCE_MS", "ScribbleWidget", "propagate_job", "scribble_colormap"]

#: pause after the last stroke before a live preview runs
DEBOUNCE_MS = 400
_ROLE = "scribbles"
_ROLE_PREVIEW = "scribble preview"
_ROLE_WEIGHTS = "scribble weights"


def scribble_colormap() -> Any:
    """BraTS class colours, light grey for background (4), yellow for tumour strokes (5)."""
    from napari.utils.colormaps import DirectLabelColormap

    from napari_ssseg.core.case import CLASS_COLORS

    colors: dict[int | None, Any] = {k: np.asarray(v, float) for k, v in CLASS_COLORS.items()}
    colors[4] = np.array([0.8, 0.8, 0.8, 1.0])
    colors[5] = np.array([1.0, 0.85, 0.1, 1.0])
    colors[None] = np.array([1.0, 0.0, 1.0, 1.0])
    return DirectLabelColormap(color_dict=colors, background_value=0)


def propagate_job(
    state: dict,
    case: Any,
    scribbles: np.ndarray,
    probabilities: np.ndarray | None = None,
    predict: bool = False,
):
    """Worker generator: build the propagator once per case (cached in ``state``), update.

    Parameters
    ----------
    state : dict
        Per-panel cache: ``propagator``/``case`` and ``probabilities``/``prob_case``.
    case : Case
    scribbles : (Z, Y, X) ndarray of uint8
        Internal scribble codes.
    probabilities : (4, Z, Y, X) or (3, Z, Y, X) ndarray, optional
        Class (or region WT/TC/ET) probabilities: model-assisted propagation.
    predict : bool
        Without ``probabilities``: run the default model once (cached in ``state``).

    Returns
    -------
    PropagationResult
    """
    from napari_ssseg.core.scribbles import classes_from_region_probabilities

    if probabilities is None and predict:
        if state.get("prob_case") is case and state.get("probabilities") is not None:
            probabilities = state["probabilities"]
        else:
            yield {"step": 0, "total": 3, "message": "running the model (once per case)"}
            from napari_ssseg.ml.inference import predict_case  # torch: worker only

            out = predict_case(case, None, device="cpu")
            probabilities = np.asarray(out["probabilities"], np.float32)
            state["probabilities"], state["prob_case"] = probabilities, case
    if probabilities is not None:
        probabilities = np.asarray(probabilities)
        if probabilities.ndim == 4 and probabilities.shape[0] == 3:
            probabilities = classes_from_region_probabilities(probabilities)

    prop = state.get("propagator")
    if prop is None or state.get("case") is not case:
        yield {"step": 0, "total": 2, "message": "superpixels and features"}
        # user warnings (channel fallbacks) are dropped, as before; recorded per thread
        # instead of catch_warnings, which would swap the process-wide filters
        with recorded_warnings(UserWarning):
            prop = _build_propagator(case)
        state["propagator"], state["case"] = prop, case
    yield {"step": 1, "total": 2, "message": "propagating"}
    with recorded_warnings(UserWarning):
        return prop.update(scribbles, probabilities)


def prepare_job(state: dict, case: Any):
    """Worker generator: build ``case``'s propagator (superpixels + features) ahead of the
    first stroke, into ``state`` as :func:`propagate_job` would (nothing if it is there).

    The heavy part runs in a child process (:mod:`napari_ssseg.core.scribble_prefetch`),
    which fills the on-disk superpixel / feature cache; in this thread the propagator is then
    built from that cache (about 1 s). A worker thread doing all of it stalled napari's event
    loop for seconds on 2 cores. Cancelling the task kills the child.
    """
    import json
    import subprocess
    import tempfile
    from pathlib import Path

    from napari_ssseg.errors import SsegError

    if state.get("propagator") is not None and state.get("case") is case:
        return None
    yield {"step": 0, "total": 2, "message": f"superpixels and features of {case.name}"}
    with tempfile.TemporaryDirectory(prefix="ssseg-prefetch-") as tmp:
        images, spec, err = Path(tmp, "images.npy"), Path(tmp, "spec.json"), Path(tmp, "err")
        np.save(images, np.asarray(case.images))  # same dtype and values: same cache key
        spec.write_text(
            json.dumps(
                {"modalities": list(case.modalities), "spacing": [float(v) for v in case.scale]}
            )
        )
        with open(err, "wb") as fh:
            proc = subprocess.Popen(
                prefetch_command(images, spec), stdout=subprocess.DEVNULL, stderr=fh
            )
            try:
                while proc.poll() is None:
                    time.sleep(0.2)
                    yield None  # heartbeat; a cancel stops the generator here
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if proc.returncode != 0:
            tail = err.read_text(errors="replace").strip().splitlines()[-3:]
            raise SsegError(
                f"Preparing the superpixels of {case.name} failed in the helper process (exit "
                f"{proc.returncode}): {' '.join(tail) or 'no message'}. They are computed at "
                "the first stroke instead; untick 'prepare superpixels when a case loads' to "
                "stop trying."
            )
    yield {"step": 1, "total": 2, "message": "reading the prepared superpixels"}
    with recorded_warnings(UserWarning):
        prop = _build_propagator(case)
    state["propagator"], state["case"] = prop, case
    return None


def prefetch_command(images: Any, spec: Any) -> list[str]:
    """The child process that fills the superpixel cache of ``images`` (``.npy`` path) with
    the modalities and spacing of ``spec`` (``.json`` path)."""
    import sys

    return [sys.executable, "-m", "napari_ssseg.core.scribble_prefetch", str(images), str(spec)]


def _build_propagator(case: Any) -> Any:
    """``case``'s ScribblePropagator, superpixels and features through the disk cache (the
    one :func:`prepare_job`'s child process fills)."""
    from napari_ssseg.core.scribbles import ScribblePropagator

    return ScribblePropagator(case.images, case.modalities, None, case.scale, cache=True)


#: Pause (ms) after the last layer of a load before the superpixels are prepared.
PREPARE_DELAY_MS = 1000


class ScribbleWidget(Container):
    """Dock widget: scribble layer, live propagation preview, accept, save."""

    def __init__(self, napari_viewer: Any) -> None:
        # the parameter must be called ``napari_viewer`` (or be annotated napari.Viewer): that
        # is how napari injects the viewer when the panel is opened from the Plugins menu
        super().__init__(labels=False)
        viewer = napari_viewer
        self.viewer = viewer
        self.case_box = ComboBox(label="case", choices=self._case_choices)
        self.new_button = PushButton(text="New scribble layer")
        self.live = CheckBox(text="live preview", value=True)
        self.region = CheckBox(text="region mode (tumour / background)", value=False)
        self.use_model = CheckBox(text="use model probabilities", value=False)
        self.show_weights = CheckBox(text="show weight map", value=False)
        self.prepare = CheckBox(text="prepare superpixels when a case loads", value=True)
        self.prepare.tooltip = (
            "Build the case's superpixels and features in the background as soon as it is "
            "loaded, so the first preview comes right after the first stroke."
        )
        self.propagate_button = PushButton(text="Propagate")
        self.accept_button = PushButton(text="Accept into labels")
        self.accept_mode = ComboBox(
            label="accept",
            choices=[
                ("merge: add the preview, keep other labels", "merge"),
                ("replace: the preview everywhere", "replace"),
            ],
            value="merge",
        )
        self.keep_human = CheckBox(text="keep hand-painted voxels", value=True)
        self.save_path = FileEdit(mode="w", label="save to", filter="*.nii.gz")
        self.save_button = PushButton(text="Save scribbles")
        self.effort = Label(value="no scribbles")
        self.status = Label(value="")
        self.extend(
            [
                self.case_box,
                self.new_button,
                self.live,
                self.region,
                self.use_model,
                self.show_weights,
                self.prepare,
                self.propagate_button,
                self.effort,
                self.accept_mode,
                self.keep_human,
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
        #: what the running task does: "prepare" (superpixels ahead of time) or "propagate"
        self._task_kind = ""
        self._prepare_case: Any = None
        self._prepare_t0 = 0.0
        #: a preparation was cancelled for a newly loaded case: start one when it has stopped
        self._prepare_again = False
        # start preparing a moment after the last layer of a load (the loader adds one
        # layer per event-loop turn; the superpixels should not compete with it)
        self._prepare_timer = QTimer()
        self._prepare_timer.setSingleShot(True)
        self._prepare_timer.setInterval(PREPARE_DELAY_MS)
        self._prepare_timer.timeout.connect(self.prepare_superpixels)
        # elapsed-time line while preparing (once a second)
        self._tick = QTimer()
        self._tick.setInterval(1000)
        self._tick.timeout.connect(self._show_preparing)
        from napari_ssseg._napari.widgets._common import PanelLife

        self._life = PanelLife(self.native)
        self._life.on_close(self._on_close)
        self.new_button.changed.connect(self.new_scribble_layer)
        self.propagate_button.changed.connect(self.propagate)
        self.accept_button.changed.connect(self.accept)
        from napari_ssseg._napari.shortcuts import install_shortcuts, tooltip_with_key

        self.accept_button.tooltip = tooltip_with_key(
            "Merge the preview into the case's labels layer (one undo step)", "scribble_accept"
        )
        install_shortcuts(self, viewer, {"scribble_accept": self.accept})
        self.save_button.changed.connect(self.save)
        self.region.changed.connect(self._on_region)
        self.show_weights.changed.connect(lambda *_: self._show_weights())
        self.prepare.changed.connect(self._on_prepare_toggled)
        self._life.connect(viewer.layers.events.inserted, self._on_inserted)
        self._life.connect(viewer.layers.events.removed, lambda *_: self.case_box.reset_choices())

    # ------------------------------------------------------------------ superpixels ahead
    def _on_close(self) -> None:
        """The panel is gone: stop its timers and its task (a preparation's child too)."""
        for t in (self._prepare_timer, self._tick, self._timer):
            t.stop()
        if self.task is not None and self.task.running:
            self.task.cancel()

    def _on_inserted(self, event: Any = None) -> None:
        if not self._life.alive:
            return
        self.case_box.reset_choices()
        layer = getattr(event, "value", None)
        handle = layer.metadata.get(CASE_KEY) if layer is not None else None
        if not isinstance(handle, CaseHandle) or layer.metadata.get("ssseg_role") != "image":
            return
        if handle.case is self._prepare_case:
            return  # another layer of the same case
        self._prepare_case = handle.case
        self._cancel_preparation()  # one for a case no longer wanted: stop it (and its child)
        if self.prepare.value:
            self._prepare_timer.start()

    def _cancel_preparation(self) -> None:
        """Cancel a running preparation (its child process is killed)."""
        if self._task_kind == "prepare" and self.task is not None and self.task.running:
            self._prepare_again = True
            self.task.cancel()

    def _on_prepare_toggled(self, value: bool) -> None:
        """Unticked: stop a running preparation; ticked: prepare the shown case."""
        if not self._life.alive:
            return
        if value:
            self._prepare_timer.start()
        else:
            self._prepare_timer.stop()
            self._cancel_preparation()

    def prepare_superpixels(self, *_: Any) -> Any:
        """Build the loaded case's superpixels and features in a worker (returns the task).

        Does nothing when they are ready, while another task of the panel runs, or when the
        case is no longer shown. A stroke drawn meanwhile is propagated once they are ready.
        """
        if not self._life.alive:
            return None
        case = self._prepare_case
        if case is None or not any(c is case for c in cases_in_viewer(self.viewer).values()):
            return None
        if self._state.get("case") is case and self._state.get("propagator") is not None:
            return None
        if self.task is not None and self.task.running:
            return None
        self._task_kind = "prepare"
        self._prepare_t0 = time.perf_counter()
        self._show_preparing()
        self._tick.start()
        self.task = start_task(
            prepare_job,
            self._state,
            case,
            desc=f"superpixels of {case.name}",
            on_returned=lambda _r: self._prepared(case),
            on_error=self._failed,
            on_aborted=lambda: self._prepare_stopped(case),
            on_finished=self._finished,
        )
        return self.task

    def _show_preparing(self) -> None:
        if not self._life.alive or self._task_kind != "prepare":
            self._tick.stop()
            return
        case = self._prepare_case
        waiting = " (your strokes are propagated once they are ready)" if self._pending else ""
        self.status.value = (
            f"preparing superpixels of {getattr(case, 'name', '?')}: "
            f"{time.perf_counter() - self._prepare_t0:.0f} s{waiting}"
        )

    def _prepare_stopped(self, case: Any) -> None:
        if not self._life.alive:
            return
        self._tick.stop()
        self.status.value = f"preparing the superpixels of {case.name} stopped"

    def _prepared(self, case: Any) -> None:
        if not self._life.alive:
            return
        self._tick.stop()
        self.status.value = (
            f"superpixels of {case.name} ready ({time.perf_counter() - self._prepare_t0:.1f} s)"
        )

    # ------------------------------------------------------------------ helpers
    def _case_choices(self, *_: Any) -> list[tuple[str, Any]]:
        # (name, case): a bare Case would be shown by its (very long) repr
        return list(cases_in_viewer(self.viewer).items())

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
        layer.selected_label = TUMOUR if self.region.value else 2
        layer.mode = "paint"
        for key in range(1, 6):
            layer.bind_key(str(key), self._selector(key), overwrite=True)
        layer.events.paint.connect(self._on_paint)
        return layer

    def _selector(self, key: int):
        def select(layer: Any) -> None:
            layer.selected_label = self.code_for_key(key)

        return select

    def code_for_key(self, key: int) -> int:
        """Scribble code a number key selects (depends on region mode)."""
        if self.region.value:
            return BACKGROUND if key == 4 else TUMOUR
        return int(key)

    def _on_region(self, on: bool) -> None:
        layer = self.scribble_layer
        if layer is not None:
            layer.selected_label = TUMOUR if on else 2
        self.status.value = (
            "region mode: draw tumour (5) / background (4)" if on else "class mode: 1-4"
        )

    def model_probabilities(self) -> np.ndarray | None:
        """Class probabilities for the current case: cached, or a docked Propose panel's.

        Returns
        -------
        (K, Z, Y, X) ndarray or None
            ``None`` when neither exists (the worker then runs the default model).
        """
        case = self.case_box.value
        if case is None:
            return None
        if self._state.get("prob_case") is case and self._state.get("probabilities") is not None:
            return self._state["probabilities"]
        from napari_ssseg._napari.widgets.propose import ProposeWidget

        for dock in list(getattr(self.viewer.window, "dock_widgets", {}).values()):
            inner = dock
            if not isinstance(inner, ProposeWidget):
                inner = getattr(dock, "inner_widget", None) or getattr(dock, "widget", None)
                if callable(inner) and not isinstance(inner, ProposeWidget):
                    try:
                        inner = inner()
                    except TypeError:
                        inner = None
                inner = _magicgui_owner(inner)
            if not isinstance(inner, ProposeWidget) or not inner.last_result:
                continue
            prob = inner.last_result.get("probabilities")
            owner = getattr(inner, "_running_case", None)
            if owner is None:
                owner = inner.case.value
            if prob is None or owner is not case:
                continue
            prob = np.asarray(prob)
            if prob.ndim == 4 and prob.shape[1:] == tuple(case.shape):
                return prob
        return None

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
            if self._task_kind == "prepare":
                self._show_preparing()
            return
        try:
            case = self.case
        except InputError as exc:
            notify_error(exc)
            return
        probabilities, predict = None, False
        if self.use_model.value:
            probabilities = self.model_probabilities()
            predict = probabilities is None
        self.status.value = "running the model..." if predict else "propagating..."
        self._task_kind = "propagate"
        self.task = start_task(
            propagate_job,
            self._state,
            case,
            np.asarray(layer.data).copy(),
            probabilities,
            predict,
            desc="scribble propagation",
            on_returned=self._show,
            on_error=self._failed,
            on_finished=self._finished,
            show_progress=False,
        )

    def _failed(self, exc: BaseException) -> None:
        if not self._life.alive:
            return
        what = "preparing the superpixels" if self._task_kind == "prepare" else "propagation"
        self.status.value = f"{what} failed"
        notify_error(exc)

    def _finished(self) -> None:
        if not self._life.alive:
            return
        again, self._prepare_again = self._prepare_again, False
        self._task_kind = ""
        self._tick.stop()
        if self._pending:
            self._pending = False
            QTimer.singleShot(0, self.propagate)
        elif again and self.prepare.value:
            # cancelled because another case was loaded meanwhile: prepare that one now
            self._prepare_timer.start()

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
        self._show_weights()
        self.status.value = (
            f"preview: {result.info['mode']}, {result.info['seconds'] * 1000:.0f} ms"
        )

    def _show_weights(self) -> None:
        """Add / update / remove the translucent ``1 - weight`` layer (1 = ignored voxel)."""
        layer = self._layer(_ROLE_WEIGHTS)
        if not self.show_weights.value or self.result is None:
            if layer is not None:
                self.viewer.layers.remove(layer)
            return
        data = 1.0 - self.result.weights
        if layer is not None:
            layer.data = data
            return
        case = self.case
        self.viewer.add_image(
            data,
            name=f"{case.name} scribble 1 - weight",
            scale=case.scale,
            translate=case.translate,
            colormap="red",
            contrast_limits=(0.0, 1.0),
            opacity=0.6,
            blending="additive",
            metadata={CASE_KEY: CaseHandle(case), "ssseg_role": _ROLE_WEIGHTS},
        )
        scr = self.scribble_layer
        if scr is not None:
            self.viewer.layers.selection.active = scr

    def accept(self, *_: Any) -> np.ndarray | None:
        """Merge the preview into the case's labels layer (one undoable step).

        In ``merge`` mode (default) the voxels the preview labels are written and every other
        label stays; background strokes (code 4) erase. ``replace`` writes the whole preview.
        Voxels painted by hand (provenance ``human``) are kept unless *keep hand-painted
        voxels* is unticked. The written voxels get provenance ``scribble``; Ctrl+Z undoes
        the labels and their provenance together.

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
        tracker = track(target)
        current = np.asarray(target.data)
        new = self.result.labels.astype(current.dtype, copy=False)
        strokes = self.scribble_layer
        erase = None
        if strokes is not None and np.shape(strokes.data) == current.shape:
            erase = np.asarray(strokes.data) == BACKGROUND
        changed = accept_mask(
            current,
            new,
            tracker.provenance,
            mode=self.accept_mode.value,
            keep_human=self.keep_human.value,
            erase=erase,
        )
        n = int(np.count_nonzero(changed))
        kept = int(np.count_nonzero((current != new) & ~changed))
        if n:
            indices = np.nonzero(changed)
            with tracker.writing(SCRIBBLE), target.block_history():
                target.data_setitem(indices, new[indices])
        self.status.value = (
            f"accepted: {n} voxels changed in {target.name!r}, {kept} kept (undo: Ctrl+Z)"
        )
        return changed

    def save(self, *_: Any) -> None:
        """Save the strokes (case convention, background 255, tumour 254) with the geometry."""
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


def _magicgui_owner(widget: Any) -> Any:
    """The magicgui widget owning a Qt widget (dock widgets hold the native widget)."""
    if widget is None:
        return None
    owner = getattr(widget, "_magic_widget", None)
    return owner if owner is not None else widget
