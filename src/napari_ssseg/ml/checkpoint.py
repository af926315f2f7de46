"""Self-describing checkpoints: weights plus everything needed to use them correctly.

A checkpoint is ONE file written with :func:`torch.save` that holds only tensors and plain
Python values (dict, list, str, int, float, bool, None)::

    {
      "format": "napari-ssseg-checkpoint", "version": 1,
      "networks": [state_dict, ...],          # one network, or two for a CPS pair
      "config": {"name": "UNet", "in_channels": 4, "out_channels": 4, ...},
      "modalities": ["t1", "t1ce", "t2", "flair"],   # input channel order
      "normalization": {"method": "zscore", "margin": 2, "clip": [0.5, 99.5], "n4": False,
                        "spacing_zyx": [2.0, 2.0, 2.0] | None},
      "label_convention": "brats2023",        # how class channels map to labels, see below
      "output": "classes" | "regions",
      "regions": ["WT", "TC", "ET"],          # channel order of a "regions" output
      "patch_size": [64, 64, 64],             # sliding-window size, voxels (Z, Y, X)
      "axis_order": "zyx",                    # "xyz" for MONAI bundles loaded as (X, Y, Z)
      "provenance": {"strategy", "n_labelled", "n_unlabelled", "val_metrics",
                     "package_version", "date", ...},
    }

It is loaded with ``torch.load(weights_only=True)`` only: a file that needs any other Python
object to be unpickled is refused and nothing in it is executed.

Class channels (``output="classes"``): channel ``c`` is the ``c``-th smallest label value of
``label_convention`` (``brats2021``: 0, 1, 2, 4; ``brats2023``: 0, 1, 2, 3 = the internal
classes; ``msd``: 0, 1 oedema, 2 non-enhancing, 3 enhancing).
"""

from __future__ import annotations

import datetime as _dt
import os
import pickle
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_ssseg.core.case import MODALITIES, REGIONS, get_convention
from napari_ssseg.errors import InputError, check_choice
from napari_ssseg.ml.networks import OUTPUT_TYPES, build_network, validate_config

__all__ = [
    "FORMAT",
    "VERSION",
    "DEFAULT_NORMALIZATION",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "default_checkpoint_path",
    "match_modalities",
    "class_channel_map",
]

FORMAT = "napari-ssseg-checkpoint"
VERSION = 1

#: Normalisation used when a checkpoint does not say otherwise (the package's preprocess).
DEFAULT_NORMALIZATION: dict[str, Any] = {
    "method": "zscore",
    "margin": 2,
    "clip": [0.5, 99.5],
    "n4": False,
    "spacing_zyx": None,
}

_REQUIRED_KEYS = ("networks", "config", "modalities", "output")


def default_checkpoint_path() -> Path:
    """Path of the default model shipped in the package (``ml/weights/default.pt``)."""
    return Path(__file__).resolve().parent / "weights" / "default.pt"


def class_channel_map(convention: str, n_channels: int = 4) -> np.ndarray:
    """Internal class of each class channel of a ``"classes"`` network.

    Parameters
    ----------
    convention : str
        ``label_convention`` of the checkpoint (a name in :data:`CONVENTIONS`, or
        ``"internal"`` = ``"brats2023"``).
    n_channels : int
        Number of output channels (4).

    Returns
    -------
    (n_channels,) ndarray of uint8
        ``internal_class[channel]``.
    """
    if convention == "internal":
        convention = "brats2023"
    conv = get_convention(convention)
    values = sorted(conv.to_internal)
    if len(values) != n_channels:
        raise InputError(
            f"A 'classes' network with {n_channels} output channels does not match the "
            f"{conv.name} convention, which has {len(values)} labels {values}."
        )
    return np.asarray([conv.to_internal[v] for v in values], dtype=np.uint8)


