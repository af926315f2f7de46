"""Which workspace case to label next: the one suggestion policy of the CLI and the panel.

:func:`suggest_next` picks the candidates (cases ``new`` or ``proposed`` whose images exist),
ranks them by a stored uncertainty score (:func:`~napari_ssseg.core.suggest.rank_cases`),
falls back to the seeded random baseline when no candidate has a score, and with
``diversity > 0`` uses each candidate's image features (stored in the manifest, else computed
from its images and returned for the caller to store). ``ssseg workspace suggest`` and the
Workspace panel's *Suggest next case* both call it, so they rank alike for the same options.
Computing uncertainty with a model (``ssseg workspace suggest --model``) happens before, in the
command (it needs torch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_ssseg.core.progress import ProgressCallback, StopCallback, check_cancel, report
from napari_ssseg.errors import InputError, check_choice

__all__ = ["CANDIDATE_STATUSES", "SuggestResult", "suggest_next"]

#: Statuses of the cases a suggestion chooses among.
CANDIDATE_STATUSES = ("new", "proposed")


@dataclass
class SuggestResult:
    """A suggestion and how it was made.

    Attributes
    ----------
    ranked : list of core.suggest.Suggestion
        Best first.
    notes : list of str
        What the user should know (missing images skipped, random fallback, ...).
    new_features : dict of str to ndarray
        Image features computed here (the caller stores them: ``ws.set_features``).
    status : dict of str to str
        Status of every candidate.
    strategy : str
        The strategy used (``random`` after a fallback).
    """

    ranked: list
    notes: list[str] = field(default_factory=list)
    new_features: dict[str, np.ndarray] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    strategy: str = "entropy"


def suggest_next(
    ws: Any,
    n: int = 5,
    *,
    strategy: str = "entropy",
    diversity: float = 0.0,
    seed: int = 0,
    features: Callable[[str], np.ndarray] | None = None,
    progress: ProgressCallback | None = None,
    should_stop: StopCallback | None = None,
) -> SuggestResult:
    """Rank a workspace's candidate cases to label next.

    Parameters
    ----------
    ws : Workspace
        Open (read-only is enough; nothing is written).
    n : int
        Cases to suggest.
    strategy : {"entropy", "disagreement", "random"}
        Which stored score ranks (``random``: the seeded baseline).
    diversity : float in [0, 1]
        Weight of image diversity (0: scores only).
    seed : int
        Seed of the random baseline (also of the fallback).
    features : callable, optional
        ``features(case_id)`` -> feature vector for a case with none stored (default: the
        :func:`~napari_ssseg.core.suggest.histogram_features` of its images).
    progress, should_stop : callable, optional
        The core protocol (:mod:`napari_ssseg.core.progress`), used while features are
        computed.

    Returns
    -------
    SuggestResult

    Raises
    ------
    InputError
        Bad ``n`` / ``diversity`` / ``strategy``, or no candidate case.
    """
    from napari_ssseg.core.suggest import STRATEGIES, histogram_features, rank_cases

    strategy = check_choice("strategy", strategy, STRATEGIES)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n={n!r}: suggest at least 1 case.")
    if not 0.0 <= float(diversity) <= 1.0:
        raise InputError(f"diversity={diversity!r} must be within [0, 1].")
    out = SuggestResult(ranked=[], strategy=strategy)
    records = [r for r in ws.cases if r.status in CANDIDATE_STATUSES]
    cand = [r for r in records if not r.missing]
    n_missing = len(records) - len(cand)
    if n_missing:
        out.notes.append(f"{n_missing} candidate case(s) skipped: image files missing")
    if not cand:
        raise InputError(
            f"Workspace {str(ws.root)!r} has no case with status 'new' or 'proposed' (and "
            "images present): nothing to suggest."
        )
    out.status = {r.case_id: r.status for r in cand}
    ids = [r.case_id for r in cand]
    if strategy == "random":
        out.ranked = rank_cases(ids, n=n, strategy="random", seed=seed)
        return out
    scores = {r.case_id: r.scores.get(strategy) for r in cand}
    n_none = sum(v is None for v in scores.values())
    if n_none == len(scores):
        out.notes.append(
            f"no case has a stored {strategy} score: fell back to the random baseline "
            f"(seed {seed}); propose the cases first to rank them by uncertainty (`ssseg "
            "workspace suggest --model CKPT` computes the scores)"
        )
        out.strategy = "random"
        out.ranked = rank_cases(ids, n=n, strategy="random", seed=seed)
        return out
    if n_none:
        out.notes.append(f"{n_none} case(s) without a score are ranked last")
    feats = None
    if diversity > 0:

        def image_features(cid: str) -> np.ndarray:
            return np.asarray(histogram_features(ws.load_case(cid, labels="none").images))

        compute = features if features is not None else image_features
        scored = [cid for cid, v in scores.items() if v is not None]
        feats = {}
        for i, cid in enumerate(scored):
            check_cancel(should_stop, "suggestion")
            f = ws.features(cid)
            if f is None:
                report(progress, i / len(scored), f"features of {cid} ({i + 1}/{len(scored)})")
                f = compute(cid)
                out.new_features[cid] = f
            feats[cid] = f
    out.ranked = rank_cases(scores, n=n, strategy=strategy, features=feats, diversity=diversity)
    return out
