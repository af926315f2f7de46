"""SP3-style scribble propagation through superpixels (weakly semi-supervised labels).

The strokes themselves (codes, validation, file encoding, simulated strokes) are in
:mod:`napari_ssseg.core.strokes`; its names are re-exported here.

An annotator draws a few thin strokes (NCR, ED, ET inside the tumour; "background" on
healthy tissue); this module turns them into a dense 3D label, a per-voxel weight map and
an ignore mask. Only the abstract of the SP3 paper is public, so the rules are the
project's own **[ours]** (``docs/scribbles.md``, design ``algorithms.md`` section 9):

* **Scribble codes** (internal): 0 not annotated, 1 NCR, 2 ED, 3 ET, :data:`BACKGROUND`
  (4) a stroke on healthy tissue, :data:`TUMOUR` (5) a *region-mode* stroke "inside the
  tumour, class unknown". Files use the case's label values for the tumour classes, a
  background label (default 255) for healthy strokes and a tumour label (default 254) for
  region-mode tumour strokes (see ``ssseg propagate``).
* **Region-mode strokes** (:data:`TUMOUR`) are seeds of the whole tumour (WT) only: they
  are neither seeds nor barriers of TC and ET. Inside the propagated WT the classes come
  from class strokes if there are any (TC / ET grown from NCR / ET strokes, the rest ED);
  with a model's probabilities a tumour-stroke superpixel takes the most probable tumour
  class (NCR, ED or ET); without either, the whole tumour is ED.
* **Expansion**: a superpixel whose scribbled voxels all carry one class takes that class;
  a superpixel with conflicting strokes keeps only its scribbled voxels.
* **Cold start** (no model), per nested region: WT on the FLAIR superpixels from all
  tumour strokes, TC on the T2 + T1Gd superpixels from the NCR and ET strokes, ET on the
  same superpixels from the ET strokes. Superpixels with strokes of the region are seeds;
  superpixels carrying background strokes, strokes of a class outside the region or
  conflicting strokes are *barriers*, as are superpixels outside the *stroke box* (the
  strokes' bounding box, extended by half the tumour strokes' largest extent). Two growth
  methods: ``"nearest"`` (default, :func:`classify_connected`): a superpixel is positive
  when its normalised features (the refinement session's similarity model) are nearer to
  a seed's than to a barrier's, kept if connected to a seed; ``"grow"``: Algorithm 1
  (:func:`grow_with_barriers`, the refinement engine's
  :func:`~napari_ssseg.core.refine.grow_fast`). ``RefinementSession.grow`` has no barrier
  option, so the barriers are implemented here by removing the barrier superpixels' edges
  from the candidate graph while keeping them in the mutual-best test. From thin strokes
  Algorithm 1 under-grows (``docs/benchmarks/scribbles.md``), hence the default. TC is
  clipped to WT and ET to TC; scribbled voxels always keep their class.
* **Model-assisted** (class probabilities given): per superpixel (WT superpixels) the
  confidence ``c_s`` (mean of the voxels' max probability), the class ``k_s`` (majority of
  the voxels' argmax) and its purity (share of the voxels voting for it); dynamic per-class
  thresholds ``tau_k <- lam tau_k + (1 - lam) mean{c_s : k_s = k}`` (FreeMatch-like EMA,
  ``lam = 0.99`` across updates, ``tau_k`` starts at ``1 / K``); a superpixel is accepted
  when ``c_s >= tau_k`` and purity ``>= 0.8``; its uncertainty ``u_s`` is the mean
  normalised entropy and its weight ``w_s = exp(-u_s / 0.5)``. Expanded scribbles override
  the model (weight 1); voxels of unaccepted superpixels are ignored (weight 0).

:class:`ScribblePropagator` keeps the superpixels, refinement sessions and thresholds, so an
update after new strokes costs the growth plus the label assembly (tens of milliseconds on a
full-size case); :func:`propagate_scribbles` is the one-shot API.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_ssseg import defaults
from napari_ssseg.core.strokes import (
    BACKGROUND,
    CODES,
    DEFAULT_BACKGROUND_LABEL,
    DEFAULT_TUMOUR_LABEL,
    TUMOUR,
    check_scribbles,
    decode_scribbles,
    encode_scribbles,
    simulate_scribbles,
)
from napari_ssseg.errors import GeometryError, InputError

__all__ = [
    "BACKGROUND",
    "DEFAULT_BACKGROUND_LABEL",
    "DEFAULT_TUMOUR_LABEL",
    "TUMOUR",
    "encode_scribbles",
    "DEFAULT_LAMBDA",
    "DEFAULT_N_SEGMENTS",
    "DEFAULT_PURITY",
    "DEFAULT_SIM0",
    "DEFAULT_UNCERTAINTY_SCALE",
    "PropagationResult",
    "ScribblePropagator",
    "check_scribbles",
    "classes_from_region_probabilities",
    "decode_scribbles",
    "expand_scribbles",
    "grow_with_barriers",
    "propagate_scribbles",
    "simulate_scribbles",
]
#: superpixel count of the whole brain **[ours]**: finer than refinement's 350 because the
#: strokes are thin (a superpixel is the unit a stroke expands to)
DEFAULT_N_SEGMENTS: int = defaults.SCRIBBLE_N_SEGMENTS
#: stopping similarity of the cold-start growth (refinement's default)
DEFAULT_SIM0: float = defaults.SIM0
#: candidates per merge minus one (refinement's default)
DEFAULT_NC: int = defaults.NC
#: EMA factor of the dynamic thresholds (design section 9)
DEFAULT_LAMBDA: float = 0.99
#: minimum purity of an accepted superpixel (design section 9)
DEFAULT_PURITY: float = 0.8
#: temperature of the weight ``w_s = exp(-u_s / scale)`` (design section 9)
DEFAULT_UNCERTAINTY_SCALE: float = 0.5

# nested regions: (name, session, classes inside, region the result is clipped to)
# TUMOUR strokes are WT seeds and neither seeds nor barriers of TC / ET
_REGIONS = (
    ("WT", "wt", (1, 2, 3, TUMOUR), (BACKGROUND,)),
    ("TC", "tc", (1, 3), (2, BACKGROUND)),
    ("ET", "tc", (3,), (1, 2, BACKGROUND)),
)


# --------------------------------------------------------------------------- expansion
def expand_scribbles(
    labels: np.ndarray, scribbles: np.ndarray, n_labels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Class of every superpixel from its strokes (the expansion rule).

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of int
        Superpixels ``1..n_labels`` (0 outside).
    scribbles : (Z, Y, X) ndarray of uint8
        Internal scribble codes on the same grid.
    n_labels : int

    Returns
    -------
    cls : (n_labels + 1,) ndarray of int8
        Class of each superpixel whose strokes all agree (1, 2, 3, :data:`BACKGROUND` or
        :data:`TUMOUR`), 0 without strokes, -1 with conflicting strokes (only its
        scribbled voxels count). A superpixel with :data:`TUMOUR` strokes and strokes of
        exactly one tumour class takes that class (no conflict: the class refines the
        region).
    present : (n_labels + 1, 6) ndarray of bool
        Which codes occur in each superpixel.
    """
    idx = np.flatnonzero(scribbles)
    lab = labels.ravel()[idx].astype(np.int64)
    code = scribbles.ravel()[idx].astype(np.int64)
    keep = lab > 0
    present = np.zeros((n_labels + 1, len(CODES)), bool)
    present[lab[keep], code[keep]] = True
    # a tumour (region) stroke next to exactly one tumour class stroke is that class
    refined = present[:, TUMOUR] & (present[:, 1:4].sum(axis=1) == 1)
    eff = present.copy()
    eff[refined, TUMOUR] = False
    n = eff[:, 1:].sum(axis=1)
    cls = np.zeros(n_labels + 1, np.int8)
    single = n == 1
    cls[single] = np.argmax(eff[single, 1:], axis=1) + 1
    cls[n > 1] = -1
    return cls, present


