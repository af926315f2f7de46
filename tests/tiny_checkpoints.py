"""Tiny random-weight checkpoints shared by the ml and napari tests.

Importable from any test module as ``tiny_checkpoints`` (pytest puts the folder of
``tests/conftest.py`` on ``sys.path``).
"""

from __future__ import annotations


def stop_after_steps(n):
    """A ``should_stop()`` for ``ml.train.train``: true from its ``n``-th call on.

    ``train`` asks ``should_stop()`` once after every optimiser step, so a fresh run stops
    after ``n`` steps.
    """
    calls = [0]

    def should_stop():
        calls[0] += 1
        return calls[0] >= n

    return should_stop


#: A tiny UNet with dropout (windows must be multiples of 4).
TINY_UNET = {
    "name": "UNet",
    "in_channels": 4,
    "out_channels": 4,
    "channels": [4, 8, 16],
    "strides": [2, 2],
    "num_res_units": 0,
    "dropout": 0.1,
}


def make_tiny_checkpoint(
    path,
    *,
    n_networks=1,
    output="classes",
    modalities=None,
    seed=0,
    dropout=0.1,
    spacing_zyx=None,
    config=None,
    provenance=None,
):
    """Write a random-weight tiny UNet checkpoint and return its path."""
    import torch

    from napari_ssseg.ml.checkpoint import save_checkpoint
    from napari_ssseg.ml.networks import build_network

    modalities = list(modalities or ["t1", "t1ce", "t2", "flair"])
    cfg = dict(config or TINY_UNET)
    cfg["in_channels"] = len(modalities)
    cfg["out_channels"] = 4 if output == "classes" else 3
    if "dropout" in cfg:
        cfg["dropout"] = dropout
    nets = []
    for i in range(n_networks):
        torch.manual_seed(seed + i)
        nets.append(build_network(cfg))
    return save_checkpoint(
        path,
        nets,
        cfg,
        modalities=modalities,
        normalization={"spacing_zyx": spacing_zyx},
        output=output,
        patch_size=(16, 16, 16),
        provenance={"strategy": "test", "n_labelled": 0, "n_unlabelled": 0, **(provenance or {})},
    )
