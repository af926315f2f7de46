"""Next-case suggestion for active learning: rank cases by model uncertainty (numpy only).

The caller computes per-case arrays (an uncertainty map and the predicted labels, or the
labels of two networks of a CPS pair) and passes them in; nothing here reads files or runs
a network.

* :func:`uncertainty_score` -- mean voxel uncertainty (e.g. normalised entropy) inside the
  predicted tumour;
* :func:`disagreement_score` -- disagreement of two predictions (a CPS pair) inside the union
  of their predicted tumours;
* :func:`histogram_features` -- an intensity-histogram feature vector per case, for the
  diversity option;
* :func:`rank_cases` -- rank by score, optionally with greedy farthest-point diversity, or a
  seeded random baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from napari_ssseg.errors import InputError, check_choice

__all__ = [
    "STRATEGIES",
    "Suggestion",
    "entropy_map",
    "uncertainty_score",
    "disagreement_score",
    "histogram_features",
    "rank_cases",
]

#: Ranking strategies of :func:`rank_cases`.
STRATEGIES: tuple[str, ...] = ("entropy", "disagreement", "random")


@dataclass(frozen=True)
class Suggestion:
    """One ranked case.

    Attributes
    ----------
    case_id : str
    rank : int
        1 = label this case first.
    score : float or None
        The case's uncertainty score (None for the random baseline or a case without one).
    reason : str
        Short explanation (shown in the CLI and the panel).
    """

    case_id: str
    rank: int
    score: float | None
    reason: str


def entropy_map(probabilities: np.ndarray, axis: int = 0) -> np.ndarray:
    """Normalised Shannon entropy of class probabilities, in [0, 1].

    Parameters
    ----------
    probabilities : (C, Z, Y, X) ndarray
        Class probabilities summing to 1 along ``axis`` (C >= 2). For independent region
        sigmoids pass each region as a 2-class stack, or average their binary entropies.
    axis : int
        Class axis.

    Returns
    -------
    (Z, Y, X) ndarray of float32
        ``-sum p log p / log C``.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim < 2 or p.shape[axis] < 2:
        raise InputError(
            f"entropy_map needs class probabilities with >= 2 classes along axis {axis}; got "
            f"shape {p.shape}."
        )
    if not np.all(np.isfinite(p)) or p.min() < -1e-6 or p.max() > 1 + 1e-6:
        raise InputError("entropy_map: probabilities must be finite and within [0, 1].")
    p = np.clip(p, 1e-12, 1.0)
    h = -(p * np.log(p)).sum(axis=axis) / np.log(p.shape[axis])
    return np.clip(h, 0.0, 1.0).astype(np.float32)


