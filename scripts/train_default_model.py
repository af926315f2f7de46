#!/usr/bin/env python
"""Train the default model shipped in ``src/napari_ssseg/ml/weights/default.pt``.

Reproducible (seeded) and self-contained: a plain PyTorch + MONAI loop on synthetic phantoms
from :func:`napari_ssseg.core.phantom.make_phantom`. No real MRI is used.

Recipe
------
* Training data: phantoms with seeds ``--train-seeds`` (default 10000-10099), each with its
  own random ``PhantomStyle.sample(rng, strength=U(0, --max-strength))``, generated directly
  at ``--spacing`` mm (default 2 mm; the inference pipeline resamples every case to the
  checkpoint's ``normalization["spacing_zyx"]`` and back), preprocessed exactly as at
  inference (:func:`napari_ssseg.core.preprocess.preprocess`: brain crop, percentile clip,
  z-score).
* Network: :data:`napari_ssseg.ml.networks.DEFAULT_CONFIG` (MONAI UNet 16-32-64-128, residual,
  dropout 0.1), 4 input channels t1/t1ce/t2/flair, 4 softmax classes.
* Loss: DiceCE; AdamW, cosine learning rate; batch ``--batch`` random ``--crop``^3 crops with
  foreground oversampling (2 of 3 crops centred on tumour).
* Augmentation (strong, so the model does not learn the generator's look): flips on all
  axes, small affine, bias field, per-channel intensity scale/shift, per-channel random
  gamma (contrast), Gaussian noise, Gaussian smoothing, simulated low resolution.
* Model selection: WT Dice on validation phantoms (seeds ``--val-seeds``) every
  ``--val-every`` iterations; the best weights are saved.
* Held-out test (``--test-seeds``, default 50000-50002): full 1 mm (155, 240, 240) phantoms
  with ``strength=--test-strength`` (default 1.5, beyond the training range), predicted with
  the package's own inference pipeline (``napari_ssseg.ml.inference.predict_case``).

Usage::

    python scripts/train_default_model.py   # train + evaluate (~25 min on 2 busy CPU cores)
    python scripts/train_default_model.py --evaluate-only src/napari_ssseg/ml/weights/default.pt
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "napari_ssseg" / "ml" / "weights" / "default.pt"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def seed_range(text: str) -> list[int]:
    a, b = (int(v) for v in text.split(":"))
    return list(range(a, b))


# ----------------------------------------------------------------------------- data
def resample_area(arr: np.ndarray, factor: float) -> np.ndarray:
    """(C, Z, Y, X) float array resampled by ``1/factor`` per axis with area averaging.

    Identical to what :mod:`napari_ssseg.ml.inference` does before the network.
    """
    x = torch.as_tensor(np.ascontiguousarray(arr, dtype=np.float32))[None]
    size = [max(1, int(round(s / factor))) for s in arr.shape[1:]]
    return torch.nn.functional.interpolate(x, size=size, mode="area")[0].numpy()


def make_training_case(
    seed: int, spacing: float, strength: float, native: bool, full_shape=(155, 240, 240)
):
    """Return (images (4,Z,Y,X) float32 z-scored brain crop, labels (Z,Y,X) uint8).

    ``native=True``: phantom made at 1 mm, preprocessed at 1 mm, then area-downsampled to
    ``spacing`` (what inference does on a 1 mm case); else made directly at ``spacing``.
    """
    from napari_ssseg.core.phantom import PhantomStyle, make_phantom
    from napari_ssseg.core.preprocess import preprocess

    rng = np.random.default_rng(seed)
    style = PhantomStyle.sample(rng, strength=strength)
    sp = 1.0 if native else spacing
    shape = tuple(int(round(s / sp)) for s in full_shape)
    ph = make_phantom(shape=shape, spacing=(sp,) * 3, seed=seed, style=style)
    pre = preprocess(ph.images, **PREPROCESS_KW)
    images = np.asarray(pre.images, dtype=np.float32)
    labels = crop_like(pre, ph.labels)
    if labels.shape != images.shape[1:]:
        raise RuntimeError(f"label crop {labels.shape} != image crop {images.shape}")
    if native and spacing != 1.0:
        images = resample_area(images, spacing)
        onehot = np.stack([labels == k for k in range(4)]).astype(np.float32)
        labels = resample_area(onehot, spacing).argmax(0).astype(np.uint8)
    return images, labels.astype(np.uint8)


PREPROCESS_KW = {"margin": 2, "clip": (0.5, 99.5), "n4": False}


def crop_like(pre, array: np.ndarray) -> np.ndarray:
    """Crop a full-grid array to the preprocessed bounding box."""
    if hasattr(pre, "crop"):
        return np.asarray(pre.crop(array))
    bbox = pre.bbox
    if isinstance(bbox, (tuple, list)) and all(isinstance(b, slice) for b in bbox):
        return array[tuple(bbox)]
    b = np.asarray(bbox)
    if b.shape == (2, 3):
        return array[tuple(slice(int(b[0, i]), int(b[1, i])) for i in range(3))]
    if b.shape == (3, 2):
        return array[tuple(slice(int(b[i, 0]), int(b[i, 1])) for i in range(3))]
    if b.shape == (6,):
        return array[tuple(slice(int(b[2 * i]), int(b[2 * i + 1])) for i in range(3))]
    raise RuntimeError(f"unknown bbox format {bbox!r}")


def wait_for_preprocess(max_minutes: float = 30.0) -> None:
    """Poll until napari_ssseg.core.preprocess exists (written by another developer)."""
    import importlib

    t0 = time.time()
    while True:
        try:
            importlib.import_module("napari_ssseg.core.preprocess")
            return
        except ModuleNotFoundError:
            if time.time() - t0 > max_minutes * 60:
                raise
            log("waiting for napari_ssseg.core.preprocess ...")
            time.sleep(30)


def channelwise_gamma(img: np.ndarray, rng: np.random.Generator, prob: float = 0.5) -> np.ndarray:
    """Random monotone contrast change per channel (gamma on the min-max range)."""
    out = img.copy()
    for c in range(img.shape[0]):
        if rng.random() >= prob:
            continue
        x = out[c]
        lo, hi = float(x.min()), float(x.max())
        if hi - lo < 1e-6:
            continue
        gamma = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        y = ((x - lo) / (hi - lo)) ** gamma * (hi - lo) + lo
        # re-standardise so the z-score statistics stay comparable
        out[c] = (y - y.mean()) / (y.std() + 1e-6) * x.std() + x.mean()
    return out


def build_augment(crop: int):
    from monai import transforms as T

    return T.Compose(
        [
            T.SpatialPadd(keys=("image", "label"), spatial_size=(crop,) * 3),
            T.RandCropByPosNegLabeld(
                keys=("image", "label"),
                label_key="label",
                spatial_size=(crop,) * 3,
                pos=2.0,
                neg=1.0,
                num_samples=1,
                allow_smaller=True,
            ),
            T.RandAffined(
                keys=("image", "label"),
                prob=0.2,
                rotate_range=(0.25, 0.25, 0.25),
                scale_range=(0.15, 0.15, 0.15),
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            T.RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=0),
            T.RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=1),
            T.RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=2),
            T.RandBiasFieldd(keys="image", prob=0.5, coeff_range=(0.0, 0.4)),
            T.RandScaleIntensityd(keys="image", factors=0.3, prob=0.8, channel_wise=True),
            T.RandShiftIntensityd(keys="image", offsets=0.3, prob=0.8, channel_wise=True),
            T.RandGaussianSmoothd(
                keys="image",
                prob=0.2,
                sigma_x=(0.3, 1.2),
                sigma_y=(0.3, 1.2),
                sigma_z=(0.3, 1.2),
            ),
            T.RandSimulateLowResolutiond(keys="image", prob=0.25, zoom_range=(0.5, 1.0)),
            T.RandGaussianNoised(keys="image", prob=0.4, std=0.15),
        ]
    )


def sample_batch(data, augment, rng: np.random.Generator, batch: int, crop: int):
    imgs, labs = [], []
    for _ in range(batch):
        img, lab = data[int(rng.integers(len(data)))]
        img = channelwise_gamma(img, rng, prob=0.5)
        out = augment({"image": img, "label": lab[None].astype(np.float32)})
        if isinstance(out, list):
            out = out[0]
        x = torch.as_tensor(np.asarray(out["image"]), dtype=torch.float32)
        y = torch.as_tensor(np.asarray(out["label"]), dtype=torch.float32)
        # pad to the crop size (allow_smaller crops on tiny volumes)
        pad = [crop - s for s in x.shape[1:]]
        if any(p > 0 for p in pad):
            widths = []
            for p in reversed(pad):
                widths += [0, max(p, 0)]
            x = torch.nn.functional.pad(x, widths)
            y = torch.nn.functional.pad(y, widths)
        imgs.append(x)
        labs.append(y.round())
    return torch.stack(imgs), torch.stack(labs)


# ----------------------------------------------------------------------------- eval
def region_dices(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Dice of WT, TC, ET (:func:`napari_ssseg.core.metrics.region_dice`)."""
    from napari_ssseg.core.metrics import region_dice

    return region_dice(pred, gt)