@dataclass
class Checkpoint:
    """An in-memory checkpoint (see the module docstring for the meaning of each field).

    ``networks`` holds state dicts (mapping of parameter name to tensor); call
    :meth:`build` to get ready-to-run modules.
    """

    networks: list[dict[str, torch.Tensor]]
    config: dict[str, Any]
    modalities: tuple[str, ...] = MODALITIES
    normalization: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    label_convention: str = "brats2023"
    output: str = "classes"
    regions: tuple[str, ...] = ("WT", "TC", "ET")
    patch_size: tuple[int, int, int] = (64, 64, 64)
    axis_order: str = "zyx"
    provenance: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        self.config = validate_config(self.config)
        self.output = check_choice("checkpoint output", self.output, OUTPUT_TYPES)
        self.modalities = tuple(str(m) for m in self.modalities)
        for m in self.modalities:
            check_choice(f"{self._where()} modality", m, MODALITIES)
        if len(self.modalities) != self.config["in_channels"]:
            raise InputError(
                f"{self._where()}: the network takes {self.config['in_channels']} input "
                f"channels but {len(self.modalities)} modalities are listed "
                f"({', '.join(self.modalities)})."
            )
        expected = OUTPUT_TYPES[self.output]
        if self.config["out_channels"] != expected:
            raise InputError(
                f"{self._where()}: output {self.output!r} needs {expected} output channels but "
                f"the network has {self.config['out_channels']}."
            )
        if self.output == "classes":
            class_channel_map(self.label_convention, expected)
        else:
            regs = tuple(check_choice("region", r, REGIONS) for r in self.regions)
            if sorted(regs) != sorted(REGIONS):
                raise InputError(
                    f"{self._where()}: regions {list(self.regions)} must name WT, TC and ET "
                    "once each."
                )
            self.regions = regs
        self.patch_size = _patch3(self.patch_size, self._where())
        self.axis_order = check_choice("axis_order", self.axis_order, ("zyx", "xyz"))
        if not self.networks:
            raise InputError(f"{self._where()} holds no network weights.")
        norm = dict(DEFAULT_NORMALIZATION)
        norm.update(self.normalization or {})
        self.normalization = norm

    def _where(self) -> str:
        return f"Checkpoint {self.source!r}" if self.source else "Checkpoint"

    @property
    def n_networks(self) -> int:
        """Number of networks (2 for a cross-pseudo-supervision pair)."""
        return len(self.networks)

    def build(self, device: str | torch.device = "cpu") -> list[nn.Module]:
        """Instantiate every network, load its weights, move it to ``device``, eval mode.

        Raises
        ------
        InputError
            If the weights do not fit the architecture in ``config``.
        """
        out = []
        for i, state in enumerate(self.networks):
            # random initialisation is overwritten: keep the caller's RNG stream untouched
            with torch.random.fork_rng(devices=[]):
                net = build_network(self.config)
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()
                raise InputError(
                    f"{self._where()}: the weights of network {i} do not fit the architecture "
                    f"{self.config['name']} described in the file ({first[0] if first else exc})"
                    ". The file is inconsistent; re-export it."
                ) from None
            net.to(device).eval()
            out.append(net)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The plain dict written to disk (tensors and plain Python values only)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "networks": [{k: v.detach().cpu() for k, v in s.items()} for s in self.networks],
            "config": dict(self.config),
            "modalities": list(self.modalities),
            "normalization": _plain(self.normalization),
            "label_convention": self.label_convention,
            "output": self.output,
            "regions": list(self.regions),
            "patch_size": list(self.patch_size),
            "axis_order": self.axis_order,
            "provenance": _plain(self.provenance),
        }

    def describe(self) -> str:
        """One-line summary for logs and the GUI."""
        prov = self.provenance or {}
        metric = prov.get("val_metrics") or {}
        dice = ", ".join(f"{k} {v:.2f}" for k, v in metric.items() if isinstance(v, float))
        return (
            f"{self.config['name']} ({self.n_networks} network{'s' * (self.n_networks > 1)}), "
            f"inputs {'/'.join(self.modalities)}, output {self.output}, patch "
            f"{'x'.join(map(str, self.patch_size))}"
            + (f", strategy {prov['strategy']}" if prov.get("strategy") else "")
            + (f", val {dice}" if dice else "")
        )


def _patch3(value: Any, where: str) -> tuple[int, int, int]:
    if isinstance(value, (int, np.integer)):
        value = (int(value),) * 3
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or min(out) < 1:
        raise InputError(f"{where}: patch_size={value!r} must be 3 positive integers (Z, Y, X).")
    return out


