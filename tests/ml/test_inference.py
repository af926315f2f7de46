"""Inference engine: events, outputs, uncertainty options, cancel, OOM fallback, devices."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch

from napari_ssseg.core.progress import Cancelled
from napari_ssseg.errors import InputError
from napari_ssseg.ml import inference
from napari_ssseg.ml.checkpoint import Checkpoint, load_checkpoint
from napari_ssseg.ml.device import resolve_device
from napari_ssseg.ml.inference import (
    _run_pass_with_fallback,
    _RunState,
    count_windows,
    predict_case,
    predict_case_iter,
)


def _run(gen):
    events = list(gen)
    assert events[-1]["event"] == "result"
    return events[:-1], events[-1]


def test_events_and_outputs(tiny_case, tiny_ckpt):
    progress, res = _run(predict_case_iter(tiny_case, tiny_ckpt, device="cpu"))
    assert progress and all(e["event"] == "progress" for e in progress)
    for e in progress:
        assert set(e) == {"event", "done", "total", "fraction", "stage", "message"}
        assert 0 <= e["done"] <= e["total"] and 0 <= e["fraction"] <= 1
    dones = [e["done"] for e in progress]
    assert dones == sorted(dones)  # never goes back
    assert progress[-1]["done"] == progress[-1]["total"]
    assert any(e["stage"] == "inference" and e["done"] > 0 for e in progress)

    shape = tiny_case.shape
    assert res["labels"].shape == shape and res["labels"].dtype == np.uint8
    assert set(np.unique(res["labels"])) <= {0, 1, 2, 3}
    p = res["probabilities"]
    assert p.shape == (4, *shape) and p.dtype == np.float32
    assert np.allclose(p.sum(0), 1.0, atol=1e-4)
    # labels are the argmax of the probabilities inside the brain, background outside
    brain = tiny_case.images.any(0)
    assert np.array_equal(res["labels"][brain], p.argmax(0)[brain])
    u = res["uncertainty"]
    assert u.shape == shape and u.dtype == np.float32
    assert 0 <= u.min() and u.max() <= 1 and u.max() > 0
    assert set(res["uncertainty_maps"]) == {"entropy"}
    info = res["info"]
    assert info["device"] == "cpu" and info["n_passes"] == 1
    assert info["uncertainty"] == "entropy"
    assert info["probability_channels"] == ["background", "NCR", "ED", "ET"]
    for key in ("load", "preprocess", "inference", "postprocess", "total"):
        assert info["timings"][key] >= 0


def test_raw_array_input_equals_case_input(tiny_case, tiny_ckpt):
    a = predict_case(tiny_case, tiny_ckpt, device="cpu")
    b = predict_case(tiny_case.images, tiny_ckpt, device="cpu", spacing=(1, 1, 1))
    assert np.array_equal(a["labels"], b["labels"])
    assert np.allclose(a["probabilities"], b["probabilities"], atol=1e-5)


def test_modality_order_is_fixed_automatically(tiny_case, tiny_ckpt):
    ref = predict_case(tiny_case, tiny_ckpt, device="cpu")
    order = [3, 0, 1, 2]
    shuffled = tiny_case.images[order]
    mods = [tiny_case.modalities[i] for i in order]
    with pytest.warns(UserWarning, match="reordered"):
        res = predict_case(shuffled, tiny_ckpt, device="cpu", modalities=mods)
    assert np.allclose(res["probabilities"], ref["probabilities"], atol=1e-5)


def test_missing_modality_is_a_clear_error(tiny_case, tiny_ckpt):
    two = tiny_case.images[[0, 3]]
    with pytest.raises(InputError, match="missing t1ce, t2"):
        predict_case(two, tiny_ckpt, device="cpu", modalities=["t1", "flair"])


def test_missing_modality_error_names_the_zero_option(tiny_case, tiny_ckpt):
    two = tiny_case.images[[1, 3]]
    with pytest.raises(InputError, match="not trained with modality dropout.*zero"):
        predict_case(two, tiny_ckpt, device="cpu", modalities=["t1ce", "flair"])
    with pytest.raises(InputError, match="missing_modalities"):
        predict_case(
            two, tiny_ckpt, device="cpu", modalities=["t1ce", "flair"], missing_modalities="x"
        )


def test_missing_modalities_are_zero_filled_with_a_warning(tiny_case, make_ckpt, tmp_path):
    ck = make_ckpt(tmp_path / "md.pt", provenance={"modality_dropout": 0.3})
    two = tiny_case.images[[1, 3]]  # t1ce, flair
    with pytest.warns(UserWarning, match="has no t1, t2.*weaker"):
        res = predict_case(two, ck, device="cpu", modalities=["t1ce", "flair"], spacing=(1, 1, 1))
    info = res["info"]
    assert info["missing_modalities"] == ["t1", "t2"]
    assert any("has no t1, t2" in n for n in info["notes"])
    assert res["labels"].shape == tiny_case.shape
    # the same as the full case with t1 and t2 replaced by zeros after the z-score
    prep = inference.prepare_input(
        two,
        load_checkpoint(ck),
        modalities=["t1ce", "flair"],
        spacing=(1, 1, 1),
        channel_index=[None, 0, None, 1],
    )
    assert prep.x.shape[1] == 4
    assert float(prep.x[0, 0].abs().max()) == 0.0 and float(prep.x[0, 2].abs().max()) == 0.0
    assert float(prep.x[0, 1].abs().max()) > 0.0
    # a full case reports nothing missing
    full = predict_case(tiny_case, ck, device="cpu")
    assert full["info"]["missing_modalities"] == []


def test_forced_zero_fill_warns_that_the_model_was_not_trained_for_it(tiny_case, tiny_ckpt):
    two = tiny_case.images[[1, 3]]
    with pytest.warns(UserWarning, match="NOT trained with modality dropout"):
        res = predict_case(
            two,
            tiny_ckpt,
            device="cpu",
            modalities=["t1ce", "flair"],
            spacing=(1, 1, 1),
            missing_modalities="zero",
        )
    assert res["info"]["missing_modalities"] == ["t1", "t2"]
    with pytest.raises(InputError, match="none of the model's inputs"):
        predict_case(
            tiny_case.images[[0]][:, :],
            tiny_ckpt,
            device="cpu",
            modalities=["dwi"],
            spacing=(1, 1, 1),
            missing_modalities="zero",
        )


def test_resampling_to_model_spacing(tiny_case, make_ckpt, tmp_path):
    ck = make_ckpt(tmp_path / "sp.pt", spacing_zyx=[2.0, 2.0, 2.0])
    res = predict_case(tiny_case, ck, device="cpu")
    info = res["info"]
    assert info["model_spacing_zyx"] == [2.0, 2.0, 2.0]
    crop = [b - a for a, b in info["crop_bbox"]]
    assert info["network_input_shape"][1:] == [round(c / 2) for c in crop]
    assert res["labels"].shape == tiny_case.shape


@pytest.mark.parametrize(
    ("options", "n_passes", "kind", "maps"),
    [
        ({"tta": True}, 4, "entropy", {"entropy"}),
        ({"mc_samples": 3}, 3, "mutual_information", {"entropy", "mutual_information"}),
        (
            {"mc_samples": 2, "tta": True},
            8,
            "mutual_information",
            {"entropy", "mutual_information"},
        ),
        (
            {"mc_samples": 2, "uncertainty": "entropy"},
            2,
            "entropy",
            {"entropy", "mutual_information"},
        ),
    ],
)
def test_uncertainty_options(tiny_case, tiny_ckpt, options, n_passes, kind, maps):
    res = predict_case(tiny_case, tiny_ckpt, device="cpu", **options)
    assert res["info"]["n_passes"] == n_passes
    assert res["info"]["uncertainty"] == kind
    assert set(res["uncertainty_maps"]) == maps
    for m in res["uncertainty_maps"].values():
        assert m.min() >= 0 and m.max() <= 1
    if "mutual_information" in maps:
        mi = res["uncertainty_maps"]["mutual_information"]
        assert mi.max() > 0  # dropout is active: samples differ
        assert np.all(mi <= res["uncertainty_maps"]["entropy"] + 1e-5)


def test_mc_dropout_is_seeded_and_restores_rng(tiny_case, tiny_ckpt):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = predict_case(tiny_case, tiny_ckpt, device="cpu", mc_samples=2, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    b = predict_case(tiny_case, tiny_ckpt, device="cpu", mc_samples=2, seed=5)
    assert np.array_equal(a["uncertainty"], b["uncertainty"])


def test_mc_without_dropout_warns(tiny_case, make_ckpt, tmp_path):
    ck = make_ckpt(tmp_path / "nodrop.pt", dropout=0.0)
    with pytest.warns(UserWarning, match="no dropout"):
        res = predict_case(tiny_case, ck, device="cpu", mc_samples=3)
    assert res["info"]["n_passes"] == 1 and res["info"]["uncertainty"] == "entropy"


def test_two_network_checkpoint_gives_disagreement(tiny_case, make_ckpt, tmp_path):
    ck = make_ckpt(tmp_path / "pair.pt", n_networks=2)
    res = predict_case(tiny_case, ck, device="cpu")
    assert res["info"]["uncertainty"] == "disagreement"
    d = res["uncertainty_maps"]["disagreement"]
    assert 0 <= d.min() and d.max() <= 1 and d.max() > 0
    assert np.array_equal(res["uncertainty"], d)


def test_ensemble_of_three_networks_averages_and_disagrees_over_every_pair(
    tiny_case, make_ckpt, tmp_path
):
    import dataclasses

    from napari_ssseg.ml.checkpoint import load_checkpoint

    ck = load_checkpoint(make_ckpt(tmp_path / "trio.pt", n_networks=3))
    assert ck.n_networks == 3
    singles = [
        predict_case(tiny_case, dataclasses.replace(ck, networks=[n]), device="cpu")
        for n in ck.networks
    ]
    res = predict_case(tiny_case, ck, device="cpu")
    assert res["info"]["uncertainty"] == "disagreement"
    probs = [s["probabilities"].astype(np.float64) for s in singles]
    assert np.allclose(res["probabilities"], np.mean(probs, axis=0), atol=1e-4)
    pairs = [(0, 1), (0, 2), (1, 2)]
    want = np.mean([0.5 * np.abs(probs[i] - probs[j]).sum(0) for i, j in pairs], axis=0)
    got = res["uncertainty_maps"]["disagreement"]
    inside = got > 0  # the maps are 0 outside the brain mask
    assert inside.mean() > 0.1
    first_pair = 0.5 * np.abs(probs[0] - probs[1]).sum(0)
    # the third network counts: the first pair alone is a different map
    assert not np.allclose(want[inside], first_pair[inside], atol=1e-3)
    assert np.allclose(got[inside], want[inside], atol=1e-4)


def test_regions_output(tiny_case, make_ckpt, tmp_path):
    ck = make_ckpt(tmp_path / "reg.pt", output="regions")
    res = predict_case(tiny_case, ck, device="cpu")
    p = res["probabilities"]
    assert p.shape == (3, *tiny_case.shape)
    assert res["info"]["probability_channels"] == ["WT", "TC", "ET"]
    brain = tiny_case.images.any(0)
    wt = (res["labels"] > 0)[brain]
    assert np.array_equal(wt, (p[0] > 0.5)[brain])


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"sw_batch_size": 0}, "sw_batch_size"),
        ({"overlap": 1.0}, "overlap"),
        ({"mc_samples": -1}, "mc_samples"),
        ({"roi_size": (10, 16, 16)}, "multiple of 4"),
        ({"uncertainty": "disagreement"}, "two networks"),
        ({"uncertainty": "mutual_information"}, "mc_samples"),
        ({"uncertainty": "entropie"}, "Did you mean 'entropy'"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_options(tiny_case, tiny_ckpt, options, match):
    with pytest.raises(InputError, match=match):
        predict_case(tiny_case, tiny_ckpt, **{"device": "cpu", **options})


def test_bad_inputs(tiny_ckpt):
    with pytest.raises(InputError, match=r"\(C, Z, Y, X\)"):
        predict_case(np.zeros((8, 8, 8), np.float32), tiny_ckpt, device="cpu")
    with pytest.raises(InputError, match="NaN"):
        img = np.ones((4, 16, 16, 16), np.float32)
        img[0, 3, 3, 3] = np.nan
        predict_case(img, tiny_ckpt, device="cpu")
    with pytest.raises(InputError, match="not a napari-ssseg checkpoint"):
        predict_case(np.ones((4, 16, 16, 16), np.float32), __file__, device="cpu")


# ------------------------------------------------------------------ cancel
def _threads():
    return {t for t in threading.enumerate() if t.name == "ssseg-predict"}


def test_close_mid_run_stops_the_worker(tiny_case, tiny_ckpt):
    gen = predict_case_iter(tiny_case, tiny_ckpt, device="cpu", tta=True, mc_samples=4)
    seen = 0
    for ev in gen:
        assert ev["event"] == "progress"
        if ev["stage"] == "inference" and ev["done"] >= 1:
            seen = ev["done"]
            break
    assert seen >= 1
    gen.close()
    assert not _threads()  # worker joined, nothing left running
    with pytest.raises(StopIteration):
        next(gen)


def test_should_stop_raises_cancelled(tiny_case, tiny_ckpt):
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 3

    events = []
    with pytest.raises(Cancelled):
        for ev in predict_case_iter(
            tiny_case, tiny_ckpt, device="cpu", tta=True, mc_samples=4, should_stop=should_stop
        ):
            events.append(ev)
    assert all(e["event"] == "progress" for e in events)  # no result was produced
    assert not _threads()


# ------------------------------------------------------------------ OOM and devices
class _OOMOnce(torch.nn.Module):
    """Wraps a network; the first forward raises a CUDA out-of-memory error."""

    def __init__(self, net, failures=1):
        super().__init__()
        self.net = net
        self.failures = failures

    def forward(self, x):
        if self.failures > 0:
            self.failures -= 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.net(x)


def test_oom_retries_with_smaller_window_batch(tiny_case, tiny_ckpt, monkeypatch):
    ck = load_checkpoint(tiny_ckpt)
    ref = predict_case(tiny_case, ck, device="cpu", sw_batch_size=4)
    orig_build = Checkpoint.build
    monkeypatch.setattr(
        Checkpoint,
        "build",
        lambda self, device="cpu": [_OOMOnce(n) for n in orig_build(self, device)],
    )
    with pytest.warns(UserWarning, match="retrying with 2"):
        res = predict_case(tiny_case, ck, device="cpu", sw_batch_size=4)
    assert res["info"]["sw_batch_size"] == 2
    assert any("Out of memory" in n for n in res["info"]["notes"])
    assert np.allclose(res["probabilities"], ref["probabilities"], atol=1e-5)


def test_oom_logic_falls_back_to_cpu_then_gives_up():
    calls = []

    def run(device, bs):
        calls.append((device.type, bs))
        if device.type != "cpu":
            raise torch.OutOfMemoryError("CUDA out of memory")
        return torch.zeros(1)

    notes = []
    state = _RunState(torch.device("cuda", 0), 4, amp=True)
    _run_pass_with_fallback(run, state, True, notes.append)
    assert calls == [("cuda", 4), ("cuda", 2), ("cuda", 1), ("cpu", 1)]
    assert state.device.type == "cpu" and not state.amp
    assert "falling back to the CPU" in notes[-1]

    state = _RunState(torch.device("cuda", 0), 1, amp=True)
    with pytest.raises(InputError, match="Out of memory"):
        _run_pass_with_fallback(run, state, False, notes.append)

    def other(device, bs):
        raise ValueError("not an OOM")

    with pytest.raises(ValueError, match="not an OOM"):
        _run_pass_with_fallback(other, _RunState(torch.device("cpu"), 2, False), True, print)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_absent_cuda_device():
    with pytest.raises(InputError, match="cuda.*requested.*--device auto"):
        resolve_device("cuda", allow_cpu_fallback=False)
    with pytest.warns(UserWarning, match="CPU instead"):
        assert resolve_device("cuda", allow_cpu_fallback=True).type == "cpu"
    with pytest.raises(InputError, match="cuda:N"):
        resolve_device("cpu:1")
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_absent_cuda_in_predict(tiny_case, tiny_ckpt):
    with pytest.raises(InputError, match="requested"):
        predict_case(tiny_case, tiny_ckpt, device="cuda", allow_cpu_fallback=False)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        res = predict_case(tiny_case, tiny_ckpt, device="cuda")
    assert res["info"]["device"] == "cpu"
    assert any("CPU instead" in str(w.message) for w in rec)


@pytest.mark.parametrize(
    ("size", "roi", "overlap", "expected"),
    [
        ((16, 16, 16), (16, 16, 16), 0.25, 1),
        ((8, 8, 8), (16, 16, 16), 0.25, 1),
        ((32, 16, 16), (16, 16, 16), 0.5, 3),
        ((40, 40, 40), (16, 16, 16), 0.25, 27),
    ],
)
def test_count_windows_matches_monai(size, roi, overlap, expected):
    from monai.inferers import sliding_window_inference

    assert count_windows(size, roi, overlap) == expected
    calls = []

    def predictor(x):
        calls.append(x.shape[0])
        return x

    sliding_window_inference(torch.zeros(1, 1, *size), roi, 1, predictor, overlap=overlap)
    assert len(calls) == expected


def test_module_exports_cancelled():
    assert inference.Cancelled is Cancelled


def test_heartbeat_during_slow_preprocessing(tiny_case, tiny_ckpt, monkeypatch):
    import time

    import napari_ssseg.core.preprocess as pp

    original = pp.preprocess

    def slow_preprocess(*args, **kwargs):
        time.sleep(1.6)
        return original(*args, **kwargs)

    monkeypatch.setattr(pp, "preprocess", slow_preprocess)
    stamps = []
    for ev in predict_case_iter(tiny_case, tiny_ckpt, device="cpu"):
        stamps.append((time.perf_counter(), ev.get("stage")))
    pre = [t for t, stage in stamps if stage == "preprocess"]
    assert len(pre) >= 3  # the first event plus heartbeats while preprocessing sleeps
    gaps = np.diff([t for t, _ in stamps])
    assert gaps.max() < 1.2


def test_uncertainty_is_zero_outside_the_brain(tiny_case, tiny_ckpt):
    from napari_ssseg.core.preprocess import brain_mask
    from napari_ssseg.ml.inference import predict_case

    case = tiny_case
    result = predict_case(case, tiny_ckpt, device="cpu")
    outside = ~brain_mask(case.images)
    assert outside.any()
    assert float(np.abs(result["uncertainty"][outside]).max()) == 0.0
    assert float(result["uncertainty"][~outside].max()) > 0.0


def test_minor_components_are_removed_by_option_and_by_checkpoint(tiny_case, make_ckpt, tmp_path):
    from napari_ssseg.core.editing import minor_components_mask

    lab = np.zeros((10, 10, 10), np.uint8)
    lab[1:5, 1:5, 1:5] = 2  # 64 voxels
    lab[7:9, 7:9, 7:9] = 1  # 8 voxels, remote
    assert minor_components_mask(lab, 0.0).sum() == 0
    drop = minor_components_mask(lab, 0.5)
    assert drop.sum() == 8 and drop[8, 8, 8] and not drop[2, 2, 2]
    assert minor_components_mask(lab, 0.1).sum() == 0  # 8 >= 0.1 * 64: kept
    with pytest.raises(InputError, match="min_fraction"):
        minor_components_mask(lab, 1.5)
    ck = make_ckpt(tmp_path / "pp.pt")
    full = predict_case(tiny_case, ck, device="cpu", min_component_fraction=0.0)
    assert full["info"]["postprocess"] == {"min_component_fraction": 0.0, "removed_voxels": 0}
    only = predict_case(tiny_case, ck, device="cpu", min_component_fraction=1.0)
    expected = full["labels"].copy()
    expected[minor_components_mask(expected, 1.0)] = 0
    np.testing.assert_array_equal(only["labels"], expected)
    assert only["info"]["postprocess"]["removed_voxels"] == int((full["labels"] != expected).sum())
    np.testing.assert_array_equal(only["probabilities"], full["probabilities"])
    # the checkpoint's own setting applies when the option is not given
    c = load_checkpoint(ck)
    c.normalization["postprocess"] = {"min_component_fraction": 1.0}
    own = predict_case(tiny_case, c, device="cpu")
    np.testing.assert_array_equal(own["labels"], expected)
    with pytest.raises(InputError, match="min_component_fraction"):
        predict_case(tiny_case, ck, device="cpu", min_component_fraction=2)
