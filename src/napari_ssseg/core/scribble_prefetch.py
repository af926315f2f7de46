"""Prepare a case's scribble superpixels and features in a separate process (issue 11).

The Scribble panel builds a :class:`~napari_ssseg.core.scribbles.ScribblePropagator` (SLIC
superpixels of WT and TC, per-superpixel features: about 10 s on 2 CPU cores for a BraTS case)
as soon as a case is loaded, so the first stroke previews at once. Built in a worker *thread*
it stalled napari's event loop for 4-6 s on a 2-core machine (the thread and the viewer's
software OpenGL rendering fight over the interpreter lock and the cores; measured by
``tests/napari/test_real_loop.py``; re-measured after Qt's thread pool was enlarged, the
thread still doubles the Propose stall to 250-300 ms: docs/benchmarks.md). Built here, in a
child process, it only fills the on-disk superpixel / feature cache
(:mod:`napari_ssseg.core.cache`); the panel's worker then builds the propagator from the
cache in about 1 s.

Run as ``python -m napari_ssseg.core.scribble_prefetch IMAGES.npy SPEC.json``: ``IMAGES.npy``
holds the (C, Z, Y, X) float images, ``SPEC.json`` ``{"modalities": [...], "spacing": [...]}``.
The exit status is 0 on success; errors are printed to stderr (the panel shows them).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

__all__ = ["prefetch", "main"]


def prefetch(images: np.ndarray, modalities: list[str], spacing: tuple[float, ...]) -> float:
    """Build the scribble propagator of ``images`` with the disk cache on.

    Parameters
    ----------
    images : (C, Z, Y, X) ndarray
    modalities : list of str
    spacing : tuple of float
        Voxel size (mm) along (z, y, x).

    Returns
    -------
    float
        Seconds the build took.
    """
    from napari_ssseg.core.scribbles import ScribblePropagator

    with warnings.catch_warnings():  # channel fallbacks: the panel reports them itself
        warnings.simplefilter("ignore", UserWarning)
        prop = ScribblePropagator(images, modalities, None, spacing, cache=True)
    return float(prop.setup_seconds)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry (see the module docstring)."""
    args = sys.argv[1:] if argv is None else argv
    if hasattr(os, "nice"):
        os.nice(19)  # speculative work: the lowest priority, the user's own work goes first
    if len(args) != 2:
        print(
            "usage: python -m napari_ssseg.core.scribble_prefetch IMAGES.npy SPEC.json",
            file=sys.stderr,
        )
        return 2
    images = np.load(Path(args[0]), mmap_mode="r")
    spec = json.loads(Path(args[1]).read_text())
    seconds = prefetch(
        np.asarray(images), list(spec["modalities"]), tuple(float(s) for s in spec["spacing"])
    )
    print(f"prepared in {seconds:.1f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through the panel's child process
    raise SystemExit(main())
