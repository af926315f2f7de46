"""GPU check: CUDA inference of the default model and a few AMP training steps, with peak memory.

Two measurements on one case, with the package's own code paths:

1. **inference** - :func:`napari_ssseg.ml.inference.predict_case` (MONAI sliding window at
   the checkpoint's patch size; mixed precision on CUDA, as ``ssseg predict`` does) of the
   default model (or ``--model``), repeated ``--repeats`` times (the first run includes CUDA
   / cuDNN start-up). Wall time per run (``torch.cuda.synchronize`` before reading the clock)
   and the peak GPU memory of the run (``torch.cuda.max_memory_allocated`` after
   ``reset_peak_memory_stats``).
2. **training** - ``--steps`` optimiser steps of the same network (fresh copy of the model's
   weights, AdamW) on random ``--patch``-cubed crops (default 64^3, batch ``--batch-size``) of
   the case's network input, with the ``supervised`` strategy's loss
   (:func:`napari_ssseg.ml.strategies.base.masked_dice_ce`) against the case's labels (its
   proposal when it has none). On CUDA the forward pass runs under ``torch.autocast`` float16
   with a ``torch.amp.GradScaler`` (``--amp fp16``, the default there); on CPU autocast is
   off by default (``--amp bf16`` runs bfloat16 autocast on CPU, no scaler). Time per step
   (first step reported apart: it includes cuDNN autotuning) and peak GPU memory.

On CPU (``--device cpu``, what the tests run) GPU memory is reported as ``"n/a on CPU"`` and
the process's peak resident memory (``ru_maxrss``) is given instead. The summary is printed
as JSON on stdout and written to ``--json OUT`` when given.

Run: ``python benchmarks/gpu_check.py [--device cuda] [--case DIR] [--json gpu_check.json]``
(without ``--case`` a phantom on the BraTS grid, 155 x 240 x 240 at 1 mm, is generated).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux: ru_maxrss is in KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _resolve_device(name: str) -> Any:
    import torch

    from napari_ssseg.errors import InputError

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"--device {name}: CUDA is not available in this torch build "
            f"({torch.__version__}, CUDA {torch.version.cuda}); run on a GPU machine with a "
            "CUDA build of torch, or pass --device cpu."
        )
    if dev.type not in ("cuda", "cpu"):
        raise InputError(f"--device {name}: expected auto, cpu, cuda or cuda:N.")
    return dev


class _Meter:
    """Wall time and peak memory of one phase on ``device``."""

    def __init__(self, device: Any):
        self.device = device

    def __enter__(self) -> _Meter:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self.t0
        if self.device.type == "cuda":
            self.peak_alloc_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
            self.peak_reserved_mib = torch.cuda.max_memory_reserved(self.device) / 2**20
        else:
            self.peak_alloc_mib = self.peak_reserved_mib = None

    def memory(self) -> dict[str, Any]:
        if self.device.type == "cuda":
            return {
                "peak_gpu_allocated_mib": round(self.peak_alloc_mib, 1),
                "peak_gpu_reserved_mib": round(self.peak_reserved_mib, 1),
            }
        return {
            "peak_gpu_allocated_mib": "n/a on CPU",
            "peak_process_rss_mib": round(_rss_mib(), 1),
        }


def _load_case(args: argparse.Namespace) -> tuple[Any, str]:
    if args.case:
        from napari_ssseg.io.readers import load_case

        return load_case(args.case, label_errors="warn"), f"case folder {args.case}"
    from napari_ssseg.core.phantom import make_phantom

    shape = tuple(args.phantom_shape)
    spacing = (float(args.phantom_spacing),) * 3
    case = make_phantom(shape=shape, spacing=spacing, seed=args.seed).to_case(name="gpu_check")
    return case, f"phantom {shape} at {spacing[0]} mm, seed {args.seed}"


def _training_targets(case: Any, ckpt: Any, prep: Any, proposal: np.ndarray) -> tuple[Any, str]:
    """Class-index targets on the network's grid (the case's labels, else its proposal)."""
    import torch
    import torch.nn.functional as F

    from napari_ssseg.ml.checkpoint import class_channel_map

    labels, source = (case.labels, "labels") if case.labels is not None else (proposal, "proposal")
    cropped = np.asarray(labels)[tuple(prep.pre.bbox)]
    channel_of = np.zeros(256, dtype=np.int64)
    for channel, internal in enumerate(class_channel_map(ckpt.label_convention, 4)):
        channel_of[int(internal)] = channel
    t = torch.from_numpy(channel_of[cropped].astype(np.float32))[None, None]
    size = prep.x.shape[2:]
    if ckpt.axis_order == "xyz":
        t = t.permute(0, 1, 4, 3, 2)
    t = F.interpolate(t, size=tuple(size), mode="nearest")
    return t[0, 0].long(), source


def _random_crops(x: Any, y: Any, patch: int, batch: int, rng: np.random.Generator):
    """``batch`` random ``patch``-cubed crops of (1, C, Z, Y, X) ``x`` and (Z, Y, X) ``y``."""
    import torch
    import torch.nn.functional as F

    pad = [max(0, patch - s) for s in x.shape[2:]]
    if any(pad):
        spec = [0, pad[2], 0, pad[1], 0, pad[0]]
        x = F.pad(x, spec)
        y = F.pad(y[None, None].float(), spec)[0, 0].long()
    xs, ys = [], []
    for _ in range(batch):
        o = [int(rng.integers(0, s - patch + 1)) for s in x.shape[2:]]
        sl = tuple(slice(a, a + patch) for a in o)
        xs.append(x[(0, slice(None), *sl)])
        ys.append(y[sl])
    return torch.stack(xs), torch.stack(ys)


def run_check(args: argparse.Namespace) -> dict[str, Any]:
    """Run both measurements and return the summary (see the module docstring)."""
    import torch

    from napari_ssseg.ml.checkpoint import load_model
    from napari_ssseg.ml.inference import predict_case, prepare_input
    from napari_ssseg.ml.strategies.base import masked_dice_ce

    device = _resolve_device(args.device)
    torch.manual_seed(args.seed)
    amp = args.amp
    if amp == "auto":
        amp = "fp16" if device.type == "cuda" else "off"
    if amp == "fp16" and device.type != "cuda":
        from napari_ssseg.errors import InputError

        raise InputError("--amp fp16 needs CUDA; on CPU use --amp bf16 or --amp off.")
    summary: dict[str, Any] = {
        "device": str(device),
        "device_name": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
        ),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "threads": torch.get_num_threads(),
    }
    t0 = time.perf_counter()
    ckpt = load_model(args.model)
    case, case_source = _load_case(args)
    summary.update(
        model=ckpt.describe(),
        model_source=ckpt.source,
        case=case_source,
        case_shape=list(case.shape),
        case_spacing_zyx=[float(s) for s in case.scale],
        setup_seconds=round(time.perf_counter() - t0, 2),
    )

    # 1. inference, as ssseg predict runs it
    runs = []
    result = None
    for _ in range(max(1, args.repeats)):
        with _Meter(device) as meter:
            result = predict_case(case, ckpt, device=str(device), allow_cpu_fallback=False)
        info = result["info"]
        runs.append(
            {
                "seconds": round(meter.seconds, 3),
                "network_seconds": _round(info.get("timings", {}).get("inference")),
                **meter.memory(),
            }
        )
    info = result["info"]
    summary["inference"] = {
        "runs": runs,
        "device_used": str(info.get("device")),
        "amp": info.get("amp"),
        "roi_size": info.get("roi_size", list(ckpt.patch_size)),
        "windows": info.get("n_windows"),
        "sw_batch_size": info.get("sw_batch_size"),
        "network_input_shape": info.get("network_input_shape"),
        "tumour_voxels": int(np.count_nonzero(result["labels"])),
    }

    # 2. a few training steps with the supervised strategy's loss
    prep = prepare_input(case, ckpt)
    target, target_source = _training_targets(case, ckpt, prep, result["labels"])
    net = ckpt.build(device)[0]
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    use_scaler = amp == "fp16"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler) if device.type == "cuda" else None
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)
    rng = np.random.default_rng(args.seed)
    steps = []
    for _ in range(max(1, args.steps)):
        xb, yb = _random_crops(prep.x, target, args.patch, args.batch_size, rng)
        xb, yb = xb.to(device), yb.to(device)
        with _Meter(device) as meter:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(
                device.type, dtype=dtype or torch.float32, enabled=dtype is not None
            ):
                logits = net(xb)
            loss = masked_dice_ce(logits, yb)["loss"]
            if scaler is not None and use_scaler:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
        steps.append({"seconds": round(meter.seconds, 4), "loss": round(float(loss.detach()), 4)})
        if device.type == "cuda":
            steps[-1]["peak_gpu_allocated_mib"] = round(meter.peak_alloc_mib, 1)
            steps[-1]["peak_gpu_reserved_mib"] = round(meter.peak_reserved_mib, 1)
        if not np.isfinite(steps[-1]["loss"]):
            raise RuntimeError(f"training step {len(steps)} gave a non-finite loss {float(loss)}")
    later = [s["seconds"] for s in steps[1:]] or [steps[0]["seconds"]]
    summary["training"] = {
        "amp": {
            "fp16": "float16 autocast + GradScaler (CUDA)",
            "bf16": f"bfloat16 autocast on {device.type}, no GradScaler",
            "off": "off (float32)",
        }[amp],
        "patch": [args.patch] * 3,
        "batch_size": args.batch_size,
        "targets": target_source,
        "loss": "masked_dice_ce (the supervised strategy's Dice + CE)",
        "steps": steps,
        "first_step_seconds": steps[0]["seconds"],
        "seconds_per_step": round(float(np.median(later)), 4),
    }
    if device.type == "cuda":  # the largest per-step peak (weights + optimiser state included)
        for key in ("peak_gpu_allocated_mib", "peak_gpu_reserved_mib"):
            summary["training"][key] = max(s[key] for s in steps)
    else:
        summary["training"].update(meter.memory())
    return summary


def _round(v: Any) -> Any:
    return round(float(v), 3) if isinstance(v, (int, float)) else v


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto (CUDA if present), cuda, cuda:N, cpu")
    ap.add_argument("--model", default=None, help="checkpoint or bundle (default: shipped model)")
    ap.add_argument("--case", default=None, help="case folder (default: a generated phantom)")
    ap.add_argument("--phantom-shape", nargs=3, type=int, default=(155, 240, 240))
    ap.add_argument("--phantom-spacing", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=2, help="inference runs (default 2)")
    ap.add_argument("--steps", type=int, default=5, help="training steps (default 5)")
    ap.add_argument("--patch", type=int, default=64, help="training crop size (default 64)")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument(
        "--amp",
        choices=("auto", "fp16", "bf16", "off"),
        default="auto",
        help="training autocast: auto = fp16 on CUDA, off on CPU",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, metavar="OUT", help="also write the summary here")
    args = ap.parse_args(argv)

    from napari_ssseg.errors import SsegError

    try:
        summary = run_check(args)
    except SsegError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