# --------------------------------------------------------------------------- growth
def grow_with_barriers(
    session,
    seed: np.ndarray,
    barrier: np.ndarray,
    sim0: float,
    n_c: int,
    *,
    tolerance: float = 0.0,
) -> np.ndarray:
    """Algorithm 1 from ``seed`` that never merges a ``barrier`` superpixel.

    Uses the session's statistics and similarity model (:func:`~napari_ssseg.core.refine.
    grow_fast`). The barrier superpixels' edges are removed from the candidate graph, but
    the mutual-best test still sees them: a candidate more similar to a barrier neighbour
    than to the region is not merged.

    Parameters
    ----------
    session : RefinementSession
    seed, barrier : (N + 1,) ndarray of bool
    sim0 : float
    n_c : int
    tolerance : float in [0, 1)
        Mutual-best tolerance (0: the paper's strict rule), see
        :func:`~napari_ssseg.core.refine.grow_fast`.

    Returns
    -------
    (N + 1,) ndarray of bool
        Grown superpixels (never a barrier one).
    """
    from napari_ssseg.core.adjacency import adjacency_from_pairs
    from napari_ssseg.core.growth import BestOther, grow_fast

    seed = np.asarray(seed, bool) & ~np.asarray(barrier, bool)
    if not seed[1:].any():
        return np.zeros_like(seed)
    adj = session.adjacency
    a, b = adj.pairs[:, 0], adj.pairs[:, 1]
    keep = ~barrier[a] & ~barrier[b]
    sub = adjacency_from_pairs(
        adj.n_labels, adj.pairs[keep], adj.face_count[keep], adj.face_gsum[keep]
    )
    model = copy.copy(session.model)
    model.edge_sim = session.model.edge_sim[keep]
    bo = getattr(session, "_scribble_best_other", None)
    if bo is None:
        bo = BestOther(session.adjacency, session.model.edge_sim)
        session._scribble_best_other = bo
    members, _ = grow_fast(
        session.stats, sub, model, seed, sim0, n_c, best_other=bo, tolerance=tolerance
    )
    return members & ~barrier


