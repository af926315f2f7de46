"""Degraded pseudo-labels: realistic mistakes of a segmentation network, for benchmarks.

Four degradations of a ground-truth internal label map (0 bg, 1 NCR, 2 ED, 3 ET) mimic what
superpixel refinement is meant to fix (or, for the last one, cannot fix):

``"undersegmented_oedema"``
    The outer shell of the oedema is missed: ED voxels closer than ``width_mm`` to the
    tumour's outer boundary become background (default width: 25% of the WT's maximal
    inscribed radius, at least 2 voxels).
``"noisy_boundary"``
    The WT boundary is displaced by a smooth random field of amplitude ``amplitude_mm``
    (correlation length ~4 mm): the level set ``d + noise = 0`` of the signed distance ``d``.
    Voxels gained take class ED, lost voxels become background.
``"missed_lobe"``
    A lobe of the tumour is missed: every tumour voxel within a ball centred on a random
    WT boundary voxel (radius 80% of the WT's equivalent-sphere radius) becomes background.
``"false_positive_blob"``
    A spurious ED blob (a ball, radius 50% of the tumour's equivalent-sphere radius) is
    added in healthy brain at least 10 mm away from the tumour (5, 2 or 1 mm when a small
    brain leaves no room).

All degradations are deterministic for a given ``seed``, never touch voxels outside the
brain, and never mutate their input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_ssseg.errors import InputError, check_choice

__all__ = ["DEGRADATIONS", "ALIASES", "degrade", "degrade_all", "degrade_labels"]

DEGRADATIONS: tuple[str, ...] = (
    "undersegmented_oedema",
    "noisy_boundary",
    "missed_lobe",
    "false_positive_blob",
)


#: Short names accepted by :func:`degrade` / :func:`degrade_labels`.
ALIASES: dict[str, str] = {
    "under_oedema": "undersegmented_oedema",
    "under_edema": "undersegmented_oedema",
    "undersegmented": "undersegmented_oedema",
    "noisy": "noisy_boundary",
    "lobe": "missed_lobe",
    "fp_blob": "false_positive_blob",
    "false_positive": "false_positive_blob",
}


def _check(labels: np.ndarray, brain: np.ndarray | None, spacing: Sequence[float]):
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"labels must be a (Z, Y, X) array; got shape {labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() > 3):
        raise InputError("labels must be internal labels 0-3 (0 bg, 1 NCR, 2 ED, 3 ET).")
    if not np.any(labels > 0):
        raise InputError("labels contain no tumour: there is nothing to degrade.")
    if brain is None:
        brain = np.ones(labels.shape, bool)
    brain = np.asarray(brain, bool)
    if brain.shape != labels.shape:
        raise InputError(f"brain mask has shape {brain.shape}, labels {labels.shape}.")
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(s > 0 for s in sp):
        raise InputError(f"spacing must be 3 positive numbers; got {spacing!r}.")
    return labels, brain, sp


def _coords_mm(shape, sp):
    out = []
    for ax, (n, s) in enumerate(zip(shape, sp)):
        shp = [1, 1, 1]
        shp[ax] = n
        out.append((np.arange(n, dtype=np.float32) * s).reshape(shp))
    return out


def degrade(
    labels: np.ndarray,
    kind: str,
    *,
    brain: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int = 0,
    strength: float = 1.0,
) -> np.ndarray:
    """Return a degraded copy of ``labels``.

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of int
        Ground truth, internal convention.
    kind : str
        One of :data:`DEGRADATIONS` (or a short name from :data:`ALIASES`).
    brain : (Z, Y, X) ndarray of bool, optional
        Brain mask (the false-positive blob is placed inside it; results stay inside it).
    spacing : 3 floats
        Voxel size ``(z, y, x)`` in mm.
    seed : int
        Random seed.
    strength : float
        Multiplies the size of the degradation (1 = defaults above).

    Returns
    -------
    (Z, Y, X) ndarray of uint8
    """
    from scipy import ndimage

    kind = check_choice("kind", ALIASES.get(str(kind).lower(), kind), DEGRADATIONS)
    labels, brain, sp = _check(labels, brain, spacing)
    if not (np.isfinite(strength) and strength > 0):
        raise InputError(f"strength={strength!r} must be a positive number.")
    rng = np.random.default_rng(seed)
    out = labels.astype(np.uint8).copy()
    wt = labels > 0
    n_wt = int(wt.sum())
    r_eq = (3.0 * n_wt * float(np.prod(sp)) / (4.0 * np.pi)) ** (1.0 / 3.0)
    if kind == "undersegmented_oedema":
        d_out = ndimage.distance_transform_edt(wt, sampling=sp)
        width = max(0.25 * float(d_out.max()), 2.0 * min(sp)) * strength
        out[(labels == 2) & (d_out <= width)] = 0
    elif kind == "noisy_boundary":
        d_in = ndimage.distance_transform_edt(wt, sampling=sp)
        d_out = ndimage.distance_transform_edt(~wt, sampling=sp)
        signed = np.where(wt, d_in, -d_out).astype(np.float32)
        noise = rng.standard_normal(labels.shape).astype(np.float32)
        noise = ndimage.gaussian_filter(noise, sigma=[4.0 / s for s in sp])
        noise /= max(float(noise.std()), 1e-6)
        amp = max(0.12 * r_eq, 1.5 * min(sp)) * strength
        new = (signed + amp * noise) > 0
        out[wt & ~new] = 0
        out[new & ~wt] = 2
    elif kind == "missed_lobe":
        border = wt & ~ndimage.binary_erosion(wt)
        idx = np.argwhere(border)
        centre = idx[rng.integers(len(idx))] * np.asarray(sp)
        zz, yy, xx = _coords_mm(labels.shape, sp)
        r = 0.8 * r_eq * strength
        ball = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= r * r
        out[ball & wt] = 0
    else:  # false_positive_blob
        d_out = ndimage.distance_transform_edt(~wt, sampling=sp)
        r = max(0.5 * r_eq * strength, 2.0 * max(sp))
        d_brain = ndimage.distance_transform_edt(brain, sampling=sp)
        for gap in (10.0, 5.0, 2.0, 1.0):
            ok = (d_out >= gap + r) & (d_brain >= r + min(gap, 2.0))
            if ok.any():
                break
        if not ok.any():
            raise InputError("no room in the brain for a false-positive blob away from the tumour.")
        idx = np.argwhere(ok)
        centre = idx[rng.integers(len(idx))] * np.asarray(sp)
        zz, yy, xx = _coords_mm(labels.shape, sp)
        ball = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= r * r
        out[ball & ~wt] = 2
    out[~brain] = 0
    return out


def degrade_all(
    labels: np.ndarray,
    *,
    brain: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int = 0,
    kinds: Sequence[str] = DEGRADATIONS,
) -> dict[str, np.ndarray]:
    """All degradations of ``labels``, one per kind (seeded ``seed + i``)."""
    return {
        k: degrade(labels, k, brain=brain, spacing=spacing, seed=seed + i)
        for i, k in enumerate(kinds)
    }


def degrade_labels(
    labels: np.ndarray,
    kind: str = "undersegmented_oedema",
    *,
    brain: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int = 0,
    strength: float = 1.0,
) -> np.ndarray:
    """:func:`degrade` with ``kind`` as a keyword (short names of :data:`ALIASES` accepted)."""
    return degrade(labels, kind, brain=brain, spacing=spacing, seed=seed, strength=strength)
