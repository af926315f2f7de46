"""Take the Retrain panel screenshot of docs/training.md in a real napari window.

Run under a (virtual) X display, e.g.::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/retrain_screenshot.py \\
        --out docs/images

What it does, as a user would: writes six small phantom cases (three with a label file,
three without) to a temporary folder, opens the first in napari, docks the Retrain panel,
types the folder, sets a short schedule in the advanced section and clicks **Retrain** (the
one-click choice is ``pseudo-label-superpixel``). When the child process has written its
last epoch, the panel (curves, progress, status) and the whole window are saved.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

from _screenshot_helpers import pump, save


def main() -> None:
    """Run the scenario and write ``retrain_panel.png`` and ``retrain_window.png``."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="docs/images", help="folder for the PNGs")
    ap.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import napari
    from napari.layers import Layer

    from napari_ssseg._napari.layers import case_to_layer_data
    from napari_ssseg._napari.widgets.retrain import RetrainWidget
    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.io.readers import load_case
    from napari_ssseg.io.writers import write_case

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "cases"
        for i in range(6):
            case = make_phantom((48, 64, 64), (2.0, 2.0, 2.0), seed=40 + i).to_case(
                name=f"Case_{i:03d}"
            )
            if i >= 3:
                case = dataclasses.replace(case, labels=None)
            write_case(case, data)
        viewer = napari.Viewer(show=True)
        viewer.window._qt_window.resize(1500, 950)
        case = load_case(data / "Case_000")
        for d, kw, kind in case_to_layer_data(case):
            viewer.add_layer(Layer.create(d, kw, kind))
        panel = RetrainWidget(viewer)
        viewer.window.add_dock_widget(panel, name="Retrain", area="right")
        panel.data.value = str(data)
        panel.advanced.value = True
        panel.epochs.value = args.epochs
        panel.iterations.value = 4
        panel.patch.value = 32
        panel.device.value = "cpu"
        panel.run_folder.value = str(Path(tmp) / "run")
        pump(timeout=2)
        proc = panel.retrain()
        if proc is None:
            raise SystemExit(f"Retrain did not start: {panel.status.value}")
        pump(lambda: not panel.running, timeout=900)
        pump(timeout=2)
        print("status:", panel.status.value)
        pix = panel.native.grab()
        path = out / "retrain_panel.png"
        pix.save(str(Path(tmp) / "panel.png"))
        import numpy as np
        from PIL import Image

        save(np.asarray(Image.open(Path(tmp) / "panel.png").convert("RGB")), path)
        save(viewer.screenshot(canvas_only=False, flash=False), out / "retrain_window.png")
        viewer.close()


if __name__ == "__main__":
    main()
