"""The in-memory case: modalities, geometry, label conventions and tumour regions.

Conventions used across the package
-----------------------------------
* Arrays are ``(Z, Y, X)``; multi-channel arrays are ``(C, Z, Y, X)``.
* Source geometry follows SimpleITK/ITK: world coordinates are LPS millimetres, index axes
  are ``(i, j, k)`` = array axes ``(X, Y, Z)`` reversed, and
  ``world = origin + direction @ (spacing * [i, j, k])``. ``spacing`` and ``origin`` in a
  :class:`Geometry` are stored in ITK ``(i, j, k)`` / ``(x, y, z)`` order, ``direction`` as
  the 9 row-major values ITK uses (columns are the index axes).
* Arrays held by a :class:`Case` are in **canonical orientation**: axis 0 runs inferior to
  superior, axis 1 anterior to posterior, axis 2 right to left (LPS, identity direction for
  a non-oblique image). napari shows them with ``scale = spacing_zyx`` and
  ``translate = origin_zyx`` in world LPS millimetres. :class:`Orientation` maps arrays
  between file order and canonical order exactly (a transpose and flips), so a label saved
  back lands on the same voxels as the source image.
* Internal label convention: 0 background, 1 NCR (necrotic / non-enhancing core), 2 ED
  (oedema), 3 ET (enhancing tumour). Regions: WT = {1, 2, 3}, TC = {1, 3}, ET = {3}.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from napari_ssseg.errors import GeometryError, InputError, check_choice

__all__ = [
    "Geometry",
    "Orientation",
    "LabelConvention",
    "CONVENTIONS",
    "CONVENTION_SIBLINGS",
    "INTERNAL_CLASSES",
    "CLASS_NAMES",
    "CLASS_COLORS",
    "REGIONS",
    "REGION_MODALITIES",
    "region_channel_indices",
    "MODALITIES",
    "MODALITY_ALIASES",
    "normalize_modality",
    "Case",
    "region_masks",
    "regions_to_labels",
    "get_convention",
]

#: Canonical modality names, in the default channel order.
MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")

#: Other names users and datasets give the modalities (lower case) -> canonical name.
MODALITY_ALIASES: dict[str, str] = {
    "t1": "t1",
    "t1n": "t1",
    "t1w": "t1",
    "native": "t1",
    "t1ce": "t1ce",
    "t1c": "t1ce",
    "t1gd": "t1ce",
    "t1-gd": "t1ce",
    "t1post": "t1ce",
    "t2": "t2",
    "t2w": "t2",
    "flair": "flair",
    "t2f": "flair",
    "t2-flair": "flair",
}


def normalize_modality(name: str) -> str:
    """Return the canonical modality name for ``name`` (e.g. ``"T1Gd"`` -> ``"t1ce"``).

    Raises
    ------
    InputError
        If ``name`` is not a known modality or alias.
    """
    key = str(name).strip().lower()
    if key in MODALITY_ALIASES:
        return MODALITY_ALIASES[key]
    return check_choice("modality", key, list(MODALITY_ALIASES))


#: Internal label values and their names.
INTERNAL_CLASSES: dict[int, str] = {0: "background", 1: "NCR", 2: "ED", 3: "ET"}
CLASS_NAMES = INTERNAL_CLASSES
#: Fixed display colours (RGBA, 0-1) of the internal classes (BraTS viewer colours).
CLASS_COLORS: dict[int, tuple[float, float, float, float]] = {
    0: (0.0, 0.0, 0.0, 0.0),
    1: (1.0, 0.0, 0.0, 1.0),  # NCR red
    2: (0.0, 0.8, 0.0, 1.0),  # ED green
    3: (1.0, 1.0, 0.0, 1.0),  # ET yellow
}
#: Tumour regions as sets of internal class values.
REGIONS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
#: Modalities each region's superpixels *and* refinement features are computed from, in
#: channel order: WT FLAIR, TC T2 + T1Gd **[paper roles]**, ET T1Gd **[ours]**. The one
#: region -> channels table of the package; :func:`region_channel_indices` applies it.
REGION_MODALITIES: dict[str, tuple[str, ...]] = {
    "WT": ("flair",),
    "TC": ("t2", "t1ce"),
    "ET": ("t1ce",),
}


# --------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Geometry:
    """Grid of a 3D image in ITK conventions (LPS mm, index order ``(i, j, k)``).

    Parameters
    ----------
    spacing : tuple of 3 float
        Voxel size along ``(i, j, k)`` = array axes ``(X, Y, Z)``, in mm. Positive.
    origin : tuple of 3 float
        World (LPS, mm) coordinate of the centre of voxel ``(0, 0, 0)``, as ``(x, y, z)``.
    direction : tuple of 9 float
        Row-major 3x3 direction cosine matrix; column ``a`` is the world direction of index
        axis ``a``.
    """

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        sp = tuple(float(s) for s in self.spacing)
        org = tuple(float(o) for o in self.origin)
        dr = tuple(float(d) for d in np.asarray(self.direction, dtype=float).ravel())
        if len(sp) != 3 or len(org) != 3 or len(dr) != 9:
            raise InputError(
                f"Geometry needs 3 spacings, 3 origin values and 9 direction values; got "
                f"{len(sp)}, {len(org)} and {len(dr)}."
            )
        if not all(np.isfinite(sp)) or min(sp) <= 0:
            raise InputError(f"Voxel spacing must be positive and finite; got {sp}.")
        if not all(np.isfinite(org)) or not all(np.isfinite(dr)):
            raise InputError(f"Origin and direction must be finite; got {org}, {dr}.")
        object.__setattr__(self, "spacing", sp)
        object.__setattr__(self, "origin", org)
        object.__setattr__(self, "direction", dr)

    @property
    def direction_matrix(self) -> np.ndarray:
        """(3, 3) ndarray of float64: direction cosines, columns = index axes ``i, j, k``."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Spacing in array axis order ``(Z, Y, X)``."""
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    def affine_lps(self) -> np.ndarray:
        """(4, 4) ndarray: maps ``(i, j, k, 1)`` voxel indices to LPS world millimetres."""
        a = np.eye(4)
        a[:3, :3] = self.direction_matrix * np.asarray(self.spacing)[None, :]
        a[:3, 3] = self.origin
        return a

    def affine_ras(self) -> np.ndarray:
        """(4, 4) ndarray: voxel ``(i, j, k)`` to RAS world millimetres (the NIfTI affine)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps()

    def index_to_world(self, zyx: np.ndarray) -> np.ndarray:
        """Map array indices ``(..., 3)`` in ``(z, y, x)`` order to LPS world ``(x, y, z)``."""
        zyx = np.asarray(zyx, dtype=float)
        ijk = zyx[..., ::-1]
        return ijk @ (self.direction_matrix * np.asarray(self.spacing)[None, :]).T + np.asarray(
            self.origin
        )

    def is_oblique(self, tol: float = 1e-4) -> bool:
        """True if the direction is not a signed permutation (within ``tol``)."""
        d = np.abs(self.direction_matrix)
        return bool(np.any(np.abs(d - np.round(d)) > tol))

    def orientation_code(self) -> str:
        """Three-letter ITK/DICOM orientation code (e.g. ``"LPS"``, ``"RAS"``) of i, j, k."""
        pos = ("L", "P", "S")
        neg = ("R", "A", "I")
        code = []
        for axis in range(3):
            col = self.direction_matrix[:, axis]
            w = int(np.argmax(np.abs(col)))
            code.append(pos[w] if col[w] > 0 else neg[w])
        return "".join(code)

    def allclose(self, other: Geometry, atol: float = 1e-4) -> bool:
        """True if spacing, origin and direction agree within ``atol``."""
        return bool(
            np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.origin, other.origin, atol=atol)
            and np.allclose(self.direction, other.direction, atol=atol)
        )

    def cropped(self, start_zyx: tuple[int, int, int]) -> Geometry:
        """Geometry of a sub-grid whose voxel ``(0, 0, 0)`` is ``start_zyx`` of this grid."""
        new_origin = self.index_to_world(np.asarray(start_zyx, dtype=float))
        return Geometry(self.spacing, tuple(new_origin), self.direction)

    def describe(self, shape_zyx: tuple[int, ...] | None = None) -> str:
        """Short human-readable description used in messages."""
        sp = "x".join(f"{s:g}" for s in self.spacing)
        org = ", ".join(f"{o:.2f}" for o in self.origin)
        shp = f"shape (i,j,k) {tuple(int(s) for s in shape_zyx[::-1])}, " if shape_zyx else ""
        return f"{shp}spacing {sp} mm, origin ({org}), orientation {self.orientation_code()}"


@dataclass(frozen=True)
class Orientation:
    """Exact map between a file's array order and the canonical (LPS) array order.

    ``canonical = flip(transpose(file_array, axes), flips)``. Built by
    :meth:`from_geometry`; :meth:`to_canonical` and :meth:`from_canonical` are exact inverses.

    Parameters
    ----------
    axes : tuple of 3 int
        Permutation of the file array's ``(Z, Y, X)`` axes giving canonical ``(Z, Y, X)``.
    flips : tuple of 3 bool
        Whether each canonical axis is flipped after the transpose.
    """

    axes: tuple[int, int, int] = (0, 1, 2)
    flips: tuple[bool, bool, bool] = (False, False, False)

    @classmethod
    def from_geometry(cls, geometry: Geometry) -> Orientation:
        """Orientation that makes the nearest signed-permutation direction the identity."""
        d = geometry.direction_matrix
        # world axis (x=0, y=1, z=2) most aligned with each index axis (i, j, k)
        world_of_index = [int(np.argmax(np.abs(d[:, a]))) for a in range(3)]
        if sorted(world_of_index) != [0, 1, 2]:
            raise GeometryError(
                f"The image direction {np.round(d, 3).tolist()} is degenerate: two index axes "
                "point along the same world axis. Check the file's header (qform/sform)."
            )
        sign_of_index = [float(np.sign(d[world_of_index[a], a])) for a in range(3)]
        # array axis of index axis a is 2 - a; canonical array axis of world axis w is 2 - w
        axes = [0, 0, 0]
        flips = [False, False, False]
        for a in range(3):
            w = world_of_index[a]
            axes[2 - w] = 2 - a
            flips[2 - w] = sign_of_index[a] < 0
        return cls(tuple(axes), tuple(flips))  # type: ignore[arg-type]

    @property
    def is_identity(self) -> bool:
        """True if no transpose or flip is needed."""
        return self.axes == (0, 1, 2) and not any(self.flips)

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """Reorder the last three axes of ``array`` from file order to canonical order."""
        lead = array.ndim - 3
        out = np.transpose(array, tuple(range(lead)) + tuple(lead + a for a in self.axes))
        flip_axes = tuple(lead + i for i, f in enumerate(self.flips) if f)
        if flip_axes:
            out = np.flip(out, axis=flip_axes)
        return np.ascontiguousarray(out)

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_canonical`."""
        lead = array.ndim - 3
        flip_axes = tuple(lead + i for i, f in enumerate(self.flips) if f)
        out = np.flip(array, axis=flip_axes) if flip_axes else array
        inv = np.argsort(self.axes)
        out = np.transpose(out, tuple(range(lead)) + tuple(lead + int(a) for a in inv))
        return np.ascontiguousarray(out)

    def canonical_geometry(self, geometry: Geometry, file_shape_zyx: tuple[int, ...]) -> Geometry:
        """Geometry of the canonical array (same world coordinates for every voxel)."""
        shape = np.asarray(file_shape_zyx[-3:])
        # canonical index (z, y, x) -> file index (z, y, x)
        m = np.zeros((3, 3))
        off = np.zeros(3)
        for c in range(3):
            f = self.axes[c]
            if self.flips[c]:
                m[f, c] = -1.0
                off[f] = shape[f] - 1
            else:
                m[f, c] = 1.0
        origin = geometry.index_to_world(off)
        # world step of one canonical voxel along each canonical axis (z, y, x)
        steps = np.stack(
            [geometry.index_to_world(off + m[:, c]) - origin for c in range(3)], axis=1
        )  # columns: canonical z, y, x
        spacing_zyx = np.linalg.norm(steps, axis=0)
        direction_kji = steps / spacing_zyx[None, :]
        direction_ijk = direction_kji[:, ::-1]
        return Geometry(tuple(spacing_zyx[::-1]), tuple(origin), tuple(direction_ijk.ravel()))


