"""Edit tools panel: Segment-Editor style edits of a case's labels layer.

* **Fill between slices** interpolates the selected class painted on a few slices along the
  current viewing axis (:func:`napari_ssseg.core.editing.fill_between_slices`).
* **Islands** keeps the largest component or removes components under a volume in ml
  (:func:`napari_ssseg.core.editing.island_mask`).
* **Brush (mm)** sets napari's brush size from a diameter in mm (the layer's scale);
  **3D sphere brush** paints in all three dimensions (``n_edit_dimensions = 3``).
* **Paint only where** *image* **is within [from, to]** (threshold-masked painting,
  :func:`napari_ssseg.core.editing.threshold_mask`): napari's own brush strokes, fill-bucket
  clicks and polygons on the panel's labels layer paint a class only where the image lies in
  the window. The panel restricts the voxels napari is about to paint (each brush dab, fill
  or polygon goes through ``Labels._apply_mask_to_data``, shadowed on the layer instance by
  :class:`_MaskHooks`), so napari never writes outside the window: the stroke shows masked
  while it is drawn, napari's undo item holds only the kept voxels (one Ctrl+Z undoes the
  stroke, redo re-applies it) and the provenance tracker marks only those voxels HUMAN.
  Erasing (the background label) is never masked. The image and labels layers may have
  different grids: labels voxels are mapped to image voxels through world coordinates (each
  layer's ``data_to_world`` affine, :func:`voxel_map`, nearest image voxel); labels voxels
  outside the image are outside the window.
* **Click prompts**: in pan/zoom mode a left click on the canvas adds the superpixel region
  grown from the clicked superpixel (Thompson et al.'s Algorithm 1 from a seed,
  :func:`napari_ssseg.core.editing.click_region`) to the selected class, a Ctrl+click removes
  the region from it (:func:`~napari_ssseg.core.editing.click_change`). The superpixels and
  the refinement session of the class's region (WT superpixels from FLAIR for ED, TC from T2
  + T1Gd for NCR / ET) are computed in a worker thread when the mode is switched on (napari
  progress bar, status line); they come from the same on-disk cache as the Refine panel's
  (same brain mask and default parameters). A click made while they are computed is applied
  when they are ready.
* The **volume table** shows NCR / ED / ET and WT / TC in ml, updated (debounced) after
  every paint, undo or data change.

Every write of the panel is ONE undoable step (``layer.data_setitem`` inside
``layer.block_history()``) made through the layer's
:class:`~napari_ssseg._napari.provenance.ProvenanceTracker`: the changed voxels become
:data:`~napari_ssseg.core.provenance.HUMAN` in ``layer.metadata["ssseg_provenance"]`` and
undo / redo restore / re-apply their provenance (docs/edit-tools.md).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, PushButton
from qtpy.QtCore import QTimer

from napari_ssseg import defaults
from napari_ssseg._napari.layers import handle_of_layer
from napari_ssseg._napari.provenance import track
from napari_ssseg._napari.widgets._common import notify_error
from napari_ssseg.core.editing import (
    ISLAND_MODES,
    ISLAND_TARGETS,
    brush_diameter_mm,
    brush_size_for_mm,
    click_change,
    click_region,
    fill_between_slices,
    island_mask,
    label_volumes_ml,
    region_for_class,
    threshold_mask,
)
from napari_ssseg.core.provenance import HUMAN
from napari_ssseg.core.refine import DEFAULT_SIM0
from napari_ssseg.errors import GeometryError, InputError

__all__ = [
    "CLASS_CHOICES",
    "CLICK_MOVE_TOLERANCE_PX",
    "CLICK_SUPERPIXEL_PARAMS",
    "EditWidget",
    "VOLUME_DEBOUNCE_MS",
    "click_session_job",
    "click_session_setup",
    "voxel_map",
]

#: Class names shown in the panel -> internal label value.
CLASS_CHOICES: dict[str, int] = {"NCR (1)": 1, "ED (2)": 2, "ET (3)": 3}
#: Pause (ms) after the last edit before the volume table is recomputed.
VOLUME_DEBOUNCE_MS = 150
#: A press and release further apart than this (canvas pixels) is a drag (pan), not a click.
CLICK_MOVE_TOLERANCE_PX = 4.0
#: Superpixel parameters of the click prompts: the Refine panel's defaults, so both panels
#: share the superpixel cache.
CLICK_SUPERPIXEL_PARAMS: dict[str, Any] = {
    "n_segments": defaults.N_SEGMENTS,
    "compactness": defaults.COMPACTNESS,
    "sigma": defaults.SIGMA,
}
_MAX_CLICK_SESSIONS = 4


# --------------------------------------------------------------------------- helpers
def _layer_affine(layer: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(A, b)`` with ``world = A @ data + b`` (napari's data-to-world transform)."""
    nd = int(layer.ndim)
    b = np.asarray(layer.data_to_world([0.0] * nd), float)[-nd:]
    cols = [np.asarray(layer.data_to_world(list(e)), float)[-nd:] - b for e in np.eye(nd)]
    return np.stack(cols, axis=1), b