def classify_connected(
    session, seed: np.ndarray, barrier: np.ndarray, *, margin: float = 1.0
) -> np.ndarray:
    """Nearest-stroke classification of the superpixels, kept where connected to a seed.

    Every superpixel is compared (normalised features of the session's similarity model,
    Euclidean) with the nearest ``seed`` and the nearest ``barrier`` superpixel; it is
    positive when ``d_seed < margin * d_barrier``. The result is the positive superpixels
    connected (superpixel adjacency) to a seed. **[ours]**

    Parameters
    ----------
    session : RefinementSession
    seed, barrier : (N + 1,) ndarray of bool
    margin : float > 0
        > 1 favours the tumour, < 1 the background.

    Returns
    -------
    (N + 1,) ndarray of bool
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    seed = np.asarray(seed, bool) & ~np.asarray(barrier, bool)
    n1 = seed.shape[0]
    out = np.zeros(n1, bool)
    if not seed[1:].any():
        return out
    z = session.model.z
    present = session.model.counts > 0
    present[0] = False
    pos = np.flatnonzero(seed)
    neg = np.flatnonzero(barrier)
    d_pos = _nearest(z, pos)
    d_neg = _nearest(z, neg) if neg.size else np.full(n1, np.inf)
    cand = present & (d_pos < margin * d_neg) & ~barrier
    cand |= seed
    adj = session.adjacency
    a, b = adj.pairs[:, 0], adj.pairs[:, 1]
    e = cand[a] & cand[b]
    g = coo_matrix((np.ones(int(e.sum())), (a[e], b[e])), shape=(n1, n1))
    _, comp = connected_components(g, directed=False)
    good = np.unique(comp[pos])
    out = cand & np.isin(comp, good)
    return out


def _centroids(session) -> np.ndarray:
    """(N + 1, 3) voxel centroids of the session's superpixels on the full grid."""
    lab = session.labels
    n1 = session.n_superpixels + 1
    cnt = np.maximum(np.bincount(lab.ravel(), minlength=n1), 1)
    out = np.zeros((n1, 3))
    for ax in range(3):
        shape = [1, 1, 1]
        shape[ax] = lab.shape[ax]
        coord = np.broadcast_to(
            np.arange(lab.shape[ax]).reshape(shape) + session.crop[ax].start, lab.shape
        )
        out[:, ax] = np.bincount(lab.ravel(), weights=coord.ravel(), minlength=n1) / cnt
    return out