# ---------------------------------------------------------------------- conventions
@dataclass(frozen=True)
class LabelConvention:
    """A dataset's label values and their map to the internal convention.

    Parameters
    ----------
    name : str
        One of :data:`CONVENTIONS`: ``"brats2013"`` (BRATS 2013-2015), ``"brats2021"``
        (BraTS 2017-2021), ``"brats2023"``, ``"brats2024"`` (post-treatment) or ``"msd"``.
    to_internal : dict of int to int
        File value -> internal value (0 bg, 1 NCR, 2 ED, 3 ET). Several file values may map to
        one internal value (the map is then lossy: see ``encode_map``).
    description : str
        One line naming each file value.
    encode_map : dict of int to int, optional
        Internal value -> file value, needed when ``to_internal`` is not one-to-one. Default:
        the inverse of ``to_internal``.
    lossy : str
        What a read-then-write round trip does not keep ("" when it is exact).
    """

    name: str
    to_internal: dict[int, int] = field(hash=False)
    description: str = ""
    encode_map: dict[int, int] | None = field(default=None, hash=False)
    lossy: str = ""

    def __post_init__(self) -> None:
        targets = set(self.to_internal.values())
        if not targets <= set(INTERNAL_CLASSES):
            raise InputError(
                f"Convention {self.name!r} maps to internal values {sorted(targets)}; the "
                "internal classes are 0, 1, 2, 3."
            )
        if self.encode_map is None and len(targets) != len(self.to_internal):
            raise InputError(
                f"Convention {self.name!r} maps several file values to one internal class; "
                "give encode_map (internal -> file value) for writing."
            )

    @property
    def from_internal(self) -> dict[int, int]:
        """Internal value -> file value."""
        if self.encode_map is not None:
            return dict(self.encode_map)
        return {v: k for k, v in self.to_internal.items()}

    def encode(self, internal: np.ndarray) -> np.ndarray:
        """Map an internal label array to this convention (uint8, same shape)."""
        internal = np.asarray(internal)
        bad = np.setdiff1d(np.unique(internal), list(INTERNAL_CLASSES))
        if bad.size:
            raise InputError(
                f"Internal labels contain values {bad.tolist()}; expected only 0, 1, 2, 3."
            )
        lut = np.zeros(256, dtype=np.uint8)
        for internal_value, file_value in self.from_internal.items():
            lut[internal_value] = file_value
        return lut[internal.astype(np.intp)]

    def decode(self, values: np.ndarray, source: str = "label") -> np.ndarray:
        """Map a label array in this convention to the internal convention (uint8).

        Raises
        ------
        InputError
            If the array holds values that this convention does not define.
        """
        values = np.asarray(values)
        if values.size and (not np.issubdtype(values.dtype, np.integer)):
            if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
                raise InputError(
                    f"{source}: label values must be whole numbers; found non-integer values."
                )
        uniq = np.unique(values).astype(np.int64)
        bad = np.setdiff1d(uniq, list(self.to_internal))
        if bad.size:
            raise InputError(
                f"{source}: values {bad.tolist()} are not labels of the {self.name} convention "
                f"(valid: {sorted(self.to_internal)}). Pick the right convention with "
                f"--convention, or convert the file with `ssseg labels convert`."
            )
        lut = np.zeros(int(max(uniq.max(initial=0), 0)) + 1, dtype=np.uint8)
        for file_value, internal_value in self.to_internal.items():
            if file_value < lut.size:
                lut[file_value] = internal_value
        return lut[values.astype(np.intp)]


