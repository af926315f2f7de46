"""Build MONAI segmentation networks from a plain, JSON-serialisable config dict.

A network config is a dict such as::

    {"name": "UNet", "in_channels": 4, "out_channels": 4,
     "channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 1, "dropout": 0.1}

``name`` is one of :data:`ARCHITECTURES`; every other key is a keyword argument of the MONAI
class (``monai.networks.nets.<name>``). Unknown keys are rejected with the list of valid ones,
so a typo never silently falls back to a default. ``spatial_dims`` is always 3.

Two output types are supported (:data:`OUTPUT_TYPES`):

* ``"classes"``: ``out_channels`` = 4, softmax over the internal classes 0 bg, 1 NCR, 2 ED,
  3 ET (see :func:`napari_ssseg.ml.checkpoint.class_channel_map` for other conventions);
* ``"regions"``: ``out_channels`` = 3, independent sigmoids for the nested regions
  (default order WT, TC, ET).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from napari_ssseg.errors import InputError, check_choice

__all__ = [
    "ARCHITECTURES",
    "OUTPUT_TYPES",
    "DEFAULT_CONFIG",
    "ARCH_DEFAULTS",
    "validate_config",
    "build_network",
    "enable_gradient_checkpointing",
    "network_class",
    "has_dropout",
    "set_mc_dropout",
    "roi_divisor",
    "count_parameters",
    "activate",
]

#: Architectures that can be built (names of ``monai.networks.nets`` classes).
ARCHITECTURES: tuple[str, ...] = ("UNet", "BasicUNet", "SegResNet", "UNETR", "SwinUNETR", "DynUNet")
#: Output types and their number of channels.
OUTPUT_TYPES: dict[str, int] = {"classes": 4, "regions": 3}

#: The default network: a small residual MONAI UNet with dropout (so MC-dropout works).
DEFAULT_CONFIG: dict[str, Any] = {
    "name": "UNet",
    "in_channels": 4,
    "out_channels": 4,
    "channels": [16, 32, 64, 128],
    "strides": [2, 2, 2],
    "num_res_units": 1,
    "dropout": 0.1,
}

#: Keyword arguments filled in when a config omits them (required by the MONAI class or
#: chosen to keep the network small).
ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "UNet": {"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 1},
    "BasicUNet": {"features": [16, 16, 32, 64, 128, 16]},
    "SegResNet": {"init_filters": 8, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1]},
    "UNETR": {"img_size": [96, 96, 96], "feature_size": 16},
    "SwinUNETR": {"feature_size": 24},
    "DynUNet": {
        "kernel_size": [3, 3, 3, 3],
        "strides": [1, 2, 2, 2],
        "upsample_kernel_size": [2, 2, 2],
    },
}

_RESERVED = ("name", "in_channels", "out_channels")


def network_class(name: str) -> type[nn.Module]:
    """Return the MONAI class of architecture ``name`` (one of :data:`ARCHITECTURES`)."""
    from monai.networks import nets

    name = check_choice("network name", name, ARCHITECTURES)
    return getattr(nets, name)


def _accepted_kwargs(cls: type[Any]) -> list[str]:
    sig = inspect.signature(cls.__init__)
    return [
        p.name
        for p in sig.parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    return value


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Check a network config and return a normalised copy with defaults filled in.

    Parameters
    ----------
    config : mapping
        ``{"name": ..., "in_channels": int, "out_channels": int, **kwargs}``.

    Returns
    -------
    dict
        JSON-serialisable config (tuples become lists) with :data:`ARCH_DEFAULTS` added.

    Raises
    ------
    InputError
        Unknown architecture (with a did-you-mean hint), missing or non-positive channel
        counts, ``spatial_dims`` other than 3, or keyword arguments the class does not take.
    """
    if not isinstance(config, Mapping):
        raise InputError(
            f"A network config must be a dict with 'name', 'in_channels' and 'out_channels'; "
            f"got {type(config).__name__}."
        )
    if "name" not in config:
        raise InputError(
            f"The network config {dict(config)!r} has no 'name'; expected one of "
            f"{', '.join(ARCHITECTURES)}."
        )
    name = check_choice("network name", str(config["name"]), ARCHITECTURES)
    out: dict[str, Any] = {"name": name}
    for key in ("in_channels", "out_channels"):
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(
                f"Network config {key}={value!r} is not valid; expected a positive integer "
                f"(in_channels = number of modalities, out_channels = 4 for classes or 3 for "
                f"regions)."
            )
        out[key] = int(value)
    cls = network_class(name)
    accepted = set(_accepted_kwargs(cls)) - set(_RESERVED)
    kwargs = {k: v for k, v in config.items() if k not in _RESERVED}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        import difflib

        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(accepted), n=1)
            if close:
                hints.append(f"{key!r} -> did you mean {close[0]!r}?")
        hint = (" " + "; ".join(hints)) if hints else ""
        raise InputError(
            f"Network config for {name} has unknown keyword argument(s) "
            f"{', '.join(map(repr, unknown))}.{hint} Valid keywords: "
            f"{', '.join(sorted(accepted))}."
        )
    if "spatial_dims" in kwargs and kwargs["spatial_dims"] != 3:
        raise InputError(
            f"Network config spatial_dims={kwargs['spatial_dims']!r} is not supported; only 3D "
            "networks (spatial_dims=3) can segment volumes."
        )
    merged = {**ARCH_DEFAULTS.get(name, {}), **kwargs}
    merged.pop("spatial_dims", None)
    out.update(_to_jsonable(copy.deepcopy(merged)))
    return out


