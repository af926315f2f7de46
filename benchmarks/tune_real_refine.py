"""Why growth stops on real scans, and the refinement defaults re-tuned on real labelled cases.

Protocol (fixed before any held-out number was looked at):

* **Tuning cases** (the only ones any choice is made on): BraTS-GLI-00000-000,
  UPENN-GBM-00002_11, UPENN-GBM-00008_11. **Held out** (reported only, never tuned on):
  BraTS-GLI-00012-000, UPENN-GBM-00011_11, UPENN-GBM-00075_11. The cases are read from
  ``../shared/data/real`` (never copied into the repository) with the package's reader.
* Pseudo-labels: the four degradations of :mod:`napari_ssseg.core.degrade` of each case's
  ground truth (seed ``100 * case index + degradation index``, deterministic), and, with
  ``--proposal``, the default model's proposal
  (:func:`napari_ssseg.ml.inference.predict_case`, CPU).
* WT is refined on FLAIR superpixels, TC on T2 + T1Gd superpixels (brain mask and SLIC as
  ``ssseg refine`` does); each region's Dice against the ground truth is compared before and
  after refinement.
* Grid per region: superpixel count ``n_segments`` x similarity weights (content/border,
  clip) x mutual rule (``region``/``member``) x mutual tolerance x ``sim0``, with ``n_c`` 30;
  ``n_c`` is swept afterwards at the chosen configuration.
* Selection rule: score = mean gain - 2 x mean loss beyond 0.01 over the 12 tuning
  pseudo-labels (the rule of ``tune_sim0.py``). Among configurations within 0.005 of the best
  score, the one whose sim0 slider acts most is taken: most distinct results over
  sim0 in {0.05, 0.1, ..., 0.9} (mean over the tuning pseudo-labels), then the paper's
  ``mutual="region"``, then the smaller tolerance, then the larger sim0.
* "Growth off" (fit only) is the same configuration with sim0 = 1 (nothing can merge).

Dice of a configuration is computed from per-superpixel voxel counts (the refined mask is
``p0`` plus whole superpixels), checked against the full mask of ``RefinementSession.refine``
for a sample of configurations in every run.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/tune_real_refine.py [--diagnose] [--tune] \\
        [--heldout] [--proposal] [--json OUT]

Superpixels, brain masks and features are cached under ``$SSSEG_REAL_REFINE_CACHE``
(default ``/tmp/ssseg_real_refine``).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / ".." / "shared" / "data" / "real"
CACHE = Path(os.environ.get("SSSEG_REAL_REFINE_CACHE", "/tmp/ssseg_real_refine"))
TUNE = ("BraTS-GLI-00000-000", "UPENN-GBM-00002_11", "UPENN-GBM-00008_11")
HELD_OUT = ("BraTS-GLI-00012-000", "UPENN-GBM-00011_11", "UPENN-GBM-00075_11")
ALL_CASES = TUNE + HELD_OUT
N_SEGMENTS = (350, 1000, 2500)
SIM0S = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SLIDER = tuple(s for s in SIM0S if 0.0 < s < 1.0)
#: (mutual rule, tolerance) pairs of the grid
RULES = (
    ("region", 0.0),
    ("region", 0.05),
    ("region", 0.1),
    ("region", 0.2),
    ("region", 0.3),
    ("member", 0.0),
    ("member", 0.1),
)
NC = 30
REGIONS = ("wt", "tc")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks (:func:`napari_ssseg.core.metrics.dice`)."""
    from napari_ssseg.core.metrics import dice as _dice

    return _dice(a, b)


def region_mask(labels: np.ndarray, region: str) -> np.ndarray:
    return labels > 0 if region == "wt" else np.isin(labels, (1, 3))


# --------------------------------------------------------------------------- data
_CASES: dict = {}


def load(name: str):
    """The real case (cached in memory, one at a time: 4 x 155 x 240 x 240 float32)."""
    from napari_ssseg.io.readers import load_case

    if name not in _CASES:
        _CASES.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _CASES[name] = load_case(REAL / name)
    return _CASES[name]


def prepare(name: str, n_segments: int) -> dict:
    """Brain mask and WT / TC superpixels of a real case, as ``ssseg refine`` computes them.

    Cached on disk (keyed by case, n_segments and the superpixel algorithm version).
    """
    from napari_ssseg.core import superpixels
    from napari_ssseg.core.preprocess import brain_mask
    from napari_ssseg.core.superpixels import region_superpixels

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}_{n_segments}_sp{superpixels.ALGORITHM_VERSION}.npz"
    case = load(name)
    if path.exists():
        d = np.load(path)
        return {k: d[k] for k in d.files}
    t = time.perf_counter()
    brain_path = CACHE / f"{name}_brain.npy"
    if brain_path.exists():
        brain = np.load(brain_path)
    else:
        brain = brain_mask(case.images)
        np.save(brain_path, brain)
    out = {"brain": brain}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r in REGIONS:
            out[f"sp_{r}"] = region_superpixels(
                case.images,
                case.modalities,
                r.upper(),
                mask=brain,
                spacing=case.scale,
                n_segments=n_segments,
                compactness=0.01,
                sigma=1.0,
            ).astype(np.int32)
    np.savez(path, **out)
    _log(f"superpixels {name} n_segments {n_segments}: {time.perf_counter() - t:.0f} s")
    return out


