"""Two-level cache (in-memory LRU + on-disk ``.npz``) for expensive per-case arrays.

Superpixels (and the per-superpixel features built on them) are the expensive, reusable
part of refinement. :class:`Cache` keeps recent results in memory and writes each result to
``<folder>/<namespace>/<signature>.npz``. The **signature** is the SHA-1 of a canonical
encoding of the key parts: every array is replaced by the SHA-1 of its bytes together with
its shape and dtype, everything else (channel names, parameters, algorithm version) is
encoded as sorted JSON. Each file stores its own signature and key description, so a file
that does not match what it is asked for (renamed, copied from another case, written by an
older version of the format, truncated) is refused with a :class:`~napari_ssseg.errors.CacheError`
that says how to recover, never silently used.

The default folder is ``$NAPARI_SSSEG_CACHE`` or ``~/.cache/napari-ssseg``. Disk writes are
atomic (temporary file in the same folder + ``os.replace``). If the folder cannot be written
the cache warns once and keeps working in memory only.

Arrays returned by the cache are read-only views shared with the cache; copy them before
modifying.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssseg.errors import CacheError, InputError

__all__ = [
    "CACHE_FORMAT",
    "Cache",
    "array_digest",
    "default_cache",
    "default_cache_dir",
    "key_signature",
    "load_npz",
    "save_npz",
]

#: Version of the on-disk layout; part of every signature.
CACHE_FORMAT = "1"
_META_SIG = "__signature__"
_META_KEY = "__key__"


def default_cache_dir() -> Path:
    """``$NAPARI_SSSEG_CACHE`` if set, else ``~/.cache/napari-ssseg``."""
    env = os.environ.get("NAPARI_SSSEG_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "napari-ssseg"


def array_digest(array: np.ndarray) -> str:
    """SHA-1 of an array's shape, dtype and C-order bytes (hex)."""
    a = np.ascontiguousarray(array)
    h = hashlib.sha1()
    h.update(repr((a.shape, a.dtype.str)).encode())
    h.update(a.data.cast("B") if a.size else b"")
    return h.hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {
            "__array__": array_digest(value),
            "shape": list(value.shape),
            "dtype": value.dtype.str,
        }
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and abs(int(value)) > 2**53:
        return str(int(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(float(value))  # exact, and 1 == 1.0 == np.int64(1)
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise InputError(
        f"cache key part {value!r} of type {type(value).__name__} cannot be hashed; use "
        "arrays, numbers, strings, lists or dicts."
    )


def key_signature(key_parts: Mapping[str, Any]) -> tuple[str, str]:
    """Return ``(signature, description)`` of the key parts.

    ``description`` is the canonical JSON (arrays replaced by digests); ``signature`` its SHA-1
    together with :data:`CACHE_FORMAT`.
    """
    desc = json.dumps(
        {"format": CACHE_FORMAT, "key": _canonical(dict(key_parts))},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha1(desc.encode()).hexdigest(), desc


class Cache:
    """In-memory LRU + on-disk cache of ``dict[str, ndarray]`` results.

    Parameters
    ----------
    folder : path-like, optional
        Root folder of the disk cache (default :func:`default_cache_dir`).
    namespace : str
        Sub-folder, e.g. ``"superpixels"`` or ``"features"``.
    max_items : int
        Results kept in memory (least recently used evicted first); 0 disables memory.
    use_disk : bool
        Read and write ``.npz`` files.
    compress : bool
        Write compressed ``.npz`` (label maps shrink ~50x).

    Examples
    --------
    >>> import numpy as np
    >>> cache = Cache(namespace="demo", use_disk=False)
    >>> out = cache.get_or_compute({"x": 1}, lambda: {"y": np.arange(3)})
    >>> cache.stats["misses"], cache.get_or_compute({"x": 1}, lambda: {})["y"].tolist()
    (1, [0, 1, 2])
    """

    def __init__(
        self,
        folder: str | os.PathLike | None = None,
        *,
        namespace: str = "superpixels",
        max_items: int = 8,
        use_disk: bool = True,
        compress: bool = True,
    ) -> None:
        if not namespace or any(c in namespace for c in "/\\") or namespace.startswith("."):
            raise InputError(f"cache namespace {namespace!r} must be a plain folder name.")
        if max_items < 0:
            raise InputError(f"max_items={max_items} must be >= 0.")
        self.folder = Path(folder).expanduser() if folder is not None else default_cache_dir()
        self.namespace = namespace
        self.max_items = int(max_items)
        self.use_disk = bool(use_disk)
        self.compress = bool(compress)
        self._mem: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        self._lock = threading.RLock()
        self._warned = False
        self.stats = {"hits": 0, "disk_hits": 0, "misses": 0}

    # ------------------------------------------------------------------ paths / keys
    @property
    def directory(self) -> Path:
        """Folder holding this namespace's files."""
        return self.folder / self.namespace

    def path_for(self, key_parts: Mapping[str, Any]) -> Path:
        """Path of the ``.npz`` file for ``key_parts``."""
        return self.directory / f"{key_signature(key_parts)[0]}.npz"

    # ------------------------------------------------------------------ public API
    def get_or_compute(
        self,
        key_parts: Mapping[str, Any],
        compute: Callable[[], Mapping[str, np.ndarray]],
        *,
        use_cache: bool = True,
    ) -> dict[str, np.ndarray]:
        """Return the cached result for ``key_parts``, computing and storing it if absent.

        Parameters
        ----------
        key_parts : dict
            Everything the result depends on: input arrays (hashed), channel names,
            parameters, algorithm version.
        compute : callable
            ``compute() -> dict[str, ndarray]``, called on a miss. If it raises (e.g.
            ``Cancelled``), nothing is stored.
        use_cache : bool
            ``False`` bypasses the cache entirely (always computes, reads and writes nothing).

        Returns
        -------
        dict of str to ndarray
            Read-only arrays.

        Raises
        ------
        CacheError
            The disk file for this key exists but does not match it or cannot be read.
        """
        if not use_cache:
            return dict(compute())
        sig, desc = key_signature(key_parts)
        hit = self._mem_get(sig)
        if hit is not None:
            self.stats["hits"] += 1
            return dict(hit)
        path = self.directory / f"{sig}.npz"
        if self.use_disk and path.exists():
            result = load_npz(path, sig)
            self.stats["disk_hits"] += 1
            self._mem_put(sig, result)
            return dict(result)
        self.stats["misses"] += 1
        result = _freeze(compute())
        self._mem_put(sig, result)
        if self.use_disk:
            self._write(path, sig, desc, result)
        return dict(result)

    def clear_memory(self) -> None:
        """Forget the in-memory results (disk files stay)."""
        with self._lock:
            self._mem.clear()

    def invalidate(self, key_parts: Mapping[str, Any]) -> None:
        """Remove the result for ``key_parts`` from memory and disk."""
        sig, _ = key_signature(key_parts)
        with self._lock:
            self._mem.pop(sig, None)
        path = self.directory / f"{sig}.npz"
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise CacheError(f"Cannot delete the cache file {str(path)!r}: {exc}.") from None

    # ------------------------------------------------------------------ internals
    def _mem_get(self, sig: str) -> dict[str, np.ndarray] | None:
        with self._lock:
            if sig in self._mem:
                self._mem.move_to_end(sig)
                return self._mem[sig]
        return None

    def _mem_put(self, sig: str, result: dict[str, np.ndarray]) -> None:
        if self.max_items == 0:
            return
        with self._lock:
            self._mem[sig] = result
            self._mem.move_to_end(sig)
            while len(self._mem) > self.max_items:
                self._mem.popitem(last=False)

    def _write(self, path: Path, sig: str, desc: str, result: dict[str, np.ndarray]) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_npz(path, sig, desc, result, compress=self.compress)
        except OSError as exc:
            if not self._warned:
                warnings.warn(
                    f"Cannot write the cache folder {str(path.parent)!r} ({exc}); results are "
                    "cached in memory only. Set NAPARI_SSSEG_CACHE to a writable folder.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self._warned = True


def _freeze(result: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(result, Mapping):
        raise TypeError("compute() must return a dict of arrays")
    out = {}
    for name, arr in result.items():
        if name.startswith("__"):
            raise InputError(f"result name {name!r} is reserved (names may not start with '__').")
        a = np.array(arr, copy=True)
        a.flags.writeable = False
        out[str(name)] = a
    return out


def save_npz(
    path: str | os.PathLike,
    signature: str,
    description: str,
    arrays: Mapping[str, np.ndarray],
    *,
    compress: bool = True,
) -> None:
    """Atomically write ``arrays`` plus their signature to ``path`` (``.npz``)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            saver = np.savez_compressed if compress else np.savez
            # numpy's stub matches **kwargs against allow_pickle: bool
            saver(
                fh,
                **{_META_SIG: np.array(signature), _META_KEY: np.array(description)},  # type: ignore[arg-type]
                **dict(arrays),  # type: ignore[arg-type]
            )
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_npz(path: str | os.PathLike, signature: str) -> dict[str, np.ndarray]:
    """Read a cache file and check that it was written for ``signature``.

    Raises
    ------
    CacheError
        The file cannot be read, has no signature, or its signature differs (stale or
        mismatched). The message names the file and how to recover.
    """
    path = Path(path)
    recover = (
        f"Delete {str(path)!r} (or the whole cache folder {str(path.parent)!r}) to recompute, "
        "or pass use_cache=False."
    )
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = str(data[_META_SIG]) if _META_SIG in data.files else None
            if stored != signature:
                what = "has no signature" if stored is None else "was written for other data"
                raise CacheError(
                    f"The cache file {str(path)!r} {what} (stale or mismatched: it does not "
                    f"match this case, its channels and parameters). {recover}"
                )
            out = {k: data[k] for k in data.files if not k.startswith("__")}
    except CacheError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise CacheError(
            f"The cache file {str(path)!r} cannot be read ({exc}). {recover}"
        ) from None
    for a in out.values():
        a.flags.writeable = False
    return out


_DEFAULT: dict[str, Cache] = {}
_DEFAULT_LOCK = threading.Lock()


def default_cache(namespace: str = "superpixels") -> Cache:
    """A process-wide :class:`Cache` for ``namespace`` in :func:`default_cache_dir`.

    The folder is resolved when the cache is first created; tests set
    ``NAPARI_SSSEG_CACHE`` before that.
    """
    with _DEFAULT_LOCK:
        cache = _DEFAULT.get(namespace)
        if cache is None or cache.folder != default_cache_dir():
            cache = Cache(namespace=namespace)
            _DEFAULT[namespace] = cache
        return cache
