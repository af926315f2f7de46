"""Load a MONAI bundle folder safely (no code from the bundle is ever run).

A MONAI bundle (e.g. the model zoo's ``brats_mri_segmentation``) is a folder::

    configs/inference.json | .yaml   # has a "network_def": {"_target_": "SegResNet", ...}
    configs/metadata.json            # optional: channel names of inputs and outputs
    models/model.pt                  # the weights (a state dict)

Bundle configs are programs: MONAI's ``ConfigParser`` can instantiate any Python object and
evaluate ``"$..."`` expressions. We do NOT use it. We read ``network_def`` ourselves and build
the network only if its ``_target_`` is one of the allow-listed MONAI architectures
(:data:`ALLOWED_TARGETS`, given as ``"SegResNet"`` or ``"monai.networks.nets.SegResNet"``) and
every argument is a plain literal (numbers, strings, lists, dicts without ``_target_``) or an
``"@name"`` reference to such a literal. Expressions (``"$..."``), macros (``"%..."``), nested
``_target_`` objects and special keys (``_requires_``, ``_mode_``, ...) are refused with a
message. The weights are read with ``torch.load(weights_only=True)``.

Conventions of bundle outputs are taken from ``metadata.json`` (``network_data_format``
``channel_def``) when present; see :func:`load_bundle` for the defaults.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from napari_ssseg.core.case import MODALITIES
from napari_ssseg.errors import InputError
from napari_ssseg.ml.checkpoint import Checkpoint
from napari_ssseg.ml.networks import ARCHITECTURES, roi_divisor, validate_config

__all__ = ["ALLOWED_TARGETS", "load_bundle", "parse_network_def", "read_bundle_config"]

#: ``_target_`` values that may be built (MONAI ``monai.networks.nets`` classes).
ALLOWED_TARGETS: tuple[str, ...] = ARCHITECTURES
_NETS_PREFIX = "monai.networks.nets."
_CONFIG_PREFERENCE = ("inference", "evaluate", "train")
_MODALITY_ALIASES = {
    "t1": "t1", "t1w": "t1", "t1native": "t1",
    "t1c": "t1ce", "t1ce": "t1ce", "t1gd": "t1ce", "t1gad": "t1ce", "t1contrast": "t1ce",
    "t1postcontrast": "t1ce",
    "t2": "t2", "t2w": "t2",
    "flair": "flair", "t2flair": "flair", "t2f": "flair",
}  # fmt: skip


def _load_config_file(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"Bundle config {str(path)!r} is not valid JSON: {exc}.") from None
    try:
        import yaml
    except ModuleNotFoundError:  # pragma: no cover - PyYAML ships with napari
        raise InputError(
            f"Bundle config {str(path)!r} is YAML but PyYAML is not installed; "
            "`pip install pyyaml` or convert it to JSON."
        ) from None
    try:
        return yaml.safe_load(text)  # safe_load: no Python object tags
    except yaml.YAMLError as exc:
        raise InputError(f"Bundle config {str(path)!r} is not valid YAML: {exc}.") from None


def read_bundle_config(folder: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """Return the first config in ``folder/configs`` that has a ``network_def``, and its path.

    Preference: ``inference``, ``evaluate``, ``train``, then the rest alphabetically.
    """
    folder = Path(folder)
    cfg_dir = folder / "configs"
    if not cfg_dir.is_dir():
        raise InputError(
            f"{str(folder)!r} is not a MONAI bundle folder: it has no configs/ subfolder. "
            "A bundle has configs/inference.json (or .yaml) and models/model.pt."
        )
    files = [p for p in cfg_dir.iterdir() if p.suffix in (".json", ".yaml", ".yml")]
    files.sort(
        key=lambda p: (
            _CONFIG_PREFERENCE.index(p.stem) if p.stem in _CONFIG_PREFERENCE else 99,
            p.name,
        )
    )
    for path in files:
        if path.stem == "metadata":
            continue
        data = _load_config_file(path)
        if isinstance(data, Mapping) and "network_def" in data:
            return dict(data), path
    raise InputError(
        f"No config in {str(cfg_dir)!r} defines 'network_def' (looked at "
        f"{', '.join(p.name for p in files) or 'no .json/.yaml files'}). The bundle cannot be "
        "used without a network definition."
    )


def _resolve(value: Any, config: Mapping[str, Any], where: str, depth: int = 0) -> Any:
    """Return ``value`` as a plain literal, resolving ``@name`` references; refuse code."""
    if depth > 20:
        raise InputError(f"{where}: '@' references nest too deeply (a loop?).")
    if isinstance(value, str):
        if value.startswith("$"):
            raise InputError(
                f"{where} = {value!r} is a Python expression ('$...'). napari-ssseg does not run "
                "code from bundle configs; replace it with a literal value."
            )
        if value.startswith("%"):
            raise InputError(
                f"{where} = {value!r} refers to another file ('%...'), which is not supported; "
                "replace it with a literal value."
            )
        if value.startswith("@"):
            ref = value[1:]
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ref) or ref not in config:
                raise InputError(
                    f"{where} = {value!r} refers to {ref!r}, which is not a top-level literal of "
                    "the bundle config; replace it with a literal value."
                )
            return _resolve(config[ref], config, f"{where} -> @{ref}", depth + 1)
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_resolve(v, config, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if "_target_" in value:
            raise InputError(
                f"{where} builds an object ({value['_target_']!r}); nested objects are not "
                "allowed in a network definition. Use plain values."
            )
        return {str(k): _resolve(v, config, f"{where}.{k}", depth + 1) for k, v in value.items()}
    raise InputError(f"{where} has a value of type {type(value).__name__}; not supported.")


def _check_target(target: Any, where: str) -> str:
    if not isinstance(target, str):
        raise InputError(f"{where}: '_target_' must be a class name; got {target!r}.")
    name = target
    if name.startswith(_NETS_PREFIX):
        name = name[len(_NETS_PREFIX) :]
    if name not in ALLOWED_TARGETS:
        raise InputError(
            f"{where}: '_target_' {target!r} is not an allowed network. For safety napari-ssseg "
            f"only builds these MONAI networks from a bundle: "
            f"{', '.join(ALLOWED_TARGETS)} (also as 'monai.networks.nets.<Name>'). The bundle "
            "was not loaded and nothing in it was run."
        )
    return name


def parse_network_def(config: Mapping[str, Any], source: str = "bundle") -> dict[str, Any]:
    """Turn a bundle's ``network_def`` into a network config (see :mod:`.networks`).

    Raises
    ------
    InputError
        Target not allow-listed, code or object construction in the arguments, unknown
        keyword arguments.
    """
    where = f"{source}: network_def"
    net_def = config.get("network_def")
    if not isinstance(net_def, Mapping):
        raise InputError(f"{where} must be a mapping with '_target_'; got {net_def!r}.")
    name = _check_target(net_def.get("_target_"), where)
    kwargs: dict[str, Any] = {}
    for key, value in net_def.items():
        if key in ("_target_", "_desc_"):
            continue
        if str(key).startswith("_"):
            raise InputError(
                f"{where}: special key {key!r} is not supported (only '_target_'); the bundle "
                "was not loaded."
            )
        kwargs[str(key)] = _resolve(value, config, f"{where}.{key}")
    return validate_config({"name": name, **kwargs})


def _channel_names(meta: Mapping[str, Any], section: str, key: str) -> list[str] | None:
    try:
        cdef = meta["network_data_format"][section][key]["channel_def"]
    except (KeyError, TypeError):
        return None
    if not isinstance(cdef, Mapping):
        return None
    try:
        items = sorted(cdef.items(), key=lambda kv: int(kv[0]))
    except (TypeError, ValueError):
        return None
    return [str(v) for _, v in items]


def _norm_name(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def _modalities_from(names: Sequence[str]) -> list[str] | None:
    out = []
    for n in names:
        m = _MODALITY_ALIASES.get(_norm_name(n))
        if m is None:
            return None
        out.append(m)
    return out if len(set(out)) == len(out) else None


def _regions_from(names: Sequence[str]) -> list[str] | None:
    out = []
    for n in names:
        k = _norm_name(n)
        if "core" in k or k == "tc":
            out.append("TC")
        elif "whole" in k or k == "wt":
            out.append("WT")
        elif "enhanc" in k or k == "et":
            out.append("ET")
        else:
            return None
    return out if sorted(out) == ["ET", "TC", "WT"] else None


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / "models" / "model.pt"
    if not path.is_file():
        if (folder / "models" / "model.ts").is_file():
            raise InputError(
                f"Bundle {str(folder)!r} has only TorchScript weights (models/model.ts), which "
                "napari-ssseg does not load. It needs models/model.pt (a state dict)."
            )
        raise InputError(f"Bundle {str(folder)!r} has no weights file models/model.pt.")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(
            f"Refused to load {str(path)!r}: it contains Python objects other than tensors and "
            f"plain values ({str(exc).splitlines()[0][:200]}). It was not unpickled."
        ) from None
    except Exception as exc:  # torch raises many types (KeyError, RuntimeError, ...) on junk
        raise InputError(f"{str(path)!r} cannot be read by torch: {exc}.") from None
    state = data
    if isinstance(data, Mapping) and not all(isinstance(v, torch.Tensor) for v in data.values()):
        for key in ("model", "state_dict", "network", "net", "model_state_dict"):
            if isinstance(data.get(key), Mapping):
                state = data[key]
                break
    if (
        not isinstance(state, Mapping)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise InputError(
            f"{str(path)!r} does not hold a state dict (a mapping of parameter names to tensors)."
        )
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


def load_bundle(
    folder: str | os.PathLike,
    *,
    modalities: Sequence[str] | None = None,
    output: str | None = None,
    regions: Sequence[str] | None = None,
) -> Checkpoint:
    """Load a MONAI bundle folder as a :class:`~napari_ssseg.ml.checkpoint.Checkpoint`.

    Parameters
    ----------
    folder : path-like
        Bundle folder (``configs/`` + ``models/model.pt``).
    modalities, output, regions : optional
        Override what is read from ``metadata.json``. Defaults: input channel names from
        ``metadata.json`` (else t1, t1ce, t2, flair); 3 output channels = regions in the
        metadata order (else TC, WT, ET, the MONAI BraTS convention), 4 = classes in the
        BraTS 2021 convention (0, 1, 2, 4).

    Notes
    -----
    Bundles read NIfTI files as ``(X, Y, Z)`` arrays, so the checkpoint gets
    ``axis_order="xyz"`` (canonical arrays are transposed before the network). Normalisation
    is z-scoring over the brain without percentile clipping (``NormalizeIntensityd(nonzero=
    True, channel_wise=True)``, as in the model zoo's BraTS bundle); other bundle
    preprocessing (e.g. resampling, orientation) is not reproduced.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"Bundle folder {str(folder)!r} does not exist.")
    config, cfg_path = read_bundle_config(folder)
    net_cfg = parse_network_def(config, source=str(cfg_path))
    meta: Mapping[str, Any] = {}
    meta_path = folder / "configs" / "metadata.json"
    if meta_path.is_file():
        loaded = _load_config_file(meta_path)
        meta = loaded if isinstance(loaded, Mapping) else {}

    n_in, n_out = net_cfg["in_channels"], net_cfg["out_channels"]
    if modalities is None:
        names = _channel_names(meta, "inputs", "image")
        modalities = _modalities_from(names) if names else None
        if modalities is None:
            modalities = list(MODALITIES[:n_in])
    out_names = _channel_names(meta, "outputs", "pred")
    if output is None:
        output = "regions" if n_out == 3 else "classes"
    if regions is None:
        regions = (_regions_from(out_names) if out_names else None) or ["TC", "WT", "ET"]

    patch = None
    inferer = config.get("inferer")
    if isinstance(inferer, Mapping) and "roi_size" in inferer:
        try:
            patch = _resolve(inferer["roi_size"], config, f"{cfg_path}: inferer.roi_size")
        except InputError:
            patch = None
    if net_cfg["name"] == "UNETR":
        patch = net_cfg.get("img_size")
    if not (isinstance(patch, list) and len(patch) == 3 and all(isinstance(v, int) for v in patch)):
        div = roi_divisor(net_cfg)
        patch = [max(div, 128 // div * div)] * 3

    ckpt = Checkpoint(
        networks=[_read_weights(folder)],
        config=net_cfg,
        modalities=tuple(modalities),
        normalization={
            "method": "zscore",
            "margin": 2,
            "clip": None,
            "n4": False,
            "spacing_zyx": None,
        },
        label_convention="brats2021",
        output=output,
        regions=tuple(regions),
        patch_size=tuple(patch),
        axis_order="xyz",
        provenance={
            "strategy": "MONAI bundle",
            "bundle": str(folder),
            "bundle_version": meta.get("version"),
            "description": meta.get("description"),
            "val_metrics": meta.get("eval_metrics"),
        },
        source=str(folder),
    )
    ckpt.build("cpu")  # fail now, with a clear message, if the weights do not fit
    return ckpt
