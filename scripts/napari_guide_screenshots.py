"""Take the screenshots of docs/napari-guide.md in a real napari window.

Run under a (virtual) X display, e.g.::

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python scripts/napari_guide_screenshots.py

What it does, as a user would: writes the BraTS-grid phantom (240 x 240 x 155, 1 mm) as a
BraTS 2021 case folder, docks the Loader panel, types the folder into it, presses Load, waits
for the worker, then saves window and canvas screenshots; finally loads a folder with a
truncated file to show the error notification. PNGs are palette-quantised to stay small.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _save_png(array: np.ndarray, path: Path, width: int | None = None) -> None:
    from PIL import Image

    image = Image.fromarray(np.asarray(array)[..., :3].astype(np.uint8))
    if width is not None and image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    image = image.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    image.save(path, optimize=True)
    print(f"{path}: {image.width}x{image.height}, {path.stat().st_size / 1024:.0f} KB")


def _wait(app, predicate, timeout: float = 120.0) -> None:
    start = time.time()
    while not predicate():
        app.processEvents()
        time.sleep(0.02)
        if time.time() - start > timeout:
            raise TimeoutError("timed out waiting for the viewer")
    for _ in range(20):
        app.processEvents()
        time.sleep(0.01)


def _close_toasts(app) -> None:
    """Close notification pop-ups (e.g. napari's start-up warning about PyQt5)."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for widget in app.allWidgets():
        if isinstance(widget, NapariQtNotification):
            widget.close()
    app.processEvents()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images", help="output folder")
    parser.add_argument("--shape", type=int, nargs=3, default=(155, 240, 240))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import warnings

    warnings.filterwarnings("ignore", message="napari support for the PyQt5 backend")
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_ssseg._napari.layers import case_of_layer
    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.io.writers import write_case

    tmp = Path(tempfile.mkdtemp(prefix="ssseg-guide-"))
    case = make_phantom(shape=tuple(args.shape), seed=0).to_case(name="BraTS2021_Phantom")
    folder = write_case(case, tmp, naming="brats2021")

    viewer = napari.Viewer(title="napari-ssseg", show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1500, 950)
    _, loader = viewer.window.add_plugin_dock_widget("napari-ssseg", "Loader")
    _wait(app, lambda: True)

    _close_toasts(app)
    # 1. Loader panel after loading a case
    loader.folder.value = folder
    loader.load_button.native.click()
    _wait(app, lambda: loader.task is not None and not loader.task.running)
    labels = viewer.layers["BraTS2021_Phantom labels"]
    loaded = case_of_layer(labels)
    et = np.argwhere(loaded.labels == 3)
    centre = et[len(et) // 2]
    viewer.dims.set_point(0, labels.data_to_world(centre)[0])
    viewer.reset_view()
    viewer.camera.zoom *= 1.3
    # status bar as when hovering an enhancing-tumour voxel
    viewer.cursor.position = tuple(labels.data_to_world(centre))
    viewer.update_status_from_cursor()
    _wait(app, lambda: True)
    _save_png(viewer.screenshot(canvas_only=False, flash=False), out / "loader-panel.png", 1200)

    # 2. the T1Gd image with the labels, close-up of the tumour (canvas only)
    for layer in viewer.layers:
        if layer.metadata.get("ssseg_role") == "image":
            layer.visible = layer.metadata.get("ssseg_modality") == "t1ce"
    viewer.camera.center = tuple(labels.data_to_world(centre))
    viewer.camera.zoom *= 2.0
    _wait(app, lambda: True)
    _save_png(viewer.screenshot(canvas_only=True, flash=False), out / "t1gd-labels-zoom.png", 800)

    # 3. 3D rendering of the labels over the FLAIR volume
    for layer in viewer.layers:
        if layer.metadata.get("ssseg_role") == "image":
            layer.visible = layer.metadata.get("ssseg_modality") == "flair"
            layer.rendering = "mip"
    viewer.dims.ndisplay = 3
    viewer.camera.angles = (0, 30, 60)
    viewer.reset_view()
    _wait(app, lambda: True)
    _save_png(viewer.screenshot(canvas_only=True, flash=False), out / "labels-3d.png", 800)
    viewer.dims.ndisplay = 2

    # 4. error notification: a case folder with a truncated FLAIR file
    import gzip
    import shutil

    bad = tmp / "Broken_001"
    bad.mkdir()
    for f in folder.iterdir():
        shutil.copy(f, bad / f.name.replace("BraTS2021_Phantom", "Broken_001"))
    flair = bad / "Broken_001_flair.nii.gz"
    flair.write_bytes(gzip.compress(gzip.decompress(flair.read_bytes())[:100_000]))
    loader.folder.value = bad
    loader.load_button.native.click()
    _wait(app, lambda: loader.task is not None and not loader.task.running)
    _wait(app, lambda: True)
    time.sleep(0.5)
    _wait(app, lambda: True)
    _save_png(
        viewer.screenshot(canvas_only=False, flash=False), out / "error-notification.png", 1200
    )
    n_layers = len(viewer.layers)
    viewer.close()
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"layers still loaded after the failed load: {n_layers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
