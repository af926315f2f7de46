"""MONAI bundle folders: allow-listed networks only, no code from the bundle is run."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_ssseg.errors import InputError
from napari_ssseg.ml.bundle import ALLOWED_TARGETS, load_bundle, parse_network_def
from napari_ssseg.ml.checkpoint import load_model
from napari_ssseg.ml.networks import build_network

NET_DEF = {
    "_target_": "SegResNet",
    "blocks_down": [1, 1],
    "blocks_up": [1],
    "init_filters": 4,
    "in_channels": "@num_channels",
    "out_channels": 3,
    "dropout_prob": 0.2,
    "norm": ["GROUP", {"num_groups": 2}],
}
METADATA = {
    "version": "0.0.1",
    "network_data_format": {
        "inputs": {
            "image": {
                "num_channels": 4,
                "channel_def": {"0": "T1c", "1": "T1", "2": "T2", "3": "FLAIR"},
            }
        },
        "outputs": {
            "pred": {
                "num_channels": 3,
                "channel_def": {"0": "Tumor core", "1": "Whole tumor", "2": "Enhancing tumor"},
            }
        },
    },
}


def write_bundle(root: Path, net_def=None, fmt="json", weights=True, extra=None) -> Path:
    net_def = dict(NET_DEF if net_def is None else net_def)
    cfg = {
        "imports": ["$import os"],
        "num_channels": 4,
        "device": "$torch.device('cpu')",
        "network_def": net_def,
        "network": "$@network_def.to(@device)",
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": [16, 16, 16],
            "sw_batch_size": 1,
        },
        **(extra or {}),
    }
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    if fmt == "json":
        (root / "configs" / "inference.json").write_text(json.dumps(cfg))
    else:
        import yaml

        (root / "configs" / "inference.yaml").write_text(yaml.safe_dump(cfg))
    (root / "configs" / "metadata.json").write_text(json.dumps(METADATA))
    if weights:
        torch.manual_seed(0)
        net = build_network(
            {
                "name": "SegResNet",
                **{k: v for k, v in NET_DEF.items() if k != "_target_"},
                "in_channels": 4,
            }
        )
        torch.save({"model": net.state_dict()}, root / "models" / "model.pt")
    return root


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_tiny_segresnet_bundle_loads_and_predicts(tmp_path, fmt, tiny_case):
    from napari_ssseg.ml.inference import predict_case

    folder = write_bundle(tmp_path / "b", fmt=fmt)
    ck = load_model(folder)  # a folder goes to the bundle loader
    assert ck.config["name"] == "SegResNet"
    assert ck.config["in_channels"] == 4
    assert ck.modalities == ("t1ce", "t1", "t2", "flair")  # from metadata channel_def
    assert ck.output == "regions" and ck.regions == ("TC", "WT", "ET")
    assert ck.patch_size == (16, 16, 16)
    assert ck.axis_order == "xyz"
    with pytest.warns(UserWarning, match="reordered"):
        res = predict_case(tiny_case, ck, device="cpu")
    assert res["labels"].shape == tiny_case.shape
    assert res["probabilities"].shape == (3, *tiny_case.shape)
    assert res["info"]["probability_channels"] == ["WT", "TC", "ET"]
    # nested regions: labels come from WT >= TC >= ET
    assert set(np.unique(res["labels"])) <= {0, 1, 2, 3}


def test_full_module_path_target_is_accepted(tmp_path):
    folder = write_bundle(tmp_path / "b", {**NET_DEF, "_target_": "monai.networks.nets.SegResNet"})
    assert load_bundle(folder).config["name"] == "SegResNet"


@pytest.mark.parametrize(
    ("net_def", "match"),
    [
        ({"_target_": "os.system", "command": "touch PWNED"}, "not an allowed network"),
        ({"_target_": "builtins.eval", "source": "1"}, "not an allowed network"),
        ({"_target_": "monai.networks.nets.os.system"}, "not an allowed network"),
        (
            {**NET_DEF, "_target_": "$__import__('os').system('touch PWNED')"},
            "not an allowed network",
        ),
        (
            {**NET_DEF, "init_filters": "$__import__('os').system('touch PWNED') or 4"},
            "Python expression",
        ),
        ({**NET_DEF, "in_channels": "@device"}, "Python expression"),
        ({**NET_DEF, "norm": {"_target_": "os.system", "command": "x"}}, "nested objects"),
        ({**NET_DEF, "_requires_": "$print('x')"}, "special key"),
        ({**NET_DEF, "_mode_": "callable"}, "special key"),
        ({**NET_DEF, "out_channels": "%other.json#x"}, "another file"),
        ({**NET_DEF, "not_a_kwarg": 1}, "unknown keyword"),
    ],
)
def test_malicious_or_unsupported_network_def_refused(tmp_path, net_def, match, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = write_bundle(tmp_path / "b", net_def, weights=False)
    with pytest.raises(InputError, match=match):
        load_bundle(folder)
    assert not (tmp_path / "PWNED").exists()


def test_allow_list_is_monai_nets_only():
    assert set(ALLOWED_TARGETS) == {
        "UNet",
        "BasicUNet",
        "SegResNet",
        "UNETR",
        "SwinUNETR",
        "DynUNet",
    }
    with pytest.raises(InputError, match="not an allowed network"):
        parse_network_def({"network_def": {"_target_": "torch.nn.Linear"}})


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_payload_in_bundle_weights_refused(tmp_path):
    folder = write_bundle(tmp_path / "b", weights=False)
    marker = tmp_path / "PWNED"
    (folder / "models" / "model.pt").write_bytes(pickle.dumps({"model": _Payload(marker)}))
    with pytest.raises(InputError, match="Refused|cannot be read"):
        load_bundle(folder)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("no_configs", "no configs/"),
        ("no_network_def", "defines 'network_def'"),
        ("no_weights", "no weights"),
        ("torchscript_only", "TorchScript"),
        ("wrong_weights", "do not fit"),
    ],
)
def test_bundle_errors(tmp_path, setup, match):
    folder = tmp_path / "b"
    if setup == "no_configs":
        folder.mkdir()
    elif setup == "no_network_def":
        write_bundle(folder, weights=False)
        (folder / "configs" / "inference.json").write_text(json.dumps({"x": 1}))
    elif setup == "no_weights":
        write_bundle(folder, weights=False)
    elif setup == "torchscript_only":
        write_bundle(folder, weights=False)
        (folder / "models" / "model.ts").write_bytes(b"x")
    else:
        write_bundle(folder, {**NET_DEF, "init_filters": 8})  # weights were made with 4
    with pytest.raises(InputError, match=match):
        load_bundle(folder)
