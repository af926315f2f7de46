"""Brain extraction with deepbet (MIT; TorchScript weights ship inside its wheel).

deepbet (Fisch et al., Comput. Biol. Med. 2024) segments the brain of a T1-weighted image in
about a second on a GPU and tens of seconds on a CPU; it needs no download at run time
(``deepbet/../data/models/*.pt`` are part of the wheel). Install it with the ``clinical``
extra (``pip install "napari-ssseg[clinical]"``). Its ``customtkinter`` dependency is used
only by ``deepbet-gui``; napari-ssseg never imports it.

:func:`extract_brain` runs deepbet on a canonical ``(Z, Y, X)`` image (LPS order, as in a
:class:`~napari_ssseg.core.case.Case`), best on the isotropic working grid, and checks the
mask (:func:`~napari_ssseg.core.skullstrip.check_brain_mask`). :func:`extract_brain_case`
tries T1, then T1Gd, and says which one it used.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from napari_ssseg.core.skullstrip import check_brain_mask, head_mask
from napari_ssseg.errors import SsegError

__all__ = ["deepbet_available", "extract_brain", "extract_brain_case", "BrainExtractionError"]

MISSING = (
    "Brain extraction needs deepbet, which is not installed. Install it with "
    '`pip install "napari-ssseg[clinical]"` (or `pip install --no-deps deepbet '
    "connected-components-3d fill-voids fastremap pandas tqdm` to leave out its GUI "
    "toolkit), or pass --brain-extraction off if the images are already skull-stripped."
)


class BrainExtractionError(SsegError):
    """Brain extraction failed or gave an implausible mask."""


def deepbet_available() -> bool:
    """True if deepbet can be imported."""
    import importlib.util

    return importlib.util.find_spec("deepbet") is not None


_MODEL: dict[str, object] = {}


#: deepbet loads its TorchScript weights with ``torch.jit.load``, which warns on every load in
#: recent PyTorch; the warning is about deepbet's code, not the user's data, and napari would
#: show it as a notification during the first brain extraction.
_JIT_WARNING = r"`torch\.jit\.load` is (deprecated|not supported)"


def _model(device: str):
    if device not in _MODEL:
        try:
            from deepbet import BrainExtraction
        except ImportError:
            raise BrainExtractionError(MISSING) from None
        # a narrow, permanent filter (catch_warnings is not thread-safe; this runs in workers)
        warnings.filterwarnings("ignore", message=_JIT_WARNING, category=DeprecationWarning)
        _MODEL[device] = BrainExtraction(no_gpu=device == "cpu")
    return _MODEL[device]


def _to_ras(canonical: np.ndarray) -> np.ndarray:
    # canonical (z: I->S, y: A->P, x: R->L)  ->  RAS array (i: L->R, j: P->A, k: I->S)
    return np.ascontiguousarray(np.transpose(canonical, (2, 1, 0))[::-1, ::-1, :])


def _from_ras(ras: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(ras[::-1, ::-1, :], (2, 1, 0)))


def extract_brain(
    image: np.ndarray,
    spacing_zyx: Sequence[float],
    *,
    threshold: float = 0.5,
    device: str = "cpu",
    check: bool = True,
) -> tuple[np.ndarray, dict]:
    """Brain mask of a T1-weighted image with deepbet.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Canonical (LPS) T1 or T1Gd image, ideally on an isotropic grid.
    spacing_zyx : 3 floats
        Voxel size in mm (for the volume check).
    threshold : float
        Probability threshold of deepbet's output.
    device : {"cpu", "auto"}
        ``"auto"`` lets deepbet use a GPU when there is one.
    check : bool
        Raise :class:`BrainExtractionError` if the mask is implausible.

    Returns
    -------
    mask : (Z, Y, X) ndarray of bool
    info : dict
        The mask check (volume, fraction inside the head, pieces).
    """
    import torch

    img = np.asarray(image, np.float32)
    if img.ndim != 3:
        raise BrainExtractionError(f"extract_brain needs a 3D image; got shape {img.shape}.")
    bet = _model("cpu" if device == "cpu" else "auto")
    x = _to_ras(np.nan_to_num(img))
    with torch.inference_mode():
        prob = bet.run_model(x.copy())
    mask = prob > threshold
    mask = bet.postprocess(mask, 0)
    mask = _from_ras(np.asarray(mask, bool))
    res = check_brain_mask(mask, spacing_zyx, head_mask(img))
    if check and not res.passed:
        raise BrainExtractionError(
            "Brain extraction gave an implausible mask: " + "; ".join(res.problems) + "."
        )
    return mask, res.to_dict()


def extract_brain_case(
    images: np.ndarray,
    modalities: Sequence[str],
    spacing_zyx: Sequence[float],
    *,
    device: str = "cpu",
) -> tuple[np.ndarray, dict]:
    """Brain mask from the case's T1 (falling back to T1Gd, with a warning).

    Parameters
    ----------
    images : (C, Z, Y, X) ndarray
        Canonical images on one grid.
    modalities : sequence of str
    spacing_zyx : 3 floats

    Returns
    -------
    mask : (Z, Y, X) ndarray of bool
    info : dict
        ``{"sequence": "t1" or "t1ce", "check": {...}, "tried": {...}}``.
    """
    mods = list(modalities)
    order = [m for m in ("t1", "t1ce") if m in mods]
    if not order:
        raise BrainExtractionError(
            f"Brain extraction needs a T1-weighted image (t1 or t1ce); the case has "
            f"{', '.join(mods)}. Add the T1 or T1Gd series, or pass --brain-extraction off."
        )
    tried: dict[str, str] = {}
    for m in order:
        try:
            mask, info = extract_brain(images[mods.index(m)], spacing_zyx, device=device)
        except BrainExtractionError as exc:
            if "not installed" in str(exc):
                raise
            tried[m] = str(exc)
            continue
        if tried:
            warnings.warn(
                f"Brain extraction on {', '.join(tried)} failed ({'; '.join(tried.values())}); "
                f"the mask comes from {m} instead.",
                UserWarning,
                stacklevel=2,
            )
        return mask, {"sequence": m, "check": info, "tried": tried}
    raise BrainExtractionError(
        "Brain extraction failed on every T1-weighted series: "
        + "; ".join(f"{k}: {v}" for k, v in tried.items())
    )
