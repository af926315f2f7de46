"""Superpixel adjacency graph and shared-boundary statistics, with numpy only.

Two superpixels are adjacent when they share at least one voxel face (6-connectivity). For
every adjacent pair we keep the number of shared faces and the sum of the border map ``g``
over them, where a face's value is the mean of ``g`` at its two voxels and ``g`` is the
gradient magnitude divided by its 99th percentile in the brain, clipped to [0, 1]
(:attr:`napari_ssseg.core.features.PreparedChannels.edge`). The mean border strength of a
pair is ``face_gsum / face_count``; both are sums, so the border statistics of a merged
region against a neighbour are sums too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_ssseg.errors import GeometryError, InputError

__all__ = [
    "Adjacency",
    "adjacency_from_pairs",
    "build_adjacency",
    "boundary_faces",
    "boundary_mask",
]


@dataclass
class Adjacency:
    """Undirected superpixel graph with per-edge boundary statistics.

    Attributes
    ----------
    n_labels : int
        Largest label ``N`` (labels are ``1..N``).
    pairs : (E, 2) ndarray of int64
        Adjacent label pairs ``(a, b)`` with ``a < b``, sorted.
    face_count : (E,) ndarray of float64
        Shared faces per pair.
    face_gsum : (E,) ndarray of float64
        Sum of the face border values per pair.
    indptr, nbr, edge : ndarray of int64
        CSR view of both directions: neighbours of ``s`` are
        ``nbr[indptr[s]:indptr[s + 1]]`` (ascending), with edge ids ``edge[...]``.
    """

    n_labels: int
    pairs: np.ndarray
    face_count: np.ndarray
    face_gsum: np.ndarray
    indptr: np.ndarray
    nbr: np.ndarray
    edge: np.ndarray

    @property
    def n_edges(self) -> int:
        return int(self.pairs.shape[0])

    @property
    def mean_border(self) -> np.ndarray:
        """``(E,)`` mean border value ``b`` on the shared faces of each pair."""
        return self.face_gsum / np.maximum(self.face_count, 1.0)

    def neighbours(self, label: int) -> np.ndarray:
        """Labels adjacent to ``label`` (ascending)."""
        return self.nbr[self.indptr[label] : self.indptr[label + 1]]

    def edges_of(self, label: int) -> np.ndarray:
        """Edge ids of ``label``'s neighbours, aligned with :meth:`neighbours`."""
        return self.edge[self.indptr[label] : self.indptr[label + 1]]

    def region_neighbours(self, members: np.ndarray) -> np.ndarray:
        """Labels adjacent to the set ``members`` (bool of length N + 1) but not in it."""
        m = np.asarray(members, bool)
        a, b = self.pairs[:, 0], self.pairs[:, 1]
        out = np.zeros_like(m)
        out[b[m[a]]] = True
        out[a[m[b]]] = True
        out &= ~m
        out[0] = False
        return np.flatnonzero(out)


def boundary_faces(labels: np.ndarray, edge: np.ndarray | None = None):
    """All faces between two different labels > 0.

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of int
    edge : (Z, Y, X) ndarray of float, optional
        Border map; a face's value is the mean of its two voxels.

    Returns
    -------
    lo, hi : (F,) ndarray of int64
        The two labels of each face, ``lo < hi``.
    value : (F,) ndarray of float64
        Face border values (zeros without ``edge``).
    """
    los, his, vals = [], [], []
    for ax in range(labels.ndim):
        n = labels.shape[ax]
        if n < 2:
            continue
        sl_a = [slice(None)] * labels.ndim
        sl_b = [slice(None)] * labels.ndim
        sl_a[ax] = slice(0, n - 1)
        sl_b[ax] = slice(1, n)
        la = labels[tuple(sl_a)]
        lb = labels[tuple(sl_b)]
        m = (la != lb) & (la > 0) & (lb > 0)
        x = la[m].astype(np.int64)
        y = lb[m].astype(np.int64)
        los.append(np.minimum(x, y))
        his.append(np.maximum(x, y))
        if edge is not None:
            vals.append(0.5 * (edge[tuple(sl_a)][m].astype(np.float64) + edge[tuple(sl_b)][m]))
        else:
            vals.append(np.zeros(x.size))
    if not los:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0)
    return np.concatenate(los), np.concatenate(his), np.concatenate(vals)


def build_adjacency(labels: np.ndarray, edge: np.ndarray | None = None) -> Adjacency:
    """Build the superpixel graph of ``labels``.

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of int
        Superpixels ``1..N``, 0 outside the domain.
    edge : (Z, Y, X) ndarray of float, optional
        Border map ``g`` in [0, 1] on the same grid.

    Returns
    -------
    Adjacency
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(
            f"superpixels must be a 3D integer label image; got shape {labels.shape}, "
            f"dtype {labels.dtype}."
        )
    if edge is not None and np.shape(edge) != labels.shape:
        raise GeometryError(
            f"border map has shape {np.shape(edge)}, superpixels have shape {labels.shape}."
        )
    n = int(labels.max()) if labels.size else 0
    lo, hi, val = boundary_faces(labels, edge)
    key = lo * (n + 1) + hi
    uniq, inv = np.unique(key, return_inverse=True)
    count = np.bincount(inv, minlength=uniq.size).astype(np.float64)
    gsum = np.bincount(inv, weights=val, minlength=uniq.size)
    pairs = np.stack([uniq // (n + 1), uniq % (n + 1)], axis=1).astype(np.int64)
    return adjacency_from_pairs(n, pairs, count, gsum)


def adjacency_from_pairs(
    n_labels: int, pairs: np.ndarray, face_count: np.ndarray, face_gsum: np.ndarray
) -> Adjacency:
    """Build an :class:`Adjacency` from sorted ``(a < b)`` pairs and their face statistics.

    Used by :func:`build_adjacency` and to restore a cached graph.
    """
    n = int(n_labels)
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    count = np.asarray(face_count, np.float64)
    gsum = np.asarray(face_gsum, np.float64)
    e = np.arange(pairs.shape[0], dtype=np.int64)
    src = np.concatenate([pairs[:, 0], pairs[:, 1]])
    dst = np.concatenate([pairs[:, 1], pairs[:, 0]])
    eid = np.concatenate([e, e])
    order = np.lexsort((dst, src))
    src, dst, eid = src[order], dst[order], eid[order]
    indptr = np.zeros(n + 2, np.int64)
    np.cumsum(np.bincount(src, minlength=n + 1), out=indptr[1:])
    return Adjacency(
        n_labels=n,
        pairs=pairs,
        face_count=count,
        face_gsum=gsum,
        indptr=indptr,
        nbr=dst,
        edge=eid,
    )


def boundary_mask(labels: np.ndarray) -> np.ndarray:
    """Voxels of a label > 0 that touch a different label along one of the 6 face directions.

    For a superpixel-boundary display layer (e.g. in napari).

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of int

    Returns
    -------
    (Z, Y, X) ndarray of bool
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"labels must be a 3D array; got shape {labels.shape}.")
    out = np.zeros(labels.shape, bool)
    for ax in range(3):
        n = labels.shape[ax]
        if n < 2:
            continue
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[ax] = slice(0, n - 1)
        b[ax] = slice(1, n)
        diff = labels[tuple(a)] != labels[tuple(b)]
        out[tuple(a)] |= diff
        out[tuple(b)] |= diff
    out &= labels > 0
    return out