def build_network(config: Mapping[str, Any] | None = None) -> nn.Module:
    """Build the MONAI network described by ``config`` (default: :data:`DEFAULT_CONFIG`).

    Parameters
    ----------
    config : mapping, optional
        Network config; validated with :func:`validate_config`.

    Returns
    -------
    torch.nn.Module
        The network, in training mode, on the CPU. Input ``(B, in_channels, Z, Y, X)``,
        output ``(B, out_channels, Z, Y, X)`` logits.
    """
    cfg = validate_config(DEFAULT_CONFIG if config is None else config)
    cls = network_class(cfg["name"])
    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    params = _accepted_kwargs(cls)
    if "spatial_dims" in params:
        kwargs["spatial_dims"] = 3
    from monai.utils import OptionalImportError

    try:
        return cls(**kwargs)
    except OptionalImportError as exc:
        missing = str(exc).split("(No module named", 1)[-1].strip(" ').\n").split("'")[0]
        raise InputError(
            f"{cfg['name']} needs the optional package {missing or 'einops'!r}, which is not "
            f"installed. Install it (pip install {missing or 'einops'}) or choose another "
            "architecture."
        ) from None
    except (TypeError, ValueError, AssertionError) as exc:
        raise InputError(
            f"Could not build {cfg['name']} from the config {cfg!r}: {exc}. Check the values "
            f"against the MONAI documentation of monai.networks.nets.{cfg['name']}."
        ) from None


def _checkpointed_forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """``type(module).forward`` under ``torch.utils.checkpoint`` while gradients are on."""
    fwd = type(module).forward
    if not torch.is_grad_enabled():
        return fwd(module, *args, **kwargs)
    from torch.utils.checkpoint import checkpoint

    return checkpoint(fwd, module, *args, use_reentrant=False, **kwargs)


def enable_gradient_checkpointing(net: nn.Module) -> int:
    """Recompute the activations of ``net``'s MONAI blocks in the backward pass.

    Every top-most sub-module whose class comes from ``monai.networks.blocks`` (e.g. the
    UNet's ``ResidualUnit``/``Convolution`` levels, SegResNet's ``ResBlock``, the UNETR /
    DynUNet blocks, transformer blocks) runs under :func:`torch.utils.checkpoint.checkpoint`
    (non-reentrant, random state preserved, so dropout masks are the same in the
    recomputation) when gradients are enabled: its intermediate activations are not kept
    for the backward pass, trading memory for about one more forward pass. Weights,
    state-dict keys and outputs are unchanged; inference (no gradients) is not affected.
    The instance's ``forward`` is replaced by a :func:`functools.partial` bound to the
    module, so ``copy.deepcopy`` (e.g. a mean teacher) re-binds it to the copy.

    Returns
    -------
    int
        Number of blocks wrapped (0: nothing to checkpoint in this architecture).
    """
    import functools

    wrapped: list[str] = []
    for name, m in net.named_modules():
        if not name or any(name.startswith(w + ".") for w in wrapped):
            continue
        if not type(m).__module__.startswith("monai.networks.blocks"):
            continue
        if not any(True for _ in m.parameters()):
            continue
        m.forward = functools.partial(_checkpointed_forward, m)
        wrapped.append(name)
    return len(wrapped)


def has_dropout(module: nn.Module) -> bool:
    """True if ``module`` contains a dropout layer with a non-zero rate."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in module.modules())


def set_mc_dropout(module: nn.Module, enabled: bool) -> int:
    """Put the module in eval mode, with its dropout layers active if ``enabled``.

    Normalisation layers always stay in eval mode (Monte-Carlo dropout samples the dropout
    masks only). Returns the number of dropout layers switched.
    """
    module.eval()
    n = 0
    for m in module.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train(enabled)
            n += 1
    return n


def roi_divisor(config: Mapping[str, Any]) -> int:
    """Each side of a sliding window must be a multiple of this for the architecture."""
    name = config.get("name", "UNet")
    if name in ("UNet", "DynUNet"):
        strides = config.get("strides") or ARCH_DEFAULTS[name]["strides"]
        out = 1
        for s in strides:
            out *= int(max(s) if isinstance(s, (list, tuple)) else s)
        return out
    if name == "BasicUNet":
        return 16
    if name == "SegResNet":
        return 2 ** (len(config.get("blocks_down", ARCH_DEFAULTS[name]["blocks_down"])) - 1)
    if name == "SwinUNETR":
        return 32
    if name == "UNETR":
        return 16
    return 1


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def activate(logits: torch.Tensor, output: str) -> torch.Tensor:
    """Softmax over channels for ``"classes"``, sigmoid for ``"regions"``."""
    output = check_choice("output", output, OUTPUT_TYPES)
    if output == "classes":
        return torch.softmax(logits.float(), dim=1)
    return torch.sigmoid(logits.float())
