"""Pseudo-label seeded superpixel region refinement (Thompson et al. 2022, Algorithm 1).

The algorithm **[paper]** grows an initial pseudo-label ``p0`` (one region, e.g. the whole
tumour) superpixel by superpixel::

    pr <- { s : |s & p0| / |s| >= 0.5 }                   # fit p0 to the superpixels [ours]
    repeat
        Np <- neighbours(pr) minus pr ; merged <- false ; count <- 0
        while Np not empty and not merged and count <= n_c:
            count <- count + 1
            c <- argmax_{n in Np} Sim(pr, n)
            q <- argmax over the neighbours of c (pr collapsed into one node) of Sim(c, .)
            if q = pr and Sim(pr, c) > sim0: pr <- pr + {c}; merged <- true
            Np <- Np minus {c}
    until not merged

so at most ``n_c + 1`` candidates are examined per merge. The similarity is the project's
own definition **[ours]** (the authors' formula is not public), see :class:`SimilarityModel`.

Tie rules **[ours]** (both implementations use them, so they agree exactly): similarities are
rounded to 10 decimals; candidates are visited by decreasing similarity, then increasing
label; ``q = pr`` when ``Sim(c, pr)`` is at least as high as the similarity of ``c`` to every
other neighbour (ties go to ``pr``). Candidates at or below ``sim0`` cannot merge, so the
scan stops at the first one (this does not change the result).

Two implementations:

* :func:`grow_fast` keeps the region's additive statistics, its face counts / border sums
  towards every superpixel, and, per superpixel, its neighbours sorted by similarity with a
  lazily advanced pointer (the "best non-member neighbour" priority structure). A merge costs
  O(features + degree).
* :func:`grow_literal` recomputes, after every merge, the region's statistics from its voxels
  (and its centroid from the member list), its neighbours and border statistics from the
  voxel faces, and every candidate's neighbours from its voxel faces: the test oracle and
  the speed baseline.

Extensions **[ours]**, switchable (documented in docs/refinement.md):

* component pre-step (:meth:`RefinementSession.fit`, ``components=``, **on** by default):
  small connected components of ``p0`` that look unlike the largest one and like their
  surroundings are dropped before fitting (Algorithm 1 can never remove a false positive);
* mutual-best tolerance (``mutual_tolerance=``) and the ``mutual="member"`` rule, both
  **off** by default: they grow further than the strict rule, but the tolerance tuned on
  phantoms leaked into healthy tissue on held-out phantoms, and the configuration tuned on
  real scans (WT tolerance 0.1, TC ``"member"``, 1000 superpixels, sim0 0.4), which makes
  growth and the sim0 slider act on real scans (the strict rule stops growth there after 0-1
  merges whatever sim0 is), lost Dice on held-out real cases (docs/refinement.md, "Tuned on
  real scans").

``components=False, mutual="region", mutual_tolerance=0`` is the paper's Algorithm 1
(``ssseg refine --paper``); both implementations support the growth extensions and agree
exactly.

The GUI-facing API is :class:`RefinementSession`: it computes features, adjacency and the
pairwise similarities once per (image, superpixels) and then answers
``session.refine(p0, sim0, n_c)`` in milliseconds.

Where things are (this module is the public face; import from here):

* :mod:`~napari_ssseg.core.refine_params` -- tuned defaults, checks, :class:`SimilarityWeights`
  and :class:`RefineOptions` (every option in one object, passed whole from the CLI and the
  training strategies to :func:`refine_case` and on to :func:`refine_labels`);
* :mod:`~napari_ssseg.core.growth` -- :class:`SimilarityModel`, :func:`grow_fast`,
  :func:`grow_literal`;
* :mod:`~napari_ssseg.core.refine_session` -- :class:`RefinementSession`;
* here -- the one-shot functions :func:`refine_region`, :func:`refine_labels` (WT and TC of a
  label map) and :func:`refine_case` (brain mask, superpixels, sessions, refinement).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from napari_ssseg import defaults
from napari_ssseg.core.growth import BestOther, SimilarityModel, grow_fast, grow_literal
from napari_ssseg.core.preprocess import bounding_box, bounding_box_or_none
from napari_ssseg.core.progress import ProgressCallback, StopCallback, check_cancel, report
from napari_ssseg.core.refine_params import (
    DEFAULT_COMPONENT_KEEP,
    DEFAULT_COMPONENT_SIM,
    DEFAULT_COMPONENTS,
    DEFAULT_FILL,
    DEFAULT_FILL_EDGE,
    DEFAULT_MUTUAL,
    DEFAULT_MUTUAL_TOLERANCE,
    DEFAULT_N_SEGMENTS,
    DEFAULT_NC,
    DEFAULT_OUTPUT,
    DEFAULT_SIM0,
    DEFAULT_WEIGHTS,
    REGION_CHANNELS,
    RefineOptions,
    SimilarityWeights,
    check_nc,
    check_sim0,
    region_channels,
)
from napari_ssseg.core.refine_session import FittedSeed, RefinementSession, RefineResult
from napari_ssseg.errors import GeometryError, InputError, check_choice

# The public API of refinement, one import away (the pieces live in refine_params, growth and
# refine_session; see docs/architecture.md).
__all__ = [
    "DEFAULT_SIM0",
    "DEFAULT_NC",
    "DEFAULT_N_SEGMENTS",
    "DEFAULT_OUTPUT",
    "DEFAULT_WEIGHTS",
    "DEFAULT_FILL",
    "DEFAULT_FILL_EDGE",
    "DEFAULT_COMPONENTS",
    "DEFAULT_COMPONENT_SIM",
    "DEFAULT_COMPONENT_KEEP",
    "DEFAULT_MUTUAL",
    "DEFAULT_MUTUAL_TOLERANCE",
    "REGION_CHANNELS",
    "BestOther",
    "RefineOptions",
    "SimilarityWeights",
    "SimilarityModel",
    "FittedSeed",
    "RefineResult",
    "RefinementSession",
    "RefinedLabels",
    "region_channels",
    "check_sim0",
    "check_nc",
    "grow_fast",
    "grow_literal",
    "refine_region",
    "refine_region_literal",
    "refine_labels",
    "refine_case",
]


# --------------------------------------------------------------------------- one-shot API
def refine_region(
    images: np.ndarray,
    superpixels: np.ndarray,
    p0: np.ndarray,
    *,
    brain: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    sim0: float = DEFAULT_SIM0,
    n_c: int = DEFAULT_NC,
    weights: SimilarityWeights | None = None,
    shrink: bool = False,
    output: str | None = None,
) -> np.ndarray:
    """Refine one region with the fast implementation (builds a throw-away session).

    Parameters
    ----------
    images : (C, Z, Y, X) or (Z, Y, X) ndarray
        The region's channels.
    superpixels : (Z, Y, X) ndarray of int
    p0 : (Z, Y, X) ndarray of bool
    brain, spacing, sim0, n_c, weights, shrink, output
        See :class:`RefinementSession` and :meth:`RefinementSession.refine`.

    Returns
    -------
    (Z, Y, X) ndarray of bool
    """
    return _refine_once(images, superpixels, p0, brain, spacing, sim0, n_c, weights, shrink, output)


def _refine_once(
    images, superpixels, p0, brain, spacing, sim0, n_c, weights, shrink, output, literal=False
) -> np.ndarray:
    sim0 = check_sim0(sim0)
    n_c = check_nc(n_c)
    session = RefinementSession(images, None, superpixels, brain, spacing, weights=weights)
    return session.refine(p0, sim0, n_c, shrink=shrink, output=output, literal=literal).mask


def refine_region_literal(
    images: np.ndarray,
    superpixels: np.ndarray,
    p0: np.ndarray,
    *,
    brain: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    sim0: float = DEFAULT_SIM0,
    n_c: int = DEFAULT_NC,
    weights: SimilarityWeights | None = None,
    shrink: bool = False,
    output: str | None = None,
) -> np.ndarray:
    """As :func:`refine_region`, with the literal (recompute-everything) implementation."""
    return _refine_once(
        images, superpixels, p0, brain, spacing, sim0, n_c, weights, shrink, output, literal=True
    )


class RefinedLabels(NamedTuple):
    """Result of :func:`refine_labels` (unpacks as ``labels, provenance, info``)."""

    labels: np.ndarray
    provenance: np.ndarray
    info: dict


def refine_labels(
    images: np.ndarray,
    modalities: Sequence[str],
    labels: np.ndarray,
    superpixels_wt: np.ndarray | None,
    superpixels_tc: np.ndarray | None,
    brain: np.ndarray | None = None,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    options: RefineOptions | None = None,
    regions: Sequence[str] = ("wt", "tc"),
    sessions: Mapping[str, RefinementSession] | None = None,
    warn: bool = True,
    **overrides: Any,
) -> RefinedLabels:
    """Refine a multi-class internal label map: WT and TC separately, TC clipped to WT.

    Class assignment **[ours]**:

    * refined WT voxels outside the refined TC are ED (2) — including voxels that were NCR or
      ET before, when the TC region lost them (shrink / ``output="superpixels"``);
    * refined TC voxels keep their class when they were NCR or ET; voxels newly added to TC
      take the class (NCR or ET) of the nearest voxel of the input TC (Euclidean distance in
      mm); NCR when the input has no TC;
    * everything outside the refined WT, and outside the brain, is background.

    Parameters
    ----------
    images : (C, Z, Y, X) ndarray
    modalities : sequence of str
        Names of the ``C`` channels.
    labels : (Z, Y, X) ndarray of int
        Internal labels (0 bg, 1 NCR, 2 ED, 3 ET).
    superpixels_wt, superpixels_tc : (Z, Y, X) ndarray of int or None
        Superpixels for each region (WT from FLAIR, TC from T2 + T1Gd); may be ``None`` for a
        region that is not refined or whose session is given in ``sessions``.
    brain : (Z, Y, X) ndarray of bool, optional
    spacing : 3 floats
    options : RefineOptions, optional
        Every refinement option (default: the tuned defaults); ``sim0``, ``mutual``,
        ``mutual_tolerance`` and ``weights`` may be per region (``{"wt": ..., "tc": ...}``).
        ``components=False, mutual="region", mutual_tolerance=0``
        (:meth:`RefineOptions.paper`) gives the paper's Algorithm 1.
    regions : sequence of {"wt", "tc"}
    sessions : mapping, optional
        Prebuilt :class:`RefinementSession` per region (reused, e.g. by the GUI); their
        similarity weights are theirs (``options.weights`` applies to sessions built here).
    **overrides
        Fields of :class:`RefineOptions` (``sim0=0.3``, ``output="added"``...) applied over
        ``options``; an unknown name is a :class:`TypeError`.
    warn : bool
        Issue the notices (TC skipped, the fits' notices) as :class:`UserWarning`; they are
        in ``info["notes"]`` either way. ``False`` suits callers that show them themselves
        (no need to change the process-wide warning filters, which is not thread-safe).

    Returns
    -------
    RefinedLabels
        ``labels`` (uint8 internal), ``provenance`` (bool: voxels that came from
        superpixels) and ``info`` (per-region seed / merged counts, timings, messages;
        ``"notes"``: the notices, in order).
    """
    from scipy import ndimage

    options = RefineOptions.resolve(options, overrides, "refine_labels")
    labels = np.asarray(labels)
    images = np.asarray(images)
    if images.ndim != 4:
        raise InputError(f"images must be (C, Z, Y, X); got shape {images.shape}.")
    if labels.shape != images.shape[1:]:
        raise GeometryError(
            f"the pseudo-label has shape {labels.shape} but the case has shape "
            f"{images.shape[1:]}; it must be on the case's grid."
        )
    if labels.size and (labels.min() < 0 or labels.max() > 3):
        raise InputError(
            f"labels must use the internal convention 0-3 (0 bg, 1 NCR, 2 ED, 3 ET); found "
            f"values in [{labels.min()}, {labels.max()}]. Decode them with the case's label "
            f"convention first."
        )
    regions = [check_choice("region", r, ("wt", "tc")) for r in regions]
    if brain is None:
        brain = np.ones(labels.shape, bool)
    brain = np.asarray(brain, bool)
    if brain.shape != labels.shape:
        raise GeometryError(f"brain mask has shape {brain.shape}, labels {labels.shape}.")
    wt0 = labels > 0
    tc0 = (labels == 1) | (labels == 3)
    if not np.any(wt0 & brain):
        raise InputError(
            "the pseudo-label has no tumour voxel inside the brain: nothing to grow from."
        )
    sessions = dict(sessions or {})
    sp = {"wt": superpixels_wt, "tc": superpixels_tc}
    info: dict = {"regions": {}, "notes": []}
    wt = wt0 & brain
    tc = tc0 & brain
    prov = np.zeros(labels.shape, bool)
    for region in regions:
        kwargs = options.for_region(region)  # checks this region's sim0, mutual...
        p0 = wt0 if region == "wt" else tc0
        if region == "tc" and not np.any(p0 & brain):
            msg = "the pseudo-label has no tumour core (NCR/ET): TC refinement skipped."
            if warn:
                warnings.warn(msg, UserWarning, stacklevel=2)
            info["notes"].append(msg)
            info["regions"][region] = {"skipped": msg}
            continue
        sess = sessions.get(region)
        if sess is None:
            sp_region = sp[region]
            if sp_region is None:
                raise InputError(
                    f"no superpixels given for region {region.upper()}; pass "
                    f"superpixels_{region} or leave {region!r} out of regions."
                )
            sess = RefinementSession(
                images,
                modalities,
                sp_region,
                brain,
                spacing,
                region=region,
                weights=options.region_weights(region),
            )
            sessions[region] = sess
        res = sess.refine(p0, **kwargs, warn=warn)
        info["notes"].extend(f"{region.upper()}: {n}" for n in res.notices)
        info["regions"][region] = {
            "seed_superpixels": int(res.seed.sum()),
            "merged": len(res.merged),
            "removed": len(res.removed),
            "dropped_components": res.dropped_components,
            "seconds": res.seconds,
            "setup_seconds": sess.timings["total"],
        }
        if region == "wt":
            wt = res.mask & brain
        else:
            tc = res.mask & brain
        prov |= res.provenance
    # class assignment in the box of the refined WT (TC is clipped to it, so every voxel
    # outside is background): the cost follows the tumour, not the volume
    out = np.zeros(labels.shape, np.uint8)
    prov_out = np.zeros(labels.shape, bool)
    box = bounding_box_or_none(wt)
    if box is not None:
        w = wt[box]
        t = tc[box] & w
        t0 = tc0[box]
        lab = labels[box]
        o = out[box]  # a view
        o[w] = 2
        keep = t & t0
        o[keep] = lab[keep]
        new_tc = t & ~t0
        if new_tc.any():
            if np.any(tc0):
                # nearest input-TC voxel's class, searched in the bounding box of both
                new_full = np.zeros(labels.shape, bool)
                new_full[box] = new_tc
                nb = bounding_box(tc0 | new_full, margin=0)
                sub = ~tc0[nb]
                _, ind = ndimage.distance_transform_edt(
                    sub, sampling=tuple(float(s) for s in spacing), return_indices=True
                )
                src = labels[nb][tuple(ind)]
                out[nb][new_full[nb]] = src[new_full[nb]]
            else:
                o[new_tc] = 1
        o[~brain[box]] = 0
        prov_out[box] = prov[box] & (o > 0)
    prov = prov_out
    info["sessions"] = sessions
    return RefinedLabels(labels=out, provenance=prov, info=info)


def refine_case(
    case: Any,
    pseudo: np.ndarray,
    *,
    options: RefineOptions | None = None,
    preprocessed: Any = None,
    brain: np.ndarray | None = None,
    n_segments: int = DEFAULT_N_SEGMENTS,
    compactness: float = defaults.COMPACTNESS,
    sigma: float = defaults.SIGMA,
    regions: Sequence[str] = ("wt", "tc"),
    cache: Any = None,
    progress: ProgressCallback | None = None,
    should_stop: StopCallback | None = None,
    **overrides: Any,
) -> RefinedLabels:
    """Refine a pseudo-label of a :class:`~napari_ssseg.core.case.Case` end to end.

    Computes the brain mask (unless given), the region superpixels (WT: FLAIR, TC: T2 +
    T1Gd) inside it, the refinement sessions, and calls :func:`refine_labels` with the tuned
    defaults. The wall time of each stage is returned in ``info["timings"]``.

    Parameters
    ----------
    case : Case
        Images (canonical), modalities and spacing (``case.scale``).
    pseudo : (Z, Y, X) ndarray of int
        Internal labels (0 bg, 1 NCR, 2 ED, 3 ET) on the case's grid.
    preprocessed : Preprocessed, optional
        Result of :func:`~napari_ssseg.core.preprocess.preprocess_case`; its brain mask is
        used. Otherwise ``brain``, or :func:`~napari_ssseg.core.preprocess.brain_mask`.
    brain : (Z, Y, X) ndarray of bool, optional
    options : RefineOptions, optional
        Every refinement option, passed whole to :func:`refine_labels` (default: the tuned
        defaults; :meth:`RefineOptions.paper` is the paper's Algorithm 1).
    n_segments, compactness, sigma
        SLIC parameters (paper defaults).
    regions : sequence of {"wt", "tc"}
    cache : Cache, True or None
        Passed to the superpixel and feature computations.
    progress, should_stop
        Progress / cancellation callbacks (checked between stages).
    **overrides
        Fields of :class:`RefineOptions` applied over ``options`` (``sim0=0.3``...); an
        unknown name is a :class:`TypeError`.

    Returns
    -------
    RefinedLabels
        ``labels``, ``provenance`` and a JSON-friendly ``info``: per-region seed/merge counts
        (``"regions"``), superpixel counts (``"superpixels"``), whether each region's
        features came from the cache (``"feature_cache_hit"``), the parameters, ``"notes"``
        (see :func:`refine_labels`), ``"timings"`` (seconds per stage, in order: ``"brain
        mask"``, ``"superpixels WT"``..., ``"features+graph WT"``..., ``"refine"``) and the
        total ``"seconds"``.
    """
    from napari_ssseg.core.superpixels import region_superpixels

    options = RefineOptions.resolve(options, overrides, "refine_case")
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    lap = [t0]

    def stage(name: str) -> None:
        now = time.perf_counter()
        timings[name] = now - lap[0]
        lap[0] = now

    images = np.asarray(case.images)
    shape = tuple(images.shape[1:])
    pseudo = np.asarray(pseudo)
    if pseudo.shape != shape:
        raise GeometryError(
            f"the pseudo-label has shape {pseudo.shape} but case {getattr(case, 'name', '')!r} "
            f"has shape {shape}; it must be on the case's grid."
        )
    regions = [check_choice("region", r, ("wt", "tc")) for r in regions]
    if brain is None and preprocessed is not None:
        brain = np.asarray(preprocessed.uncrop(preprocessed.mask.astype(np.uint8)), bool)
    if brain is None:
        from napari_ssseg.core.preprocess import brain_mask

        brain = brain_mask(images)
    spacing = tuple(float(s) for s in case.scale)
    stage("brain mask")
    n_stages = 2 * len(regions) + 1
    superpixels: dict[str, np.ndarray] = {}
    for k, r in enumerate(regions):
        check_cancel(should_stop, "refinement")
        report(progress, k / n_stages, f"superpixels {r.upper()}")
        superpixels[r] = region_superpixels(
            images,
            case.modalities,
            r.upper(),
            mask=brain,
            spacing=spacing,
            n_segments=n_segments,
            compactness=compactness,
            sigma=sigma,
            cache=cache,
            should_stop=should_stop,
        )
        stage(f"superpixels {r.upper()}")
    sessions: dict[str, RefinementSession] = {}
    for k, r in enumerate(regions):
        check_cancel(should_stop, "refinement")
        report(progress, (len(regions) + k) / n_stages, f"features {r.upper()}")
        sessions[r] = RefinementSession(
            images,
            case.modalities,
            superpixels[r],
            brain,
            spacing,
            region=r,
            cache=cache,
            should_stop=should_stop,
        )
        stage(f"features+graph {r.upper()}")
    report(progress, 2 * len(regions) / n_stages, "refining")
    out = refine_labels(
        images,
        case.modalities,
        pseudo,
        None,
        None,
        brain,
        spacing=spacing,
        options=options,
        regions=regions,
        sessions=sessions,
    )
    stage("refine")
    report(progress, 1.0, "refined")
    info = {
        "regions": out.info["regions"],
        "superpixels": {r: sess.n_superpixels for r, sess in sessions.items()},
        "feature_cache_hit": {r: bool(sess.cache_hit) for r, sess in sessions.items()},
        "sim0": dict(options.sim0) if isinstance(options.sim0, Mapping) else float(options.sim0),
        "n_c": options.n_c,
        "options": options.to_info(),
        "n_segments": int(n_segments),
        "voxels_from_superpixels": int(out.provenance.sum()),
        "notes": list(out.info["notes"]),
        "timings": timings,
        "seconds": time.perf_counter() - t0,
    }
    return RefinedLabels(labels=out.labels, provenance=out.provenance, info=info)
