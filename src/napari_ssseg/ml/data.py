"""Training data: discover cases, preprocess them once to ``.npy``, sample augmented crops.

Cases are preprocessed exactly as :func:`napari_ssseg.ml.inference.prepare_input` does at
prediction time (brain crop, percentile clip, z-score, area resampling to the model voxel
size), so a trained checkpoint sees the same input distribution at inference. Labels are
cropped with the same box and resampled with nearest neighbour.

Each prepared case is stored as ``CACHE/<name>_image.npy`` (float32, (C, z, y, x)) and
``CACHE/<name>_label.npy`` (uint8, (z, y, x), internal classes) and read back with
``np.load(mmap_mode="r")``: nothing holds the whole data set in RAM.

A case with a label file (or a label version in a workspace) is *labelled*; a workspace case
with scribbles but no label version is *weakly labelled* (its strokes are the target, every
other voxel is ignored by the loss); any other case is *unlabelled*.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_ssseg.core.progress import Cancelled, check_cancel
from napari_ssseg.errors import InputError

__all__ = [
    "IGNORE_INDEX",
    "EXTRA_KEYS",
    "PreparedCase",
    "DataSplit",
    "discover_cases",
    "case_sources",
    "prepare_case",
    "prepare_dataset",
    "split_cases",
    "prepared_to_case",
    "CropSampler",
    "AUGMENTATIONS",
    "drop_modalities",
    "scribbles_to_target",
]

#: Label value of voxels excluded from the loss.
IGNORE_INDEX = 255

#: Per-voxel arrays a strategy's targets may carry besides ``"label"`` (cropped, flipped
#: with it): ``"weight"`` (loss weight, float) and ``"pseudo"`` (1 where the target is a
#: pseudo-label rather than an annotation).
EXTRA_KEYS: tuple[str, ...] = ("weight", "pseudo")


@dataclass
class PreparedCase:
    """One preprocessed case on disk.

    Attributes
    ----------
    name : str
        Case name (unique in the data set).
    image : Path
        ``.npy`` file with the (C, z, y, x) float32 network input.
    label : Path or None
        ``.npy`` file with the (z, y, x) uint8 internal labels, or None (unlabelled).
    shape : tuple of 3 int
        Spatial shape (z, y, x) at the model voxel size.
    weak : bool
        The label file holds scribbles only (unannotated voxels = :data:`IGNORE_INDEX`).
    spacing : tuple of 3 float or None
        Voxel size (z, y, x) in mm of the prepared arrays (None: unknown, from an older
        cache; treated as 1 mm).
    """

    name: str
    image: Path
    label: Path | None
    shape: tuple[int, int, int]
    weak: bool = False
    spacing: tuple[float, float, float] | None = None

    def load_image(self) -> np.ndarray:
        """Memory-mapped (C, z, y, x) float32 array."""
        return np.load(self.image, mmap_mode="r")

    def load_label(self) -> np.ndarray | None:
        """Memory-mapped (z, y, x) uint8 array, or None."""
        return None if self.label is None else np.load(self.label, mmap_mode="r")


@dataclass
class DataSplit:
    """Cases split for training: labelled train/validation and unlabelled."""

    train: list[PreparedCase]
    val: list[PreparedCase]
    unlabelled: list[PreparedCase]
    skipped: list[dict[str, str]] = field(default_factory=list)
    #: what a strategy's ``split_data`` changed (reported in the ``start`` event)
    notes: list[str] = field(default_factory=list)


#: Former name of :class:`napari_ssseg.core.progress.Cancelled` here (one cancel protocol:
#: ``should_stop()`` and ``Cancelled``, issue 15); kept so that old imports still work.
CancelledError = Cancelled


def discover_cases(data: str | os.PathLike) -> list[Path]:
    """List the case folders of a data folder (its sub-folders, sorted by name).

    Raises
    ------
    InputError
        ``data`` is not a folder or has no sub-folder.
    """
    root = Path(data).expanduser()
    if not root.is_dir():
        raise InputError(
            f"Training data {str(root)!r} is not a folder. Give a folder holding one sub-folder "
            "per case (e.g. written by 'ssseg phantom' or a BraTS download)."
        )
    cases = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not cases:
        raise InputError(
            f"Training data {str(root)!r} has no case folders. Put each case (its modality "
            "files and optional _seg label file) in its own sub-folder."
        )
    return cases


def _snapshot_loader(entry: dict[str, Any]) -> Callable[[], Any]:
    def load() -> Any:
        from napari_ssseg.core.case import MODALITIES
        from napari_ssseg.io.readers import load_case

        seg = entry["labels"]
        conv = entry.get("label_convention") or "brats2023"
        if entry.get("msd_image"):
            return load_case(entry["msd_image"], seg=seg, convention=conv)
        files = {m: p for m, p in (entry.get("images") or {}).items() if m in MODALITIES}
        if entry.get("clinical"):
            clin = _prepare_clinical_entry(str(entry["id"]), files, entry)
            clin.case.labels = clin.read_labels(seg, conv)  # native version -> working grid
            return clin.case
        return load_case(**files, seg=seg, convention=conv)

    return load


def _prepare_clinical_entry(case_id: str, files: dict[str, Any], entry: dict[str, Any]) -> Any:
    """A workspace case marked clinical, prepared as the Workspace panel and ``predict`` see it.

    Registration, brain extraction and the working grid (its clinical options), read from
    the workspace's cache of the case (``WS/cases/<id>/clinical``) when it holds them; the
    model then trains on the same images it proposes on (zero outside the brain, working
    grid), not on the raw series.
    """
    import dataclasses

    from napari_ssseg.ml.clinical import prepare_clinical

    opts = entry["clinical"]
    cache = entry.get("clinical_cache")
    clin = prepare_clinical(
        None,
        files,
        brain_extraction=opts.get("brain_extraction", "auto"),
        register=opts.get("register", "auto"),
        resample=opts.get("resample"),
        cache=Path(cache) if cache else True,
    )
    clin.case = dataclasses.replace(clin.case, name=case_id)
    return clin


def case_sources(
    data: str | os.PathLike, snapshot_dir: str | os.PathLike | None = None
) -> list[tuple[str, Callable[[], Any]]]:
    """Name and loader of every case of ``data``.

    ``data`` is one of:

    * a folder of case folders (a case with a label file is labelled);
    * a workspace snapshot (folder with ``snapshot.json``, see
      :meth:`napari_ssseg.io.workspace.Workspace.snapshot`): every case is labelled with
      its frozen label version;
    * a workspace (folder with ``workspace.json``): the labelled cases (with a label
      version) are first frozen into ``snapshot_dir`` (reused when it already holds a
      snapshot, e.g. on resume) and read from it; cases without a version are unlabelled.
      The workspace is opened read-only, so the annotator may keep working in it.

    Returns
    -------
    list of (str, callable)
        ``loader()`` returns a :class:`~napari_ssseg.core.case.Case` (may raise).
    """
    from napari_ssseg.io.workspace import MANIFEST_NAME, SNAPSHOT_MANIFEST, read_snapshot

    root = Path(data).expanduser()
    if root.is_dir() and (root / SNAPSHOT_MANIFEST).exists():
        snap = read_snapshot(root)
        return [(str(c["id"]), _snapshot_loader(c)) for c in snap.get("cases", [])]
    if root.is_dir() and (root / MANIFEST_NAME).exists():
        from napari_ssseg.io.workspace import Workspace

        if snapshot_dir is None:
            raise InputError("Training from a workspace needs a folder for its snapshot.")
        snap_dir = Path(snapshot_dir)
        ws = Workspace.open(root, readonly=True)
        try:
            if not (snap_dir / SNAPSHOT_MANIFEST).exists():
                if snap_dir.exists() and not any(snap_dir.iterdir()):
                    snap_dir.rmdir()
                has_versions = any(r.n_versions for r in ws.cases)
                if has_versions:
                    ws.snapshot(snap_dir)
            snap = read_snapshot(snap_dir) if (snap_dir / SNAPSHOT_MANIFEST).exists() else {}
            labelled = {str(c["id"]): c for c in snap.get("cases", [])}
            out: list[tuple[str, Callable[[], Any]]] = []
            for rec in ws.cases:
                if rec.case_id in labelled:
                    out.append((rec.case_id, _snapshot_loader(labelled[rec.case_id])))
                else:
                    out.append((rec.case_id, _unlabelled_ws_loader(root, rec.case_id)))
        finally:
            ws.close()
        if not out:
            raise InputError(f"Workspace {str(root)!r} has no cases to train on.")
        return out
    return [(f.name, _folder_loader(f)) for f in discover_cases(root)]


def _folder_loader(folder: Path) -> Callable[[], Any]:
    def load() -> Any:
        from napari_ssseg.io.readers import load_case

        return load_case(folder)

    return load


def _unlabelled_ws_loader(root: Path, case_id: str) -> Callable[[], Any]:
    def load() -> Any:
        import dataclasses

        from napari_ssseg.core.case import MODALITIES
        from napari_ssseg.io.workspace import Workspace

        ws = Workspace.open(root, readonly=True)
        try:
            rec = ws.case(case_id)
            clinical = rec.clinical
            if clinical:
                files = {m: p for m, p in rec.images.items() if m in MODALITIES}
                cache = str(ws.clinical_cache_dir(case_id))
            else:
                case = ws.load_case(case_id)
            scribbles = ws.latest_scribbles(case_id)
        finally:
            ws.close()
        if clinical:  # the prepared images (working grid, brain-extracted), as for labels
            clin = _prepare_clinical_entry(
                case_id, files, {"clinical": clinical, "clinical_cache": cache}
            )
            case = clin.case
            if scribbles is not None and scribbles.shape != case.shape:
                # stored on the reference series' native grid, as the case's versions
                scribbles = clin.labels_from_native(scribbles)
        # never train on the case's ground-truth file: it is for evaluation only
        case = dataclasses.replace(case, labels=None)
        if scribbles is None or not scribbles.any():
            return case
        return case, scribbles_to_target(scribbles)

    return load


def scribbles_to_target(scribbles: np.ndarray) -> np.ndarray:
    """Scribble codes → partial training target.

    0 (not annotated) → :data:`IGNORE_INDEX`; 1, 2, 3 (NCR, ED, ET strokes) → themselves;
    4 (the internal healthy-tissue code) and 255 (the file default) → 0 background; any
    other value → ignored.

    Parameters
    ----------
    scribbles : (Z, Y, X) ndarray of int

    Returns
    -------
    (Z, Y, X) ndarray of uint8
    """
    s = np.asarray(scribbles)
    out = np.full(s.shape, IGNORE_INDEX, np.uint8)
    for v in (1, 2, 3):
        out[s == v] = v
    out[(s == 4) | (s == 255)] = 0
    return out


def _resample(x: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    if list(x.shape[-3:]) == list(size):
        return x
    return F.interpolate(x, size=list(size), mode=mode)


def prepare_case(
    case: Any,
    out_dir: str | os.PathLike,
    *,
    modalities: Sequence[str],
    normalization: dict[str, Any],
    name: str | None = None,
    weak_labels: np.ndarray | None = None,
) -> PreparedCase:
    """Preprocess one :class:`~napari_ssseg.core.case.Case` and write its ``.npy`` files.

    Parameters
    ----------
    case : Case
        Loaded case (canonical arrays).
    out_dir : path-like
        Cache folder.
    modalities : sequence of str
        Network input channels, in order.
    normalization : dict
        Checkpoint normalisation (``margin``, ``clip``, ``n4``, ``spacing_zyx``).
    name : str, optional
        File stem (default: the case name).
    weak_labels : (Z, Y, X) ndarray of uint8, optional
        Partial target on the case grid (see :func:`scribbles_to_target`), used instead of
        ``case.labels``.
    """
    from napari_ssseg.core.preprocess import preprocess
    from napari_ssseg.io.atomic import atomic_path
    from napari_ssseg.ml.checkpoint import match_modalities

    name = name or case.name
    idx = match_modalities(tuple(modalities), tuple(case.modalities), source=f"case {name!r}")
    images = case.images[idx]
    if not np.all(np.isfinite(images)):
        raise InputError(f"Case {name!r} contains NaN or infinite intensities.")
    sz, sy, sx = (float(s) for s in case.canonical_geometry.spacing_zyx)
    sp = (sz, sy, sx)
    pre = preprocess(
        images,
        margin=int(normalization.get("margin", 2)),
        clip=normalization.get("clip", (0.5, 99.5)),
        n4=bool(normalization.get("n4", False)),
        spacing=sp,
    )
    crop_shape = pre.images.shape[1:]
    target = normalization.get("spacing_zyx")
    model_sp = sp if not target else tuple(float(t) for t in target)
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(crop_shape, sp, model_sp)]
    xt = torch.from_numpy(np.ascontiguousarray(pre.images, dtype=np.float32))[None]
    x = _resample(xt, size, "area")[0].numpy()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    img_path = out / f"{name}_image.npy"
    with atomic_path(img_path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(x, dtype=np.float32))
    lab_path = None
    full = weak_labels if weak_labels is not None else case.labels
    if full is not None:
        lab_t = torch.from_numpy(np.asarray(pre.crop(full), dtype=np.float32))[None, None]
        lab = _resample(lab_t, size, "nearest")[0, 0].numpy().astype(np.uint8)
        lab_path = out / f"{name}_label.npy"
        with atomic_path(lab_path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, lab)
    shape = tuple(int(s) for s in size)
    # the voxel size actually reached after rounding the grid size
    spacing = tuple(float(n * s / m) for n, s, m in zip(crop_shape, sp, size))
    return PreparedCase(
        name,
        img_path,
        lab_path,
        shape,  # type: ignore[arg-type]
        weak=weak_labels is not None,
        spacing=spacing,  # type: ignore[arg-type]
    )


def prepare_dataset(
    data: str | os.PathLike,
    cache_dir: str | os.PathLike,
    *,
    modalities: Sequence[str],
    normalization: dict[str, Any],
    warn: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[list[PreparedCase], list[dict[str, str]]]:
    """Load and preprocess every case folder of ``data`` into ``cache_dir``.

    A case that fails to load is skipped with a warning. Already prepared cases (same
    source folder and normalisation, recorded in ``cache_dir/index.json``) are reused.
    ``should_stop()`` (the core protocol, :mod:`napari_ssseg.core.progress`) is asked before
    each case; when it returns true :class:`~napari_ssseg.core.progress.Cancelled` is raised.

    Returns
    -------
    cases : list of PreparedCase
    skipped : list of dict
        ``{"case": name, "reason": message}`` for every skipped case.

    Raises
    ------
    Cancelled
        ``should_stop()`` returned true.
    """
    from napari_ssseg.io.atomic import atomic_write_text

    cache = Path(cache_dir)
    sources = case_sources(data, snapshot_dir=cache.parent / "snapshot")
    cache.mkdir(parents=True, exist_ok=True)
    index_path = cache / "index.json"
    key = json.dumps({"modalities": list(modalities), "norm": normalization}, sort_keys=True)
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}
    if index.get("key") != key:
        index = {"key": key, "cases": {}}
    cases: list[PreparedCase] = []
    skipped: list[dict[str, str]] = []
    for name, loader in sources:
        check_cancel(should_stop, "data preparation")
        ent = index["cases"].get(name)
        ok = ent and Path(ent["image"]).exists()
        if ok and (ent["label"] is None or Path(ent["label"]).exists()):
            cases.append(
                PreparedCase(
                    name,
                    Path(ent["image"]),
                    None if ent["label"] is None else Path(ent["label"]),
                    tuple(ent["shape"]),
                    weak=bool(ent.get("weak", False)),
                    spacing=tuple(ent["spacing"]) if ent.get("spacing") else None,
                )
            )
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                case = loader()
            weak = None
            if isinstance(case, tuple):
                case, weak = case
            pc = prepare_case(
                case,
                cache,
                modalities=modalities,
                normalization=normalization,
                name=name,
                weak_labels=weak,
            )
        except Exception as exc:  # any failure skips the case (listed in events)
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            skipped.append({"case": name, "reason": reason})
            msg = f"Skipping case {name!r}: {reason}"
            if warn is not None:
                warn(msg)
            else:
                warnings.warn(msg, stacklevel=2)
            continue
        cases.append(pc)
        index["cases"][name] = {
            "image": str(pc.image),
            "label": None if pc.label is None else str(pc.label),
            "shape": list(pc.shape),
            "weak": pc.weak,
            "spacing": None if pc.spacing is None else list(pc.spacing),
        }
    atomic_write_text(index_path, json.dumps(index, indent=1))
    return cases, skipped


def prepared_to_case(pc: PreparedCase, modalities: Sequence[str]) -> Any:
    """A :class:`~napari_ssseg.core.case.Case` of a prepared case's arrays (for core/).

    The arrays are the network input (brain crop, z-scored, at the model voxel size), on a
    grid with the prepared spacing, identity direction and origin 0: enough for the
    superpixel refinement and scribble propagation, which work in voxel space.
    """
    from napari_ssseg.core.case import Case, Geometry

    sp = pc.spacing or (1.0, 1.0, 1.0)
    lab = pc.load_label()
    return Case(
        images=np.array(pc.load_image(), dtype=np.float32),
        modalities=tuple(modalities),
        geometry=Geometry(spacing=(sp[2], sp[1], sp[0]), origin=(0.0, 0.0, 0.0)),
        labels=None if lab is None or pc.weak else np.array(lab, dtype=np.uint8),
        name=pc.name,
    )


def split_cases(
    cases: Sequence[PreparedCase], val_fraction: float = 0.2, seed: int = 0
) -> DataSplit:
    """Split prepared cases into labelled train / validation and unlabelled.

    Weakly labelled cases always go to ``train`` (never to validation). Validation takes
    ``round(val_fraction * n_labelled)`` fully labelled cases (at least 1 when there are >= 2
    and ``val_fraction > 0``; 0 with a single one), chosen with ``seed``.
    """
    if not 0 <= val_fraction < 1:
        raise InputError(f"val_fraction={val_fraction!r}; expected a number in [0, 1).")
    labelled = [c for c in cases if c.label is not None and not c.weak]
    weak = [c for c in cases if c.label is not None and c.weak]
    unlabelled = [c for c in cases if c.label is None]
    n_val = 0
    if len(labelled) >= 2 and val_fraction > 0:
        n_val = min(len(labelled) - 1, max(1, int(round(val_fraction * len(labelled)))))
    order = np.random.default_rng(seed).permutation(len(labelled))
    val = [labelled[i] for i in sorted(order[:n_val])]
    train = [labelled[i] for i in sorted(order[n_val:])] + weak
    return DataSplit(train=train, val=val, unlabelled=unlabelled)


#: Augmentation levels of :class:`CropSampler`.
AUGMENTATIONS: tuple[str, ...] = ("basic", "strong")


def drop_modalities(image: torch.Tensor, rs: np.random.RandomState, prob: float) -> torch.Tensor:
    """Zero 1 to C-1 whole input channels of a (C, z, y, x) crop with probability ``prob``.

    Never all channels; a single-channel image is returned unchanged. The number of dropped
    channels is uniform in [1, C-1], the channels themselves uniformly chosen.
    """
    n = int(image.shape[0])
    if n < 2 or rs.random_sample() >= prob:
        return image
    k = int(rs.randint(1, n))
    drop = rs.choice(n, size=k, replace=False)
    image = image.clone()
    image[torch.as_tensor(drop, dtype=torch.long)] = 0.0
    return image


def _channelwise_gamma(img: np.ndarray, rs: np.random.RandomState, prob: float) -> np.ndarray:
    """Random monotone contrast change per channel (gamma on the brain's min-max range).

    The channel keeps its mean and standard deviation (the z-score statistics stay
    comparable); voxels that are exactly 0 (background, padding) stay 0.
    """
    out = None
    for c in range(img.shape[0]):
        if rs.random_sample() >= prob:
            continue
        x = np.asarray(img[c], dtype=np.float32)
        fg = x != 0
        if fg.sum() < 8:
            continue
        v = x[fg]
        lo, hi = float(v.min()), float(v.max())
        if hi - lo < 1e-6:
            continue
        gamma = float(np.exp(rs.uniform(np.log(0.6), np.log(1.7))))
        y = ((v - lo) / (hi - lo)) ** gamma * (hi - lo) + lo
        y = (y - y.mean()) / (y.std() + 1e-6) * v.std() + v.mean()
        if out is None:
            out = np.array(img, dtype=np.float32)
        out[c][fg] = y
    return img if out is None else out


def _pad_to(arr: np.ndarray, size: Sequence[int], value: float) -> np.ndarray:
    pads = [(0, 0)] * (arr.ndim - 3) + [
        (max(0, s - n) // 2, max(0, s - n) - max(0, s - n) // 2)
        for n, s in zip(arr.shape[-3:], size)
    ]
    if all(p == (0, 0) for p in pads):
        return arr
    return np.pad(arr, pads, constant_values=value)


class CropSampler:
    """Draw augmented random crops from prepared cases with MONAI transforms.

    Labelled crops use ``RandCropByPosNegLabeld`` (foreground oversampling: ``pos_ratio``
    of the crops centred on tumour), unlabelled crops ``RandSpatialCropd``; then random
    flips on the three axes and channel-wise intensity scale and shift. All randomness
    comes from an explicit seed per draw (:meth:`sample`), so a run is reproducible and
    resumable at any step.

    Parameters
    ----------
    patch_size : tuple of 3 int
        Crop size (z, y, x); smaller cases are zero-padded.
    pos_ratio : float
        Share of labelled crops centred on a tumour voxel.
    augmentation : {"basic", "strong"}
        ``"basic"`` (default): flips and channel-wise intensity scale/shift (+-10 %).
        ``"strong"`` adds what makes a model robust to other scanners and protocols: small
        rotations and scaling, a multiplicative bias field, channel-wise gamma (contrast),
        intensity scale/shift +-30 %, Gaussian noise, Gaussian smoothing and simulated low
        resolution.
    modality_dropout : float
        Probability that a crop loses some of its input channels: 1 to C-1 channels
        (chosen uniformly) are set to 0, never all. After the z-score of preprocessing, 0 is
        what inference feeds for a missing modality, so a model trained this way can
        propose on a case that lacks some inputs. Default 0 (off).
    """

    def __init__(
        self,
        patch_size: Sequence[int],
        pos_ratio: float = 0.67,
        *,
        augmentation: str = "basic",
        modality_dropout: float = 0.0,
    ) -> None:
        import monai.transforms as T

        from napari_ssseg.errors import check_choice

        self.patch_size = tuple(int(p) for p in patch_size)
        pos = float(pos_ratio)
        self.augmentation = check_choice("augmentation", augmentation, AUGMENTATIONS)
        md = float(modality_dropout)
        if not 0.0 <= md <= 1.0:
            raise InputError(
                f"modality_dropout={modality_dropout!r}; expected a probability in [0, 1]."
            )
        self.modality_dropout = md
        keys = ("image", "label", *EXTRA_KEYS)
        strong = self.augmentation == "strong"
        common: list[T.MapTransform] = [
            T.RandFlipd(keys=keys, prob=0.5, spatial_axis=0, allow_missing_keys=True),
            T.RandFlipd(keys=keys, prob=0.5, spatial_axis=1, allow_missing_keys=True),
            T.RandFlipd(keys=keys, prob=0.5, spatial_axis=2, allow_missing_keys=True),
        ]
        if strong:
            common += [
                T.RandAffined(
                    keys=keys,
                    prob=0.25,
                    rotate_range=(0.2, 0.2, 0.2),
                    scale_range=(0.15, 0.15, 0.15),
                    mode=("bilinear", "nearest", "bilinear", "nearest"),
                    padding_mode="zeros",
                    allow_missing_keys=True,
                ),
                T.RandBiasFieldd(keys="image", prob=0.3, coeff_range=(0.0, 0.3)),
                T.RandScaleIntensityd(keys="image", factors=0.3, prob=0.8, channel_wise=True),
                T.RandShiftIntensityd(keys="image", offsets=0.3, prob=0.8, channel_wise=True),
                T.RandGaussianSmoothd(
                    keys="image",
                    prob=0.2,
                    sigma_x=(0.3, 1.0),
                    sigma_y=(0.3, 1.0),
                    sigma_z=(0.3, 1.0),
                ),
                T.RandSimulateLowResolutiond(keys="image", prob=0.2, zoom_range=(0.5, 1.0)),
                T.RandGaussianNoised(keys="image", prob=0.3, std=0.1),
            ]
        else:
            common += [
                T.RandScaleIntensityd(keys="image", factors=0.1, prob=0.5, channel_wise=True),
                T.RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5, channel_wise=True),
            ]
        self._labelled = T.Compose(
            [
                T.RandCropByPosNegLabeld(
                    keys=keys,
                    label_key="fg",
                    spatial_size=self.patch_size,
                    pos=pos,
                    neg=1.0 - pos,
                    num_samples=1,
                    allow_smaller=True,
                    allow_missing_keys=True,
                ),
                *common,
            ]
        )
        self._unlabelled = T.Compose(
            [T.RandSpatialCropd(keys="image", roi_size=self.patch_size, random_size=False), *common]
        )
        # One generator shared by every random transform, re-seeded in place for each crop:
        # ``Compose.set_random_state(seed=...)`` builds a new RandomState for each of the ~10
        # random (sub-)transforms, ~0.1-0.2 ms each, on every crop.
        self._rs = np.random.RandomState(0)
        for t in (*self._labelled.transforms, *self._unlabelled.transforms):
            if isinstance(t, T.Randomizable):
                t.set_random_state(state=self._rs)

    def sample(
        self,
        cases: Sequence[PreparedCase],
        indices: Sequence[int],
        seed: int,
        labels: dict[str, Any] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Return a batch ``{"image": (B, C, *patch), "label": (B, *patch) long}``.

        ``label`` is only present for labelled cases, or when ``labels`` gives targets by
        case name: an array (a pseudo-label; voxels equal to :data:`IGNORE_INDEX` are
        ignored by the loss) or a dict with ``"label"`` and any of :data:`EXTRA_KEYS`
        ((z, y, x) arrays cropped and flipped with the label; returned as float tensors).
        """
        imgs, labs = [], []
        extras: dict[str, list[torch.Tensor]] = {k: [] for k in EXTRA_KEYS}
        for j, i in enumerate(indices):
            case = cases[int(i)]
            # copy-on-write map: the transforms read only the crop (no copy of the whole case)
            img = np.load(case.image, mmap_mode="c")
            lab = labels.get(case.name) if labels is not None else case.load_label()
            extra: dict[str, np.ndarray] = {}
            if isinstance(lab, dict):
                extra = {k: lab[k] for k in EXTRA_KEYS if lab.get(k) is not None}
                lab = lab["label"]
            img = _pad_to(img, self.patch_size, 0.0)
            if lab is not None:
                lab = _pad_to(np.asarray(lab), self.patch_size, IGNORE_INDEX)[None]
                fg = ((lab >= 1) & (lab <= 3)).astype(np.float32)  # tumour, not ignored
                tf = self._labelled
                d = {"image": img, "label": lab.astype(np.float32), "fg": fg}
                for k, v in extra.items():
                    d[k] = _pad_to(np.asarray(v, dtype=np.float32), self.patch_size, 0.0)[None]
            else:
                tf = self._unlabelled
                d = {"image": img}
            self._rs.seed((seed * 7919 + j) % (2**32 - 1))
            if self.augmentation == "strong":
                d["image"] = _channelwise_gamma(np.asarray(d["image"]), self._rs, prob=0.4)
            out = tf(d)
            if isinstance(out, list):
                out = out[0]
            image = torch.as_tensor(np.asarray(out["image"]), dtype=torch.float32)
            if self.modality_dropout > 0:
                image = drop_modalities(image, self._rs, self.modality_dropout)
            imgs.append(image)
            if "label" in out:
                labs.append(torch.as_tensor(np.asarray(out["label"]))[0].round().long())
            for k in extra:
                extras[k].append(torch.as_tensor(np.asarray(out[k]), dtype=torch.float32)[0])
        batch = {"image": torch.stack(imgs)}
        if labs and len(labs) == len(imgs):
            batch["label"] = torch.stack(labs)
            for k, vals in extras.items():
                if vals and len(vals) == len(imgs):
                    batch[k] = torch.stack(vals)
        return batch