def _nearest(z: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Distance of every row of ``z`` to its nearest row among ``ref`` (matrix product)."""
    zr = z[ref]
    d2 = (z * z).sum(axis=1)[:, None] + (zr * zr).sum(axis=1)[None] - 2.0 * (z @ zr.T)
    return np.sqrt(np.maximum(d2.min(axis=1), 0.0))


# --------------------------------------------------------------------------- result
@dataclass
class PropagationResult:
    """Output of :meth:`ScribblePropagator.update`.

    Attributes
    ----------
    labels : (Z, Y, X) ndarray of uint8
        Dense internal labels (0 bg, 1 NCR, 2 ED, 3 ET).
    weights : (Z, Y, X) ndarray of float32
        Per-voxel weight of the pseudo-label loss (0 where ignored).
    ignore : (Z, Y, X) ndarray of bool
        Voxels to leave out of a loss (unknown).
    annotated_fraction : float
        Scribbled voxels / tumour voxels of ``labels`` (the effort measure; ``info`` also
        holds the share of the brain).
    info : dict
        JSON-friendly: mode, per-region seed/grown superpixel counts, thresholds, seconds.
    """

    labels: np.ndarray
    weights: np.ndarray
    ignore: np.ndarray
    annotated_fraction: float
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- propagator
class ScribblePropagator:
    """Stateful scribble propagation for one case (superpixels, sessions, thresholds).

    Build it once per case (superpixels + features: seconds), then call :meth:`update`
    after every new stroke (milliseconds to a few hundred on a full-size case).

    Parameters
    ----------
    images : (C, Z, Y, X) ndarray
        Canonical image channels.
    modalities : sequence of str
        Channel names (WT superpixels from FLAIR, TC from T2 + T1Gd, with fallbacks).
    brain : (Z, Y, X) ndarray of bool, optional
        Brain mask (default :func:`~napari_ssseg.core.preprocess.brain_mask`).
    spacing : 3 floats
        Voxel spacing (z, y, x) in mm.
    superpixels : dict, optional
        Precomputed ``{"wt": sp, "tc": sp}`` on the case's grid (skips SLIC).
    n_segments : int
        SLIC superpixel count when computing them (default :data:`DEFAULT_N_SEGMENTS`).
    sim0, n_c : float, int
        Cold-start growth parameters (Algorithm 1).
    lam, purity, uncertainty_scale : float
        Model-assisted parameters (design section 9).
    cache : Cache, True or None
        Passed to the superpixel and feature computations.
    """

    def __init__(
        self,
        images: np.ndarray,
        modalities: Sequence[str],
        brain: np.ndarray | None = None,
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        *,
        superpixels: dict[str, np.ndarray] | None = None,
        n_segments: int = DEFAULT_N_SEGMENTS,
        sim0: float = DEFAULT_SIM0,
        n_c: int = DEFAULT_NC,
        tolerance: float = 0.0,
        method: str = "nearest",
        margin: float = 1.0,
        box: bool = True,
        box_extend: float = 0.5,
        lam: float = DEFAULT_LAMBDA,
        purity: float = DEFAULT_PURITY,
        uncertainty_scale: float = DEFAULT_UNCERTAINTY_SCALE,
        cache=None,
    ) -> None:
        from napari_ssseg.core.refine import RefinementSession, check_nc, check_sim0
        from napari_ssseg.core.superpixels import region_superpixels

        t0 = time.perf_counter()
        images = np.asarray(images)
        if images.ndim != 4:
            raise InputError(f"images must be (C, Z, Y, X); got shape {images.shape}.")
        self.shape = tuple(int(s) for s in images.shape[1:])
        self.sim0 = check_sim0(sim0)
        self.n_c = check_nc(n_c)
        if not np.isfinite(tolerance) or not 0 <= tolerance < 1:
            raise InputError(f"tolerance={tolerance!r} must lie in [0, 1).")
        self.tolerance = float(tolerance)
        from napari_ssseg.errors import check_choice

        self.method = check_choice("method", method, ("grow", "nearest"))
        if not np.isfinite(margin) or margin <= 0:
            raise InputError(f"margin={margin!r} must be > 0.")
        self.margin = float(margin)
        self.box = bool(box)
        if not np.isfinite(box_extend) or box_extend < 0:
            raise InputError(f"box_extend={box_extend!r} must be >= 0.")
        self.box_extend = float(box_extend)
        for name, v, lo, hi in (
            ("lam", lam, 0.0, 1.0),
            ("purity", purity, 0.0, 1.0),
        ):
            if not np.isfinite(v) or not lo <= v <= hi:
                raise InputError(f"{name}={v!r} is out of range; it must lie in [{lo}, {hi}].")
        if not np.isfinite(uncertainty_scale) or uncertainty_scale <= 0:
            raise InputError(f"uncertainty_scale={uncertainty_scale!r} must be > 0.")
        self.lam, self.purity = float(lam), float(purity)
        self.uncertainty_scale = float(uncertainty_scale)
        if brain is None:
            from napari_ssseg.core.preprocess import brain_mask

            brain = brain_mask(images)
        brain = np.asarray(brain, bool)
        if brain.shape != self.shape:
            raise GeometryError(f"brain mask has shape {brain.shape}, the images {self.shape}.")
        self.brain = brain
        self.spacing = tuple(float(s) for s in spacing)
        self.sessions: dict = {}
        for r in ("wt", "tc"):
            if superpixels is not None and r in superpixels:
                sp = np.asarray(superpixels[r])
                if sp.shape != self.shape:
                    raise GeometryError(
                        f"{r.upper()} superpixels have shape {sp.shape}, the images {self.shape}."
                    )
            else:
                sp = region_superpixels(
                    images,
                    modalities,
                    r.upper(),
                    mask=brain,
                    spacing=self.spacing,
                    n_segments=int(n_segments),
                    cache=cache,
                )
            self.sessions[r] = RefinementSession(
                images, modalities, sp, brain, self.spacing, region=r, cache=cache
            )
        self._centroids = {r: _centroids(s) for r, s in self.sessions.items()}
        #: dynamic per-class thresholds (None until the first model-assisted update)
        self.tau: np.ndarray | None = None
        self.n_updates = 0
        self.setup_seconds = time.perf_counter() - t0

    # -- spatial limit
    def _stroke_box(self, coords: np.ndarray, codes: np.ndarray) -> list[tuple[float, float]]:
        """(lo, hi) voxel bounds per axis of the region propagation may reach.

        The bounding box of all strokes (tumour and background), extended along each axis
        by ``box_extend`` times the largest half-extent (mm) of the tumour strokes' box —
        strokes on a few slices of one view still reach the slices in between and beyond.
        """
        idx = coords
        tum = coords[codes != BACKGROUND]
        sp = np.asarray(self.spacing)
        half = float(((tum.max(axis=0) - tum.min(axis=0) + 1) * sp).max()) / 2
        ext = self.box_extend * half / sp
        lo = idx.min(axis=0) - ext
        hi = idx.max(axis=0) + ext
        return list(zip(lo.tolist(), hi.tolist(), strict=True))

    def _in_box(self, r: str, box) -> np.ndarray:
        cen = self._centroids[r]
        ok = np.ones(cen.shape[0], bool)
        for ax, (lo, hi) in enumerate(box):
            ok &= (cen[:, ax] >= lo) & (cen[:, ax] <= hi)
        return ok

    # -- cold start
    def _cold(self, scr: np.ndarray, info: dict) -> tuple[np.ndarray, np.ndarray]:
        masks: dict[str, np.ndarray] = {}
        conflict_voxels = np.zeros(self.shape, bool)
        idx = np.flatnonzero(scr)
        codes = scr.ravel()[idx]
        coords = np.stack(np.unravel_index(idx, self.shape), axis=1)
        box = self._stroke_box(coords, codes)
        info["box"] = [[int(lo), int(hi)] for lo, hi in box]
        for name, r, inside, outside in _REGIONS:
            ses = self.sessions[r]
            crop = ses.crop
            lab = ses.labels
            start = np.array([c.start for c in crop])
            stop = np.array([c.stop for c in crop])
            ok = np.all((coords >= start) & (coords < stop), axis=1)
            local = coords[ok] - start
            sp_of = lab[local[:, 0], local[:, 1], local[:, 2]].astype(np.int64)
            present = np.zeros((ses.n_superpixels + 1, len(CODES)), bool)
            present[sp_of, codes[ok].astype(np.int64)] = True
            present[0] = False
            pos = np.any(present[:, list(inside)], axis=1)
            neg = np.any(present[:, list(outside)], axis=1)
            seed = pos & ~neg
            barrier = neg.copy()
            if self.box:
                barrier |= ~self._in_box(r, box)
            seed[0] = barrier[0] = False
            if self.method == "grow":
                members = grow_with_barriers(
                    ses, seed, barrier, self.sim0, self.n_c, tolerance=self.tolerance
                )
            else:
                members = classify_connected(ses, seed, barrier, margin=self.margin)
            m = np.zeros(self.shape, bool)
            m[crop] = members[lab]
            m.flat[idx[np.isin(codes, inside)]] = True
            m.flat[idx[np.isin(codes, outside)]] = False
            if (pos & neg).any():
                conflict = np.zeros(self.shape, bool)
                conflict[crop] = (pos & neg)[lab]
                conflict_voxels |= conflict
            masks[name] = m
            info["regions"][name] = {
                "seed_superpixels": int(seed.sum()),
                "barrier_superpixels": int(barrier.sum()),
                "conflict_superpixels": int((pos & neg).sum()),
                "superpixels": int(members.sum()),
                "voxels": int(m.sum()),
            }
        from napari_ssseg.core.case import regions_to_labels

        labels = regions_to_labels(masks["WT"], masks["TC"], masks["ET"])
        # strokes keep their class (nesting holds: the classes are exclusive); tumour
        # (region) strokes keep the class the regions gave them (ED when outside TC)
        cls_stroke = codes != TUMOUR
        labels.flat[idx[cls_stroke]] = np.where(
            codes[cls_stroke] == BACKGROUND, 0, codes[cls_stroke]
        )
        conflict_voxels.flat[idx] = False
        return labels, conflict_voxels

    # -- model-assisted
    def _model(self, scr: np.ndarray, prob: np.ndarray, info: dict):
        ses = self.sessions["wt"]
        crop = ses.crop
        lab = ses.labels
        n1 = ses.n_superpixels + 1
        k = prob.shape[0]
        p = prob[(slice(None),) + crop]
        p = np.clip(np.nan_to_num(p.astype(np.float32)), 0, None)
        p = p / np.maximum(p.sum(axis=0, keepdims=True), 1e-12)
        arg = np.argmax(p, axis=0)
        conf = p.max(axis=0)
        ent = -(p * np.log(np.maximum(p, 1e-12))).sum(axis=0) / np.log(k)
        lf = lab.ravel()
        cnt = np.bincount(lf, minlength=n1).astype(np.float64)
        nz = np.maximum(cnt, 1.0)
        c_s = np.bincount(lf, weights=conf.ravel(), minlength=n1) / nz
        u_s = np.bincount(lf, weights=ent.ravel(), minlength=n1) / nz
        votes = np.bincount(lf * k + arg.ravel(), minlength=n1 * k).reshape(n1, k)
        k_s = np.argmax(votes, axis=1)
        pur = votes[np.arange(n1), k_s] / nz
        valid = cnt > 0
        valid[0] = False
        if self.tau is None:
            self.tau = np.full(k, 1.0 / k)
        elif self.tau.shape[0] != k:
            raise InputError(f"probabilities changed from {self.tau.shape[0]} to {k} classes.")
        for c in range(k):
            sel = valid & (k_s == c)
            if sel.any():
                self.tau[c] = self.lam * self.tau[c] + (1 - self.lam) * float(c_s[sel].mean())
        accept = valid & (c_s >= self.tau[k_s]) & (pur >= self.purity)
        w_s = np.exp(-u_s / self.uncertainty_scale)
        cls, _ = expand_scribbles(lab, scr[crop], n1 - 1)
        expanded = cls > 0
        # tumour (region) strokes: the most probable tumour class of the superpixel
        tum_sp = (
            np.stack(
                [np.bincount(lf, weights=p[c].ravel(), minlength=n1) for c in (1, 2, 3)], axis=1
            )
            if k == 4
            else np.zeros((n1, 3))
        )
        tum_class = np.argmax(tum_sp, axis=1) + 1
        cls_c = np.where(cls == BACKGROUND, 0, np.where(cls == TUMOUR, tum_class, cls))
        sp_class = np.where(expanded, cls_c, k_s)
        sp_weight = np.where(expanded, 1.0, np.where(accept, w_s, 0.0))
        labels = np.zeros(self.shape, np.uint8)
        weights = np.ones(self.shape, np.float32)
        ignore = np.zeros(self.shape, bool)
        dom = lab > 0
        lab_c = np.where(dom, sp_class[lab], 0).astype(np.uint8)
        # voxels of unaccepted superpixels: the voxel argmax, ignored
        unacc = dom & ~(expanded | accept)[lab]
        lab_c[unacc] = arg[unacc]
        labels[crop] = lab_c
        weights[crop] = np.where(dom, sp_weight[lab], 1.0)
        ignore[crop] = unacc
        # strokes keep their class, full weight
        tum = (scr > 0) & (scr < BACKGROUND)
        labels[tum] = scr[tum]
        region = scr == TUMOUR
        if region.any():  # tumour strokes: the voxel's most probable tumour class
            vox = np.argmax(prob[1:4][:, region], axis=0) + 1
            labels[region] = vox.astype(np.uint8)
        labels[scr == BACKGROUND] = 0
        weights[scr > 0] = 1.0
        ignore[scr > 0] = False
        labels[~self.brain] = 0
        info["model"] = {
            "classes": int(k),
            "tau": [float(t) for t in self.tau],
            "accepted_superpixels": int(accept.sum()),
            "expanded_superpixels": int(expanded.sum()),
            "superpixels": int(valid.sum()),
        }
        return labels, weights, ignore

    def update(
        self, scribbles: np.ndarray, probabilities: np.ndarray | None = None
    ) -> PropagationResult:
        """Propagate the current strokes.

        Parameters
        ----------
        scribbles : (Z, Y, X) ndarray of int
            Internal scribble codes (see :func:`check_scribbles`).
        probabilities : (4, Z, Y, X) ndarray, optional
            A model's per-class probabilities (internal classes 0..3). Each call updates
            the dynamic thresholds (EMA), so results depend on the update history.

        Returns
        -------
        PropagationResult
        """
        t0 = time.perf_counter()
        scr = check_scribbles(scribbles, self.shape, self.brain)
        info: dict = {"regions": {}}
        if probabilities is None:
            labels, ignore = self._cold(scr, info)
            weights = np.where(ignore, 0.0, 1.0).astype(np.float32)
            info["mode"] = "cold-start"
        else:
            prob = np.asarray(probabilities)
            if prob.ndim != 4 or prob.shape[1:] != self.shape:
                raise GeometryError(
                    f"probabilities have shape {prob.shape}; expected (4, *{self.shape}) "
                    "(per internal class, on the case's grid)."
                )
            if prob.shape[0] != 4:
                raise InputError(
                    f"probabilities have {prob.shape[0]} channels; expected 4 (internal "
                    "classes bg, NCR, ED, ET). Region probabilities (WT, TC, ET) are not "
                    "supported."
                )
            labels, weights, ignore = self._model(scr, prob, info)
            info["mode"] = "model-assisted"
        self.n_updates += 1
        n_scr = int((scr > 0).sum())
        tumour = int((labels > 0).sum())
        info["scribbled_voxels"] = n_scr
        info["brain_fraction"] = n_scr / max(int(self.brain.sum()), 1)
        info["seconds"] = time.perf_counter() - t0
        return PropagationResult(
            labels=labels.astype(np.uint8, copy=False),
            weights=weights.astype(np.float32, copy=False),
            ignore=ignore,
            annotated_fraction=n_scr / max(tumour, 1),
            info=info,
        )


def propagate_scribbles(
    images: np.ndarray,
    modalities: Sequence[str],
    scribbles: np.ndarray,
    *,
    probabilities: np.ndarray | None = None,
    brain: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    **kw: Any,
) -> PropagationResult:
    """One-shot propagation (builds a :class:`ScribblePropagator` and calls ``update``).

    Scribbles are validated before the (slow) superpixels are computed.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise InputError(f"images must be (C, Z, Y, X); got shape {images.shape}.")
    check_scribbles(scribbles, images.shape[1:], None)
    prop = ScribblePropagator(images, modalities, brain, spacing, **kw)
    return prop.update(scribbles, probabilities)


def classes_from_region_probabilities(prob: np.ndarray) -> np.ndarray:
    """Region probabilities (WT, TC, ET; sigmoid outputs) → class probabilities (bg..ET).

    With the nesting enforced (``TC <= WT``, ``ET <= TC``): ``p(bg) = 1 - WT``,
    ``p(ED) = WT - TC``, ``p(NCR) = TC - ET``, ``p(ET) = ET``.

    Parameters
    ----------
    prob : (3, Z, Y, X) ndarray

    Returns
    -------
    (4, Z, Y, X) ndarray of float32
    """
    prob = np.asarray(prob, np.float32)
    if prob.ndim != 4 or prob.shape[0] != 3:
        raise InputError(f"region probabilities must be (3, Z, Y, X); got {prob.shape}.")
    wt = np.clip(prob[0], 0, 1)
    tc = np.minimum(np.clip(prob[1], 0, 1), wt)
    et = np.minimum(np.clip(prob[2], 0, 1), tc)
    return np.stack([1 - wt, tc - et, wt - tc, et]).astype(np.float32)
