"""Pay napari's one-time layer costs in the background, before the first case is loaded.

The first image layer a napari process creates initialises pint's unit registry (about
0.35 s of pure Python, for the layer's units) and imports SciPy for its thumbnail (about
0.3 s); the first labels layer has similar one-time costs. On the GUI thread that is a
0.5 s freeze when the first case opens (measured under Xvfb on 2 cores: first image layer
0.50 s cold, 0.17 s warmed; first labels layer 0.52 s, 0.16 s). :func:`warm_up_layers`
creates two tiny layer *models* (no Qt, never added to a viewer) in a daemon thread when a
panel opens; the event loop keeps running meanwhile (longest gap measured: 78 ms). It also
builds vispy's dash-pattern atlas (pure NumPy, cached per process), which the first labels
layer otherwise builds on the GUI thread for its polygon overlay's outline (about 60–90 ms).
"""

from __future__ import annotations

import threading

__all__ = ["warm_up_layers"]

_STARTED = threading.Event()


def _warm() -> None:
    import numpy as np
    from napari.layers import Image, Labels

    Image(np.zeros((4, 4, 4), np.float32), scale=(1.0, 1.0, 1.0))
    Labels(np.zeros((4, 4, 4), np.uint8), scale=(1.0, 1.0, 1.0))
    from vispy.visuals.line.dash_atlas import DashAtlas

    DashAtlas()  # fills the lru_cache of its dash patterns (no OpenGL involved)


def _run() -> None:
    try:
        _warm()
    except Exception:  # noqa: BLE001 - an optimisation only: the first load pays instead
        pass


def warm_up_layers() -> threading.Thread | None:
    """Start the warm-up once per process (returns its thread, None if already started)."""
    if _STARTED.is_set():
        return None
    _STARTED.set()
    thread = threading.Thread(target=_run, name="ssseg-napari-warm-up", daemon=True)
    thread.start()
    return thread
