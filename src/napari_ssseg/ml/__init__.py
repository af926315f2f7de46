"""Deep-learning layer (torch + MONAI): networks, checkpoints, inference, training.

Importing :mod:`napari_ssseg.ml` itself is cheap; torch and MONAI are imported when one of
the names below (or a submodule) is first used.

* :mod:`.networks` - build MONAI networks from a config dict.
* :mod:`.checkpoint` - self-describing checkpoints, safe loading, modality matching.
* :mod:`.bundle` - MONAI bundle folders, allow-listed networks only.
* :mod:`.device` - device selection (CUDA, MPS, CPU).
* :mod:`.inference` - sliding-window prediction with uncertainty, as a generator.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "build_network": "networks",
    "DEFAULT_CONFIG": "networks",
    "Checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_model": "checkpoint",
    "default_checkpoint_path": "checkpoint",
    "load_bundle": "bundle",
    "resolve_device": "device",
    "predict_case_iter": "inference",
    "predict_case": "inference",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