@torch.no_grad()
def validate(net, val, crop: int) -> dict[str, float]:
    from monai.inferers import sliding_window_inference

    net.eval()
    scores = []
    for img, lab in val:
        x = torch.as_tensor(img[None])
        logits = sliding_window_inference(x, (crop,) * 3, 2, net, overlap=0.25)
        pred = logits.argmax(1)[0].numpy().astype(np.uint8)
        scores.append(region_dices(pred, lab))
    net.train()
    return {r: float(np.mean([s[r] for s in scores])) for r in ("WT", "TC", "ET")}


def evaluate_heldout(
    ckpt_path: Path, seeds: list[int], strength: float, spacing=(1.0, 1.0, 1.0)
) -> dict:
    """Dice of the saved checkpoint on full-size 1 mm held-out phantoms (package inference)."""
    from napari_ssseg.core.phantom import PhantomStyle, make_phantom
    from napari_ssseg.ml.checkpoint import load_checkpoint
    from napari_ssseg.ml.inference import predict_case

    ckpt = load_checkpoint(ckpt_path)
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        style = PhantomStyle.sample(rng, strength=strength)
        shape = tuple(int(round(n / sp)) for n, sp in zip((155, 240, 240), spacing))
        ph = make_phantom(shape=shape, spacing=tuple(spacing), seed=seed, style=style)
        t0 = time.perf_counter()
        res = predict_case(ph.images, ckpt, device="cpu", spacing=tuple(spacing))
        dt = time.perf_counter() - t0
        d = region_dices(res["labels"], ph.labels)
        d["seed"] = seed
        d["seconds"] = round(dt, 1)
        rows.append(d)
        log(f"held-out seed {seed} strength {strength}: {d}")
    mean = {r: float(np.mean([row[r] for row in rows])) for r in ("WT", "TC", "ET")}
    return {
        "strength": strength,
        "spacing_zyx": list(spacing),
        "seeds": seeds,
        "per_case": rows,
        "mean": mean,
    }


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--train-seeds", default="10000:10100")
    p.add_argument("--val-seeds", default="20000:20004")
    p.add_argument("--test-seeds", default="50000:50003")
    p.add_argument("--max-strength", type=float, default=1.0)
    p.add_argument("--test-strength", type=float, default=1.5)
    p.add_argument(
        "--test-spacing", default="1,1,1", help="voxel size z,y,x (mm) of held-out phantoms"
    )
    p.add_argument("--spacing", type=float, default=2.0)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iterations", type=int, default=700)
    p.add_argument("--max-minutes", type=float, default=40.0, help="stop training early (recorded)")
    p.add_argument("--cache", type=Path, default=None, help="npz cache of the training data")
    p.add_argument("--val-every", type=int, default=175)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--evaluate-only", type=Path, default=None)
    p.add_argument("--metrics-json", type=Path, default=Path("/tmp/default_model_eval.json"))
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.evaluate_only is not None:
        res = evaluate_heldout(
            args.evaluate_only,
            seed_range(args.test_seeds),
            args.test_strength,
            tuple(float(v) for v in args.test_spacing.split(",")),
        )
        args.metrics_json.write_text(json.dumps(res, indent=2))
        log(json.dumps(res["mean"]))
        return 0

    from monai.losses import DiceCELoss
    from monai.utils import set_determinism

    from napari_ssseg.ml.checkpoint import save_checkpoint
    from napari_ssseg.ml.networks import DEFAULT_CONFIG, build_network, count_parameters

    random.seed(args.seed)
    np.random.seed(args.seed)  # noqa: NPY002 - seeds MONAI transforms that use the legacy RNG
    torch.manual_seed(args.seed)
    set_determinism(seed=args.seed)
    rng = np.random.default_rng(args.seed)

    t_start = time.perf_counter()
    train_seeds = seed_range(args.train_seeds)
    strengths = np.random.default_rng(args.seed + 1).uniform(
        0.0, args.max_strength, len(train_seeds)
    )
    data = []
    wait_for_preprocess()
    if args.cache is not None and args.cache.is_file():
        with np.load(args.cache) as z:
            n = int(z["n"])
            data = [(z[f"x{i}"], z[f"y{i}"]) for i in range(n)]
            val = [(z[f"vx{i}"], z[f"vy{i}"]) for i in range(int(z["nv"]))]
        log(f"loaded {n} training and {len(val)} validation phantoms from {args.cache}")
    else:
        data = []
        for i, (s, st) in enumerate(zip(train_seeds, strengths)):
            # every other phantom is made at 1 mm and downsampled like inference does
            data.append(make_training_case(s, args.spacing, float(st), native=i % 2 == 0))
            if len(data) % 10 == 0:
                log(
                    f"made {len(data)}/{len(train_seeds)} training phantoms "
                    f"(last shape {data[-1][0].shape})"
                )
        val_rng = np.random.default_rng(args.seed + 2)
        val = [
            make_training_case(s, args.spacing, float(val_rng.uniform(0, args.max_strength)), True)
            for s in seed_range(args.val_seeds)
        ]
        if args.cache is not None:
            arrays = {f"x{i}": x for i, (x, _) in enumerate(data)}
            arrays.update({f"y{i}": y for i, (_, y) in enumerate(data)})
            arrays.update({f"vx{i}": x for i, (x, _) in enumerate(val)})
            arrays.update({f"vy{i}": y for i, (_, y) in enumerate(val)})
            np.savez(args.cache, n=len(data), nv=len(val), **arrays)
    log(f"data ready in {time.perf_counter() - t_start:.0f} s")

    config = dict(DEFAULT_CONFIG)
    net = build_network(config)
    log(f"network {config['name']} with {count_parameters(net)} parameters")
    loss_fn = DiceCELoss(
        to_onehot_y=True, softmax=True, squared_pred=False, smooth_nr=1e-5, smooth_dr=1e-5
    )
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda it: 0.5 * (1 + math.cos(math.pi * min(it, args.iterations) / args.iterations))
    )
    augment = build_augment(args.crop)
    augment.set_random_state(seed=args.seed)

    best = {"WT": -1.0}
    best_state = None
    best_iter = 0
    t_train = time.perf_counter()
    it = 0
    running = []
    stopped_early = False
    for it in range(1, args.iterations + 1):
        x, y = sample_batch(data, augment, rng, args.batch, args.crop)
        logits = net(x)
        loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running.append(loss.item())
        if it % 25 == 0:
            el = time.perf_counter() - t_train
            log(
                f"it {it}/{args.iterations} loss {np.mean(running[-25:]):.4f} "
                f"lr {sched.get_last_lr()[0]:.2e} {el / it:.2f} s/it"
            )
        last = it == args.iterations or (time.perf_counter() - t_train) / 60 > args.max_minutes
        if it % args.val_every == 0 or last:
            m = validate(net, val, args.crop)
            log(f"validation at it {it}: {m}")
            if m["WT"] > best["WT"]:
                best, best_iter = m, it
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if last:
            stopped_early = it < args.iterations
            break
    train_minutes = (time.perf_counter() - t_train) / 60
    log(
        f"training done: {it} iterations in {train_minutes:.1f} min; best WT {best['WT']:.3f} "
        f"at it {best_iter}"
    )

    net.load_state_dict(best_state)
    provenance = {
        "strategy": "supervised (synthetic phantoms only)",
        "n_labelled": len(train_seeds),
        "n_unlabelled": 0,
        "val_metrics": {f"dice_{k}": float(v) for k, v in best.items()},
        "training_data": (
            f"napari_ssseg.core.phantom seeds {args.train_seeds}, PhantomStyle strength "
            f"U(0, {args.max_strength}), {args.spacing} mm"
        ),
        "validation_data": f"phantom seeds {args.val_seeds}",
        "iterations": it,
        "best_iteration": best_iter,
        "stopped_early_by_time_budget": stopped_early,
        "train_minutes": round(train_minutes, 1),
        "recipe": "scripts/train_default_model.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed,
    }
    normalization = {
        "method": "zscore",
        "margin": PREPROCESS_KW["margin"],
        "clip": list(PREPROCESS_KW["clip"]),
        "n4": False,
        "spacing_zyx": [args.spacing] * 3,
    }
    out = save_checkpoint(
        args.out,
        net,
        config,
        modalities=("t1", "t1ce", "t2", "flair"),
        normalization=normalization,
        label_convention="brats2023",
        output="classes",
        patch_size=(args.crop,) * 3,
        provenance=provenance,
    )
    log(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB)")

    try:
        res = evaluate_heldout(out, seed_range(args.test_seeds), args.test_strength)
        args.metrics_json.write_text(json.dumps(res, indent=2))
        log(f"held-out mean Dice: {res['mean']}")
    except Exception as exc:  # inference module may not be ready yet: evaluate later
        log(f"held-out evaluation skipped ({type(exc).__name__}: {exc}); run --evaluate-only")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