def voxel_map(labels: Any, image: Any) -> tuple[np.ndarray, np.ndarray]:
    """Affine map from ``labels`` voxel indices to ``image`` voxel coordinates.

    Parameters
    ----------
    labels, image : napari layers
        Layers of the same dimensionality (scale, translate, rotate, shear and affine may
        differ).

    Returns
    -------
    M : (D, D) ndarray of float
    t : (D,) ndarray of float
        ``image_coords = M @ labels_index + t`` (round to get the image voxel).

    Raises
    ------
    GeometryError
        The layers have different dimensionality, or the image transform is singular.
    """
    if int(labels.ndim) != int(image.ndim):
        raise GeometryError(
            f"the mask image {image.name!r} is {image.ndim}D but the labels layer "
            f"{labels.name!r} is {labels.ndim}D: choose an image of the same case."
        )
    a_l, b_l = _layer_affine(labels)
    a_i, b_i = _layer_affine(image)
    try:
        inv = np.linalg.inv(a_i)
    except np.linalg.LinAlgError as exc:
        raise GeometryError(
            f"the mask image {image.name!r} has a singular transform (a zero scale?): fix its "
            "scale, or choose another image."
        ) from exc
    return inv @ a_l, inv @ (b_l - b_i)


def _image_array(image: Any) -> np.ndarray:
    """Full-resolution data of an image layer (level 0 of a multiscale image)."""
    data = image.data[0] if getattr(image, "multiscale", False) else image.data
    return np.asarray(data)


class _MaskHooks:
    """Per labels layer: the Edit panels whose threshold mask restricts napari's painting.

    napari (0.9) paints brush dabs, fill-bucket regions and polygons through
    ``Labels._apply_mask_to_data(data, mask, new_label, slice_key)``, which records the undo
    atom and writes the voxels under ``mask``. :meth:`install` shadows that method on the
    layer *instance* (the class is not modified, other layers are not affected) with one that
    first removes from ``mask`` the voxels where a panel's window excludes them, so napari
    never paints there: its undo atom, its display caches and the provenance tracker all see
    the masked edit only.
    """

    _panels: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @classmethod
    def supported(cls, layer: Any) -> bool:
        return callable(getattr(type(layer), "_apply_mask_to_data", None))

    @classmethod
    def install(cls, layer: Any, panel: Any) -> bool:
        if not cls.supported(layer):
            return False
        panels = cls._panels.get(layer)
        if panels is None:
            panels = cls._panels[layer] = weakref.WeakSet()
            original = type(layer)._apply_mask_to_data
            layer_ref = weakref.ref(layer)

            def apply_mask_to_data(data, mask, new_label, volume_slice):
                ly = layer_ref()
                for p in list(cls._panels.get(ly, ())):
                    mask = p._restrict_paint(ly, mask, new_label, volume_slice)
                return original(ly, data, mask, new_label, volume_slice)

            layer._apply_mask_to_data = apply_mask_to_data
        panels.add(panel)
        return True

    @classmethod
    def remove(cls, layer: Any, panel: Any) -> None:
        panels = cls._panels.get(layer)
        if panels is None:
            return
        panels.discard(panel)
        if not panels:
            del cls._panels[layer]
            layer.__dict__.pop("_apply_mask_to_data", None)


