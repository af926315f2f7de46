"""Choose the torch device: ``"auto"`` (CUDA, then Apple MPS, then CPU) or an explicit one."""

from __future__ import annotations

import warnings

import torch

from napari_ssseg.errors import InputError, check_choice

__all__ = ["DEVICES", "resolve_device", "available_devices", "is_oom_error"]

#: Device names accepted by :func:`resolve_device` (``"cuda:N"`` is also accepted).
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Devices usable on this machine, best first (e.g. ``["cuda:0", "cpu"]``)."""
    out = []
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        out.append("mps")
    out.append("cpu")
    return out


def resolve_device(
    device: str | torch.device = "auto", allow_cpu_fallback: bool = True
) -> torch.device:
    """Return the torch device to run on.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (CUDA if available, else MPS, else CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` or ``"mps"``.
    allow_cpu_fallback : bool
        If the requested accelerator is absent: warn and use the CPU (True), or raise (False).

    Raises
    ------
    InputError
        Unknown device name, or an absent accelerator when ``allow_cpu_fallback`` is False.
    """
    if isinstance(device, torch.device):
        device = str(device)
    name = str(device).strip().lower()
    base, _, index = name.partition(":")
    base = check_choice("device", base, DEVICES)
    if index and (not index.isdigit() or base != "cuda"):
        raise InputError(
            f"device={device!r} is not valid; use 'cuda:N' with a GPU number N, or one of "
            f"{', '.join(DEVICES)}."
        )
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cpu":
        return torch.device("cpu")
    if base == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        i = int(index) if index else 0
        if i < n:
            return torch.device("cuda", i)
        why = (
            "this PyTorch has no CUDA support or no NVIDIA GPU is visible"
            if n == 0
            else f"only {n} GPU(s) are visible (cuda:0 to cuda:{n - 1})"
        )
    else:  # mps
        if _mps_available():
            return torch.device("mps")
        why = "Apple Metal (MPS) is not available on this machine"
    msg = f"device={device!r} was requested but {why}."
    if not allow_cpu_fallback:
        raise InputError(
            f"{msg} Use --device auto or --device cpu, or allow the CPU fallback. Available: "
            f"{', '.join(available_devices())}."
        )
    warnings.warn(f"{msg} Running on the CPU instead (slower).", UserWarning, stacklevel=2)
    return torch.device("cpu")


def is_oom_error(exc: BaseException) -> bool:
    """True for CUDA/MPS out-of-memory errors (``torch.OutOfMemoryError`` or its message)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
