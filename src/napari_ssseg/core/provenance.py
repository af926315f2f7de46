"""Provenance of label voxels: which step of the workflow last set each voxel's label.

A labels layer edited with the plugin's panels keeps a ``(Z, Y, X)`` ``uint8`` array of codes
next to its data (in napari: ``layer.metadata["ssseg_provenance"]``, key
:data:`PROVENANCE_KEY`). Each panel that writes labels sets the code of the voxels it wrote:

=====  ==========================  ==========================================================
code   name                        meaning
=====  ==========================  ==========================================================
0      :data:`UNTOUCHED`           original label (as loaded), never changed by the plugin
1      :data:`MODEL`               written from a network's proposal
2      :data:`SUPERPIXEL`          written by superpixel refinement (grown into, or changed
                                   by, an Accept of the Refine panel)
3      :data:`SCRIBBLE`            propagated from a user scribble
4      :data:`HUMAN`               painted or erased by hand
=====  ==========================  ==========================================================

numpy only (this module is part of :mod:`napari_ssseg.core`).
"""

from __future__ import annotations

import numpy as np

from napari_ssseg.errors import InputError

__all__ = [
    "HUMAN",
    "MODEL",
    "PROVENANCE_CODES",
    "PROVENANCE_KEY",
    "SCRIBBLE",
    "SUPERPIXEL",
    "UNTOUCHED",
    "empty_provenance",
    "provenance_counts",
    "update_provenance",
]

#: Layer-metadata key of the provenance array.
PROVENANCE_KEY = "ssseg_provenance"
UNTOUCHED: int = 0
MODEL: int = 1
SUPERPIXEL: int = 2
SCRIBBLE: int = 3
HUMAN: int = 4
#: code -> name
PROVENANCE_CODES: dict[int, str] = {
    UNTOUCHED: "untouched",
    MODEL: "model",
    SUPERPIXEL: "superpixel",
    SCRIBBLE: "scribble",
    HUMAN: "human",
}


def empty_provenance(shape: tuple[int, ...]) -> np.ndarray:
    """A ``(Z, Y, X)`` uint8 provenance array of :data:`UNTOUCHED` voxels."""
    return np.zeros(tuple(int(s) for s in shape), np.uint8)


def update_provenance(previous: np.ndarray | None, changed: np.ndarray, code: int) -> np.ndarray:
    """Return a new provenance array with ``changed`` voxels set to ``code``.

    Parameters
    ----------
    previous : (Z, Y, X) ndarray of uint8 or None
        The current provenance (not modified); ``None`` or an array of another shape starts
        from :func:`empty_provenance`.
    changed : (Z, Y, X) ndarray of bool
        Voxels just written.
    code : int
        One of :data:`PROVENANCE_CODES`.

    Returns
    -------
    (Z, Y, X) ndarray of uint8
    """
    if int(code) not in PROVENANCE_CODES:
        raise InputError(
            f"provenance code {code!r} is unknown; expected one of {sorted(PROVENANCE_CODES)} "
            f"({', '.join(f'{k} {v}' for k, v in PROVENANCE_CODES.items())})."
        )
    changed = np.asarray(changed, bool)
    if previous is None or np.shape(previous) != changed.shape:
        out = empty_provenance(changed.shape)
    else:
        out = np.array(previous, dtype=np.uint8, copy=True)
    out[changed] = int(code)
    return out


def provenance_counts(provenance: np.ndarray) -> dict[str, int]:
    """Number of voxels per provenance name (codes outside the table are ignored)."""
    counts = np.bincount(np.asarray(provenance, np.uint8).ravel(), minlength=len(PROVENANCE_CODES))
    return {name: int(counts[code]) for code, name in PROVENANCE_CODES.items()}
