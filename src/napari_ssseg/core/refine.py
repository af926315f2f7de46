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
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from napari_ssseg import defaults
from napari_ssseg.core.adjacency import (
    Adjacency,
    adjacency_from_pairs,
    boundary_faces,
    build_adjacency,
)
from napari_ssseg.core.case import REGION_MODALITIES, region_channel_indices
from napari_ssseg.core.features import (
    FEATURES_VERSION,
    PreparedChannels,
    SuperpixelStats,
    compute_stats,
    feature_blocks,
    features_from_sums,
    prepare_channels,
    region_sums_from_voxels,
)
from napari_ssseg.core.progress import ProgressCallback, StopCallback, check_cancel, report
from napari_ssseg.errors import GeometryError, InputError, check_choice

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

#: Stopping similarity tuned on phantoms (seeds 1000-1009) for the paper's strict mutual-best
#: rule, see docs/refinement.md (with ``mutual_tolerance > 0`` a higher value is needed). On
#: real scans the strict rule, not sim0, stops growth below sim0 ~0.5; a configuration
#: re-tuned on real scans did not gain on held-out real cases, so this stays
#: (docs/refinement.md, "Tuned on real scans").
DEFAULT_SIM0: float = defaults.SIM0
#: Candidates checked per merge minus one (the paper's value).
DEFAULT_NC: int = defaults.NC
#: Approximate SLIC superpixel count of the whole volume used by :func:`refine_case` and
#: ``ssseg refine`` (the paper's 350): about 230 superpixels inside a real 1 mm brain, ~6 ml
#: (~23 mm across) each. 1000 (~2 ml) fitted the tuning real cases better but not the
#: held-out ones (docs/refinement.md, "Tuned on real scans"). :data:`napari_ssseg.defaults.\
#: N_SEGMENTS`, shared with the CLI, the pseudo-label-superpixel strategy and the panels.
DEFAULT_N_SEGMENTS: int = defaults.N_SEGMENTS
#: How the refined mask is assembled, per region (tuned, see docs/refinement.md); used when
#: ``output=None``. Sessions without a region use ``"union"``.
DEFAULT_OUTPUT: dict[str, str] = {"wt": "union", "tc": "added"}
#: With ``output="union"``: seed superpixels covered by at least this fraction of ``p0`` are
#: filled completely (0.5 fills every seed superpixel) **[ours]**, tuned.
DEFAULT_FILL: float = defaults.FILL
#: With ``output="union"``: a seed superpixel is filled only where ``p0``'s boundary inside it
#: is weak — mean border map on that cut <= ``fill_edge * sigma_b`` **[ours]**, tuned.
DEFAULT_FILL_EDGE: float = defaults.FILL_EDGE
#: Component pre-step **[ours]**, per region: before fitting, connected components of ``p0``
#: other than the largest are dropped when they are small and do not look like it (see
#: :meth:`RefinementSession.fit`). ``False`` recovers the paper's Algorithm 1.
DEFAULT_COMPONENTS: dict[str, bool] = {"wt": True, "tc": True}
#: A small component is dropped when the content similarity ``S_c`` of its superpixels to the
#: largest component's is below this value **[ours]**, tuned on phantoms seeds 1000-1009.
DEFAULT_COMPONENT_SIM: float = 0.6
#: Components with at least this fraction of the largest component's voxels are always kept
#: (multifocal tumours) **[ours]**.
DEFAULT_COMPONENT_KEEP: float = 0.5
#: Mutual-best rule of the growth: ``"region"`` is the paper's (the candidate's most similar
#: neighbour must be the region as one node); ``"member"`` **[ours]** also accepts a candidate
#: whose most similar neighbour is one of the region's superpixels. Per region.
DEFAULT_MUTUAL: dict[str, str] = {"wt": "region", "tc": "region"}
#: Tolerance of the mutual-best test **[ours]**, per region: the candidate passes when the
#: region's side is at least ``(1 - tolerance)`` times its best outside neighbour. 0 = the
#: paper's rule, the default: the tolerance tuned on seeds 1000-1009 (WT 0.2 with sim0 0.45)
#: leaked into healthy tissue on held-out phantoms (docs/benchmarks/refine.md), and WT 0.1
#: with sim0 0.4 and 1000 superpixels, tuned on real scans, makes growth act there (the
#: strict rule stops it after 0-1 merges whatever sim0 is) but did not gain Dice on held-out
#: real cases (docs/refinement.md, "Tuned on real scans").
DEFAULT_MUTUAL_TOLERANCE: dict[str, float] = {"wt": 0.0, "tc": 0.0}
_MUTUAL = ("region", "member")
#: Channels each region is refined on **[paper]** (WT: FLAIR; TC: T2 + T1Gd): the rows of
#: the one table :data:`napari_ssseg.core.case.REGION_MODALITIES`, which superpixels use too.
REGION_CHANNELS: dict[str, tuple[str, ...]] = {
    r: REGION_MODALITIES[r.upper()] for r in ("wt", "tc")
}
_OUTPUTS = ("added", "union", "superpixels")
_REGION_FEATURES = ("centroid", "union")
_DECIMALS = 10
_FIT_FRACTION = 0.5


def _q(s: np.ndarray | float) -> np.ndarray:
    return np.round(s, _DECIMALS)


# --------------------------------------------------------------------------- validation
def check_sim0(sim0: float) -> float:
    """Return ``sim0`` as float if it lies in [0, 1], else raise :class:`InputError`."""
    try:
        v = float(sim0)
    except (TypeError, ValueError):
        raise InputError(f"sim0={sim0!r} is not a number; expected a value in [0, 1].") from None
    if not np.isfinite(v) or v < 0.0 or v > 1.0:
        raise InputError(
            f"sim0={sim0!r} is out of range; the stopping similarity must lie in [0, 1] "
            f"(0 grows as far as the mutual-best rule allows, 1 never grows). "
            f"Default: {DEFAULT_SIM0}."
        )
    return v


def check_nc(n_c: int) -> int:
    """Return ``n_c`` as int if it is an integer >= 1, else raise :class:`InputError`."""
    if isinstance(n_c, bool) or not isinstance(n_c, (int, np.integer)):
        if isinstance(n_c, float) and float(n_c).is_integer():
            n_c = int(n_c)
        else:
            raise InputError(f"n_c={n_c!r} must be an integer >= 1 (default {DEFAULT_NC}).")
    if int(n_c) < 1:
        raise InputError(
            f"n_c={n_c!r} is out of range; the number of candidates checked per merge must "
            f"be an integer >= 1 (default {DEFAULT_NC})."
        )
    return int(n_c)


def _check_unit(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}={value!r} is not a number; expected a value in [0, 1].") from None
    if not np.isfinite(v) or v < 0.0 or v > 1.0:
        raise InputError(f"{name}={value!r} is out of range; it must lie in [0, 1].")
    return v


def _check_mutual(mutual: str, tolerance: float) -> tuple[str, float]:
    mutual = check_choice("mutual", mutual, _MUTUAL)
    try:
        t = float(tolerance)
    except (TypeError, ValueError):
        raise InputError(f"mutual_tolerance={tolerance!r} is not a number.") from None
    if not np.isfinite(t) or t < 0.0 or t >= 1.0:
        raise InputError(
            f"mutual_tolerance={tolerance!r} is out of range; it must lie in [0, 1) "
            f"(0: the paper's mutual-best rule)."
        )
    return mutual, t


def region_channels(modalities: Sequence[str], region: str) -> tuple[list[int], list[str]]:
    """Channel indices used to refine ``region``, falling back when a modality is missing.

    WT uses FLAIR, TC uses T2 and T1Gd **[paper]**. The same channels as the region's
    superpixels (:func:`napari_ssseg.core.case.region_channel_indices`, one table for
    both): when some are missing the available ones among them are used, when all are
    missing all the case's channels, with a :class:`UserWarning`.

    Returns
    -------
    indices : list of int
    names : list of str
        The channels' names, lower case.
    """
    region = check_choice("region", region, ("wt", "tc"))
    idx = region_channel_indices(modalities, region, stacklevel=3)
    return idx, [str(modalities[i]).lower() for i in idx]


