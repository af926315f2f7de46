"""Propose panel: a network's tumour segmentation and uncertainty map, without freezing napari.

The panel is thin: it collects the case, the model (the default model shipped with the
package, a napari-ssseg checkpoint file, or a MONAI bundle folder), the device and the
options, and runs :func:`napari_ssseg.ml.inference.predict_case_iter` in a worker thread
(:func:`napari_ssseg._napari.workers.start_task`) with a progress bar and a **Cancel** button.
On success it adds, or on a re-run updates in place:

* ``"<case> proposal"``: a labels layer with the internal classes (0 bg, 1 NCR, 2 ED, 3 ET) in
  the fixed BraTS colours; its ``metadata["ssseg_provenance"]`` marks every voxel as coming
  from the model (code :data:`~napari_ssseg.core.provenance.MODEL`), so the Refine panel and
  later edits can tell model voxels from human ones;
* ``"<case> uncertainty"``: an image layer in [0, 1] (predictive entropy, or the mutual
  information with MC dropout, or the disagreement of a two-network checkpoint) with a
  perceptual colormap (``inferno``), translucent (opacity 0.6) and additive.

**Take proposal into labels** writes the proposal into the case's ``"<case> labels"`` layer
(created on the image layers' exact geometry if the case has none) as ONE undoable step, the
way the Scribble panel's Accept does (:func:`~napari_ssseg.core.provenance.accept_mask`):
*merge* (default) writes only the voxels the proposal labels and keeps every other label,
*replace* writes the proposal everywhere; voxels painted by hand (provenance ``human``) are
kept unless *keep hand-painted voxels* is unticked. Written voxels get provenance ``model``
through the layer's :class:`~napari_ssseg._napari.provenance.ProvenanceTracker`, so Ctrl+Z
restores labels and provenance together. A re-run updates the proposal layer the same way
(one undo step on that layer; a re-run that changes more than :data:`MAX_UNDOABLE_VOXELS`
voxels replaces the data instead, which clears that layer's undo history). The panel
attaches a tracker to every case labels layer it sees, so hand paint is recorded as
``human`` from the first stroke.

Case switches: the **Case** box follows the case that was loaded last (Loader panel, File >
Open, Workspace "Next case"). The previous case's proposal and uncertainty layers are hidden
as soon as a new case appears (renamed "... (earlier load)" when both cases have the same
name), shown again when the user picks that case back in the box, and removed once none of
that case's image layers is left (a closed workspace case) -- except a proposal layer that
was painted by hand, which is only hidden and renamed "... (case closed)", so no hand work is
deleted. A proposal that finishes after its case was closed is dropped with a notification.

Nothing is added or changed until the prediction has finished: a cancelled or failed run
leaves the viewer as it was. Cancel sets the task's stop event; the inference engine stops at
its next window batch (or heartbeat, at most 0.5 s later) and joins its helper thread.

Torch and MONAI are imported inside the worker, never on the GUI thread.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
)

from napari_ssseg._napari.layers import (
    CASE_KEY,
    CaseHandle,
    case_of_layer,
    handle_of_layer,
    label_colormap,
    labels_features,
    labels_layer_of_case,
)
from napari_ssseg._napari.provenance import track
from napari_ssseg._napari.widgets._common import (  # PanelLife: re-exported (older imports)
    BusyState,
    PanelLife,
    button_row,
    notify_error,
    notify_info,
)
from napari_ssseg._napari.workers import (
    TURN_PAUSE_MS,
    TaskHandle,
    below_total,
    current_stop_event,
    recorded_warnings,
    start_task,
)
from napari_ssseg.core.provenance import HUMAN, MODEL, PROVENANCE_KEY, accept_mask
from napari_ssseg.errors import InputError

__all__ = [
    "DEVICE_CHOICES",
    "MAX_UNDOABLE_VOXELS",
    "MODEL_SOURCES",
    "PanelLife",
    "LEGEND_OVERLAY_KEY",
    "UNCERTAINTY_COLORMAP",
    "UNCERTAINTY_TITLES",
    "legend_text",
    "CaseComboBox",
    "ProposeWidget",
    "case_choices",
    "has_images",
    "image_geometry",
    "propose_job",
]

#: Model source label -> kind.
MODEL_SOURCES: dict[str, str] = {
    "default model (shipped)": "default",
    "checkpoint file (.pt)": "file",
    "MONAI bundle folder": "bundle",
}
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
#: Colormap of the uncertainty layer (perceptually uniform, dark = certain).
UNCERTAINTY_COLORMAP = "inferno"
#: Uncertainty kind (``info["uncertainty"]``) -> the words shown in the legend.
UNCERTAINTY_TITLES: dict[str, str] = {
    "entropy": "predictive entropy",
    "mutual_information": "mutual information (MC dropout)",
    "disagreement": "disagreement of the two networks",
}
#: Key of the uncertainty legend's text overlay in ``viewer.canvas.overlays``.
LEGEND_OVERLAY_KEY = "ssseg_uncertainty_legend"
_ROLE_PROPOSAL = "proposal"
_ROLE_UNCERTAINTY = "uncertainty"
#: A re-run that changes more proposal voxels than this replaces the layer's data instead of
#: writing an undoable step (recording millions of voxels would freeze the GUI for seconds).
MAX_UNDOABLE_VOXELS = 1_000_000
#: Layer-metadata flag: hidden by the panel because another case was loaded.
_HIDDEN_KEY = "ssseg_hidden_by_case_switch"


def case_choices(viewer: Any) -> list[tuple[str, Any]]:
    """``(name, case)`` of every case shown in ``viewer``, in layer order, one per case object.

    Two different cases with the same name (the same folder loaded twice) are both listed, the
    later ones as ``"name (2)"``, ``"name (3)"``..., so the newest load can be chosen.
    """
    seen: list[Any] = []
    for layer in viewer.layers:
        case = case_of_layer(layer)
        if case is not None and not any(c is case for c in seen):
            seen.append(case)
    out: list[tuple[str, Any]] = []
    count: dict[str, int] = {}
    for case in seen:
        count[case.name] = count.get(case.name, 0) + 1
        k = count[case.name]
        out.append((case.name if k == 1 else f"{case.name} ({k})", case))
    return out


def has_images(viewer: Any, case: Any) -> bool:
    """True if an image layer of ``case`` is still in ``viewer``."""
    return any(
        layer.metadata.get("ssseg_role") == "image" and case_of_layer(layer) is case
        for layer in viewer.layers
    )


def image_geometry(viewer: Any, case: Any) -> dict[str, Any]:
    """Keyword arguments giving a new layer the exact world geometry of ``case``'s images.

    ``scale``, ``translate``, ``rotate``, ``shear`` and ``affine`` are copied from the case's
    first image layer (so a layer made here overlays the images exactly, whatever the
    images' transform); without an image layer, the case's own scale and translate.
    """
    for layer in viewer.layers:
        if layer.metadata.get("ssseg_role") == "image" and case_of_layer(layer) is case:
            return {
                "scale": tuple(float(v) for v in layer.scale),
                "translate": tuple(float(v) for v in layer.translate),
                "rotate": np.array(layer.rotate, float),
                "shear": np.array(layer.shear, float),
                "affine": np.array(layer.affine.affine_matrix, float),
            }
    return {
        "scale": tuple(float(s) for s in case.scale),
        "translate": tuple(float(t) for t in case.translate),
    }


class CaseComboBox(ComboBox):
    """A ComboBox of cases that finds a case by identity.

    magicgui compares a new value with the choices using ``==``, which for a
    :class:`~napari_ssseg.core.case.Case` (a dataclass holding arrays) raises as soon as two
    cases of the same shape are shown; this box selects the entry that *is* the case.
    """

    @property
    def value(self) -> Any:
        return ComboBox.value.fget(self)

    @value.setter
    def value(self, case: Any) -> None:
        native = self.native
        for i in range(native.count()):
            if native.itemData(i) is case:
                native.setCurrentIndex(i)
                return
        raise ValueError(
            f"case {getattr(case, 'name', case)!r} is not shown in the viewer; the cases shown "
            f"are {[name for name, _ in case_choices_of(self)]}."
        )


def case_choices_of(box: ComboBox) -> list[tuple[str, Any]]:
    """``(name, case)`` entries of a case box."""
    native = box.native
    return [(native.itemText(i), native.itemData(i)) for i in range(native.count())]


def legend_text(kind: str | None, high: float) -> str:
    """The uncertainty legend: which map it is and what its colours mean.

    Parameters
    ----------
    kind : str or None
        ``info["uncertainty"]`` of the prediction (``"entropy"``, ``"mutual_information"``,
        ``"disagreement"``).
    high : float
        The upper contrast limit (the colour bar spans ``0 .. high``).
    """
    title = UNCERTAINTY_TITLES.get(str(kind), str(kind or "uncertainty"))
    text = f"uncertainty:\n{title}\n0 = certain (dark)\n1 = most uncertain (bright)"
    if high < 0.999:
        text += f"\nbar spans 0 - {high:.2f}\n(the map's maximum)"
    return text


def propose_job(case: Any, model: Any, options: dict[str, Any]):
    """Generator run in the worker: predict ``case`` and return the result event.

    Parameters
    ----------
    case : Case
    model : str, path or None
        ``None`` for the default model, else a checkpoint file or bundle folder.
    options : dict
        Keyword arguments of :func:`~napari_ssseg.ml.inference.predict_case_iter`
        (``device``, ``tta``, ``mc_samples``, ``overlap``, ``sw_batch_size``,
        ``allow_cpu_fallback``).

    Yields
    ------
    dict
        Progress dicts (``step``, ``total``, ``message``); ``step`` stays below ``total``
        (:func:`~napari_ssseg._napari.workers.below_total`).

    Returns
    -------
    dict
        The result event (``labels``, ``uncertainty``, ``probabilities``, ``info``) plus
        ``"warnings"``: the engine's notes (``info["notes"]``) and the messages of the
        :class:`UserWarning` warnings raised in this task (reordered modalities, CPU
        fallback, MC dropout ignored...), each once. The warnings are recorded per thread
        (:func:`~napari_ssseg._napari.workers.recorded_warnings`): no filter is changed.

    Raises
    ------
    Cancelled
        The task's stop event was set (Cancel button).
    """
    yield {"step": 0, "total": 1, "message": "loading torch and MONAI"}
    from napari_ssseg.ml.inference import predict_case_iter

    stop = current_stop_event()
    should_stop = stop.is_set if stop is not None else None
    with recorded_warnings() as caught:
        events = predict_case_iter(case, model, should_stop=should_stop, **options)
        result = yield from below_total(_progress_of(events))
    seen: list[str] = []
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    for msg in [*messages, *map(str, result.get("info", {}).get("notes", []))]:
        if msg not in seen:
            seen.append(msg)
    result["warnings"] = seen
    return result


def _progress_of(events: Any):
    """Turn the engine's events into progress dicts; return its result event (a dict)."""
    try:
        for event in events:
            if event.get("event") == "result":
                return dict(event)
            yield {
                "step": int(event.get("done", 0)),
                "total": int(event.get("total", 1)),
                "message": str(event.get("message", "")),
                "stage": event.get("stage"),
            }
    finally:
        events.close()
    raise RuntimeError("prediction ended without a result")  # pragma: no cover


#: "Small lesions" choices: label, ``min_component_fraction`` of :func:`predict_case_iter`
SMALL_LESION_CHOICES: list[tuple[str, float | None]] = [
    ("model's rule (default model: remove under 0.5 x largest)", None),
    ("keep all (metastases: several lesions)", 0.0),
    ("remove under 0.1 x the largest", 0.1),
    ("remove under 0.5 x the largest", 0.5),
]


def _removed_note(case: Any, post: dict[str, Any]) -> str:
    """The status's sentence on tumour components removed by the post-processing."""
    voxels = int(post.get("removed_voxels") or 0)
    if not voxels:
        return ""
    ml = voxels * float(np.prod(case.scale)) / 1000.0  # scale: the voxel size in mm
    size = f"{voxels} voxels, {ml:.2f} ml"
    return (
        f"; removed tumour components under {float(post['min_component_fraction']):g} x the "
        f"largest ({size}): 'Small lesions: keep all' keeps them"
    )


class ProposeWidget(Container):
    """Dock widget: predict a case's tumour labels and uncertainty with a network.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer

    Attributes
    ----------
    case : ComboBox
        The case to segment (cases shown in the viewer, by name).
    model_source : ComboBox
        A key of :data:`MODEL_SOURCES`.
    checkpoint_file : FileEdit
        Checkpoint file (shown for "checkpoint file").
    bundle_folder : FileEdit
        MONAI bundle folder (shown for "MONAI bundle folder").
    device : ComboBox
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    cpu_fallback : CheckBox
        Use the CPU when the requested accelerator is absent (otherwise: an error).
    tta : CheckBox
        Test-time flips.
    mc_samples : SpinBox
        MC-dropout passes (0 = off).
    overlap : FloatSpinBox
        Sliding-window overlap.
    sw_batch_size : SpinBox
        Windows per forward pass.
    small_lesions : ComboBox
        Post-processing of the whole tumour's connected components: the model's own rule
        (``None``; the default model removes components under half the largest), keep every
        component (``0.0``, for metastases), or a fraction of the largest (see
        :data:`SMALL_LESION_CHOICES`).
    propose_button, cancel_button : PushButton
    take_mode : ComboBox
        ``"merge"`` (add the proposal, keep other labels) or ``"replace"``.
    keep_human : CheckBox
        Never overwrite voxels painted by hand.
    take_button : PushButton
        **Take proposal into labels**.
    status : Label
    task : TaskHandle or None
    last_result : dict or None
        The last result (labels, uncertainty, probabilities, info).
    """

    def __init__(self, napari_viewer: Any) -> None:
        self.viewer = napari_viewer
        self.case = CaseComboBox(label="Case", choices=self._case_choices)
        self.model_source = ComboBox(
            label="Model", choices=list(MODEL_SOURCES), value=next(iter(MODEL_SOURCES))
        )
        self.checkpoint_file = FileEdit(
            mode="r", label="Checkpoint", nullable=True, filter="Checkpoints (*.pt *.pth)"
        )
        self.bundle_folder = FileEdit(mode="d", label="Bundle folder", nullable=True)
        self.device = ComboBox(label="Device", choices=DEVICE_CHOICES, value="auto")
        self.cpu_fallback = CheckBox(text="Fall back to CPU if the device is absent", value=False)
        self.tta = CheckBox(text="Test-time flips (TTA)", value=False)
        self.mc_samples = SpinBox(label="MC-dropout samples", value=0, min=0, max=50)
        self.overlap = FloatSpinBox(label="Window overlap", value=0.25, min=0.0, max=0.9, step=0.05)
        self.sw_batch_size = SpinBox(label="Windows per batch", value=2, min=1, max=64)
        self.small_lesions = ComboBox(
            label="Small lesions", choices=SMALL_LESION_CHOICES, value=None
        )
        self.small_lesions.tooltip = (
            "Tumour components far smaller than the largest are usually false positives of a "
            "glioma model (FLAIR-bright cortex), but several small lesions are the rule for "
            "metastases: keep them all there and review them."
        )
        self.propose_button = PushButton(text="Propose")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.take_mode = ComboBox(
            label="Take as",
            choices=[
                ("merge: add the proposal, keep other labels", "merge"),
                ("replace: the proposal everywhere", "replace"),
            ],
            value="merge",
        )
        self.keep_human = CheckBox(text="keep hand-painted voxels", value=True)
        self.take_button = PushButton(text="Take proposal into labels")
        self.status = Label(label="Status", value="")
        self.status.native.setWordWrap(True)
        self.legend = Label(label="Uncertainty", value="(propose a case to see its map)")
        self.legend.native.setWordWrap(True)
        super().__init__(
            widgets=[
                self.case,
                self.model_source,
                self.checkpoint_file,
                self.bundle_folder,
                self.device,
                self.cpu_fallback,
                self.tta,
                self.mc_samples,
                self.overlap,
                self.sw_batch_size,
                self.small_lesions,
                button_row(self.propose_button, self.cancel_button),
                self.take_mode,
                self.keep_human,
                self.take_button,
                self.legend,
                self.status,
            ]
        )
        self.max_width = 420
        self.task: TaskHandle | None = None
        self.last_result: dict[str, Any] | None = None
        self._started = 0.0
        self._running_case: Any = None
        self._outcome = ""
        self._steps: list[Any] = []
        #: perf_counter time at which the last result reached the GUI thread
        self.result_time = 0.0
        self._busy = BusyState(
            [
                self.case,
                self.model_source,
                self.checkpoint_file,
                self.bundle_folder,
                self.device,
                self.cpu_fallback,
                self.tta,
                self.mc_samples,
                self.overlap,
                self.sw_batch_size,
                self.small_lesions,
                self.propose_button,
                self.take_button,
            ],
            self.status,
        )
        self.model_source.changed.connect(self._on_source_changed)
        self._on_source_changed()
        self.propose_button.changed.connect(self.propose)
        self.cancel_button.changed.connect(self.cancel)
        self.take_button.changed.connect(self.take_proposal)
        from napari_ssseg._napari.shortcuts import install_shortcuts, tooltip_with_key

        self.propose_button.tooltip = tooltip_with_key("Propose the Case box's case", "propose")
        self.take_button.tooltip = tooltip_with_key(
            "Write the proposal into the case's labels layer (one undo step)", "take_proposal"
        )
        install_shortcuts(
            self,
            self.viewer,
            {
                "propose": self.propose,
                # like the button: not while a proposal is running or being shown
                "take_proposal": lambda: None if self.running else self.take_proposal(),
            },
        )
        self.case.changed.connect(self._on_case_chosen)
        self._cleanup_pending = False
        # closing the panel or the viewer mid-run: stop the network, ignore late callbacks
        self._life = PanelLife(self.native)
        self._life.on_close(self._stop_on_close)
        events = self.viewer.layers.events
        self._life.connect(events.inserted, self._on_layer_inserted)
        self._life.connect(events.removed, self._on_layer_removed)
        for layer in list(self.viewer.layers):
            self._track_labels(layer)
        try:  # its visual is built now, not when the first uncertainty map is shown
            self.legend_overlay()
        except Exception:  # noqa: BLE001 - a viewer without a canvas (tests): made later
            pass

    # ------------------------------------------------------------------ inputs
    def _case_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return case_choices(self.viewer)

    # ------------------------------------------------------------------ case switches
    @staticmethod
    def _track_labels(layer: Any) -> None:
        """Attach a provenance tracker to a case's labels layer (hand paint is 'human')."""
        if layer.metadata.get("ssseg_role") == "labels" and case_of_layer(layer) is not None:
            track(layer)

    def _on_layer_inserted(self, event: Any) -> None:
        layer = getattr(event, "value", None)
        self.case.reset_choices()
        if layer is None:
            return
        self._track_labels(layer)
        case = case_of_layer(layer)
        if case is None or layer.metadata.get("ssseg_role") not in ("image", "labels"):
            return
        if any(other is not layer and case_of_layer(other) is case for other in self.viewer.layers):
            return  # a further layer of a case already shown
        # the first layer of a newly loaded case: it becomes the current case
        self._hide_other_cases(case)
        self.case.value = case

    def _hide_other_cases(self, case: Any) -> None:
        """Hide the proposal/uncertainty layers of every case but ``case``."""
        for layer in list(self.viewer.layers):
            other = case_of_layer(layer)
            if other is None or other is case:
                continue
            if layer.metadata.get("ssseg_role") not in (_ROLE_PROPOSAL, _ROLE_UNCERTAINTY):
                continue
            if layer.visible:
                layer.visible = False
                layer.metadata[_HIDDEN_KEY] = True
            if other.name == case.name and not layer.name.endswith("(earlier load)"):
                layer.name = f"{layer.name} (earlier load)"

    def _on_case_chosen(self, case: Any = None) -> None:
        """The user picked a case: show its layers this panel hid, hide the others'."""
        if case is None:
            return
        self._hide_other_cases(case)
        for layer in self.viewer.layers:
            if case_of_layer(layer) is case and layer.metadata.pop(_HIDDEN_KEY, False):
                layer.visible = True

    def _on_layer_removed(self, event: Any) -> None:
        self.case.reset_choices()
        removed = getattr(event, "value", None)
        if removed is not None and removed.metadata.get("ssseg_role") == _ROLE_UNCERTAINTY:
            self._update_legend()
        if not self._cleanup_pending:
            # never change the layer list inside its own event: one pass after it
            from qtpy.QtCore import QTimer

            self._cleanup_pending = True
            QTimer.singleShot(0, self._life.guard(self.drop_closed_cases))

    def drop_closed_cases(self) -> list[str]:
        """Remove the proposal/uncertainty layers of cases whose image layers are all gone.

        A proposal layer with voxels painted by hand is hidden and renamed
        ``"... (case closed)"`` instead, so no hand work is deleted.

        Returns
        -------
        list of str
            Names of the layers removed.
        """
        self._cleanup_pending = False
        removed: list[str] = []
        try:
            layers = list(self.viewer.layers)
        except RuntimeError:  # the viewer is closing
            return removed
        for layer in layers:
            role = layer.metadata.get("ssseg_role")
            case = case_of_layer(layer)
            if role not in (_ROLE_PROPOSAL, _ROLE_UNCERTAINTY) or case is None:
                continue
            if has_images(self.viewer, case) or layer.name.endswith("(case closed)"):
                continue
            prov = layer.metadata.get(PROVENANCE_KEY)
            if role == _ROLE_PROPOSAL and prov is not None and np.any(np.asarray(prov) == HUMAN):
                layer.visible = False
                layer.name = f"{layer.name} (case closed)"
                continue
            removed.append(layer.name)
            self.viewer.layers.remove(layer)
        if removed:
            self.status.value = "closed case: removed " + ", ".join(removed)
        return removed

    def _on_source_changed(self, *_: Any) -> None:
        kind = MODEL_SOURCES[self.model_source.value]
        self.checkpoint_file.visible = kind == "file"
        self.bundle_folder.visible = kind == "bundle"

    def _model(self) -> str | None:
        """The model argument of predict_case_iter (validated path or None)."""
        kind = MODEL_SOURCES[self.model_source.value]
        if kind == "default":
            return None
        edit = self.checkpoint_file if kind == "file" else self.bundle_folder
        value = edit.value
        if value in (None, Path("."), Path("")):
            what = "a checkpoint file (.pt)" if kind == "file" else "a MONAI bundle folder"
            raise InputError(
                f"No model chosen: pick {what}, or choose the default model under 'Model'."
            )
        path = Path(value)
        if kind == "file" and not path.is_file():
            raise InputError(
                f"Model file {str(path)!r} does not exist (or is a folder). Pick a napari-ssseg "
                "checkpoint file, or choose 'MONAI bundle folder' for a bundle."
            )
        if kind == "bundle" and not path.is_dir():
            raise InputError(
                f"Bundle folder {str(path)!r} does not exist or is not a folder. Pick the "
                "bundle's top folder (the one holding configs/ and models/)."
            )
        return str(path)

    def options(self) -> dict[str, Any]:
        """Keyword options passed to :func:`predict_case_iter`."""
        return {
            "device": str(self.device.value),
            "allow_cpu_fallback": bool(self.cpu_fallback.value),
            "tta": bool(self.tta.value),
            "mc_samples": int(self.mc_samples.value),
            "overlap": float(self.overlap.value),
            "sw_batch_size": int(self.sw_batch_size.value),
            "min_component_fraction": (
                None if self.small_lesions.value is None else float(self.small_lesions.value)
            ),
        }

    # ------------------------------------------------------------------ actions
    def propose(self, *_: Any) -> TaskHandle | None:
        """Start predicting the chosen case in a worker thread (returns the task)."""
        if self.running:
            return self.task
        case = self.case.value
        if case is None:
            notify_error(
                InputError(
                    "No case loaded: open a case with the Loader panel (or File > Open) "
                    "before asking for a proposal."
                )
            )
            return None
        try:
            model = self._model()
        except InputError as exc:
            notify_error(exc)
            return None
        self._busy.start("starting...")
        self.cancel_button.enabled = True
        self._started = time.perf_counter()
        self._outcome = ""
        self._running_case = case
        guard = self._life.guard
        self.task = start_task(
            propose_job,
            case,
            model,
            self.options(),
            desc=f"Proposing {case.name}",
            on_yielded=guard(self._on_progress),
            on_returned=guard(self._on_result),
            on_error=guard(self._on_error),
            on_aborted=guard(self._on_aborted),
            on_finished=guard(self._on_finished),
        )
        return self.task

    def _stop_on_close(self) -> None:
        """The panel is being destroyed: stop the prediction (its result is not shown)."""
        self._steps = []
        if self.task is not None and self.task.running:
            self.task.stop_event.set()

    def cancel(self, *_: Any) -> None:
        """Stop the prediction at its next window batch; no layer is added or changed."""
        if self.task is not None and self.task.running:
            # the stop event (not worker.quit) lets the engine stop its helper thread cleanly
            self.task.stop_event.set()
            self.status.value = "cancelling..."

    # ------------------------------------------------------------------ callbacks (GUI thread)
    def _on_progress(self, report: dict[str, Any]) -> None:
        if report.get("message") and not (self.task and self.task.stop_event.is_set()):
            self.status.value = str(report["message"])

    def _on_result(self, result: dict[str, Any]) -> None:
        self.result_time = time.perf_counter()
        if self.task is not None and self.task.stop_event.is_set():
            self._outcome = "cancelled"
            return
        case = self._running_case
        if not has_images(self.viewer, case):
            self._outcome = f"dropped: {case.name} was closed while it was being proposed"
            notify_info(
                f"The proposal of {case.name} was dropped: that case was closed (or its image "
                "layers removed) while the network ran. Load it again to propose it."
            )
            return
        self.last_result = result
        info = result.get("info", {})
        for msg in result.get("warnings", []):
            notify_info(msg)
        self._outcome = (
            f"proposed {case.name} in {time.perf_counter() - self._started:.1f} s "
            f"on {info.get('device', '?')}: {info.get('n_windows', '?')} windows x "
            f"{info.get('n_passes', '?')} pass(es), uncertainty = {info.get('uncertainty', '?')}"
            + _removed_note(case, info.get("postprocess") or {})
        )
        # each new layer costs napari a few hundred ms on the GUI thread (visuals, controls):
        # add them on separate event-loop turns so the viewer keeps repainting in between
        self._steps = [
            lambda: self._show_proposal(case, result),
            lambda: self._show_uncertainty(case, result, legend=False),
            # the colour bar and the legend text are built on turns of their own too
            lambda: self._show_colorbar(self._find(case, _ROLE_UNCERTAINTY)),
            lambda: self._show_legend(self._find(case, _ROLE_UNCERTAINTY), colorbar=False),
        ]

    def _on_error(self, exc: BaseException) -> None:
        from napari_ssseg.core.progress import Cancelled

        if isinstance(exc, Cancelled) or (self.task is not None and self.task.stop_event.is_set()):
            self._outcome = "cancelled"
            return
        self._outcome = "failed: " + " ".join(str(exc).split())[:100]
        notify_error(exc)

    def _on_aborted(self) -> None:
        self._outcome = "cancelled"

    def _on_finished(self) -> None:
        self.cancel_button.enabled = False
        self._run_steps()

    def _run_steps(self) -> None:
        """Run the pending GUI steps one per event-loop turn, then leave the busy state."""
        from qtpy.QtCore import QTimer

        if not self._life.alive:
            return
        if self._steps:
            step = self._steps.pop(0)
            try:
                step()
            except Exception as exc:  # noqa: BLE001
                self._steps = []
                self._outcome = "failed: " + " ".join(str(exc).split())[:100]
                notify_error(exc)
            QTimer.singleShot(TURN_PAUSE_MS, self._run_steps)  # a turn between two steps
            return
        self._busy.stop(self._outcome)

    @property
    def running(self) -> bool:
        """True while a prediction runs or its layers are still being added."""
        return (
            bool(self._steps) or self._busy.is_busy or (self.task is not None and self.task.running)
        )

    # ------------------------------------------------------------------ layers
    def _find(self, case: Any, role: str) -> Any:
        for layer in self.viewer.layers:
            handle = handle_of_layer(layer)
            if (
                handle is not None
                and handle.case is case
                and layer.metadata.get("ssseg_role") == role
            ):
                return layer
        return None

    def _handle(self, case: Any) -> CaseHandle:
        for layer in self.viewer.layers:
            handle = handle_of_layer(layer)
            if handle is not None and handle.case is case:
                return handle
        return CaseHandle(case)

    def _meta(self, result: dict[str, Any]) -> dict[str, Any]:
        info = result.get("info", {})
        return {
            k: info.get(k) for k in ("model", "model_source", "device", "uncertainty", "n_passes")
        }

    def _show(self, case: Any, result: dict[str, Any]) -> None:
        """Add the proposal and uncertainty layers, or update them in place (one call)."""
        self._show_proposal(case, result)
        self._show_uncertainty(case, result)

    def _current(self, case: Any) -> bool:
        return self.case.value is case

    def _show_proposal(self, case: Any, result: dict[str, Any]) -> None:
        """Add ``"<case> proposal"`` or update its data in place (one undo step)."""
        from napari.layers import Labels

        labels = np.asarray(result["labels"], np.uint8)
        meta_info = self._meta(result)
        proposal = self._find(case, _ROLE_PROPOSAL)
        if proposal is not None and proposal.data.shape == labels.shape:
            tracker = track(proposal)
            current = np.asarray(proposal.data)
            new = labels.astype(current.dtype, copy=False)
            changed = current != new
            # voxels whose value stays but whose provenance was not 'model' (hand edits the
            # model now agrees with) become 'model' in the same undo step
            confirmed = ~changed & (tracker.provenance != MODEL)
            if np.count_nonzero(changed) > MAX_UNDOABLE_VOXELS:
                proposal.data = new  # resets the layer's (and the tracker's) undo history
                proposal.metadata[PROVENANCE_KEY] = np.full(labels.shape, MODEL, np.uint8)
            elif changed.any():
                indices = np.nonzero(changed)
                with tracker.writing(MODEL, also=confirmed), proposal.block_history():
                    proposal.data_setitem(indices, new[indices])
            elif confirmed.any():
                proposal.metadata[PROVENANCE_KEY] = np.full(labels.shape, MODEL, np.uint8)
            proposal.metadata["ssseg_prediction"] = meta_info
            if self._current(case):
                proposal.visible = True
            return
        proposal = Labels(
            labels,
            name=f"{case.name} proposal",
            colormap=label_colormap(),
            features=labels_features(),
            opacity=0.6,
            visible=self._current(case),
            metadata={
                CASE_KEY: self._handle(case),
                "ssseg_role": _ROLE_PROPOSAL,
                PROVENANCE_KEY: np.full(labels.shape, MODEL, np.uint8),
                "ssseg_prediction": meta_info,
            },
            **image_geometry(self.viewer, case),
        )
        if not self._current(case):
            proposal.metadata[_HIDDEN_KEY] = True
        track(proposal)  # a hand edit of the proposal is 'human' at once; undo follows
        self.viewer.add_layer(proposal)

    def _show_uncertainty(self, case: Any, result: dict[str, Any], legend: bool = True) -> None:
        """Add ``"<case> uncertainty"`` or update its data in place (and, if ``legend``,
        show its legend: :meth:`_show_legend`)."""
        from napari.layers import Image

        unc = np.asarray(result["uncertainty"], np.float32)
        high = float(np.max(unc)) if unc.size else 1.0
        limits = (0.0, high if high > 1e-6 else 1.0)
        meta_info = self._meta(result)
        uncertainty = self._find(case, _ROLE_UNCERTAINTY)
        if uncertainty is not None and uncertainty.data.shape == unc.shape:
            uncertainty.data = unc
            uncertainty.contrast_limits = limits
            uncertainty.metadata["ssseg_prediction"] = meta_info
            if self._current(case):
                uncertainty.visible = True
            if legend:
                self._show_legend(uncertainty)
            return
        uncertainty = Image(
            unc,
            name=f"{case.name} uncertainty",
            colormap=UNCERTAINTY_COLORMAP,
            blending="additive",
            opacity=0.6,
            contrast_limits=limits,
            visible=self._current(case),
            metadata={
                CASE_KEY: self._handle(case),
                "ssseg_role": _ROLE_UNCERTAINTY,
                "ssseg_prediction": meta_info,
            },
            **image_geometry(self.viewer, case),
        )
        if not self._current(case):
            uncertainty.metadata[_HIDDEN_KEY] = True
        self.viewer.add_layer(uncertainty)
        self._life.connect(uncertainty.events.visible, self._update_legend)
        if legend:
            self._show_legend(uncertainty)

    # ------------------------------------------------------------------ legend
    def _show_colorbar(self, layer: Any) -> None:
        """Show the layer's colour bar (napari >= 0.6: a per-layer canvas overlay)."""
        colorbar = getattr(layer, "colorbar", None) if layer is not None else None
        if colorbar is not None:
            colorbar.position = "top_right"
            colorbar.box = True
            colorbar.visible = True

    def _show_legend(self, layer: Any, colorbar: bool = True) -> None:
        """Show the layer's colour bar (unless ``colorbar=False``) and the legend text
        (canvas overlay and panel)."""
        if layer is None:
            return
        if colorbar:
            self._show_colorbar(layer)
        layer.metadata["ssseg_legend"] = legend_text(
            layer.metadata.get("ssseg_prediction", {}).get("uncertainty"),
            float(layer.contrast_limits[1]),
        )
        self._update_legend()

    def legend_overlay(self) -> Any:
        """The text overlay naming the uncertainty map (created on first use)."""
        from napari.components.overlays import TextOverlay

        overlays = self.viewer.canvas.overlays
        if LEGEND_OVERLAY_KEY not in overlays:
            # created visible, then hidden: napari builds an overlay's vispy visual the first
            # time it is visible (~0.2 s with software OpenGL), here when the panel opens
            # rather than in the turn that shows the first uncertainty map
            overlay = TextOverlay(
                text="",
                position="bottom_right",
                font_size=11,
                color="white",
                box=True,
                visible=True,
            )  # fmt: skip  (bottom: the colour bar takes the top right corner)
            overlays[LEGEND_OVERLAY_KEY] = overlay
            overlay.visible = False
        return overlays[LEGEND_OVERLAY_KEY]

    def _update_legend(self, *_: Any) -> None:
        """Show the legend of the visible uncertainty layer (none visible: hide it)."""
        try:
            layers = list(self.viewer.layers)
        except RuntimeError:  # the viewer is closing
            return
        shown = [
            x for x in layers if x.metadata.get("ssseg_role") == _ROLE_UNCERTAINTY and x.visible
        ]
        overlay = self.legend_overlay()
        if not shown:
            overlay.visible = False
            self.legend.value = "(no uncertainty layer shown)"
            return
        layer = shown[-1]
        text = layer.metadata.get("ssseg_legend", "")
        overlay.text = text.replace("uncertainty:", f"{layer.name}:", 1) if text else layer.name
        self.legend.value = " ".join(text.split("\n"))
        overlay.visible = True

    # ------------------------------------------------------------------ take into labels
    def _labels_target(self, case: Any) -> Any:
        """The case's labels layer; created (empty, on the images' geometry) if absent."""
        from napari.layers import Labels

        target = labels_layer_of_case(self.viewer, case)
        if target is not None:
            return target
        target = Labels(
            np.zeros(tuple(case.shape), np.uint8),
            name=f"{case.name} labels",
            colormap=label_colormap(),
            features=labels_features(),
            opacity=0.6,
            metadata={CASE_KEY: self._handle(case), "ssseg_role": "labels"},
            **image_geometry(self.viewer, case),
        )
        self.viewer.add_layer(target)
        return target

    def take_proposal(self, *_: Any) -> np.ndarray | None:
        """Write the chosen case's proposal into its labels layer as one undoable step.

        The proposal layer's current data is taken (with any correction made on it). In
        ``merge`` mode (default) the voxels the proposal labels are written and every other
        label stays; ``replace`` writes the proposal everywhere. Voxels painted by hand
        (provenance ``human``) are kept unless *keep hand-painted voxels* is unticked. The
        written voxels get provenance ``model``; Ctrl+Z on the labels layer restores labels
        and provenance together. The proposal layer is then hidden and the labels layer
        selected, ready for corrections.

        Returns
        -------
        (Z, Y, X) ndarray of bool or None
            Voxels changed; ``None`` if nothing could be taken (a notification says why).
        """
        case = self.case.value
        if case is None:
            notify_error(InputError("No case loaded: load a case and propose it first."))
            return None
        proposal = self._find(case, _ROLE_PROPOSAL)
        if proposal is None:
            notify_error(
                InputError(
                    f"No proposal for {case.name}: press Propose first (the Case box says "
                    "which case is proposed and taken)."
                )
            )
            return None
        new = np.asarray(proposal.data)
        if new.shape != tuple(case.shape):
            notify_error(
                InputError(
                    f"The proposal layer {proposal.name!r} has shape {new.shape} but "
                    f"{case.name} has shape {tuple(case.shape)}: propose the case again."
                )
            )
            return None
        target = self._labels_target(case)
        tracker = track(target)
        current = np.asarray(target.data)
        new = new.astype(current.dtype, copy=False)
        changed = accept_mask(
            current,
            new,
            tracker.provenance,
            mode=self.take_mode.value,
            keep_human=bool(self.keep_human.value),
        )
        n = int(np.count_nonzero(changed))
        kept = int(np.count_nonzero((current != new) & ~changed))
        if n:
            indices = np.nonzero(changed)
            with tracker.writing(MODEL), target.block_history():
                target.data_setitem(indices, new[indices])
        proposal.visible = False
        target.visible = True
        self.viewer.layers.selection.active = target
        self.status.value = (
            f"took the proposal: {n} voxels changed in {target.name!r}, {kept} kept "
            f"(undo: Ctrl+Z on that layer)"
        )
        return changed