def pseudo_labels(name: str, brain: np.ndarray, proposal: bool = False) -> list:
    """``[(kind, labels)]``: the four degradations of the ground truth (and the proposal)."""
    from napari_ssseg.core.degrade import DEGRADATIONS, degrade

    case = load(name)
    ci = ALL_CASES.index(name)
    out = []
    for i, kind in enumerate(DEGRADATIONS):
        path = CACHE / f"{name}_{kind}.npy"
        if path.exists():
            lab = np.load(path)
        else:
            lab = degrade(case.labels, kind, brain=brain, spacing=case.scale, seed=100 * ci + i)
            np.save(path, lab.astype(np.uint8))
        out.append((kind, lab))
    if proposal:
        out.append(("proposal", model_proposal(name)))
    return out


def model_info() -> str:
    """Which default model file is used (path, size, SHA-1 prefix, metadata if any)."""
    from napari_ssseg.ml import checkpoint

    path = Path(checkpoint.__file__).parent / "weights" / "default.pt"
    h = hashlib.sha1(path.read_bytes()).hexdigest()[:12] if path.exists() else "missing"
    meta = ""
    try:
        ck = checkpoint.load_model(None)
        for k in ("version", "name", "trained_on", "created"):
            v = getattr(ck, k, None) or (getattr(ck, "meta", None) or {}).get(k)
            if v:
                meta += f" {k}={v}"
    except Exception as e:  # noqa: BLE001 - informative only
        meta = f" (metadata not read: {e})"
    return f"{path.name} sha1 {h}{meta}"


def _cached_proposal(name: str, checkpoint: str, path: Path, what: str, **kw) -> np.ndarray:
    """A model's proposal for a case (CPU, one thread), cached as ``path``."""
    if path.exists():
        return np.load(path)
    import torch

    from napari_ssseg.ml.inference import predict_case

    torch.set_num_threads(1)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = predict_case(load(name), checkpoint, device="cpu", **kw)
    lab = np.asarray(res["labels"], np.uint8)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, lab)
    _log(f"{what} {name}: {time.perf_counter() - t:.0f} s")
    return lab


def model_proposal(name: str) -> np.ndarray:
    """Default model's proposal for a case (CPU), cached by the model file's hash."""
    from napari_ssseg.ml import checkpoint

    wpath = Path(checkpoint.__file__).parent / "weights" / "default.pt"
    h = hashlib.sha1(wpath.read_bytes()).hexdigest()[:12]
    return _cached_proposal(name, "default", CACHE / f"{name}_proposal_{h}.npy", "proposal")


def fold_model_proposal(name: str, work: Path, min_component_fraction: float) -> np.ndarray:
    """Held-out proposal of a case: the k-fold model of ``work`` that did not train on it.

    ``work`` is a work folder of ``scripts/train_default_model_v2.py`` (``run_1/last.pt`` ...
    ``run_3/last.pt``); the case's fold is looked up in that script's ``FOLDS``. Cached by the
    checkpoint's hash and the post-processing.
    """
    fold = next(f for f, held in train_folds().items() if name in held)
    ckpt = work / f"run_{fold}" / "last.pt"
    h = hashlib.sha1(ckpt.read_bytes()).hexdigest()[:12]
    return _cached_proposal(
        name,
        str(ckpt),
        CACHE / f"{name}_foldproposal_{h}_pp{min_component_fraction:g}.npy",
        f"fold {fold} proposal ({ckpt}, sha1 {h})",
        min_component_fraction=min_component_fraction,
    )


@functools.cache
def train_folds() -> dict[str, tuple[str, ...]]:
    """The k folds of ``scripts/train_default_model_v2.py`` (``FOLDS``: fold -> held-out cases)."""
    import runpy

    return runpy.run_path(str(ROOT / "scripts" / "train_default_model_v2.py"))["FOLDS"]


