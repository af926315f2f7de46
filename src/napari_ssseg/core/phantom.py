"""Synthetic multimodal brain-tumour MRI cases with exact ground truth ("phantoms").

A phantom is a skull-stripped brain (zero background, like BraTS) imaged with four
co-registered sequences - T1, T1Gd (``t1ce``), T2 and FLAIR - holding one glioma-like tumour
with three ground-truth classes: necrotic core (NCR, 1), peritumoural oedema (ED, 2) and an
enhancing rim (ET, 3). Everything is drawn from a seed, so ``make_phantom(seed=s)`` returns
the same arrays every time (bit-identical for the same numpy/scipy versions).

What is modelled
----------------
* **Anatomy** (``anatomy="synthetic"``): a deformed ellipsoidal brain with a folded cortex
  (grey-matter ribbon whose depth follows a random gyral pattern, sulcal CSF sheets), white
  matter, lateral and third ventricles, deep grey nuclei, the interhemispheric fissure, a
  foliated cerebellum under a tentorium; or (``anatomy="mni"``, optional extra) the real
  MNI152 2009 template tissue maps shipped by nilearn.
* **Tumour**: one to three randomly deformed, possibly overlapping lobes; the core is a
  necrotic centre surrounded by an enhancing rim of irregular thickness; oedema spreads further
  in white matter than in grey matter, stops at CSF, and is kept connected to the core.
  The anatomy is pushed away from the tumour (mass effect, including midline shift). Most
  tumours are "classic" (necrosis + rim); some are solid-enhancing or non-enhancing.
* **Appearance** (:class:`PhantomStyle`): per-modality tissue intensities with the usual
  relative contrasts, intra-tissue texture, partial volume (Gaussian blur before sampling),
  a smooth multiplicative bias field per sequence, Rician noise, per-sequence gain.

Arrays follow the package conventions: ``(Z, Y, X)`` in canonical LPS order (axis 0 inferior
to superior, axis 1 anterior to posterior, axis 2 right to left), channels first.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage as ndi

from napari_ssseg.errors import InputError, check_choice

__all__ = [
    "PhantomStyle",
    "Phantom",
    "make_phantom",
    "TISSUES",
    "DEFAULT_INTENSITIES",
    "ANATOMIES",
    "TUMOUR_KINDS",
    "VARIETIES",
]

#: Names of the phantom's channels, in order (the package's canonical modality order).
PHANTOM_MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
#: Tissue codes of :attr:`Phantom.tissues` (before the tumour is drawn).
TISSUES: dict[int, str] = {0: "background", 1: "CSF", 2: "GM", 3: "WM", 4: "deep GM"}
#: Tumour types: necrotic core + enhancing rim (most), solid enhancing, non-enhancing.
TUMOUR_KINDS: tuple[str, ...] = ("classic", "solid", "non-enhancing")
_KIND_PROB = (0.8, 0.1, 0.1)
#: Anatomy sources accepted by :func:`make_phantom`.
ANATOMIES: tuple[str, ...] = ("synthetic", "mni")

_CLASSES = ("WM", "GM", "CSF", "NCR", "ED", "ET")

#: Default mean intensity of each class per modality, relative to the modality's reference
#: level (multiplied by :attr:`PhantomStyle.gain`). The orderings follow clinical glioma MRI:
#: T1 WM > GM > CSF, tumour hypo-intense; T1Gd enhancing rim brightest, necrosis dark;
#: T2 CSF and necrosis brightest, oedema bright; FLAIR CSF suppressed, oedema brightest.
DEFAULT_INTENSITIES: dict[str, dict[str, float]] = {
    "t1": {"WM": 1.00, "GM": 0.72, "CSF": 0.30, "NCR": 0.34, "ED": 0.66, "ET": 0.74},
    "t1ce": {"WM": 1.00, "GM": 0.74, "CSF": 0.28, "NCR": 0.32, "ED": 0.68, "ET": 1.55},
    "t2": {"WM": 0.45, "GM": 0.66, "CSF": 1.50, "NCR": 1.30, "ED": 1.05, "ET": 0.85},
    "flair": {"WM": 0.55, "GM": 0.72, "CSF": 0.16, "NCR": 0.80, "ED": 1.35, "ET": 1.05},
}

# Contrast orderings that PhantomStyle.sample() always keeps (modality, brighter, darker, gap).
_ORDERINGS: tuple[tuple[str, str, str, float], ...] = (
    ("t1", "WM", "GM", 0.12),
    ("t1", "GM", "CSF", 0.2),
    ("t1", "WM", "NCR", 0.3),
    ("t1ce", "ET", "WM", 0.25),
    ("t1ce", "WM", "NCR", 0.3),
    ("t1ce", "ET", "ED", 0.35),
    ("t2", "CSF", "GM", 0.3),
    ("t2", "GM", "WM", 0.1),
    ("t2", "ED", "WM", 0.3),
    ("t2", "NCR", "ET", 0.15),
    ("flair", "ED", "GM", 0.3),
    ("flair", "ED", "WM", 0.4),
    ("flair", "GM", "CSF", 0.25),
)

# The only orderings PhantomStyle.sample_wide() keeps: the contrasts that define the labels.
_WIDE_ORDERINGS: tuple[tuple[str, str, str, float], ...] = (
    ("t1ce", "ET", "WM", 0.2),
    ("t1ce", "ET", "ED", 0.2),
    ("flair", "ED", "WM", 0.25),
    ("t2", "ED", "WM", 0.2),
    ("t1", "WM", "CSF", 0.2),
    ("t2", "CSF", "WM", 0.3),
)

#: Style varieties of :meth:`PhantomStyle.sample`.
VARIETIES: tuple[str, ...] = ("standard", "wide")


def _check_strength(strength: float) -> None:
    if not np.isfinite(strength) or not 0 <= strength <= 2:
        raise InputError(f"strength={strength!r}; expected a number in [0, 2].")


def _lerper(rng: np.random.Generator, s: float):
    """``lerp(lo, hi, default)``: a U(lo, hi) draw pulled towards ``default`` by strength ``s``.

    ``s > 1`` extrapolates beyond ``[lo, hi]``; the result is kept physical (clipped to
    ``[0, 2 x hi]``).
    """

    def lerp(lo: float, hi: float, default: float) -> float:
        return float(np.clip(default + s * (rng.uniform(lo, hi) - default), 0.0, 2.0 * hi))

    return lerp


def _restore_orderings(
    intens: dict[str, dict[str, float]], orderings: tuple[tuple[str, str, str, float], ...]
) -> None:
    """Nudge ``intens`` (in place) so that each ``(modality, hi, lo, gap)`` ordering holds."""
    for _ in range(3):
        for m, hi, lo, gap in orderings:
            if intens[m][hi] < intens[m][lo] + gap:
                mid = 0.5 * (intens[m][hi] + intens[m][lo])
                intens[m][hi] = mid + gap / 2
                intens[m][lo] = max(mid - gap / 2, 0.05)


# Nominal adult brain semi-axes in mm (z: inferior-superior, y: antero-posterior, x: left-right).
_BRAIN_SEMI_AXES = (64.0, 84.0, 68.0)


# ------------------------------------------------------------------------------- style
@dataclass
class PhantomStyle:
    """Appearance of a phantom: intensities, noise, bias, blur.

    Parameters
    ----------
    intensities : dict of str to dict of str to float
        Mean intensity of each class (``"WM"``, ``"GM"``, ``"CSF"``, ``"NCR"``, ``"ED"``,
        ``"ET"``) per modality (``"t1"``, ``"t1ce"``, ``"t2"``, ``"flair"``), relative to the
        modality's reference level. Deep grey nuclei get ``0.6 GM + 0.4 WM``.
    gain : tuple of 4 float
        Scanner-unit multiplier per modality (t1, t1ce, t2, flair). Default ``(600, 700, 500,
        400)``; BraTS intensities are in arbitrary units of this order.
    noise : float
        Standard deviation of the Gaussian noise in each of the real and imaginary channels
        (Rician magnitude noise), as a fraction of each modality's WM level. Default 0.03.
    bias : float
        Standard deviation of the log of the multiplicative bias field (0 = none). 0.15 gives
        roughly +-30 % intensity variation across the brain. Default 0.15.
    bias_wavelength_mm : float
        Spatial scale of the bias field in mm. Default 140.
    blur_mm : float
        In-plane partial-volume blur (Gaussian sigma, mm) applied before noise. Default 0.6.
    slice_blur_mm : float
        Extra Gaussian sigma along z (mm), as after resampling thick slices. Default 0.
    texture : float
        Relative amplitude of smooth intra-tissue heterogeneity. Default 0.04.
    tumour_texture : float
        Relative amplitude of heterogeneity inside the tumour. Default 0.10.
    cortex_flair : float
        Extra FLAIR brightness of the cortical grey matter, in patches (relative; 0.5 makes
        the brightest cortex 50 % brighter), as on real FLAIR with incomplete CSF
        suppression or cortical signal. Default 0 (none).
    net_fraction : float
        Share (about) of the necrotic-core label rendered as non-enhancing tumour (between
        the necrosis and oedema intensities), in smooth patches. Default 0.
    enhancement_heterogeneity : float
        How much the T1Gd enhancement of the ET label varies in patches: the ET level goes
        from WM + (ET - WM) x (1 - h) to the full ET level. Default 0 (uniform).
    """

    intensities: dict[str, dict[str, float]] = field(
        default_factory=lambda: {m: dict(v) for m, v in DEFAULT_INTENSITIES.items()}
    )
    gain: tuple[float, float, float, float] = (600.0, 700.0, 500.0, 400.0)
    noise: float = 0.03
    bias: float = 0.15
    bias_wavelength_mm: float = 140.0
    blur_mm: float = 0.6
    slice_blur_mm: float = 0.0
    texture: float = 0.04
    tumour_texture: float = 0.10
    cortex_flair: float = 0.0
    net_fraction: float = 0.0
    enhancement_heterogeneity: float = 0.0

    def __post_init__(self) -> None:
        for m in PHANTOM_MODALITIES:
            if m not in self.intensities:
                raise InputError(
                    f"PhantomStyle.intensities has no entry for modality {m!r}; give a dict "
                    f"with keys {PHANTOM_MODALITIES} each mapping {_CLASSES} to intensities."
                )
            for c in _CLASSES:
                v = self.intensities[m].get(c)
                if v is None or not np.isfinite(v) or v <= 0:
                    raise InputError(
                        f"PhantomStyle.intensities[{m!r}][{c!r}] = {v!r}; expected a positive "
                        "finite number (intensity relative to the modality's reference level)."
                    )
        self.gain = tuple(float(g) for g in self.gain)  # type: ignore[assignment]
        if len(self.gain) != 4 or not all(np.isfinite(g) and g > 0 for g in self.gain):
            raise InputError(f"PhantomStyle.gain must be 4 positive numbers; got {self.gain}.")
        for name in ("noise", "bias", "blur_mm", "slice_blur_mm", "texture", "tumour_texture"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0:
                raise InputError(f"PhantomStyle.{name} = {v!r}; expected a number >= 0.")
        for name in ("cortex_flair", "net_fraction", "enhancement_heterogeneity"):
            v = getattr(self, name)
            if not np.isfinite(v) or not 0 <= v <= (2.0 if name == "cortex_flair" else 1.0):
                top = 2 if name == "cortex_flair" else 1
                raise InputError(f"PhantomStyle.{name} = {v!r}; expected a number in [0, {top}].")
        if not np.isfinite(self.bias_wavelength_mm) or self.bias_wavelength_mm <= 0:
            raise InputError(
                f"PhantomStyle.bias_wavelength_mm = {self.bias_wavelength_mm!r}; expected > 0."
            )

    @classmethod
    def sample(
        cls,
        rng: np.random.Generator | int | None = None,
        *,
        strength: float = 1.0,
        variety: str = "standard",
    ):
        """Draw a random style (like a random scanner/protocol) around the defaults.

        ``variety="wide"`` draws a much more varied appearance (see :meth:`sample_wide`);
        ``"standard"`` (default) is described below.

        Ranges at ``strength=1`` (all scale linearly with ``strength``, 0 gives the defaults):

        * each class intensity: default x exp(N(0, 0.10)), then nudged so that the clinical
          orderings (e.g. FLAIR oedema > WM, T1Gd rim > WM, T2 CSF > GM) keep a minimum gap;
        * gain: default x exp(U(-0.5, 0.5)) per modality;
        * noise: U(0.01, 0.05); bias: U(0.02, 0.30); bias wavelength U(100, 200) mm;
        * blur: U(0.3, 1.0) mm; slice blur: U(0, 1.2) mm with probability 0.3, else 0;
        * texture: U(0.01, 0.07); tumour texture: U(0.05, 0.20).

        With ``strength > 1`` the draws extrapolate (clipped to ``[0, 2 x upper]``).

        Parameters
        ----------
        rng : numpy Generator, int or None
            Random source (an int is used as a seed).
        strength : float
            How far from the defaults to go, 0 to 2.

        Returns
        -------
        PhantomStyle
        """
        _check_strength(strength)
        variety = check_choice("variety", variety, VARIETIES)
        if variety == "wide":
            return cls.sample_wide(rng, strength=strength)
        rng = np.random.default_rng(rng)
        d = cls()
        s = float(strength)
        lerp = _lerper(rng, s)

        intens = {
            m: {
                c: float(v * math.exp(s * rng.normal(0.0, 0.10)))
                for c, v in d.intensities[m].items()
            }
            for m in PHANTOM_MODALITIES
        }
        if s > 0:
            _restore_orderings(intens, _ORDERINGS)
        gain = tuple(float(g * math.exp(s * rng.uniform(-0.5, 0.5))) for g in d.gain)
        slice_blur = rng.uniform(0.0, 1.2) if rng.random() < 0.3 else 0.0
        return cls(
            intensities=intens,
            gain=gain,  # type: ignore[arg-type]
            noise=lerp(0.01, 0.05, d.noise),
            bias=lerp(0.02, 0.30, d.bias),
            bias_wavelength_mm=lerp(100.0, 200.0, d.bias_wavelength_mm),
            blur_mm=lerp(0.3, 1.0, d.blur_mm),
            slice_blur_mm=float(s * slice_blur),
            texture=lerp(0.01, 0.07, d.texture),
            tumour_texture=lerp(0.05, 0.20, d.tumour_texture),
        )

    @classmethod
    def sample_wide(cls, rng: np.random.Generator | int | None = None, *, strength: float = 1.0):
        """Draw a widely varied appearance, for training models that must work on real scans.

        At ``strength=1``:

        * every class intensity of every modality: default x exp(U(-0.5, 0.5)) independently,
          keeping only the contrasts that define the labels (T1Gd ET > WM, FLAIR and T2
          oedema > WM, T1 WM > CSF, T2 CSF > WM), so necrosis is not always dark, oedema may
          be faint, grey matter may be as bright as oedema on FLAIR;
        * FLAIR-bright cortex (``cortex_flair`` U(0, 0.7)) in half of the draws;
          non-enhancing tumour inside the core (``net_fraction`` U(0.1, 0.8)) in half;
          heterogeneous enhancement (``enhancement_heterogeneity`` U(0.2, 0.8)) in 60 %;
        * gain exp(U(-0.7, 0.7)); noise U(0.01, 0.08); bias U(0.02, 0.40), wavelength
          U(80, 220) mm; blur U(0.3, 1.5) mm; slice blur U(0, 2.5) mm in 40 %; texture
          U(0.01, 0.10); tumour texture U(0.05, 0.35).

        ``strength`` scales every deviation from the defaults (0 gives the defaults).
        """
        _check_strength(strength)
        rng = np.random.default_rng(rng)
        d = cls()
        s = float(strength)
        lerp = _lerper(rng, s)

        intens = {
            m: {
                c: float(v * math.exp(s * rng.uniform(-0.5, 0.5)))
                for c, v in d.intensities[m].items()
            }
            for m in PHANTOM_MODALITIES
        }
        if s > 0:
            _restore_orderings(intens, _WIDE_ORDERINGS)
        gain = tuple(float(g * math.exp(s * rng.uniform(-0.7, 0.7))) for g in d.gain)
        slice_blur = rng.uniform(0.0, 2.5) if rng.random() < 0.4 else 0.0
        cortex = rng.uniform(0.0, 0.7) if rng.random() < 0.5 else 0.0
        net = rng.uniform(0.1, 0.8) if rng.random() < 0.5 else 0.0
        het = rng.uniform(0.2, 0.8) if rng.random() < 0.6 else 0.0
        return cls(
            intensities=intens,
            gain=gain,  # type: ignore[arg-type]
            noise=lerp(0.01, 0.08, d.noise),
            bias=lerp(0.02, 0.40, d.bias),
            bias_wavelength_mm=lerp(80.0, 220.0, d.bias_wavelength_mm),
            blur_mm=lerp(0.3, 1.5, d.blur_mm),
            slice_blur_mm=float(s * slice_blur),
            texture=lerp(0.01, 0.10, d.texture),
            tumour_texture=lerp(0.05, 0.35, d.tumour_texture),
            cortex_flair=float(min(s * cortex, 2.0)),
            net_fraction=float(min(s * net, 1.0)),
            enhancement_heterogeneity=float(min(s * het, 1.0)),
        )

    def lut(self, modality: str) -> dict[str, float]:
        """Intensities of ``modality`` in scanner units (relative level x gain)."""
        g = self.gain[PHANTOM_MODALITIES.index(modality)]
        return {c: v * g for c, v in self.intensities[modality].items()}


# ----------------------------------------------------------------------------- phantom
@dataclass
class Phantom:
    """A synthetic case with ground truth.

    Attributes
    ----------
    images : (4, Z, Y, X) ndarray of float32
        T1, T1Gd, T2, FLAIR (see :attr:`modalities`); 0 outside the brain.
    labels : (Z, Y, X) ndarray of uint8
        Internal labels: 0 background, 1 NCR, 2 ED, 3 ET.
    brain : (Z, Y, X) ndarray of bool
        Brain mask (where the images are non-zero).
    spacing : tuple of 3 float
        Voxel size ``(z, y, x)`` in mm.
    seed : int
        Seed the phantom was drawn from.
    style : PhantomStyle
        Appearance used.
    tissues : (Z, Y, X) ndarray of uint8
        Healthy tissue map before the tumour (see :data:`TISSUES`): lets tests measure e.g.
        WM uniformity.
    bias_box : (4, z, y, x) ndarray of float32
        The multiplicative bias field applied to each modality, on the brain's box
        ``bias_bbox`` (see the :attr:`bias_field` property for the full grid).
    bias_bbox : tuple of 3 slice
    anatomy : str
        ``"synthetic"`` or ``"mni"``.
    modalities : tuple of str
        Channel names.
    tumour_kind : str
        ``"classic"`` (necrotic core + enhancing rim, 80 % of seeds), ``"solid"`` (enhancing
        throughout, no NCR, 10 %) or ``"non-enhancing"`` (core labelled 1 and rendered between
        necrosis and oedema, no ET, 10 %).
    """

    images: np.ndarray
    labels: np.ndarray
    brain: np.ndarray
    spacing: tuple[float, float, float]
    seed: int
    style: PhantomStyle
    tissues: np.ndarray | None = None
    bias_box: np.ndarray | None = None
    bias_bbox: tuple[slice, slice, slice] | None = None
    anatomy: str = "synthetic"
    modalities: tuple[str, ...] = PHANTOM_MODALITIES
    tumour_kind: str = "classic"

    @property
    def bias_field(self) -> np.ndarray:
        """(4, Z, Y, X) float32 multiplicative bias field on the full grid (1 outside the box)."""
        out = np.ones((len(self.modalities),) + self.shape, np.float32)
        if self.bias_box is not None and self.bias_bbox is not None:
            index = (slice(None), *self.bias_bbox)
            out[index] = self.bias_box
        return out

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape ``(Z, Y, X)``."""
        return tuple(int(s) for s in self.labels.shape)  # type: ignore[return-value]

    def geometry(self):
        """ITK :class:`~napari_ssseg.core.case.Geometry`: identity LPS, volume centred on 0."""
        from napari_ssseg.core.case import Geometry

        sp_zyx = np.asarray(self.spacing, float)
        origin_zyx = -0.5 * (np.asarray(self.shape, float) - 1.0) * sp_zyx
        return Geometry(tuple(sp_zyx[::-1]), tuple(origin_zyx[::-1]))

    def to_case(self, name: str | None = None, convention: str = "brats2021"):
        """Wrap as a :class:`~napari_ssseg.core.case.Case` (copies the arrays).

        Parameters
        ----------
        name : str, optional
            Case name; default ``"phantom_<seed>"``.
        convention : str
            Label convention used when the case's labels are saved.

        Returns
        -------
        Case
            Identity LPS direction, origin such that the volume is centred on (0, 0, 0) mm.
        """
        from napari_ssseg.core.case import Case, Orientation, get_convention

        return Case(
            images=self.images.copy(),
            modalities=self.modalities,
            geometry=self.geometry(),
            orientation=Orientation(),
            labels=self.labels.copy(),
            convention=get_convention(convention),
            name=name if name is not None else f"phantom_{self.seed:05d}",
            sources={},
            naming="phantom",
        )


