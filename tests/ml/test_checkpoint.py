"""Checkpoints: round trip, safe loading, clear errors, modality matching."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch

from napari_ssseg.errors import InputError
from napari_ssseg.ml.checkpoint import (
    FORMAT,
    Checkpoint,
    class_channel_map,
    load_checkpoint,
    load_model,
    match_modalities,
    save_checkpoint,
)
from napari_ssseg.ml.networks import build_network


class _Payload:
    """Unpickling this creates a marker file (stands in for arbitrary code execution)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_round_trip(tmp_path, tiny_config):
    torch.manual_seed(1)
    net = build_network(tiny_config)
    path = save_checkpoint(
        tmp_path / "m.pt",
        net,
        tiny_config,
        modalities=("t1", "t1ce", "t2", "flair"),
        normalization={"clip": [1.0, 99.0], "spacing_zyx": [2.0, 2.0, 2.0]},
        patch_size=16,
        provenance={
            "strategy": "supervised",
            "n_labelled": 3,
            "n_unlabelled": 7,
            "val_metrics": {"dice_WT": 0.5},
        },
    )
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["version"] == 1
    for key in (
        "networks",
        "config",
        "modalities",
        "normalization",
        "label_convention",
        "output",
        "patch_size",
        "provenance",
    ):
        assert key in raw
    for key in ("strategy", "n_labelled", "n_unlabelled", "val_metrics", "package_version", "date"):
        assert key in raw["provenance"]
    ck = load_checkpoint(path)
    assert ck.modalities == ("t1", "t1ce", "t2", "flair")
    assert ck.patch_size == (16, 16, 16)
    assert ck.normalization["clip"] == [1.0, 99.0]
    assert ck.normalization["margin"] == 2  # default filled in
    assert ck.provenance["n_unlabelled"] == 7
    (rebuilt,) = ck.build()
    x = torch.randn(1, 4, 16, 16, 16)
    net.eval()
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), net(x))
    assert "UNet" in ck.describe()


def test_cps_pair_and_atomic_write(tmp_path, make_ckpt):
    path = make_ckpt(tmp_path / "pair.pt", n_networks=2)
    ck = load_checkpoint(path)
    assert ck.n_networks == 2
    a, b = ck.build()
    assert not torch.equal(next(a.parameters()), next(b.parameters()))
    assert [p.name for p in tmp_path.iterdir()] == ["pair.pt"]  # no temp file left


def test_weights_not_matching_config_are_refused_before_writing(tmp_path, tiny_config):
    net = build_network(tiny_config)
    other = {**tiny_config, "channels": [8, 16, 32]}
    with pytest.raises(InputError, match="do not fit"):
        save_checkpoint(tmp_path / "bad.pt", net, other)
    assert not (tmp_path / "bad.pt").exists()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"hello, I am a text file\n", "not a napari-ssseg checkpoint"),
        (b"", "not a napari-ssseg checkpoint"),
    ],
)
def test_not_a_checkpoint(tmp_path, content, match):
    p = tmp_path / "x.pt"
    p.write_bytes(content)
    with pytest.raises(InputError, match=match):
        load_checkpoint(p)


def test_bare_state_dict_gets_a_hint(tmp_path, tiny_config):
    p = tmp_path / "sd.pt"
    torch.save(build_network(tiny_config).state_dict(), p)
    with pytest.raises(InputError, match="bare state dict"):
        load_checkpoint(p)


def test_missing_file_and_newer_version(tmp_path, tiny_ckpt):
    with pytest.raises(InputError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    raw = torch.load(tiny_ckpt, weights_only=True)
    raw["version"] = 99
    torch.save(raw, tmp_path / "new.pt")
    with pytest.raises(InputError, match="version 99"):
        load_checkpoint(tmp_path / "new.pt")


@pytest.mark.parametrize("container", ["raw_pickle", "torch_save", "inside_checkpoint"])
def test_malicious_pickle_is_refused_and_never_executed(tmp_path, tiny_ckpt, container):
    marker = tmp_path / "PWNED"
    payload = _Payload(marker)
    p = tmp_path / "evil.pt"
    if container == "raw_pickle":
        p.write_bytes(pickle.dumps(payload))
    elif container == "torch_save":
        torch.save({"format": FORMAT, "x": payload}, p)
    else:
        raw = torch.load(tiny_ckpt, weights_only=True)
        raw["provenance"]["note"] = payload
        torch.save(raw, p)
    # sanity: the payload really would run if unpickled unsafely
    if container == "raw_pickle":
        pickle.loads(p.read_bytes())
        assert marker.exists()
        marker.unlink()
    with pytest.raises(InputError, match="Refused|not a napari-ssseg checkpoint"):
        load_checkpoint(p)
    assert not marker.exists()


def test_load_model_default_and_dir(tmp_path, tiny_ckpt):
    assert load_model(tiny_ckpt).source == str(tiny_ckpt)
    ck = load_checkpoint(tiny_ckpt)
    assert load_model(ck) is ck
    with pytest.raises(InputError, match="configs"):
        load_model(tmp_path)  # a folder without configs/ is not a bundle


@pytest.mark.skipif(
    not (Path(__file__).parents[2] / "src/napari_ssseg/ml/weights/default.pt").exists(),
    reason="default model not trained yet",
)
def test_default_model_is_small_and_self_describing():
    from napari_ssseg.ml.checkpoint import default_checkpoint_path

    path = default_checkpoint_path()
    assert os.path.getsize(path) <= 10 * 1024 * 1024
    ck = load_model(None)
    assert ck.modalities == ("t1", "t1ce", "t2", "flair")
    assert ck.provenance.get("strategy")
    data = str(ck.provenance.get("training_data", "")).lower()
    assert "phantoms" in data and "real mri" in data  # v2: says what it was trained on


def test_match_modalities_reorders_with_warning():
    with pytest.warns(UserWarning, match="reordered"):
        idx = match_modalities(["t1", "t1ce", "t2", "flair"], ["flair", "t1", "t1ce", "t2"])
    assert idx == [1, 2, 3, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert match_modalities(["t1", "flair"], ["t1", "flair"]) == [0, 1]


def test_match_modalities_extra_channels_warn():
    with pytest.warns(UserWarning, match="not used"):
        assert match_modalities(["t1", "t2"], ["t1", "t2", "flair"]) == [0, 1]


def test_four_modality_model_on_two_modality_case():
    with pytest.raises(InputError, match="missing t1ce, t2"):
        match_modalities(["t1", "t1ce", "t2", "flair"], ["t1", "flair"], source="case X")


@pytest.mark.parametrize(
    ("convention", "expected"),
    [
        ("brats2023", [0, 1, 2, 3]),
        ("internal", [0, 1, 2, 3]),
        ("brats2021", [0, 1, 2, 3]),
        ("msd", [0, 2, 1, 3]),
    ],
)
def test_class_channel_map(convention, expected):
    assert class_channel_map(convention).tolist() == expected


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"output": "regions"}, "needs 3 output channels"),
        ({"modalities": ("t1", "t2")}, "4 input channels"),
        ({"modalities": ("t1", "t1ce", "t2", "dwi")}, "modality"),
        ({"patch_size": (16, 16)}, "patch_size"),
        ({"networks": []}, "no network"),
    ],
)
def test_inconsistent_checkpoint_fields(tiny_config, kwargs, match):
    base = {"networks": [build_network(tiny_config).state_dict()], "config": tiny_config}
    with pytest.raises(InputError, match=match):
        Checkpoint(**{**base, **kwargs})
