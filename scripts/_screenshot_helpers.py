"""Helpers shared by the screenshot scripts in this folder (run them as ``python scripts/…``)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def pump(cond=None, timeout: float = 600.0) -> None:
    """Process Qt events until ``cond()`` is true (or ``timeout`` seconds), then a bit more."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    t0 = time.time()
    while True:
        app.processEvents()
        if cond is None or cond() or time.time() - t0 > timeout:
            break
        time.sleep(0.02)
    for _ in range(10):
        app.processEvents()
        time.sleep(0.02)


def save(array: np.ndarray, path: Path) -> None:
    """Save an RGB(A) screenshot as a palette-quantised PNG and print its size."""
    from PIL import Image

    image = Image.fromarray(np.asarray(array)[..., :3])
    image = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    image.save(path, optimize=True)
    print(f"{path}: {path.stat().st_size // 1024} KB")
