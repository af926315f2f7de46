"""Network registry: every architecture builds tiny and runs; configs are validated."""

from __future__ import annotations

import pytest
import torch

from napari_ssseg.errors import InputError
from napari_ssseg.ml.networks import (
    ARCHITECTURES,
    DEFAULT_CONFIG,
    activate,
    build_network,
    count_parameters,
    has_dropout,
    roi_divisor,
    set_mc_dropout,
    validate_config,
)

TINY = [
    ({"name": "UNet", "channels": [4, 8], "strides": [2], "num_res_units": 0}, 16),
    ({"name": "BasicUNet", "features": [4, 4, 8, 8, 16, 4]}, 32),
    (
        {
            "name": "SegResNet",
            "init_filters": 4,
            "blocks_down": [1, 1],
            "blocks_up": [1],
            "num_groups": 2,
            "norm": ["GROUP", {"num_groups": 2}],
        },
        16,
    ),
    (
        {
            "name": "UNETR",
            "img_size": [16, 16, 16],
            "feature_size": 4,
            "hidden_size": 24,
            "mlp_dim": 48,
            "num_heads": 2,
        },
        16,
    ),
    (
        {
            "name": "SwinUNETR",
            "feature_size": 12,
            "depths": [1, 1, 1, 1],
            "num_heads": [1, 1, 1, 1],
        },
        64,
    ),
    (
        {
            "name": "DynUNet",
            "kernel_size": [3, 3, 3],
            "strides": [1, 2, 2],
            "upsample_kernel_size": [2, 2],
            "filters": [4, 8, 16],
        },
        16,
    ),
]


def test_table_covers_every_architecture():
    assert sorted(c["name"] for c, _ in TINY) == sorted(ARCHITECTURES)


@pytest.mark.parametrize(("kwargs", "size"), TINY, ids=[c["name"] for c, _ in TINY])
@pytest.mark.parametrize("out_channels", [4, 3])
def test_build_and_forward(kwargs, size, out_channels):
    if kwargs["name"] in ("UNETR", "SwinUNETR"):
        pytest.importorskip("einops")
    cfg = {**kwargs, "in_channels": 2, "out_channels": out_channels}
    net = build_network(cfg).eval()
    assert size % roi_divisor(validate_config(cfg)) == 0
    torch.manual_seed(0)
    with torch.no_grad():
        y = net(torch.randn(1, 2, size, size, size))
    assert tuple(y.shape) == (1, out_channels, size, size, size)
    assert torch.isfinite(y).all()


def test_default_is_small_unet_with_dropout():
    net = build_network()
    assert type(net).__name__ == "UNet"
    assert has_dropout(net)
    assert count_parameters(net) < 2_500_000  # < 10 MB of float32


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({**DEFAULT_CONFIG, "name": "UNett"}, "Did you mean 'UNet'"),
        ({**DEFAULT_CONFIG, "chanels": [8, 16]}, "did you mean 'channels'"),
        ({**DEFAULT_CONFIG, "bogus_option": 1}, "unknown keyword"),
        ({k: v for k, v in DEFAULT_CONFIG.items() if k != "in_channels"}, "in_channels"),
        ({**DEFAULT_CONFIG, "out_channels": 0}, "out_channels"),
        ({**DEFAULT_CONFIG, "spatial_dims": 2}, "spatial_dims"),
        ({k: v for k, v in DEFAULT_CONFIG.items() if k != "name"}, "no 'name'"),
        ("UNet", "must be a dict"),
        ({**DEFAULT_CONFIG, "channels": [8, 16, 32], "strides": [2]}, "Could not build"),
    ],
)
def test_bad_configs(config, match):
    with pytest.raises(InputError, match=match):
        build_network(config)


def test_validate_fills_defaults_and_is_jsonable():
    import json

    cfg = validate_config({"name": "dynunet", "in_channels": 1, "out_channels": 3})
    assert cfg["name"] == "DynUNet"
    assert cfg["strides"] == [1, 2, 2, 2]
    json.dumps(cfg)


def test_mc_dropout_switch_changes_output_only_when_enabled():
    torch.manual_seed(0)
    net = build_network({**DEFAULT_CONFIG, "channels": [4, 8], "strides": [2], "dropout": 0.5})
    x = torch.randn(1, 4, 16, 16, 16)
    set_mc_dropout(net, False)
    with torch.no_grad():
        a, b = net(x), net(x)
    assert torch.equal(a, b)
    assert set_mc_dropout(net, True) > 0
    with torch.no_grad():
        c, d = net(x), net(x)
    assert not torch.equal(c, d)
    # normalisation layers stay in eval mode
    assert all(not m.training for m in net.modules() if "Norm" in type(m).__name__)


def test_activate():
    logits = torch.randn(2, 4, 3, 3, 3)
    p = activate(logits, "classes")
    assert torch.allclose(p.sum(1), torch.ones(2, 3, 3, 3), atol=1e-5)
    r = activate(logits[:, :3], "regions")
    assert r.min() >= 0 and r.max() <= 1
    with pytest.raises(InputError, match="output"):
        activate(logits, "labels")
