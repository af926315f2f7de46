"""Similarity of superpixels and the two implementations of Algorithm 1's growth.

:class:`SimilarityModel` (the project's content + border similarity **[ours]**),
:func:`grow_fast` (priority structure, O(features + degree) per merge), :func:`grow_literal`
(recompute-everything test oracle) and the shrink pass. See :mod:`napari_ssseg.core.refine`
for the algorithm and the tie rules, which both implementations share.
"""

from __future__ import annotations

import numpy as np

from napari_ssseg.core.adjacency import (
    Adjacency,
    boundary_faces,
)
from napari_ssseg.core.features import (
    PreparedChannels,
    SuperpixelStats,
    feature_blocks,
    features_from_sums,
    region_sums_from_voxels,
)
from napari_ssseg.core.refine_params import (
    SimilarityWeights,
    check_mutual,
    check_nc,
    check_sim0,
    round_similarity,
)


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
        return round_similarity(np.exp(self.weights.content * log_c + self.weights.border * log_b))

    def region_similarity(
        self, zr: np.ndarray, nr: float, cand: np.ndarray, border: np.ndarray
    ) -> np.ndarray:
        """Similarity of a region (normalised features ``zr``, ``nr`` voxels) to superpixels."""
        d2 = ((self.z[cand] - zr) ** 2).sum(axis=1)
        return self.similarity(d2, border, nr, self.counts[cand])


# --------------------------------------------------------------------------- growth
class BestOther:
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


def region_frontier(adjacency: Adjacency, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contact of a region with every superpixel outside it.

    Parameters
    ----------
    adjacency : Adjacency
        The superpixel graph (``pairs``, ``face_count``, ``face_gsum``, ``n_labels``).
    members : (n_labels + 1,) ndarray of bool
        The region's superpixels.

    Returns
    -------
    count, gradient_sum : (n_labels + 1,) ndarray of float
        For each superpixel outside the region: the number of voxel faces it shares with the
        region and the sum of the gradient over them (0 inside the region and for
        non-neighbours).
    """
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
    return rcnt, rg


def grow_fast(
    stats: SuperpixelStats,
    adjacency: Adjacency,
    model: SimilarityModel,
    seed: np.ndarray,
    sim0: float,
    n_c: int,
    *,
    best_other: BestOther | None = None,
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
    mutual, tolerance = check_mutual(mutual, tolerance)
    factor = 1.0 - tolerance
    members = np.asarray(seed, bool).copy()
    members[0] = False
    if not members.any():
        return members, []
    bo = best_other or BestOther(adjacency, model.edge_sim)
    ptr = bo.reset()
    rsum = stats.sums[members].sum(axis=0)
    wz = model.z * model.counts[:, None]
    zsum = wz[members].sum(axis=0)
    rcnt, rg = region_frontier(adjacency, members)
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
    mutual, tolerance = check_mutual(mutual, tolerance)
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


def shrink_region(
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
