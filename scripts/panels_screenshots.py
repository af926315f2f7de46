"""Take the screenshots of docs/panels.md (Refine and Propose panels) in a real napari window.

Run under a (virtual) X display, e.g.::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/panels_screenshots.py \\
        --out docs/images [--only refine|propose] [--fallback-model CKPT.pt]

What it does, as a user would: a 155 x 240 x 240 phantom (seed 11) whose labels are degraded
(under-segmented oedema); docks the Refine panel, computes superpixels, moves sim0, saves the
window and canvas close-ups, presses Accept; then docks the Propose panel and proposes with the
shipped default model (or ``--fallback-model`` if the default model is missing). PNGs are
palette-quantised (256 colours) to stay small.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from _screenshot_helpers import pump, save


def load(viewer, case, labels) -> None:
    from napari.layers import Layer

    from napari_ssseg._napari.layers import case_to_layer_data

    for data, kwargs, layer_type in case_to_layer_data(case, labels=labels):
        viewer.add_layer(Layer.create(data, kwargs, layer_type))
    for layer in viewer.layers:
        if layer.name.endswith(("T1", "T1Gd", "T2")):
            layer.visible = False


def focus(viewer, labels: np.ndarray, zoom: float) -> None:
    """Close notifications; centre the view on the tumour's median voxel at ``zoom``."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for note in viewer.window._qt_window.findChildren(NapariQtNotification):
        note.close()
    z, y, x = (int(np.median(a)) for a in np.nonzero(labels > 0))
    flair = next(layer for layer in viewer.layers if layer.name.endswith("FLAIR"))
    wz, wy, wx = flair.data_to_world((z, y, x))
    viewer.dims.set_point(0, wz)
    pump()
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center = (wy, wx)
    camera.zoom = zoom
    pump()


def refine_shots(case, degraded, out: Path) -> None:
    import napari

    from napari_ssseg._napari.widgets.refine import RefineWidget

    viewer = napari.Viewer(show=True, title="napari-ssseg: Refine")
    viewer.window._qt_window.resize(1500, 950)
    load(viewer, case, degraded)
    widget = RefineWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Refine", area="right")
    widget.advanced.value = True  # the sweep below spans sim0 0-1
    widget.sim0.value = 1.0
    widget.compute()
    pump(lambda: not widget.task.running)
    print(widget.status.value)

    def show(value: float) -> None:
        widget.sim0.value = value
        pump(lambda: widget.status.value.startswith(f"preview sim0={value:.2f}"), 60)
        print(widget.status.value)

    for value in (1.0, 0.6, 0.4, 0.3, 0.2, 0.1, 0.05, 0.0):  # log how the region grows
        show(value)
    show(0.05)
    focus(viewer, case.labels, zoom=2.4)
    save(viewer.screenshot(canvas_only=False, flash=False), out / "refine_panel.png")
    viewer.layers[f"{case.name} superpixels WT"].visible = False
    for value in (1.0, 0.05):
        show(value)
        focus(viewer, case.labels, zoom=3.0)
        name = f"refine_preview_sim0_{round(value * 100):03d}.png"
        save(viewer.screenshot(canvas_only=True, flash=False), out / name)
    task = widget.accept()  # refines the whole volume in a worker, then writes
    pump(lambda: task is None or not task.running, 60)
    print(widget.status.value)
    viewer.layers[f"{case.name} refine preview"].visible = False
    focus(viewer, case.labels, zoom=3.0)
    save(viewer.screenshot(canvas_only=True, flash=False), out / "refine_accepted.png")
    viewer.close()


def propose_shots(case, out: Path, fallback: str | None) -> None:
    import napari

    from napari_ssseg._napari.widgets.propose import MODEL_SOURCES, ProposeWidget
    from napari_ssseg.ml.checkpoint import default_checkpoint_path

    viewer = napari.Viewer(show=True, title="napari-ssseg: Propose")
    viewer.window._qt_window.resize(1500, 950)
    load(viewer, case, case.labels)
    viewer.layers[f"{case.name} labels"].visible = False
    widget = ProposeWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Propose", area="right")
    if default_checkpoint_path().is_file():
        print("using the default model")
    elif fallback:
        print(f"default model missing: using {fallback}")
        widget.model_source.value = list(MODEL_SOURCES)[1]
        widget.checkpoint_file.value = fallback
    else:
        raise SystemExit("the default model is missing; pass --fallback-model")
    widget.device.value = "cpu"
    widget.propose()
    pump(lambda: not widget.running)
    print(widget.status.value)
    focus(viewer, case.labels, zoom=2.4)
    save(viewer.screenshot(canvas_only=False, flash=False), out / "propose_panel.png")
    viewer.layers[f"{case.name} proposal"].visible = False
    focus(viewer, case.labels, zoom=3.0)
    save(viewer.screenshot(canvas_only=True, flash=False), out / "propose_uncertainty.png")
    viewer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--only", choices=("refine", "propose"), default=None)
    parser.add_argument("--fallback-model", default=None)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="napari support for the PyQt5")

    from napari_ssseg.core.degrade import degrade
    from napari_ssseg.core.phantom import make_phantom

    args.out.mkdir(parents=True, exist_ok=True)
    case = make_phantom(shape=(155, 240, 240), spacing=(1.0, 1.0, 1.0), seed=11).to_case(
        name="phantom"
    )
    brain = np.any(case.images != 0, axis=0)
    degraded = degrade(
        case.labels, "undersegmented_oedema", brain=brain, spacing=case.scale, seed=1
    )
    if args.only in (None, "refine"):
        refine_shots(case, degraded, args.out)
    if args.only in (None, "propose"):
        propose_shots(case, args.out, args.fallback_model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