def click_session_setup(
    case: Any,
    preprocessed: Any,
    region: str,
    params: dict[str, Any],
    *,
    progress: Any = None,
    should_stop: Any = None,
) -> Any:
    """Superpixels and refinement session of one region of ``case`` (for click prompts).

    The Refine panel's set-up (:func:`~napari_ssseg.core.refine_preview.compute_setup`) on
    the same brain mask, with the same parameters and on-disk superpixel cache, so both
    panels compute the superpixels of a case once.

    Parameters
    ----------
    case : Case
    preprocessed : Preprocessed or None
        Its brain mask is used when present (as the Refine panel does).
    region : {"wt", "tc"}
    params : dict
        ``n_segments``, ``compactness``, ``sigma`` of the superpixels.
    progress, should_stop : callable, optional
        Core's progress and cancel callbacks (:mod:`napari_ssseg.core.progress`).

    Returns
    -------
    RefinementSession

    Raises
    ------
    InputError
        The case has no brain (all channels zero).
    """
    from napari_ssseg.core.refine_preview import case_brain_mask, compute_setup

    region = str(region).lower()
    if region not in ("wt", "tc"):
        raise InputError(f"click prompts: region {region!r} is unknown; expected 'wt' or 'tc'.")
    brain = case_brain_mask(case, preprocessed)
    if not np.any(brain):
        raise InputError(
            f"case {getattr(case, 'name', '?')!r} has an empty brain mask: no superpixels to "
            "click on. Check the images (Loader panel)."
        )
    # compute_setup checks that a pseudo-label seed lies in the brain; a click grows from
    # the clicked superpixel, so the whole brain stands in for the seed
    setup = compute_setup(
        case,
        preprocessed,
        (region,),
        params,
        {region: brain},
        brain=brain,
        progress=progress,
        should_stop=should_stop,
    )
    return setup.sessions[region]


def click_session_job(case: Any, preprocessed: Any, region: str, params: dict[str, Any]):
    """Worker generator: :func:`click_session_setup` with its progress reports.

    Yields
    ------
    dict or None
        Progress reports or heartbeats (:func:`~napari_ssseg._napari.workers.
        callback_generator`).

    Returns
    -------
    RefinementSession
    """
    from napari_ssseg._napari.workers import callback_generator, recorded_warnings

    # channel fallbacks (a missing FLAIR...) are recorded, not shown: the superpixels are
    # still computed from the available channels, as in the Refine panel
    with recorded_warnings(UserWarning):
        return (
            yield from callback_generator(
                click_session_setup, case, preprocessed, region, params, stop_kwarg="should_stop"
            )
        )


def _click_region_of(klass: str) -> str:
    """Superpixel region (``"wt"`` / ``"tc"``) of a class name of :data:`CLASS_CHOICES`."""
    return region_for_class(CLASS_CHOICES[klass])


