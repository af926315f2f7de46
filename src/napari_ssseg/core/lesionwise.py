"""Lesion-wise Dice and HD95 per tumour region, following the BraTS 2023+ rules.

BraTS 2023 and later rank segmentations lesion by lesion instead of over the whole volume, so
that missing a small lesion costs as much as missing a large one. For each region (WT, TC,
ET) of a case this module follows the official BraTS 2023 lesion-wise scripts
(``rachitsaluja/BraTS-2023-Metrics``, ``brats_metrics.py``; the 2024 scripts in
``rachitsaluja/BraTS-2024-Metrics`` are the same with other thresholds):

1. The ground truth (GT) and the prediction are split into 26-connected components.
2. The GT is dilated ``dilation`` times with the 18-connected structuring element
   (``generate_binary_structure(3, 2)``); GT components that fall in the same component of
   the dilated GT are one lesion (lesions closer than about ``2 * dilation`` voxels merge).
3. Each GT lesion is dilated again by ``dilation``; every predicted component that touches
   the dilated lesion is matched to it (a component may match several lesions). The lesion's
   Dice and HD95 are computed between the lesion and the union of its matched components;
   a GT lesion without a match (false negative) has Dice 0 and HD95 374 mm.
4. Predicted components that touch no dilated GT lesion are false positives, each scored
   Dice 0 and HD95 374 mm.
5. GT lesions of at most ``min_volume_mm3`` (voxel count x voxel volume) are left out of the
   scores (and of the TP/FN counts); components matched to them are not false positives.
6. ``dice = sum(lesion Dice) / (n_lesions + n_fp)`` and ``hd95 = (sum(lesion HD95) + 374
   n_fp) / (n_lesions + n_fp)``, over the counted lesions; with no counted lesion and no
   false positive, Dice 1 and HD95 0.

The per-lesion HD95 is DeepMind's ``compute_robust_hausdorff(..., 95)`` as in the official
scripts (``definition="surface-distance"`` of :func:`napari_ssseg.core.metrics.hd95`); other
definitions can be chosen.

Numbers per challenge (:data:`CHALLENGES`, from the official scripts' parameters):

==============  ========================  ========  =====================
name            challenge                 dilation  min. lesion volume
==============  ========================  ========  =====================
glioma          BraTS-GLI 2023 (adult)    3         50 mm³
ssa             BraTS-SSA 2023 (Africa)   3         50 mm³
meningioma      BraTS-MEN 2023            1         50 mm³
paediatric      BraTS-PED 2023            3         50 mm³
metastasis      BraTS-MET 2023            1         2 mm³
post-treatment  BraTS-GLI 2024            3         20 mm³ (ET 10 mm³)
==============  ========================  ========  =====================

Not reproduced: the BraTS 2024 post-treatment script also merges lesions that touch across
tissue types (NETC, SNFH, ET, RC) before scoring the per-tissue regions; here each region
is scored on its own, and only the regions of the internal labels exist (WT, TC, ET).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from napari_ssseg.core.case import REGIONS
from napari_ssseg.core.metrics import (
    _binary_metrics,
    _check_definition,
    _check_spacing,
    check_label_map,
    label_pair,
)
from napari_ssseg.errors import InputError, check_choice

__all__ = [
    "CHALLENGES",
    "LESION_PENALTY_HD95",
    "LESION_METRIC_NAMES",
    "LesionRules",
    "get_rules",
    "lesion_wise",
    "lesionwise_metrics",
]

#: HD95 (mm) of a false-positive or false-negative lesion in the BraTS 2023+ scripts.
LESION_PENALTY_HD95: float = 374.0

#: Summary keys of one region's result, in order (``lesions`` holds the per-lesion details).
LESION_METRIC_NAMES: tuple[str, ...] = ("dice", "hd95", "n_tp", "n_fn", "n_fp", "n_small")

_FULL_26 = np.ones((3, 3, 3), bool)
_DILATE_18 = ndimage.generate_binary_structure(3, 2)


@dataclass(frozen=True)
class LesionRules:
    """Lesion-wise parameters of one BraTS challenge.

    Attributes
    ----------
    name : str
        Key in :data:`CHALLENGES`.
    challenge : str
        Challenge and year the numbers come from.
    dilation : int
        Iterations of 18-connected dilation of the GT before merging and matching.
    min_volume_mm3 : float
        GT lesions of at most this volume are ignored.
    region_min_volume_mm3 : dict of str to float
        Region-specific thresholds that replace ``min_volume_mm3``.
    """

    name: str
    challenge: str
    dilation: int
    min_volume_mm3: float
    region_min_volume_mm3: dict[str, float] = field(default_factory=dict)

    def threshold(self, region: str) -> float:
        """Minimum volume (mm³, exclusive) of a counted GT lesion in ``region``."""
        return float(self.region_min_volume_mm3.get(region, self.min_volume_mm3))


#: Parameters of the BraTS challenges (see the module docstring for the sources).
CHALLENGES: dict[str, LesionRules] = {
    "glioma": LesionRules("glioma", "BraTS-GLI 2023", 3, 50.0),
    "ssa": LesionRules("ssa", "BraTS-SSA 2023", 3, 50.0),
    "meningioma": LesionRules("meningioma", "BraTS-MEN 2023", 1, 50.0),
    "paediatric": LesionRules("paediatric", "BraTS-PED 2023", 3, 50.0),
    "metastasis": LesionRules("metastasis", "BraTS-MET 2023", 1, 2.0),
    "post-treatment": LesionRules(
        "post-treatment", "BraTS-GLI 2024", 3, 20.0, {"ET": 10.0, "RC": 10.0}
    ),
}

_ALIASES = {
    "gli": "glioma",
    "brats-gli": "glioma",
    "brats-ssa": "ssa",
    "men": "meningioma",
    "brats-men": "meningioma",
    "ped": "paediatric",
    "pediatric": "paediatric",
    "brats-ped": "paediatric",
    "met": "metastasis",
    "mets": "metastasis",
    "brats-met": "metastasis",
    "post": "post-treatment",
    "brats-gli-2024": "post-treatment",
}


def get_rules(challenge: str | LesionRules) -> LesionRules:
    """The :class:`LesionRules` of a challenge name (``glioma``, ``BraTS-MET``, ...)."""
    if isinstance(challenge, LesionRules):
        return challenge
    key = str(challenge).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    return CHALLENGES[check_choice("challenge", key, tuple(CHALLENGES))]


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    lab, n = ndimage.label(mask, structure=_FULL_26)
    return lab, int(n)


def _grow(box: tuple[slice, ...], margin: int, shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(
        slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, shape)
    )


def _union(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def lesion_wise(
    pred: Any,
    gt: Any,
    spacing: float | Sequence[float] = (1.0, 1.0, 1.0),
    *,
    dilation: int = 3,
    min_volume_mm3: float = 50.0,
    definition: str = "surface-distance",
    penalty: float = LESION_PENALTY_HD95,
) -> dict[str, Any]:
    """Lesion-wise Dice and HD95 of one binary region (see the module docstring).

    Parameters
    ----------
    pred, gt : (Z, Y, X) array_like
        Masks of one region; non-zero is foreground.
    spacing : float or sequence of float
        Voxel size in mm, ``(Z, Y, X)`` order (lesion volumes and distances).
    dilation : int
        Iterations of 18-connected GT dilation (0: no merging, matching by overlap).
    min_volume_mm3 : float
        GT lesions of at most this volume are not counted.
    definition : {"surface-distance", "pooled", "directed-max"}
        Per-lesion HD95 definition (:func:`napari_ssseg.core.metrics.hd95`).
    penalty : float
        HD95 of an unmatched lesion and of a false positive (mm).

    Returns
    -------
    dict
        ``dice``, ``hd95`` (mm), ``n_tp``, ``n_fn``, ``n_fp`` (counted lesions), ``n_small``
        (GT lesions ignored as too small) and ``lesions``: one dict per GT lesion with
        ``id``, ``volume_mm3``, ``counted``, ``n_matched`` (predicted components),
        ``dice`` and ``hd95``.
    """
    p = np.asarray(pred) != 0
    g = np.asarray(gt) != 0
    if p.shape != g.shape:
        raise InputError(
            f"pred has shape {p.shape} but gt has shape {g.shape}; lesion-wise metrics need "
            "both masks on the same grid."
        )
    if p.ndim != 3:
        raise InputError(f"Lesion-wise metrics need 3D (Z, Y, X) masks; got shape {p.shape}.")
    sp = _check_spacing(spacing, 3)
    definition = _check_definition(definition)
    if int(dilation) != dilation or dilation < 0:
        raise InputError(f"dilation={dilation!r} must be a whole number >= 0 (BraTS: 1 or 3).")
    dilation = int(dilation)
    if not math.isfinite(float(min_volume_mm3)) or min_volume_mm3 < 0:
        raise InputError(f"min_volume_mm3={min_volume_mm3!r} must be a volume >= 0 in mm³.")
    voxel_mm3 = float(np.prod(sp))

    gt_cc, n_gt_cc = _components(g)
    pred_cc, n_pred = _components(p)
    if dilation > 0 and n_gt_cc:
        dil_cc, _ = _components(ndimage.binary_dilation(g, _DILATE_18, iterations=dilation))
        lesions = np.where(g, dil_cc, 0)  # GT components merged by their dilated extent
    else:
        lesions = gt_cc
    ids = [int(i) for i in np.unique(lesions) if i != 0]
    lesion_boxes = ndimage.find_objects(lesions)
    pred_boxes = ndimage.find_objects(pred_cc)
    matched_any: set[int] = set()
    details: list[dict[str, Any]] = []
    for lid in ids:
        box = _grow(lesion_boxes[lid - 1], dilation + 1, g.shape)
        lmask = lesions[box] == lid
        roi = ndimage.binary_dilation(lmask, _DILATE_18, iterations=dilation) if dilation else lmask
        hits = sorted(int(c) for c in np.unique(pred_cc[box][roi]) if c != 0)
        matched_any.update(hits)
        full = box
        for c in hits:
            full = _union(full, pred_boxes[c - 1])
        full = _grow(full, 1, g.shape)
        gmask = lesions[full] == lid
        pmask = np.isin(pred_cc[full], hits) if hits else np.zeros_like(gmask)
        m = _binary_metrics(pmask, gmask, sp, 0.0, penalty, definition, "voxels")
        details.append(
            {
                "id": lid,
                "volume_mm3": float(np.count_nonzero(gmask)) * voxel_mm3,
                "counted": False,
                "n_matched": len(hits),
                "dice": float(m["dice"]),
                "hd95": float(m["hd95"]) if hits else float(penalty),
            }
        )
    n_fp = n_pred - len(matched_any)
    counted = [d for d in details if d["volume_mm3"] > min_volume_mm3]
    for d in counted:
        d["counted"] = True
    n_tp = sum(1 for d in counted if d["n_matched"])
    denom = len(counted) + n_fp
    if denom == 0:
        lw_dice, lw_hd = 1.0, 0.0
    else:
        lw_dice = sum(d["dice"] for d in counted) / denom
        lw_hd = (sum(d["hd95"] for d in counted) + penalty * n_fp) / denom
    return {
        "dice": float(lw_dice),
        "hd95": float(lw_hd),
        "n_tp": n_tp,
        "n_fn": len(counted) - n_tp,
        "n_fp": int(n_fp),
        "n_small": len(details) - len(counted),
        "lesions": details,
    }


def lesionwise_metrics(
    pred_labels: Any,
    gt_labels: Any,
    spacing: float | Sequence[float] = (1.0, 1.0, 1.0),
    *,
    challenge: str | LesionRules = "glioma",
    regions: Iterable[str] = ("WT", "TC", "ET"),
    definition: str = "surface-distance",
    penalty: float = LESION_PENALTY_HD95,
) -> dict[str, dict[str, Any]]:
    """Lesion-wise Dice and HD95 of each region of two internal label maps.

    Parameters
    ----------
    pred_labels, gt_labels : (Z, Y, X) array_like of int
        Internal labels (0 background, 1 NCR, 2 ED, 3 ET); decode file conventions first.
    spacing : float or sequence of float
        Voxel size in mm, ``(Z, Y, X)`` order.
    challenge : str or LesionRules
        Parameters: a key of :data:`CHALLENGES` (``glioma``, ``ssa``, ``meningioma``,
        ``paediatric``, ``metastasis``, ``post-treatment``; BraTS names such as
        ``BraTS-MET`` are accepted) or your own :class:`LesionRules`.
    regions : iterable of str
        Regions among :data:`~napari_ssseg.core.case.REGIONS`.
    definition : str
        Per-lesion HD95 definition (default DeepMind's, as the official scripts).
    penalty : float
        HD95 of a missed or false-positive lesion (mm).

    Returns
    -------
    dict of str to dict
        ``{region: lesion_wise(...) result, with "challenge", "dilation" and
        "min_volume_mm3" added}``.
    """
    rules = get_rules(challenge)
    pred, gt = label_pair(pred_labels, gt_labels)
    check_label_map(pred, "predicted labels")
    check_label_map(gt, "ground-truth labels")
    out: dict[str, dict[str, Any]] = {}
    for r in regions:
        r = check_choice("region", r, REGIONS)
        values = list(REGIONS[r])
        res = lesion_wise(
            np.isin(pred, values),
            np.isin(gt, values),
            spacing,
            dilation=rules.dilation,
            min_volume_mm3=rules.threshold(r),
            definition=definition,
            penalty=penalty,
        )
        res.update(challenge=rules.name, dilation=rules.dilation, min_volume_mm3=rules.threshold(r))
        out[r] = res
    return out
