"""Tests of the training strategies and the masked DiceCE loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tiny_checkpoints import stop_after_steps

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from napari_ssseg.errors import InputError  # noqa: E402
from napari_ssseg.ml.strategies.base import (  # noqa: E402
    STRATEGIES,
    get_strategy,
    masked_dice_ce,
    masked_region_dice,
    sigmoid_rampup,
)
from napari_ssseg.ml.strategies.mean_teacher import UAMT, ema_avg_fn  # noqa: E402
from napari_ssseg.ml.strategies.pseudo_label import (  # noqa: E402
    PseudoLabel,
    lee_alpha,
    pseudo_batches,
)
from napari_ssseg.ml.train import read_events, train  # noqa: E402

TINY = {
    "name": "UNet",
    "in_channels": 4,
    "out_channels": 4,
    "channels": [4, 8, 16],
    "strides": [2, 2],
    "num_res_units": 0,
    "dropout": 0.1,
}


def write_phantoms(root, n_labelled, n_unlabelled):
    """Tiny (32, 40, 40) 2 mm phantom case folders (the last ones without labels)."""
    import dataclasses

    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.io.writers import write_case

    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_labelled + n_unlabelled):
        case = make_phantom((32, 40, 40), (2.0, 2.0, 2.0), seed=i).to_case(name=f"c{i}")
        if i >= n_labelled:
            case = dataclasses.replace(case, labels=None)
        write_case(case, root)
    return root


def tiny_config(data, out, **kw):
    from napari_ssseg.ml.train import TrainConfig

    base = dict(
        data=str(data), out=str(out), epochs=2, iterations_per_epoch=2, device="cpu",
        patch_size=(16, 16, 16), network=dict(TINY), batch_size=2, seed=3,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["networks"][0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_phantoms(tmp_path_factory.mktemp("strat_data") / "data", 3, 2)


def _logits_for(target, k=4, scale=10.0):
    return (torch.nn.functional.one_hot(target, k).permute(0, 4, 1, 2, 3).float() * 2 - 1) * scale


def test_registry():
    get_strategy("supervised")
    assert set(STRATEGIES) == {
        "supervised",
        "pseudo-label",
        "pseudo-label-superpixel",
        "cps",
        "mean-teacher",
        "uamt",
        "self-training",
        "sp3",
    }
    with pytest.raises(InputError, match="Unknown training strategy 'fixmatch'.*cps"):
        get_strategy("fixmatch")


def test_masked_dice_ce_perfect_and_wrong():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (2, 4, 4, 4), generator=g)
    good = masked_dice_ce(_logits_for(target), target)
    bad = masked_dice_ce(_logits_for((target + 1) % 4), target)
    assert float(good["loss"]) < 0.01
    assert float(bad["loss"]) > 1.5


def test_masked_dice_ce_ignore_and_weights():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 4, (1, 4, 4, 4), generator=g)
    logits = torch.randn(1, 4, 4, 4, 4, generator=g)
    ign = target.clone()
    ign[0, :2] = 255
    a = masked_dice_ce(logits, ign)
    # changing the logits of ignored voxels does not change the loss
    logits2 = logits.clone()
    logits2[0, :, :2] = torch.randn(4, 2, 4, 4, generator=g) * 5
    b = masked_dice_ce(logits2, ign)
    torch.testing.assert_close(a["loss"], b["loss"])
    # weight 0 on a voxel == ignoring it
    w = torch.ones(1, 4, 4, 4)
    w[0, :2] = 0
    c = masked_dice_ce(logits, target, w)
    torch.testing.assert_close(a["loss"], c["loss"])
    # nothing valid: zero loss that still back-propagates
    logits.requires_grad_(True)
    z = masked_dice_ce(logits, torch.full_like(target, 255))
    z["loss"].backward()
    assert float(z["loss"].detach()) == 0.0 and logits.grad is not None


def test_masked_dice_ce_shape_error():
    with pytest.raises(InputError, match="masked_dice_ce needs"):
        masked_dice_ce(torch.zeros(1, 4, 4, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


def test_masked_region_dice_scores_the_overlapping_regions():
    g = torch.Generator().manual_seed(2)
    target = torch.randint(0, 4, (2, 4, 4, 4), generator=g)
    assert float(masked_region_dice(_logits_for(target), target)) < 0.01
    n = {c: int((target == c).sum()) for c in range(4)}
    # NCR called ET: WT and TC stay right, only ET is wrong (false positives on NCR)
    swapped = torch.where(target == 1, torch.full_like(target, 3), target)
    et_dice = 2 * n[3] / (2 * n[3] + n[1])
    expected = (1 - et_dice) / 3
    assert float(masked_region_dice(_logits_for(swapped), target)) == pytest.approx(
        expected, abs=1e-4
    )
    # the per-class Dice counts the same error twice (NCR 0 and ET below 1)
    class_loss = float(masked_dice_ce(_logits_for(swapped), target, ce_weight=0.0)["dice"])
    assert class_loss == pytest.approx((1 + 1 - et_dice) / 4, abs=1e-4)
    # oedema called background: only WT is wrong (missed voxels)
    no_ed = torch.where(target == 2, torch.zeros_like(target), target)
    wt = n[1] + n[2] + n[3]
    wt_dice = 2 * (wt - n[2]) / (2 * wt - n[2])
    assert float(masked_region_dice(_logits_for(no_ed), target)) == pytest.approx(
        (1 - wt_dice) / 3, abs=1e-4
    )
    # ignored voxels and zero weights drop out; nothing valid -> 0 that back-propagates
    logits = torch.randn(2, 4, 4, 4, 4, generator=g)
    ign = target.clone()
    ign[:, :2] = 255
    w = torch.ones(2, 4, 4, 4)
    w[:, :2] = 0
    torch.testing.assert_close(
        masked_region_dice(logits, ign), masked_region_dice(logits, target, w)
    )
    logits.requires_grad_(True)
    z = masked_region_dice(logits, torch.full_like(target, 255))
    z.backward()
    assert float(z.detach()) == 0.0 and logits.grad is not None
    with pytest.raises(InputError, match="masked_region_dice needs"):
        masked_region_dice(torch.zeros(1, 4, 4, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(InputError, match=r"region classes \[3\] are not foreground"):
        masked_region_dice(torch.zeros(1, 3, 2, 2, 2), torch.zeros(1, 2, 2, 2, dtype=torch.long))


def test_supervised_region_dice_weight_adds_the_region_term():
    from napari_ssseg.ml.strategies.supervised import Supervised

    g = torch.Generator().manual_seed(3)
    model = torch.nn.Conv3d(4, 4, 1)
    batch = {
        "image": torch.randn(2, 4, 4, 4, 4, generator=g),
        "label": torch.randint(0, 4, (2, 4, 4, 4), generator=g),
    }
    sched = {"epochs": 1, "iterations_per_epoch": 1}
    plain = Supervised(model, {}, sched).training_step(batch, None, 0)
    assert "region_dice" not in plain
    with_region = Supervised(model, {"region_dice": 0.5}, sched).training_step(batch, None, 0)
    expected = masked_region_dice(model(batch["image"]), batch["label"])
    torch.testing.assert_close(with_region["region_dice"], expected.detach())
    torch.testing.assert_close(with_region["loss"], plain["loss"] + 0.5 * expected)


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [(0, 0.0), (199, 0.0), (200, 0.0), (450, 1.5), (700, 3.0), (999, 3.0)],
)
def test_lee_alpha_paper_schedule(epoch, expected):
    assert lee_alpha(epoch, 3.0, 200, 700) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("n_t", "alpha", "expected"), [(250, 3.0, 188), (250, 0.0, 0), (250, 1.0, 125), (2, 3.0, 2)]
)
def test_pseudo_batches(n_t, alpha, expected):
    assert pseudo_batches(n_t, alpha) == expected


def test_pseudo_steps_per_epoch_match_schedule():
    net = torch.nn.Conv3d(4, 4, 1)
    s = PseudoLabel(net, {}, {"epochs": 10, "iterations_per_epoch": 8, "total_steps": 80})
    assert (s.t1, s.t2, s.k) == (2.0, 7.0, 2)
    for epoch in range(10):
        n = sum(s.is_pseudo_step(epoch * 8 + i) for i in range(8))
        assert n == s.n_pseudo(epoch)
    assert s.n_pseudo(0) == 0 and s.n_pseudo(9) == 6  # ceil(8 * 3/4)
    with pytest.raises(InputError, match="t1_fraction"):
        PseudoLabel(net, {"t1_fraction": 0.8, "t2_fraction": 0.5}, s.schedule)


def test_sigmoid_rampup():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(100, 100) == 1.0 and sigmoid_rampup(500, 100) == 1.0
    assert sigmoid_rampup(3, 0) == 1.0


def test_ema_teacher_update():
    from torch.optim.swa_utils import AveragedModel

    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema = AveragedModel(net, avg_fn=ema_avg_fn(0.99))
    ema.update_parameters(net)  # first update copies
    assert float(ema.module.weight) == 1.0
    with torch.no_grad():
        net.weight.fill_(3.0)
    ema.update_parameters(net)  # t = 1: alpha = min(1 - 1/2, 0.99) = 0.5
    assert float(ema.module.weight) == pytest.approx(2.0)
    for _ in range(500):
        ema.update_parameters(net)
    # alpha is capped at 0.99 (not 1 - 1/(t+1) -> 1): the teacher has converged to 3
    assert float(ema.module.weight) == pytest.approx(3.0, abs=1e-2)


def test_uamt_threshold():
    net = torch.nn.Conv3d(4, 4, 1)
    s = UAMT(net, {}, {"epochs": 1, "iterations_per_epoch": 10, "total_steps": 10})
    assert s.threshold(0, 4) == pytest.approx((0.75 + 0.25 * math.exp(-5)) * math.log(4))
    assert s.threshold(10, 4) == pytest.approx(math.log(4))
    with pytest.raises(InputError, match="passes"):
        UAMT(net, {"passes": 0}, s.schedule)


@pytest.mark.parametrize(
    ("strategy", "params"),
    [
        ("pseudo-label", {"t1_fraction": 0.0, "t2_fraction": 0.5, "reinfer_fraction": 0.5}),
        ("mean-teacher", {}),
        ("uamt", {"passes": 2}),
        ("self-training", {"threshold": 0.3}),
    ],
)
def test_strategy_runs_and_resumes_exactly(data_dir, tmp_path, strategy, params):
    from napari_ssseg.ml.checkpoint import load_checkpoint

    kw = dict(strategy=strategy, strategy_params=params, epochs=2, iterations_per_epoch=2)
    full, part = tmp_path / "full", tmp_path / "part"
    res = train(tiny_config(data_dir, full, **kw))
    assert res["status"] == "done"
    ev = read_events(full / "events.jsonl")
    assert ev[0]["n_unlabelled"] == 2
    losses = [e["losses"] for e in ev if e["event"] == "epoch"]
    if strategy == "pseudo-label":
        assert losses[-1]["pseudo"] > 0  # pseudo-labelled batches were used
        state = torch.load(full / "last.pt", weights_only=True)["training_state"]
        assert set(state["strategy_state"]["labels"]) == {"c3", "c4"}
    elif strategy == "self-training":
        assert losses[0]["phase"] == 1 and losses[0]["pseudo"] == 0
        assert losses[1]["phase"] == 2 and losses[1]["pseudo"] > 0
        state = torch.load(full / "last.pt", weights_only=True)["training_state"]
        labels = state["strategy_state"]["labels"]
        assert set(labels) == {"c3", "c4"}
        assert state["scheduler"]["lr_lambdas"][0]["offset"] == 2  # cosine restarted for M2
    else:
        assert losses[-1]["consistency"] >= 0 and losses[-1]["weight"] > 0
    assert load_checkpoint(full / "best.pt").provenance["strategy"] == strategy
    assert train(tiny_config(data_dir, part, **kw), should_stop=stop_after_steps(3))["step"] == 3
    # resuming without the parameters uses the saved ones (with others: refused)
    if params:
        bad = {k: (v + 0.1 if isinstance(v, float) else v + 1) for k, v in params.items()}
        with pytest.raises(InputError, match="strategy parameters"):
            train(tiny_config(data_dir, part, resume=True, **{**kw, "strategy_params": bad}))
    train(tiny_config(data_dir, part, resume=True, **{**kw, "strategy_params": {}}))
    a, b = weights(full / "last.pt"), weights(part / "last.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match="trained with"):
        train(tiny_config(data_dir, part, resume=True, **{**kw, "strategy": "supervised"}))


def test_mean_teacher_saves_teacher(data_dir, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(data_dir, out, strategy="mean-teacher", epochs=1))
    saved = weights(out / "last.pt")
    teacher = torch.load(out / "last.pt", weights_only=True)["training_state"]["strategy_state"]
    teacher = teacher["teacher"]
    for k, v in saved.items():
        torch.testing.assert_close(v, teacher["module." + k])
    assert np.isfinite(float(next(iter(saved.values())).sum()))


def test_self_training_reinitialises_the_student(data_dir, tmp_path):
    """M2 starts from scratch: its weights after the switch equal a fresh seeded network."""
    from napari_ssseg.ml.networks import build_network
    from napari_ssseg.ml.strategies.self_training import SelfTraining

    seen = {}
    orig = SelfTraining.on_epoch_start

    def spy(self, epoch, engine):
        orig(self, epoch, engine)
        if self.phase == 2 and "w" not in seen:
            seen["w"] = {k: v.clone() for k, v in self.eval_model().state_dict().items()}

    SelfTraining.on_epoch_start = spy
    try:
        train(tiny_config(data_dir, tmp_path / "run", strategy="self-training", seed=5))
    finally:
        SelfTraining.on_epoch_start = orig
    torch.manual_seed(5 + 1)
    fresh = build_network(TINY).state_dict()
    for k, v in fresh.items():
        torch.testing.assert_close(seen["w"][k], v)
    with pytest.raises(InputError, match="epochs >= 2"):
        train(tiny_config(data_dir, tmp_path / "r1", strategy="self-training", epochs=1))
