"""The Refine panel's preview engine: set-up, cached previews and the Accept step.

Pure computation (NumPy, no napari, Qt or torch), so it runs and is tested without a
display. The napari Refine panel (:mod:`napari_ssseg._napari.widgets.refine`) builds the
inputs from its widgets, runs :func:`compute_setup` in a worker thread and shows what
:func:`preview_box` and :func:`refine_for_accept` return.

Workflow
--------
1. :func:`compute_setup` -- once per (case, regions, superpixel parameters): the brain mask
   (:func:`case_brain_mask`), SLIC superpixels per region (WT on FLAIR, TC on T2 + T1Gd) and
   a :class:`~napari_ssseg.core.refine.RefinementSession` per region, gathered in a
   :class:`RefineSetup`. It takes core's ``progress(fraction, message)`` and
   ``should_stop()`` callbacks (:mod:`napari_ssseg.core.progress`) and raises
   :class:`~napari_ssseg.core.progress.Cancelled` when stopped.
2. ``session.fit(seed)`` per region (the panel does it once per pseudo-label; seeds from
   :func:`region_seeds`).
3. :func:`preview_box` -- per slider move: the refined regions on the bounding box of the
   superpixel domain, with a :class:`MaskCache` that skips the mask assembly for a
   superpixel set already seen (many slider positions give the same set).
4. :func:`refine_for_accept` -- the full :func:`~napari_ssseg.core.refine.refine_labels`
   result and the voxels an Accept writes (:func:`~napari_ssseg.core.provenance.accept_mask`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from napari_ssseg.core.progress import (
    ProgressCallback,
    StopCallback,
    check_cancel,
    report,
    stage_progress,
)
from napari_ssseg.errors import InputError

__all__ = [
    "MAX_PREVIEWS",
    "AcceptPlan",
    "MaskCache",
    "RefineSetup",
    "case_brain_mask",
    "compute_setup",
    "preview_box",
    "preview_masks",
    "refine_for_accept",
    "region_seeds",
]

#: Default number of refined masks a :class:`MaskCache` keeps.
MAX_PREVIEWS = 64
#: Share of a region's set-up progress given to its superpixels (the rest: features, graph).
_SUPERPIXEL_SHARE = 0.7


@dataclass
class RefineSetup:
    """Everything the sliders need: per-region superpixels, sessions and fitted seeds.

    Attributes
    ----------
    case : Case
    brain : (Z, Y, X) ndarray of bool
    regions : tuple of str
        Regions refined (``"wt"``, ``"tc"``); a region whose seed is empty is dropped.
    superpixels : dict of str to (Z, Y, X) int32 ndarray
    sessions : dict of str to RefinementSession
    params : dict
        ``n_segments``, ``compactness``, ``sigma``.
    messages : list of str
        Things the user should know (skipped regions, fallbacks).
    fits : dict of str to Seed
        The seeds given to :func:`compute_setup` fitted to each region's superpixels
        (``RefinementSession.fit``), computed with the rest so the panel does not fit on the
        GUI thread; empty when the setup was assembled from reused sessions.
    """

    case: Any
    brain: np.ndarray
    regions: tuple[str, ...]
    superpixels: dict[str, np.ndarray]
    sessions: dict[str, Any]
    params: dict[str, Any]
    messages: list[str] = field(default_factory=list)
    fits: dict[str, Any] = field(default_factory=dict)


def region_seeds(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Seed mask of each region in internal labels (0 bg, 1 NCR, 2 ED, 3 ET).

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of int

    Returns
    -------
    dict
        ``"wt"``: any tumour class; ``"tc"``: NCR or ET.
    """
    labels = np.asarray(labels)
    return {"wt": labels > 0, "tc": (labels == 1) | (labels == 3)}