# ---------------------------------------------------------------------------- helpers
def _axes_mm(shape, spacing, box=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable physical coordinates (mm, centred on 0) of the voxels of ``box``."""
    out = []
    for ax, (n, sp) in enumerate(zip(shape, spacing)):
        sl = box[ax] if box is not None else slice(0, n)
        c = (np.arange(sl.start, sl.stop, dtype=np.float32) - (n - 1) / 2.0) * np.float32(sp)
        s = [1, 1, 1]
        s[ax] = c.size
        out.append(c.reshape(s))
    return out[0], out[1], out[2]


def _interp_matrix(n: int, sp: float, step: float, nc: int) -> np.ndarray:
    """(n, nc) Gaussian interpolation weights from a coarse grid (``step`` mm) to ``n`` voxels."""
    x = (np.arange(n, dtype=np.float64) * sp)[:, None]
    xc = ((np.arange(nc, dtype=np.float64) - 2.0) * step)[None, :]
    w = np.exp(-0.5 * ((x - xc) / step) ** 2)
    w /= w.sum(1, keepdims=True)
    return w.astype(np.float32)


def _smooth_field(rng, shape, spacing, wavelength_mm: float) -> np.ndarray:
    """Zero-mean, unit-std smooth Gaussian random field with features of ~``wavelength_mm``.

    White noise on a coarse grid (4 samples per wavelength) is Gaussian-interpolated to the
    voxels with three small matrix products (one per axis), which is exact, smooth and fast
    even on a full BraTS grid. Fine fields (wavelength < 20 voxels) are made by filtering
    full-resolution noise instead.

    Returns
    -------
    (Z, Y, X) ndarray of float32
    """
    shape = tuple(int(n) for n in shape)
    step = max(wavelength_mm / 4.0, 1e-3)
    if wavelength_mm < 20.0 * min(spacing):
        g = rng.standard_normal(shape, dtype=np.float32)
        out = ndi.gaussian_filter(g, [step / sp for sp in spacing], mode="reflect", truncate=3.0)
    else:
        cshape = [int(math.ceil(n * sp / step)) + 5 for n, sp in zip(shape, spacing)]
        g = rng.standard_normal(cshape, dtype=np.float32)
        wz, wy, wx = (_interp_matrix(n, sp, step, c) for n, sp, c in zip(shape, spacing, cshape))
        out = (wz @ g.reshape(cshape[0], -1)).reshape(shape[0], cshape[1], cshape[2])
        out = np.matmul(wy, out)
        out = np.ascontiguousarray(out @ wx.T)
    sub = out[::3, ::3, ::3]
    out -= np.float32(sub.mean())
    out /= np.float32(max(float(sub.std()), 1e-6))
    return out


def _rot(rng) -> np.ndarray:
    """Random 3x3 rotation matrix."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))[None, :]
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.astype(np.float32)


def _box_around(centre_vox, radius_vox, shape) -> tuple[slice, slice, slice]:
    return tuple(  # type: ignore[return-value]
        slice(max(0, int(math.floor(c - r))), min(n, int(math.ceil(c + r)) + 1))
        for c, r, n in zip(centre_vox, radius_vox, shape)
    )


# ------------------------------------------------------------------------ parameters
@dataclass
class _Tumour:
    centre: np.ndarray  # mm (z, y, x)
    radius: float  # mm, core scale
    lobes: list  # (offset mm (3,), radii mm (3,), rotation (3,3))
    necrosis: float  # NCR threshold on rho (0..1)
    oedema_wm: float  # rho excess reached in WM
    oedema_gm: float  # rho excess reached in GM
    deform: float  # rho deformation amplitude
    mass_effect: float
    kind: str = "classic"  # "classic" | "solid" | "non-enhancing"


def _draw_tumour(rng, scale: float, semi, min_spacing: float) -> _Tumour:
    radius = float(rng.uniform(15.0, 28.0) * scale)
    radius = max(radius, 3.0 * min_spacing)
    side = rng.choice([-1.0, 1.0])
    a, b, c = semi
    for _ in range(100):  # inside the brain, away from the surface and the midline
        z = rng.uniform(-0.25, 0.45) * a
        y = rng.uniform(-0.55, 0.5) * b
        x = side * rng.uniform(0.18, 0.55) * c
        r = math.sqrt((z / a) ** 2 + (y / b) ** 2 + (x / c) ** 2)
        depth = math.sqrt(z * z + y * y + x * x) * (1 - r) / max(r, 1e-3)
        if depth > 1.4 * radius and abs(x) > 0.9 * radius:
            break
    centre = np.array([z, y, x], dtype=np.float32)
    lobes = []
    for i in range(int(rng.integers(1, 4))):
        off = np.zeros(3) if i == 0 else rng.normal(0, 1, 3)
        if i:
            off = off / np.linalg.norm(off) * rng.uniform(0.4, 0.8) * radius
        radii = radius * rng.uniform(0.65, 1.1, 3) * (1.0 if i == 0 else rng.uniform(0.5, 0.8))
        lobes.append((off.astype(np.float32), radii.astype(np.float32), _rot(rng)))
    return _Tumour(
        centre=centre,
        radius=radius,
        lobes=lobes,
        necrosis=float(rng.uniform(0.5, 0.85)),
        oedema_wm=float(rng.uniform(0.35, 1.1)),
        oedema_gm=float(rng.uniform(0.05, 0.25)),
        deform=float(rng.uniform(0.12, 0.3)),
        mass_effect=float(rng.uniform(0.2, 0.6)),
        kind=str(rng.choice(TUMOUR_KINDS, p=_KIND_PROB)),
    )


# --------------------------------------------------------------------- anatomy: synthetic
def _synthetic_anatomy(shape, spacing, rng, scale: float, tumour: _Tumour):
    """Tissue map (uint8, codes of TISSUES) and brain mask on the full grid."""
    a, b, c = (s * scale for s in _BRAIN_SEMI_AXES)
    feat = max(scale, 1e-3)
    min_sp = float(min(spacing))
    # bounding box of the brain (with deformation margin)
    half = np.array([a, b, c]) * 1.08
    centre_vox = (np.asarray(shape) - 1) / 2.0
    box = _box_around(centre_vox, half / np.asarray(spacing) + 1, shape)
    bshape = tuple(s.stop - s.start for s in box)
    z, y, x = _axes_mm(shape, spacing, box)

    # --- outer surface: ellipsoid, flatter underneath, narrower frontally, low-freq bumps
    a_z = np.where(z > 0, a, a * 0.82).astype(np.float32)
    c_x = (c * (1.0 + 0.06 * np.clip(y / b, -1, 1))).astype(np.float32)
    bump = _smooth_field(rng, bshape, spacing, 60.0 * feat)
    r2 = (z / a_z) ** 2 + (y / b) ** 2 + (x / c_x) ** 2
    r = np.sqrt(r2, dtype=np.float32)
    r *= 1.0 - 0.035 * bump
    brain = r <= 1.0
    # approx. distance to the surface along the ray from the centre, mm
    norm = np.sqrt(z * z + y * y + x * x, dtype=np.float32)
    depth = norm * (1.0 - r) / np.maximum(r, 1e-3)
    del r2, bump

    # --- cortex: gyral pattern from a band-limited field; sulci are its zero-level sheets
    gyr = _smooth_field(rng, bshape, spacing, 15.0 * feat)
    ctx = max(3.5 * feat, 1.1 * min_sp)  # cortical thickness, mm
    sulc_depth = (
        20.0 * feat * (0.6 + 0.4 * np.tanh(_smooth_field(rng, bshape, spacing, 50.0 * feat)) ** 2)
    )
    near_sulcus = np.clip(1.0 - np.abs(gyr) / 1.3, 0.0, 1.0) ** 0.6
    wm_depth = ctx + sulc_depth * near_sulcus
    tissues = np.zeros(bshape, np.uint8)
    tissues[brain] = 3
    tissues[brain & (depth < wm_depth)] = 2
    sulcus_w = max(0.10, 0.55 * min_sp / max(12.0 * feat, 1e-3))
    csf = brain & (
        (depth < max(0.8 * feat, 0.4 * min_sp))
        | ((np.abs(gyr) < sulcus_w) & (depth < sulc_depth * 0.95))
    )
    del gyr, near_sulcus, sulc_depth, wm_depth

    # --- cerebellum: below a tent-shaped tentorium in the posterior fossa, finely foliated
    # grey matter around a central white-matter core with branches (arbor vitae)
    zt = (-14.0 - 0.2 * (y / scale - 12.0) - 0.1 * np.abs(x) / scale) * scale
    cereb = brain & (y > (8.0 + 30.0 * (x / c) ** 2) * scale) & (z < zt)
    if cereb.any():
        cb = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(cereb))
        cshape = tuple(sl.stop - sl.start for sl in cb)
        zc, yc, xc = z[cb[0], :, :], y[:, cb[1], :], x[:, :, cb[2]]
        reg = cereb[cb]
        fol = _smooth_field(rng, cshape, spacing, max(12.0 * feat, 3.0 * min_sp))
        # one white-matter core per hemisphere; folia are concentric leaves around it
        r_left, r_right = (
            np.sqrt(
                ((zc + 34 * scale) / (9 * feat)) ** 2
                + ((yc - 42 * scale) / (13 * feat)) ** 2
                + ((xc - sx * 20 * scale) / (13 * feat)) ** 2,
                dtype=np.float32,
            )
            for sx in (-1.0, 1.0)
        )
        core_r = np.minimum(r_left, r_right)
        leaf = max(3.0 * feat, 1.5 * min_sp)  # folium period, mm
        phase = np.cos(2 * np.pi * (core_r * 10.0 * feat / leaf + 0.6 * fol))
        t_c = np.full(cshape, 2, np.uint8)
        t_c[(core_r < 1.0) | ((core_r < 2.0) & (phase < -0.5))] = 3
        c_csf = (phase > 0.8) & (core_r > 1.4)
        c_csf |= (zt[:, cb[1], cb[2]] - zc) < max(0.9 * feat, 0.5 * min_sp)  # tentorium
        c_csf |= depth[cb] < max(0.8 * feat, 0.4 * min_sp)
        # fourth ventricle
        c_csf |= ((zc + 30 * scale) / (4 * feat)) ** 2 + ((yc - 22 * scale) / (5 * feat)) ** 2 + (
            xc / (6 * feat)
        ) ** 2 < 1.0
        sub = tissues[cb]
        sub[reg] = t_c[reg]
        csf_sub = csf[cb]
        csf_sub[reg] = c_csf[reg]
        del fol, core_r, t_c, c_csf, zc, yc, xc, reg, phase
    del zt

    # --- deep structures from mass-effect-warped coordinates (pushed away from the tumour)
    dz, dy, dx = (z - tumour.centre[0]), (y - tumour.centre[1]), (x - tumour.centre[2])
    dist = np.sqrt(dz * dz + dy * dy + dx * dx, dtype=np.float32) + 1e-3
    ln = 2.2 * tumour.radius
    push = tumour.mass_effect * tumour.radius * np.exp(-((dist / ln) ** 2)) / dist
    push *= np.clip(depth / (0.5 * ln), 0, 1)  # the skull does not move
    wz, wy, wx = z - push * dz, y - push * dy, x - push * dx
    del dz, dy, dx, dist, push

    def ell(cz, cy, cx, sz, sy, sx, wz=wz, wy=wy, wx=wx):
        return (
            ((wz - cz * scale) / (sz * feat)) ** 2
            + ((wy - cy * scale) / (sy * feat)) ** 2
            + ((wx - cx * scale) / (sx * feat)) ** 2
        )

    wob = _smooth_field(rng, bshape, spacing, 25.0 * feat)
    # deep grey nuclei: thalami and lentiform/caudate
    deep = np.zeros(bshape, bool)
    for sx in (-1.0, 1.0):
        deep |= ell(2, 10, sx * 11, 10, 15, 8) < 1.0 + 0.1 * wob
        deep |= ell(6, -12, sx * 21, 11, 16, 6) < 1.0 + 0.1 * wob
    # lateral ventricles (body and curved horns) and third ventricle
    vent = np.zeros(bshape, bool)
    vw = max(4.5 * feat, 1.0 * min_sp)
    yy = np.clip((wy - 2 * scale) / (30 * feat), -1.5, 1.5)
    post = np.clip((yy + 1.0) / 2.0, 0.0, 1.0)  # 0 frontal horn -> 1 atrium
    zc = (10 - 6 * yy * yy) * scale  # C-shape in the sagittal plane: ends lower than the body
    for sx in (-1.0, 1.0):
        # frontal horns close to the midline, diverging and widening towards the atria
        xc = sx * (5.0 + 11.0 * post**1.5) * scale
        vent |= ((wz - zc) / (7 * feat)) ** 2 + yy**2 + (
            (wx - xc) / (vw * (0.8 + 0.5 * post))
        ) ** 2 < 1.0 + 0.15 * wob
    del yy, post, zc
    vent |= ell(0, 6, 0, 10, 14, max(1.5, 0.8 * min_sp / feat)) < 1.0
    # interhemispheric fissure above the corpus callosum, and between the frontal/occipital
    # poles
    fiss_w = max(1.0 * feat, 0.5 * min_sp)
    cc = (wz > 4 * scale) & (wz < 22 * scale) & (np.abs(wy) < 38 * scale)
    fissure = (np.abs(wx) < fiss_w) & ~cc & (wz > -20 * scale)
    tissues[brain & deep & ~vent] = 4
    tissues[brain & (csf | vent | fissure)] = 1
    del wz, wy, wx, wob, deep, vent, fissure, cc, csf, ell

    full_t = np.zeros(shape, np.uint8)
    full_t[box] = tissues
    full_b = np.zeros(shape, bool)
    full_b[box] = brain
    full_depth = np.zeros(shape, np.float32)
    full_depth[box] = np.where(brain, depth, 0)
    return full_t, full_b, full_depth


