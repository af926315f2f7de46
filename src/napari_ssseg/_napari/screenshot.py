"""Real screenshots of the viewer for the demo and the docs, headless or not.

napari cannot render with ``QT_QPA_PLATFORM=offscreen`` (no OpenGL context). Without a display,
:func:`virtual_display` starts a virtual X server (Xvfb, through PyVirtualDisplay) with 24-bit
colour and Qt's normal ``xcb`` platform; Mesa's llvmpipe renders for real.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssseg.core.case import Case
from napari_ssseg.errors import SsegError

__all__ = [
    "virtual_display",
    "render_screenshots",
    "render_screenshots_in_subprocess",
    "add_case_layers",
    "focus_on_labels",
]


@contextlib.contextmanager
def virtual_display(size: tuple[int, int] = (1600, 1000)) -> Iterator[None]:
    """Run the block with a display: the current one, or a temporary Xvfb server.

    Raises
    ------
    SsegError
        If there is no display and Xvfb or PyVirtualDisplay is missing.
    """
    if os.environ.get("DISPLAY"):
        yield
        return
    try:
        from pyvirtualdisplay import Display
    except ImportError as exc:
        raise SsegError(
            "No display and PyVirtualDisplay is not installed: cannot render screenshots. "
            "Install the napari extra (pip install 'napari-ssseg[napari]') and Xvfb "
            "(apt-get install xvfb), or pass --no-screenshot."
        ) from exc
    os.environ.pop("QT_QPA_PLATFORM", None)
    try:
        display = Display(visible=False, size=size, color_depth=24)
        display.start()
    except Exception as exc:  # FileNotFoundError when Xvfb is absent, XStartError, ...
        raise SsegError(
            f"Could not start a virtual display (Xvfb): {exc}. Install Xvfb "
            "(apt-get install xvfb) or pass --no-screenshot."
        ) from exc
    try:
        yield
    finally:
        display.stop()


def add_case_layers(
    viewer: Any,
    case: Case,
    label_maps: Mapping[str, np.ndarray] | None = None,
    uncertainty: np.ndarray | None = None,
) -> None:
    """Add a case, extra label maps and an uncertainty map to ``viewer`` as layers."""
    from napari_ssseg._napari.layers import case_to_layer_data, label_colormap

    for data, kwargs, layer_type in case_to_layer_data(case):
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    for name, labels in (label_maps or {}).items():
        viewer.add_labels(
            np.asarray(labels, dtype=np.uint8),
            name=f"{case.name} {name}",
            scale=case.scale,
            translate=case.translate,
            colormap=label_colormap(),
            opacity=0.6,
            visible=False,
        )
    if uncertainty is not None:
        viewer.add_image(
            np.asarray(uncertainty, dtype=np.float32),
            name=f"{case.name} uncertainty",
            scale=case.scale,
            translate=case.translate,
            colormap="inferno",
            opacity=0.5,
            blending="additive",
            contrast_limits=(0.0, max(float(np.max(uncertainty)), 1e-3)),
            visible=False,
        )


def focus_on_labels(viewer: Any, case: Case, labels: np.ndarray | None) -> None:
    """Move the slider to the axial slice through the centre of the tumour (if any)."""
    if labels is None or not np.any(labels):
        return
    z = int(np.median(np.nonzero(np.any(labels > 0, axis=(1, 2)))[0]))
    world_z = case.translate[0] + z * case.scale[0]
    viewer.dims.set_point(0, world_z)


def render_screenshots(
    case: Case,
    label_maps: Mapping[str, np.ndarray],
    uncertainty: np.ndarray | None,
    out_dir: str | os.PathLike,
    *,
    dock_panels: bool = True,
) -> list[Path]:
    """Render the case in napari (axial 2D with panels, and 3D) and save PNG screenshots.

    Parameters
    ----------
    case : Case
        The case to show (its ground truth, if any, is the main labels layer).
    label_maps : mapping of str to (Z, Y, X) ndarray
        More label maps (e.g. ``"proposal"``, ``"refined"``); ``"refined"`` is shown if
        present, else the last one.
    uncertainty : (Z, Y, X) ndarray or None
        Uncertainty map, shown translucent over the images in a second 2D screenshot.
    out_dir : path-like
        Folder for the PNG files.
    dock_panels : bool
        Dock the plugin's panels, as a user would see them.

    Returns
    -------
    list of Path
        The files written.
    """
    from napari_ssseg.io.atomic import check_writable_dir

    out_dir = check_writable_dir(out_dir)
    written: list[Path] = []
    with virtual_display():
        import napari

        viewer = napari.Viewer(title="napari-ssseg demo", show=True)
        try:
            viewer.window._qt_window.resize(1600, 1000)
            if dock_panels:
                dock_plugin_panels(viewer, raise_panel="Refine")
            add_case_layers(viewer, case, label_maps, uncertainty)
            shown = None
            if label_maps:
                shown = "refined" if "refined" in label_maps else list(label_maps)[-1]
            if shown is not None:
                viewer.layers[f"{case.name} labels"].visible = False
                viewer.layers[f"{case.name} {shown}"].visible = True
                viewer.layers.selection.active = viewer.layers[f"{case.name} {shown}"]
            focus_labels = label_maps[shown] if shown is not None else case.labels
            focus_on_labels(viewer, case, focus_labels)
            viewer.reset_view()
            path = out_dir / "screenshot_axial.png"
            viewer.screenshot(str(path), canvas_only=False, flash=False)
            written.append(path)
            if uncertainty is not None:
                shown_layer = viewer.layers[f"{case.name} {shown}"] if shown else None
                if shown_layer is not None:
                    shown_layer.visible = False
                viewer.layers[f"{case.name} uncertainty"].visible = True
                path = out_dir / "screenshot_uncertainty.png"
                viewer.screenshot(str(path), canvas_only=False, flash=False)
                written.append(path)
                viewer.layers[f"{case.name} uncertainty"].visible = False
                if shown_layer is not None:
                    shown_layer.visible = True
            viewer.dims.ndisplay = 3
            viewer.scene.camera.angles = (0, 30, 60)
            viewer.reset_view()
            path = out_dir / "screenshot_3d.png"
            viewer.screenshot(str(path), canvas_only=True, flash=False)
            written.append(path)
        finally:
            viewer.close()
    return written


def dock_plugin_panels(viewer: Any, raise_panel: str | None = None) -> list[Any]:
    """Dock every panel the plugin contributes, as tabs of the right dock area.

    Parameters
    ----------
    viewer : napari.Viewer
    raise_panel : str, optional
        Title of the tab to bring to the front (default: the first).
    """
    from qtpy.QtWidgets import QApplication

    from napari_ssseg._napari.widgets import PANELS

    docked = []
    for index, (title, factory) in enumerate(PANELS):
        widget = factory(viewer)
        docked.append(
            viewer.window.add_dock_widget(widget, name=title, area="right", tabify=index > 0)
        )
    front = next((d for d, (t, _) in zip(docked, PANELS) if t == raise_panel), None)
    if front is None and docked:
        front = docked[0]
    QApplication.processEvents()  # dock widgets become visible only after the event loop runs
    if front is not None:
        front.raise_()
        QApplication.processEvents()
    return docked


def render_screenshots_in_subprocess(
    case_dir: str | os.PathLike,
    label_files: Mapping[str, str | os.PathLike],
    uncertainty_file: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    timeout: float = 600.0,
) -> list[Path]:
    """Render screenshots in a child process from files on disk.

    The child reads the case and the label maps through the io layer (so the screenshots also
    show that saved files land on the right voxels), renders under its own virtual display and
    exits; a Qt/X connection never outlives its display in this process.

    Raises
    ------
    SsegError
        If the child fails; the message carries the end of its error output.
    """
    import json
    import subprocess
    import sys

    spec = {
        "case_dir": str(case_dir),
        "labels": {k: str(v) for k, v in label_files.items()},
        "uncertainty": str(uncertainty_file) if uncertainty_file else None,
        "out_dir": str(out_dir),
    }
    env = dict(os.environ)
    env.pop("QT_QPA_PLATFORM", None)
    proc = subprocess.run(
        [sys.executable, "-m", "napari_ssseg._napari.screenshot", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("SCREENSHOT ")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise SsegError(f"Rendering screenshots failed (exit {proc.returncode}): {tail}")
    return [Path(ln.split(" ", 1)[1]) for ln in lines]


def _main(argv: list[str]) -> int:
    import json
    import sys

    from napari_ssseg.io.readers import load_case, read_image, read_labels

    spec = json.loads(argv[0])
    case = load_case(spec["case_dir"], label_errors="warn")  # the images are what is shown
    label_maps = {k: read_labels(v, case) for k, v in spec["labels"].items()}
    uncertainty = None
    if spec.get("uncertainty"):
        array, _ = read_image(spec["uncertainty"])
        uncertainty = case.orientation.to_canonical(array)
    with virtual_display():  # stays up until Qt is done with it
        for path in render_screenshots(case, label_maps, uncertainty, spec["out_dir"]):
            print(f"SCREENSHOT {path}", flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(0)  # no Qt/X teardown after the virtual display is gone


if __name__ == "__main__":
    import sys

    raise SystemExit(_main(sys.argv[1:]))