def case_brain_mask(case: Any, preprocessed: Any = None) -> np.ndarray:
    """Brain mask on the case grid: the preprocessing mask, else derived from the images.

    Parameters
    ----------
    case : Case
        ``images`` (C, Z, Y, X) and ``shape`` (Z, Y, X).
    preprocessed : Preprocessed, optional
        Result of :func:`~napari_ssseg.core.preprocess.preprocess_case`. Its mask (on the
        crop, or already on the case grid) is used when it is non-empty and fits the case.

    Returns
    -------
    (Z, Y, X) ndarray of bool
        Otherwise :func:`napari_ssseg.core.preprocess.brain_mask` of the case's images (what
        :func:`~napari_ssseg.core.refine.refine_case` uses without a preprocessing result).
    """
    shape = tuple(case.shape)
    if preprocessed is not None and getattr(preprocessed, "mask", None) is not None:
        mask = np.asarray(preprocessed.mask, bool)
        if mask.shape != shape:
            mask = np.asarray(preprocessed.uncrop(mask.astype(np.uint8)), bool)
        if mask.shape == shape and mask.any():
            return mask
    from napari_ssseg.core.preprocess import brain_mask

    return brain_mask(case.images)


def compute_setup(
    case: Any,
    preprocessed: Any,
    regions: Sequence[str],
    params: Mapping[str, Any],
    seeds: Mapping[str, np.ndarray],
    reuse: Mapping[str, tuple[np.ndarray, Any]] | None = None,
    brain: np.ndarray | None = None,
    *,
    progress: ProgressCallback | None = None,
    should_stop: StopCallback | None = None,
) -> RefineSetup:
    """Brain mask, superpixels and refinement sessions for ``regions`` of a case.

    Parameters
    ----------
    case : Case
    preprocessed : Preprocessed or None
        Its brain mask is used when present (:func:`case_brain_mask`).
    regions : sequence of {"wt", "tc"}
    params : mapping
        ``n_segments``, ``compactness``, ``sigma`` of
        :func:`~napari_ssseg.core.superpixels.slic_superpixels`.
    seeds : mapping of str to (Z, Y, X) bool ndarray
        Pseudo-label of each region (:func:`region_seeds`), checked for emptiness inside the
        brain. A region without a seed inside the brain is skipped for TC (with a message)
        and an error for WT.
    reuse : mapping, optional
        Already computed ``(superpixels, session)`` per region (not recomputed).
    brain : (Z, Y, X) ndarray of bool, optional
        Brain mask already computed for this case (else :func:`case_brain_mask`).
    progress, should_stop
        Core's progress and cancel callbacks (:mod:`napari_ssseg.core.progress`).

    Returns
    -------
    RefineSetup

    Raises
    ------
    InputError
        The pseudo-label has nothing to grow from inside the brain.
    Cancelled
        ``should_stop()`` returned true.
    """
    from napari_ssseg.core.refine import RefinementSession
    from napari_ssseg.core.superpixels import region_superpixels

    reuse = dict(reuse or {})
    regions = tuple(regions)
    check_cancel(should_stop, "superpixels")
    report(progress, 0.0, "brain mask")
    if brain is None:
        brain = case_brain_mask(case, preprocessed)
    spacing = tuple(float(s) for s in case.scale)
    messages: list[str] = []
    if "wt" in regions and not np.any(seeds["wt"] & brain):
        raise InputError(
            "the pseudo-label has no tumour voxel inside the brain: nothing to grow from. "
            "Choose a labels layer that holds a (rough) tumour segmentation, or paint one."
        )
    keep = []
    for region in regions:
        if region == "tc" and not np.any(seeds[region] & brain):
            messages.append(
                "the pseudo-label has no tumour core (NCR/ET) inside the brain: TC "
                "refinement skipped."
            )
            continue
        keep.append(region)
    if not keep:
        raise InputError(
            "the pseudo-label has no tumour core (NCR/ET) inside the brain: nothing to grow "
            "from for TC. Choose WT, or a pseudo-label with a tumour core."
        )
    superpixels: dict[str, np.ndarray] = {}
    sessions: dict[str, Any] = {}
    n = len(keep)
    for i, region in enumerate(keep):
        lo, hi = i / n, (i + 1) / n
        mid = lo + _SUPERPIXEL_SHARE * (hi - lo)
        if region in reuse:
            superpixels[region], sessions[region] = reuse[region]
            continue
        name = region.upper()
        check_cancel(should_stop, "superpixels")
        report(progress, lo, f"{name} superpixels")
        sp = region_superpixels(
            case.images,
            case.modalities,
            name,
            mask=brain,
            cache=True,
            spacing=spacing,
            progress=stage_progress(progress, lo, mid, f"{name} superpixels"),
            should_stop=should_stop,
            **dict(params),
        )
        check_cancel(should_stop, "superpixels")
        report(progress, mid, f"{name} features and graph")
        session = RefinementSession(
            case.images,
            case.modalities,
            sp,
            brain,
            spacing,
            region=region,
            progress=stage_progress(progress, mid, hi, f"{name} features"),
            should_stop=should_stop,
        )
        superpixels[region] = sp
        sessions[region] = session
    check_cancel(should_stop, "superpixels")
    report(progress, 1.0, "fitting the pseudo-label")
    fits = {r: sessions[r].fit(seeds[r], warn=False) for r in keep}
    report(progress, 1.0, "done")
    return RefineSetup(
        case=case,
        brain=brain,
        regions=tuple(keep),
        superpixels=superpixels,
        sessions=sessions,
        params=dict(params),
        messages=messages,
        fits=fits,
    )