# --------------------------------------------------------------------------- anatomy: MNI
@functools.lru_cache(maxsize=1)
def _mni_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T1, GM prob, WM prob) of MNI152 2009, canonical LPS ``(Z, Y, X)``, 1 mm, float32."""
    try:
        from nilearn import datasets  # noqa: PLC0415
    except ImportError as exc:
        raise InputError(
            "anatomy='mni' needs nilearn, which ships the MNI152 template; it is not "
            "installed. Install the optional extra with `pip install napari-ssseg[anatomy]` "
            "(or `pip install nilearn`), or use anatomy='synthetic'."
        ) from exc
    import warnings

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for loader in (
            datasets.load_mni152_template,
            datasets.load_mni152_gm_template,
            datasets.load_mni152_wm_template,
        ):
            img = loader(resolution=1)
            data = np.asarray(img.get_fdata(), dtype=np.float32)
            aff = np.asarray(img.affine)
            # voxel axes (i, j, k) -> canonical LPS (Z, Y, X): Z=S, Y=P, X=L
            code = [int(np.argmax(np.abs(aff[:3, a]))) for a in range(3)]
            sign = [float(np.sign(aff[code[a], a])) for a in range(3)]
            perm = [code.index(2), code.index(1), code.index(0)]  # array axes for S, A/P, R/L
            arr = np.transpose(data, perm)
            # want +Z superior (RAS +z), +Y posterior (RAS -y), +X left (RAS -x)
            want = [1.0, -1.0, -1.0]
            for ax, (w, vox_axis) in enumerate(zip(want, perm)):
                if sign[vox_axis] != w:
                    arr = np.flip(arr, axis=ax)
            out.append(np.ascontiguousarray(arr))
    t1, gm, wm = out
    for arr in (t1, gm, wm):
        m = float(arr.max())
        if m > 0:
            arr /= m
    return t1, gm, wm


@functools.lru_cache(maxsize=1)
def _mni_prepared() -> dict[str, np.ndarray]:
    """Template maps plus brain mask, its depth (mm) and bounding box (cached)."""
    t1, gm, wm = _mni_maps()
    brain = (gm + wm) > 0.15
    brain = ndi.binary_fill_holes(brain)
    lab, n = ndi.label(brain)
    if n > 1:
        counts = np.bincount(lab.ravel())
        counts[0] = 0
        brain = lab == int(np.argmax(counts))
    idx = np.argwhere(brain)
    lo, hi = idx.min(0), idx.max(0) + 1
    edt = ndi.distance_transform_edt(brain).astype(np.float32)
    return {
        "gm": gm,
        "wm": wm,
        "brain": brain.astype(np.float32),
        "edt": edt,
        "lo": lo.astype(float),
        "hi": hi.astype(float),
    }


def _mni_anatomy(shape, spacing):
    """Tissue map, brain mask, depth (mm) and scale of the MNI152 brain fitted into the grid.

    The template (1 mm) is scaled isotropically by ``s <= 1`` so that the brain fits the grid
    and resampled (trilinear) only inside the brain's bounding box.
    """
    tpl = _mni_prepared()
    lo, hi = tpl["lo"], tpl["hi"]
    ext_mm = hi - lo
    sp = np.asarray(spacing, float)
    n = np.asarray(shape, float)
    s = min(1.0, float(np.min(0.94 * n * sp / ext_mm)))
    centre_t = (lo + hi - 1) / 2.0
    step = sp / s  # template voxels per output voxel
    # output box covering the template brain
    o_lo = np.floor((lo - 1 - centre_t) / step + (n - 1) / 2).astype(int)
    o_hi = np.ceil((hi + 1 - centre_t) / step + (n - 1) / 2).astype(int) + 1
    o_lo = np.clip(o_lo, 0, n.astype(int))
    o_hi = np.clip(o_hi, 0, n.astype(int))
    box = tuple(slice(int(a), int(b)) for a, b in zip(o_lo, o_hi))
    bshape = tuple(int(b - a) for a, b in zip(o_lo, o_hi))
    offset = centre_t + (o_lo - (n - 1) / 2) * step

    def sample(arr):
        return ndi.affine_transform(
            arr, step, offset=offset, output_shape=bshape, order=1, mode="constant", cval=0.0
        )

    gm_s, wm_s = sample(tpl["gm"]), sample(tpl["wm"])
    b_s = sample(tpl["brain"]) > 0.5
    depth_s = sample(tpl["edt"]) * np.float32(s)
    csf_s = np.clip(1.0 - gm_s - wm_s, 0, 1)
    t = (np.argmax(np.stack([csf_s, gm_s, wm_s]), axis=0) + 1).astype(np.uint8)
    t[~b_s] = 0
    tissues = np.zeros(shape, np.uint8)
    tissues[box] = t
    brain = np.zeros(shape, bool)
    brain[box] = b_s
    depth = np.zeros(shape, np.float32)
    depth[box] = np.where(b_s, depth_s, 0)
    return tissues, brain, depth, s


# ---------------------------------------------------------------------------- tumour
def _tumour_labels(shape, spacing, rng, tumour: _Tumour, tissues, brain):
    """Internal labels (uint8) of the tumour drawn onto ``tissues``."""
    sp = np.asarray(spacing, np.float32)
    extent = tumour.radius * (2.2 + tumour.oedema_wm)
    centre_vox = tumour.centre / sp + (np.asarray(shape) - 1) / 2.0
    box = _box_around(centre_vox, extent / sp + 2, shape)
    bshape = tuple(s.stop - s.start for s in box)
    z, y, x = _axes_mm(shape, spacing, box)
    pz, py, px = z - tumour.centre[0], y - tumour.centre[1], x - tumour.centre[2]
    rho = None
    for off, radii, rot in tumour.lobes:
        qz, qy, qx = pz - off[0], py - off[1], px - off[2]
        # coordinates in the lobe's frame
        u = (rot[0, 0] * qz + rot[1, 0] * qy + rot[2, 0] * qx) / radii[0]
        v = (rot[0, 1] * qz + rot[1, 1] * qy + rot[2, 1] * qx) / radii[1]
        w = (rot[0, 2] * qz + rot[1, 2] * qy + rot[2, 2] * qx) / radii[2]
        r = np.sqrt(u * u + v * v + w * w, dtype=np.float32)
        rho = r if rho is None else np.minimum(rho, r)
    del pz, py, px
    n1 = _smooth_field(rng, bshape, spacing, max(0.9 * tumour.radius, 2 * float(sp.min())))
    n2 = _smooth_field(rng, bshape, spacing, max(0.6 * tumour.radius, 2 * float(sp.min())))
    n3 = _smooth_field(rng, bshape, spacing, max(1.2 * tumour.radius, 2 * float(sp.min())))
    rho = rho * (1.0 - tumour.deform * np.tanh(n1))
    tis = tissues[box]
    inb = brain[box]
    core = (rho < 1.0) & inb
    if not core.any():  # degenerate tiny grids: at least the centre voxel
        c = tuple(int(round(v)) - s.start for v, s in zip(centre_vox, box))
        if all(0 <= i < n for i, n in zip(c, bshape)) and inb[c]:
            core[c] = True
    if tumour.kind == "solid":  # enhancing throughout, no necrosis
        necrotic = np.zeros_like(core)
    elif tumour.kind == "non-enhancing":  # the whole core is non-enhancing tumour (label 1)
        necrotic = core.copy()
    else:
        necrotic = core & (rho < tumour.necrosis * (1.0 + 0.25 * np.tanh(n2)))
    ed_reach = np.where(
        tis == 3,
        1.0 + tumour.oedema_wm * (1.0 + 0.35 * np.tanh(n3)),
        np.where(np.isin(tis, (2, 4)), 1.0 + tumour.oedema_gm, 0.0),
    )
    cand = (rho < ed_reach) & inb & (tis != 1) | core
    lab, _ = ndi.label(cand)
    keep = np.unique(lab[core])
    keep = keep[keep > 0]
    oedema = np.isin(lab, keep) & ~core
    out = np.zeros(bshape, np.uint8)
    out[oedema] = 2
    out[core] = 3
    out[necrotic] = 1
    full = np.zeros(shape, np.uint8)
    full[box] = out
    # relative position inside the oedema (0 at the core, 1 at its edge) for appearance
    ed_frac = np.zeros(shape, np.float32)
    ed_frac[box] = np.where(
        oedema, np.clip((rho - 1.0) / np.maximum(ed_reach - 1.0, 1e-3), 0, 1), 0
    )
    return full, ed_frac, box


# --------------------------------------------------------------------------- main API
def make_phantom(
    shape: tuple[int, int, int] = (155, 240, 240),
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    seed: int = 0,
    style: PhantomStyle | None = None,
    *,
    anatomy: str = "synthetic",
) -> Phantom:
    """Generate a synthetic multimodal brain-tumour case with ground-truth labels.

    Parameters
    ----------
    shape : tuple of 3 int
        Grid ``(Z, Y, X)``; each axis >= 16. The BraTS grid is ``(155, 240, 240)``.
    spacing : tuple of 3 float
        Voxel size ``(z, y, x)`` in mm.
    seed : int
        Everything (anatomy, tumour, style if not given, noise) is drawn from this seed.
    style : PhantomStyle, optional
        Appearance. Default: ``PhantomStyle.sample(seed-derived rng)``, a random style per
        seed; pass ``PhantomStyle()`` for the fixed defaults. The anatomy and the tumour do not
        depend on the style.
    anatomy : {"synthetic", "mni"}
        ``"mni"`` uses the MNI152 template tissue maps (needs the ``anatomy`` extra,
        nilearn).

    Returns
    -------
    Phantom
        ``images`` (4, Z, Y, X) float32 (t1, t1ce, t2, flair), ``labels`` (Z, Y, X) uint8
        internal (0 bg, 1 NCR, 2 ED, 3 ET), ``brain`` (Z, Y, X) bool, ...

    Notes
    -----
    The brain has adult size (~13 x 17 x 14 cm) when the grid is large enough and shrinks to
    fit smaller grids; the tumour scales with the brain. On a (155, 240, 240) 1 mm grid one
    phantom takes a few seconds (see docs/sample-data.md for measured times).
    """
    shape_t = tuple(int(s) for s in np.atleast_1d(shape))
    if len(shape_t) != 3 or any(s < 16 for s in shape_t) or any(s > 1024 for s in shape_t):
        raise InputError(
            f"phantom shape={tuple(shape)!r}; expected three sizes (Z, Y, X) between 16 and "
            "1024, e.g. (155, 240, 240) for the BraTS grid or (32, 40, 40) for a quick test."
        )
    sp = tuple(float(s) for s in np.atleast_1d(spacing))
    if len(sp) != 3 or not all(np.isfinite(s) and 0.05 <= s <= 20 for s in sp):
        raise InputError(
            f"phantom spacing={tuple(np.atleast_1d(spacing))!r}; expected three voxel sizes "
            "(z, y, x) in mm between 0.05 and 20, e.g. (1, 1, 1)."
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"phantom seed={seed!r}; expected a non-negative integer.")
    anatomy = check_choice("anatomy", anatomy, ANATOMIES)
    if style is not None and not isinstance(style, PhantomStyle):
        raise InputError(f"style must be a PhantomStyle or None; got {type(style).__name__}.")

    ss = np.random.SeedSequence(int(seed))
    rng_anat, rng_tum, rng_style, rng_img, rng_noise = (
        np.random.default_rng(s) for s in ss.spawn(5)
    )
    if style is None:
        style = PhantomStyle.sample(rng_style)
    grid_mm = np.asarray(shape_t) * np.asarray(sp)
    scale = min(1.0, float(np.min(0.5 * 0.94 * grid_mm / (np.asarray(_BRAIN_SEMI_AXES) * 1.08))))
    semi = tuple(s * scale for s in _BRAIN_SEMI_AXES)
    tumour = _draw_tumour(rng_tum, scale, semi, min(sp))

    if anatomy == "synthetic":
        tissues, brain, _depth = _synthetic_anatomy(shape_t, sp, rng_anat, scale, tumour)
    else:
        tissues, brain, depth, s_mni = _mni_anatomy(shape_t, sp)
        tumour = _place_in_wm(tumour, tissues, depth, sp, rng_tum, s_mni)
        tissues = _mass_effect(tissues, brain, depth, sp, tumour)
    labels, ed_frac, _ = _tumour_labels(shape_t, sp, rng_tum, tumour, tissues, brain)
    net_mix = 0.5 if tumour.kind == "non-enhancing" else 0.0
    images, bias, bias_bbox = _render(
        shape_t, sp, style, tissues, labels, ed_frac, brain, rng_img, rng_noise, net_mix
    )
    return Phantom(
        images=images,
        labels=labels,
        brain=brain,
        spacing=sp,
        seed=int(seed),
        style=style,
        tissues=tissues,
        bias_box=bias,
        bias_bbox=bias_bbox,
        anatomy=anatomy,
        tumour_kind=tumour.kind,
    )


def _mass_effect(tissues, brain, depth, spacing, tumour: _Tumour) -> np.ndarray:
    """Push a tissue map away from the tumour centre (used for the MNI anatomy).

    Each voxel takes the tissue found closer to the tumour centre, displaced by
    ``mass_effect * radius * exp(-(d / 2.2 radius)^2)`` and fading to 0 at the brain surface
    (the skull does not move); the brain mask is unchanged.
    """
    sp = np.asarray(spacing, np.float32)
    ln = 2.2 * tumour.radius
    centre_vox = tumour.centre / sp + (np.asarray(tissues.shape) - 1) / 2.0
    box = _box_around(centre_vox, 2.5 * ln / sp + 1, tissues.shape)
    z, y, x = _axes_mm(tissues.shape, spacing, box)
    dz, dy, dx = z - tumour.centre[0], y - tumour.centre[1], x - tumour.centre[2]
    dist = np.sqrt(dz * dz + dy * dy + dx * dx, dtype=np.float32) + 1e-3
    push = tumour.mass_effect * tumour.radius * np.exp(-((dist / ln) ** 2)) / dist
    push *= np.clip(depth[box] / (0.5 * ln), 0, 1)
    half = (np.asarray(tissues.shape, np.float32) - 1) / 2.0
    # nearest-neighbour pull (fancy indexing; much faster than map_coordinates)
    idx = [
        np.clip(np.rint((c - push * d) / sp[a] + half[a]), 0, tissues.shape[a] - 1).astype(np.intp)
        for a, (c, d) in enumerate(((z, dz), (y, dy), (x, dx)))
    ]
    moved = tissues[idx[0], idx[1], idx[2]]
    out = tissues.copy()
    inb = brain[box]
    sub = np.where(inb, np.where(moved == 0, 1, moved), 0).astype(np.uint8)
    out[box] = sub
    return out


def _place_in_wm(tumour: _Tumour, tissues, depth, spacing, rng, s_mni: float) -> _Tumour:
    """Move the tumour centre onto a random deep white-matter voxel (MNI anatomy)."""
    sp = np.asarray(spacing)
    radius = max(float(rng.uniform(15.0, 28.0)) * s_mni, 3.0 * float(sp.min()))
    cand = np.argwhere((tissues == 3) & (depth > 1.5 * radius))
    if cand.size == 0:
        cand = np.argwhere(tissues == 3)
    if cand.size == 0:
        cand = np.argwhere(depth > 0)
    vox = cand[int(rng.integers(len(cand)))]
    centre = ((vox - (np.asarray(tissues.shape) - 1) / 2.0) * sp).astype(np.float32)
    k = radius / tumour.radius
    lobes = [(off * k, radii * k, rot) for off, radii, rot in tumour.lobes]
    return replace(tumour, centre=centre, radius=radius, lobes=lobes)


def _render(
    shape,
    spacing,
    style: PhantomStyle,
    tissues,
    labels,
    ed_frac,
    brain,
    rng_img,
    rng_noise,
    net_mix: float = 0.0,
):
    """Images (4, Z, Y, X) float32 and bias fields from tissue and tumour maps.

    ``net_mix`` > 0 renders label 1 as non-enhancing tumour: a mix of the NCR and ED
    intensities.
    """
    sp = np.asarray(spacing, float)
    # work only in the brain's bounding box plus a blur margin
    idx = np.argwhere(brain)
    if idx.size == 0:
        raise InputError("The phantom brain is empty; use a larger grid.")
    sig_mm = np.array(
        [math.hypot(style.blur_mm, style.slice_blur_mm), style.blur_mm, style.blur_mm]
    )
    margin = np.ceil(4 * sig_mm / sp).astype(int) + 2
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + 1 + margin, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    bshape = tuple(int(b - a) for a, b in zip(lo, hi))
    tis, lab, edf, br = tissues[box], labels[box], ed_frac[box], brain[box]

    tex = _smooth_field(rng_img, bshape, spacing, 8.0)
    tex_t = _smooth_field(rng_img, bshape, spacing, 5.0)
    bias_raw = [_smooth_field(rng_img, bshape, spacing, style.bias_wavelength_mm) for _ in range(2)]
    # choroid plexus-like enhancement: sparse bright specks inside ventricular CSF on T1Gd
    vessel = (_smooth_field(rng_img, bshape, spacing, 3.0) > 2.3) & (tis == 1)

    images = np.zeros((4,) + tuple(shape), np.float32)
    bias_box = np.ones((4,) + bshape, np.float32)
    sigma_vox = sig_mm / sp
    lab_flat = lab.ravel()
    ed_idx = np.flatnonzero(lab_flat == 2)
    core_idx = {v: np.flatnonzero(lab_flat == v) for v in (1, 3)}
    ed_w = (1.0 - 0.45 * edf.ravel()[ed_idx]) * (
        1.0 + style.tumour_texture * 0.5 * tex_t.ravel()[ed_idx]
    )
    core_tex = {v: 1.0 + style.tumour_texture * tex_t.ravel()[i] for v, i in core_idx.items()}
    vessel_idx = np.flatnonzero(vessel)
    del tex_t, vessel
    # optional appearance variety (drawn only when used: default styles are unchanged)
    cortex_w = net_w = enh_w = None
    if style.cortex_flair > 0:
        f = _smooth_field(rng_img, bshape, spacing, 25.0).ravel()
        cortex_w = np.clip(0.5 + 0.5 * f, 0, 1)[np.flatnonzero(tis.ravel() == 2)]
    if style.net_fraction > 0 and core_idx[1].size:
        f = _smooth_field(rng_img, bshape, spacing, 6.0).ravel()[core_idx[1]]
        thr = np.quantile(f, 1.0 - style.net_fraction)
        net_w = np.clip((f - thr) / 0.5 + 0.5, 0, 1).astype(np.float32)
    if style.enhancement_heterogeneity > 0 and core_idx[3].size:
        f = _smooth_field(rng_img, bshape, spacing, 6.0).ravel()[core_idx[3]]
        enh_w = np.clip(0.5 + 0.5 * f, 0, 1).astype(np.float32)
    gm_idx = np.flatnonzero(tis.ravel() == 2) if cortex_w is not None else None
    for ch, mod in enumerate(PHANTOM_MODALITIES):
        lut = style.lut(mod)
        table = np.zeros(5, np.float32)
        table[1], table[2], table[3] = lut["CSF"], lut["GM"], lut["WM"]
        table[4] = 0.6 * lut["GM"] + 0.4 * lut["WM"]
        img = table[tis]
        img *= 1.0 + style.texture * tex
        flat = img.reshape(-1)
        if mod == "flair" and cortex_w is not None:
            flat[gm_idx] *= 1.0 + style.cortex_flair * cortex_w
        # tumour: oedema blends into the tissue towards its edge, core classes heterogeneous
        flat[ed_idx] += (lut["ED"] - flat[ed_idx]) * ed_w
        ncr_level: float | np.ndarray
        if net_w is None:
            ncr_level = (1.0 - net_mix) * lut["NCR"] + net_mix * lut["ED"]
        else:  # non-enhancing patches inside the core
            mix = np.maximum(net_mix, 0.6 * net_w)
            ncr_level = (1.0 - mix) * lut["NCR"] + mix * lut["ED"]
        flat[core_idx[1]] = ncr_level * core_tex[1]
        et_level: float | np.ndarray = lut["ET"]
        if mod == "t1ce" and enh_w is not None:
            et_level = lut["WM"] + (lut["ET"] - lut["WM"]) * (
                1.0 - style.enhancement_heterogeneity * enh_w
            )
        flat[core_idx[3]] = et_level * core_tex[3]
        if mod == "t1ce":
            flat[vessel_idx] = 1.3 * lut["WM"]
        img[~br] = 0.0
        # partial volume: blur the continuous object before sampling
        if np.any(sigma_vox > 0):
            img = ndi.gaussian_filter(img, sigma_vox, mode="constant", truncate=3.0)
        # smooth multiplicative bias, different (but correlated) per sequence
        mix = 0.7 * bias_raw[0] + 0.71 * (0.4 + 0.3 * ch / 3) * bias_raw[1] * (1 if ch % 2 else -1)
        mix /= max(float(mix.std()), 1e-6)
        bias = np.exp(style.bias * mix).astype(np.float32)
        img *= bias
        # Rician noise: magnitude of a complex signal with Gaussian noise on both channels
        sigma = np.float32(style.noise * lut["WM"])
        if sigma > 0:
            re = img + sigma * rng_noise.standard_normal(bshape, dtype=np.float32)
            im = sigma * rng_noise.standard_normal(bshape, dtype=np.float32)
            img = np.sqrt(re * re + im * im)
        img[~br] = 0.0
        images[(ch,) + box] = img
        bias_box[ch] = bias
    return images, bias_box, box
