"""Engine overhead vs a bare MONAI training loop on the same prepared data (slow benchmark).

Run: ``pytest tests/ml/test_train_overhead.py -m slow -s``. It prints the seconds per step of
both loops; the numbers go to docs/benchmarks/training.md. The assertion is loose (the CPU is
shared): the engine must not be more than 50% slower per step than the bare loop.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

SMALL = {
    "name": "UNet",
    "in_channels": 4,
    "out_channels": 4,
    "channels": [8, 16, 32],
    "strides": [2, 2],
    "num_res_units": 1,
    "dropout": 0.1,
}


@pytest.mark.slow
def test_engine_overhead_vs_bare_monai_loop(tmp_path):
    import dataclasses

    import monai.transforms as T
    from monai.losses import DiceCELoss

    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.io.writers import write_case
    from napari_ssseg.ml.networks import build_network
    from napari_ssseg.ml.train import TrainConfig, read_events, train

    data = tmp_path / "data"
    for i in range(4):
        case = make_phantom((64, 80, 80), (2.0, 2.0, 2.0), seed=i).to_case(name=f"c{i}")
        write_case(dataclasses.replace(case), data)
    steps, patch = 40, (32, 32, 32)
    torch.set_num_threads(1)

    # ---- warm-up run: prepares the cache (not timed) and warms torch up
    out = tmp_path / "warm"
    cfg = TrainConfig(
        data=str(data), out=str(out), epochs=1, iterations_per_epoch=3, device="cpu",
        patch_size=patch, network=SMALL, val_fraction=0.0, seed=0,
    )  # fmt: skip
    train(cfg)

    # ---- bare MONAI loop on the same preprocessed arrays, held in RAM
    imgs = [np.load(p) for p in sorted((out / "cache").glob("*_image.npy"))]
    labs = [
        np.load(p)[None].astype(np.float32) for p in sorted((out / "cache").glob("*_label.npy"))
    ]
    tf = T.Compose(
        [
            T.RandCropByPosNegLabeld(
                keys=("image", "label"),
                label_key="label",
                spatial_size=patch,
                pos=0.67,
                neg=0.33,
                num_samples=1,
                allow_smaller=True,
            ),  # fmt: skip
            T.RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=0),
            T.RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=1),
            T.RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=2),
            T.RandScaleIntensityd(keys="image", factors=0.1, prob=0.5, channel_wise=True),
            T.RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5, channel_wise=True),
        ]
    )
    tf.set_random_state(0)
    torch.manual_seed(0)
    net = build_network(SMALL)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        xs, ys = [], []
        for i in rng.integers(0, len(imgs), 2):
            d = tf({"image": imgs[i], "label": labs[i]})[0]
            xs.append(torch.as_tensor(np.asarray(d["image"])))
            ys.append(torch.as_tensor(np.asarray(d["label"])))
        x, y = torch.stack(xs).float(), torch.stack(ys).float()
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    bare = (time.perf_counter() - t0) / steps

    # ---- engine (no validation: val_fraction 0; one epoch), timed from its events
    run = tmp_path / "run"
    train(dataclasses.replace(cfg, out=str(run), iterations_per_epoch=steps))
    ev = read_events(run / "events.jsonl")
    t_start = next(e["time"] for e in ev if e["event"] == "start")
    t_epoch = next(e["time"] for e in ev if e["event"] == "epoch")
    engine = (t_epoch - t_start) / steps
    overhead = engine / bare - 1
    print(
        f"\nengine {engine:.3f} s/step, bare MONAI loop {bare:.3f} s/step, overhead {overhead:+.1%}"
    )
    assert overhead < 0.5
