"""Tests of napari_ssseg.core.cache (memory LRU + disk .npz with signatures)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from napari_ssseg.core.cache import Cache, array_digest, default_cache_dir, key_signature
from napari_ssseg.core.superpixels import cached_slic_superpixels, slic_superpixels
from napari_ssseg.errors import CacheError, InputError


class Counter:
    def __init__(self, value=None):
        self.calls = 0
        self.value = value if value is not None else np.arange(12, dtype=np.int32).reshape(3, 4)

    def __call__(self):
        self.calls += 1
        return {"labels": self.value, "extra": np.float32([1.5, 2.5])}


def key(**over):
    k = {"image": np.ones((2, 3, 4), np.float32), "channels": ["flair"], "n_segments": 350}
    k.update(over)
    return k


def test_memory_hit_after_miss(tmp_path):
    cache = Cache(tmp_path, namespace="t")
    compute = Counter()
    a = cache.get_or_compute(key(), compute)
    b = cache.get_or_compute(key(), compute)
    assert compute.calls == 1
    assert cache.stats == {"hits": 1, "disk_hits": 0, "misses": 1}
    np.testing.assert_array_equal(a["labels"], b["labels"])
    assert not b["labels"].flags.writeable
    with pytest.raises(ValueError):
        b["labels"][0, 0] = 5


def test_disk_hit_in_a_new_cache_and_no_temp_files(tmp_path):
    compute = Counter()
    Cache(tmp_path, namespace="t").get_or_compute(key(), compute)
    other = Cache(tmp_path, namespace="t")
    out = other.get_or_compute(key(), compute)
    assert compute.calls == 1 and other.stats["disk_hits"] == 1
    np.testing.assert_array_equal(out["labels"], compute.value)
    np.testing.assert_array_equal(out["extra"], [1.5, 2.5])
    files = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert files == [f"{key_signature(key())[0]}.npz"]


@pytest.mark.parametrize(
    "changed",
    [
        {"n_segments": 351},
        {"channels": ["t2", "t1ce"]},
        {"image": np.full((2, 3, 4), 1.0001, np.float32)},
        {"image": np.ones((2, 4, 3), np.float32)},
        {"image": np.ones((2, 3, 4), np.float64)},
        {"version": "2"},
    ],
)
def test_any_change_of_key_is_a_miss(tmp_path, changed):
    cache = Cache(tmp_path, namespace="t")
    compute = Counter()
    cache.get_or_compute(key(), compute)
    cache.get_or_compute(key(**changed), compute)
    assert compute.calls == 2
    assert key_signature(key())[0] != key_signature(key(**changed))[0]


def test_signature_stable_and_order_independent():
    a = {"x": 1, "y": [1.0, 2.0], "z": np.zeros(3)}
    b = {"z": np.zeros(3), "y": (1, 2), "x": 1.0}
    assert key_signature(a)[0] == key_signature(b)[0]
    assert array_digest(np.zeros(3)) != array_digest(np.zeros(4))
    with pytest.raises(InputError, match="cannot be hashed"):
        key_signature({"f": object()})


def test_stale_file_is_refused_with_recovery_hint(tmp_path):
    cache = Cache(tmp_path, namespace="t")
    cache.get_or_compute(key(), Counter())
    # a file from another case copied onto this key's name
    shutil.copy(cache.path_for(key()), cache.path_for(key(n_segments=2000)))
    fresh = Cache(tmp_path, namespace="t")
    with pytest.raises(CacheError, match=r"stale or mismatched.*Delete.*use_cache=False"):
        fresh.get_or_compute(key(n_segments=2000), Counter())
    # recovering: use_cache=False computes without touching the file
    compute = Counter()
    fresh.get_or_compute(key(n_segments=2000), compute, use_cache=False)
    assert compute.calls == 1
    # ... or invalidate (delete) the entry, then it is recomputed and stored
    fresh.invalidate(key(n_segments=2000))
    fresh.get_or_compute(key(n_segments=2000), compute)
    assert compute.calls == 2
    Cache(tmp_path, namespace="t").get_or_compute(key(n_segments=2000), compute)
    assert compute.calls == 2


@pytest.mark.parametrize("content", [b"", b"not a zip file", b"PK\x03\x04broken"])
def test_unreadable_file_is_refused(tmp_path, content):
    cache = Cache(tmp_path, namespace="t")
    path = cache.path_for(key())
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(CacheError, match="cannot be read.*Delete"):
        cache.get_or_compute(key(), Counter())


def test_file_without_signature_is_refused(tmp_path):
    cache = Cache(tmp_path, namespace="t")
    path = cache.path_for(key())
    path.parent.mkdir(parents=True)
    np.savez(path, labels=np.zeros(3))
    with pytest.raises(CacheError, match="no signature"):
        cache.get_or_compute(key(), Counter())


def test_use_cache_false_reads_and_writes_nothing(tmp_path):
    cache = Cache(tmp_path, namespace="t")
    compute = Counter()
    cache.get_or_compute(key(), compute, use_cache=False)
    cache.get_or_compute(key(), compute, use_cache=False)
    assert compute.calls == 2
    assert not (tmp_path / "t").exists()


def test_lru_eviction(tmp_path):
    cache = Cache(tmp_path, namespace="t", max_items=1, use_disk=False)
    compute = Counter()
    cache.get_or_compute(key(n_segments=1), compute)
    cache.get_or_compute(key(n_segments=2), compute)
    cache.get_or_compute(key(n_segments=2), compute)
    assert compute.calls == 2
    cache.get_or_compute(key(n_segments=1), compute)  # evicted, no disk
    assert compute.calls == 3


def test_failed_compute_stores_nothing(tmp_path):
    cache = Cache(tmp_path, namespace="t")

    def boom():
        raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError):
        cache.get_or_compute(key(), boom)
    assert not cache.path_for(key()).exists()
    compute = Counter()
    cache.get_or_compute(key(), compute)
    assert compute.calls == 1


def test_unwritable_folder_warns_and_keeps_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = Cache(blocker, namespace="t")
    compute = Counter()
    with pytest.warns(RuntimeWarning, match="memory only"):
        cache.get_or_compute(key(), compute)
    cache.get_or_compute(key(), compute)
    assert compute.calls == 1


def test_bad_namespace_and_reserved_names(tmp_path):
    with pytest.raises(InputError, match="namespace"):
        Cache(tmp_path, namespace="../x")
    with pytest.raises(InputError, match="reserved"):
        Cache(tmp_path, namespace="t").get_or_compute(key(), lambda: {"__key__": np.zeros(1)})


def test_default_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_SSSEG_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("NAPARI_SSSEG_CACHE")
    assert default_cache_dir().name == "napari-ssseg"


def test_cached_superpixels_hit_and_parameters_in_key(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.random((12, 16, 16)).astype(np.float32)
    cache = Cache(tmp_path, namespace="superpixels")
    a = cached_slic_superpixels(img, cache=cache, n_segments=20)
    b = cached_slic_superpixels(img, cache=cache, n_segments=20, n_threads=1)
    assert cache.stats["misses"] == 1 and cache.stats["hits"] == 1
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, slic_superpixels(img, n_segments=20))
    cached_slic_superpixels(img, cache=cache, n_segments=20, compactness=0.1)
    cached_slic_superpixels(img, cache=cache, n_segments=20, mask=img > 0.1)
    assert cache.stats["misses"] == 3
    c = cached_slic_superpixels(img, cache=cache, n_segments=20, use_cache=False)
    np.testing.assert_array_equal(a, c)
    assert cache.stats["misses"] == 3
