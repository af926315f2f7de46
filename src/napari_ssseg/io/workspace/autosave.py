"""GUI-independent autosave logic (:class:`Autosaver`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from napari_ssseg.errors import InputError

__all__ = ["Autosaver"]


class Autosaver:
    """Save when there are unsaved edits and ``interval`` seconds have passed.

    GUI-independent logic: the panel calls :meth:`mark_dirty` on every edit,
    :meth:`maybe_save` from a timer, and :meth:`flush` on case switch and close.

    Parameters
    ----------
    save : callable
        ``save()`` writes the current edits (e.g. ``ws.save_labels(..., source="human")``).
        If it raises, the edits stay dirty and the error propagates (the caller shows it).
    interval : float
        Seconds between autosaves (> 0).
    clock : callable
        ``clock() -> float`` seconds (default :func:`time.monotonic`); tests pass a fake.
    """

    def __init__(
        self,
        save: Callable[[], Any],
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not callable(save):
            raise InputError("Autosaver: save must be callable.")
        if not (isinstance(interval, int | float) and np.isfinite(interval) and interval > 0):
            raise InputError(f"Autosaver interval={interval!r} must be a number of seconds > 0.")
        self._save = save
        self.interval = float(interval)
        self._clock = clock
        self._dirty = False
        self._last = clock()
        self.n_saves = 0

    @property
    def dirty(self) -> bool:
        """True if there are edits not yet saved."""
        return self._dirty

    def mark_dirty(self) -> None:
        """Record that the labels changed."""
        self._dirty = True

    def _do_save(self) -> bool:
        self._save()
        self._dirty = False
        self._last = self._clock()
        self.n_saves += 1
        return True

    def maybe_save(self) -> bool:
        """Save if dirty and ``interval`` has elapsed since the last save; True if saved."""
        if self._dirty and self._clock() - self._last >= self.interval:
            return self._do_save()
        return False

    def flush(self) -> bool:
        """Save now if dirty (case switch, close); True if saved."""
        return self._do_save() if self._dirty else False

    def switch_case(self, new_save: Callable[[], Any] | None = None) -> bool:
        """Flush the current case's edits, then (optionally) save to ``new_save`` from now on."""
        saved = self.flush()
        if new_save is not None:
            self._save = new_save
        self._last = self._clock()
        return saved
