"""Per-superpixel features of Thompson et al. (2022), built from additive statistics.

For every channel a superpixel (or any union of superpixels) is described by 36 values
**[paper]**: mean, variance, skewness, a 10-bin intensity histogram, GLCM contrast, energy
and entropy, a 10-bin histogram of gradient orientation and a 10-bin histogram of gradient
magnitude. The 3D definitions are the project's own **[ours]**:

* intensities are normalised per channel to ``(x - p1) / (p99 - p1)`` with the percentiles
  taken over the brain; the intensity histogram covers ``[p1, p99]`` (values outside go to
  the first / last bin);
* gradients are ``np.gradient`` of the normalised channel scaled by the voxel spacing; the
  orientation is the in-plane angle ``atan2(g_y, g_x)`` in ``[-pi, pi]``, its histogram is
  weighted by the gradient magnitude; the magnitude histogram covers ``[0, p99]`` of the
  magnitude in the brain;
* the GLCM is 3D with 16 grey levels over ``[p1, p99]``, distance 1, the 13 unique 3D
  directions, symmetric. The co-occurrence pairs of a region are the pairs whose **first**
  voxel (the voxel ``v`` of the pair ``(v, v + d)``) lies in the region and whose partner lies
  in the superpixel domain. With that definition the GLCM of a union of superpixels is
  exactly the sum of their GLCMs;
* histograms are L1-normalised; energy is ``sqrt(sum P**2)`` (scikit-image's definition),
  entropy ``-sum P log2 P``.

Everything is stored as sums (voxel count, sum x, sum x**2, sum x**3, bin counts, ordered
co-occurrence counts), one row per superpixel in :class:`SuperpixelStats`. The statistics of
a merged region are the sum of the rows, so merging is O(1) in the number of voxels, and
:func:`features_from_sums` turns any stack of sum rows into feature vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_ssseg.errors import GeometryError, InputError

__all__ = [
    "FEATURES_VERSION",
    "N_BINS",
    "N_GREY",
    "FEATURES_PER_CHANNEL",
    "GLCM_OFFSETS",
    "PreparedChannels",
    "SuperpixelStats",
    "prepare_channels",
    "compute_stats",
    "features_from_sums",
    "region_sums_from_voxels",
    "feature_names",
    "feature_blocks",
]

#: Bumped whenever the statistics may change for the same input (cache signature).
FEATURES_VERSION = "2"
#: Bins of the intensity, orientation and magnitude histograms.
N_BINS = 10
#: Grey levels of the GLCM.
N_GREY = 16
#: Feature values per channel: 3 moments + 10 + 3 GLCM + 10 + 10.
FEATURES_PER_CHANNEL = 36
#: The 13 unique 3D neighbour offsets (dz, dy, dx) at distance 1 (26-neighbourhood / 2).
GLCM_OFFSETS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 1),
    (0, 1, -1),
    (0, 1, 0),
    (0, 1, 1),
    (1, -1, -1),
    (1, -1, 0),
    (1, -1, 1),
    (1, 0, -1),
    (1, 0, 0),
    (1, 0, 1),
    (1, 1, -1),
    (1, 1, 0),
    (1, 1, 1),
)

# Column layout of one channel's block in the sum rows.
_MOM = 3  # sum x, sum x^2, sum x^3
_IH = slice(_MOM, _MOM + N_BINS)
_OH = slice(_MOM + N_BINS, _MOM + 2 * N_BINS)
_MH = slice(_MOM + 2 * N_BINS, _MOM + 3 * N_BINS)
_GL = slice(_MOM + 3 * N_BINS, _MOM + 3 * N_BINS + N_GREY * N_GREY)
_PER_CHANNEL = _MOM + 3 * N_BINS + N_GREY * N_GREY  # 289


def _sum_columns(n_channels: int) -> int:
    return 1 + n_channels * _PER_CHANNEL


def feature_names(n_channels: int = 1, channel_names: Sequence[str] | None = None) -> list[str]:
    """Names of the ``36 * n_channels`` feature columns, in order."""
    names = (
        list(channel_names) if channel_names is not None else [f"c{i}" for i in range(n_channels)]
    )
    out: list[str] = []
    for ch in names:
        out += [f"{ch}.mean", f"{ch}.variance", f"{ch}.skewness"]
        out += [f"{ch}.hist{i}" for i in range(N_BINS)]
        out += [f"{ch}.glcm_contrast", f"{ch}.glcm_energy", f"{ch}.glcm_entropy"]
        out += [f"{ch}.orient{i}" for i in range(N_BINS)]
        out += [f"{ch}.gradmag{i}" for i in range(N_BINS)]
    return out


def feature_blocks(n_channels: int = 1) -> np.ndarray:
    """Block id of every feature column (one block per feature kind and channel).

    Blocks: mean, variance, skewness, intensity histogram (10), contrast, energy, entropy,
    orientation histogram (10), magnitude histogram (10) — 9 blocks per channel.

    Returns
    -------
    (36 * n_channels,) ndarray of int
    """
    sizes = [1, 1, 1, N_BINS, 1, 1, 1, N_BINS, N_BINS]
    out = []
    for c in range(n_channels):
        for b, size in enumerate(sizes):
            out += [c * len(sizes) + b] * size
    return np.asarray(out, dtype=np.int64)


@dataclass
class PreparedChannels:
    """Per-voxel quantities of the channels, on the crop of the superpixel domain.

    Attributes
    ----------
    labels : (z, y, x) ndarray of int32
        Superpixel labels inside the crop (0 = outside the domain).
    domain : (z, y, x) ndarray of bool
        ``labels > 0``.
    x : (C, z, y, x) ndarray of float32
        Normalised intensities ``(v - p1) / (p99 - p1)``.
    ibin, obin, mbin, grey : (C, z, y, x) ndarray of uint8
        Intensity-, orientation-, magnitude-histogram bin and GLCM grey level.
    mag : (C, z, y, x) ndarray of float32
        Gradient magnitude (normalised intensity per mm): the orientation histogram weight.
    edge : (z, y, x) ndarray of float32
        Border map ``g``: gradient magnitude / p99 (brain) clipped to [0, 1], averaged over
        channels. Used by :mod:`napari_ssseg.core.adjacency`.
    crop : tuple of slice
        Where the crop sits in the full volume.
    n_labels : int
        Largest superpixel label ``N``.
    """

    labels: np.ndarray
    domain: np.ndarray
    x: np.ndarray
    ibin: np.ndarray
    obin: np.ndarray
    mbin: np.ndarray
    grey: np.ndarray
    mag: np.ndarray
    edge: np.ndarray
    crop: tuple[slice, slice, slice]
    n_labels: int

    @property
    def n_channels(self) -> int:
        return int(self.x.shape[0])


def _bbox(mask: np.ndarray, pad: int = 1) -> tuple[slice, slice, slice]:
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    return tuple(
        slice(max(int(i[0]) - pad, 0), min(int(i[-1]) + 1 + pad, s))
        for i, s in zip(idx, mask.shape)
    )  # type: ignore[return-value]


def _check_inputs(images: np.ndarray, superpixels: np.ndarray, brain: np.ndarray | None):
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise InputError(
            f"images must be a (C, Z, Y, X) or (Z, Y, X) array; got shape {images.shape}."
        )
    superpixels = np.asarray(superpixels)
    if superpixels.shape != images.shape[1:]:
        raise GeometryError(
            f"superpixels have shape {superpixels.shape} but the images have shape "
            f"{images.shape[1:]}; compute the superpixels on the same grid as the images."
        )
    if not np.issubdtype(superpixels.dtype, np.integer):
        raise InputError(
            f"superpixels must be an integer label image; got dtype {superpixels.dtype}."
        )
    if superpixels.size and superpixels.min() < 0:
        raise InputError("superpixels must be labels >= 0 (0 = outside the brain mask).")
    if brain is not None:
        brain = np.asarray(brain, dtype=bool)
        if brain.shape != superpixels.shape:
            raise GeometryError(
                f"brain mask has shape {brain.shape} but the images have shape {superpixels.shape}."
            )
    if not np.any(superpixels > 0):
        raise InputError(
            "superpixels contain no label > 0: nothing to describe. Check the brain mask "
            "used to compute them."
        )
    return images, superpixels, brain


def prepare_channels(
    images: np.ndarray,
    superpixels: np.ndarray,
    brain: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> PreparedChannels:
    """Normalise, quantise and differentiate the channels used for the features.

    Parameters
    ----------
    images : (C, Z, Y, X) or (Z, Y, X) ndarray
        The channels (e.g. FLAIR for WT; T2 and T1Gd for TC).
    superpixels : (Z, Y, X) ndarray of int
        Superpixel labels ``1..N``, 0 outside the domain.
    brain : (Z, Y, X) ndarray of bool, optional
        Brain mask for the percentiles. Default: ``superpixels > 0``.
    spacing : 3 floats
        Voxel spacing in mm, ``(z, y, x)``.

    Returns
    -------
    PreparedChannels
    """
    images, superpixels, brain = _check_inputs(images, superpixels, brain)
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"spacing must be 3 positive numbers (z, y, x) in mm; got {spacing}.")
    domain_full = superpixels > 0
    crop = _bbox(domain_full)
    labels = np.ascontiguousarray(superpixels[crop], dtype=np.int32)
    domain = labels > 0
    ref = brain[crop] if brain is not None else domain
    if not ref.any():
        ref = domain
    n_ch = images.shape[0]
    shape = (n_ch,) + labels.shape
    x = np.empty(shape, np.float32)
    ibin = np.empty(shape, np.uint8)
    obin = np.empty(shape, np.uint8)
    mbin = np.empty(shape, np.uint8)
    grey = np.empty(shape, np.uint8)
    mag = np.empty(shape, np.float32)
    edge = np.zeros(labels.shape, np.float32)
    for c in range(n_ch):
        img = np.asarray(images[c][crop], dtype=np.float32)
        if not np.all(np.isfinite(img[domain])):
            raise InputError(f"channel {c} contains NaN or infinite values inside the brain.")
        p1, p99 = np.percentile(img[ref], [1, 99])
        rng = float(p99 - p1) if p99 > p1 else 1.0
        xn = (img - np.float32(p1)) / np.float32(rng)
        x[c] = xn
        ibin[c] = np.clip(np.floor(xn * N_BINS), 0, N_BINS - 1)
        grey[c] = np.clip(np.floor(xn * N_GREY), 0, N_GREY - 1)
        gz, gy, gx = np.gradient(xn, *spacing)
        m = np.sqrt(gz * gz + gy * gy + gx * gx)
        del gz
        gp99 = float(np.percentile(m[ref], 99))
        gp99 = gp99 if gp99 > 0 else 1.0
        mag[c] = m
        mbin[c] = np.clip(np.floor(m * (N_BINS / gp99)), 0, N_BINS - 1)
        ang = np.arctan2(gy, gx)
        obin[c] = np.clip(np.floor((ang + np.pi) * (N_BINS / (2 * np.pi))), 0, N_BINS - 1)
        edge += np.clip(m / gp99, 0.0, 1.0)
    edge /= n_ch
    return PreparedChannels(
        labels=labels,
        domain=domain,
        x=x,
        ibin=ibin,
        obin=obin,
        mbin=mbin,
        grey=grey,
        mag=mag,
        edge=edge,
        crop=crop,
        n_labels=int(labels.max()),
    )


def _pair_slices(shape: tuple[int, ...], off: tuple[int, int, int]):
    """Slices selecting anchors ``v`` and partners ``v + off`` inside ``shape``."""
    sa, sb = [], []
    for o, n in zip(off, shape):
        if o >= 0:
            sa.append(slice(0, n - o))
            sb.append(slice(o, n))
        else:
            sa.append(slice(-o, n))
            sb.append(slice(0, n + o))
    return tuple(sa), tuple(sb)


@dataclass
class SuperpixelStats:
    """Additive statistics of every superpixel (row ``s`` = superpixel ``s``; row 0 unused).

    Attributes
    ----------
    sums : (N + 1, 1 + 289 * C) ndarray of float64
        Column 0: voxel count. Per channel: sum x, sum x**2, sum x**3, intensity-bin counts
        (10), magnitude-weighted orientation-bin sums (10), magnitude-bin counts (10), ordered
        GLCM counts (16 * 16, anchored pairs).
    n_channels : int
    """

    sums: np.ndarray
    n_channels: int

    @property
    def n_labels(self) -> int:
        """Largest superpixel label ``N``."""
        return int(self.sums.shape[0] - 1)

    @property
    def counts(self) -> np.ndarray:
        """``(N + 1,)`` voxel count per superpixel."""
        return self.sums[:, 0]

    @staticmethod
    def merge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Statistics of the union of two disjoint regions: ``a + b`` (O(1))."""
        return np.add(a, b)

    def region(self, members: np.ndarray) -> np.ndarray:
        """Summed statistics ``(K,)`` of the superpixels ``members`` (labels or bool mask)."""
        return self.sums[np.asarray(members)].sum(axis=0)

    def features(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Feature vectors ``(M, 36 * C)`` of the given rows (default: all, row 0 included)."""
        s = self.sums if rows is None else self.sums[np.asarray(rows)]
        return features_from_sums(s, self.n_channels)


def compute_stats(prepared: PreparedChannels) -> SuperpixelStats:
    """Additive statistics of every superpixel, vectorised with ``np.bincount``.

    Parameters
    ----------
    prepared : PreparedChannels
        From :func:`prepare_channels`.

    Returns
    -------
    SuperpixelStats
    """
    lab = prepared.labels
    dom = prepared.domain
    n1 = prepared.n_labels + 1
    C = prepared.n_channels
    sums = np.zeros((n1, _sum_columns(C)), np.float64)
    lv = lab[dom].astype(np.int64)
    sums[:, 0] = np.bincount(lv, minlength=n1)
    offsets = [_pair_slices(lab.shape, off) for off in GLCM_OFFSETS]
    for c in range(C):
        base = 1 + c * _PER_CHANNEL
        xv = prepared.x[c][dom].astype(np.float64)
        sums[:, base] = np.bincount(lv, weights=xv, minlength=n1)
        sums[:, base + 1] = np.bincount(lv, weights=xv * xv, minlength=n1)
        sums[:, base + 2] = np.bincount(lv, weights=xv * xv * xv, minlength=n1)
        del xv
        for sl, arr, w in (
            (_IH, prepared.ibin[c], None),
            (_OH, prepared.obin[c], prepared.mag[c]),
            (_MH, prepared.mbin[c], None),
        ):
            code = lv * N_BINS + arr[dom]
            wv = None if w is None else w[dom].astype(np.float64)
            counts = np.bincount(code, weights=wv, minlength=n1 * N_BINS)
            sums[:, base + sl.start : base + sl.stop] = counts.reshape(n1, N_BINS)
        # GLCM: anchored ordered pairs (v, v + d), both in the domain.
        a_code = (
            lab.astype(np.int64) * (N_GREY * N_GREY) + prepared.grey[c].astype(np.int64) * N_GREY
        )
        g = prepared.grey[c]
        glcm = np.zeros(n1 * N_GREY * N_GREY, np.float64)
        for sa, sb in offsets:
            valid = dom[sa] & dom[sb]
            code = a_code[sa][valid] + g[sb][valid]
            glcm += np.bincount(code, minlength=glcm.size)
        sums[:, base + _GL.start : base + _GL.stop] = glcm.reshape(n1, -1)
    return SuperpixelStats(sums=sums, n_channels=C)


def region_sums_from_voxels(prepared: PreparedChannels, mask: np.ndarray) -> np.ndarray:
    """Statistics ``(K,)`` of an arbitrary voxel region, computed directly from its voxels.

    Independent of :func:`compute_stats` (plain masked sums, no per-label bincount); used by
    the literal refinement (the test oracle) and to test that merging is exact.

    Parameters
    ----------
    prepared : PreparedChannels
    mask : (z, y, x) ndarray of bool
        Region on the crop grid; voxels outside the domain are ignored.
    """
    mask = np.asarray(mask, bool) & prepared.domain
    C = prepared.n_channels
    out = np.zeros(_sum_columns(C), np.float64)
    out[0] = float(mask.sum())
    for c in range(C):
        base = 1 + c * _PER_CHANNEL
        xv = prepared.x[c][mask].astype(np.float64)
        out[base] = xv.sum()
        out[base + 1] = (xv**2).sum()
        out[base + 2] = (xv**3).sum()
        for sl, arr, w in (
            (_IH, prepared.ibin[c], None),
            (_OH, prepared.obin[c], prepared.mag[c]),
            (_MH, prepared.mbin[c], None),
        ):
            wv = None if w is None else w[mask].astype(np.float64)
            out[base + sl.start : base + sl.stop] = np.bincount(
                arr[mask], weights=wv, minlength=N_BINS
            )[:N_BINS]
        g = prepared.grey[c]
        glcm = np.zeros((N_GREY, N_GREY), np.float64)
        for off in GLCM_OFFSETS:
            sa, sb = _pair_slices(mask.shape, off)
            valid = mask[sa] & prepared.domain[sb]
            np.add.at(glcm, (g[sa][valid], g[sb][valid]), 1.0)
        out[base + _GL.start : base + _GL.stop] = glcm.ravel()
    return out


def features_from_sums(sums: np.ndarray, n_channels: int) -> np.ndarray:
    """Turn summed statistics into the 36-per-channel feature vectors.

    Parameters
    ----------
    sums : (M, 1 + 289 * C) or (1 + 289 * C,) ndarray of float64
        Rows of :attr:`SuperpixelStats.sums`, or sums of rows (merged regions).
    n_channels : int

    Returns
    -------
    (M, 36 * C) or (36 * C,) ndarray of float64
        Rows with zero voxels give all-zero features.
    """
    s = np.asarray(sums, np.float64)
    single = s.ndim == 1
    if single:
        s = s[None]
    if s.shape[1] != _sum_columns(n_channels):
        raise InputError(
            f"sums have {s.shape[1]} columns; expected {_sum_columns(n_channels)} for "
            f"{n_channels} channel(s)."
        )
    M = s.shape[0]
    n = s[:, 0]
    safe_n = np.where(n > 0, n, 1.0)
    out = np.zeros((M, FEATURES_PER_CHANNEL * n_channels), np.float64)
    ii, jj = np.meshgrid(np.arange(N_GREY), np.arange(N_GREY), indexing="ij")
    dif2 = ((ii - jj) ** 2).ravel().astype(np.float64)
    for c in range(n_channels):
        b = 1 + c * _PER_CHANNEL
        o = c * FEATURES_PER_CHANNEL
        m1 = s[:, b] / safe_n
        m2 = s[:, b + 1] / safe_n
        m3 = s[:, b + 2] / safe_n
        var = np.maximum(m2 - m1 * m1, 0.0)
        third = m3 - 3 * m1 * m2 + 2 * m1**3
        with np.errstate(divide="ignore", invalid="ignore"):
            skew = np.where(var > 1e-12, third / np.power(np.maximum(var, 1e-12), 1.5), 0.0)
        out[:, o] = m1
        out[:, o + 1] = var
        out[:, o + 2] = skew
        out[:, o + 3 : o + 13] = s[:, b + _IH.start : b + _IH.stop] / safe_n[:, None]
        ori = s[:, b + _OH.start : b + _OH.stop]
        ori_tot = ori.sum(axis=1, keepdims=True)
        out[:, o + 16 : o + 26] = ori / np.where(ori_tot > 0, ori_tot, 1.0)
        out[:, o + 26 : o + 36] = s[:, b + _MH.start : b + _MH.stop] / safe_n[:, None]
        g = s[:, b + _GL.start : b + _GL.stop].reshape(M, N_GREY, N_GREY)
        g = g + g.transpose(0, 2, 1)  # symmetric
        g = g.reshape(M, -1)
        tot = g.sum(axis=1, keepdims=True)
        p = g / np.where(tot > 0, tot, 1.0)
        out[:, o + 13] = p @ dif2
        out[:, o + 14] = np.sqrt((p * p).sum(axis=1))
        with np.errstate(divide="ignore", invalid="ignore"):
            plogp = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
        out[:, o + 15] = -plogp.sum(axis=1)
        out[n <= 0, o : o + FEATURES_PER_CHANNEL] = 0.0
    return out[0] if single else out
