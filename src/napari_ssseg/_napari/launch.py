"""Open napari with a sample case loaded and the plugin's panels docked (``ssseg demo``)."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["launch_demo_viewer"]


def launch_demo_viewer(
    shape: tuple[int, int, int] = (155, 240, 240),
    seed: int = 0,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    run: bool = True,
    case: str | os.PathLike | None = None,
    viewer: Any | None = None,
) -> Any:
    """Open a napari window with a phantom case (or a real case) and every panel.

    Parameters
    ----------
    shape : tuple of 3 int
        Phantom grid ``(Z, Y, X)``.
    seed : int
        Phantom seed.
    spacing : tuple of 3 float
        Voxel size in mm.
    run : bool
        Start napari's event loop (blocks until the window is closed).
    case : path-like, optional
        A real case folder to open instead of the phantom (``shape``, ``spacing`` and
        ``seed`` are then unused).
    viewer : napari.Viewer, optional
        Fill this viewer instead of opening a new window (tests pass napari's
        ``make_napari_viewer()``: a second bare ``napari.Viewer()`` in one process clashes
        with the test fixture's plugin registry).

    Returns
    -------
    napari.Viewer
        The viewer (closed already if ``run`` is True and the user closed the window).
    """
    import napari

    from napari_ssseg._napari.orientation import install_orientation
    from napari_ssseg._napari.screenshot import add_case_layers, dock_plugin_panels, focus_on_labels
    from napari_ssseg.core.phantom import make_phantom

    if case is not None:
        from napari_ssseg.io.readers import load_case

        case = load_case(case, label_errors="warn")
    else:
        case = make_phantom(shape=shape, spacing=spacing, seed=seed).to_case(
            name="SSSEG_Phantom_00000"
        )
    if viewer is None:
        viewer = napari.Viewer(title="napari-ssseg")
    dock_plugin_panels(viewer, raise_panel="Loader")
    install_orientation(viewer)  # radiological 2D views + L/R, A/P, S/I letters
    add_case_layers(viewer, case)
    focus_on_labels(viewer, case, case.labels)
    if run:
        napari.run()
    return viewer
