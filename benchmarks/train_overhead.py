#!/usr/bin/env python
"""Training-engine overhead against a bare MONAI training loop on the same data.

Both loops train the same network (same config, same initial weights) on the same prepared
cases (the engine's ``.npy`` cache), with the same crop sampling and augmentation
(``RandCropByPosNegLabeld`` with foreground oversampling 0.67, three ``RandFlipd``,
``RandScaleIntensityd``, ``RandShiftIntensityd``), the same batch size, AdamW and a
Dice + cross-entropy loss:

* **engine**: :func:`napari_ssseg.ml.train.train` (strategy ``supervised``, no validation):
  memory-mapped cases, per-step seeding, ``DistributedSampler`` case order, masked/weighted
  DiceCE, cosine schedule, loss accumulation for the events, and at every epoch end its
  ``epoch`` event and the ``last.pt``/``best.pt`` checkpoints;
* **bare**: what a user writes by hand: the prepared arrays held in RAM (padded once to the
  patch size, as a MONAI ``CacheDataset`` would cache them), one MONAI ``Compose``, MONAI
  ``DiceCELoss(to_onehot_y=True, softmax=True)``, AdamW, a plain loop.

The two are interleaved **step by step** in the same process: the engine calls
``should_stop()`` after every optimiser step, and that callback runs one step of the
bare loop. Engine step *i* is the time between two callbacks (the bare step excluded), and
it is paired with the bare step that follows it, so each pair sees the same load of the
shared CPU. Reported:

* per-step overhead: the median over pairs of engine/bare step time, with a bootstrap 95 %
  interval (the steady-state loop, robust to the odd slow step);
* total overhead: total engine time / total bare time over the whole run (mean-based, so it
  includes the per-epoch ``epoch`` event and checkpoint writes every ``--iters`` steps),
  with a bootstrap 95 % interval over pairs.

The first step of each loop (warm-up) is left out. The engine's one-off start-up (reading
the cache index, building the network, the ``start`` event) is reported apart.

Usage::

    python benchmarks/train_overhead.py --size realistic --steps 300
    python benchmarks/train_overhead.py --size tiny --steps 1000 --json tiny.json
    python benchmarks/train_overhead.py --components --size both   # pieces in isolation

Sizes: ``tiny`` (the old slow test: 4 phantoms (64, 80, 80) at 2 mm, UNet 8-16-32, 32³
crops) and ``realistic`` (4 phantoms with a BraTS field of view at 2 mm, (78, 120, 120),
the package's default UNet ``DEFAULT_CONFIG``, the default 64³ crops). Batch 2 in both.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TINY_NET = {
    "name": "UNet",
    "in_channels": 4,
    "out_channels": 4,
    "channels": [8, 16, 32],
    "strides": [2, 2],
    "num_res_units": 1,
    "dropout": 0.1,
}

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"shape": (64, 80, 80), "patch": (32, 32, 32), "network": TINY_NET},
    "realistic": {"shape": (78, 120, 120), "patch": (64, 64, 64), "network": None},
}


def make_data(root: Path, shape: tuple[int, int, int], n: int = 4) -> Path:
    """Write ``n`` phantom case folders at 2 mm into ``root/data``."""
    from napari_ssseg.core.phantom import make_phantom
    from napari_ssseg.io.writers import write_case

    data = root / "data"
    for i in range(n):
        case = make_phantom(shape, (2.0, 2.0, 2.0), seed=i).to_case(name=f"c{i}")
        write_case(case, data)
    return data


class BareLoop:
    """A hand-written MONAI training loop, one :meth:`step` at a time.

    Parameters
    ----------
    cache : Path
        The engine's prepared-case folder (``<name>_image.npy``, ``<name>_label.npy``).
    net_cfg : dict
        Network config (built with the same seed as the engine's network).
    patch : tuple of 3 int
        Crop size.
    seed : int
        Seed of the network initialisation, the case draws and the transforms.
    batch : int
        Crops per step.
    """

    def __init__(
        self,
        cache: Path,
        net_cfg: dict[str, Any],
        patch: tuple[int, int, int],
        seed: int = 0,
        batch: int = 2,
    ) -> None:
        import monai.transforms as T
        import torch
        from monai.losses import DiceCELoss

        from napari_ssseg.ml.networks import build_network

        names = sorted(p.name[: -len("_image.npy")] for p in cache.glob("*_image.npy"))
        pad = T.SpatialPadd(keys=("image", "label"), spatial_size=patch)
        self.imgs, self.labs = [], []
        for n in names:
            d = pad(
                {
                    "image": np.load(cache / f"{n}_image.npy"),
                    "label": np.load(cache / f"{n}_label.npy")[None].astype(np.float32),
                }
            )
            self.imgs.append(np.asarray(d["image"]))
            self.labs.append(np.asarray(d["label"]))
        self.tf = T.Compose(
            [
                T.RandCropByPosNegLabeld(
                    keys=("image", "label"),
                    label_key="label",
                    spatial_size=patch,
                    pos=0.67,
                    neg=0.33,
                    num_samples=1,
                    allow_smaller=True,
                ),
                T.RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=0),
                T.RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=1),
                T.RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=2),
                T.RandScaleIntensityd(keys="image", factors=0.1, prob=0.5, channel_wise=True),
                T.RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5, channel_wise=True),
            ]
        )
        self.tf.set_random_state(seed)
        torch.manual_seed(seed)
        self.net = build_network(net_cfg)
        self.net.train()
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=2e-3, weight_decay=1e-4)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        self.rng = np.random.default_rng(seed)
        self.batch = batch

    def step(self) -> float:
        """One optimiser step; returns the loss."""
        import torch

        xs, ys = [], []
        for i in self.rng.integers(0, len(self.imgs), self.batch):
            d = self.tf({"image": self.imgs[i], "label": self.labs[i]})[0]
            xs.append(torch.as_tensor(np.asarray(d["image"])))
            ys.append(torch.as_tensor(np.asarray(d["label"])))
        x, y = torch.stack(xs).float(), torch.stack(ys).float()
        loss = self.loss_fn(self.net(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def bootstrap_ci(
    eng: np.ndarray, bare: np.ndarray, stat: str, n: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval over pairs of ``median(eng/bare)`` or
    ``sum(eng)/sum(bare)``."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, eng.size, size=(n, eng.size))
    if stat == "median":
        vals = np.median(eng[idx] / bare[idx], axis=1)
    else:
        vals = eng[idx].sum(axis=1) / bare[idx].sum(axis=1)
    lo, hi = np.quantile(vals, [0.025, 0.975])
    return float(lo), float(hi)


def run(size: str, steps: int, iters: int, threads: int, workdir: Path) -> dict[str, Any]:
    """Prepare the data, then one engine run with the bare loop interleaved step by step."""
    import torch

    from napari_ssseg.ml.networks import DEFAULT_CONFIG
    from napari_ssseg.ml.train import TrainConfig, read_events, train

    torch.set_num_threads(threads)
    spec = SIZES[size]
    net_cfg = dict(spec["network"] or DEFAULT_CONFIG)
    patch = tuple(spec["patch"])
    t0 = time.perf_counter()
    data = make_data(workdir, spec["shape"])
    base = {
        "data": str(data),
        "device": "cpu",
        "patch_size": patch,
        "network": net_cfg,
        "val_fraction": 0.0,
        "seed": 0,
    }
    warm = workdir / "warm"
    train(TrainConfig(out=str(warm), epochs=1, iterations_per_epoch=2, **base))  # cache
    cache = warm / "cache"
    shapes = [list(np.load(p, mmap_mode="r").shape) for p in sorted(cache.glob("*_label.npy"))]
    bare = BareLoop(cache, net_cfg, patch, seed=0)
    bare.step()  # warm-up
    print(
        f"[{size}] data ready in {time.perf_counter() - t0:.0f} s; cases {shapes}", file=sys.stderr
    )

    run_dir = workdir / "run"
    run_dir.mkdir()
    (run_dir / "cache").symlink_to(cache, target_is_directory=True)
    eng_t: list[float] = []
    bare_t: list[float] = []
    marks: dict[str, float] = {}
    done = [0]  # optimiser steps so far (should_stop() is asked once after each)

    def callback() -> bool:
        done[0] += 1
        step = done[0]
        t = time.perf_counter()
        if "last" in marks:
            eng_t.append(t - marks["last"])
        b0 = time.perf_counter()
        bare.step()
        bare_t.append(time.perf_counter() - b0)
        if step % 50 == 0:
            e = statistics.median(eng_t[-50:]) if eng_t else float("nan")
            b = statistics.median(bare_t[-50:])
            print(
                f"[{size}] step {step}/{steps}: engine {e:.4f}, bare {b:.4f} s/step",
                file=sys.stderr,
            )
        marks["last"] = time.perf_counter()
        return False

    epochs = max(1, round(steps / iters))
    t_call = time.time()
    res = train(
        TrainConfig(out=str(run_dir), epochs=epochs, iterations_per_epoch=iters, **base),
        should_stop=callback,
    )
    if res["status"] != "done":
        raise SystemExit(f"engine run ended with {res}")
    ev = read_events(run_dir / "events.jsonl")
    n_ckpt = sum(e["event"] == "checkpoint" for e in ev)
    e_arr = np.asarray(eng_t)
    b_arr = np.asarray(bare_t[1:])  # engine step i (i >= 2) pairs with the bare step after it
    # one-off start-up: from the call to the ``start`` event (cache index, network, ...)
    startup = next(e["time"] for e in ev if e["event"] == "start") - t_call
    ratios = e_arr / b_arr
    boundary = [i for i in range(e_arr.size) if (i + 1) % iters == 0]  # steps after an epoch end
    steady = np.delete(np.arange(e_arr.size), boundary)
    return {
        "size": size,
        "phantom_shape": list(spec["shape"]),
        "prepared_shapes": shapes,
        "patch": list(patch),
        "batch": 2,
        "network": net_cfg,
        "threads": threads,
        "steps": int(e_arr.size),
        "iterations_per_epoch": iters,
        "checkpoints_written": n_ckpt,
        "engine_s_per_step": float(np.median(e_arr)),
        "bare_s_per_step": float(np.median(b_arr)),
        "median_ratio": float(np.median(ratios)),
        "median_ratio_ci95": bootstrap_ci(e_arr, b_arr, "median"),
        "total_ratio": float(e_arr.sum() / b_arr.sum()),
        "total_ratio_ci95": bootstrap_ci(e_arr, b_arr, "total"),
        "ratio_quartiles": [float(q) for q in np.quantile(ratios, [0.25, 0.75])],
        "epoch_end_extra_s": float(np.median(e_arr[boundary]) - np.median(e_arr[steady]))
        if boundary
        else None,
        "engine_startup_s": startup,
        "engine_steps": eng_t,
        "bare_steps": bare_t,
    }


def _timeit(fn: Any, reps: int) -> dict[str, float]:
    """Median and minimum seconds of ``reps`` calls of ``fn`` (after one warm-up call)."""
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return {"median": float(np.median(ts)), "min": float(np.min(ts))}


def components(size: str, threads: int, reps: int, workdir: Path) -> dict[str, Any]:
    """Time the engine's per-step pieces outside the network, each in isolation.

    Uses the engine's own functions on its prepared cache. Returns seconds per call (median
    and minimum of ``reps`` calls) and how many calls a step (or an epoch) makes.
    """
    import torch
    from monai.losses import DiceCELoss

    from napari_ssseg.ml.data import IGNORE_INDEX, CropSampler, _pad_to, split_cases
    from napari_ssseg.ml.networks import DEFAULT_CONFIG, build_network
    from napari_ssseg.ml.strategies.base import masked_dice_ce
    from napari_ssseg.ml.train import (
        EventLog,
        TrainConfig,
        _Cosine,
        _epoch_order,
        _save,
        _step_seed,
        train,
    )

    torch.set_num_threads(threads)
    spec = SIZES[size]
    net_cfg = dict(spec["network"] or DEFAULT_CONFIG)
    patch = tuple(spec["patch"])
    data = make_data(workdir, spec["shape"])
    warm = workdir / "warm"
    cfg = TrainConfig(
        data=str(data),
        out=str(warm),
        epochs=1,
        iterations_per_epoch=2,
        device="cpu",
        patch_size=patch,  # type: ignore[arg-type]
        network=net_cfg,
        val_fraction=0.0,
    )
    train(cfg)
    from napari_ssseg.ml.checkpoint import DEFAULT_NORMALIZATION
    from napari_ssseg.ml.data import prepare_dataset

    norm = dict(DEFAULT_NORMALIZATION)
    norm["spacing_zyx"] = [2.0, 2.0, 2.0]
    cases, _ = prepare_dataset(
        data, warm / "cache", modalities=("t1", "t1ce", "t2", "flair"), normalization=norm
    )
    split = split_cases(cases, 0.0)
    case = split.train[0]
    sampler = CropSampler(patch)
    bare = BareLoop(warm / "cache", net_cfg, patch)
    out: dict[str, Any] = {"size": size, "case_shape": list(case.shape)}

    def rec(name: str, fn: Any, per_step: float, n: int = reps) -> None:
        out[name] = {**_timeit(fn, n), "calls_per_step": per_step}

    iters = 20
    rec("seed: _step_seed + torch.manual_seed", lambda: torch.manual_seed(_step_seed(0, 5)), 2)
    rec("case order: _epoch_order (per epoch)", lambda: _epoch_order(4, 0, 3, 1, 0), 1 / iters)
    rec("image: np.array(load_image()) (mmap open + copy)",
        lambda: np.array(case.load_image(), dtype=np.float32), 2)  # fmt: skip
    img = np.array(case.load_image(), dtype=np.float32)
    rec("image: _pad_to patch", lambda: _pad_to(img, patch, 0.0), 2)

    def label_prep() -> None:
        lab = _pad_to(np.asarray(case.load_label()), patch, IGNORE_INDEX)[None]
        fg = ((lab >= 1) & (lab <= 3)).astype(np.float32)
        lab.astype(np.float32)
        del fg

    rec("label: load + _pad_to + fg mask + astype float32", label_prep, 2)
    rec("transforms: set_random_state", lambda: sampler._labelled.set_random_state(seed=7), 2)
    rec("sampler.sample (whole engine data path, batch 2)",
        lambda: sampler.sample(split.train, [0, 1], 11), 1)  # fmt: skip

    def bare_data() -> None:
        xs, ys = [], []
        for i in (0, 1):
            d = bare.tf({"image": bare.imgs[i], "label": bare.labs[i]})[0]
            xs.append(torch.as_tensor(np.asarray(d["image"])))
            ys.append(torch.as_tensor(np.asarray(d["label"])))
        torch.stack(xs).float(), torch.stack(ys).float()

    rec("bare data path (RAM arrays, same transforms, batch 2)", bare_data, 1)
    batch = sampler.sample(split.train, [0, 1], 11)
    logits0 = torch.randn(2, 4, *patch)

    def engine_loss() -> None:
        lg = logits0.clone().requires_grad_(True)
        res = masked_dice_ce(lg, batch["label"], None)
        res["loss"].backward()
        for v in res.values():
            float(v.detach())

    dce = DiceCELoss(to_onehot_y=True, softmax=True)
    # MONAI's DiceCELoss has no ignore index: padded voxels count as background for it
    lab0 = batch["label"]
    yb = torch.where(lab0 == IGNORE_INDEX, torch.zeros_like(lab0), lab0)[:, None].float()

    def bare_loss() -> None:
        lg = logits0.clone().requires_grad_(True)
        loss = dce(lg, yb)
        loss.backward()
        float(loss.detach())

    rec("loss: masked_dice_ce fwd+bwd + 3 float()", engine_loss, 1)
    rec("loss: MONAI DiceCELoss fwd+bwd + 1 float()", bare_loss, 1)
    torch.manual_seed(0)
    net = build_network(net_cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _Cosine(1000))
    rec("scheduler: LambdaLR.step", sched.step, 1)

    def net_step() -> None:
        loss = net(batch["image"]).float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rec("network fwd+bwd+AdamW (reference, both loops)", net_step, 1, max(5, reps // 10))
    ev = EventLog(workdir / "events.jsonl")
    rec("events: epoch event (json + fsync; per epoch)",
        lambda: ev.write("epoch", epoch=1, losses={"loss": 0.5}, lr=1e-3), 1 / iters)  # fmt: skip
    meta = {
        "config": net_cfg,
        "modalities": ("t1", "t1ce", "t2", "flair"),
        "normalization": norm,
        "patch_size": patch,
        "provenance": {},
    }
    state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "step": 1}
    import inspect

    # the engine's _save takes a list of networks since CPS (a single one before)
    nets: Any = [net] if "nets" in inspect.signature(_save).parameters else net

    def save_both() -> None:
        _save(workdir / "last.pt", nets, meta, state)
        _save(workdir / "best.pt", nets, meta)

    rec("checkpoints: last.pt + best.pt (per epoch)", save_both, 1 / iters, max(5, reps // 20))
    return out


def components_table(c: dict[str, Any]) -> str:
    """Markdown table of :func:`components`."""
    rows = [
        f"Component timings, {c['size']} (case {c['case_shape']}):",
        "",
        "| piece | ms per call (median / min) | calls per step | ms per step (median) |",
        "| --- | --- | --- | --- |",
    ]
    for k, v in c.items():
        if not isinstance(v, dict):
            continue
        rows.append(
            f"| {k} | {1e3 * v['median']:.2f} / {1e3 * v['min']:.2f} | "
            f"{v['calls_per_step']:g} | {1e3 * v['median'] * v['calls_per_step']:.2f} |"
        )
    return "\n".join(rows)


def machine() -> dict[str, str]:
    """Versions and CPU."""
    import monai
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": cpu,
    }


def table(results: list[dict[str, Any]]) -> str:
    """Markdown table of the results."""
    rows = [
        "| size | steps | engine s/step | bare s/step | per-step overhead (median) [95 % CI] "
        "| total overhead (incl. epoch events + checkpoints) [95 % CI] | epoch-end extra s "
        "| engine start-up s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lo, hi = r["median_ratio_ci95"]
        tlo, thi = r["total_ratio_ci95"]
        extra = r["epoch_end_extra_s"]
        rows.append(
            f"| {r['size']} | {r['steps']} | {r['engine_s_per_step']:.4f} | "
            f"{r['bare_s_per_step']:.4f} | {r['median_ratio'] - 1:+.1%} "
            f"[{lo - 1:+.1%}, {hi - 1:+.1%}] | {r['total_ratio'] - 1:+.1%} "
            f"[{tlo - 1:+.1%}, {thi - 1:+.1%}] | "
            f"{'-' if extra is None else f'{extra:.3f}'} | {r['engine_startup_s']:.2f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Command line; prints a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("tiny", "realistic", "both"), default="both")
    ap.add_argument("--steps", type=int, default=None, help="steps (default 300 / 1000)")
    ap.add_argument("--iters", type=int, default=20, help="iterations per epoch (default 20)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (both loops)")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    ap.add_argument(
        "--components",
        action="store_true",
        help="instead: time the engine's per-step pieces outside the network in isolation",
    )
    ap.add_argument("--reps", type=int, default=200, help="repetitions per piece (--components)")
    args = ap.parse_args(argv)
    if args.components:
        sizes = ("tiny", "realistic") if args.size == "both" else (args.size,)
        comps = []
        for size in sizes:
            with tempfile.TemporaryDirectory(prefix=f"ssseg_components_{size}_") as tmp:
                comps.append(components(size, args.threads, args.reps, Path(tmp)))
        if args.json:
            from napari_ssseg.io.atomic import atomic_write_text

            atomic_write_text(args.json, json.dumps({"machine": machine(), "components": comps}))
        for c in comps:
            print(components_table(c) + "\n")
        return 0
    sizes = ("tiny", "realistic") if args.size == "both" else (args.size,)
    results = []
    for size in sizes:
        steps = args.steps or (1000 if size == "tiny" else 300)
        if steps < 10:
            ap.error("--steps must be >= 10")
        with tempfile.TemporaryDirectory(prefix=f"ssseg_overhead_{size}_") as tmp:
            results.append(run(size, steps, args.iters, args.threads, Path(tmp)))
    info = machine()
    if args.json:
        from napari_ssseg.io.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps({"machine": info, "results": results}, indent=1))
    print(table(results))
    print(f"\nmachine: {info}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
