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
    "ACCEPT_MODES",
    "accept_mask",
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


#: How a panel's result is taken into a labels layer (:func:`accept_mask`).
ACCEPT_MODES = ("merge", "replace")


def accept_mask(
    current: np.ndarray,
    new: np.ndarray,
    provenance: np.ndarray | None = None,
    *,
    mode: str = "merge",
    keep_human: bool = True,
    erase: np.ndarray | None = None,
) -> np.ndarray:
    """Voxels of ``current`` that accepting ``new`` overwrites.

    Parameters
    ----------
    current : (Z, Y, X) ndarray of int
        The labels layer's data now.
    new : (Z, Y, X) ndarray of int
        The result to accept (e.g. a scribble preview or a proposal).
    provenance : (Z, Y, X) ndarray of uint8, optional
        The labels' provenance; with ``keep_human`` its :data:`HUMAN` voxels are never
        overwritten.
    mode : {"merge", "replace"}
        ``"merge"`` (default): write the voxels that ``new`` labels, keep every voxel it leaves
        unlabelled (0) -- except those in ``erase``; ``"replace"``: ``new`` everywhere.
    keep_human : bool
        Keep the voxels painted by hand (default ``True``).
    erase : (Z, Y, X) ndarray of bool, optional
        Voxels the user marked as background (e.g. background strokes): in ``"merge"`` mode
        they are set to ``new``'s value (0) too.

    Returns
    -------
    (Z, Y, X) ndarray of bool
        Voxels to set to ``new``'s values; only voxels whose value changes.
    """
    from napari_ssseg.errors import check_choice

    check_choice("mode", mode, ACCEPT_MODES)
    current = np.asarray(current)
    new = np.asarray(new)
    if current.shape != new.shape:
        raise InputError(
            f"Cannot accept a result of shape {new.shape} into labels of shape "
            f"{current.shape}: they must be on the same grid."
        )
    write = current != new
    if mode == "merge":
        keep = new == 0
        if erase is not None:
            keep &= ~np.asarray(erase, bool)
        write &= ~keep
    if keep_human and provenance is not None and np.shape(provenance) == current.shape:
        write &= np.asarray(provenance) != HUMAN
    return write