CONVENTIONS: dict[str, LabelConvention] = {
    "brats2013": LabelConvention(
        "brats2013",
        {0: 0, 1: 1, 2: 2, 3: 1, 4: 3},
        "BRATS 2013-2015: 1 necrosis, 2 oedema, 3 non-enhancing tumour, 4 enhancing",
        encode_map={0: 0, 1: 1, 2: 2, 3: 4},
        lossy="non-enhancing tumour (3) joins the necrotic core (internal NCR, as BraTS 2017+ "
        "did) and is written back as 1",
    ),
    "brats2021": LabelConvention(
        "brats2021", {0: 0, 1: 1, 2: 2, 4: 3}, "BraTS 2019-2021: 1 NCR/NET, 2 ED, 4 ET"
    ),
    "brats2023": LabelConvention(
        "brats2023", {0: 0, 1: 1, 2: 2, 3: 3}, "BraTS 2023+: 1 NCR, 2 ED, 3 ET"
    ),
    "brats2024": LabelConvention(
        "brats2024",
        {0: 0, 1: 1, 2: 2, 3: 3, 4: 0},
        "BraTS 2024 post-treatment: 1 NETC, 2 SNFH, 3 ET, 4 RC (resection cavity)",
        encode_map={0: 0, 1: 1, 2: 2, 3: 3},
        lossy="the resection cavity (4) is not tumour (outside WT, TC and ET, as BraTS 2024 "
        "scores it): it is read as background and not written back",
    ),
    "msd": LabelConvention(
        "msd", {0: 0, 1: 2, 2: 1, 3: 3}, "MSD Task01: 1 edema, 2 non-enhancing, 3 enhancing"
    ),
}