class MaskCache:
    """Refined region masks by (region, final superpixel set), bit-packed, LRU.

    Many slider positions give the same set of superpixels; for those the (slow, full-grid)
    mask assembly of :meth:`RefinementSession.refine` is skipped: the set is found with
    :meth:`RefinementSession.grow` (growth only, milliseconds). A mask is stored only when the
    full refinement ended on the same set as the growth alone, so a cached preview always
    equals the full refinement. Safe to share between the GUI thread and one preview worker
    (plain dict operations only). Clear it when the pseudo-label changes.

    Parameters
    ----------
    max_items : int
        Masks kept (the least recently stored are dropped first).
    """

    def __init__(self, max_items: int = MAX_PREVIEWS) -> None:
        self.max_items = int(max_items)
        self._items: OrderedDict[tuple, tuple[np.ndarray, tuple[int, ...], int]] = OrderedDict()

    def get(self, key: tuple) -> tuple[np.ndarray, int] | None:
        """``(mask, added)`` stored under ``key``, or ``None``."""
        hit = self._items.get(key)
        if hit is None:
            return None
        packed, shape, added = hit
        n = int(np.prod(shape))
        return np.unpackbits(packed, count=n).view(bool).reshape(shape), added

    def put(self, key: tuple, mask: np.ndarray, added: int) -> None:
        """Store ``mask`` (bool) and the number of voxels ``added`` under ``key``."""
        self._items[key] = (np.packbits(mask.ravel()), mask.shape, int(added))
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def clear(self) -> None:
        """Forget every mask."""
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def _union_box(crops: list[tuple[slice, ...]]) -> tuple[slice, ...]:
    return tuple(
        slice(min(c[a].start for c in crops), max(c[a].stop for c in crops)) for a in range(3)
    )


def preview_box(
    setup: RefineSetup,
    seeds: Mapping[str, Any],
    pseudo: np.ndarray,
    sim0: float,
    n_c: int,
    cache: MaskCache | None = None,
) -> tuple[tuple[slice, ...], np.ndarray, dict[str, int], tuple]:
    """Refined regions for the preview, on the bounding box of the superpixel domain.

    Parameters
    ----------
    setup : RefineSetup
    seeds : mapping of str to FittedSeed
        :meth:`RefinementSession.fit` of each refined region.
    pseudo : (Z, Y, X) ndarray of int
        The pseudo-label (internal classes), for the region that is not refined.
    sim0, n_c
        Refinement parameters.
    cache : MaskCache, optional
        Masks by final superpixel set: the growth (milliseconds) always runs, the mask
        assembly only for a superpixel set not seen before.

    Returns
    -------
    box : tuple of 3 slice
        Where ``preview`` sits in the full grid (nothing outside it is ever refined).
    preview : (z, y, x) ndarray of uint8
        1 refined WT (outside TC), 2 refined TC (clipped to WT), 0 elsewhere.
    added : dict of str to int
        Voxels added to each refined region.
    state : tuple
        Identifies the result (same state = same preview).
    """
    box = _union_box([setup.sessions[r].crop for r in setup.regions])
    added: dict[str, int] = {}
    masks: dict[str, np.ndarray] = {}
    state: list[Any] = []
    for region in setup.regions:
        session, seed = setup.sessions[region], seeds[region]
        grow = getattr(session, "grow", None)  # growth only, no mask assembly (milliseconds)
        key: tuple[Any, ...] | None = None
        hit = None
        if cache is not None and grow is not None:
            members, _ = grow(seed, sim0, n_c)
            key = (region, members.tobytes())
            hit = cache.get(key)
        if hit is None:
            res = session.refine(seed, sim0, n_c)
            hit = (np.ascontiguousarray(res.mask[box]), int(np.count_nonzero(res.provenance)))
            if (
                cache is not None
                and key is not None
                and key[1] == np.asarray(res.members, bool).tobytes()
            ):
                cache.put(key, *hit)  # only when growth alone agrees with the full refinement
            else:
                key = (region, "uncached", sim0, n_c, cache is None)
        masks[region], added[region] = hit
        state.append(key)
    if "wt" in masks:
        wt = masks["wt"]
    else:
        wt = (pseudo[box] > 0) & setup.brain[box]
    preview = wt.astype(np.uint8)
    if "tc" in masks:
        preview[masks["tc"] & wt] = 2
    else:
        sub = pseudo[box]
        preview[((sub == 1) | (sub == 3)) & wt] = 2
    return box, preview, added, tuple(state)


