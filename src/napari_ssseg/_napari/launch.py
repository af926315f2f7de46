"""Open napari with a sample case loaded and the plugin's panels docked (``ssseg demo``)."""

from __future__ import annotations

__all__ = ["launch_demo_viewer"]


def launch_demo_viewer(shape: tuple[int, int, int] = (155, 240, 240), seed: int = 0) -> None:
    """Open a napari window with a phantom case and every panel, and run the event loop.

    Parameters
    ----------
    shape : tuple of 3 int
        Phantom grid ``(Z, Y, X)`` (1 mm voxels).
    seed : int
        Phantom seed.
    """
    import napari

    from napari_ssseg._napari.screenshot import add_case_layers, dock_plugin_panels, focus_on_labels
    from napari_ssseg.core.phantom import make_phantom

    case = make_phantom(shape=shape, seed=seed).to_case(name="SSSEG_Phantom_00000")
    viewer = napari.Viewer(title="napari-ssseg")
    dock_plugin_panels(viewer)
    add_case_layers(viewer, case)
    focus_on_labels(viewer, case, case.labels)
    napari.run()