def _check_map(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 3:
        raise InputError(f"{name} must be a 3D (Z, Y, X) array; got shape {a.shape}.")
    return a


def uncertainty_score(
    uncertainty: np.ndarray, labels: np.ndarray | None = None, min_voxels: int = 1
) -> float:
    """Mean uncertainty inside the predicted tumour.

    Parameters
    ----------
    uncertainty : (Z, Y, X) ndarray of float
        Voxel uncertainty, e.g. :func:`entropy_map` (finite, >= 0).
    labels : (Z, Y, X) ndarray of int, optional
        Predicted internal labels; the tumour is ``labels > 0``. If None, or if the predicted
        tumour has fewer than ``min_voxels`` voxels, the mean over the voxels with non-zero
        uncertainty is used (a case where the model sees no tumour is scored by how unsure it
        is anywhere), or 0 if there are none.
    min_voxels : int
        Minimum tumour size to use the tumour mask.

    Returns
    -------
    float
    """
    u = _check_map(uncertainty, "uncertainty").astype(np.float64, copy=False)
    if not np.all(np.isfinite(u)) or (u.size and u.min() < 0):
        raise InputError("uncertainty must hold finite values >= 0.")
    if labels is not None:
        lab = _check_map(labels, "labels")
        if lab.shape != u.shape:
            raise InputError(
                f"labels shape {lab.shape} differs from the uncertainty map {u.shape}."
            )
        mask = lab > 0
        if int(mask.sum()) >= max(int(min_voxels), 1):
            return float(u[mask].mean())
    nz = u > 0
    return float(u[nz].mean()) if nz.any() else 0.0


def disagreement_score(labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """Disagreement of two predictions (e.g. a CPS pair) inside their predicted tumours.

    Parameters
    ----------
    labels_a, labels_b : (Z, Y, X) ndarray of int
        Internal labels of the two networks.

    Returns
    -------
    float
        Fraction of the voxels in the union of both tumours (``> 0``) where the labels
        differ, in [0, 1]; 0 when neither predicts a tumour.
    """
    a = _check_map(labels_a, "labels_a")
    b = _check_map(labels_b, "labels_b")
    if a.shape != b.shape:
        raise InputError(f"labels_a shape {a.shape} differs from labels_b {b.shape}.")
    union = (a > 0) | (b > 0)
    n = int(union.sum())
    if n == 0:
        return 0.0
    return float(np.count_nonzero(a[union] != b[union]) / n)


def histogram_features(
    images: np.ndarray, bins: int = 16, mask: np.ndarray | None = None
) -> np.ndarray:
    """Per-channel intensity histogram of the brain, z-scored, concatenated.

    Parameters
    ----------
    images : (C, Z, Y, X) or (Z, Y, X) ndarray
        Image channels.
    bins : int
        Histogram bins per channel over z-scores in [-3, 3].
    mask : (Z, Y, X) ndarray of bool, optional
        Voxels to use (default: non-zero voxels of the first channel).

    Returns
    -------
    (C * bins,) ndarray of float
        Normalised histograms (each channel sums to 1).
    """
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise InputError(f"images must be (C, Z, Y, X) or (Z, Y, X); got shape {x.shape}.")
    if not isinstance(bins, int | np.integer) or bins < 2:
        raise InputError(f"bins={bins!r} must be an integer >= 2.")
    m = (x[0] != 0) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != x.shape[1:]:
        raise InputError(f"mask shape {m.shape} differs from the image {x.shape[1:]}.")
    if not m.any():
        m = np.ones(x.shape[1:], dtype=bool)
    feats = []
    for c in range(x.shape[0]):
        v = x[c][m].astype(np.float64)
        sd = v.std()
        z = (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)
        h, _ = np.histogram(np.clip(z, -3, 3), bins=int(bins), range=(-3, 3))
        feats.append(h / max(h.sum(), 1))
    return np.concatenate(feats)


def rank_cases(
    scores: Mapping[str, float | None] | Sequence[str],
    *,
    n: int | None = None,
    strategy: str = "entropy",
    features: Mapping[str, np.ndarray] | None = None,
    diversity: float = 0.0,
    seed: int = 0,
) -> list[Suggestion]:
    """Rank cases to label next.

    Parameters
    ----------
    scores : mapping of case id to score, or sequence of case ids
        Uncertainty scores (higher = more uncertain = label first). A case with score None is
        ranked after every scored case (in the given order). A plain sequence of ids is only
        accepted with ``strategy="random"``.
    n : int, optional
        Number of cases to return (default all).
    strategy : {"entropy", "disagreement", "random"}
        ``entropy`` and ``disagreement`` rank by the given scores (they only name which score
        was computed); ``random`` is the seeded random baseline.
    features : mapping of case id to (F,) ndarray, optional
        Feature vectors (:func:`histogram_features`) for the diversity option.
    diversity : float in [0, 1]
        0: pure score ranking. > 0: greedy farthest-point selection, each next case maximising
        ``(1 - diversity) * score' + diversity * distance'``, where ``score'`` is the score
        scaled to [0, 1] over the candidates and ``distance'`` the Euclidean distance of its
        features to the nearest already chosen case, scaled to [0, 1]. Needs ``features`` for
        every scored case.
    seed : int
        Seed of the random baseline.

    Returns
    -------
    list of Suggestion
        Best first.
    """
    strategy = check_choice("strategy", strategy, STRATEGIES)
    if isinstance(scores, Mapping):
        ids = list(scores)
        vals: dict[str, float | None] = {}
        for k in ids:
            v = scores[k]
            if v is not None:
                v = float(v)
                if not np.isfinite(v):
                    raise InputError(f"Score of case {k!r} is {v!r}; scores must be finite.")
            vals[k] = v
    else:
        if isinstance(scores, str):
            raise InputError("scores must be a mapping of case id to score or a list of ids.")
        ids = list(scores)
        vals = dict.fromkeys(ids)
        if strategy != "random":
            raise InputError(
                f"strategy={strategy!r} needs uncertainty scores; got only case ids. Compute "
                "scores (e.g. with a model) or use strategy='random'."
            )
    if len(set(ids)) != len(ids):
        raise InputError("rank_cases: a case id appears twice.")
    if n is None:
        n = len(ids)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise InputError(f"n={n!r} must be a non-negative integer.")
    if not (0.0 <= float(diversity) <= 1.0):
        raise InputError(f"diversity={diversity!r} must be within [0, 1].")
    n = min(int(n), len(ids))

    if strategy == "random":
        perm = np.random.default_rng(int(seed)).permutation(len(ids))
        return [
            Suggestion(ids[int(i)], r + 1, vals[ids[int(i)]], f"random baseline (seed {seed})")
            for r, i in enumerate(perm[:n])
        ]

    known: dict[str, float] = {k: v for k, v in vals.items() if v is not None}
    scored = [k for k in ids if vals[k] is not None]
    unscored = [k for k in ids if vals[k] is None]
    what = "mean entropy in predicted tumour" if strategy == "entropy" else "CPS disagreement"
    if diversity > 0 and len(scored) > 1:
        if features is None or any(k not in features for k in scored):
            lacking = [k for k in scored if features is None or k not in features]
            raise InputError(
                f"diversity={diversity} needs a feature vector for every scored case; missing "
                f"for {lacking[:5]}. Compute them with histogram_features()."
            )
        order = _diverse_order(scored, vals, features, float(diversity))
    else:
        order = sorted(scored, key=lambda k: (-known[k], ids.index(k)))
    out: list[Suggestion] = []
    for k in order + unscored:
        if len(out) == n:
            break
        if vals[k] is None:
            reason = "no uncertainty score (ranked last)"
        else:
            reason = f"{what} {vals[k]:.4f}" + (" + diversity" if diversity > 0 else "")
        out.append(Suggestion(k, len(out) + 1, vals[k], reason))
    return out


def _diverse_order(
    ids: list[str],
    vals: Mapping[str, float | None],
    features: Mapping[str, np.ndarray],
    w: float,
) -> list[str]:
    s = np.array([vals[k] for k in ids], dtype=float)
    span = s.max() - s.min()
    s01 = (s - s.min()) / span if span > 0 else np.ones_like(s)
    f = np.stack([np.asarray(features[k], dtype=float).ravel() for k in ids])
    if not np.all(np.isfinite(f)):
        raise InputError("Feature vectors must be finite.")
    d = np.sqrt(((f[:, None, :] - f[None, :, :]) ** 2).sum(-1))
    dmax = d.max() if d.max() > 0 else 1.0
    chosen = [int(np.argmax(s01))]
    mind = d[chosen[0]].copy()
    remaining = set(range(len(ids))) - set(chosen)
    while remaining:
        rem = np.array(sorted(remaining))
        gain = (1 - w) * s01[rem] + w * mind[rem] / dmax
        nxt = int(rem[int(np.argmax(gain))])
        chosen.append(nxt)
        remaining.discard(nxt)
        mind = np.minimum(mind, d[nxt])
    return [ids[i] for i in chosen]
