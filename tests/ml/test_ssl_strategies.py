"""Tests of ``cps``, ``pseudo-label-superpixel``, ``sp3``, AMP and gradient checkpointing."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from tiny_checkpoints import stop_after_steps

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from test_train import TINY, _rank_errors, tiny_config, weights, write_phantoms  # noqa: E402

from napari_ssseg.errors import InputError, SsegError  # noqa: E402
from napari_ssseg.ml.train import read_events, train  # noqa: E402


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_phantoms(tmp_path_factory.mktemp("ssl_data") / "data", 3, 2)


@pytest.fixture(scope="module")
def scribble_ws(tmp_path_factory):
    """Workspace: c0, c1 labelled; c2, c3 scribbled (strokes from the truth); c4 neither."""
    from napari_ssseg.core.scribbles import simulate_scribbles
    from napari_ssseg.io.readers import load_case
    from napari_ssseg.io.workspace import Workspace

    root = tmp_path_factory.mktemp("sp3_ws")
    data = write_phantoms(root / "data", n_labelled=5, n_unlabelled=0, seed0=10)
    ws_dir = root / "ws"
    with Workspace.create(ws_dir, from_dir=data) as ws:
        for cid in ("c0", "c1"):
            ws.save_labels(cid, load_case(data / cid).labels, source="human")
        for cid in ("c2", "c3"):
            ws.save_scribbles(cid, simulate_scribbles(load_case(data / cid).labels, n_slices=2))
    return ws_dir


# --------------------------------------------------------------------------- cps
def test_softmax_ensemble_averages_probabilities():
    from napari_ssseg.ml.strategies.cps import SoftmaxEnsemble

    a, b = torch.nn.Conv3d(2, 4, 1), torch.nn.Conv3d(2, 4, 1)
    x = torch.randn(1, 2, 3, 3, 3)
    ens = SoftmaxEnsemble([a, b])
    want = (torch.softmax(a(x), 1) + torch.softmax(b(x), 1)) / 2
    torch.testing.assert_close(torch.softmax(ens(x), 1), want)


def test_cps_loss_is_the_papers_formula():
    from napari_ssseg.ml.strategies.base import masked_dice_ce
    from napari_ssseg.ml.strategies.cps import CPS

    torch.manual_seed(0)
    n1, n2 = torch.nn.Conv3d(2, 4, 1), torch.nn.Conv3d(2, 4, 1)
    s = CPS(n1, {"phi": 0.5, "warmup_fraction": 0.5}, {"epochs": 1, "total_steps": 10})
    s.set_networks([n1, n2])
    bl = {"image": torch.randn(2, 2, 4, 4, 4), "label": torch.randint(0, 4, (2, 4, 4, 4))}
    bu = {"image": torch.randn(2, 2, 4, 4, 4)}
    early = s.training_step(bl, bu, 0)  # warm-up: supervised only
    sup = masked_dice_ce(n1(bl["image"]), bl["label"])["loss"]
    sup = sup + masked_dice_ce(n2(bl["image"]), bl["label"])["loss"]
    torch.testing.assert_close(early["loss"], sup)
    assert float(early["cps"]) == 0 and not s.wants_unlabelled(4) and s.wants_unlabelled(5)
    late = s.training_step(bl, bu, 5)
    x = torch.cat([bl["image"], bu["image"]])
    l1, l2 = n1(x), n2(x)
    cross = masked_dice_ce(l1, l2.argmax(1), ce_weight=0.0)["loss"]
    cross = cross + masked_dice_ce(l2, l1.argmax(1), ce_weight=0.0)["loss"]
    torch.testing.assert_close(late["loss"], sup + 0.5 * cross)
    late["loss"].backward()  # both networks get gradients
    assert n1.weight.grad is not None and n2.weight.grad is not None
    with pytest.raises(InputError, match="phi"):
        CPS(n1, {"phi": -1}, {"epochs": 1, "total_steps": 10})


def test_cps_trains_saves_both_networks_and_resumes_exactly(data_dir, tmp_path):
    from napari_ssseg.io.readers import load_case
    from napari_ssseg.ml.checkpoint import load_checkpoint
    from napari_ssseg.ml.inference import predict_case

    kw = dict(strategy="cps", strategy_params={"warmup_fraction": 0.25})
    full, part = tmp_path / "full", tmp_path / "part"
    assert train(tiny_config(data_dir, full, **kw))["status"] == "done"
    ev = read_events(full / "events.jsonl")
    assert ev[0]["networks"] == 2
    losses = [e["losses"] for e in ev if e["event"] == "epoch"]
    assert losses[-1]["cps"] > 0 and losses[-1]["supervised_2"] > 0
    for name in ("best.pt", "last.pt"):
        ck = load_checkpoint(full / name)
        assert ck.n_networks == 2 and ck.provenance["strategy"] == "cps"
    nets = torch.load(full / "last.pt", weights_only=True)["networks"]
    assert any(not torch.equal(nets[0][k], nets[1][k]) for k in nets[0])  # two networks
    res = predict_case(load_case(data_dir / "c0"), full / "best.pt", device="cpu")
    assert res["labels"].shape == (32, 40, 40)
    # interrupted + resumed == uninterrupted, for both networks
    assert train(tiny_config(data_dir, part, **kw), should_stop=stop_after_steps(3))["step"] == 3
    train(tiny_config(data_dir, part, resume=True, **kw))
    got = torch.load(part / "last.pt", weights_only=True)["networks"]
    for a, b in zip(nets, got):
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    # a CPS pair can only seed another CPS run
    with pytest.raises(InputError, match="2 networks"):
        train(tiny_config(data_dir, tmp_path / "sup", init=str(full / "best.pt"), epochs=1))


# --------------------------------------------------------------------------- Thompson
def test_superpixel_refinement_of_a_pseudo_label_moves_it_towards_the_truth(tmp_path):
    """An under-segmented pseudo-label grows back towards the tumour (WT Dice rises)."""
    from scipy import ndimage as ndi

    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.ml.data import prepare_case
    from napari_ssseg.ml.strategies.pseudo_label import PseudoLabelSuperpixel
    from napari_ssseg.ml.train import _EngineView, region_dice

    case = make_phantom((48, 64, 64), (2.0, 2.0, 2.0), seed=4).to_case(name="u")
    mods = ("t1", "t1ce", "t2", "flair")
    norm = {"margin": 2, "clip": [0.5, 99.5], "n4": False, "spacing_zyx": [2.0, 2.0, 2.0]}
    pc = prepare_case(case, tmp_path, modalities=mods, normalization=norm)
    gt = np.asarray(pc.load_label())
    pred = np.where(ndi.binary_erosion(gt > 0, iterations=2), gt, 0).astype(np.uint8)
    strat = PseudoLabelSuperpixel(torch.nn.Identity(), {}, {"epochs": 10, "total_steps": 10})
    view = _EngineView(strat, None, (16, 16, 16), torch.device("cpu"), mods)
    refined = strat.pseudo_label(pc, pred, view)
    assert refined.shape == gt.shape and strat._stats[-1]["changed"] > 0
    assert region_dice(refined, gt)["WT"] > region_dice(pred, gt)["WT"] + 0.02


def test_pseudo_label_superpixel_trains_and_logs(data_dir, tmp_path):
    params = {"t1_fraction": 0.0, "t2_fraction": 0.5, "reinfer_fraction": 0.5}
    out = tmp_path / "run"
    res = train(
        tiny_config(data_dir, out, strategy="pseudo-label-superpixel", strategy_params=params)
    )
    assert res["status"] == "done"
    ev = read_events(out / "events.jsonl")
    st = [e for e in ev if e["event"] == "strategy"]
    assert st and "refined 2 pseudo-label(s)" in st[0]["message"]
    assert {c["case"] for c in st[0]["cases"]} == {"c3", "c4"}
    assert [e for e in ev if e["event"] == "epoch"][-1]["losses"]["pseudo"] > 0


# --------------------------------------------------------------------------- sp3
def test_expanded_target_rules():
    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.core.scribbles import BACKGROUND, ScribblePropagator
    from napari_ssseg.ml.strategies.sp3 import expanded_target, scribble_codes

    ph = make_phantom((32, 40, 40), (2.0, 2.0, 2.0), seed=2)
    prop = ScribblePropagator(ph.images, ("t1", "t1ce", "t2", "flair"), ph.brain, (2, 2, 2))
    ses = prop.sessions["wt"]
    full = np.zeros(ph.labels.shape, np.int64)
    full[ses.crop] = ses.labels
    z, y, x = np.argwhere(ph.labels == 2)[0]
    sp_a = full[z, y, x]
    codes = np.zeros(ph.labels.shape, np.uint8)
    codes[z, y, x] = 2
    vox_b = np.argwhere((full > 0) & (full != sp_a) & ~ph.labels.astype(bool))[0]
    sp_b = full[tuple(vox_b)]
    both = np.argwhere(full == sp_b)[:2]
    codes[tuple(both[0])] = BACKGROUND
    codes[tuple(both[1])] = 3  # conflict in superpixel b
    tgt = expanded_target(prop, codes)
    assert (tgt[full == sp_a] == 2).all()  # expanded
    in_b = full == sp_b
    assert tgt[tuple(both[0])] == 0 and tgt[tuple(both[1])] == 3
    assert (tgt[in_b] == 255).sum() == in_b.sum() - 2  # conflicting: strokes only
    assert (tgt[(full != sp_a) & ~in_b] == 255).all()
    back = scribble_codes(np.where(tgt == 255, 255, tgt))
    assert back[tuple(both[0])] == BACKGROUND and back[z, y, x] == 2


def test_sp3_trains_on_labels_and_scribbles_and_resumes(scribble_ws, tmp_path):
    kw = dict(
        strategy="sp3",
        strategy_params={"start_fraction": 0.5, "reinfer_fraction": 0.5, "n_segments": 400},
        epochs=2,
        iterations_per_epoch=2,
    )
    full, part = tmp_path / "full", tmp_path / "part"
    assert train(tiny_config(scribble_ws, full, **kw))["status"] == "done"
    ev = read_events(full / "events.jsonl")
    start = ev[0]
    assert start["n_weak"] == 2 and start["n_unlabelled"] == 1
    assert any("does not use the 1 case" in n for n in start["notes"])
    msgs = [e["message"] for e in ev if e["event"] == "strategy"]
    assert msgs[0].startswith("expanded the scribbles of 2 case(s)")
    assert msgs[1].startswith("pseudo-labels for 2 scribbled case(s)")
    losses = [e["losses"] for e in ev if e["event"] == "epoch"]
    assert losses[0]["scribble"] > 0 and losses[0]["weight"] == 0
    assert losses[1]["weight"] > 0
    state = torch.load(full / "last.pt", weights_only=True)["training_state"]["strategy_state"]
    assert set(state["targets"]) == {"c2", "c3"}
    t = state["targets"]["c2"]
    lab, pseudo, w = t["label"].numpy(), t["pseudo"].numpy() > 0, t["weight"].numpy()
    known = (lab != 255) & ~pseudo
    assert pseudo.any() and known.any()
    assert (w[known] == 1).all() and 0 < w[pseudo].min() and w[pseudo].max() <= 1
    assert state["tau"] is not None and state["tau"].shape == (4,)
    assert train(tiny_config(scribble_ws, part, **kw), should_stop=stop_after_steps(3))["step"] == 3
    train(tiny_config(scribble_ws, part, resume=True, **kw))
    a, b = weights(full / "last.pt"), weights(part / "last.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_sp3_from_scribbles_alone(tmp_path):
    from napari_ssseg.core.scribbles import simulate_scribbles
    from napari_ssseg.io.readers import load_case
    from napari_ssseg.io.workspace import Workspace

    data = write_phantoms(tmp_path / "data", n_labelled=2, n_unlabelled=0, seed0=20)
    ws_dir = tmp_path / "ws"
    with Workspace.create(ws_dir, from_dir=data) as ws:
        for cid in ("c0", "c1"):
            ws.save_scribbles(cid, simulate_scribbles(load_case(data / cid).labels, n_slices=2))
    out = tmp_path / "run"
    kw = {"start_fraction": 0.5, "n_segments": 300}
    res = train(tiny_config(ws_dir, out, strategy="sp3", strategy_params=kw))
    assert res["status"] == "done" and res["best"] is not None
    ev = read_events(out / "events.jsonl")
    assert ev[0]["n_train"] == 0 and ev[0]["n_weak"] == 2
    assert not [e for e in ev if e["event"] == "validation"]


def test_sp3_needs_scribbles_or_labels(data_dir, tmp_path):
    data = write_phantoms(tmp_path / "data", n_labelled=0, n_unlabelled=1)
    with pytest.raises(InputError, match="sp3 needs scribbles"):
        train(tiny_config(data, tmp_path / "run", strategy="sp3"))


# --------------------------------------------------------------------------- memory options
@pytest.mark.parametrize(
    "name",
    [
        "UNet",
        pytest.param("BasicUNet", marks=pytest.mark.slow),
        pytest.param("SegResNet", marks=pytest.mark.slow),
        pytest.param("UNETR", marks=pytest.mark.slow),
        pytest.param("DynUNet", marks=pytest.mark.slow),
    ],
)
def test_gradient_checkpointing_same_gradients(name):
    from napari_ssseg.ml.networks import (
        ARCH_DEFAULTS,
        build_network,
        enable_gradient_checkpointing,
    )

    cfg = {"name": name, "in_channels": 4, "out_channels": 4, **ARCH_DEFAULTS[name]}
    if name == "UNETR":
        cfg["img_size"] = [32, 32, 32]
    torch.manual_seed(0)
    plain = build_network(cfg)
    ck = copy.deepcopy(plain)
    assert enable_gradient_checkpointing(ck) > 0, name
    x = torch.randn(1, 4, 32, 32, 32)
    for net in (plain, ck):
        torch.manual_seed(1)
        net(x).square().mean().backward()
    for p, q in zip(plain.parameters(), ck.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)
    # a deep copy (e.g. a mean teacher) runs its own weights, not the original's
    twin = copy.deepcopy(ck)
    with torch.no_grad():
        for p in twin.parameters():
            p.zero_()
        assert not torch.equal(twin(x), ck(x))


def test_amp_and_checkpointing_in_training(data_dir, tmp_path):
    base = tmp_path / "base"
    train(tiny_config(data_dir, base, epochs=1))
    gc = tmp_path / "gc"
    train(tiny_config(data_dir, gc, epochs=1, gradient_checkpointing=True))
    a, b = weights(base / "last.pt"), weights(gc / "last.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    amp = tmp_path / "amp"
    res = train(tiny_config(data_dir, amp, epochs=1, amp=True))
    start = read_events(amp / "events.jsonl")[0]
    assert res["status"] == "done" and start["amp"] == "bfloat16"
    c = weights(amp / "last.pt")
    diff = max(float((a[k].float() - c[k].float()).abs().max()) for k in a)
    assert 0 < diff < 0.05  # bfloat16 autocast really ran, and trained the same way


def test_out_of_memory_names_the_memory_options(data_dir, tmp_path, monkeypatch):
    from napari_ssseg.ml.strategies.cps import CPS

    def boom(self, *a, **k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(CPS, "training_step", boom)
    out = tmp_path / "run"
    with pytest.raises(SsegError, match="gradient-checkpointing.*amp.*cps trains two"):
        train(tiny_config(data_dir, out, strategy="cps", epochs=1))
    assert "Out of memory" in read_events(out / "events.jsonl")[-1]["message"]
    assert TINY["name"] == "UNet"


def test_cps_with_gradient_checkpointing_under_ddp_gloo(data_dir, tmp_path):
    """Two DDP-wrapped networks (and checkpointed blocks) on 2 CPU processes."""
    import json
    import subprocess
    import sys

    from napari_ssseg.ml.checkpoint import load_checkpoint

    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "napari_ssseg.commands.train", str(data_dir), "--out", str(out),
        "--strategy", "cps", "--param", "warmup_fraction=0.25", "--gradient-checkpointing",
        "--epochs", "2", "--iterations-per-epoch", "2", "--patch-size", "16",
        "--device", "cpu", "--network", json.dumps(TINY), "--quiet",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, timeout=300)
    assert proc.returncode == 0, _rank_errors(proc.stderr.decode())
    ev = read_events(out / "events.jsonl")
    assert ev[0]["world_size"] == 2 and ev[0]["networks"] == 2
    assert ev[0]["gradient_checkpointing"] is True and ev[-1]["event"] == "done"
    assert [e for e in ev if e["event"] == "epoch"][-1]["losses"]["cps"] > 0
    assert load_checkpoint(out / "best.pt").n_networks == 2


def test_sp3_reinference_keeps_annotations_and_pseudo_labels_apart(tmp_path):
    """Each re-inference starts from the expanded strokes, not from the last pseudo-labels."""
    from types import SimpleNamespace

    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.core.scribbles import simulate_scribbles
    from napari_ssseg.ml.data import prepare_case, scribbles_to_target
    from napari_ssseg.ml.strategies.sp3 import SP3
    from napari_ssseg.ml.train import _EngineView

    case = make_phantom((32, 40, 40), (2.0, 2.0, 2.0), seed=6).to_case(name="s")
    mods = ("t1", "t1ce", "t2", "flair")
    norm = {"margin": 2, "clip": [0.5, 99.5], "n4": False, "spacing_zyx": [2.0, 2.0, 2.0]}
    weak = scribbles_to_target(simulate_scribbles(case.labels, n_slices=2))
    pc = prepare_case(case, tmp_path, modalities=mods, normalization=norm, weak_labels=weak)
    gt = prepare_case(case, tmp_path / "gt", modalities=mods, normalization=norm).load_label()
    probs = np.full((4, *pc.shape), 0.02, np.float32)
    for k in range(4):
        probs[k][np.asarray(gt) == k] = 0.94  # a confident, correct "model"
    s = SP3(
        torch.nn.Identity(),
        {"n_segments": 300},
        {"epochs": 5, "iterations_per_epoch": 2, "total_steps": 10},
    )
    view = _EngineView(s, SimpleNamespace(unlabelled=[pc]), (16, 16, 16), torch.device("cpu"), mods)
    view.predict_probabilities = lambda net, c: probs
    s.on_epoch_start(0, view)
    expanded = s.targets["s"]["label"].copy()
    known = expanded != 255
    assert known.any() and not s.targets["s"]["pseudo"].any()
    for epoch in (1, 2):  # two re-inferences
        s._pseudo_labels(epoch, [pc], view)
        t = s.targets["s"]
        pseudo = t["pseudo"] > 0
        assert np.array_equal((t["label"] != 255) & ~pseudo, known)
        assert np.array_equal(t["label"][known], expanded[known])
        assert pseudo.mean() > 0.5  # the confident model's superpixels are accepted
        agree = (t["label"][pseudo] == np.asarray(gt)[pseudo]).mean()
        assert agree > 0.9
