"""Sliding-window prediction with uncertainty, as a cancellable generator with progress.

:func:`predict_case_iter` is the engine of ``ssseg predict`` and of the napari "Propose" panel.
It yields progress events while MONAI's :func:`~monai.inferers.sliding_window_inference` runs,
and finally one result event::

    {"event": "progress", "done": int, "total": int, "fraction": float, "stage": str,
     "message": str}
    ...
    {"event": "result", "labels": (Z, Y, X) uint8, "probabilities": (K, Z, Y, X) float32,
     "uncertainty": (Z, Y, X) float32, "uncertainty_maps": {name: (Z, Y, X) float32},
     "info": dict}

Pipeline: select/reorder the modalities the checkpoint needs → :func:`~napari_ssseg.core.
preprocess.preprocess` with the checkpoint's normalisation (brain crop, clip, z-score) → resample
the crop to the checkpoint's voxel size (area averaging) → sliding-window inference for every
pass (networks x test-time flips x MC-dropout samples) → average the probabilities → resample
back (trilinear) → labels → uncrop to the full canonical grid.

The network runs in a helper thread; the generator waits on a queue and yields an event for
every finished window batch, and at least every 0.5 s otherwise (a heartbeat), so a consumer
can update a progress bar and stop promptly. Cancellation: stop iterating and call
``.close()`` on the generator (or pass ``should_stop``, which makes the generator raise
:class:`~napari_ssseg.core.progress.Cancelled`). Either way the helper thread is stopped at the
next window batch and joined before the generator finishes; nothing is returned or written.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import queue
import threading
import time
import warnings
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
import torch
import torch.nn.functional as F

from napari_ssseg.core.case import MODALITIES, Case, regions_to_labels
from napari_ssseg.core.progress import Cancelled
from napari_ssseg.errors import InputError, check_choice
from napari_ssseg.ml.checkpoint import (
    Checkpoint,
    class_channel_map,
    load_model,
    match_modalities,
)
from napari_ssseg.ml.device import is_oom_error, resolve_device
from napari_ssseg.ml.networks import activate, has_dropout, roi_divisor, set_mc_dropout

__all__ = [
    "match_inputs",
    "MISSING_MODALITY_POLICIES",
    "trained_with_modality_dropout",
    "UNCERTAINTY_KINDS",
    "TTA_FLIPS",
    "predict_case_iter",
    "predict_case",
    "prepare_input",
    "PreparedInput",
    "Cancelled",
]

#: Uncertainty maps that can be chosen as ``result["uncertainty"]``.
UNCERTAINTY_KINDS = ("auto", "entropy", "mutual_information", "disagreement")
#: Test-time augmentation: identity plus a flip along each axis (of the network input).
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (4,))

_HEARTBEAT_S = 0.5


# ----------------------------------------------------------------------------- input
@dataclass
class PreparedInput:
    """The network input of one case and what is needed to map the output back.

    Attributes
    ----------
    x : (1, C, z', y', x') tensor of float32
        Preprocessed, resampled crop in the network's axis order (CPU).
    pre : Preprocessed
        Result of :func:`napari_ssseg.core.preprocess.preprocess` (crop box, mask).
    crop_shape : tuple of 3 int
        Shape of the crop at the case's resolution.
    spacing_zyx : tuple of 3 float
        Voxel size of the case.
    model_spacing_zyx : tuple of 3 float
        Voxel size the network runs at.
    channel_index : list of int or None
        Case channel used for each network input channel (None: a missing modality, fed
        as zeros).
    """

    x: torch.Tensor
    pre: Any
    crop_shape: tuple[int, int, int]
    spacing_zyx: tuple[float, float, float]
    model_spacing_zyx: tuple[float, float, float]
    channel_index: list[int | None]
    timings: dict[str, float] = field(default_factory=dict)


def _case_parts(
    case_or_images: Case | np.ndarray,
    modalities: Sequence[str] | None,
    spacing: Sequence[float] | None,
) -> tuple[np.ndarray, tuple[str, ...], tuple[float, float, float], str]:
    if isinstance(case_or_images, Case):
        case = case_or_images
        z, y, x = (float(s) for s in case.canonical_geometry.spacing_zyx)
        return case.images, tuple(case.modalities), (z, y, x), f"case {case.name!r}"
    images = case_or_images
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise InputError(
            "predict needs a Case or a (C, Z, Y, X) image array; got "
            f"{type(images).__name__}"
            + (f" with shape {images.shape}" if hasattr(images, "shape") else "")
            + "."
        )
    if not np.issubdtype(images.dtype, np.number):
        raise InputError(f"The image array has dtype {images.dtype}; expected numbers.")
    mods = tuple(modalities) if modalities is not None else MODALITIES[: images.shape[0]]
    if len(mods) != images.shape[0]:
        raise InputError(
            f"modalities={list(mods)} names {len(mods)} channels but the image array has "
            f"{images.shape[0]}."
        )
    sp = (1.0, 1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(np.isfinite(sp)) or min(sp) <= 0:
        raise InputError(f"spacing={spacing!r}; expected 3 positive voxel sizes (z, y, x) in mm.")
    return images, mods, (sp[0], sp[1], sp[2]), "the image array"


def _target_shape(shape: Sequence[int], sp: Sequence[float], target: Sequence[float]) -> list[int]:
    return [max(1, int(round(n * s / t))) for n, s, t in zip(shape, sp, target)]


def prepare_input(
    case_or_images: Case | np.ndarray,
    checkpoint: Checkpoint,
    *,
    modalities: Sequence[str] | None = None,
    spacing: Sequence[float] | None = None,
    channel_index: list[int | None] | None = None,
) -> PreparedInput:
    """Select channels, preprocess and resample a case into the network's input tensor.

    Parameters
    ----------
    case_or_images : Case or (C, Z, Y, X) ndarray
        A case (canonical arrays), or raw images with ``modalities`` (default: the canonical
        order t1, t1ce, t2, flair) and ``spacing`` (default 1 mm).
    checkpoint : Checkpoint
        Gives the modalities, normalisation and voxel size.

    Raises
    ------
    InputError
        Missing modality, bad array.
    """
    from napari_ssseg.core.preprocess import preprocess

    images, mods, sp, source = _case_parts(case_or_images, modalities, spacing)
    if channel_index is None:
        idx: list[int | None] = list(match_modalities(checkpoint.modalities, mods, source=source))
    else:
        idx = list(channel_index)
    present = [i for i in idx if i is not None]
    if not present:
        raise InputError(f"{source} has none of the model's inputs ({', '.join(mods)}).")
    norm = checkpoint.normalization
    t0 = time.perf_counter()
    sel = images if present == list(range(images.shape[0])) else images[present]
    if not np.all(np.isfinite(sel)):
        raise InputError(f"{source} contains NaN or infinite intensities; fix the image files.")
    pre = preprocess(
        sel,
        margin=int(norm.get("margin", 2)),
        clip=norm.get("clip", (0.5, 99.5)),
        n4=bool(norm.get("n4", False)),
        spacing=sp,
    )
    t1 = time.perf_counter()
    crop_shape = tuple(int(s) for s in pre.images.shape[1:])
    x = torch.from_numpy(np.ascontiguousarray(pre.images, dtype=np.float32))[None]
    if len(present) != len(idx):  # missing modalities: zero channels (as in modality dropout)
        full = torch.zeros((1, len(idx), *x.shape[2:]), dtype=torch.float32)
        k = 0
        for c, i in enumerate(idx):
            if i is not None:
                full[:, c] = x[:, k]
                k += 1
        x = full
    target = norm.get("spacing_zyx")
    model_sp = sp if not target else tuple(float(t) for t in target)
    new_shape = _target_shape(crop_shape, sp, model_sp)
    if list(new_shape) != list(crop_shape):
        x = F.interpolate(x, size=new_shape, mode="area")
    if checkpoint.axis_order == "xyz":
        x = x.permute(0, 1, 4, 3, 2)
    x = x.contiguous()
    t2 = time.perf_counter()
    return PreparedInput(
        x=x,
        pre=pre,
        crop_shape=crop_shape,  # type: ignore[arg-type]
        spacing_zyx=sp,
        model_spacing_zyx=model_sp,  # type: ignore[arg-type]
        channel_index=idx,
        timings={"preprocess": t1 - t0, "resample_in": t2 - t1},
    )


# ----------------------------------------------------------------------------- windows
def count_windows(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> int:
    """Number of sliding windows MONAI uses for an image (after padding to the ROI)."""
    size = [max(int(i), int(r)) for i, r in zip(image_size, roi_size)]
    n = 1
    for i, r in zip(size, roi_size):
        if r >= i:
            continue
        interval = max(int(r * (1 - overlap)), 1)
        n *= int(math.ceil((i - r) / interval)) + 1
    return n


def _check_roi(roi: Sequence[int] | int | None, ckpt: Checkpoint) -> tuple[int, int, int]:
    if roi is None:
        roi = ckpt.patch_size
    if isinstance(roi, (int, np.integer)):
        roi = (int(roi),) * 3
    try:
        r = tuple(int(v) for v in roi)
    except (TypeError, ValueError):
        r = ()
    if len(r) != 3 or min(r) < 1:
        raise InputError(f"roi_size={roi!r}; expected 3 positive window sizes (Z, Y, X).")
    div = roi_divisor(ckpt.config)
    if any(v % div for v in r):
        raise InputError(
            f"roi_size={list(r)} does not suit {ckpt.config['name']}: each size must be a "
            f"multiple of {div}. Try {[max(div, div * round(v / div)) for v in r]}."
        )
    if ckpt.config["name"] == "UNETR" and list(r) != list(ckpt.config.get("img_size", r)):
        raise InputError(
            f"roi_size={list(r)} must equal the UNETR img_size {ckpt.config['img_size']}."
        )
    return (r[0], r[1], r[2])


# ----------------------------------------------------------------------------- passes
@dataclass
class _Pass:
    network: int
    flip: tuple[int, ...]
    dropout: bool


@dataclass
class _RunState:
    device: torch.device
    sw_batch_size: int
    amp: bool
    notes: list[str] = field(default_factory=list)


def _entropy(p: torch.Tensor, output: str) -> torch.Tensor:
    """Normalised predictive entropy in [0, 1]: (K, ...) probabilities -> (...)."""
    eps = 1e-7
    if output == "classes":
        k = p.shape[0]
        h = -(p * torch.log(p.clamp_min(eps))).sum(0) / math.log(k)
    else:
        q = p.clamp(eps, 1 - eps)
        h = (-(q * torch.log(q) + (1 - q) * torch.log(1 - q)) / math.log(2)).mean(0)
    return h.clamp_(0.0, 1.0)


def _run_pass_with_fallback(
    run: Callable[[torch.device, int], torch.Tensor],
    state: _RunState,
    allow_cpu_fallback: bool,
    note: Callable[[str], None],
) -> torch.Tensor:
    """Call ``run(device, sw_batch_size)``; on out-of-memory, shrink the batch, then use CPU.

    ``state`` is updated so later passes keep the reduced batch size / the CPU.
    """
    while True:
        try:
            return run(state.device, state.sw_batch_size)
        except Cancelled:
            raise
        except Exception as exc:
            if not is_oom_error(exc):
                raise
            if state.device.type == "cuda":
                torch.cuda.empty_cache()
            if state.sw_batch_size > 1:
                new = max(1, state.sw_batch_size // 2)
                note(
                    f"Out of memory on {state.device} with {state.sw_batch_size} windows per "
                    f"batch; freed memory and retrying with {new}."
                )
                state.sw_batch_size = new
                continue
            if state.device.type != "cpu" and allow_cpu_fallback:
                note(
                    f"Out of memory on {state.device} even with 1 window per batch; falling "
                    "back to the CPU (slower)."
                )
                state.device = torch.device("cpu")
                state.amp = False
                continue
            raise InputError(
                f"Out of memory on {state.device} even with 1 window per batch. Use a smaller "
                "roi_size, close other programs, or run on another device"
                + ("" if allow_cpu_fallback else " (or allow the CPU fallback)")
                + "."
            ) from None


# ----------------------------------------------------------------------------- engine
#: Choices of ``missing_modalities`` (see :func:`match_inputs`).
MISSING_MODALITY_POLICIES: tuple[str, ...] = ("auto", "zero", "error")

# Regions that lean most on each input (for the message when one is missing).
_WEAKER_WITHOUT: dict[str, str] = {
    "flair": "whole tumour (oedema)",
    "t1ce": "tumour core and enhancing tumour",
    "t2": "whole tumour (oedema)",
    "t1": "tumour core (slightly)",
}


def trained_with_modality_dropout(checkpoint: Checkpoint) -> bool:
    """True if the checkpoint's provenance says it was trained with modality dropout."""
    try:
        return float(checkpoint.provenance.get("modality_dropout") or 0.0) > 0.0
    except (TypeError, ValueError):
        return False


def match_inputs(
    checkpoint: Checkpoint,
    available: Sequence[str],
    source: str = "the case",
    policy: str = "auto",
) -> tuple[list[int | None], str | None]:
    """Case channel for each of the model's inputs, with None for a missing modality.

    Parameters
    ----------
    checkpoint : Checkpoint
        The model.
    available : sequence of str
        Modalities of the case, in its channel order.
    source : str
        Name used in messages.
    policy : {"auto", "zero", "error"}
        ``"error"``: a missing input raises (as :func:`match_modalities`). ``"zero"``: a
        missing input is fed as zeros (the z-scored mean, which is what modality dropout
        trains for). ``"auto"``: ``"zero"`` if the model was trained with modality dropout,
        else ``"error"``.

    Returns
    -------
    idx : list of int or None
        ``available[idx[i]] == checkpoint.modalities[i]``, or None where it is missing.
    note : str or None
        A sentence naming the missing inputs and the regions that will be weaker (also
        issued as a UserWarning), or None when nothing is missing.

    Raises
    ------
    InputError
        A missing input under ``"error"`` (or ``"auto"`` with a model trained without
        modality dropout), no input at all, or a bad ``policy``.
    """
    policy = check_choice("missing_modalities", policy, MISSING_MODALITY_POLICIES)
    req = [str(m).lower() for m in checkpoint.modalities]
    avail = [str(m).lower() for m in available]
    missing = [m for m in req if m not in avail]
    zero = policy == "zero" or (policy == "auto" and trained_with_modality_dropout(checkpoint))
    if not missing or not zero:
        if missing and policy == "auto":
            try:
                match_modalities(req, avail, source=source)
            except InputError as exc:
                raise InputError(
                    f"{exc} This model was not trained with modality dropout, so it cannot "
                    "propose without them (missing_modalities='zero' / --missing-modalities "
                    "zero forces it, with much weaker results)."
                ) from None
        return list(match_modalities(req, avail, source=source)), None
    if len(missing) == len(req):
        raise InputError(
            f"{source} has none of the model's inputs ({', '.join(req)}); it has "
            f"{', '.join(avail) or 'no modality'}."
        )
    present = [m for m in req if m in avail]
    idx_present = match_modalities(present, avail, source=source)
    it = iter(idx_present)
    idx: list[int | None] = [None if m in missing else next(it) for m in req]
    weaker = sorted({_WEAKER_WITHOUT.get(m, "all regions") for m in missing})
    how = (
        "it was trained for that with modality dropout"
        if trained_with_modality_dropout(checkpoint)
        else "this model was NOT trained with modality dropout, so expect poor results"
    )
    note = (
        f"{source} has no {', '.join(missing)}: the model ran with those inputs set to zero "
        f"({how}); expect a weaker {' and '.join(weaker)}."
    )
    warnings.warn(note, UserWarning, stacklevel=2)
    return idx, note


def predict_case_iter(
    case_or_images: Case | np.ndarray,
    checkpoint: Checkpoint | str | None = None,
    *,
    device: str | torch.device = "auto",
    roi_size: Sequence[int] | int | None = None,
    sw_batch_size: int = 2,
    overlap: float = 0.25,
    tta: bool = False,
    mc_samples: int = 0,
    amp: bool | None = None,
    allow_cpu_fallback: bool = True,
    uncertainty: str = "auto",
    modalities: Sequence[str] | None = None,
    spacing: Sequence[float] | None = None,
    should_stop: Callable[[], bool] | None = None,
    seed: int = 0,
    missing_modalities: str = "auto",
    min_component_fraction: float | None = None,
) -> Iterator[dict[str, Any]]:
    """Predict labels, probabilities and uncertainty of a case; yield progress, then the result.

    Parameters
    ----------
    case_or_images : Case or (C, Z, Y, X) ndarray
        The case (canonical arrays), or raw images with ``modalities`` and ``spacing``.
    checkpoint : Checkpoint, path, bundle folder, "default" or None
        The model (None = the default model shipped with the package).
    device : str
        ``"auto"`` (CUDA, MPS, CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
    roi_size : int or 3 ints, optional
        Sliding-window size in network voxels (default: the checkpoint's ``patch_size``).
    sw_batch_size : int
        Windows per forward pass (halved automatically on out-of-memory).
    overlap : float
        Window overlap in [0, 1).
    tta : bool
        Test-time augmentation: average over the identity and a flip along each axis.
    mc_samples : int
        Number of Monte-Carlo dropout passes (0 = off; needs dropout in the network).
    amp : bool, optional
        Mixed precision; default on for CUDA only.
    allow_cpu_fallback : bool
        Use the CPU (with a warning) when the requested accelerator is absent or runs out of
        memory; otherwise raise.
    uncertainty : {"auto", "entropy", "mutual_information", "disagreement"}
        Map returned as ``result["uncertainty"]``. ``"auto"``: disagreement (mean over the
        pairs of networks) for a checkpoint with several networks (a CPS pair, an
        ensemble), mutual information with MC dropout, else the predictive entropy (of the
        mean over flips when ``tta``).
    modalities, spacing
        For raw arrays only: channel names and voxel size ``(z, y, x)`` in mm.
    should_stop : callable, optional
        Polled at least every 0.5 s; when it returns True the generator raises
        :class:`~napari_ssseg.core.progress.Cancelled`.
    seed : int
        Seed of the MC-dropout masks (the global torch RNG is restored afterwards).
    missing_modalities : {"auto", "zero", "error"}
        What to do when the case lacks some of the model's inputs (see
        :func:`match_inputs`): ``"auto"`` (default) feeds zeros for them if the model was
        trained with modality dropout (its provenance says so) and raises otherwise;
        ``"zero"`` always feeds zeros; ``"error"`` always raises. Zero-filling warns, naming
        the missing inputs and the regions that will be weaker, and is recorded in
        ``info["missing_modalities"]`` and ``info["notes"]``.
    min_component_fraction : float or None
        Post-processing of the labels: whole-tumour connected components smaller than this
        fraction of the largest are set to background (remote false positives;
        :func:`napari_ssseg.core.editing.minor_components_mask`). None (default): the
        checkpoint's own setting (``normalization["postprocess"]``; the default model's is
        in docs/models.md), 0: keep every component. The probabilities and uncertainty are
        not changed. What was removed is in ``info["postprocess"]``.

    Yields
    ------
    dict
        ``{"event": "progress", "done", "total", "fraction", "stage", "message"}`` events
        (``done`` never decreases; ``total`` can grow if an out-of-memory retry adds work),
        then one ``{"event": "result", ...}`` (see the module docstring). ``labels`` are
        internal (0 bg, 1 NCR, 2 ED, 3 ET) on the case's full canonical grid;
        ``probabilities`` are per internal class (classes output, K=4) or per region WT, TC,
        ET (regions output, K=3), see ``info["probability_channels"]``; uncertainty maps are
        in [0, 1] and 0 outside the brain's bounding box.

    Raises
    ------
    InputError
        Bad model, missing modality, bad option, unavailable device without fallback.
    Cancelled
        ``should_stop`` returned True.
    """
    t_start = time.perf_counter()
    # ---- validate options before any work
    if (
        isinstance(sw_batch_size, bool)
        or not isinstance(sw_batch_size, (int, np.integer))
        or (sw_batch_size < 1)
    ):
        raise InputError(f"sw_batch_size={sw_batch_size!r}; expected an integer >= 1.")
    if not isinstance(overlap, (int, float)) or not 0 <= float(overlap) < 1:
        raise InputError(f"overlap={overlap!r}; expected a number in [0, 1), e.g. 0.25.")
    if (
        isinstance(mc_samples, bool)
        or not isinstance(mc_samples, (int, np.integer))
        or (mc_samples < 0 or mc_samples > 100)
    ):
        raise InputError(f"mc_samples={mc_samples!r}; expected an integer from 0 to 100.")
    uncertainty = check_choice("uncertainty", uncertainty, UNCERTAINTY_KINDS)
    if min_component_fraction is not None and not (
        isinstance(min_component_fraction, (int, float))
        and 0.0 <= float(min_component_fraction) <= 1.0
    ):
        raise InputError(
            f"min_component_fraction={min_component_fraction!r}; expected a fraction in "
            "[0, 1] (0 keeps every component) or None (the model's setting)."
        )

    yield _progress(0, 1, "load", "Loading the model")
    ckpt = load_model(checkpoint)
    roi = _check_roi(roi_size, ckpt)
    dev = resolve_device(device, allow_cpu_fallback=allow_cpu_fallback)
    use_amp = (dev.type == "cuda") if amp is None else bool(amp and dev.type == "cuda")
    t_load = time.perf_counter()

    _, mods, _, source = _case_parts(case_or_images, modalities, spacing)
    idx, missing_note = match_inputs(ckpt, mods, source, missing_modalities)  # warns here
    msg = "Preprocessing (brain crop, clip, z-score)"
    yield _progress(0, 1, "preprocess", msg)
    prep = yield from _pump(
        lambda: prepare_input(
            case_or_images, ckpt, modalities=modalities, spacing=spacing, channel_index=idx
        ),
        should_stop,
        _progress(0, 1, "preprocess", msg),
    )

    networks = ckpt.build("cpu")
    mc = int(mc_samples)
    if mc and not any(has_dropout(n) for n in networks):
        warnings.warn(
            "The model has no dropout layers, so MC-dropout samples would all be identical; "
            "mc_samples ignored.",
            UserWarning,
            stacklevel=2,
        )
        mc = 0
    flips = TTA_FLIPS if tta else ((),)
    passes = [
        _Pass(n, f, mc > 0) for n in range(len(networks)) for f in flips for _ in range(max(mc, 1))
    ]
    if uncertainty == "disagreement" and len(networks) < 2:
        raise InputError(
            "uncertainty='disagreement' needs a checkpoint with two networks (a CPS pair); "
            f"this one has {len(networks)}. Use 'entropy' or 'auto'."
        )
    if uncertainty == "mutual_information" and mc == 0:
        raise InputError("uncertainty='mutual_information' needs MC dropout: set mc_samples >= 2.")
    if uncertainty == "auto":
        uncertainty = (
            "disagreement" if len(networks) > 1 else "mutual_information" if mc else "entropy"
        )

    spatial = tuple(int(s) for s in prep.x.shape[2:])
    n_win = count_windows(spatial, roi, float(overlap))
    state = _RunState(dev, int(sw_batch_size), use_amp)
    per_pass = int(math.ceil(n_win / state.sw_batch_size))
    counter = {"done": 0, "total": per_pass * len(passes)}

    q: queue.Queue = queue.Queue()
    stop = threading.Event()
    out_type = ckpt.output

    def worker() -> None:
        try:
            q.put(("done", _run_all()))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put(("error", exc))

    def _run_all() -> dict[str, Any]:
        from monai.inferers import sliding_window_inference

        k = ckpt.config["out_channels"]
        sum_p = torch.zeros((k, *spatial), dtype=torch.float32)
        sum_h = torch.zeros(spatial, dtype=torch.float32) if mc else None
        per_net = [torch.zeros((k, *spatial), dtype=torch.float32) for _ in networks]
        n_per_net = [0] * len(networks)
        t_inf = 0.0
        rng_ctx = torch.random.fork_rng(devices=[]) if mc else contextlib.nullcontext()
        with rng_ctx, torch.inference_mode():
            if mc:
                torch.manual_seed(seed)
            for i_pass, ps in enumerate(passes):
                net = networks[ps.network]
                set_mc_dropout(net, ps.dropout)

                def run(device: torch.device, bs: int, net=net, ps=ps, i_pass=i_pass):
                    net.to(device)
                    x = prep.x.to(device)
                    if ps.flip:
                        x = torch.flip(x, ps.flip)
                    base = counter["done"]
                    expected = int(math.ceil(n_win / bs))
                    # a retry re-runs this pass: grow the total so "done" never decreases
                    counter["total"] = max(
                        counter["total"], base + expected + per_pass * (len(passes) - i_pass - 1)
                    )

                    def predictor(window: torch.Tensor) -> torch.Tensor:
                        if stop.is_set():
                            raise Cancelled("prediction cancelled")
                        if use_amp_now():
                            with torch.autocast(device_type=device.type, dtype=torch.float16):
                                y = net(window)
                        else:
                            y = net(window)
                        counter["done"] += 1
                        q.put(("progress", i_pass))
                        return y.float()

                    def use_amp_now() -> bool:
                        return state.amp and device.type == "cuda"

                    # MONAI types the result as a union; a Tensor predictor gives a Tensor
                    y = cast(
                        torch.Tensor,
                        sliding_window_inference(
                            x,
                            roi,
                            bs,
                            predictor,
                            overlap=float(overlap),
                            sw_device=device,
                            device=device,
                        ),
                    )
                    if ps.flip:
                        y = torch.flip(y, ps.flip)
                    return activate(y, out_type)[0].float().cpu()

                t0 = time.perf_counter()
                p = _run_pass_with_fallback(
                    run, state, allow_cpu_fallback, lambda m: q.put(("note", m))
                )
                t_inf += time.perf_counter() - t0
                sum_p += p
                per_net[ps.network] += p
                n_per_net[ps.network] += 1
                if sum_h is not None:
                    sum_h += _entropy(p, out_type)
            for net in networks:
                set_mc_dropout(net, False)
        t0 = time.perf_counter()
        mean_p = sum_p / len(passes)
        maps = {"entropy": _entropy(mean_p, out_type)}
        if sum_h is not None:
            maps["mutual_information"] = (maps["entropy"] - sum_h / len(passes)).clamp_(0, 1)
        if len(networks) > 1:
            # mean over every pair of networks (one pair for a CPS checkpoint, three for an
            # ensemble of three): total-variation distance of the class probabilities, or
            # the mean absolute difference of the region probabilities
            mean_net = [s / max(n, 1) for s, n in zip(per_net, n_per_net)]
            dis = torch.zeros(spatial, dtype=torch.float32)
            pairs = list(itertools.combinations(range(len(networks)), 2))
            for i, j in pairs:
                d = (mean_net[i] - mean_net[j]).abs()
                dis += 0.5 * d.sum(0) if out_type == "classes" else d.mean(0)
            maps["disagreement"] = (dis / len(pairs)).clamp_(0, 1)
        return {
            "mean_p": mean_p,
            "maps": maps,
            "t_inference": t_inf,
            "t_uncertainty": time.perf_counter() - t0,
        }

    thread = threading.Thread(target=worker, name="ssseg-predict", daemon=True)
    yield _progress(
        0,
        counter["total"],
        "inference",
        f"Predicting: {len(passes)} pass(es) x {n_win} window(s) on {dev}",
    )
    thread.start()
    out = None
    notes: list[str] = []
    try:
        last = time.perf_counter()
        while out is None:
            _check_stop(should_stop)
            try:
                kind, payload = q.get(timeout=_HEARTBEAT_S)
            except queue.Empty:
                yield _progress(
                    counter["done"],
                    counter["total"],
                    "inference",
                    f"Predicting on {state.device}: window batch "
                    f"{counter['done']}/{counter['total']}",
                )
                last = time.perf_counter()
                continue
            if kind == "progress":
                yield _progress(
                    counter["done"],
                    counter["total"],
                    "inference",
                    f"Window batch {counter['done']}/{counter['total']} "
                    f"(pass {payload + 1}/{len(passes)}) on {state.device}",
                )
                last = time.perf_counter()
            elif kind == "note":
                notes.append(payload)
                warnings.warn(payload, UserWarning, stacklevel=2)
                yield _progress(counter["done"], counter["total"], "inference", payload)
            elif kind == "error":
                raise payload
            else:
                out = payload
        del last
    finally:
        stop.set()
        thread.join()

    yield _progress(
        counter["total"], counter["total"], "postprocess", "Resampling and writing the result"
    )
    t0 = time.perf_counter()
    result = yield from _pump(
        lambda: _finish(out, prep, ckpt, uncertainty, min_component_fraction),
        should_stop,
        _progress(counter["total"], counter["total"], "postprocess", "Resampling the result"),
    )
    t_post = time.perf_counter() - t0
    info = {
        "model": ckpt.describe(),
        "model_source": ckpt.source,
        "device": str(state.device),
        "requested_device": str(device),
        "amp": bool(state.amp),
        "roi_size": list(roi),
        "sw_batch_size": state.sw_batch_size,
        "overlap": float(overlap),
        "n_windows": n_win,
        "n_passes": len(passes),
        "n_networks": len(networks),
        "tta_flips": [list(f) for f in flips],
        "mc_samples": mc,
        "uncertainty": uncertainty,
        "probability_channels": result.pop("channels"),
        "postprocess": result.pop("postprocess"),
        "modalities": list(ckpt.modalities),
        "channel_index": prep.channel_index,
        "spacing_zyx": list(prep.spacing_zyx),
        "model_spacing_zyx": list(prep.model_spacing_zyx),
        "network_input_shape": list(prep.x.shape[1:]),
        "crop_bbox": [[int(s.start), int(s.stop)] for s in prep.pre.bbox],
        "notes": ([missing_note] if missing_note else []) + notes,
        "missing_modalities": [m for m, i in zip(ckpt.modalities, idx) if i is None],
        "timings": {
            "load": t_load - t_start,
            **prep.timings,
            "inference": out["t_inference"],
            "uncertainty": out["t_uncertainty"],
            "postprocess": t_post,
            "total": time.perf_counter() - t_start,
        },
    }
    yield {"event": "result", **result, "info": info}


def _finish(
    out: dict,
    prep: PreparedInput,
    ckpt: Checkpoint,
    kind: str,
    min_component_fraction: float | None = None,
) -> dict[str, Any]:
    """Resample to the case grid, make labels (minor components removed), uncrop."""
    mean_p: torch.Tensor = out["mean_p"]
    maps: dict[str, torch.Tensor] = out["maps"]
    if ckpt.axis_order == "xyz":
        mean_p = mean_p.permute(0, 3, 2, 1)
        maps = {k: v.permute(2, 1, 0) for k, v in maps.items()}
    crop = list(prep.crop_shape)
    if list(mean_p.shape[1:]) != crop:
        mean_p = F.interpolate(mean_p[None], size=crop, mode="trilinear", align_corners=False)[0]
        stacked = torch.stack(list(maps.values()))[None]
        stacked = F.interpolate(stacked, size=crop, mode="trilinear", align_corners=False)[0]
        maps = {k: stacked[i].clamp_(0, 1) for i, k in enumerate(maps)}
    probs = mean_p.numpy()
    mask = prep.pre.mask
    order: np.ndarray | list[int]
    if ckpt.output == "classes":
        chan_class = class_channel_map(ckpt.label_convention, probs.shape[0])
        order = np.argsort(chan_class)  # channel of internal class 0, 1, 2, 3
        probs = probs[order]
        labels = probs.argmax(0).astype(np.uint8)
        channels = ["background", "NCR", "ED", "ET"]
        fill = [1.0, 0.0, 0.0, 0.0]
    else:
        order = [list(ckpt.regions).index(r) for r in ("WT", "TC", "ET")]
        probs = probs[order]
        labels = regions_to_labels(probs[0] > 0.5, probs[1] > 0.5, probs[2] > 0.5)
        channels = ["WT", "TC", "ET"]
        fill = [0.0, 0.0, 0.0]
    labels[~mask] = 0
    post = (ckpt.normalization or {}).get("postprocess") or {}
    frac = (
        post.get("min_component_fraction")
        if min_component_fraction is None
        else (min_component_fraction)
    )
    removed = 0
    if frac:
        from napari_ssseg.core.editing import minor_components_mask

        drop = minor_components_mask(labels, float(frac))
        removed = int(drop.sum())
        labels[drop] = 0
    pre = prep.pre
    full_p = np.empty((probs.shape[0], *pre.full_shape), dtype=np.float32)
    for c in range(probs.shape[0]):
        full_p[c] = pre.uncrop(probs[c].astype(np.float32), fill=fill[c])
    # outside the brain the labels are forced to background, so there is nothing to be unsure
    # about: zero the maps there (otherwise the brain's bounding box shows as a faint box)
    full_maps = {
        k: pre.uncrop(np.where(mask, v.numpy(), 0.0).astype(np.float32), fill=0.0)
        for k, v in maps.items()
    }
    return {
        "labels": pre.uncrop(labels, fill=0),
        "probabilities": full_p,
        "uncertainty": full_maps[kind],
        "uncertainty_maps": full_maps,
        "channels": channels,
        "postprocess": {
            "min_component_fraction": float(frac) if frac else 0.0,
            "removed_voxels": removed,
        },
    }


_T = TypeVar("_T")


def _pump(
    fn: Callable[[], _T], should_stop: Callable[[], bool] | None, heartbeat: dict[str, Any]
) -> Generator[dict[str, Any], None, _T]:
    """Run ``fn`` in a helper thread; yield ``heartbeat`` every 0.5 s; return its result.

    Used as ``value = yield from _pump(...)`` so that the consumer hears from the generator
    at least every 0.5 s even during uninterruptible steps (preprocessing, resampling). If
    the consumer closes the generator or ``should_stop`` fires, the step is waited for
    (a few seconds at most) and its result discarded.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            box["error"] = exc

    thread = threading.Thread(target=target, name="ssseg-predict", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(_HEARTBEAT_S)
            if thread.is_alive():
                _check_stop(should_stop)
                yield dict(heartbeat)
    finally:
        thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _progress(done: int, total: int, stage: str, message: str) -> dict[str, Any]:
    total = max(int(total), 1)
    return {
        "event": "progress",
        "done": int(done),
        "total": total,
        "fraction": min(1.0, int(done) / total),
        "stage": stage,
        "message": message,
    }


def _check_stop(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled("prediction cancelled")


def predict_case(
    case_or_images: Case | np.ndarray,
    checkpoint: Checkpoint | str | None = None,
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run :func:`predict_case_iter` to the end and return its result event.

    Parameters
    ----------
    progress : callable, optional
        Called with every progress event.
    **kwargs
        Options of :func:`predict_case_iter`.

    Returns
    -------
    dict
        ``labels``, ``probabilities``, ``uncertainty``, ``uncertainty_maps``, ``info``.
    """
    result = None
    for event in predict_case_iter(case_or_images, checkpoint, **kwargs):
        if event["event"] == "result":
            result = event
        elif progress is not None:
            progress(event)
    if result is None:  # pragma: no cover - the generator ends with a result or raises
        raise RuntimeError("prediction ended without a result")
    return {k: v for k, v in result.items() if k != "event"}