class EditWidget(Container):
    """Dock widget "Edit tools" (opened from Plugins > napari-ssseg > Edit tools)."""

    def __init__(self, napari_viewer: Any) -> None:
        from napari_ssseg._napari.widgets._common import PanelLife

        self.viewer = napari_viewer
        self.layer_box = ComboBox(label="Labels layer", choices=self._layer_choices)
        self.klass = ComboBox(label="Class", choices=list(CLASS_CHOICES), value="ED (2)")
        self.fill_button = PushButton(text="Fill between slices (viewing axis)")
        self.brush_mm = FloatSpinBox(label="Brush (mm)", value=5.0, min=0.1, max=100.0)
        self.sphere = CheckBox(text="3D sphere brush", value=False)
        self.mask_on = CheckBox(text="Paint only where", value=False)
        self.mask_image = ComboBox(label="Mask image", choices=self._image_choices)
        self.mask_low = FloatSpinBox(label="is from", value=0.0, min=-1e9, max=1e9, step=0.1)
        self.mask_high = FloatSpinBox(label="to", value=1.0, min=-1e9, max=1e9, step=0.1)
        self.mask_range = Label(label="Image range", value="")
        self.click_on = CheckBox(text="Click prompts (click adds, Ctrl+click removes)")
        self.click_sim0 = FloatSpinBox(
            label="Click sim0", value=DEFAULT_SIM0, min=0.0, max=1.0, step=0.05
        )
        self.island_mode = ComboBox(label="Islands", choices=list(ISLAND_MODES))
        self.island_target = ComboBox(label="Islands of", choices=list(ISLAND_TARGETS))
        self.min_ml = FloatSpinBox(label="Min volume (ml)", value=0.1, min=0.0, max=1000.0)
        self.island_button = PushButton(text="Apply islands")
        self.volumes = Label(label="Volumes (ml)", value="")
        self.status = Label(label="Status", value="")
        self.status.native.setWordWrap(True)
        self.mask_range.native.setWordWrap(True)
        self.mask_on.tooltip = (
            "After each brush / fill / polygon edit, voxels painted where the image is outside "
            "[from, to] get their previous value back (same undo step). Erasing is not masked."
        )
        self.click_on.tooltip = (
            "Pan/zoom mode: a left click adds the superpixel region grown from the clicked "
            "superpixel to the class; Ctrl+click removes it. One click = one undo step."
        )
        super().__init__(
            widgets=[
                self.layer_box,
                self.klass,
                self.fill_button,
                self.brush_mm,
                self.sphere,
                self.mask_on,
                self.mask_image,
                self.mask_low,
                self.mask_high,
                self.mask_range,
                self.click_on,
                self.click_sim0,
                self.island_mode,
                self.island_target,
                self.min_ml,
                self.island_button,
                self.volumes,
                self.status,
            ]
        )
        self._watched: Any = None
        self._ranged: Any = None  # the image whose range the spin boxes show
        self._mask_counts = [0, 0]  # voxels painted / kept out by the mask since last edit
        self._mask_error: str | None = None  # last window error notified
        self.click_task: Any = None
        self._click_key: tuple | None = None  # (id(case), region) being computed
        self._sessions: OrderedDict[tuple, tuple[Any, Any]] = OrderedDict()
        # clicks made while their region's session is computed: (position, positive, class)
        self._pending_clicks: list[tuple[tuple[float, ...], bool, str]] = []
        self._click_hooked = False
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(VOLUME_DEBOUNCE_MS)
        self._timer.timeout.connect(self.update_volumes)
        self._life = PanelLife(self.native)
        self.fill_button.changed.connect(self.fill)
        self.island_button.changed.connect(self.apply_islands)
        self.brush_mm.changed.connect(self.apply_brush)
        self.sphere.changed.connect(self.apply_brush)
        self.layer_box.changed.connect(self._watch)
        self.mask_image.changed.connect(self._on_mask_image)
        for box in (self.mask_on, self.mask_image, self.mask_low, self.mask_high):
            box.changed.connect(self._on_mask_settings)
        self.click_on.changed.connect(self._on_click_mode)
        self.klass.changed.connect(self._on_class)
        for name in ("inserted", "removed"):
            getattr(napari_viewer.layers.events, name).connect(self._on_layers)
        self.native.destroyed.connect(self._teardown)
        self._watch()
        self._default_mask_image()

    def _teardown(self, *_: Any) -> None:
        """Panel closed: stop the timer, the worker and listening to the viewer and layer."""
        self._timer.stop()
        if self.click_task is not None and self.click_task.running:
            self.click_task.cancel()
        self._unhook_clicks()
        for name in ("inserted", "removed"):
            getattr(self.viewer.layers.events, name).disconnect(self._on_layers)
        if self._watched is not None:
            self._disconnect(self._watched)
            self._watched = None

    # ------------------------------------------------------------------ layers
    def _layer_choices(self, *_: Any) -> list[tuple[str, Any]]:
        from napari.layers import Labels

        return [(ly.name, ly) for ly in self.viewer.layers if isinstance(ly, Labels)]

    def _image_choices(self, *_: Any) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [
            (ly.name, ly)
            for ly in self.viewer.layers
            if isinstance(ly, Image) and not getattr(ly, "rgb", False)
        ]

    def _on_layers(self, *_: Any) -> None:
        if not self._life.alive:
            return
        self.layer_box.reset_choices()
        self.mask_image.reset_choices()
        self._watch()
        self._default_mask_image()

    def _disconnect(self, layer: Any) -> None:
        for ev in (layer.events.paint, layer.events.data):
            ev.disconnect(self._schedule)
        layer.events.paint.disconnect(self._on_paint_masked)
        _MaskHooks.remove(layer, self)

    def _watch(self, *_: Any) -> None:
        layer = self.layer_box.value
        if layer is self._watched:
            return
        if self._watched is not None:
            self._disconnect(self._watched)
        self._watched = layer
        self._pending_clicks = []
        if layer is not None:
            layer.events.paint.connect(self._schedule)
            layer.events.data.connect(self._schedule)
            track(layer)  # hand edits become HUMAN, undo / redo restore provenance
            layer.events.paint.connect(self._on_paint_masked)
            _MaskHooks.install(layer, self)
            self.apply_brush()
            if self.click_on.value:
                self._prepare_click_session()
        self.update_volumes()

    def _schedule(self, *_: Any) -> None:
        self._timer.start()

    @property
    def layer(self) -> Any:
        layer = self.layer_box.value
        if layer is None:
            raise InputError("No labels layer: load a case (Loader panel) or add a labels layer.")
        return layer

    # ------------------------------------------------------------------ writes
    def _write(self, changed: np.ndarray, value: int, what: str) -> int:
        """Write ``value`` into ``changed`` voxels as one undoable step, mark HUMAN."""
        layer = self.layer
        n = int(np.count_nonzero(changed))
        if n:
            idx = np.nonzero(changed)
            with track(layer).writing(HUMAN), layer.block_history():
                layer.data_setitem(idx, np.asarray(value, dtype=layer.data.dtype))
        self.status.value = f"{what}: {n} voxels changed (undo: Ctrl+Z)"
        self.update_volumes()
        return n

    def viewing_axis(self) -> int:
        """Data axis of the labels layer the 2D view slices through."""
        layer = self.layer
        dims = self.viewer.dims
        axis = int(dims.not_displayed[0]) if dims.not_displayed else int(dims.order[0])
        return axis - (dims.ndim - layer.ndim)

    def fill(self, *_: Any) -> int:
        """Fill between slices for the selected class along the viewing axis."""
        try:
            layer = self.layer
            label = CLASS_CHOICES[self.klass.value]
            changed = fill_between_slices(
                np.asarray(layer.data), label, self.viewing_axis(), layer.scale
            )
        except InputError as exc:
            notify_error(exc)
            self.status.value = str(exc)
            return 0
        return self._write(changed, label, "fill between slices")

    def apply_islands(self, *_: Any) -> int:
        """Keep the largest / remove small islands (one undoable step)."""
        try:
            layer = self.layer
            drop = island_mask(
                np.asarray(layer.data),
                self.island_mode.value,
                self.island_target.value,
                spacing=layer.scale,
                min_volume_ml=self.min_ml.value,
            )
        except InputError as exc:
            notify_error(exc)
            return 0
        return self._write(drop, 0, f"islands ({self.island_mode.value})")

    def apply_brush(self, *_: Any) -> None:
        """Set the layer's brush size (and sphere mode) from the diameter in mm."""
        layer = self.layer_box.value
        if layer is None:
            return
        layer.n_edit_dimensions = 3 if self.sphere.value else 2
        ndisp = 3 if self.sphere.value else 2
        dims = list(range(layer.ndim))[-ndisp:]
        if not self.sphere.value:
            displayed = [
                d - (self.viewer.dims.ndim - layer.ndim) for d in self.viewer.dims.displayed
            ]
            dims = [d for d in displayed if d >= 0] or dims
        layer.brush_size = brush_size_for_mm(self.brush_mm.value, layer.scale, dims)
        mm = brush_diameter_mm(layer.brush_size, layer.scale, dims)
        self.status.value = f"brush size {layer.brush_size} ({mm:.1f} mm across)"

    # ------------------------------------------------------------------ masked painting
    def _default_mask_image(self) -> None:
        """Pick the labels layer's case FLAIR (else its first image) if nothing is chosen."""
        if self.mask_image.value is not None and self._ranged is self.mask_image.value:
            return
        choices = [ly for _, ly in self._image_choices()]
        if not choices:
            return
        handle = handle_of_layer(self.layer_box.value) if self.layer_box.value else None
        same = [ly for ly in choices if handle is not None and handle_of_layer(ly) is handle]
        flair = [ly for ly in same if ly.metadata.get("ssseg_modality") == "flair"]
        current = self.mask_image.value
        best = (flair or same or choices)[0]
        if best is not current:
            self.mask_image.value = best
        else:
            self._on_mask_image()

    def _on_mask_image(self, *_: Any) -> None:
        """Show the chosen image's range; default window = its 1st-99th brain percentiles."""
        image = self.mask_image.value
        self._ranged = image
        if image is None:
            self.mask_range.value = "no image layer"
            return
        data = _image_array(image)
        sub = data[tuple(slice(None, None, max(1, s // 64)) for s in data.shape)]
        sub = sub[np.isfinite(sub)]
        if sub.size == 0:
            self.mask_range.value = f"{image.name}: no finite values"
            return
        inside = sub[sub != 0] if np.any(sub != 0) else sub
        lo, hi = float(np.min(sub)), float(np.max(sub))
        p1, p99 = (float(v) for v in np.percentile(inside, [1.0, 99.0]))
        span = max(hi - lo, 1e-6)
        step = float(10 ** np.floor(np.log10(span / 100.0)))
        decimals = int(max(0, min(6, -np.floor(np.log10(step)))))
        for box in (self.mask_low, self.mask_high):
            box.native.setDecimals(decimals)
            box.step = step
        self.mask_low.value = round(p1, decimals)
        self.mask_high.value = round(p99, decimals)
        self.mask_range.value = (
            f"{lo:.{decimals}f} to {hi:.{decimals}f} (1st-99th percentile of non-zero "
            f"voxels {p1:.{decimals}f} to {p99:.{decimals}f})"
        )

    def window_at(self, layer: Any, coords: tuple[np.ndarray, ...]) -> np.ndarray:
        """Whether the mask image is within [from, to] at the labels voxels ``coords``.

        Parameters
        ----------
        layer : napari.layers.Labels
        coords : tuple of (N,) int arrays
            Labels voxel indices.

        Returns
        -------
        (N,) ndarray of bool
            False where the image is outside the window or the voxel is outside the image.
        """
        image = self.mask_image.value
        if image is None:
            raise InputError(
                "Paint only where: no image layer is chosen. Load a case or choose an image, "
                "or untick 'Paint only where'."
            )
        low, high = float(self.mask_low.value), float(self.mask_high.value)
        data = _image_array(image)
        mat, off = voxel_map(layer, image)
        if (
            data.shape == tuple(layer.data.shape)
            and np.allclose(mat, np.eye(len(off)))
            and (np.allclose(off, 0.0))
        ):
            return threshold_mask(data[coords], low, high)
        pts = mat @ np.stack([np.asarray(c, float) for c in coords]) + off[:, None]
        idx = np.rint(pts).astype(np.intp)
        ok = np.all((idx >= 0) & (idx < np.asarray(data.shape)[:, None]), axis=0)
        out = np.zeros(idx.shape[1], bool)
        if ok.any():
            out[ok] = threshold_mask(data[tuple(idx[:, ok])], low, high)
        return out

    def _on_mask_settings(self, *_: Any) -> None:
        """Mask switched on / window changed: forget the last error, check napari."""
        self._mask_error = None
        if not self.mask_on.value:
            return
        layer = self.layer_box.value
        if layer is not None and not _MaskHooks.supported(layer):
            self.status.value = (
                "Paint only where needs napari's mask-based painting (napari 0.9 or later); "
                "this napari paints unmasked."
            )
        elif self.mask_image.value is None:
            self.status.value = "Paint only where: choose an image (nothing is painted)"
        else:
            self.status.value = (
                f"painting only where {self.mask_image.value.name} is within "
                f"[{self.mask_low.value:g}, {self.mask_high.value:g}]"
            )

    def _restrict_paint(
        self, layer: Any, mask: np.ndarray, new_label: int, slice_key: tuple
    ) -> np.ndarray:
        """``mask`` of one napari paint operation without the voxels outside the window.

        Called by napari's painting (brush dab, fill, polygon) before it writes, through
        :class:`_MaskHooks`. Erasing (the background label) is never restricted. If the window
        cannot be evaluated (no image, ``from > to``, another dimensionality), nothing is
        painted and the status line says why.

        Parameters
        ----------
        layer : napari.layers.Labels
        mask : ndarray of bool
            Voxels napari is about to paint, inside the bounding box ``slice_key``.
        new_label : int
        slice_key : tuple of slice
            The bounding box in labels data coordinates.

        Returns
        -------
        ndarray of bool
            A new mask (``mask`` itself when nothing is restricted).
        """
        if not self._life.alive or not self.mask_on.value or layer is not self._watched:
            return mask
        if int(new_label) == int(getattr(layer.colormap, "background_value", 0)):
            return mask  # erasing: never masked
        mask = np.asarray(mask, bool)
        local = np.nonzero(mask)
        if local[0].size == 0:
            return mask
        coords = tuple(q + (s.start or 0) for q, s in zip(local, slice_key))
        try:
            ok = self.window_at(layer, coords)
        except (InputError, GeometryError) as exc:
            message = str(exc)
            if message != self._mask_error:
                self._mask_error = message
                notify_error(exc)
            self.status.value = f"nothing painted: {message}"
            ok = np.zeros(local[0].size, bool)
        out = np.zeros_like(mask)
        out[tuple(q[ok] for q in local)] = True
        self._mask_counts[0] += int(np.count_nonzero(ok))
        self._mask_counts[1] += int(ok.size - np.count_nonzero(ok))
        return out

    def _on_paint_masked(self, event: Any) -> None:
        """After a hand edit with the mask on: say what the mask kept and left alone."""
        kept, left = self._mask_counts
        self._mask_counts = [0, 0]
        if not self._life.alive or not self.mask_on.value or (kept == 0 and left == 0):
            return
        if self._mask_error is None:
            self.status.value = (
                f"paint only where {getattr(self.mask_image.value, 'name', '?')} in "
                f"[{self.mask_low.value:g}, {self.mask_high.value:g}]: {kept} voxels painted, "
                f"{left} outside the window left as they were"
            )

    # ------------------------------------------------------------------ click prompts
    def _on_click_mode(self, on: bool) -> None:
        if on:
            self._hook_clicks()
            layer = self.layer_box.value
            if layer is not None and layer.mode != "pan_zoom":
                layer.mode = "pan_zoom"  # a click must not paint as well
            self._prepare_click_session()
        else:
            self._unhook_clicks()
            self._pending_clicks = []
            if self.click_task is not None and self.click_task.running:
                self.click_task.cancel()

    def _on_class(self, *_: Any) -> None:
        if self.click_on.value:
            self._prepare_click_session()

    def _hook_clicks(self) -> None:
        if not self._click_hooked:
            self.viewer.mouse_drag_callbacks.append(self._on_canvas_mouse)
            self._click_hooked = True

    def _unhook_clicks(self) -> None:
        if self._click_hooked:
            if self._on_canvas_mouse in self.viewer.mouse_drag_callbacks:
                self.viewer.mouse_drag_callbacks.remove(self._on_canvas_mouse)
            self._click_hooked = False

    def _on_canvas_mouse(self, viewer: Any, event: Any):
        """Viewer drag callback: a click (press + release without moving) is a prompt."""
        if not self._life.alive or not self.click_on.value:
            return
        if event.type != "mouse_press" or getattr(event, "button", 1) in (2, 3):
            return
        active = viewer.layers.selection.active
        if active is not None and getattr(active, "mode", "pan_zoom") != "pan_zoom":
            return  # painting, picking, transforming...: napari's tools keep the mouse
        if viewer.dims.ndisplay != 2:
            self.status.value = "click prompts work in a 2D view (switch off 3D)"
            return
        start = np.asarray(event.pos, float)
        position = tuple(event.position)
        positive = "Control" not in event.modifiers
        moved = False
        yield
        while event.type == "mouse_move":
            if np.hypot(*(np.asarray(event.pos, float) - start)) > CLICK_MOVE_TOLERANCE_PX:
                moved = True
            yield
        if not moved:
            self.click(position, positive=positive)

    def _click_context(self, klass: str | None = None) -> tuple[Any, Any, str, tuple]:
        """``(labels layer, case handle, region, session key)`` of a click on ``klass``."""
        layer = self.layer
        handle = handle_of_layer(layer)
        if handle is None:
            raise InputError(
                f"click prompts need a labels layer of a case loaded by the plugin (its images "
                f"give the superpixels); {layer.name!r} is not one. Load the case with the "
                "Loader panel, or choose its labels layer."
            )
        case = handle.case
        if tuple(layer.data.shape) != tuple(case.shape):
            raise GeometryError(
                f"the labels layer {layer.name!r} has shape {tuple(layer.data.shape)} but its "
                f"case {case.name!r} has shape {tuple(case.shape)}: choose the case's labels "
                "layer."
            )
        region = _click_region_of(self.klass.value if klass is None else klass)
        return layer, handle, region, (id(case), region)

    def click_session(self, klass: str | None = None) -> Any:
        """The refinement session of ``klass``'s region (default: the selected class), or
        ``None`` while it is not computed."""
        try:
            _, handle, _, key = self._click_context(klass)
        except (InputError, GeometryError):
            return None
        entry = self._sessions.get(key)
        return entry[1] if entry is not None and entry[0] is handle.case else None

    def _prepare_click_session(self, klass: str | None = None) -> Any:
        """Start computing the session of ``klass``'s region (default: the selected class)
        if it is missing; returns the task computing it, or ``None``."""
        try:
            _, handle, region, key = self._click_context(klass)
        except (InputError, GeometryError) as exc:
            self.status.value = str(exc)
            return None
        if self.click_session(klass) is not None:
            self.status.value = f"click prompts ready ({region.upper()} superpixels)"
            return None
        if self.click_task is not None and self.click_task.running:
            if self._click_key == key:
                return self.click_task
            running = self._click_key[1] if self._click_key else None
            if any(_click_region_of(p[2]) == running for p in self._pending_clicks):
                # clicks wait for the running task: let it finish; the next task starts then
                self.status.value = (
                    f"click prompts: {str(running).upper()} superpixels first (queued clicks), "
                    f"then {region.upper()}"
                )
                return self.click_task
            self.click_task.cancel()
        from napari_ssseg._napari.workers import start_task

        case = handle.case
        self._click_key = key
        self.status.value = f"click prompts: computing {region.upper()} superpixels..."
        guard = self._life.guard

        def returned(session: Any) -> None:
            if case_is_open(case):
                self._sessions[(id(case), region)] = (case, session)
                self._sessions.move_to_end((id(case), region))
                while len(self._sessions) > _MAX_CLICK_SESSIONS:
                    self._sessions.popitem(last=False)
            self.status.value = f"click prompts ready ({session.n_superpixels} superpixels)"
            for position, positive, klass in take_pending():
                self.click(position, positive=positive, klass=klass)

        def take_pending() -> list[tuple[tuple[float, ...], bool, str]]:
            """Remove (and return) the queued clicks of this task's region."""
            mine = [p for p in self._pending_clicks if _click_region_of(p[2]) == region]
            self._pending_clicks = [p for p in self._pending_clicks if p not in mine]
            return mine

        def case_is_open(c: Any) -> bool:
            return any(getattr(handle_of_layer(ly), "case", None) is c for ly in self.viewer.layers)

        def progress(report: dict[str, Any]) -> None:
            if report and report.get("message"):
                self.status.value = f"click prompts: {report['message']}"

        def failed(exc: BaseException) -> None:
            take_pending()
            self.status.value = "click prompts failed: " + " ".join(str(exc).split())[:100]
            notify_error(exc)

        def aborted() -> None:
            take_pending()

        def finished() -> None:
            # the class may have changed meanwhile: compute its region's session next
            if self.click_task is not handle_box[0] or not self.click_on.value:
                return
            try:
                now = self._click_context()[3]
            except (InputError, GeometryError):
                return
            if now != key and self.click_session() is None:
                self._prepare_click_session()

        self.click_task = start_task(
            click_session_job,
            case,
            handle.preprocessed,
            region,
            dict(CLICK_SUPERPIXEL_PARAMS),
            desc=f"Click prompts: {region.upper()} superpixels",
            on_yielded=guard(progress),
            on_returned=guard(returned),
            on_error=guard(failed),
            on_aborted=guard(aborted),
            on_finished=guard(finished),
            start=False,
        )
        handle_box = [self.click_task]
        self.click_task.worker.start()
        return self.click_task

    def click(self, position: Any, positive: bool = True, klass: str | None = None) -> int:
        """Apply a click prompt at world ``position``: add (or remove) the grown region.

        Parameters
        ----------
        position : sequence of float
            World coordinates of the click (``event.position``).
        positive : bool
            ``True`` adds the region to the class, ``False`` removes it.
        klass : str, optional
            A key of :data:`CLASS_CHOICES`; default: the class selected in the panel.

        Returns
        -------
        int
            Voxels changed (0 when nothing changed, or the superpixels are not ready yet and
            the click was queued).
        """
        klass = self.klass.value if klass is None else klass
        try:
            if klass not in CLASS_CHOICES:
                raise InputError(
                    f"click prompts: class {klass!r} is unknown; expected one of "
                    f"{list(CLASS_CHOICES)}."
                )
            layer, _, region, _ = self._click_context(klass)
            voxel = np.rint(np.asarray(layer.world_to_data(position), float)).astype(int)
            label = CLASS_CHOICES[klass]
            session = self.click_session(klass)
            if session is None:
                self._pending_clicks.append(
                    (tuple(float(v) for v in position), bool(positive), klass)
                )
                self._prepare_click_session(klass)
                self.status.value = (
                    f"click prompts: {region.upper()} superpixels are being computed; the "
                    "click is applied when they are ready"
                )
                return 0
            mask, n_sp = click_region(session, voxel, sim0=float(self.click_sim0.value))
            changed = click_change(np.asarray(layer.data), mask, label, bool(positive))
        except (InputError, GeometryError) as exc:
            notify_error(exc)
            self.status.value = str(exc)
            return 0
        sign = "+" if positive else "-"
        what = f"click {sign}{klass} at {tuple(int(v) for v in voxel)} ({n_sp} superpixels)"
        return self._write(changed, label if positive else 0, what)

    # ------------------------------------------------------------------ volumes
    def update_volumes(self, *_: Any) -> dict[str, float]:
        """Recompute the volume table (np.bincount, cheap)."""
        try:
            layer = self.layer_box.value
        except RuntimeError:  # the panel's Qt widgets are gone (viewer closing)
            return {}
        if layer is None:
            self.volumes.value = "no labels layer"
            return {}
        vol = label_volumes_ml(np.asarray(layer.data), layer.scale)
        self.volumes.value = "  ".join(f"{k} {v:.2f}" for k, v in vol.items())
        return vol