def _plain(value: Any) -> Any:
    """Convert numpy scalars/arrays and tuples to plain Python values (safe to unpickle)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    raise InputError(
        f"Cannot store a value of type {type(value).__name__} in a checkpoint; only numbers, "
        "strings, lists, dicts and tensors are allowed."
    )


def _state_dict(net: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(net, nn.Module):
        # unwrap AveragedModel / DDP wrappers
        inner = getattr(net, "module", net)
        return {k: v.detach().cpu().clone() for k, v in inner.state_dict().items()}
    if isinstance(net, Mapping):
        return {str(k): v.detach().cpu().clone() for k, v in net.items()}
    raise InputError(f"Expected a network or a state dict, got {type(net).__name__}.")


def save_checkpoint(
    path: str | os.PathLike,
    networks: nn.Module | Mapping[str, torch.Tensor] | Sequence[Any],
    config: Mapping[str, Any],
    *,
    modalities: Sequence[str] = MODALITIES,
    normalization: Mapping[str, Any] | None = None,
    label_convention: str = "brats2023",
    output: str = "classes",
    regions: Sequence[str] = ("WT", "TC", "ET"),
    patch_size: Sequence[int] | int = (64, 64, 64),
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically and return its path.

    Parameters
    ----------
    path : path-like
        Output file (conventionally ``.pt``).
    networks : module, state dict, or sequence of them
        One network, or two for a CPS pair.
    config : mapping
        Network config (see :mod:`napari_ssseg.ml.networks`).
    modalities, normalization, label_convention, output, regions, patch_size, provenance
        See the module docstring. ``provenance`` gets ``package_version`` and ``date`` added
        when missing.
    """
    from napari_ssseg import __version__
    from napari_ssseg.io.atomic import atomic_path

    if isinstance(networks, (nn.Module, Mapping)):
        networks = [networks]
    prov = dict(provenance or {})
    prov.setdefault("package_version", __version__)
    prov.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    for key in ("strategy", "n_labelled", "n_unlabelled", "val_metrics"):
        prov.setdefault(key, None)
    ckpt = Checkpoint(
        networks=[_state_dict(n) for n in networks],
        config=dict(config),
        modalities=tuple(modalities),
        normalization=dict(normalization or {}),
        label_convention=label_convention,
        output=output,
        regions=tuple(regions),
        patch_size=patch_size,  # type: ignore[arg-type]
        provenance=prov,
        source=str(path),
    )
    # check that the weights fit before writing anything
    ckpt.build("cpu")
    with atomic_path(path) as tmp:
        torch.save(ckpt.to_dict(), tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a napari-ssseg checkpoint file safely.

    Only ``torch.load(weights_only=True)`` is used: tensors and plain Python values are
    restored; any other object in the file makes loading fail before it is created.

    Raises
    ------
    InputError
        Missing file, not a checkpoint, a pickle asking for arbitrary objects (refused, never
        executed), or inconsistent contents.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"Model file {str(path)!r} does not exist. Give a napari-ssseg checkpoint (.pt) or "
            "a MONAI bundle folder."
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else ""
        if "global" in str(exc).lower():  # the pickle asks for a Python object
            raise InputError(
                f"Refused to load {str(path)!r}: it contains Python objects other than "
                f"tensors and plain values ({msg[:200]}). Loading it could run arbitrary code, "
                "so it was not unpickled. Only load checkpoints written by napari-ssseg, or "
                "re-export the weights as a plain state dict."
            ) from None
        raise InputError(
            f"{str(path)!r} is not a napari-ssseg checkpoint: torch cannot read it safely (it "
            "is not a torch.save file, or it holds Python objects). It was not unpickled."
        ) from None
    except Exception as exc:  # torch raises many types (KeyError, RuntimeError, ...) on junk
        raise InputError(
            f"{str(path)!r} is not a napari-ssseg checkpoint (it cannot be read by torch: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})."
        ) from None
    return checkpoint_from_dict(data, source=str(path))


def checkpoint_from_dict(data: Any, source: str = "") -> Checkpoint:
    """Validate a dict read from disk and return a :class:`Checkpoint`."""
    where = f"{source!r}" if source else "The checkpoint"
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        hint = ""
        if (
            isinstance(data, Mapping)
            and data
            and all(isinstance(v, torch.Tensor) for v in data.values())
        ):
            hint = (
                " It looks like a bare state dict: without the architecture and modality order "
                "it cannot be used safely. Put it in a MONAI bundle folder (configs/ + "
                "models/model.pt) or save it with napari_ssseg.ml.checkpoint.save_checkpoint."
            )
        raise InputError(
            f"{where} is not a napari-ssseg checkpoint (no 'format': {FORMAT!r} entry).{hint}"
        )
    version = data.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise InputError(
            f"{where} has checkpoint version {version!r}; this napari-ssseg reads version "
            f"{VERSION} or older. Update napari-ssseg."
        )
    missing = [k for k in _REQUIRED_KEYS if k not in data]
    if missing:
        raise InputError(f"{where} is incomplete: missing {', '.join(missing)}.")
    nets = data["networks"]
    if not isinstance(nets, (list, tuple)) or not all(isinstance(n, Mapping) for n in nets):
        raise InputError(f"{where}: 'networks' must be a list of state dicts.")
    return Checkpoint(
        networks=[dict(n) for n in nets],
        config=dict(data["config"]),
        modalities=tuple(data["modalities"]),
        normalization=dict(data.get("normalization") or {}),
        label_convention=str(data.get("label_convention", "brats2023")),
        output=str(data["output"]),
        regions=tuple(data.get("regions", ("WT", "TC", "ET"))),
        patch_size=data.get("patch_size", (64, 64, 64)),
        axis_order=str(data.get("axis_order", "zyx")),
        provenance=dict(data.get("provenance") or {}),
        source=source,
    )


def load_model(model: str | os.PathLike | Checkpoint | None = None) -> Checkpoint:
    """Load a model given as a checkpoint file, a MONAI bundle folder, or ``"default"``.

    Parameters
    ----------
    model : path-like, Checkpoint, "default" or None
        ``None`` / ``"default"``: the model shipped with the package.

    Raises
    ------
    InputError
        See :func:`load_checkpoint` and :func:`napari_ssseg.ml.bundle.load_bundle`.
    """
    if isinstance(model, Checkpoint):
        return model
    if model is None or str(model) == "default":
        path = default_checkpoint_path()
        if not path.is_file():
            raise InputError(
                f"The default model {str(path)!r} is missing from this installation. Reinstall "
                "napari-ssseg, or pass --model with a checkpoint or bundle folder."
            )
        return load_checkpoint(path)
    path = Path(model)
    if path.is_dir():
        from napari_ssseg.ml.bundle import load_bundle

        return load_bundle(path)
    return load_checkpoint(path)


def match_modalities(
    required: Sequence[str], available: Sequence[str], source: str = "the case"
) -> list[int]:
    """Indices into ``available`` giving the channels in the order the model needs.

    Parameters
    ----------
    required : sequence of str
        Modalities the model takes, in its channel order.
    available : sequence of str
        Modalities of the case, in its channel order.
    source : str
        Name used in messages.

    Returns
    -------
    list of int
        ``available[idx[i]] == required[i]``.

    Raises
    ------
    InputError
        If a required modality is missing.

    Warns
    -----
    UserWarning
        If the order differs (the channels are reordered automatically) or the case has
        extra modalities the model ignores.
    """
    req = [str(m).lower() for m in required]
    avail = [str(m).lower() for m in available]
    missing = [m for m in req if m not in avail]
    if missing:
        raise InputError(
            f"The model needs {len(req)} modalities ({', '.join(req)}) but {source} has "
            f"{len(avail)} ({', '.join(avail) or 'none'}): missing {', '.join(missing)}. Load a "
            f"case with these modalities, or choose a model trained on "
            f"{', '.join(avail) or 'the available ones'}."
        )
    idx = [avail.index(m) for m in req]
    if idx != list(range(len(avail))):
        extra = [m for m in avail if m not in req]
        if avail[: len(req)] != req or extra:
            note = f"; {', '.join(extra)} not used by the model" if extra else ""
            if [avail[i] for i in sorted(idx)] != req:
                warnings.warn(
                    f"{source} has modalities in the order {', '.join(avail)}; the model "
                    f"expects {', '.join(req)}. The channels were reordered automatically"
                    f"{note}.",
                    UserWarning,
                    stacklevel=2,
                )
            elif extra:
                warnings.warn(
                    f"{source}: {', '.join(extra)} not used by the model.",
                    UserWarning,
                    stacklevel=2,
                )
    return idx