#: Conventions that share a naming scheme and differ only in their values: when a file's
#: values do not fit the convention its naming implies, the sibling is read instead.
CONVENTION_SIBLINGS: dict[str, str] = {"brats2021": "brats2013", "brats2023": "brats2024"}


def get_convention(name: str | LabelConvention) -> LabelConvention:
    """Return the :class:`LabelConvention` called ``name`` (with a did-you-mean hint)."""
    if isinstance(name, LabelConvention):
        return name
    return CONVENTIONS[check_choice("convention", name, CONVENTIONS)]


def region_masks(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean WT, TC and ET masks of an internal label array.

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of int
        Internal labels (0 bg, 1 NCR, 2 ED, 3 ET).

    Returns
    -------
    dict of str to (Z, Y, X) ndarray of bool
    """
    labels = np.asarray(labels)
    return {name: np.isin(labels, values) for name, values in REGIONS.items()}


def region_channel_indices(
    modalities: Sequence[str], region: str, *, stacklevel: int = 2
) -> list[int]:
    """Indices of the channels a region's superpixels and features are computed from.

    The channels of :data:`REGION_MODALITIES`, in that order. When the case lacks some of
    them, the available ones among those needed are used; when it lacks all of them, all
    its channels are used; either way with a :class:`UserWarning` naming what is missing
    and what is used instead. Superpixels (:func:`napari_ssseg.core.superpixels.\
channels_for_region`) and refinement features (:func:`napari_ssseg.core.refine.\
region_channels`) both go through this function, so they always use the same channels.

    Parameters
    ----------
    modalities : sequence of str
        Name of each channel of the case, in channel order; compared case-insensitively,
        aliases (``"T1Gd"``, ``"t2f"``, ...) accepted, unknown names never match.
    region : {"WT", "TC", "ET"}
        Tumour region (case-insensitive).
    stacklevel : int
        ``stacklevel`` of the warning, counted from this function's caller.

    Returns
    -------
    list of int

    Raises
    ------
    InputError
        For an unknown region, or a case with no channels.
    """
    region = check_choice("region", str(region).upper(), REGION_MODALITIES)
    keys = [str(m).strip().lower() for m in modalities]
    names = [MODALITY_ALIASES.get(k, k) for k in keys]
    if not names:
        raise InputError(f"the case has no image channels to compute region {region} from.")
    wanted = REGION_MODALITIES[region]
    present = [m for m in wanted if m in names]
    if len(present) < len(wanted):
        missing = [m for m in wanted if m not in names]
        idx = [names.index(m) for m in present] if present else list(range(len(names)))
        warnings.warn(
            f"Region {region} needs {' + '.join(wanted)} but the case lacks "
            f"{', '.join(missing)}; computing its superpixels and features from "
            f"{' + '.join(keys[i] for i in idx)} instead.",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
        return idx
    return [names.index(m) for m in present]


def regions_to_labels(wt: np.ndarray, tc: np.ndarray, et: np.ndarray) -> np.ndarray:
    """Combine nested region masks into internal labels (TC clipped to WT, ET to TC)."""
    wt = np.asarray(wt, bool)
    tc = np.asarray(tc, bool) & wt
    et = np.asarray(et, bool) & tc
    out = np.zeros(wt.shape, dtype=np.uint8)
    out[wt] = 2
    out[tc] = 1
    out[et] = 3
    return out


# ----------------------------------------------------------------------------- case
@dataclass
class Case:
    """A multimodal MRI case in canonical orientation.

    Parameters
    ----------
    images : (C, Z, Y, X) ndarray of float32
        Modalities, canonical orientation.
    modalities : tuple of str
        Channel names, each one of :data:`MODALITIES`.
    geometry : Geometry
        Geometry of the **source file grid** (what saved files get).
    orientation : Orientation
        Map between source array order and canonical order.
    labels : (Z, Y, X) ndarray of uint8, optional
        Internal labels in canonical orientation, if the case has a label file.
    convention : LabelConvention
        Convention of the case's label files (used when saving).
    name : str
        Case identifier (e.g. ``BraTS2021_00000``).
    sources : dict of str to str
        File each modality (and ``"seg"``) was read from.
    naming : str
        Naming scheme the files were recognised by (``"brats2021"``, ``"upenn"``, ``"pacs"``...).
    matched_by : dict of str to str
        For ``naming == "pacs"``: modality -> the sequence keywords that chose its file.
    """

    images: np.ndarray
    modalities: tuple[str, ...]
    geometry: Geometry
    orientation: Orientation = field(default_factory=Orientation)
    labels: np.ndarray | None = None
    convention: LabelConvention = field(default_factory=lambda: CONVENTIONS["brats2021"])
    name: str = "case"
    sources: dict[str, str] = field(default_factory=dict)
    naming: str = "explicit"
    matched_by: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4:
            raise InputError(
                f"Case {self.name!r}: images must be (C, Z, Y, X); got shape {images.shape}."
            )
        if min(images.shape[1:]) < 2:
            raise InputError(
                f"Case {self.name!r}: image shape {images.shape[1:]} is not 3D (an axis has "
                "fewer than 2 voxels). Use a 3D volume."
            )
        self.images = images.astype(np.float32, copy=False)
        self.modalities = tuple(normalize_modality(m) for m in self.modalities)
        if len(self.modalities) != images.shape[0]:
            raise InputError(
                f"Case {self.name!r}: {images.shape[0]} channels but {len(self.modalities)} "
                f"modality names {self.modalities}."
            )
        if len(set(self.modalities)) != len(self.modalities):
            raise InputError(f"Case {self.name!r}: duplicate modality names {self.modalities}.")
        if self.labels is not None:
            lab = np.asarray(self.labels)
            if lab.shape != self.shape:
                raise GeometryError(
                    f"Case {self.name!r}: labels have shape {lab.shape} but images have "
                    f"{self.shape}."
                )
            self.labels = lab.astype(np.uint8, copy=False)

    # -- shape and display geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        """Canonical array shape ``(Z, Y, X)``."""
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def file_shape(self) -> tuple[int, int, int]:
        """Array shape ``(Z, Y, X)`` in the source file's order."""
        inv = np.argsort(self.orientation.axes)
        return tuple(int(self.shape[int(a)]) for a in inv)  # type: ignore[return-value]

    @property
    def canonical_geometry(self) -> Geometry:
        """Geometry of the canonical arrays."""
        return self.orientation.canonical_geometry(self.geometry, self.file_shape)

    @property
    def scale(self) -> tuple[float, float, float]:
        """napari ``scale``: canonical spacing ``(Z, Y, X)`` in mm."""
        return self.canonical_geometry.spacing_zyx

    @property
    def translate(self) -> tuple[float, float, float]:
        """napari ``translate``: world LPS coordinate of voxel 0 as ``(z, y, x)`` mm."""
        o = self.canonical_geometry.origin
        return (o[2], o[1], o[0])

    @property
    def is_oblique(self) -> bool:
        """True if the source direction is not a signed permutation."""
        return self.geometry.is_oblique()

    def channel(self, modality: str) -> np.ndarray:
        """The ``(Z, Y, X)`` image of ``modality`` (a view, do not modify)."""
        if modality not in self.modalities:
            raise InputError(
                f"Case {self.name!r} has no {modality!r} image (it has "
                f"{', '.join(self.modalities)})."
            )
        return self.images[self.modalities.index(modality)]

    def to_file_order(self, array: np.ndarray) -> np.ndarray:
        """Map a canonical ``(..., Z, Y, X)`` array back to the source file's array order."""
        return self.orientation.from_canonical(array)

    def check_labels(self, labels: np.ndarray, what: str = "labels") -> np.ndarray:
        """Validate a canonical internal label array for this case and return it as uint8."""
        labels = np.asarray(labels)
        if labels.shape != self.shape:
            raise GeometryError(
                f"{what} has shape {labels.shape} but case {self.name!r} has {self.shape}. "
                "Use a label drawn on this case's grid."
            )
        bad = np.setdiff1d(np.unique(labels), list(INTERNAL_CLASSES))
        if bad.size:
            raise InputError(f"{what} contains values {bad.tolist()}; expected 0, 1, 2, 3.")
        return labels.astype(np.uint8, copy=False)


def warn_oblique(geometry: Geometry, source: str) -> None:
    """Warn that napari drops the rotation of an oblique image (saved files keep it)."""
    if geometry.is_oblique():
        warnings.warn(
            f"{source}: the image is oblique (direction "
            f"{np.round(geometry.direction_matrix, 3).tolist()}). The viewer shows it on the "
            "nearest axis-aligned grid and drops the rotation; saved labels keep the exact "
            "original geometry.",
            UserWarning,
            stacklevel=2,
        )
