"""Edit tools panel: Segment-Editor style edits of a case's labels layer.

* **Fill between slices** interpolates the selected class painted on a few slices along the
  current viewing axis (:func:`napari_ssseg.core.editing.fill_between_slices`).
* **Islands** keeps the largest component or removes components under a volume in ml
  (:func:`napari_ssseg.core.editing.island_mask`).
* **Brush (mm)** sets napari's brush size from a diameter in mm (the layer's scale);
  **3D sphere brush** paints in all three dimensions (``n_edit_dimensions = 3``).
* The **volume table** shows NCR / ED / ET and WT / TC in ml, updated (debounced) after
  every paint, undo or data change.

Every write is ONE undoable step (``layer.data_setitem`` inside ``layer.block_history()``)
and marks the changed voxels :data:`~napari_ssseg.core.provenance.HUMAN` in
``layer.metadata["ssseg_provenance"]``. Threshold-masked painting and click prompts exist in
:mod:`napari_ssseg.core.editing` but are not wired into this panel yet (docs/edit-tools.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, PushButton
from qtpy.QtCore import QTimer

from napari_ssseg._napari.widgets._common import notify_error
from napari_ssseg.core.editing import (
    ISLAND_MODES,
    ISLAND_TARGETS,
    brush_diameter_mm,
    brush_size_for_mm,
    fill_between_slices,
    island_mask,
    label_volumes_ml,
)
from napari_ssseg.core.provenance import HUMAN, PROVENANCE_KEY, update_provenance
from napari_ssseg.errors import InputError

__all__ = ["CLASS_CHOICES", "EditWidget", "VOLUME_DEBOUNCE_MS"]

#: Class names shown in the panel -> internal label value.
CLASS_CHOICES: dict[str, int] = {"NCR (1)": 1, "ED (2)": 2, "ET (3)": 3}
#: Pause (ms) after the last edit before the volume table is recomputed.
VOLUME_DEBOUNCE_MS = 150


class EditWidget(Container):
    """Dock widget "Edit tools" (opened from Plugins > napari-ssseg > Edit tools)."""

    def __init__(self, napari_viewer: Any) -> None:
        self.viewer = napari_viewer
        self.layer_box = ComboBox(label="Labels layer", choices=self._layer_choices)
        self.klass = ComboBox(label="Class", choices=list(CLASS_CHOICES), value="ED (2)")
        self.fill_button = PushButton(text="Fill between slices (viewing axis)")
        self.brush_mm = FloatSpinBox(label="Brush (mm)", value=5.0, min=0.1, max=100.0)
        self.sphere = CheckBox(text="3D sphere brush", value=False)
        self.island_mode = ComboBox(label="Islands", choices=list(ISLAND_MODES))
        self.island_target = ComboBox(label="Islands of", choices=list(ISLAND_TARGETS))
        self.min_ml = FloatSpinBox(label="Min volume (ml)", value=0.1, min=0.0, max=1000.0)
        self.island_button = PushButton(text="Apply islands")
        self.volumes = Label(label="Volumes (ml)", value="")
        self.status = Label(label="Status", value="")
        super().__init__(
            widgets=[
                self.layer_box,
                self.klass,
                self.fill_button,
                self.brush_mm,
                self.sphere,
                self.island_mode,
                self.island_target,
                self.min_ml,
                self.island_button,
                self.volumes,
                self.status,
            ]
        )
        self._watched: Any = None
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(VOLUME_DEBOUNCE_MS)
        self._timer.timeout.connect(self.update_volumes)
        self.fill_button.changed.connect(self.fill)
        self.island_button.changed.connect(self.apply_islands)
        self.brush_mm.changed.connect(self.apply_brush)
        self.sphere.changed.connect(self.apply_brush)
        self.layer_box.changed.connect(self._watch)
        for name in ("inserted", "removed"):
            getattr(napari_viewer.layers.events, name).connect(self._on_layers)
        self.native.destroyed.connect(self._teardown)
        self._watch()

    def _teardown(self, *_: Any) -> None:
        """Panel closed: stop the timer and stop listening to the viewer and the layer."""
        self._timer.stop()
        for name in ("inserted", "removed"):
            getattr(self.viewer.layers.events, name).disconnect(self._on_layers)
        if self._watched is not None:
            for ev in (self._watched.events.paint, self._watched.events.data):
                ev.disconnect(self._schedule)
            self._watched = None

    # ------------------------------------------------------------------ layers
    def _layer_choices(self, *_: Any) -> list[tuple[str, Any]]:
        from napari.layers import Labels

        return [(ly.name, ly) for ly in self.viewer.layers if isinstance(ly, Labels)]

    def _on_layers(self, *_: Any) -> None:
        self.layer_box.reset_choices()
        self._watch()

    def _watch(self, *_: Any) -> None:
        layer = self.layer_box.value
        if layer is self._watched:
            return
        if self._watched is not None:
            for ev in (self._watched.events.paint, self._watched.events.data):
                ev.disconnect(self._schedule)
        self._watched = layer
        if layer is not None:
            layer.events.paint.connect(self._schedule)
            layer.events.data.connect(self._schedule)
            self.apply_brush()
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
            with layer.block_history():
                layer.data_setitem(idx, np.asarray(value, dtype=layer.data.dtype))
            layer.metadata[PROVENANCE_KEY] = update_provenance(
                layer.metadata.get(PROVENANCE_KEY), changed, HUMAN
            )
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