def preview_masks(
    setup: RefineSetup,
    seeds: Mapping[str, Any],
    pseudo: np.ndarray,
    sim0: float,
    n_c: int,
) -> tuple[np.ndarray, dict[str, int]]:
    """Full-grid form of :func:`preview_box`: ``(preview (Z, Y, X) uint8, added)``."""
    box, sub, added, _ = preview_box(setup, seeds, pseudo, sim0, n_c)
    full = np.zeros(tuple(setup.case.shape), np.uint8)
    full[box] = sub
    return full, added


class AcceptPlan(NamedTuple):
    """What an Accept writes (see :func:`refine_for_accept`)."""

    #: (Z, Y, X) refined labels, in the dtype of the current labels
    new: np.ndarray
    #: (Z, Y, X) bool: voxels to set to ``new`` (only voxels whose value changes)
    changed: np.ndarray
    #: (Z, Y, X) bool: unchanged voxels the refinement confirmed (inside a grown region)
    confirmed: np.ndarray
    #: number of voxels that differ but are kept (painted by hand)
    kept: int


def refine_for_accept(
    setup: RefineSetup,
    pseudo: np.ndarray,
    current: np.ndarray,
    provenance: np.ndarray | None,
    sim0: float,
    n_c: int,
    *,
    keep_human: bool = True,
) -> AcceptPlan:
    """Refine ``pseudo`` with the setup's sessions and plan writing it into ``current``.

    Parameters
    ----------
    setup : RefineSetup
    pseudo : (Z, Y, X) ndarray of int
        The pseudo-label that is refined.
    current : (Z, Y, X) ndarray of int
        What the labels layer holds now.
    provenance : (Z, Y, X) ndarray of uint8 or None
        Provenance of ``current`` (:mod:`napari_ssseg.core.provenance`).
    sim0, n_c
        Refinement parameters.
    keep_human : bool
        Never overwrite (nor mark as confirmed) voxels painted by hand.

    Returns
    -------
    AcceptPlan
    """
    from napari_ssseg.core.provenance import HUMAN, accept_mask
    from napari_ssseg.core.refine import refine_labels

    out = refine_labels(  # its notices were shown when the seeds were fitted
        setup.case.images,
        setup.case.modalities,
        pseudo,
        None,
        None,
        setup.brain,
        spacing=tuple(float(s) for s in setup.case.scale),
        sim0=sim0,
        n_c=n_c,
        regions=setup.regions,
        sessions=setup.sessions,
        warn=False,
    )
    current = np.asarray(current)
    new = out.labels.astype(current.dtype, copy=False)
    changed = accept_mask(current, new, provenance, mode="replace", keep_human=bool(keep_human))
    kept = int(np.count_nonzero((current != new) & ~changed))
    confirmed = np.asarray(out.provenance, bool) & (new > 0) & ~changed
    if keep_human and provenance is not None:
        confirmed &= np.asarray(provenance) != HUMAN
    return AcceptPlan(new=new, changed=changed, confirmed=confirmed, kept=kept)
