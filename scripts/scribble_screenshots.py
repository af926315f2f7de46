"""Take the screenshots of docs/scribbles.md (Scribble panel) in a real napari window.

Run under a (virtual) X display, e.g.::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/scribble_screenshots.py \\
        --out docs/images

What it does: a phantom (default 80 x 112 x 112 voxels of 2 mm, seed 11) is opened with empty
labels; the Scribble panel is docked; "New scribble layer" is pressed and strokes simulated
from the phantom's ground truth (:func:`~napari_ssseg.core.scribbles.simulate_scribbles`,
3 axial slices, half of every stroke kept) are put into the scribble layer (the script does
not move the mouse). Then, pressing the panel's buttons:

1. cold start: Propagate → ``scribble_cold.png`` (canvas) and ``scribble_panel.png`` (window);
2. region mode: the same strokes as tumour / background only → ``scribble_region.png``;
3. model-assisted: "use model probabilities" and "show weight map" ticked, Propagate (the
   worker runs the shipped default model once on the CPU) → ``scribble_model.png``.

It prints the numbers quoted in the captions: Dice of WT/TC/ET against the phantom's truth,
the annotated fraction and the times. PNGs are palette-quantised (256 colours).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from _screenshot_helpers import pump as _pump
from _screenshot_helpers import save


def pump(cond=None, timeout: float = 900.0) -> None:
    """:func:`_screenshot_helpers.pump` with this script's longer default timeout."""
    _pump(cond, timeout)


def scores(name: str, result, truth: np.ndarray) -> None:
    from napari_ssseg.core.case import region_masks
    from napari_ssseg.core.metrics import dice

    rp, rg = region_masks(result.labels), region_masks(truth)
    d = {r: dice(rp[r], rg[r]) for r in ("WT", "TC", "ET")}
    print(
        f"{name}: Dice WT {d['WT']:.3f} TC {d['TC']:.3f} ET {d['ET']:.3f}; "
        f"annotated {100 * result.annotated_fraction:.2f}% of the propagated tumour, "
        f"update {result.info['seconds'] * 1000:.0f} ms ({result.info['mode']})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--shape", type=int, nargs=3, default=(80, 112, 112))
    parser.add_argument("--spacing", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--no-model", action="store_true", help="skip the model-assisted shot")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import os
    import tempfile

    # a private settings file: the user's saved window size / dock positions stay untouched
    os.environ.setdefault(
        "NAPARI_CONFIG", os.path.join(tempfile.mkdtemp(prefix="ssseg-shots-"), "settings.yaml")
    )
    import napari
    from napari.layers import Layer

    from napari_ssseg._napari.layers import case_to_layer_data
    from napari_ssseg._napari.widgets.scribble import ScribbleWidget
    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.core.preprocess import brain_mask
    from napari_ssseg.core.scribbles import TUMOUR, simulate_scribbles

    warnings.simplefilter("ignore")
    sp = float(args.spacing)
    case = make_phantom(tuple(args.shape), spacing=(sp, sp, sp), seed=args.seed).to_case(
        name="phantom"
    )
    truth = case.labels
    strokes = simulate_scribbles(truth, brain_mask(case.images), n_slices=3, keep=0.5)
    print(
        f"phantom {tuple(args.shape)} at {sp} mm, seed {args.seed}: "
        f"{int((truth > 0).sum())} tumour voxels, {int((strokes > 0).sum())} scribbled "
        f"voxels ({100 * (strokes > 0).sum() / (truth > 0).sum():.2f}% of the true tumour)"
    )

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    for data, kwargs, layer_type in case_to_layer_data(case, labels=np.zeros(case.shape, np.uint8)):
        viewer.add_layer(Layer.create(data, kwargs, layer_type))
    for layer in viewer.layers:
        if layer.name.endswith(("T1", "T1Gd", "T2")) or layer.name.endswith("labels"):
            layer.visible = False
    widget = ScribbleWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Scribble", area="right")
    widget.native.setMaximumWidth(420)  # keep long status lines from widening the window
    widget.live.value = False
    widget.new_button.native.click()
    layer = widget.scribble_layer
    layer.data = strokes
    # show a scribbled slice, centred on the tumour
    z = int(np.argmax((strokes > 0).sum(axis=(1, 2))))
    flair = next(lay for lay in viewer.layers if lay.name.endswith("FLAIR"))
    _, cy, cx = (int(np.median(a)) for a in np.nonzero(truth > 0))
    wz, wy, wx = flair.data_to_world((z, cy, cx))
    viewer.dims.set_point(0, wz)
    pump()
    viewer.camera.center = (wy, wx)
    viewer.camera.zoom = 3.0
    pump()

    def close_notes() -> None:
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        for note in viewer.window._qt_window.findChildren(NapariQtNotification):
            note.close()
        pump()

    def run(name: str) -> None:
        widget.result = None
        t0 = time.perf_counter()
        widget.propagate_button.native.click()
        pump(lambda: widget.result is not None and not widget.task.running)
        if widget.result is None:
            raise SystemExit(f"{name}: no result ({widget.status.value})")
        print(f"{name}: wall time {time.perf_counter() - t0:.1f} s (incl. setup / model)")
        viewer.window._qt_window.resize(1500, 950)
        pump()
        wide = max(widget, key=lambda c: c.native.sizeHint().width())
        print(
            f"  window {viewer.window._qt_window.size().width()} px wide; widest control "
            f"{type(wide).__name__} {wide.native.sizeHint().width()} px"
        )
        scores(name, widget.result, truth)
        close_notes()

    # 1. cold start
    run("cold start")
    save(viewer.screenshot(canvas_only=False, flash=False), args.out / "scribble_panel.png")
    save(viewer.screenshot(canvas_only=True, flash=False), args.out / "scribble_cold.png")
    # incremental update (propagator cached)
    run("cold start, second update")

    # 2. region mode: the same strokes without classes
    widget.region.native.click()
    region = strokes.copy()
    region[np.isin(strokes, (1, 2, 3))] = TUMOUR
    layer.data = region
    run("region mode")
    save(viewer.screenshot(canvas_only=True, flash=False), args.out / "scribble_region.png")
    widget.region.native.click()
    layer.data = strokes

    # 3. model-assisted
    if not args.no_model:
        widget.use_model.native.click()
        widget.show_weights.native.click()
        run("model-assisted")
        prob = widget.model_probabilities()
        if prob is not None:
            from napari_ssseg.core.case import region_masks
            from napari_ssseg.core.metrics import dice

            model_only = np.argmax(prob, axis=0) if prob.shape[0] == 4 else None
            if model_only is not None:
                rp, rg = region_masks(model_only), region_masks(truth)
                print(
                    "model alone (argmax): Dice "
                    + " ".join(f"{r} {dice(rp[r], rg[r]):.3f}" for r in ("WT", "TC", "ET"))
                )
        w = widget.result.weights
        print(
            f"weights: {100 * float(widget.result.ignore.mean()):.1f}% of voxels ignored, "
            f"mean weight in the tumour {float(w[widget.result.labels > 0].mean()):.2f}"
        )
        save(viewer.screenshot(canvas_only=False, flash=False), args.out / "scribble_model.png")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
