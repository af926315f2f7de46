"""The interactive refinement session: features and graph once, then ``refine`` in milliseconds.

:class:`RefinementSession` (set-up, the fit of a pseudo-label to the superpixels with the
component pre-step **[ours]**, growth, mask assembly) and its results :class:`FittedSeed` and
:class:`RefineResult`. See :mod:`napari_ssseg.core.refine` for the algorithm.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from napari_ssseg.core.adjacency import (
    adjacency_from_pairs,
    build_adjacency,
)
from napari_ssseg.core.features import (
    FEATURES_VERSION,
    PreparedChannels,
    SuperpixelStats,
    compute_stats,
    prepare_channels,
)
from napari_ssseg.core.growth import (
    BestOther,
    SimilarityModel,
    grow_fast,
    grow_literal,
    shrink_region,
)
from napari_ssseg.core.preprocess import bounding_box_or_none
from napari_ssseg.core.progress import ProgressCallback, StopCallback, check_cancel, report
from napari_ssseg.core.refine_params import (
    DEFAULT_COMPONENT_KEEP,
    DEFAULT_COMPONENT_SIM,
    DEFAULT_COMPONENTS,
    DEFAULT_FILL,
    DEFAULT_FILL_EDGE,
    DEFAULT_MUTUAL,
    DEFAULT_MUTUAL_TOLERANCE,
    DEFAULT_NC,
    DEFAULT_OUTPUT,
    DEFAULT_SIM0,
    DEFAULT_WEIGHTS,
    FIT_FRACTION,
    OUTPUTS,
    SimilarityWeights,
    check_mutual,
    check_nc,
    check_sim0,
    check_unit,
    region_channels,
    round_similarity,
)
from napari_ssseg.errors import GeometryError, InputError, check_choice


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
        self._best_other = BestOther(self.adjacency, self.model.edge_sim)
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
        self._best_other = BestOther(self.adjacency, self.model.edge_sim)

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
        component_sim = check_unit(
            "component_sim", DEFAULT_COMPONENT_SIM if component_sim is None else component_sim
        )
        component_keep = check_unit(
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
        members = frac >= FIT_FRACTION
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

        # Everything happens in the box around pc (plus the ring's margin), not on the whole
        # crop: the components and their rings lie there, so the result is the same, and the
        # cost follows the pseudo-label's size, not the brain's (docs/benchmarks.md).
        sp = np.asarray(self.spacing)
        margin = np.ceil(ring_mm / sp).astype(int) + 1
        zs = np.nonzero(pc.any(axis=(1, 2)))[0]
        if zs.size == 0:
            return np.zeros(pc.shape, np.int32), np.zeros((0, 3))
        ys = np.nonzero(pc.any(axis=(0, 2)))[0]
        xs = np.nonzero(pc.any(axis=(0, 1)))[0]
        outer = tuple(
            slice(max(int(a[0]) - m, 0), min(int(a[-1]) + 1 + m, n))
            for a, m, n in zip((zs, ys, xs), margin, pc.shape)
        )
        comp_box, info = self._component_similarity_in(pc[outer], self._labels[outer], ring_mm)
        comp = np.zeros(pc.shape, np.int32)
        comp[outer] = comp_box
        return comp, info

    def _component_similarity_in(
        self, pc: np.ndarray, lab: np.ndarray, ring_mm: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`component_similarity` on a box of the crop (``lab``: its superpixels)."""
        from scipy import ndimage

        comp, k = ndimage.label(pc, structure=np.ones((3, 3, 3), bool))
        if k == 0:
            return comp.astype(np.int32), np.zeros((0, 3))
        sizes = np.bincount(comp.ravel(), minlength=k + 1)[1:]
        order = np.lexsort((np.arange(k), -sizes))  # largest first
        relabel = np.zeros(k + 1, np.int32)
        relabel[order + 1] = np.arange(1, k + 1, dtype=np.int32)
        comp = relabel[comp]
        sizes = sizes[order]
        n1 = self.n_superpixels + 1
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
        margin = np.ceil(ring_mm / np.asarray(self.spacing)).astype(int) + 1
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
        return comp, np.stack(
            [sizes.astype(np.float64), round_similarity(s_c), round_similarity(s_r)], axis=1
        )

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
        output = check_choice("output", output, OUTPUTS)
        fill_edge = DEFAULT_FILL_EDGE if fill_edge is None else float(fill_edge)
        if np.isnan(fill_edge) or fill_edge < 0:
            raise InputError(
                f"fill_edge={fill_edge!r} is out of range; it must be >= 0 (inf: fill "
                f"regardless of edges; default {DEFAULT_FILL_EDGE})."
            )
        fill = DEFAULT_FILL if fill is None else float(fill)
        if not np.isfinite(fill) or not FIT_FRACTION <= fill <= 1.0:
            raise InputError(
                f"fill={fill!r} is out of range; it must lie in [{FIT_FRACTION}, 1] "
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
            shrunk = shrink_region(self.stats, self.adjacency, self.model, members, sim0)
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
        return check_mutual(mutual, tolerance)

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

    def _superpixel_boxes(self) -> list[tuple[slice, ...] | None]:
        """Bounding box (on the crop) of every superpixel label ``1..N`` (computed once)."""
        boxes = getattr(self, "_boxes", None)
        if boxes is None:
            from scipy import ndimage

            boxes = ndimage.find_objects(self._labels, max_label=self.n_superpixels)
            self._boxes = boxes
        return boxes

    def _output_box(self, p0: np.ndarray, lut: np.ndarray) -> tuple[slice, ...] | None:
        """Box of the crop holding ``p0`` and every superpixel set in ``lut`` (or None)."""
        lo = np.full(3, np.iinfo(np.int64).max)
        hi = np.full(3, -1)
        box = bounding_box_or_none(p0)
        if box is not None:
            lo = np.minimum(lo, [b.start for b in box])
            hi = np.maximum(hi, [b.stop for b in box])
        boxes = self._superpixel_boxes()
        for label in np.flatnonzero(lut[1:]) + 1:
            b = boxes[label - 1] if label - 1 < len(boxes) else None
            if b is not None:
                lo = np.minimum(lo, [x.start for x in b])
                hi = np.maximum(hi, [x.stop for x in b])
        if np.any(hi < 0):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))

    def _assemble(
        self,
        seed: FittedSeed,
        members: np.ndarray,
        output: str,
        fill: float,
        fill_edge: float = np.inf,
    ):
        """The refined mask and its provenance on the full grid.

        Computed only in the box holding ``p0`` and the superpixels that can add to it (the
        rest is False), so its cost follows the tumour, not the brain.
        """
        if output == "superpixels":
            keep_p0, add = np.zeros_like(members), members
            use_p0 = False
        elif output == "union":
            filled = members.copy()
            if seed.coverage is not None and fill > FIT_FRACTION:
                filled &= ~(seed.members & (seed.coverage < fill))
            if seed.cut_border is not None and np.isfinite(fill_edge):
                strong = seed.cut_border > fill_edge * self.model.sigma_b
                filled &= ~(seed.members & strong)
            keep_p0, add, use_p0 = ~(seed.members & ~members), filled, True
        else:  # "added"
            keep_p0, add, use_p0 = ~(seed.members & ~members), members & ~seed.members, True
        mask = np.zeros(self.shape, bool)
        prov = np.zeros(self.shape, bool)
        box = self._output_box(seed.p0 if use_p0 else np.zeros((0, 0, 0), bool), add)
        if box is None:
            return mask, prov
        lab = self._labels[box]
        p0 = seed.p0[box]
        # one gather of a 2-bit code per voxel: bit 0 keeps p0 there, bit 1 adds the voxel
        code = (keep_p0.astype(np.uint8) | (add.astype(np.uint8) << 1))[lab]
        crop_mask = (code & 2).astype(bool)
        if use_p0:
            crop_mask |= p0 & (code & 1).astype(bool)
        full = tuple(
            slice(c.start + b.start, c.start + b.stop) for c, b in zip(self.crop, box, strict=True)
        )
        mask[full] = crop_mask
        prov[full] = crop_mask & ~p0
        return mask, prov