def session(name: str, prep: dict, region: str, weights=None):
    from napari_ssseg.core.cache import Cache
    from napari_ssseg.core.refine import RefinementSession

    case = load(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return RefinementSession(
            case.images,
            case.modalities,
            prep[f"sp_{region}"],
            prep["brain"],
            case.scale,
            region=region,
            weights=weights,
            cache=Cache(CACHE, namespace="features", max_items=0),
        )


# --------------------------------------------------------------------------- fast Dice
class SeedCounts:
    """Per-superpixel counts of a fitted seed, for the Dice of any grown superpixel set."""

    def __init__(self, sess, seed, gt_full: np.ndarray) -> None:
        lab = sess.labels
        n1 = sess.n_superpixels + 1
        gtc = gt_full[sess.crop]
        p0 = seed.p0
        self.sess, self.seed = sess, seed
        self.cnt = np.bincount(lab.ravel(), minlength=n1)[:n1].astype(np.int64)
        self.p0s = np.bincount(lab[p0], minlength=n1)[:n1]
        self.gts = np.bincount(lab[gtc], minlength=n1)[:n1]
        self.p0gts = np.bincount(lab[p0 & gtc], minlength=n1)[:n1]
        self.n_p0 = int(p0.sum())
        self.n_p0gt = int((p0 & gtc).sum())
        self.n_gt = int(gt_full.sum())

    def filled(self, members: np.ndarray, output: str) -> np.ndarray:
        """Superpixels whose every voxel is in the mask (mirrors ``_assemble``; no shrink)."""
        from napari_ssseg.core.refine import DEFAULT_FILL_EDGE

        seed = self.seed
        if output == "added":
            return members & ~seed.members
        if output != "union":
            raise ValueError(output)
        f = members.copy()
        if seed.cut_border is not None and np.isfinite(DEFAULT_FILL_EDGE):
            strong = seed.cut_border > DEFAULT_FILL_EDGE * self.sess.model.sigma_b
            f &= ~(seed.members & strong)
        return f

    def dice(self, members: np.ndarray, output: str) -> float:
        f = self.filled(members, output)
        size = self.n_p0 + int((self.cnt[f] - self.p0s[f]).sum())
        inter = self.n_p0gt + int((self.gts[f] - self.p0gts[f]).sum())
        s = size + self.n_gt
        return 1.0 if s == 0 else 2.0 * inter / s

    def voxels(self, members: np.ndarray, output: str) -> int:
        f = self.filled(members, output)
        return self.n_p0 + int((self.cnt[f] - self.p0s[f]).sum())


# --------------------------------------------------------------------------- diagnosis
def grow_traced(sess, seed_members, sim0, n_c, mutual="region", tolerance=0.0):
    """``grow_fast`` with counters: why each merge attempt succeeded or failed.

    Returns ``(members, merged, attempts)``; each attempt is a dict with ``examined``
    (candidates looked at), ``fail_mutual`` (above sim0 but failed the mutual-best test),
    ``fail_sim0`` (of the top ``n_c + 1`` candidates, those at or below sim0: the scan stops
    at the first), ``outcome`` (``merged``, ``sim0`` — the scan reached a candidate at or
    below sim0 —, ``mutual`` — all examined candidates were above sim0 and failed the
    mutual test —, ``none`` — no candidate), and for the best candidate its similarity to
    the region and to its best outside neighbour.
    """
    from napari_ssseg.core.growth import region_frontier

    stats, adjacency, model, bo = sess.stats, sess.adjacency, sess.model, sess._best_other
    factor = 1.0 - tolerance
    members = np.asarray(seed_members, bool).copy()
    members[0] = False
    ptr = bo.reset()
    rsum = stats.sums[members].sum(axis=0)
    wz = model.z * model.counts[:, None]
    zsum = wz[members].sum(axis=0)
    rcnt, rg = region_frontier(adjacency, members)
    is_nbr = (rcnt > 0) & ~members
    is_nbr[0] = False
    merged: list[int] = []
    attempts: list[dict] = []
    k_max = n_c + 1
    while True:
        cand = np.flatnonzero(is_nbr)
        if cand.size == 0:
            attempts.append({"outcome": "none", "examined": 0, "fail_mutual": 0, "fail_sim0": 0})
            break
        zr = model.region_z(rsum, zsum)
        s = model.region_similarity(zr, rsum[0], cand, rg[cand] / rcnt[cand])
        order = np.lexsort((cand, -s))[:k_max]
        att = {
            "examined": 0,
            "fail_mutual": 0,
            "fail_sim0": int((s[order] <= sim0).sum()),
            "best_sim": float(s[order[0]]),
            "best_other": float(bo.best(int(cand[order[0]]), members, ptr)),
            "candidates": int(cand.size),
        }
        chosen = -1
        outcome = "mutual"
        for i in order:
            si = float(s[i])
            if si <= sim0:
                outcome = "sim0"
                break
            att["examined"] += 1
            c = int(cand[i])
            other = bo.best(c, members, ptr)
            if si >= factor * other or (
                mutual == "member" and bo.best_member(c, members) >= factor * other
            ):
                chosen = c
                outcome = "merged"
                break
            att["fail_mutual"] += 1
        att["outcome"] = outcome
        attempts.append(att)
        if chosen < 0:
            break
        c = chosen
        members[c] = True
        is_nbr[c] = False
        merged.append(c)
        rsum += stats.sums[c]
        zsum += wz[c]
        lo, hi = adjacency.indptr[c], adjacency.indptr[c + 1]
        nb = adjacency.nbr[lo:hi]
        ed = adjacency.edge[lo:hi]
        rcnt[nb] += adjacency.face_count[ed]
        rg[nb] += adjacency.face_gsum[ed]
        is_nbr[nb[~members[nb]]] = True
    return members, merged, attempts


def diagnose(cases, n_segments_list, sim0s=(0.02, 0.1, 0.3, 0.5, 0.9)) -> tuple[list, list]:
    """Per case / region / n_segments / pseudo-label / sim0: merges and the stopping attempt."""
    rows = []
    for name in cases:
        for n_seg in n_segments_list:
            prep = prepare(name, n_seg)
            case = load(name)
            pls = pseudo_labels(name, prep["brain"])
            for region in REGIONS:
                sess = session(name, prep, region)
                for kind, lab in pls:
                    p0 = region_mask(lab, region)
                    if not p0.any():
                        continue
                    fit = sess.fit(p0, warn=False)
                    for s0 in sim0s:
                        for mutual, tol in (("region", 0.0), ("member", 0.0), ("region", 0.1)):
                            mem, merged, att = grow_traced(sess, fit.members, s0, NC, mutual, tol)
                            ref, _ = sess.grow(fit, s0, NC, mutual=mutual, mutual_tolerance=tol)
                            assert np.array_equal(mem, ref), "traced growth != grow_fast"
                            last = att[-1]
                            fails = [a for a in att if a["outcome"] == "merged"]
                            rows.append(
                                {
                                    "case": name,
                                    "n_segments": n_seg,
                                    "superpixels": sess.n_superpixels,
                                    "region": region,
                                    "pseudo": kind,
                                    "sim0": s0,
                                    "mutual": mutual,
                                    "tolerance": tol,
                                    "seed_superpixels": int(fit.members.sum()),
                                    "merges": len(merged),
                                    "stop": last["outcome"],
                                    "stop_fail_mutual": last["fail_mutual"],
                                    "stop_fail_sim0": last["fail_sim0"],
                                    "stop_best_sim": last.get("best_sim"),
                                    "stop_best_other": last.get("best_other"),
                                    "mutual_fails_before_merges": int(
                                        sum(a["fail_mutual"] for a in fails)
                                    ),
                                    "edge_sim_median": float(np.median(sess.model.edge_sim)),
                                }
                            )
                _log(f"diagnose {name} {n_seg} {region} done")
            del case
    return rows, diagnose_table(rows)


def diagnose_table(rows: list) -> list[str]:
    lines = [
        "| n_segments (superpixels in brain) | region | rule | sim0 | merges per pseudo-label "
        "(mean, max) | stopped by mutual test | stopped by sim0 | candidates failing the mutual "
        "test at the stop (mean) | best candidate at the stop: Sim(region, c) / best outside "
        "(median) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = dict.fromkeys((r["n_segments"], r["region"], r["mutual"], r["tolerance"]) for r in rows)
    for n_seg, region, mutual, tol in keys:
        for s0 in dict.fromkeys(r["sim0"] for r in rows):
            sel = [
                r
                for r in rows
                if (r["n_segments"], r["region"], r["mutual"], r["tolerance"], r["sim0"])
                == (n_seg, region, mutual, tol, s0)
            ]
            if not sel:
                continue
            m = np.array([r["merges"] for r in sel])
            n_sp = int(np.mean([r["superpixels"] for r in sel]))
            by_mut = sum(r["stop"] == "mutual" for r in sel)
            by_sim = sum(r["stop"] == "sim0" for r in sel)
            fm = np.mean([r["stop_fail_mutual"] for r in sel])
            ratio = [
                r["stop_best_sim"] / r["stop_best_other"]
                for r in sel
                if r.get("stop_best_other") and r["stop_best_other"] > 0
            ]
            rule = mutual if tol == 0 else f"{mutual}, tol {tol:g}"
            lines.append(
                f"| {n_seg} ({n_sp}) | {region.upper()} | {rule} | {s0:g} | {m.mean():.1f}, "
                f"{m.max()} | {by_mut}/{len(sel)} | {by_sim}/{len(sel)} | {fm:.1f} | "
                f"{np.median(ratio) if ratio else float('nan'):.2f} |"
            )
    return lines


# --------------------------------------------------------------------------- tuning
def weight_grid():
    from napari_ssseg.core.refine import SimilarityWeights

    return [
        SimilarityWeights(content=c, border=b) for c, b in ((0.5, 0.5), (0.75, 0.25), (0.25, 0.75))
    ]


def wname(w) -> str:
    return f"{w.content:g}/{w.border:g} clip {w.clip:g}"


def evaluate_grid(cases, n_segments_list, weights, rules, sim0s, nc=NC, proposal=False):
    """``results[(region, n_seg, wi, mutual, tol, sim0)] -> [(case, kind, before, after, vox)]``.

    Every grown set's Dice from per-superpixel counts; a sample is checked against the full
    mask of ``RefinementSession.refine``.
    """
    from napari_ssseg.core.refine import DEFAULT_OUTPUT

    results: dict[tuple, list] = {}
    checked = 0
    for name in cases:
        case = load(name)
        for n_seg in n_segments_list:
            prep = prepare(name, n_seg)
            pls = pseudo_labels(name, prep["brain"], proposal)
            for region in REGIONS:
                gt = region_mask(case.labels, region)
                out_mode = DEFAULT_OUTPUT[region]
                sess = session(name, prep, region, weights[0])
                for wi, w in enumerate(weights):
                    if wi:
                        sess.set_weights(w)
                    for kind, lab in pls:
                        p0 = region_mask(lab, region)
                        if not p0.any():
                            continue
                        before = dice(p0, gt)
                        fit = sess.fit(p0, warn=False)
                        sc = SeedCounts(sess, fit, gt)
                        memo: dict[bytes, tuple] = {}
                        for (mutual, tol), s0 in itertools.product(rules, sim0s):
                            if s0 >= 1.0:  # nothing can merge: the fit alone
                                mem = fit.members.copy()
                                mem[0] = False
                            else:
                                mem, _ = sess.grow(fit, s0, nc, mutual=mutual, mutual_tolerance=tol)
                            key = mem.tobytes()
                            if key not in memo:
                                memo[key] = (sc.dice(mem, out_mode), sc.voxels(mem, out_mode))
                                if checked < 400 and len(memo) % 7 == 1:
                                    res = sess.refine(
                                        fit, s0, nc, mutual=mutual, mutual_tolerance=tol
                                    )
                                    full = dice(res.mask, gt)
                                    assert abs(full - memo[key][0]) < 1e-9, (full, memo[key])
                                    checked += 1
                            d, v = memo[key]
                            results.setdefault((region, n_seg, wi, mutual, tol, s0), []).append(
                                (name, kind, before, d, v, key)
                            )
                _log(f"grid {name} n_segments {n_seg} {region.upper()} done")
    _log(f"fast Dice checked against the full mask for {checked} results")
    return results


def score(rows) -> tuple[float, float, float, int]:
    g = np.array([r[3] - r[2] for r in rows])
    return (
        float(g.mean() - 2.0 * np.maximum(-g - 0.01, 0).mean()),
        float(g.mean()),
        float(g.min()),
        int((g < -0.01).sum()),
    )


def slider_action(results, region, n_seg, wi, mutual, tol) -> float:
    """Mean number of distinct results over the slider sim0 values, per pseudo-label."""
    per: dict[tuple, set] = {}
    for s0 in SLIDER:
        for r in results.get((region, n_seg, wi, mutual, tol, s0), []):
            per.setdefault((r[0], r[1]), set()).add(r[5])
    return float(np.mean([len(v) for v in per.values()])) if per else 0.0


def select(results, region):
    rows = []
    for key, v in results.items():
        if key[0] != region:
            continue
        sc, mean, worst, nw = score(v)
        rows.append((sc, mean, worst, nw, key))
    best = max(r[0] for r in rows)
    near = [r for r in rows if r[0] >= best - 0.005 and r[4][5] < 1.0]
    act = {r[4][:5]: slider_action(results, *r[4][:5]) for r in near}
    near.sort(key=lambda r: (-act[r[4][:5]], r[4][3] != "region", r[4][4], -r[4][5]))
    rows.sort(key=lambda r: -r[0])
    return near[0], rows, act


def tune_table(results, weights, region) -> tuple[list[str], tuple]:
    chosen, rows, act = select(results, region)
    lines = [
        f"\n**{region.upper()}**, tuning cases {', '.join(TUNE)} (12 degraded pseudo-labels): "
        f"top 15 of {len(rows)} configurations by score (mean gain - 2 x mean loss beyond 0.01)"
        f"; slider = distinct results over sim0 in {{{', '.join(f'{s:g}' for s in SLIDER)}}} "
        f"(mean per pseudo-label):\n",
        "| n_segments | content/border, clip | mutual | tolerance | sim0 | mean gain | worst "
        "| worse > 0.01 | score | slider |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def row(r):
        sc, mean, worst, nw, (reg, n_seg, wi, m, t, s0) = r
        a = slider_action(results, reg, n_seg, wi, m, t)
        return (
            f"| {n_seg} | {wname(weights[wi])} | {m} | {t:g} | {s0:g} | {mean:+.4f} | "
            f"{worst:+.4f} | {nw}/{len(results[r[4]])} | {sc:+.4f} | {a:.1f} |"
        )

    for r in rows[:15]:
        lines.append(row(r))
    lines.append(
        "\nFor comparison: the paper's strict rule at sim0 0.1 (the previous default) and "
        "growth off (sim0 1, the fit alone), per superpixel count and weights:\n"
    )
    lines.append(lines[1])
    lines.append(lines[2])
    for n_seg in dict.fromkeys(k[1] for k in results):
        for wi in range(len(weights)):
            for s0 in (0.1, 1.0):
                key = (region, n_seg, wi, "region", 0.0, s0)
                if key in results and (s0 < 1.0 or wi == 0):
                    lines.append(row(next(r for r in rows if r[4] == key)))
    lines.append(
        f"\nBest for {region.upper()} alone (per-region rule; the defaults are chosen jointly, "
        f"below): {chosen[4]} (score {chosen[0]:+.4f}, mean gain "
        f"{chosen[1]:+.4f}, slider {act[chosen[4][:5]]:.1f})."
    )
    return lines, chosen


def select_joint(results) -> tuple[list[str], dict]:
    """One ``n_segments`` and one ``sim0`` for both regions (the CLI and the Refine panel have
    one of each); per region the weights and the mutual rule / tolerance that score best at
    that pair. Chosen: the pair with the highest sum of the two regions' scores."""
    best: dict[tuple, dict] = {}
    for key, v in results.items():
        region, n_seg, _wi, _m, _t, s0 = key
        sc = score(v)[0]
        cur = best.setdefault((n_seg, s0), {})
        if region not in cur or sc > cur[region][0]:
            cur[region] = (sc, key)
    lines = [
        "\n**Joint choice** (one n_segments and one sim0 for both regions; per region the "
        "best weights and mutual rule at that pair; score as above):\n",
        "| n_segments | sim0 | WT score | WT weights, rule | TC score | TC weights, rule | sum |",
        "|---|---|---|---|---|---|---|",
    ]
    weights = weight_grid()
    pick = None
    for (n_seg, s0), d in sorted(best.items()):
        if len(d) < 2:
            continue
        tot = d["wt"][0] + d["tc"][0]
        if s0 < 1.0 and (pick is None or tot > pick[0]):
            pick = (tot, n_seg, s0, d)

        def desc(k):
            return f"{wname(weights[k[2]])}, {k[3]} tol {k[4]:g}"

        lines.append(
            f"| {n_seg} | {s0:g} | {d['wt'][0]:+.4f} | {desc(d['wt'][1])} | {d['tc'][0]:+.4f} | "
            f"{desc(d['tc'][1])} | {tot:+.4f} |"
        )
    tot, n_seg, s0, d = pick
    lines.append(
        f"\nSelected: n_segments {n_seg}, sim0 {s0:g}; WT {d['wt'][1]}, TC {d['tc'][1]} "
        f"(sum of scores {tot:+.4f})."
    )
    return lines, {"n_segments": n_seg, "sim0": s0, "wt": d["wt"][1], "tc": d["tc"][1]}


# --------------------------------------------------------------------------- held out
def heldout(cases, configs: dict, proposal: bool, labels_of=None) -> tuple[list, list[str]]:
    """Full pipeline (``refine_labels``: WT and TC, TC clipped to WT) on the held-out cases.

    ``configs``: name -> {"n_segments", "weights" {region: w}, "sim0" {region}, "mutual",
    "mutual_tolerance", "n_c"}. ``labels_of(name, brain)``, if given, returns the
    ``[(kind, labels)]`` to refine instead of :func:`pseudo_labels`.
    """
    from napari_ssseg.core.refine import refine_labels

    rows = []
    for name in cases:
        case = load(name)
        g = {r: np.isin(case.labels, cls) for r, cls in (("wt", (1, 2, 3)), ("tc", (1, 3)))}
        g["et"] = case.labels == 3
        for cname, cfg in configs.items():
            prep = prepare(name, cfg["n_segments"])
            if labels_of is None:
                pls = pseudo_labels(name, prep["brain"], proposal)
            else:
                pls = labels_of(name, prep["brain"])
            sess = {r: session(name, prep, r, cfg["weights"][r]) for r in REGIONS}
            for kind, lab in pls:
                out = refine_labels(
                    case.images,
                    case.modalities,
                    lab,
                    None,
                    None,
                    prep["brain"],
                    spacing=case.scale,
                    sim0=cfg["sim0"],
                    n_c=cfg["n_c"],
                    sessions=sess,
                    mutual=cfg["mutual"],
                    mutual_tolerance=cfg["mutual_tolerance"],
                    warn=False,
                )
                row = {"case": name, "config": cname, "pseudo": kind}
                for r, cls in (("wt", (1, 2, 3)), ("tc", (1, 3)), ("et", (3,))):
                    row[f"{r}_before"] = dice(np.isin(lab, cls), g[r])
                    row[f"{r}_after"] = dice(np.isin(out.labels, cls), g[r])
                row["merged"] = {r: v.get("merged", 0) for r, v in out.info["regions"].items()}
                rows.append(row)
            _log(f"held out {name} {cname} done")
    return rows, heldout_table(rows)


def heldout_table(rows) -> list[str]:
    lines = [
        "| configuration | pseudo-labels | WT before | WT after | WT gain | WT worse > 0.01 | "
        "TC gain | TC worse > 0.01 | ET gain | merges WT / TC (mean) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cname in dict.fromkeys(r["config"] for r in rows):
        for subset, pick in (
            ("degraded", lambda r: r["pseudo"] != "proposal"),
            ("proposal", lambda r: r["pseudo"] == "proposal"),
        ):
            sel = [r for r in rows if r["config"] == cname and pick(r)]
            if not sel:
                continue
            subset = f"{subset} ({len(sel)})"

            def arr(k, sel=sel):
                return np.array([r[k] for r in sel])

            gw = arr("wt_after") - arr("wt_before")
            gt_ = arr("tc_after") - arr("tc_before")
            ge = arr("et_after") - arr("et_before")
            mw = np.mean([r["merged"].get("wt", 0) for r in sel])
            mt = np.mean([r["merged"].get("tc", 0) for r in sel])
            lines.append(
                f"| {cname} | {subset} | {arr('wt_before').mean():.4f} | "
                f"{arr('wt_after').mean():.4f} | {gw.mean():+.4f} | {int((gw < -0.01).sum())}"
                f"/{len(sel)} | {gt_.mean():+.4f} | {int((gt_ < -0.01).sum())}/{len(sel)} | "
                f"{ge.mean():+.4f} | {mw:.1f} / {mt:.1f} |"
            )
    return lines


def per_case_table(rows) -> list[str]:
    """Per case: WT / TC / ET Dice of the pseudo-label, then after each configuration."""
    cnames = list(dict.fromkeys(r["config"] for r in rows))
    lines = [
        "| case | pseudo-label | before WT / TC / ET | "
        + " | ".join(f"after: {c}" for c in cnames)
        + " |",
        "|---|---|---|" + "---|" * len(cnames),
    ]
    keys = list(dict.fromkeys((r["case"], r["pseudo"]) for r in rows))
    for case, kind in keys:
        by = {r["config"]: r for r in rows if (r["case"], r["pseudo"]) == (case, kind)}
        first = by[cnames[0]]
        before = " / ".join(f"{first[f'{k}_before']:.3f}" for k in ("wt", "tc", "et"))
        after = [
            " / ".join(f"{by[c][f'{k}_after']:.3f}" for k in ("wt", "tc", "et")) for c in cnames
        ]
        lines.append(f"| {case} | {kind} | {before} | " + " | ".join(after) + " |")
    return lines


def sweep(cases, cfg, proposal: bool, sim0s=SIM0S, ncs=(1, 5, 30, 100)) -> list[str]:
    """Slider check: WT / TC voxels and Dice as sim0 (n_c = cfg) and n_c (sim0 = cfg) move."""
    from napari_ssseg.core.refine import DEFAULT_OUTPUT

    lines = [
        "| case | pseudo | region | sim0 -> voxels added by growth (Dice) | n_c -> merges |",
        "|---|---|---|---|---|",
    ]
    for name in cases:
        case = load(name)
        prep = prepare(name, cfg["n_segments"])
        for region in REGIONS:
            gt = region_mask(case.labels, region)
            sess = session(name, prep, region, cfg["weights"][region])
            for kind, lab in pseudo_labels(name, prep["brain"], proposal):
                p0 = region_mask(lab, region)
                if not p0.any() or kind not in ("missed_lobe", "proposal"):
                    continue
                fit = sess.fit(p0, warn=False)
                sc = SeedCounts(sess, fit, gt)
                kw = dict(
                    mutual=cfg["mutual"][region], mutual_tolerance=cfg["mutual_tolerance"][region]
                )
                base = sc.voxels(fit.members, DEFAULT_OUTPUT[region])
                parts = []
                for s0 in sim0s:
                    mem, _ = sess.grow(fit, s0, cfg["n_c"], **kw)
                    v = sc.voxels(mem, DEFAULT_OUTPUT[region]) - base
                    parts.append(f"{s0:g}: {v} ({sc.dice(mem, DEFAULT_OUTPUT[region]):.3f})")
                ncp = []
                for nc in ncs:
                    _, merged = sess.grow(fit, cfg["sim0"][region], nc, **kw)
                    ncp.append(f"{nc}: {len(merged)}")
                lines.append(
                    f"| {name} | {kind} | {region.upper()} | {'; '.join(parts)} | "
                    f"{'; '.join(ncp)} |"
                )
    return lines


# --------------------------------------------------------------------------- phantoms
def phantoms(seeds, configs: dict) -> list[str]:
    """The accuracy part of ``benchmarks/refine.py`` (same phantoms, degradations, cache) for
    each configuration: mean WT / TC Dice change and cases worse by more than 0.01."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tune_sim0 import MODALITIES, degraded_cases, load_phantom_case

    from napari_ssseg.core.refine import RefinementSession, refine_labels

    summary: dict[str, list] = {c: [] for c in configs}
    for seed in seeds:
        for cname, cfg in configs.items():
            case = load_phantom_case(seed, n_segments=cfg["n_segments"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sessions = {
                    r: RefinementSession(
                        case["images"],
                        MODALITIES,
                        case[f"sp_{r}"],
                        case["brain"],
                        case["spacing"],
                        region=r,
                        weights=cfg["weights"][r],
                    )
                    for r in REGIONS
                }
            g_wt = case["labels"] > 0
            g_tc = np.isin(case["labels"], (1, 3))
            for _kind, lab in degraded_cases(case):
                out = refine_labels(
                    case["images"],
                    MODALITIES,
                    lab,
                    None,
                    None,
                    case["brain"],
                    spacing=case["spacing"],
                    sessions=sessions,
                    sim0=cfg["sim0"],
                    n_c=cfg["n_c"],
                    mutual=cfg["mutual"],
                    mutual_tolerance=cfg["mutual_tolerance"],
                    warn=False,
                ).labels
                summary[cname].append(
                    (
                        dice(lab > 0, g_wt),
                        dice(out > 0, g_wt),
                        dice(np.isin(lab, (1, 3)), g_tc),
                        dice(np.isin(out, (1, 3)), g_tc),
                    )
                )
        _log(f"phantom seed {seed} done")
    lines = [
        f"Phantoms seeds {seeds[0]}-{seeds[-1]} (the benchmark set of benchmarks/refine.py, "
        "half resolution, four degradations each):\n",
        "| configuration | WT before | WT after | WT gain | WT worse > 0.01 | TC gain | "
        "TC worse > 0.01 |",
        "|---|---|---|---|---|---|---|",
    ]
    for cname, vals in summary.items():
        v = np.array(vals)
        gw, gt_ = v[:, 1] - v[:, 0], v[:, 3] - v[:, 2]
        lines.append(
            f"| {cname} | {v[:, 0].mean():.4f} | {v[:, 1].mean():.4f} | {gw.mean():+.4f} | "
            f"{int((gw < -0.01).sum())}/{len(v)} | {gt_.mean():+.4f} | "
            f"{int((gt_ < -0.01).sum())}/{len(v)} |"
        )
    return lines


#: What ``--tune`` selected on the tuning cases (``select_joint``; see docs/refinement.md).
TUNED_ON_REAL = {
    "n_segments": 1000,
    "sim0": 0.4,
    "weights": {"wt": (0.75, 0.25), "tc": (0.75, 0.25)},
    "mutual": {"wt": "region", "tc": "member"},
    "mutual_tolerance": {"wt": 0.1, "tc": 0.0},
    "n_c": NC,
}


def standard_configs() -> dict:
    """The code defaults and the configuration tuned on the real tuning cases, with growth
    off (sim0 1, the fit alone) for each."""
    from napari_ssseg.core.refine import (
        DEFAULT_MUTUAL,
        DEFAULT_MUTUAL_TOLERANCE,
        DEFAULT_N_SEGMENTS,
        DEFAULT_NC,
        DEFAULT_SIM0,
        DEFAULT_WEIGHTS,
        SimilarityWeights,
    )

    cur = {
        "n_segments": DEFAULT_N_SEGMENTS,
        "weights": dict(DEFAULT_WEIGHTS),
        "sim0": dict.fromkeys(REGIONS, float(DEFAULT_SIM0)),
        "mutual": dict(DEFAULT_MUTUAL),
        "mutual_tolerance": dict(DEFAULT_MUTUAL_TOLERANCE),
        "n_c": DEFAULT_NC,
    }
    t = TUNED_ON_REAL
    tuned = {
        "n_segments": t["n_segments"],
        "weights": {
            r: SimilarityWeights(content=c, border=b) for r, (c, b) in t["weights"].items()
        },
        "sim0": dict.fromkeys(REGIONS, t["sim0"]),
        "mutual": dict(t["mutual"]),
        "mutual_tolerance": dict(t["mutual_tolerance"]),
        "n_c": t["n_c"],
    }
    off = {"sim0": dict.fromkeys(REGIONS, 1.0)}
    return {
        f"code defaults (n_segments {cur['n_segments']}, sim0 {DEFAULT_SIM0:g})": cur,
        "code defaults, growth off (sim0 1)": cur | off,
        "tuned on real (n_segments 1000, sim0 0.4, WT tol 0.1, TC member)": tuned,
        "tuned on real, growth off": tuned | off,
    }


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--diagnose", action="store_true", help="why growth stops (tuning cases)")
    ap.add_argument("--tune", action="store_true", help="grid search on the tuning cases")
    ap.add_argument("--heldout", action="store_true", help="report on the held-out cases")
    ap.add_argument("--proposal", action="store_true", help="also refine the model proposal")
    ap.add_argument(
        "--phantom", action="store_true", help="the same configurations on phantoms 2000-2009"
    )
    ap.add_argument(
        "--fold-models",
        type=Path,
        default=None,
        metavar="WORK",
        help="refine the held-out proposals of the k-fold models in WORK (a work folder of "
        "scripts/train_default_model_v2.py) on all six labelled cases",
    )
    ap.add_argument(
        "--min-component-fraction",
        type=float,
        default=0.5,
        help="--fold-models: the proposals' post-processing (0.5, the shipped model's)",
    )
    ap.add_argument("--quick", action="store_true", help="n_segments 350 only, smaller grid")
    ap.add_argument("--json", type=Path, default=None, help="write all results as JSON")
    args = ap.parse_args(argv)
    if not REAL.is_dir():
        print(f"real data folder {REAL} not found", file=sys.stderr)
        return 2
    if not (args.diagnose or args.tune or args.heldout or args.phantom or args.fold_models):
        args.diagnose = args.tune = args.heldout = True
    t0 = time.perf_counter()
    out: dict = {"tune_cases": TUNE, "held_out": HELD_OUT}
    n_segs = (350,) if args.quick else N_SEGMENTS
    text: list[str] = []
    if args.diagnose:
        rows, lines = diagnose(TUNE, n_segs)
        out["diagnose"] = rows
        text += ["## Why growth stops (tuning cases, degraded ground truth, n_c 30)\n"] + lines
    chosen = {}
    weights = weight_grid()
    if args.tune:
        res = evaluate_grid(
            TUNE,
            n_segs,
            weights if not args.quick else weights[:1],
            RULES,
            SIM0S,
            proposal=False,
        )
        for region in REGIONS:
            lines, ch = tune_table(res, weights, region)
            text += lines
            chosen[region] = ch[4]
        lines, joint = select_joint(res)
        text += lines
        out["tune"] = {"|".join(map(str, k)): [list(r[:5]) for r in v] for k, v in res.items()}
        out["chosen_per_region"] = {r: list(v) for r, v in chosen.items()}
        out["chosen"] = joint
    configs = standard_configs()
    if args.heldout:
        hrows, lines = heldout(HELD_OUT, configs, args.proposal)
        out["heldout"] = hrows
        if args.proposal:
            out["model"] = model_info()
            lines.append(f"\nModel proposal from the default model file: {out['model']}.")
        text += [f"\n## Held-out cases ({', '.join(HELD_OUT)})\n"] + lines
        for cname in (list(configs)[0], list(configs)[2]):
            text += [f"\n### Slider check (held-out cases, {cname})\n"] + sweep(
                HELD_OUT, configs[cname], args.proposal
            )
    if args.fold_models:
        work, mcf = args.fold_models, args.min_component_fraction
        fconfigs = dict(list(configs.items())[:2])  # the code defaults, with growth off

        def labels_of(name, brain):
            return [("proposal", fold_model_proposal(name, work, mcf))]

        frows, lines = heldout(ALL_CASES, fconfigs, True, labels_of=labels_of)
        out["fold_models"] = {"work": str(work), "min_component_fraction": mcf, "rows": frows}
        text += [
            f"\n## Held-out k-fold proposals ({work}, post-processing {mcf:g}), all six cases\n"
        ]
        text += lines + [""] + per_case_table(frows)
    if args.phantom:
        text += ["\n## Phantoms\n"] + phantoms(list(range(2000, 2010)), configs)
    text.append(f"\nTotal {time.perf_counter() - t0:.0f} s.")
    print("\n".join(text))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
