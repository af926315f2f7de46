"""The one next-case suggestion policy (io.workspace.suggest.suggest_next) that the CLI and the
Workspace panel share: candidates, stored scores, random fallback, diversity features."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ssseg.core.phantom import make_phantom
from napari_ssseg.core.progress import Cancelled
from napari_ssseg.errors import InputError
from napari_ssseg.io.workspace import Workspace
from napari_ssseg.io.workspace.suggest import suggest_next
from napari_ssseg.io.writers import write_case


@pytest.fixture
def ws(tmp_path):
    src = tmp_path / "src"
    for seed in range(4):
        write_case(make_phantom((16, 24, 24), seed=seed).to_case(name=f"p{seed}"), src)
    with Workspace.create(tmp_path / "ws", from_dir=src) as w:
        yield w


def test_stored_scores_rank_and_unscored_cases_come_last(ws):
    ws.set_scores("p2", entropy=0.9)
    ws.set_scores("p0", entropy=0.1)
    ws.set_status("p3", "verified")  # not a candidate
    res = suggest_next(ws, 5)
    assert [s.case_id for s in res.ranked] == ["p2", "p0", "p1"]
    assert res.strategy == "entropy" and "1 case(s) without a score are ranked last" in res.notes
    assert res.status == {"p0": "new", "p1": "new", "p2": "new"}
    assert res.new_features == {}


def test_no_score_falls_back_to_the_seeded_random_baseline(ws):
    a = suggest_next(ws, 4, seed=3)
    b = suggest_next(ws, 4, strategy="random", seed=3)
    assert a.strategy == "random" and any("fell back to the random baseline" in n for n in a.notes)
    assert [s.case_id for s in a.ranked] == [s.case_id for s in b.ranked]
    assert sorted(s.case_id for s in a.ranked) == ["p0", "p1", "p2", "p3"]


def test_diversity_computes_missing_features_and_returns_them(ws):
    for i, cid in enumerate(ws.case_ids):
        ws.set_scores(cid, entropy=0.1 * (i + 1))
    ws.set_features("p0", np.ones(4))
    seen = []

    def features(cid):
        seen.append(cid)
        return np.full(4, float(len(seen)))

    res = suggest_next(ws, 2, diversity=0.5, features=features)
    assert sorted(seen) == ["p1", "p2", "p3"]  # p0's features were stored
    assert sorted(res.new_features) == ["p1", "p2", "p3"]
    assert len(res.ranked) == 2 and res.ranked[0].case_id == "p3"  # the highest score first
    assert ws.features("p1") is None  # nothing written: the caller stores them
    with pytest.raises(Cancelled):
        suggest_next(ws, 2, diversity=0.5, features=features, should_stop=lambda: True)


def test_bad_requests_are_named(ws):
    with pytest.raises(InputError, match="at least 1"):
        suggest_next(ws, 0)
    with pytest.raises(InputError, match="within"):
        suggest_next(ws, 2, diversity=2)
    for cid in ws.case_ids:
        ws.set_status(cid, "verified")
    with pytest.raises(InputError, match="nothing to suggest"):
        suggest_next(ws, 2)
