"""Provenance that follows every edit of a labels layer, including napari's undo and redo.

napari's :class:`~napari.layers.Labels` records each committed edit (a brush stroke, a fill,
a ``data_setitem`` inside ``block_history()``) as one *history item* and emits
``layer.events.paint(value=item)`` for it. :class:`ProvenanceTracker` listens to that event
and keeps, for each history item, the provenance codes it replaced, so that:

* every hand edit (paint, erase, fill, polygon) sets :data:`~napari_ssseg.core.provenance.HUMAN`
  on the voxels it changed, at once (not at the next save);
* a panel that writes labels says what it writes with ``with tracker.writing(SCRIBBLE):``
  around its ``data_setitem`` calls, and those voxels get that code instead;
* ``layer.undo()`` / ``layer.redo()`` (Ctrl+Z / Ctrl+Shift+Z) restore / re-apply the
  provenance of the same voxels, in step with napari's own history;
* edits made before the tracker was attached (painting before any panel was open) and still
  in napari's history become ``HUMAN`` when it is attached, with undo / redo as above.

The provenance array lives where the rest of the plugin expects it,
``layer.metadata["ssseg_provenance"]`` (:data:`~napari_ssseg.core.provenance.PROVENANCE_KEY`);
each change replaces the array (never mutated in place), so a copy someone kept stays valid.

napari offers no undo/redo event, so :func:`track` wraps the layer *instance's* ``undo`` and
``redo`` methods (napari's key bindings and menu call ``layer.undo()``); the class is not
modified, and other layers are not affected. Replacing ``layer.data`` resets napari's history,
and the tracker's history with it.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from napari_ssseg.core.provenance import HUMAN, PROVENANCE_CODES, PROVENANCE_KEY, empty_provenance
from napari_ssseg.errors import InputError

__all__ = ["ProvenanceTracker", "track", "tracker_of"]

_TRACKERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _atom_indices(atom: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Flat (raveled) indices of the voxels one napari history atom changed."""
    if isinstance(atom, tuple) and len(atom) == 3 and not hasattr(atom, "slice_key"):
        indices = atom[0]
        if isinstance(indices, tuple) and len(indices) == len(shape):
            arrays = [np.asarray(i, np.intp).ravel() for i in indices]
            if not arrays or arrays[0].size == 0:
                return np.zeros(0, np.intp)
            arrays = np.broadcast_arrays(*arrays)
            return np.ravel_multi_index(tuple(arrays), shape)
        box = np.zeros(shape, bool)
        box[indices] = True
        return np.flatnonzero(box)
    # _MaskedPaintAtom: a bounding box and an optional mask inside it
    key = atom.slice_key
    box = np.zeros(shape, bool)
    if atom.mask is None:
        box[key] = True
    else:
        box[key] = np.asarray(atom.mask, bool)
    return np.flatnonzero(box)


def _union_indices(parts: list[np.ndarray], size: int) -> np.ndarray:
    """Sorted unique flat indices of ``parts`` (a boolean mask for large edits: O(size),
    where ``np.unique``'s sort took seconds for millions of voxels)."""
    total = sum(int(p.size) for p in parts)
    if total == 0:
        return np.zeros(0, np.intp)
    if total < 100_000:
        return np.unique(np.concatenate(parts))
    mask = np.zeros(size, bool)
    for p in parts:
        mask[p] = True
    return np.flatnonzero(mask)