# --------------------------------------------------------------------------- similarity
@dataclass(frozen=True)
class SimilarityWeights:
    """Exponents of the similarity ``S = S_c ** content * S_b ** border`` **[ours]**.

    The default ``content = border = 0.5`` is ``S = sqrt(S_c * S_b)`` (algorithms.md §3).
    ``ward=True`` replaces the content distance by Ward's criterion.
    """

    content: float = 0.5
    border: float = 0.5
    ward: bool = False
    region_features: str = "centroid"
    clip: float = 3.0

    def __post_init__(self) -> None:
        check_choice("region_features", self.region_features, _REGION_FEATURES)
        if not np.isfinite(self.clip) or self.clip < 0:
            raise InputError(f"clip={self.clip!r} must be >= 0 (0 disables clipping).")
        for name in ("content", "border"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0:
                raise InputError(f"similarity weight {name}={v!r} must be a number >= 0.")
        if self.content == 0 and self.border == 0:
            raise InputError("similarity weights content and border cannot both be 0.")


#: Similarity options per region (tuned on phantoms, see docs/refinement.md).
DEFAULT_WEIGHTS: dict[str, SimilarityWeights] = {
    "wt": SimilarityWeights(),
    "tc": SimilarityWeights(content=0.75, border=0.25),
}


class SimilarityModel:
    """Normalised features and the content + border similarity **[ours]**.

    * Features are z-normalised over all superpixels: ``z = (f - median) / scale`` with
      ``scale`` the inter-quartile range (the standard deviation where the IQR is 0, 1 where
      both are 0 — a sparse histogram bin would otherwise blow up to 1e6), then each feature
      block (e.g. the 10 bins of a histogram) is weighted by ``1 / sqrt(block size)``.
    * Content: ``d = ||z(A) - z(B)||``, ``S_c = exp(-d**2 / (2 sigma_c**2))``, ``sigma_c`` the
      median ``d`` over adjacent superpixel pairs. Ward variant: ``d**2`` is replaced by
      ``|A||B| / (|A| + |B|) * d**2`` (voxel counts) divided by its median over adjacent pairs,
      with ``S_c = exp(-w / 2)``.
    * Border: ``b`` = mean border map on the shared faces, ``S_b = exp(-b / sigma_b)``,
      ``sigma_b`` the median ``b`` over adjacent pairs.
    * ``S = S_c ** w_c * S_b ** w_b`` (default ``sqrt(S_c * S_b)``), in [0, 1].

    The normalisation constants are computed once from the superpixels and then held fixed
    while a region grows.

    Parameters
    ----------
    stats : SuperpixelStats
    adjacency : Adjacency
    weights : SimilarityWeights, optional
    """

    def __init__(
        self,
        stats: SuperpixelStats,
        adjacency: Adjacency,
        weights: SimilarityWeights | None = None,
    ) -> None:
        self.weights = weights or SimilarityWeights()
        self.n_channels = stats.n_channels
        feats = stats.features()
        present = stats.counts > 0
        present[0] = False
        f = feats[present] if present.any() else feats[1:]
        med = np.median(f, axis=0)
        q75, q25 = np.percentile(f, [75, 25], axis=0)
        scale = q75 - q25
        std = f.std(axis=0)
        scale = np.where(scale > 1e-9, scale, np.where(std > 1e-9, std, 1.0))
        blocks = feature_blocks(stats.n_channels)
        bw = 1.0 / np.sqrt(np.bincount(blocks)[blocks].astype(np.float64))
        self.median = med
        self.scale = scale + 1e-6
        self.block_weight = bw
        self.clip = float(self.weights.clip)
        self.z = self._normalise(feats)
        self.z[~present] = 0.0
        self.counts = stats.counts.copy()
        a, b = adjacency.pairs[:, 0], adjacency.pairs[:, 1]
        d2 = ((self.z[a] - self.z[b]) ** 2).sum(axis=1)
        if self.weights.ward:
            w = self._ward(d2, self.counts[a], self.counts[b])
            med_w = float(np.median(w)) if w.size else 1.0
            self.content_norm = med_w if med_w > 0 else 1.0
        else:
            sig = float(np.median(np.sqrt(d2))) if d2.size else 1.0
            self.content_norm = sig * sig if sig > 0 else 1.0
        bmean = adjacency.mean_border
        sb = float(np.median(bmean)) if bmean.size else 1.0
        self.sigma_b = sb if sb > 0 else 1.0
        #: similarity of every adjacent superpixel pair, rounded (aligned with adjacency.pairs)
        self.edge_sim = self.similarity(d2, bmean, self.counts[a], self.counts[b])

    @staticmethod
    def _ward(d2, na, nb):
        return na * nb / np.maximum(na + nb, 1.0) * d2

    def region_z(self, sums: np.ndarray, zsum: np.ndarray | None = None) -> np.ndarray:
        """Normalised feature vector of a region.

        Parameters
        ----------
        sums : (K,) or (M, K) ndarray
            Summed statistics of the region (:class:`SuperpixelStats` rows).
        zsum : (F,) or (M, F) ndarray
            Sum of ``count * z`` over the member superpixels (needed for ``"centroid"``).

        With ``region_features="union"`` the features of the union of voxels are used
        (variance, skewness and GLCM then include the differences *between* members); with
        ``"centroid"`` (default) the voxel-weighted mean of the members' normalised feature
        vectors, the cluster centroid of Ward-style agglomerative clustering.
        """
        if self.weights.region_features == "centroid":
            n = np.asarray(sums)[..., 0]
            return np.asarray(zsum) / np.expand_dims(np.maximum(n, 1.0), -1)
        return self._normalise(features_from_sums(sums, self.n_channels))

    def _normalise(self, feats: np.ndarray) -> np.ndarray:
        z = (feats - self.median) / self.scale
        if self.clip > 0:
            z = np.clip(z, -self.clip, self.clip)
        return z * self.block_weight

    def similarity(self, d2, b, na=None, nb=None) -> np.ndarray:
        """Similarity from squared feature distance ``d2`` and mean border ``b`` (rounded).

        ``na``, ``nb`` (voxel counts) are needed by the Ward variant only.
        """
        d2 = np.asarray(d2, np.float64)
        if self.weights.ward:
            w = self._ward(d2, np.asarray(na, np.float64), np.asarray(nb, np.float64))
            log_c = -0.5 * w / self.content_norm
        else:
            log_c = -0.5 * d2 / self.content_norm
        log_b = -np.asarray(b, np.float64) / self.sigma_b
        return _q(np.exp(self.weights.content * log_c + self.weights.border * log_b))

    def region_similarity(
        self, zr: np.ndarray, nr: float, cand: np.ndarray, border: np.ndarray
    ) -> np.ndarray:
        """Similarity of a region (normalised features ``zr``, ``nr`` voxels) to superpixels."""
        d2 = ((self.z[cand] - zr) ** 2).sum(axis=1)
        return self.similarity(d2, border, nr, self.counts[cand])


# --------------------------------------------------------------------------- growth
class _BestOther:
    """Per superpixel, its neighbours sorted by similarity with a lazily advanced pointer.

    ``best(c, members)`` is the highest similarity of ``c`` to a neighbour that is not a
    member; membership only grows during a refinement, so pointers only move forward
    (amortised O(E) per refinement).
    """

    def __init__(self, adjacency: Adjacency, edge_sim: np.ndarray) -> None:
        n1 = adjacency.n_labels + 1
        src = np.repeat(np.arange(n1), np.diff(adjacency.indptr))
        sim = edge_sim[adjacency.edge]
        order = np.lexsort((adjacency.nbr, -sim, src))
        self.nbr = adjacency.nbr[order]
        self.sim = sim[order]
        self.start = adjacency.indptr[:-1].copy()
        self.end = adjacency.indptr[1:].copy()

    def reset(self) -> np.ndarray:
        return self.start.copy()

    def best(self, c: int, members: np.ndarray, ptr: np.ndarray) -> float:
        p = int(ptr[c])
        e = int(self.end[c])
        nbr = self.nbr
        while p < e and members[nbr[p]]:
            p += 1
        ptr[c] = p
        return float(self.sim[p]) if p < e else -np.inf

    def best_member(self, c: int, members: np.ndarray) -> float:
        """Highest similarity of ``c`` to a neighbour that is a member (O(degree))."""
        lo, hi = int(self.start[c]), int(self.end[c])
        hit = np.flatnonzero(members[self.nbr[lo:hi]])
        return float(self.sim[lo + hit[0]]) if hit.size else -np.inf


def grow_fast(
    stats: SuperpixelStats,
    adjacency: Adjacency,
    model: SimilarityModel,
    seed: np.ndarray,
    sim0: float,
    n_c: int,
    *,
    best_other: _BestOther | None = None,
    mutual: str = "region",
    tolerance: float = 0.0,
) -> tuple[np.ndarray, list[int]]:
    """Algorithm 1 with incremental statistics (the production implementation).

    Parameters
    ----------
    stats, adjacency, model
        From a :class:`RefinementSession` (or built by hand).
    seed : (N + 1,) ndarray of bool
        Fitted seed superpixels (index = label; index 0 ignored).
    sim0 : float
        Stopping similarity in [0, 1].
    n_c : int
        ``n_c + 1`` candidates are examined per merge (paper's loop).
    mutual : {"region", "member"}
        Mutual-best rule. ``"region"`` (the paper's): ``Sim(pr, c)`` must be at least the
        similarity of ``c`` to each of its non-member neighbours. ``"member"`` **[ours]**:
        the best of ``Sim(pr, c)`` and the similarities of ``c`` to its member neighbours
        must be.
    tolerance : float in [0, 1)
        **[ours]** The region's side only needs to reach ``(1 - tolerance)`` times the best
        non-member neighbour's similarity (0: the paper's rule).

    Returns
    -------
    members : (N + 1,) ndarray of bool
        Final region.
    merged : list of int
        Labels in merge order.
    """
    sim0 = check_sim0(sim0)
    n_c = check_nc(n_c)
    mutual, tolerance = _check_mutual(mutual, tolerance)
    factor = 1.0 - tolerance
    members = np.asarray(seed, bool).copy()
    members[0] = False
    if not members.any():
        return members, []
    bo = best_other or _BestOther(adjacency, model.edge_sim)
    ptr = bo.reset()
    rsum = stats.sums[members].sum(axis=0)
    wz = model.z * model.counts[:, None]
    zsum = wz[members].sum(axis=0)
    n1 = adjacency.n_labels + 1
    rcnt = np.zeros(n1)
    rg = np.zeros(n1)
    a, b = adjacency.pairs[:, 0], adjacency.pairs[:, 1]
    ma, mb = members[a], members[b]
    sel = ma & ~mb
    np.add.at(rcnt, b[sel], adjacency.face_count[sel])
    np.add.at(rg, b[sel], adjacency.face_gsum[sel])
    sel = mb & ~ma
    np.add.at(rcnt, a[sel], adjacency.face_count[sel])
    np.add.at(rg, a[sel], adjacency.face_gsum[sel])
    is_nbr = (rcnt > 0) & ~members
    is_nbr[0] = False
    merged_order: list[int] = []
    k_max = n_c + 1
    while True:
        cand = np.flatnonzero(is_nbr)
        if cand.size == 0:
            break
        zr = model.region_z(rsum, zsum)
        s = model.region_similarity(zr, rsum[0], cand, rg[cand] / rcnt[cand])
        if cand.size > 4 * k_max:
            # only the top k_max by (-s, label) matter; partition first, then sort exactly
            thr = np.partition(-s, k_max - 1)[k_max - 1]
            keep = -s <= thr
            cand, s = cand[keep], s[keep]
        order = np.lexsort((cand, -s))[:k_max]
        chosen = -1
        for i in order:
            si = float(s[i])
            if si <= sim0:
                break
            c = int(cand[i])
            other = bo.best(c, members, ptr)
            if si >= factor * other:
                chosen = c
                break
            if mutual == "member" and bo.best_member(c, members) >= factor * other:
                chosen = c
                break
        if chosen < 0:
            break
        c = chosen
        members[c] = True
        is_nbr[c] = False
        merged_order.append(c)
        rsum += stats.sums[c]
        zsum += wz[c]
        lo, hi = adjacency.indptr[c], adjacency.indptr[c + 1]
        nb = adjacency.nbr[lo:hi]
        ed = adjacency.edge[lo:hi]
        rcnt[nb] += adjacency.face_count[ed]
        rg[nb] += adjacency.face_gsum[ed]
        is_nbr[nb[~members[nb]]] = True
    return members, merged_order


def grow_literal(
    prepared: PreparedChannels,
    model: SimilarityModel,
    seed: np.ndarray,
    sim0: float,
    n_c: int,
    *,
    mutual: str = "region",
    tolerance: float = 0.0,
) -> tuple[np.ndarray, list[int]]:
    """Algorithm 1, recomputing everything from the voxels after each merge (test oracle).

    After every merge the region's statistics are recomputed from its voxels
    (:func:`~napari_ssseg.core.features.region_sums_from_voxels`; with the default
    ``region_features="centroid"`` the centroid is recomputed from the member list and the
    voxel statistics give its voxel count), its neighbours and border
    statistics from the voxel faces between the region and the rest, and each candidate's
    neighbours from the voxel faces of that candidate. Only the normalisation constants of
    ``model`` and the normalised features of single superpixels are shared with
    :func:`grow_fast`.

    Parameters and returns as :func:`grow_fast`.
    """
    sim0 = check_sim0(sim0)
    n_c = check_nc(n_c)
    mutual, tolerance = _check_mutual(mutual, tolerance)
    factor = 1.0 - tolerance
    labels = prepared.labels
    n1 = prepared.n_labels + 1
    members = np.asarray(seed, bool).copy()
    members[0] = False
    merged_order: list[int] = []
    if not members.any():
        return members, []
    region_label = n1  # a label no superpixel uses
    while True:
        region = members[labels]
        rsum = region_sums_from_voxels(prepared, region)
        zsum = (model.z[members] * model.counts[members][:, None]).sum(axis=0)
        zr = model.region_z(rsum, zsum)
        lab2 = np.where(region, region_label, labels)
        lo, hi, val = boundary_faces(lab2, prepared.edge)
        at = hi == region_label
        cnt = np.bincount(lo[at], minlength=n1)[:n1].astype(np.float64)
        gs = np.bincount(lo[at], weights=val[at], minlength=n1)[:n1]
        cand = np.flatnonzero(cnt > 0)
        if cand.size == 0:
            break
        s = model.region_similarity(zr, rsum[0], cand, gs[cand] / cnt[cand])
        order = np.lexsort((cand, -s))
        chosen = -1
        for count, i in enumerate(order):
            if count > n_c:
                break
            si = float(s[i])
            c = int(cand[i])
            # neighbours of c from its voxel faces, members excluded (pr is one node)
            cmask = labels == c
            l2 = np.where(cmask, region_label, lab2)
            l2[region] = region_label + 1
            flo, fhi, fval = boundary_faces(l2, prepared.edge)
            touch = (fhi == region_label) & (flo > 0)
            others = np.unique(flo[touch])
            best = -np.inf
            for o in others:
                d2 = float(((model.z[c] - model.z[o]) ** 2).sum())
                sel = touch & (flo == o)
                bval = float(fval[sel].mean())
                so = float(model.similarity(d2, bval, model.counts[c], model.counts[o]))
                best = max(best, so)
            side = si
            if mutual == "member":
                # the candidate's member neighbours, each as its own node, from voxel faces
                l3 = np.where(cmask, region_label, labels)
                mlo, mhi, mval = boundary_faces(l3, prepared.edge)
                mt = (mhi == region_label) & (mlo > 0)
                mt &= members[np.minimum(mlo, n1 - 1)] & (mlo < n1)
                for o in np.unique(mlo[mt]):
                    d2 = float(((model.z[c] - model.z[o]) ** 2).sum())
                    bval = float(mval[mt & (mlo == o)].mean())
                    so = float(model.similarity(d2, bval, model.counts[c], model.counts[o]))
                    side = max(side, so)
            if side >= factor * best and si > sim0:
                chosen = c
                break
        if chosen < 0:
            break
        members[chosen] = True
        merged_order.append(chosen)
    return members, merged_order


def _shrink(
    stats: SuperpixelStats,
    adjacency: Adjacency,
    model: SimilarityModel,
    members: np.ndarray,
    sim0: float,
) -> np.ndarray:
    """Drop boundary superpixels whose similarity to the rest of the region is < sim0 [ours].

    One vectorised pass: every member adjacent to a non-member (or to no member at all) is
    compared with the region minus itself (content) and with the faces it shares with the
    other members (border; ``b = 1``, the strongest edge, when it shares none). All that fall
    below ``sim0`` are removed at once; the region is never emptied.
    """
    m = members.copy()
    a, b = adjacency.pairs[:, 0], adjacency.pairs[:, 1]
    n1 = m.size
    out_nb = np.zeros(n1, bool)
    sel = m[a] & ~m[b]
    out_nb[a[sel]] = True
    sel = m[b] & ~m[a]
    out_nb[b[sel]] = True
    in_cnt = np.zeros(n1)
    in_g = np.zeros(n1)
    both = m[a] & m[b]
    np.add.at(in_cnt, a[both], adjacency.face_count[both])
    np.add.at(in_cnt, b[both], adjacency.face_count[both])
    np.add.at(in_g, a[both], adjacency.face_gsum[both])
    np.add.at(in_g, b[both], adjacency.face_gsum[both])
    cand = np.flatnonzero(m & (out_nb | (in_cnt == 0)))
    if cand.size == 0 or m.sum() <= 1:
        return m
    total = stats.sums[m].sum(axis=0)
    rest = total[None, :] - stats.sums[cand]
    wz = model.z * model.counts[:, None]
    zrest = wz[m].sum(axis=0)[None, :] - wz[cand]
    zr = model.region_z(rest, zrest)
    d2 = ((model.z[cand] - zr) ** 2).sum(axis=1)
    border = np.where(in_cnt[cand] > 0, in_g[cand] / np.maximum(in_cnt[cand], 1), 1.0)
    s = model.similarity(d2, border, model.counts[cand], rest[:, 0])
    drop = cand[s < sim0]
    if drop.size >= m.sum():
        return m
    m[drop] = False
    return m


# --------------------------------------------------------------------------- session
@dataclass
class FittedSeed:
    """A pseudo-label fitted to the superpixels of a :class:`RefinementSession`.

    Attributes
    ----------
    members : (N + 1,) ndarray of bool
        Superpixels covered by at least half by ``p0`` **[ours: majority]**.
    p0 : (z, y, x) ndarray of bool
        The pseudo-label on the session's crop, inside the superpixel domain.
    outside : int
        Voxels of ``p0`` outside the superpixel domain (dropped).
    messages : list of str
        What the fit did or found (notices included).
    notices : list of str
        The messages that warrant telling the user (a pseudo-label covering most of the
        brain, no superpixel half covered); issued as :class:`UserWarning` too unless
        :meth:`RefinementSession.fit` was called with ``warn=False``.
    """

    members: np.ndarray
    p0: np.ndarray
    outside: int = 0
    messages: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    coverage: np.ndarray | None = None
    cut_border: np.ndarray | None = None
    #: connected components of ``p0`` dropped by the component pre-step **[ours]**
    dropped_components: int = 0
    #: ``(z, y, x)`` bool on the crop: the voxels of ``p0`` they held (``None``: none dropped)
    dropped: np.ndarray | None = None
    #: per component of ``p0`` (largest first): voxels, content similarity to the largest
    #: (1.0 for the largest), to its surroundings, and whether it was kept
    components: list[dict] = field(default_factory=list)


@dataclass
class RefineResult:
    """Output of :meth:`RefinementSession.refine`.

    Attributes
    ----------
    mask : (Z, Y, X) ndarray of bool
        Refined region on the full grid, inside the brain.
    provenance : (Z, Y, X) ndarray of bool
        Voxels of ``mask`` that were not in ``p0``: they came from superpixels.
    members : (N + 1,) ndarray of bool
        Final superpixels.
    seed : (N + 1,) ndarray of bool
        Fitted seed superpixels.
    merged : list of int
        Labels added, in merge order.
    removed : list of int
        Seed superpixels dropped by the shrink pass.
    seconds : float
        Wall time of the refinement (growth + mask assembly).
    dropped_components : int
        Components of ``p0`` removed by the component pre-step **[ours]** (their voxels are
        not in ``mask``).
    notices : list of str
        The fit's notices (:attr:`FittedSeed.notices`).
    """

    mask: np.ndarray
    provenance: np.ndarray
    members: np.ndarray
    seed: np.ndarray
    merged: list[int]
    removed: list[int]
    seconds: float
    dropped_components: int = 0
    notices: list[str] = field(default_factory=list)


class RefinementSession:
    """Precomputed features, graph and similarities for interactive refinement.

    Build it once per (images, superpixels) — this is the slow part (seconds on a full
    case) — then call :meth:`refine` as often as the sliders move (milliseconds).

    Parameters
    ----------
    images : (C, Z, Y, X) ndarray
        Image channels.
    modalities : sequence of str or None
        Channel names (``"t1", "t1ce", "t2", "flair"``). With ``region`` given, only that
        region's channels are used (WT: FLAIR, TC: T2 + T1Gd; fallback with a warning).
        ``None`` uses all channels.
    superpixels : (Z, Y, X) ndarray of int
        Superpixel labels ``1..N``, 0 outside the brain.
    brain : (Z, Y, X) ndarray of bool, optional
        Brain mask (default ``superpixels > 0``). Results never leave it.
    spacing : 3 floats
        Voxel spacing ``(z, y, x)`` in mm.
    region : {"wt", "tc"}, optional
        Selects the channels (see above) and the tuned defaults (:data:`DEFAULT_WEIGHTS`,
        :data:`DEFAULT_OUTPUT`).
    weights : SimilarityWeights, optional
        Default: the region's tuned weights.
    progress : callable, optional
        ``progress(fraction, message)`` between set-up stages.
    should_stop : callable, optional
        Checked between set-up stages; raises
        :class:`~napari_ssseg.core.progress.Cancelled`.
    cache : Cache, True or None
        Cache the superpixel statistics and graph (memory + disk,
        :class:`~napari_ssseg.core.cache.Cache`, namespace ``"features"`` for ``True``),
        keyed by the channels, superpixels, brain mask, spacing and
        :data:`~napari_ssseg.core.features.FEATURES_VERSION`. A hit skips the feature
        extraction (``session.cache_hit``). Default: no caching.

    Examples
    --------
    >>> session = RefinementSession(images, modalities, sp_wt, brain, spacing, region="wt")
    >>> seed = session.fit(labels > 0)          # once per pseudo-label
    >>> res = session.refine(seed, sim0=0.3, n_c=30)
    >>> res.mask, res.provenance                # full-size bool arrays
    """

    def __init__(
        self,
        images: np.ndarray,
        modalities: Sequence[str] | None,
        superpixels: np.ndarray,
        brain: np.ndarray | None = None,
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        *,
        region: str | None = None,
        weights: SimilarityWeights | None = None,
        progress: ProgressCallback | None = None,
        should_stop: StopCallback | None = None,
        cache=None,
    ) -> None:
        t0 = time.perf_counter()
        check_cancel(should_stop, "refinement set-up")
        report(progress, 0.0, "preparing channels")
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4:
            raise InputError(f"images must be (C, Z, Y, X); got shape {images.shape}.")
        if modalities is not None and len(modalities) != images.shape[0]:
            raise InputError(
                f"{len(modalities)} modality names for {images.shape[0]} image channels."
            )
        self.region = None if region is None else check_choice("region", region, ("wt", "tc"))
        if self.region is not None and modalities is not None:
            idx, names = region_channels(modalities, self.region)
        else:
            idx = list(range(images.shape[0]))
            names = list(modalities) if modalities is not None else [f"c{i}" for i in idx]
        self.channel_names = names
        self.shape = tuple(images.shape[1:])
        superpixels = np.asarray(superpixels)
        if superpixels.shape != self.shape:
            raise GeometryError(
                f"superpixels have shape {superpixels.shape}, the images {self.shape}: they "
                f"must be computed on the case's grid."
            )
        if brain is not None:
            brain = np.asarray(brain, bool)
            if brain.shape != self.shape:
                raise GeometryError(f"brain mask has shape {brain.shape}, the images {self.shape}.")
            superpixels = np.where(brain, superpixels, 0)
        self.brain = brain
        self.spacing = tuple(float(s) for s in spacing)
        self._source = (images, idx, superpixels, brain)
        self._prepared: PreparedChannels | None = None
        self.cache_hit = False
        key = None
        if cache:
            from napari_ssseg.core.cache import default_cache

            if cache is True:
                cache = default_cache("features")
            key = {
                "kind": "refinement_features",
                "version": FEATURES_VERSION,
                "images": np.ascontiguousarray(images[idx]),
                "superpixels": superpixels,
                "brain": brain,
                "spacing": list(self.spacing),
                "channels": [str(n) for n in names],
            }
        computed: dict = {}

        def compute() -> dict[str, np.ndarray]:
            prep = prepare_channels(images[idx], superpixels, brain, self.spacing)
            computed["t1"] = time.perf_counter()
            check_cancel(should_stop, "refinement set-up")
            report(progress, 0.4, "superpixel statistics")
            st = compute_stats(prep)
            computed["t2"] = time.perf_counter()
            check_cancel(should_stop, "refinement set-up")
            report(progress, 0.8, "superpixel graph")
            adj = build_adjacency(prep.labels, prep.edge)
            self._prepared = prep
            return {
                "sums": st.sums,
                "n_channels": np.asarray(st.n_channels),
                "pairs": adj.pairs,
                "face_count": adj.face_count,
                "face_gsum": adj.face_gsum,
                "crop": np.asarray([[c.start, c.stop] for c in prep.crop], np.int64),
                "edge": prep.edge,
            }

        data = cache.get_or_compute(key, compute) if key is not None else compute()
        self.cache_hit = not computed
        t1 = computed.get("t1", time.perf_counter())
        t2 = computed.get("t2", t1)
        cz, cy, cx = (slice(int(a), int(b)) for a, b in data["crop"])
        self._crop: tuple[slice, slice, slice] = (cz, cy, cx)
        self.stats = SuperpixelStats(
            sums=np.array(data["sums"], np.float64), n_channels=int(data["n_channels"])
        )
        n_labels = self.stats.n_labels
        self._labels: np.ndarray
        if self._prepared is not None:
            self._labels = self._prepared.labels
        else:
            self._labels = np.ascontiguousarray(superpixels[self._crop], dtype=np.int32)
        self._domain = self._labels > 0
        self._edge = data["edge"]
        self.adjacency = adjacency_from_pairs(
            n_labels, data["pairs"], data["face_count"], data["face_gsum"]
        )
        t3 = time.perf_counter()
        if weights is None:
            weights = DEFAULT_WEIGHTS.get(self.region or "", SimilarityWeights())
        self.weights = weights
        self.model = SimilarityModel(self.stats, self.adjacency, self.weights)
        self._best_other = _BestOther(self.adjacency, self.model.edge_sim)
        t4 = time.perf_counter()
        report(progress, 1.0, f"{self.n_superpixels} superpixels ready")
        #: wall-clock seconds of the set-up stages
        self.timings = {
            "prepare": t1 - t0,
            "stats": t2 - t1,
            "adjacency": t3 - t2,
            "similarity": t4 - t3,
            "total": t4 - t0,
        }

    # -- properties
    @property
    def n_superpixels(self) -> int:
        """Number of superpixels (largest label)."""
        return self.stats.n_labels

    @property
    def crop(self) -> tuple[slice, slice, slice]:
        """Bounding box of the superpixel domain in the full grid."""
        return self._crop

    @property
    def labels(self) -> np.ndarray:
        """Superpixel labels on the crop (``(z, y, x)`` int32, 0 outside the brain)."""
        return self._labels

    @property
    def prepared(self) -> PreparedChannels:
        """Per-voxel channel data (recomputed on demand after a cache hit; literal only)."""
        if self._prepared is None:
            images, idx, superpixels, brain = self._source
            self._prepared = prepare_channels(images[idx], superpixels, brain, self.spacing)
        return self._prepared

    def set_weights(self, weights: SimilarityWeights) -> None:
        """Change the similarity weights (recomputes only the similarity model, fast)."""
        self.weights = weights
        self.model = SimilarityModel(self.stats, self.adjacency, weights)
        self._best_other = _BestOther(self.adjacency, self.model.edge_sim)

    # -- fitting
    def fit(
        self,
        p0: np.ndarray,
        *,
        components: bool | None = None,
        component_sim: float | None = None,
        component_keep: float | None = None,
        warn: bool = True,
    ) -> FittedSeed:
        """Fit a pseudo-label to the superpixels (majority rule).

        Component pre-step **[ours]** (``components=True``, the region's default
        :data:`DEFAULT_COMPONENTS`): ``p0`` is split into connected components (26-connected);
        every component other than the largest that has fewer than ``component_keep`` times
        the largest one's voxels is compared with the largest by content: the
        overlap-weighted centroid of the normalised features of the superpixels it touches
        (each superpixel weighted by its voxels inside the component) against the same
        centroid of the largest component, ``S_c = exp(-d**2 / (2 sigma_c**2))`` as in
        :class:`SimilarityModel`, and with the tissue around it (the same centroid over the
        voxels within 6 mm outside ``p0``). A component is dropped from ``p0`` before the
        majority fit when (1) ``S_c < component_sim`` and (2) it looks more like its
        surroundings than like the largest component — a spurious blob in tissue that does
        not look like the tumour (Algorithm 1 alone can never remove it, and would grow
        from it). A second lesion that looks like the first (high ``S_c``, unlike its
        surroundings), or any component with at least ``component_keep`` of the largest's
        voxels, is kept. ``components=False`` is the paper's Algorithm 1 (``p0`` as given).
        See :meth:`component_similarity`.

        Parameters
        ----------
        p0 : (Z, Y, X) array-like of bool
            Initial pseudo-label of one region on the full grid.
        components : bool, optional
            Run the component pre-step. Default: the region's :data:`DEFAULT_COMPONENTS`
            (``True`` for sessions without a region).
        component_sim : float in [0, 1], optional
            Content similarity below which a small component is dropped
            (default :data:`DEFAULT_COMPONENT_SIM`).
        component_keep : float in [0, 1], optional
            Components with at least this fraction of the largest component's voxels are
            always kept (default :data:`DEFAULT_COMPONENT_KEEP`).
        warn : bool
            Issue the fit's notices (:attr:`FittedSeed.notices`) as :class:`UserWarning`;
            ``False`` only returns them (e.g. for a GUI that shows them itself, without
            touching the process-wide warning filters).

        Returns
        -------
        FittedSeed

        Raises
        ------
        GeometryError
            ``p0`` is not on the session's grid.
        InputError
            ``p0`` is empty inside the brain (nothing to grow from), or a component option
            is out of range.
        """
        p0 = np.asarray(p0)
        if p0.shape != self.shape:
            raise GeometryError(
                f"the pseudo-label has shape {p0.shape} but the case has shape {self.shape}; "
                f"it must be on the same grid (resample it to the case first)."
            )
        if components is None:
            components = DEFAULT_COMPONENTS.get(self.region or "", True)
        component_sim = _check_unit(
            "component_sim", DEFAULT_COMPONENT_SIM if component_sim is None else component_sim
        )
        component_keep = _check_unit(
            "component_keep",
            DEFAULT_COMPONENT_KEEP if component_keep is None else component_keep,
        )
        p0 = p0.astype(bool, copy=False)
        total = int(np.count_nonzero(p0))
        pc = p0[self.crop] & self._domain
        inside = int(np.count_nonzero(pc))
        if inside == 0:
            raise InputError(
                "the pseudo-label is empty inside the brain: nothing to grow from. Give a "
                "pseudo-label with at least a few voxels of the region to refine."
            )
        msgs: list[str] = []
        notices: list[str] = []
        n_dom = int(np.count_nonzero(self._domain))
        if inside >= 0.5 * n_dom:
            msg = (
                f"the pseudo-label covers {100 * inside / n_dom:.0f}% of the brain; that looks "
                f"like a brain mask rather than a tumour region, so refinement can add little "
                f"(growth only adds superpixels)."
            )
            msgs.append(msg)
            notices.append(msg)
        dropped = None
        comp_info: list[dict] = []
        if components:
            pc, dropped, comp_info = self._drop_components(pc, component_sim, component_keep)
            if dropped is not None:
                n_drop = sum(1 for c in comp_info if not c["kept"])
                msgs.append(
                    f"dropped {n_drop} small component(s) of the pseudo-label "
                    f"({int(dropped.sum())} voxels) that do not look like its largest "
                    f"component (content similarity < {component_sim:g})."
                )
        n1 = self.n_superpixels + 1
        overlap = np.bincount(self._labels[pc], minlength=n1)[:n1]
        counts = self.stats.counts
        frac = overlap / np.maximum(counts, 1)
        members = frac >= _FIT_FRACTION
        members[0] = False
        if not members.any():
            best = int(np.argmax(frac))
            members[best] = True
            msg = (
                f"no superpixel is covered by at least half by the pseudo-label; seeding from "
                f"the best-covered one (label {best}, {100 * frac[best]:.0f}% covered)."
            )
            msgs.append(msg)
            notices.append(msg)
        for msg in notices if warn else ():
            warnings.warn(msg, UserWarning, stacklevel=2)
        return FittedSeed(
            members=members,
            p0=pc,
            outside=total - inside,
            messages=msgs,
            notices=notices,
            coverage=frac,
            cut_border=self._cut_border(pc),
            dropped_components=sum(1 for c in comp_info if not c["kept"]),
            dropped=dropped,
            components=comp_info,
        )

    def component_similarity(
        self, pc: np.ndarray, ring_mm: float = 6.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Connected components of a crop mask and their content similarity to the largest.

        Parameters
        ----------
        pc : (z, y, x) ndarray of bool
            A mask on the session's crop (:attr:`crop`).

        Returns
        -------
        comp : (z, y, x) ndarray of int32
            Component labels ``1..K``, relabelled so that 1 is the largest (ties: first).
        info : (K, 3) ndarray of float
            Per component ``k`` (row ``k - 1``): voxel count; content similarity ``S_c`` of
            its overlap-weighted feature centroid to the largest component's (1 for the
            largest); content similarity of the same centroid to the tissue around it (the
            overlap-weighted centroid of the voxels within ``ring_mm`` of the component and
            outside ``pc``; 0 for the largest).
        """
        from scipy import ndimage

        comp, k = ndimage.label(pc, structure=np.ones((3, 3, 3), bool))
        if k == 0:
            return comp.astype(np.int32), np.zeros((0, 2))
        sizes = np.bincount(comp.ravel(), minlength=k + 1)[1:]
        order = np.lexsort((np.arange(k), -sizes))  # largest first
        relabel = np.zeros(k + 1, np.int32)
        relabel[order + 1] = np.arange(1, k + 1, dtype=np.int32)
        comp = relabel[comp]
        sizes = sizes[order]
        n1 = self.n_superpixels + 1
        lab = self._labels
        sel = comp > 0
        # overlap[k, s]: voxels of component k in superpixel s
        flat = comp[sel].astype(np.int64) * n1 + lab[sel]
        overlap = np.bincount(flat, minlength=(k + 1) * n1).reshape(k + 1, n1)[1:]
        overlap[:, 0] = 0
        w = overlap.astype(np.float64)
        cent = (w @ self.model.z) / np.maximum(w.sum(axis=1, keepdims=True), 1.0)
        d2 = ((cent - cent[0]) ** 2).sum(axis=1)
        norm = self.model.content_norm
        if self.weights.ward:  # Ward's content norm is on another scale: use the plain median
            a, b = self.adjacency.pairs[:, 0], self.adjacency.pairs[:, 1]
            pd = ((self.model.z[a] - self.model.z[b]) ** 2).sum(axis=1)
            med = float(np.median(np.sqrt(pd))) if pd.size else 1.0
            norm = med * med if med > 0 else 1.0
        s_c = np.exp(-0.5 * d2 / norm)
        s_c[0] = 1.0
        # similarity of each component to the tissue around it (a ring of ring_mm outside p0)
        s_r = np.zeros(k)
        sp = np.asarray(self.spacing)
        margin = np.ceil(ring_mm / sp).astype(int) + 1
        objs = ndimage.find_objects(comp)
        for j in range(1, k):
            sl = objs[j]
            if sl is None:
                continue
            box = tuple(
                slice(max(c.start - m, 0), min(c.stop + m, n))
                for c, m, n in zip(sl, margin, comp.shape)
            )
            mine = comp[box] == j + 1
            d = ndimage.distance_transform_edt(~mine, sampling=self.spacing)
            ring = (d <= ring_mm) & ~(comp[box] > 0) & (lab[box] > 0)
            rl = lab[box][ring]
            if rl.size == 0:
                continue
            wr = np.bincount(rl, minlength=n1)[:n1].astype(np.float64)
            rc = (wr @ self.model.z) / wr.sum()
            s_r[j] = np.exp(-0.5 * float(((cent[j] - rc) ** 2).sum()) / norm)
        return comp, np.stack([sizes.astype(np.float64), _q(s_c), _q(s_r)], axis=1)

    def _drop_components(self, pc: np.ndarray, sim: float, keep: float):
        comp, info = self.component_similarity(pc)

        def rows(kept):
            return [
                {
                    "voxels": int(r[0]),
                    "similarity": float(r[1]),
                    "surround_similarity": float(r[2]),
                    "kept": bool(k),
                }
                for r, k in zip(info, kept)
            ]

        if info.shape[0] <= 1:
            return pc, None, rows([True] * info.shape[0])
        largest = info[0, 0]
        # dropped: small, unlike the largest component, and more like its surroundings
        drop = (info[:, 0] < keep * largest) & (info[:, 1] < sim) & (info[:, 2] > info[:, 1])
        kept = ~drop
        kept[0] = True
        comp_info = rows(kept)
        if kept.all():
            return pc, None, comp_info
        keep_lut = np.concatenate([[False], kept])
        new = keep_lut[comp]
        return new, pc & ~new, comp_info

    # -- refinement
    def refine(
        self,
        p0: np.ndarray | FittedSeed,
        sim0: float = DEFAULT_SIM0,
        n_c: int = DEFAULT_NC,
        *,
        shrink: bool = False,
        output: str | None = None,
        literal: bool = False,
        fill: float | None = None,
        fill_edge: float | None = None,
        components: bool | None = None,
        component_sim: float | None = None,
        component_keep: float | None = None,
        mutual: str | None = None,
        mutual_tolerance: float | None = None,
        warn: bool = True,
    ) -> RefineResult:
        """Refine a pseudo-label with Algorithm 1.

        Parameters
        ----------
        p0 : (Z, Y, X) ndarray of bool or FittedSeed
            Pseudo-label (full grid) or the result of :meth:`fit` (faster when only the
            parameters change).
        sim0 : float in [0, 1]
            Stopping similarity.
        n_c : int >= 1
            Candidates examined per merge, minus one.
        shrink : bool
            Run the shrink pass after growing **[ours]**, off by default.
        output : {"union", "added", "superpixels"} or None
            How the refined mask is assembled **[ours]**. ``"union"``: ``p0`` plus every
            voxel of the final superpixels (the fitted seed superpixels are filled, added ones
            included). ``"added"``: ``p0`` plus only the superpixels added by growing.
            ``"superpixels"``: the final superpixels alone (the paper's ``pr``; also drops the
            voxels of ``p0`` outside them). Seed superpixels removed by ``shrink`` are removed
            in every mode. ``None``: the region's tuned default (:data:`DEFAULT_OUTPUT`).
        literal : bool
            Use :func:`grow_literal` (slow; for testing).
        fill : float in [0.5, 1], optional
            With ``output="union"``, seed superpixels covered by at least ``fill`` of their
            voxels are filled completely; the others keep ``p0``'s voxels. 0.5 fills every
            seed superpixel, 1.0 behaves like ``"added"``. Default :data:`DEFAULT_FILL`.
        fill_edge : float >= 0, optional
            With ``output="union"``, a seed superpixel is filled only if the mean border map
            on the faces where ``p0`` cuts through it is at most ``fill_edge * sigma_b``: a
            pseudo-label boundary that follows an image edge is kept, one that runs through
            homogeneous tissue is snapped to the superpixel. ``inf`` fills regardless, 0
            only fills superpixels ``p0`` does not cut. Default :data:`DEFAULT_FILL_EDGE`.
        components, component_sim, component_keep
            Component pre-step **[ours]** applied when ``p0`` is a mask (see :meth:`fit`;
            ignored when ``p0`` is already a :class:`FittedSeed`). ``components=False``
            gives the paper's Algorithm 1.
        mutual : {"region", "member"}, optional
            Mutual-best rule of the growth (see :func:`grow_fast`). Default: the region's
            :data:`DEFAULT_MUTUAL` (``"region"``, the paper's).
        mutual_tolerance : float in [0, 1), optional
            Tolerance of the mutual-best test **[ours]** (default
            :data:`DEFAULT_MUTUAL_TOLERANCE`; 0 is the paper's rule).
        warn : bool
            When ``p0`` is a mask: issue the fit's notices as warnings (see :meth:`fit`); they
            are in ``RefineResult.notices`` either way.

        Returns
        -------
        RefineResult
        """
        sim0 = check_sim0(sim0)
        n_c = check_nc(n_c)
        if output is None:
            output = DEFAULT_OUTPUT.get(self.region or "", "union")
        output = check_choice("output", output, _OUTPUTS)
        fill_edge = DEFAULT_FILL_EDGE if fill_edge is None else float(fill_edge)
        if np.isnan(fill_edge) or fill_edge < 0:
            raise InputError(
                f"fill_edge={fill_edge!r} is out of range; it must be >= 0 (inf: fill "
                f"regardless of edges; default {DEFAULT_FILL_EDGE})."
            )
        fill = DEFAULT_FILL if fill is None else float(fill)
        if not np.isfinite(fill) or not _FIT_FRACTION <= fill <= 1.0:
            raise InputError(
                f"fill={fill!r} is out of range; it must lie in [{_FIT_FRACTION}, 1] "
                f"(default {DEFAULT_FILL})."
            )
        if isinstance(p0, FittedSeed):
            seed = p0
        else:
            seed = self.fit(
                p0,
                components=components,
                component_sim=component_sim,
                component_keep=component_keep,
                warn=warn,
            )
        mutual, mutual_tolerance = self._mutual_options(mutual, mutual_tolerance)
        t0 = time.perf_counter()
        if literal:
            members, merged = grow_literal(
                self.prepared,
                self.model,
                seed.members,
                sim0,
                n_c,
                mutual=mutual,
                tolerance=mutual_tolerance,
            )
        else:
            members, merged = self.grow(
                seed, sim0, n_c, mutual=mutual, mutual_tolerance=mutual_tolerance
            )
        removed: list[int] = []
        if shrink:
            shrunk = _shrink(self.stats, self.adjacency, self.model, members, sim0)
            removed = [int(i) for i in np.flatnonzero(members & ~shrunk & seed.members)]
            members = shrunk
        mask, prov = self._assemble(seed, members, output, fill, fill_edge)
        return RefineResult(
            mask=mask,
            provenance=prov,
            members=members,
            seed=seed.members.copy(),
            merged=[int(m) for m in merged if members[m]],
            removed=removed,
            seconds=time.perf_counter() - t0,
            dropped_components=seed.dropped_components,
            notices=list(seed.notices),
        )

    def grow(
        self,
        seed: FittedSeed,
        sim0: float = DEFAULT_SIM0,
        n_c: int = DEFAULT_NC,
        *,
        mutual: str | None = None,
        mutual_tolerance: float | None = None,
    ) -> tuple[np.ndarray, list[int]]:
        """Only the growth (no mask assembly): ``(members (N + 1,) bool, merged labels)``.

        A few milliseconds; the final superpixel set identifies the result for a given seed,
        so a GUI can cache masks by ``members.tobytes()``. ``mutual`` and
        ``mutual_tolerance`` as in :meth:`refine`.
        """
        mutual, mutual_tolerance = self._mutual_options(mutual, mutual_tolerance)
        return grow_fast(
            self.stats,
            self.adjacency,
            self.model,
            seed.members,
            sim0,
            n_c,
            best_other=self._best_other,
            mutual=mutual,
            tolerance=mutual_tolerance,
        )

    def _mutual_options(self, mutual, tolerance) -> tuple[str, float]:
        if mutual is None:
            mutual = DEFAULT_MUTUAL.get(self.region or "", "region")
        if tolerance is None:
            tolerance = DEFAULT_MUTUAL_TOLERANCE.get(self.region or "", 0.0)
        return _check_mutual(mutual, tolerance)

    def superpixel_mask(self, members: np.ndarray) -> np.ndarray:
        """Full-grid bool mask of the superpixels ``members`` ((N + 1,) bool)."""
        out = np.zeros(self.shape, bool)
        out[self.crop] = np.asarray(members, bool)[self._labels]
        return out

    def _cut_border(self, pc: np.ndarray) -> np.ndarray:
        """Mean border map on the faces where ``p0`` cuts through a superpixel, per label.

        0 for superpixels that ``p0`` does not cut.
        """
        lab = self._labels
        n1 = self.n_superpixels + 1
        cnt = np.zeros(n1)
        gs = np.zeros(n1)
        for ax in range(3):
            n = lab.shape[ax]
            if n < 2:
                continue
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[ax] = slice(0, n - 1)
            hi[ax] = slice(1, n)
            a, b = tuple(lo), tuple(hi)
            la = lab[a]
            m = (pc[a] != pc[b]) & (la == lab[b]) & (la > 0)
            lv = la[m]
            val = 0.5 * (self._edge[a][m].astype(np.float64) + self._edge[b][m])
            cnt += np.bincount(lv, minlength=n1)[:n1]
            gs += np.bincount(lv, weights=val, minlength=n1)[:n1]
        return np.where(cnt > 0, gs / np.maximum(cnt, 1.0), 0.0)

    def _assemble(
        self,
        seed: FittedSeed,
        members: np.ndarray,
        output: str,
        fill: float,
        fill_edge: float = np.inf,
    ):
        lab = self._labels
        if output == "superpixels":
            crop_mask = members[lab]
        elif output == "union":
            filled = members.copy()
            if seed.coverage is not None and fill > _FIT_FRACTION:
                filled &= ~(seed.members & (seed.coverage < fill))
            if seed.cut_border is not None and np.isfinite(fill_edge):
                strong = seed.cut_border > fill_edge * self.model.sigma_b
                filled &= ~(seed.members & strong)
            crop_mask = (seed.p0 & ~(seed.members & ~members)[lab]) | filled[lab]
        else:  # "added"
            added = members & ~seed.members
            removed = seed.members & ~members
            crop_mask = (seed.p0 & ~removed[lab]) | added[lab]
        mask = np.zeros(self.shape, bool)
        mask[self.crop] = crop_mask
        prov = np.zeros(self.shape, bool)
        prov[self.crop] = crop_mask & ~seed.p0
        return mask, prov


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


def _per_region(value, region: str, name: str):
    if isinstance(value, Mapping):
        low = {str(k).lower(): v for k, v in value.items()}
        if region not in low:
            raise InputError(f"{name} has no entry for region {region!r}: {dict(value)!r}.")
        return low[region]
    return value


def refine_labels(
    images: np.ndarray,
    modalities: Sequence[str],
    labels: np.ndarray,
    superpixels_wt: np.ndarray | None,
    superpixels_tc: np.ndarray | None,
    brain: np.ndarray | None = None,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    sim0: float | Mapping[str, float] = DEFAULT_SIM0,
    n_c: int = DEFAULT_NC,
    weights: SimilarityWeights | Mapping[str, SimilarityWeights] | None = None,
    regions: Sequence[str] = ("wt", "tc"),
    shrink: bool = False,
    output: str | None = None,
    fill: float | None = None,
    fill_edge: float | None = None,
    sessions: Mapping[str, RefinementSession] | None = None,
    components: bool | None = None,
    component_sim: float | None = None,
    component_keep: float | None = None,
    mutual: str | Mapping[str, str] | None = None,
    mutual_tolerance: float | Mapping[str, float] | None = None,
    warn: bool = True,
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
    sim0, n_c, weights
        Parameters; ``sim0`` and ``weights`` may be ``{"wt": ..., "tc": ...}``.
    regions : sequence of {"wt", "tc"}
    shrink : bool
    output : {"union", "added", "superpixels"} or None
        ``None``: each region's tuned default (:data:`DEFAULT_OUTPUT`).
    fill, fill_edge : float, optional
        Fill rules of ``output="union"`` (see :meth:`RefinementSession.refine`).
    sessions : mapping, optional
        Prebuilt :class:`RefinementSession` per region (reused, e.g. by the GUI).
    components, component_sim, component_keep
        Component pre-step **[ours]** (see :meth:`RefinementSession.fit`); ``None``: the
        region's default. ``components=False`` gives the paper's Algorithm 1.
    mutual, mutual_tolerance
        Mutual-best rule of the growth **[ours]** (see :meth:`RefinementSession.refine`);
        ``None``: the region's defaults; may be ``{"wt": ..., "tc": ...}``.
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
    check_nc(n_c)
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
        s0 = check_sim0(_per_region(sim0, region, "sim0"))
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
            w = _per_region(weights, region, "weights") if weights is not None else None
            sess = RefinementSession(
                images, modalities, sp_region, brain, spacing, region=region, weights=w
            )
            sessions[region] = sess
        res = sess.refine(
            p0,
            s0,
            n_c,
            shrink=shrink,
            output=output,
            fill=fill,
            fill_edge=fill_edge,
            components=components,
            component_sim=component_sim,
            component_keep=component_keep,
            mutual=_per_region(mutual, region, "mutual"),
            mutual_tolerance=_per_region(mutual_tolerance, region, "mutual_tolerance"),
            warn=warn,
        )
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
    tc &= wt
    out = np.zeros(labels.shape, np.uint8)
    out[wt] = 2
    keep = tc & tc0
    out[keep] = labels[keep]
    new_tc = tc & ~tc0
    if new_tc.any():
        if np.any(tc0):
            # nearest input-TC voxel's class, searched in the bounding box of both
            box = _bbox_of(tc0 | new_tc)
            sub = ~tc0[box]
            _, ind = ndimage.distance_transform_edt(
                sub, sampling=tuple(float(s) for s in spacing), return_indices=True
            )
            src = labels[box][tuple(ind)]
            out[box][new_tc[box]] = src[new_tc[box]]
        else:
            out[new_tc] = 1
    out[~brain] = 0
    prov &= out > 0
    info["sessions"] = sessions
    return RefinedLabels(labels=out, provenance=prov, info=info)


def _bbox_of(mask: np.ndarray) -> tuple[slice, ...]:
    idx = np.nonzero(mask)
    return tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)


def refine_case(
    case,
    pseudo: np.ndarray,
    *,
    preprocessed=None,
    brain: np.ndarray | None = None,
    sim0: float | Mapping[str, float] = DEFAULT_SIM0,
    n_c: int = DEFAULT_NC,
    n_segments: int = DEFAULT_N_SEGMENTS,
    compactness: float = defaults.COMPACTNESS,
    sigma: float = defaults.SIGMA,
    regions: Sequence[str] = ("wt", "tc"),
    shrink: bool = False,
    output: str | None = None,
    fill: float | None = None,
    fill_edge: float | None = None,
    cache=None,
    progress: ProgressCallback | None = None,
    should_stop: StopCallback | None = None,
    components: bool | None = None,
    component_sim: float | None = None,
    mutual: str | Mapping[str, str] | None = None,
    mutual_tolerance: float | Mapping[str, float] | None = None,
    weights: SimilarityWeights | Mapping[str, SimilarityWeights] | None = None,
    component_keep: float | None = None,
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
    sim0, n_c, regions, shrink, output, fill, fill_edge
        As for :func:`refine_labels`.
    n_segments, compactness, sigma
        SLIC parameters (paper defaults).
    cache : Cache, True or None
        Passed to the superpixel and feature computations.
    progress, should_stop
        Progress / cancellation callbacks (checked between stages).
    components, component_sim, mutual, mutual_tolerance
        The project's extensions **[ours]** (see :func:`refine_labels`); ``None``: defaults.
        ``components=False, mutual="region", mutual_tolerance=0`` is the paper's Algorithm 1.
    weights, component_keep
        As for :func:`refine_labels` (similarity weights; the component-keep threshold).
        Every option of :func:`refine_labels` is passed on: none is dropped.

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
        sim0=sim0,
        n_c=n_c,
        regions=regions,
        shrink=shrink,
        output=output,
        fill=fill,
        fill_edge=fill_edge,
        sessions=sessions,
        components=components,
        component_sim=component_sim,
        mutual=mutual,
        mutual_tolerance=mutual_tolerance,
        weights=weights,
        component_keep=component_keep,
    )
    stage("refine")
    report(progress, 1.0, "refined")
    info = {
        "regions": out.info["regions"],
        "superpixels": {r: sess.n_superpixels for r, sess in sessions.items()},
        "feature_cache_hit": {r: bool(sess.cache_hit) for r, sess in sessions.items()},
        "sim0": dict(sim0) if isinstance(sim0, Mapping) else float(sim0),
        "n_c": int(n_c),
        "n_segments": int(n_segments),
        "voxels_from_superpixels": int(out.provenance.sum()),
        "notes": list(out.info["notes"]),
        "timings": timings,
        "seconds": time.perf_counter() - t0,
    }
    return RefinedLabels(labels=out.labels, provenance=out.provenance, info=info)
