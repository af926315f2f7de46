"""GUI-thread cost of napari layers of a full real case in a shown viewer (issue 11).

Opens a shown napari viewer with four napari-ssseg panels docked (as in the real loop), then
adds the layers of two real cases one at a time and prints, per layer, the time to build the
layer object, to add it to the viewer, and to repaint (three ``processEvents`` turns, minus
their sleeps). The first image layer of a viewer includes napari's and vispy's one-time
first-draw costs. Run under a (virtual) X display::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/napari_layer_costs.py

Prints one JSON line per layer and one per ``reset_view``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "cases",
        nargs="*",
        default=[str(REAL / "BraTS-GLI-00000-000"), str(REAL / "BraTS-GLI-00012-000")],
    )
    args = p.parse_args(argv)

    import napari
    from napari.layers import Layer
    from qtpy.QtWidgets import QApplication

    from napari_ssseg._napari.layers import case_to_layer_data
    from napari_ssseg.io.readers import load_case

    viewer = napari.Viewer(show=True)
    for name in ("Loader", "Propose", "Refine", "Scribble"):
        viewer.window.add_plugin_dock_widget("napari-ssseg", name)

    def pump(n: int = 3, pause: float = 0.01) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            QApplication.processEvents()
            time.sleep(pause)
        return time.perf_counter() - t0 - n * pause

    pump(30)
    canvas = viewer.window._qt_viewer.canvas.native
    for index, folder in enumerate(args.cases):
        case = load_case(folder)
        for data, kwargs, layer_type in case_to_layer_data(case):
            t0 = time.perf_counter()
            layer = Layer.create(data, kwargs, layer_type)
            t1 = time.perf_counter()
            viewer.add_layer(layer)
            t2 = time.perf_counter()
            paint = pump()
            row = {
                "case_index": index,
                "layer": kwargs["name"],
                "type": layer_type,
                "visible": bool(kwargs.get("visible", True)),
                "create_ms": round(1000 * (t1 - t0), 1),
                "add_ms": round(1000 * (t2 - t1), 1),
                "repaint_ms": round(1000 * paint, 1),
                "canvas_px": [canvas.width(), canvas.height()],
            }
            print(json.dumps(row), flush=True)
        t0 = time.perf_counter()
        viewer.reset_view()
        pump()
        print(
            json.dumps(
                {"case_index": index, "reset_view_ms": round(1000 * (time.perf_counter() - t0), 1)}
            )
        )
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