class ProvenanceTracker:
    """Keeps ``layer.metadata[PROVENANCE_KEY]`` in step with a labels layer's edit history.

    Use :func:`track` to get the tracker of a layer (created on first use).

    Parameters
    ----------
    layer : napari.layers.Labels
        A 3D labels layer.

    Attributes
    ----------
    adopted : int
        How many of napari's history items (undo and redo) predated the tracker and were
        taken as hand edits.
    """

    def __init__(self, layer: Any) -> None:
        self._layer_ref = weakref.ref(layer)
        limit = getattr(getattr(layer, "_undo_history", None), "maxlen", None)
        self._undo: deque = deque(maxlen=limit)
        self._redo: deque = deque(maxlen=limit)
        self._code: int | None = None
        self._extra: np.ndarray | None = None
        self._replaying = False
        layer.events.paint.connect(self._on_paint)
        original_undo, original_redo = layer.undo, layer.redo

        def undo() -> None:
            self._step(original_undo, undoing=True)

        def redo() -> None:
            self._step(original_redo, undoing=False)

        # instance attributes shadow the class methods for this layer only
        layer.undo = undo
        layer.redo = redo
        self.adopted = self._adopt_history(layer)

    def _adopt_history(self, layer: Any) -> int:
        """Make the edits already in napari's history (made before tracking) ``HUMAN``.

        A user may paint before any panel that tracks the layer is open (File > Open, paint,
        then open Scribble). Every such edit was a hand edit (the plugin's panels track a
        layer before they write to it), and napari still holds the last
        ``Labels._history_limit`` (100) of them: their voxels become ``HUMAN`` now, and undo /
        redo of those items restore provenance like any tracked edit. Edits older than
        napari's history are not recoverable.

        Returns
        -------
        int
            The number of history items adopted (undo and redo).
        """
        undo_items = list(getattr(layer, "_undo_history", None) or [])
        redo_items = list(getattr(layer, "_redo_history", None) or [])
        if not undo_items and not redo_items:
            return 0
        shape = tuple(np.shape(layer.data))
        size = int(np.prod(shape))

        def indices(item: Any) -> np.ndarray:
            return _union_indices([_atom_indices(a, shape) for a in item], size)

        prov = self.provenance.copy()
        flat = prov.ravel()
        for item in undo_items:  # oldest first: each one's "before" is the running state
            idx = indices(item)
            self._undo.append([item, idx, flat[idx].copy(), HUMAN])
            flat[idx] = HUMAN
        layer.metadata[PROVENANCE_KEY] = prov
        # undone items (in napari's redo queue, the next redo last): their voxels hold the
        # provenance from before them; redo re-applies HUMAN in the order napari redoes
        running = flat.copy()
        entries = []
        for item in reversed(redo_items):
            idx = indices(item)
            entries.append([item, idx, running[idx].copy(), HUMAN])
            running[idx] = HUMAN
        self._redo.extend(reversed(entries))
        return len(undo_items) + len(redo_items)

    # ------------------------------------------------------------------ state
    @property
    def layer(self) -> Any:
        """The tracked layer (``None`` once it has been garbage-collected)."""
        return self._layer_ref()

    @property
    def provenance(self) -> np.ndarray:
        """The layer's current ``(Z, Y, X)`` uint8 provenance (created if missing)."""
        layer = self.layer
        shape = tuple(np.shape(layer.data))
        prov = layer.metadata.get(PROVENANCE_KEY)
        if prov is None or tuple(np.shape(prov)) != shape:
            prov = empty_provenance(shape)
            layer.metadata[PROVENANCE_KEY] = prov
        return prov

    @contextlib.contextmanager
    def writing(self, code: int, also: np.ndarray | None = None) -> Iterator[None]:
        """Attribute the edits made inside the block to ``code`` instead of a human.

        Parameters
        ----------
        code : int
            One of :data:`~napari_ssseg.core.provenance.PROVENANCE_CODES`.
        also : (Z, Y, X) ndarray of bool, optional
            Voxels to give ``code`` as part of the same undo step although their label value
            did not change (e.g. a superpixel refinement that confirms existing labels).
        """
        if int(code) not in PROVENANCE_CODES:
            raise InputError(f"provenance code {code!r} is unknown; expected one of "
                             f"{sorted(PROVENANCE_CODES)}.")  # fmt: skip
        prev = (self._code, self._extra)
        self._code = int(code)
        self._extra = None if also is None else np.asarray(also, bool)
        try:
            yield
        finally:
            self._code, self._extra = prev

    # ------------------------------------------------------------------ events
    def _on_paint(self, event: Any) -> None:
        layer = self.layer
        if layer is None or self._replaying:
            return
        shape = tuple(np.shape(layer.data))
        atoms = getattr(event, "value", None) or []
        parts = [_atom_indices(a, shape) for a in atoms]
        extra = self._extra
        if extra is not None and extra.shape == shape:
            parts.append(np.flatnonzero(extra))
            self._extra = None  # counted once, in the first history item of the block
        idx = _union_indices(parts, int(np.prod(shape)))
        code = HUMAN if self._code is None else self._code
        prov = self.provenance
        old = prov.ravel()[idx].copy()
        new = prov.copy()
        new.ravel()[idx] = code
        layer.metadata[PROVENANCE_KEY] = new
        # keyed by napari's own history item (the same list object), so edits made before
        # the tracker was attached, or outside napari's history, never shift the pairing
        self._undo.append([event.value, idx, old, code])
        self._redo.clear()

    def _step(self, original: Any, *, undoing: bool) -> None:
        """Undo (or redo) one napari history item and the provenance that went with it."""
        layer = self.layer
        source, target = (self._undo, self._redo) if undoing else (self._redo, self._undo)
        history = layer._undo_history if undoing else layer._redo_history
        after = layer._redo_history if undoing else layer._undo_history
        entry = source[-1] if source else None
        ours = bool(history) and entry is not None and history[-1] is entry[0]
        original()
        if not ours:
            return
        source.pop()
        _, idx, old, code = entry
        prov = self.provenance.copy()
        prov.ravel()[idx] = old if undoing else code
        layer.metadata[PROVENANCE_KEY] = prov
        entry[0] = after[-1] if after else None  # napari moved the item (as a new list)
        target.append(entry)


def track(layer: Any) -> ProvenanceTracker:
    """The :class:`ProvenanceTracker` of ``layer``, created (and attached) on first use."""
    tracker = _TRACKERS.get(layer)
    if tracker is None:
        tracker = ProvenanceTracker(layer)
        _TRACKERS[layer] = tracker
    return tracker


def tracker_of(layer: Any) -> ProvenanceTracker | None:
    """The tracker of ``layer`` if one is attached, else ``None``."""
    return _TRACKERS.get(layer)
