"""Refine panel: grow a pseudo-label into the superpixels that belong to it, with a live preview.

The computation (set-up, cached previews, the Accept plan) lives in
:mod:`napari_ssseg.core.refine_preview`; this module builds its inputs from the widgets, runs
it in worker threads and shows the results.

Workflow (one user action per row of the panel):

1. pick the **pseudo-label** (any labels layer of a loaded case, e.g. ``"<case> labels"`` or a
   ``"<case> proposal"``) and the **region** to refine (WT, TC or both);
2. set the superpixel parameters (``n_segments``, ``compactness``, ``sigma``) and press
   **Compute superpixels**: SLIC superpixels per region (WT on FLAIR, TC on T2 + T1Gd) and the
   refinement session (features, adjacency, similarities) are computed in a worker thread
   with a progress bar and a **Cancel** button. Superpixels are cached in memory and on disk by
   :mod:`napari_ssseg.core.cache` (key: case images, brain mask, channels, parameters); the
   sessions are kept in memory by the panel (key: case, region, parameters), so switching back
   to parameters already computed is instantaneous;
3. move the **sim0** slider: the refined region is shown live in the preview
   layer ``"<case> refine preview"`` (value 1 = refined WT, 2 = refined TC, drawn as
   outlines over the pseudo-label). A preview is computed on the GUI thread when the last one
   took under :data:`SYNC_PREVIEW_SECONDS`; otherwise slider moves are debounced and the
   preview runs in a worker thread, and results for stale slider values are dropped.
   The slider spans :data:`SIM0_RANGE` (0.25-0.8), where it changes the result on real
   scans: below 0.25 the mutual-best test stops growth first (the result is the one at
   0.25, which is also the core default 0.1's), above 0.8 nothing merges (measured on 12
   real pseudo-labels, docs/refinement.md "Tuned on real scans"); it starts at 0.25.
   **Advanced** widens it to 0-1 and shows the **n_c** slider (candidates per merge), which
   changes the result only below about 10;
4. **Accept** writes the refined labels (:func:`napari_ssseg.core.refine.refine_labels`: WT and
   TC refined separately, TC clipped to WT, new TC voxels take the class of the nearest input
   TC voxel) into the pseudo-label layer as ONE undoable step and sets the provenance
   code :data:`~napari_ssseg.core.provenance.SUPERPIXEL` of every voxel it changed (and of
   the voxels the refinement confirmed) in ``layer.metadata["ssseg_provenance"]``. The write
   goes through the layer's :class:`~napari_ssseg._napari.provenance.ProvenanceTracker`, so
   ``Ctrl+Z`` / ``layer.undo()`` restores the labels *and* their provenance (redo re-applies
   both). Voxels painted by hand (provenance ``human``) are kept unless *keep hand-painted
   voxels* is unticked.

The superpixel boundaries can be shown as label outlines (``"<case> superpixels WT"`` /
``"... TC"``, toggled by **Show superpixel boundaries**).

The pseudo-label is read when superpixels are computed (a snapshot). Edits of that layer by
the user afterwards (painting, undo, new data) are detected at the next preview and become
the pseudo-label; the panel's own Accept is not an edit, so the sliders keep previewing the
refinement of the pseudo-label. The panel attaches a provenance tracker to every case labels
layer it sees, so hand paint is recorded as ``human`` from the first stroke.

Case switches: when another case is loaded (Loader panel, File > Open, Workspace "Next
case"), the **Pseudo-label** box follows that case's labels layer, and the previous case's
preview and superpixel-boundary layers are hidden; once none of a case's image layers is
left (a closed workspace case), its preview and boundary layers are removed (they hold no
user work and are recomputed in seconds).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    Label,
    PushButton,
    Slider,
    SpinBox,
)

from napari_ssseg import defaults
from napari_ssseg._napari.layers import CASE_KEY, case_of_layer, handle_of_layer
from napari_ssseg._napari.provenance import track
from napari_ssseg._napari.widgets._common import (
    BusyState,
    PanelLife,
    button_row,
    notify_error,
    notify_info,
)
from napari_ssseg._napari.workers import (
    TaskHandle,
    callback_generator,
    current_stop_event,
    gui_steps,
    recorded_warnings,
    start_task,
)
from napari_ssseg.core.progress import Cancelled
from napari_ssseg.core.provenance import SUPERPIXEL
from napari_ssseg.core.refine import DEFAULT_N_SEGMENTS, DEFAULT_NC, DEFAULT_SIM0
from napari_ssseg.core.refine_preview import (
    MaskCache,
    RefineSetup,
    compute_setup,
    preview_box,
    refine_for_accept,
    region_seeds,
)
from napari_ssseg.errors import GeometryError, InputError

__all__ = [
    "PREVIEW_COLORS",
    "REGION_CHOICES",
    "SIM0_FULL_RANGE",
    "SIM0_RANGE",
    "SYNC_PREVIEW_SECONDS",
    "RefineWidget",
    "compute_setup_job",
]

#: Region choice label -> regions refined.
REGION_CHOICES: dict[str, tuple[str, ...]] = {
    "WT + TC": ("wt", "tc"),
    "WT (whole tumour)": ("wt",),
    "TC (tumour core)": ("tc",),
}
#: Preview values and colours (outlines): 1 refined WT (magenta), 2 refined TC (cyan); chosen
#: to stand out from the BraTS class colours of the labels underneath.
PREVIEW_COLORS: dict[int, tuple[float, float, float, float]] = {
    1: (1.0, 0.3, 1.0, 1.0),
    2: (0.0, 0.9, 1.0, 1.0),
}
#: Range of the sim0 slider: where it changes the refined result on real scans (below, the
#: mutual-best test stops growth first: same result as 0 and as DEFAULT_SIM0; above, nothing
#: merges: same result as 1). Measured with benchmarks/refine_slider_range.py on 12 real
#: pseudo-labels, see docs/refinement.md ("Tuned on real scans").
SIM0_RANGE: tuple[float, float] = (0.25, 0.8)
#: Range of the sim0 slider with **Advanced** ticked.
SIM0_FULL_RANGE: tuple[float, float] = (0.0, 1.0)
#: Colour of the superpixel outlines.
BOUNDARY_COLOR = (1.0, 1.0, 1.0, 1.0)
#: A preview that took longer than this (seconds) makes the next ones asynchronous.
SYNC_PREVIEW_SECONDS = 0.05
#: Debounce delay (ms) of asynchronous previews.
DEBOUNCE_MS = 30
_ROLE_PREVIEW = "refine_preview"
_ROLE_SUPERPIXELS = "superpixels"
_SKIP_ROLES = (_ROLE_PREVIEW, _ROLE_SUPERPIXELS)
_MAX_SESSIONS = 4


# --------------------------------------------------------------------------- worker side
def compute_setup_job(*args: Any, **kwargs: Any):
    """Worker job: :func:`~napari_ssseg.core.refine_preview.compute_setup` with its progress.

    Takes the arguments of ``compute_setup`` (not ``progress`` / ``should_stop``, which are
    wired to the task's progress bar and Cancel button) and returns its :class:`RefineSetup`.
    Channel-fallback warnings are dropped here: the panel reports them up front.
    """
    # recorded per thread (catch_warnings would swap the process-wide filters)
    with recorded_warnings(UserWarning):
        setup = yield from callback_generator(
            compute_setup, *args, stop_kwarg="should_stop", **kwargs
        )
    # the GUI thread installs it one layer per event-loop turn (each napari layer of a full
    # case costs 60-160 ms there); the task runs until the last one is shown
    shown = yield from gui_steps({"setup": setup}, "ssseg_install", "showing superpixels")
    stop = current_stop_event()
    if not shown and stop is not None and stop.is_set():
        raise Cancelled("cancelled by the user")  # reported as a cancel, not installed
    return setup


def _accept_job(setup, pseudo, current, provenance, sim0, n_c, keep_human):
    """Worker form of :func:`refine_for_accept` (a generator with no progress)."""
    if False:  # pragma: no cover - makes this a generator function
        yield None
    return refine_for_accept(setup, pseudo, current, provenance, sim0, n_c, keep_human=keep_human)


def _preview_job(setup, seeds, pseudo, sim0, n_c, cache):
    """Worker form of :func:`preview_box` (a generator with no progress)."""
    if False:  # pragma: no cover - makes this a generator function
        yield None
    t0 = time.perf_counter()
    out = preview_box(setup, seeds, pseudo, sim0, n_c, cache)
    return out, time.perf_counter() - t0


# --------------------------------------------------------------------------- the panel
class RefineWidget(Container):
    """Dock widget: superpixel refinement of a pseudo-label with a live preview.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer

    Attributes
    ----------
    labels_layer : ComboBox
        The pseudo-label (labels layers of loaded cases).
    region : ComboBox
        A key of :data:`REGION_CHOICES`.
    n_segments, compactness, sigma : SpinBox, FloatSpinBox
        Superpixel parameters.
    compute_button, cancel_button, accept_button : PushButton
    keep_human : CheckBox
        Accept never overwrites voxels painted by hand.
    show_boundaries : CheckBox
    sim0 : FloatSlider
        Stopping similarity, in :data:`SIM0_RANGE` (:data:`SIM0_FULL_RANGE` with
        ``advanced``).
    advanced : CheckBox
        Widens the sim0 range and shows ``n_c``.
    n_c : Slider
        Candidates checked per merge (minus one); hidden unless ``advanced``.
    status : Label
    task : TaskHandle or None
        The running (or last) superpixel task.
    setup : RefineSetup or None
        The superpixels/sessions the sliders use.
    preview_layer : napari.layers.Labels or None
    last_preview_seconds : float
        Wall time of the last preview (refinement + layer update).
    preview_times : list of float
        Wall times of every preview computed (refinement + layer update), for benchmarks.
    """

    def __init__(self, napari_viewer: Any) -> None:
        self.viewer = napari_viewer
        self.labels_layer = ComboBox(label="Pseudo-label", choices=self._labels_choices)
        self.region = ComboBox(
            label="Region", choices=list(REGION_CHOICES), value=next(iter(REGION_CHOICES))
        )
        self.n_segments = SpinBox(
            label="n_segments", value=DEFAULT_N_SEGMENTS, min=10, max=20000, step=50
        )
        self.compactness = FloatSpinBox(
            label="compactness", value=defaults.COMPACTNESS, min=0.0001, max=10.0, step=0.005
        )
        self.sigma = FloatSpinBox(
            label="sigma (mm)", value=defaults.SIGMA, min=0.0, max=10.0, step=0.25
        )
        self.compute_button = PushButton(text="Compute superpixels")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.show_boundaries = CheckBox(text="Show superpixel boundaries", value=True)
        lo, hi = SIM0_RANGE
        self.sim0 = FloatSlider(
            label="sim0",
            value=min(hi, max(lo, DEFAULT_SIM0)),
            min=lo,
            max=hi,
            step=0.01,
            enabled=False,
            tooltip=(
                f"Stop growing when no candidate is this similar to the region. Lower grows "
                f"more. On real scans the result changes only between {lo:g} and {hi:g} "
                f"(below {lo:g} it is the result at {lo:g}); tick Advanced for 0-1."
            ),
        )
        self.advanced = CheckBox(text="Advanced: sim0 over 0-1, n_c", value=False)
        self.advanced.tooltip = (
            "Widen the sim0 slider to 0-1 and show n_c. On real scans sim0 below "
            f"{lo:g} gives the result at {lo:g}, above {hi:g} nothing grows, and n_c "
            "changes the result only below about 10."
        )
        self.n_c = Slider(
            label="n_c",
            value=DEFAULT_NC,
            min=1,
            max=200,
            step=1,
            enabled=False,
            tooltip=(
                "Candidates tried per merge (minus one). Changes the result only below about "
                "10 (fewer candidates: less growth)."
            ),
        )
        self.n_c.visible = False
        self.keep_human = CheckBox(text="keep hand-painted voxels", value=True)
        self.accept_button = PushButton(text="Accept", enabled=False)
        self.status = Label(label="Status", value="compute superpixels to start")
        self.status.native.setWordWrap(True)
        super().__init__(
            widgets=[
                self.labels_layer,
                self.region,
                self.n_segments,
                self.compactness,
                self.sigma,
                button_row(self.compute_button, self.cancel_button),
                self.show_boundaries,
                self.sim0,
                self.advanced,
                self.n_c,
                self.keep_human,
                self.accept_button,
                self.status,
            ]
        )
        self.max_width = 420
        self.task: TaskHandle | None = None
        self.setup: RefineSetup | None = None
        self.preview_layer: Any = None
        #: The setup being installed step by step (:meth:`_install_step`), else None.
        self._installed: RefineSetup | None = None
        self._done_message = ""
        self._pending_layer: Any = None
        self._pending_data: np.ndarray | None = None
        self.boundary_layers: dict[str, Any] = {}
        self.last_preview_seconds = 0.0
        self.preview_times: list[float] = []
        self._target: Any = None  # the labels layer the setup belongs to
        self._pseudo: np.ndarray | None = None
        self._known: np.ndarray | None = None
        self._maybe_edited = False
        self._seeds: dict[str, Any] = {}
        self._sessions: OrderedDict[tuple, tuple[Any, np.ndarray, Any]] = OrderedDict()
        self._brains: dict[int, tuple[Any, np.ndarray]] = {}
        self._masks = MaskCache()
        self._shown: tuple | None = None  # state of the preview on display
        self._pending: tuple[float, int] | None = None
        self._preview_task: TaskHandle | None = None
        self._accept_task: TaskHandle | None = None
        #: voxels the last finished Accept changed (None: nothing written)
        self.last_accepted: np.ndarray | None = None
        self._preview_token = 0
        self._writing = False
        self._busy = BusyState(
            [
                self.labels_layer,
                self.region,
                self.n_segments,
                self.compactness,
                self.sigma,
                self.compute_button,
                self.accept_button,
            ],
            self.status,
        )
        from qtpy.QtCore import QTimer

        self._debounce = QTimer()
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(lambda: self._life.guard(self._start_async_preview)())

        self.compute_button.changed.connect(self.compute)
        self.cancel_button.changed.connect(self.cancel)
        self.accept_button.changed.connect(self.accept)
        from napari_ssseg._napari.shortcuts import install_shortcuts, tooltip_with_key

        self.accept_button.tooltip = tooltip_with_key(
            "Write the refined labels into the pseudo-label layer (one undo step)", "refine_accept"
        )
        install_shortcuts(self, self.viewer, {"refine_accept": self._accept_by_key})
        self.sim0.changed.connect(self._on_slider)
        self.n_c.changed.connect(self._on_slider)
        self.advanced.changed.connect(self._on_advanced)
        self.show_boundaries.changed.connect(self._on_show_boundaries)
        for w in (self.labels_layer, self.region, self.n_segments, self.compactness, self.sigma):
            w.changed.connect(self._on_config_changed)
        self._follow_case: Any = None  # a newly loaded case whose labels layer is awaited
        self._cleanup_pending = False
        # closing the panel or the viewer mid-run: stop the workers, ignore late callbacks
        self._life = PanelLife(self.native)
        self._life.on_close(self._stop_on_close)
        events = self.viewer.layers.events
        for name in ("inserted", "removed", "moved"):
            self._life.connect(getattr(events, name), self._on_layers_changed)
        for layer in list(self.viewer.layers):
            self._track_labels(layer)

    # ------------------------------------------------------------------ choices / config
    def _labels_choices(self, *_: Any) -> list[tuple[str, Any]]:
        from napari.layers import Labels

        out = []
        for layer in self.viewer.layers:
            if not isinstance(layer, Labels) or handle_of_layer(layer) is None:
                continue
            if layer.metadata.get("ssseg_role") in _SKIP_ROLES:
                continue
            out.append((layer.name, layer))
        return out

    def _on_layers_changed(self, event: Any = None) -> None:
        self.labels_layer.reset_choices()
        kind = getattr(event, "type", "") if event is not None else ""
        if kind == "inserted":
            self._on_inserted(getattr(event, "value", None))
        if kind == "removed":
            removed = getattr(event, "value", None)
            if removed is self.preview_layer:
                self.preview_layer = None
            for key, layer in list(self.boundary_layers.items()):
                if layer is removed:
                    del self.boundary_layers[key]
            if removed is self._target:
                self._drop_setup("the pseudo-label layer was removed")
            if not self._cleanup_pending:
                # never change the layer list inside its own event: one pass after it
                from qtpy.QtCore import QTimer

                self._cleanup_pending = True
                QTimer.singleShot(0, self._life.guard(self.drop_closed_cases))

    # ------------------------------------------------------------------ case switches
    @staticmethod
    def _track_labels(layer: Any) -> None:
        """Attach a provenance tracker to a case's labels layer (hand paint is 'human')."""
        if layer.metadata.get("ssseg_role") == "labels" and case_of_layer(layer) is not None:
            track(layer)

    def _on_inserted(self, layer: Any) -> None:
        """A new case's first layer: hide the other cases' previews; pick its labels layer."""
        if layer is None:
            return
        self._track_labels(layer)
        case = case_of_layer(layer)
        role = layer.metadata.get("ssseg_role")
        if case is None or role not in ("image", "labels"):
            return
        first = not any(
            other is not layer and case_of_layer(other) is case for other in self.viewer.layers
        )
        if first:
            self._follow_case = case
            for other in list(self.viewer.layers):
                if (
                    other.metadata.get("ssseg_role") in _SKIP_ROLES
                    and case_of_layer(other) is not case
                ):
                    other.visible = False
        if role == "labels" and case is self._follow_case:
            self._follow_case = None
            if self.task is None or not self.task.running:
                self.labels_layer.value = layer

    def drop_closed_cases(self) -> list[str]:
        """Remove the preview / boundary layers of cases whose image layers are all gone.

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
        alive = {
            id(case_of_layer(lyr))
            for lyr in layers
            if lyr.metadata.get("ssseg_role") == "image" and case_of_layer(lyr) is not None
        }
        for layer in layers:
            case = case_of_layer(layer)
            if layer.metadata.get("ssseg_role") not in _SKIP_ROLES or case is None:
                continue
            if id(case) in alive:
                continue
            removed.append(layer.name)
            self.viewer.layers.remove(layer)
        return removed

    def _regions(self) -> tuple[str, ...]:
        return REGION_CHOICES[self.region.value]

    def _params(self) -> dict[str, Any]:
        return {
            "n_segments": int(self.n_segments.value),
            "compactness": float(self.compactness.value),
            "sigma": float(self.sigma.value),
        }

    def _session_key(self, case: Any, region: str, params: dict[str, Any]) -> tuple:
        return (id(case), region, params["n_segments"], params["compactness"], params["sigma"])

    def _on_config_changed(self, *_: Any) -> None:
        """Labels layer, region or parameters changed: reuse computed sessions if possible."""
        if self.task is not None and self.task.running:
            return
        layer = self.labels_layer.value
        if layer is None:
            self._drop_setup("choose a pseudo-label layer")
            return
        handle = handle_of_layer(layer)
        params = self._params()
        reuse = self._reusable(handle.case, self._regions(), params)
        if reuse and not np.any(np.asarray(layer.data) > 0):
            # e.g. the box fell back to an empty layer of the case because the pseudo-label
            # layer was removed (the viewer closing removes them one by one): say so, no error
            self._drop_setup(f"{layer.name!r} is empty: choose a pseudo-label with a tumour")
            return
        if reuse and len(reuse) == len(self._regions()):
            try:
                self._install_setup(layer, self._setup_from(handle.case, reuse, params))
            except Exception as exc:  # noqa: BLE001 - bad pseudo-label: tell the user
                self._drop_setup("")
                notify_error(exc)
            return
        self._drop_setup("parameters changed: compute superpixels")

    def _reusable(self, case: Any, regions: tuple[str, ...], params: dict) -> dict:
        found: dict[str, tuple[np.ndarray, Any]] = {}
        entry = self._brains.get(id(case))
        if entry is None or entry[0] is not case:
            return found
        for region in regions:
            entry = self._sessions.get(self._session_key(case, region, params))
            if entry is not None and entry[0] is case:
                found[region] = (entry[1], entry[2])
        return found

    def _setup_from(self, case: Any, reuse: dict, params: dict) -> RefineSetup:
        brain = self._brains[id(case)][1]
        return RefineSetup(
            case=case,
            brain=brain,
            regions=tuple(reuse),
            superpixels={r: v[0] for r, v in reuse.items()},
            sessions={r: v[1] for r, v in reuse.items()},
            params=params,
        )

    # ------------------------------------------------------------------ validation
    def _checked_layer(self) -> tuple[Any, Any, np.ndarray]:
        """The chosen labels layer, its case handle and a copy of its data (validated)."""
        layer = self.labels_layer.value
        if layer is None:
            raise InputError(
                "No pseudo-label: load a case (Loader panel) or propose one (Propose panel), "
                "then choose its labels layer as the pseudo-label."
            )
        handle = handle_of_layer(layer)
        case = handle.case
        data = np.asarray(layer.data)
        if data.shape != tuple(case.shape):
            raise GeometryError(
                f"the labels layer {layer.name!r} has shape {data.shape} but its case "
                f"{case.name!r} has shape {tuple(case.shape)}: it is on another grid. Resample "
                f"it to the case first, or choose another labels layer."
            )
        if data.size and (int(data.min()) < 0 or int(data.max()) > 3):
            raise InputError(
                f"the labels layer {layer.name!r} holds values in [{int(data.min())}, "
                f"{int(data.max())}]; refinement needs internal labels 0-3 (0 bg, 1 NCR, 2 ED, "
                f"3 ET). Load it through the plugin so its convention is decoded."
            )
        if not np.any(data > 0):
            raise InputError(
                f"the pseudo-label {layer.name!r} is empty: nothing to grow from. Choose a "
                f"labels layer that holds a (rough) tumour segmentation, or paint one."
            )
        return layer, handle, data.copy()

    _region_seeds = staticmethod(region_seeds)

    # ------------------------------------------------------------------ compute
    def compute(self, *_: Any) -> TaskHandle | None:
        """Start computing superpixels and sessions for the current choice (returns the task)."""
        if self.task is not None and self.task.running:
            return self.task
        try:
            layer, handle, data = self._checked_layer()
        except Exception as exc:  # noqa: BLE001
            notify_error(exc)
            return None
        case = handle.case
        regions = self._regions()
        params = self._params()
        self._warn_fallbacks(case, regions)
        reuse = self._reusable(case, regions, params)
        brain_entry = self._brains.get(id(case))
        brain = brain_entry[1] if brain_entry is not None and brain_entry[0] is case else None
        self._drop_setup("")
        self._busy.start("computing superpixels...")
        self.cancel_button.enabled = True
        self._pending_layer = layer
        self._pending_data = data
        self.task = start_task(
            compute_setup_job,
            case,
            handle.preprocessed,
            regions,
            params,
            self._region_seeds(data),
            reuse,
            brain,
            desc="Superpixels",
            on_yielded=self._life.guard(self._on_progress),
            on_returned=self._life.guard(self._on_computed),
            on_error=self._life.guard(self._on_error),
            on_aborted=self._life.guard(self._on_aborted),
            on_finished=self._life.guard(self._on_finished),
        )
        return self.task

    def _stop_on_close(self) -> None:
        """The panel is being destroyed: stop the workers and timers, drop the setup."""
        self._debounce.stop()
        for task in (self.task, self._preview_task, self._accept_task):
            if task is not None and task.running:
                task.cancel()
        self._disconnect_target()

    def _warn_fallbacks(self, case: Any, regions: tuple[str, ...]) -> None:
        from napari_ssseg.core.superpixels import channels_for_region

        with recorded_warnings() as caught:  # this thread's only; filters untouched
            for region in regions:
                channels_for_region(list(case.modalities), region.upper())
        for w in caught:
            notify_info(str(w.message))

    def cancel(self, *_: Any) -> None:
        """Cancel the superpixel computation (takes effect at its next progress report)."""
        if self.task is not None and self.task.running:
            self.task.cancel()

    def _on_progress(self, report: dict[str, Any]) -> None:
        if report.get("message"):
            self.status.value = str(report["message"])
        if "ssseg_install" in report:
            self._install_step(report["ssseg_install"])

    def _install_step(self, request: dict[str, Any]) -> None:
        """One step of installing a computed setup (GUI thread, one per event-loop turn).

        The first step registers the setup and adopts it (seeds, sliders); the next ones add
        the WT and TC boundary layers and the preview layer, and draw the first preview.
        """
        try:
            if self.task is not None and self.task.stop_event.is_set():
                request["done"] = True
                return
            if "steps" not in request:
                setup = request["setup"]
                self._register_setup(setup)
                self._adopt_setup(self._pending_layer, setup, self._pending_data)
                request["steps"] = self._layer_steps(setup)
                self._installed = setup
                return
            if request["steps"]:
                request["steps"].pop(0)()
            if not request["steps"]:
                request["done"] = True
        except Exception as exc:  # noqa: BLE001 - shown to the user; the worker ends
            request["done"] = True
            self._installed = None
            self._drop_setup("")
            self._done_message = "failed: " + str(exc)[:80]
            notify_error(exc)
        finally:
            request["ack"].set()

    def _register_setup(self, setup: RefineSetup) -> None:
        """Keep the setup's sessions and brain mask for reuse; show its messages."""
        case = setup.case
        self._brains[id(case)] = (case, setup.brain)
        for region in setup.regions:
            key = self._session_key(case, region, setup.params)
            self._sessions[key] = (case, setup.superpixels[region], setup.sessions[region])
            self._sessions.move_to_end(key)
        while len(self._sessions) > _MAX_SESSIONS:
            self._sessions.popitem(last=False)
        alive = {key[0] for key in self._sessions}
        self._brains = {k: v for k, v in self._brains.items() if k in alive}
        for msg in setup.messages:
            notify_info(msg)

    def _on_computed(self, setup: RefineSetup) -> None:
        if self._installed is setup:  # installed step by step
            self._installed = None
            self._done_message = self._ready_message(setup)
            return
        if self._done_message.startswith("failed"):
            return
        self._register_setup(setup)
        try:
            self._install_setup(self._pending_layer, setup, self._pending_data)
            self._done_message = self._ready_message(setup)
        except Exception as exc:  # noqa: BLE001
            self._drop_setup("")
            self._done_message = "failed: " + str(exc)[:80]
            notify_error(exc)

    @staticmethod
    def _ready_message(setup: RefineSetup) -> str:
        return (
            "ready: "
            + ", ".join(
                f"{r.upper()} {setup.sessions[r].n_superpixels} superpixels" for r in setup.regions
            )
            + " — move the sim0 slider"
        )

    def _on_error(self, exc: BaseException) -> None:
        self._done_message = "failed: " + " ".join(str(exc).split())[:80]
        notify_error(exc)

    def _on_aborted(self) -> None:
        self._done_message = "cancelled"
        if self._installed is not None:  # cancelled half-way through showing it
            self._installed = None
            self._drop_setup("")

    def _on_finished(self) -> None:
        self.cancel_button.enabled = False
        self._busy.stop(getattr(self, "_done_message", ""))
        self._done_message = ""
        self._pending_layer = None
        self._pending_data = None
        self.accept_button.enabled = self.setup is not None

    # ------------------------------------------------------------------ setup / layers
    def _install_setup(
        self, layer: Any, setup: RefineSetup, data: np.ndarray | None = None
    ) -> None:
        """Make ``setup`` the current one: fit seeds, show boundaries, enable the sliders.

        All at once, in this event-loop turn; a computed setup is installed the same way but
        one layer per turn (:meth:`_install_step`).
        """
        self._adopt_setup(layer, setup, data)
        for step in self._layer_steps(setup):
            step()

    def _layer_steps(self, setup: RefineSetup) -> list[Any]:
        """The layer work of installing ``setup``, one napari layer per step."""

        def first_preview() -> None:
            if self.setup is not setup:
                return
            self.update_preview()
            # the first preview includes creating the layer; let the next slider move
            # measure the real cost of an update
            self.last_preview_seconds = 0.0

        def preview_layer() -> None:
            if self.setup is setup:
                self._ensure_preview_layer()

        steps: list[Any] = [
            lambda region=region: self._show_boundary_layer(setup, region)
            for region in ("wt", "tc")
        ]
        return [*steps, preview_layer, first_preview]

    def _adopt_setup(self, layer: Any, setup: RefineSetup, data: np.ndarray | None = None) -> None:
        """The state part of installing ``setup`` (seeds, events, sliders; no layers)."""
        if data is None:
            data = np.asarray(layer.data).copy()
        self._disconnect_target()
        self._target = layer
        self._pseudo = data
        self._known = data  # what the layer holds if nobody edits it
        self._maybe_edited = False
        self.setup = setup
        self._masks.clear()
        self._shown = None
        if setup.fits and set(setup.fits) == set(setup.regions) and data is self._pending_data:
            # fitted in the worker, on exactly these labels
            self._seeds = dict(setup.fits)
            self._notify_fit_notices()
        else:
            self._fit_seeds()
        for ev in (layer.events.paint, layer.events.data, layer.events.set_data):
            ev.connect(self._on_target_edited)
        for w in (self.sim0, self.n_c):
            w.enabled = True
        self.accept_button.enabled = not self._busy.is_busy

    def _fit_seeds(self) -> None:
        """Fit the pseudo-label to each region's superpixels; show the fit's notices (e.g. a
        pseudo-label covering most of the brain) as notifications."""
        seeds = self._region_seeds(self._pseudo)
        self._seeds = {
            r: self.setup.sessions[r].fit(seeds[r], warn=False) for r in self.setup.regions
        }
        self._notify_fit_notices()

    def _notify_fit_notices(self) -> None:
        """Show the notices of the current fits (each text once) as notifications."""
        shown: set[str] = set()
        for seed in self._seeds.values():
            for text in seed.notices:
                if text not in shown:
                    shown.add(text)
                    notify_info(text)

    def _disconnect_target(self) -> None:
        if self._target is not None:
            events = self._target.events
            for ev in (events.paint, events.data, events.set_data):
                try:
                    ev.disconnect(self._on_target_edited)
                except (TypeError, ValueError, RuntimeError):
                    pass
        self._target = None

    def _drop_setup(self, message: str) -> None:
        self._disconnect_target()
        self.setup = None
        self._seeds = {}
        self._pseudo = None
        self._masks.clear()
        self._shown = None
        self._preview_token += 1
        self._debounce.stop()
        for w in (self.sim0, self.n_c, self.accept_button):
            w.enabled = False
        if message:
            self.status.value = message

    def _on_target_edited(self, *_: Any) -> None:
        """The pseudo-label may have changed (paint, undo, new data): check at the next preview."""
        if not self._writing:
            self._maybe_edited = True

    def _layer_kwargs(self, case: Any, handle: Any) -> dict[str, Any]:
        return {
            "scale": tuple(float(s) for s in case.scale),
            "translate": tuple(float(t) for t in case.translate),
        }

    def _show_boundary_layer(self, setup: RefineSetup, region: str) -> None:
        """Show (add or update) the superpixel-boundary layer of one region.

        Only one region's boundaries are visible at a time (WT when computed); a hidden
        layer is created hidden, which spares napari the texture upload until it is shown.
        """
        from napari.layers import Labels
        from napari.utils.colormaps import DirectLabelColormap

        if self.setup is not setup:
            return  # replaced or dropped meanwhile
        layer = self.boundary_layers.get(region)
        if region not in setup.regions:
            if layer is not None:
                layer.visible = False
            return
        handle = handle_of_layer(self._target)
        name = f"{setup.case.name} superpixels {region.upper()}"
        data = np.asarray(setup.superpixels[region])
        visible = bool(self.show_boundaries.value) and (region == "wt" or "wt" not in setup.regions)
        if layer is None or layer not in self.viewer.layers or layer.data.shape != data.shape:
            layer = Labels(
                data,
                name=name,
                colormap=DirectLabelColormap(
                    color_dict={None: np.asarray(BOUNDARY_COLOR)}, background_value=0
                ),
                opacity=0.35,
                blending="translucent",
                visible=visible,
                metadata={CASE_KEY: handle, "ssseg_role": _ROLE_SUPERPIXELS},
                **self._layer_kwargs(setup.case, handle),
            )
            layer.contour = 1
            self.viewer.add_layer(layer)
            self.boundary_layers[region] = layer
        else:
            layer.data = data
            layer.name = name
            layer.visible = visible
        if self._target in self.viewer.layers:
            self.viewer.layers.selection.active = self._target

    def _on_show_boundaries(self, value: bool) -> None:
        regions = self.setup.regions if self.setup is not None else ()
        for region, layer in self.boundary_layers.items():
            layer.visible = (
                bool(value) and region in regions and (region == "wt" or "wt" not in regions)
            )

    def _ensure_preview_layer(self) -> Any:
        from napari.layers import Labels
        from napari.utils.colormaps import DirectLabelColormap

        setup = self.setup
        layer = self.preview_layer
        if (
            layer is not None
            and layer in self.viewer.layers
            and layer.data.shape == tuple(setup.case.shape)
        ):
            return layer
        handle = handle_of_layer(self._target)
        colors: dict[int | None, Any] = {k: np.asarray(v) for k, v in PREVIEW_COLORS.items()}
        colors[None] = np.array([1.0, 0.0, 1.0, 1.0])
        layer = Labels(
            np.zeros(tuple(setup.case.shape), np.uint8),
            name=f"{setup.case.name} refine preview",
            colormap=DirectLabelColormap(color_dict=colors, background_value=0),
            opacity=1.0,
            metadata={CASE_KEY: handle, "ssseg_role": _ROLE_PREVIEW},
            **self._layer_kwargs(setup.case, handle),
        )
        layer.contour = 1
        self.viewer.add_layer(layer)
        self.preview_layer = layer
        self._shown = None
        if self._target in self.viewer.layers:
            self.viewer.layers.selection.active = self._target
        return layer

    # ------------------------------------------------------------------ preview
    def _on_advanced(self, value: bool) -> None:
        """Advanced: sim0 over :data:`SIM0_FULL_RANGE` and the n_c slider shown; else
        sim0 back in :data:`SIM0_RANGE` (a value outside is moved to the nearest end) and
        n_c hidden at its default."""
        lo, hi = SIM0_FULL_RANGE if value else SIM0_RANGE
        current = float(self.sim0.value)
        if value:
            self.sim0.min, self.sim0.max = lo, hi
        else:
            clipped = min(hi, max(lo, current))
            if clipped != current:
                self.sim0.value = clipped  # previews the value the slider now shows
            self.sim0.min, self.sim0.max = lo, hi
            if int(self.n_c.value) != DEFAULT_NC:
                self.n_c.value = DEFAULT_NC  # a hidden slider keeps its default
        self.n_c.visible = bool(value)

    def _slider_values(self) -> tuple[float, int]:
        return round(float(self.sim0.value), 6), int(self.n_c.value)

    def _on_slider(self, *_: Any) -> None:
        if self.setup is None:
            return
        if self.last_preview_seconds <= SYNC_PREVIEW_SECONDS:
            self.update_preview()
        else:
            self.status.value = "previewing..."
            self._debounce.start()

    def _current_inputs(self) -> None:
        """Re-read the pseudo-label if the user changed the layer since it was read.

        The layer is expected to hold ``_known`` (the pseudo-label, or what the last Accept
        wrote); anything else is an edit by the user (painting, undo, new data), which becomes
        the new pseudo-label.
        """
        if not self._maybe_edited:
            return
        self._maybe_edited = False
        data = np.asarray(self._target.data)
        if data.shape != self._pseudo.shape:
            raise GeometryError(
                f"the labels layer {self._target.name!r} changed shape to {data.shape}; "
                f"press Compute superpixels again."
            )
        if np.array_equal(data, self._known):
            return
        self._known = data.copy()
        if np.array_equal(self._known, self._pseudo):
            self._pseudo = self._known
            return
        self._pseudo = self._known
        self._masks.clear()
        self._shown = None
        self._fit_seeds()

    def update_preview(self) -> None:
        """Compute the preview for the current slider values on the GUI thread and show it."""
        if self.setup is None:
            return
        t0 = time.perf_counter()
        try:
            self._current_inputs()
            key = self._slider_values()
            out = preview_box(self.setup, self._seeds, self._pseudo, *key, self._masks)
            self._show_preview(*out, key)
        except Exception as exc:  # noqa: BLE001
            notify_error(exc)
            return
        self._preview_token += 1  # any async preview in flight is now stale
        self.last_preview_seconds = time.perf_counter() - t0
        self.preview_times.append(self.last_preview_seconds)

    def _start_async_preview(self) -> None:
        if self.setup is None:
            return
        if self._preview_task is not None and self._preview_task.running:
            self._debounce.start()  # one preview worker at a time; try again shortly
            return
        try:
            self._current_inputs()
        except Exception as exc:  # noqa: BLE001
            notify_error(exc)
            return
        key = self._slider_values()
        self._preview_token += 1
        token = self._preview_token
        t0 = time.perf_counter()

        def done(result: tuple) -> None:
            out, seconds = result
            if token != self._preview_token or self.setup is None:
                return  # stale: the sliders moved on (or the setup changed)
            self._show_preview(*out, key)
            self.last_preview_seconds = seconds
            self.preview_times.append(time.perf_counter() - t0)

        self._preview_task = start_task(
            _preview_job,
            self.setup,
            dict(self._seeds),
            self._pseudo,
            key[0],
            key[1],
            self._masks,
            desc="Refine preview",
            show_progress=False,
            on_returned=self._life.guard(done),
        )

    def _show_preview(
        self,
        box: tuple[slice, ...],
        preview: np.ndarray,
        added: dict[str, int],
        state: tuple,
        key: tuple,
    ) -> None:
        layer = self._ensure_preview_layer()
        if state != self._shown:
            # update in place (no new 9 MB array, no dims update): only the box can change
            data = layer.data
            if self._shown is None:
                data[...] = 0
            data[box] = preview
            self._shown = state
            layer.refresh(thumbnail=False, extent=False, highlight=False)
        parts = [f"{r.upper()} +{n} voxels" for r, n in added.items()]
        self.status.value = f"preview sim0={key[0]:.2f}, n_c={key[1]}: " + ", ".join(parts)

    # ------------------------------------------------------------------ accept
    def _accept_by_key(self) -> None:
        """The Accept shortcut: acts only when the Accept button could be pressed."""
        if self.accept_button.enabled:
            self.accept()
        else:
            self.status.value = "nothing to accept yet: compute superpixels first"

    def accept(self, *_: Any) -> TaskHandle | None:
        """Refine the whole volume at the slider values in a worker, then write the result
        into the pseudo-label layer as one undoable step.

        The full refinement (class assembly over the whole grid) takes 0.3-0.9 s on a
        BraTS-size case, so it runs off the GUI thread; the write itself is done on the GUI
        thread when it is ready. Voxels the user paints meanwhile are kept (the write only
        touches voxels that still hold what they held at the click).

        Returns
        -------
        TaskHandle or None
            The accept task (``None`` if there was nothing to accept). When it has finished,
            :attr:`last_accepted` holds the voxels changed (``None`` if nothing was written).
        """
        if self._accept_task is not None and self._accept_task.running:
            return self._accept_task
        self.last_accepted = None
        setup, layer = self.setup, self._target
        if setup is None or layer is None:
            notify_error(InputError("Nothing to accept: compute superpixels first."))
            return None
        if layer not in self.viewer.layers:
            notify_error(InputError("The pseudo-label layer was removed; choose another one."))
            return None
        tracker = track(layer)
        try:
            self._current_inputs()
            sim0, n_c = self._slider_values()
        except Exception as exc:  # noqa: BLE001
            notify_error(exc)
            return None
        snapshot = np.array(layer.data, copy=True)
        prov = tracker.provenance
        prov = None if prov is None else np.array(prov, copy=True)
        self.accept_button.enabled = False
        self.status.value = f"accepting sim0={sim0:.2f}, n_c={n_c}: refining the whole volume..."
        self._accept_task = start_task(
            _accept_job,
            setup,
            self._pseudo,
            snapshot,
            prov,
            sim0,
            n_c,
            bool(self.keep_human.value),
            desc="Accept refinement",
            show_progress=False,
            on_returned=self._life.guard(
                lambda plan: self._write_accepted(setup, layer, snapshot, prov, plan, sim0, n_c)
            ),
            on_error=self._life.guard(self._accept_failed),
            on_finished=self._life.guard(self._accept_finished),
        )
        return self._accept_task

    def _accept_failed(self, exc: BaseException) -> None:
        self.status.value = "accept failed"
        notify_error(exc)

    def _accept_finished(self) -> None:
        self.accept_button.enabled = self.setup is not None and not self._busy.is_busy

    def _write_accepted(
        self,
        setup: RefineSetup,
        layer: Any,
        snapshot: np.ndarray,
        snapshot_provenance: np.ndarray | None,
        plan: Any,
        sim0: float,
        n_c: int,
    ) -> None:
        """GUI thread: write an accept plan computed on ``snapshot`` (and its provenance)
        into ``layer``; voxels whose value or provenance changed since are left alone."""
        if setup is not self.setup or layer is not self._target or layer not in self.viewer.layers:
            self.status.value = "accept dropped: the pseudo-label or its superpixels changed"
            return
        new, changed, confirmed, kept = plan
        data = np.asarray(layer.data)
        if data.shape != snapshot.shape:
            self.status.value = "accept dropped: the labels layer changed shape"
            return
        same = data == snapshot  # painted meanwhile: the user's newer paint wins
        tracker = track(layer)
        prov_now = tracker.provenance
        if snapshot_provenance is not None and prov_now is not None:
            same &= np.asarray(prov_now) == snapshot_provenance  # e.g. 0 painted over 0
        edited = int(np.count_nonzero(changed & ~same))
        changed = changed & same
        confirmed = confirmed & same
        n_changed = int(np.count_nonzero(changed))
        kept_text = f", {kept} hand-painted voxels kept" if kept else ""
        if edited:
            kept_text += f", {edited} voxels painted meanwhile kept"
        self.last_accepted = changed
        if n_changed == 0:
            self.status.value = f"nothing changed at sim0={sim0:.2f}, n_c={n_c}{kept_text}"
            return
        # voxels the refinement confirmed (same label, inside a grown region) are marked too,
        # in the same undo step; kept hand-painted voxels stay 'human'
        indices = np.nonzero(changed)
        self._writing = True
        try:
            with tracker.writing(SUPERPIXEL, also=confirmed), layer.block_history():
                layer.data_setitem(indices, new[indices])
        finally:
            self._writing = False
        # our own write is not a user edit of the pseudo-label; paint made while the accept
        # was computed is (the next preview re-reads it)
        known = snapshot.copy()
        known[indices] = new[indices]
        self._known = known
        if edited:
            self._maybe_edited = True
        self.status.value = (
            f"accepted sim0={sim0:.2f}, n_c={n_c}: {n_changed} voxels changed in "
            f"{layer.name!r}{kept_text} (undo with Ctrl+Z)"
        )
