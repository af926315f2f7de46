"""The per-study cache of prepare_clinical: transforms, brain mask, working grid (issue 13).

A tiny synthetic study (tests/clinical_study.py: FLAIR and T2 on one 2 mm grid, T1 on a 3 mm
grid with the head moved 4 mm) is registered for real; brain extraction is replaced by a
counting stand-in (deepbet itself is tested in tests/ml/test_brain_extraction.py), so these
tests show what is recomputed and what is read back, in a few seconds.
The real-study timing is slow-marked.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from clinical_study import FINE, head, make_study, write

import napari_ssseg.core.registration as registration
import napari_ssseg.ml.brain_extraction as brain_extraction
from napari_ssseg.ml.clinical import prepare_clinical
from napari_ssseg.ml.clinical_cache import ClinicalCache

RAW = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real" / "TCGA-FG-6692-raw"


@pytest.fixture
def study(tmp_path):
    """Explicit series: FLAIR + T2 on a 2 mm grid, T1 on a 2 x 2 x 3 mm grid, moved 4 mm."""
    return make_study(tmp_path / "study")


@pytest.fixture
def counted(monkeypatch):
    """Count registrations and brain extractions (the latter a stand-in: a thresholded T1)."""
    calls = {"register": 0, "extract": 0}
    real_register = registration.register_rigid

    def register(*args, **kwargs):
        calls["register"] += 1
        return real_register(*args, **kwargs)

    def extract(images, modalities, spacing_zyx, **kwargs):
        calls["extract"] += 1
        t1 = images[list(modalities).index("t1")]
        return t1 > 30, {"sequence": "t1", "check": {"volume_ml": 1.0}, "tried": {}}

    monkeypatch.setattr(registration, "register_rigid", register)
    monkeypatch.setattr(brain_extraction, "extract_brain_case", extract)
    return calls


def _prep(study, cache, **kw):
    opts = {"brain_extraction": "on", "register": "on", "resample": 1.5, **kw}
    return prepare_clinical(None, study, cache=cache, **opts)


def test_second_preparation_reads_transforms_and_mask_from_the_cache(study, counted, tmp_path):
    cache = ClinicalCache(tmp_path / "cache")
    a = _prep(study, cache)
    assert counted == {"register": 2, "extract": 1}  # t1 and t2 to the FLAIR
    assert a.report["cache"]["hit"] is False and a.report["cache"]["written"] is True
    assert a.report["registration"]["t1"]["applied"] is True
    assert a.report["registration"]["t1"]["displacement_mm"] > 2.0  # the 4 mm move was found
    entries = list((tmp_path / "cache" / "clinical").glob("*.npz"))
    assert len(entries) == 1
    b = _prep(study, cache)
    assert counted == {"register": 2, "extract": 1}  # nothing recomputed
    assert b.report["cache"]["hit"] is True
    np.testing.assert_array_equal(a.case.images, b.case.images)  # resampled again, identically
    np.testing.assert_array_equal(a.brain, b.brain)
    assert a.grid == b.grid
    assert a.report["registration"] == b.report["registration"]
    assert a.report["brain_extraction"] == b.report["brain_extraction"]
    assert b.case.images[:, ~b.brain].max() == 0  # zeroed outside the cached mask
    # the images come from the series, not from the cache: the entry holds no image
    assert entries[0].stat().st_size < 20_000


def test_change_of_options_or_content_is_a_miss_but_touching_is_not(study, counted, tmp_path):
    cache = ClinicalCache(tmp_path / "cache")
    _prep(study, cache)
    assert cache.stats["misses"] == 1
    _prep(study, cache, resample=2.5)
    _prep(study, cache, register="auto")
    _prep(study, cache, brain_extraction="auto")
    assert cache.stats["misses"] == 4 and cache.stats["hits"] == 0
    st = os.stat(study["t2"])
    os.utime(study["t2"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touch: same content
    _prep(study, cache)
    assert cache.stats["hits"] == 1
    n = counted["register"]
    write(study["t2"], head((30, 32, 32), FINE, seed=9), FINE)  # new content
    c = _prep(study, cache)
    assert c.report["cache"]["hit"] is False and counted["register"] == n + 2
    # the same series given as another modality is another study
    swapped = {"flair": study["t2"], "t2": study["flair"], "t1": study["t1"]}
    assert _prep(swapped, cache).report["cache"]["hit"] is False


def test_registration_without_gain_keeps_the_scanner_alignment_even_when_on(
    study, counted, tmp_path, monkeypatch
):
    # series are registered in the order t1, t2 (to the FLAIR); the T2 is already aligned:
    # make its metric come out a little worse (as 2 CPU threads did on CI). The study is
    # prepared and the T2 is not moved
    real = registration._evaluate
    calls = []

    def evaluate(*args, **kwargs):
        v = real(*args, **kwargs)
        calls.append(v)
        return calls[2] + 0.005 if len(calls) == 4 else v  # the T2's "after"

    monkeypatch.setattr(registration, "_evaluate", evaluate)
    a = _prep(study, ClinicalCache(tmp_path / "cache"))  # register="on"
    t2, t1 = a.report["registration"]["t2"], a.report["registration"]["t1"]
    assert t2["no_gain"] is True and t2["applied"] is False and t2["passed"] is True
    assert t1["no_gain"] is False and t1["applied"] is True


def test_corrupt_or_foreign_entry_is_ignored_with_a_warning_and_rewritten(study, counted, tmp_path):
    cache = ClinicalCache(tmp_path / "cache")
    a = _prep(study, cache)
    path = Path(a.report["cache"]["path"])
    path.write_bytes(b"not a zip file")
    with pytest.warns(RuntimeWarning, match="Ignoring the clinical cache entry"):
        b = _prep(study, cache)
    assert b.report["cache"]["hit"] is False and counted["extract"] == 2
    assert b.case.shape == a.case.shape  # (registration itself is not bit-reproducible)
    assert _prep(study, cache).report["cache"]["hit"] is True  # rewritten, readable again
    # an entry written for other options, copied under this study's name, is refused
    other = _prep(study, cache, resample=2.5)
    Path(other.report["cache"]["path"]).replace(path)
    with pytest.warns(RuntimeWarning, match="another study or options"):
        c = _prep(study, cache)
    assert c.report["cache"]["hit"] is False
    # a truncated file too
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match="Ignoring"):
        assert _prep(study, cache).report["cache"]["hit"] is False


def test_cache_off_writes_nothing_and_unwritable_folder_only_warns(study, counted, tmp_path):
    a = _prep(study, False)
    assert a.cache is None and "cache" not in a.report
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.warns(RuntimeWarning, match="Cannot write the clinical cache folder"):
        b = _prep(study, ClinicalCache(blocker))
    assert b.report["cache"]["written"] is False
    assert b.case.shape == a.case.shape and b.brain is not None


def test_default_folder_follows_napari_ssseg_cache(study, counted, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_SSSEG_CACHE", str(tmp_path / "env-cache"))
    a = _prep(study, True)
    assert Path(a.report["cache"]["path"]).parent == tmp_path / "env-cache" / "clinical"
    assert Path(a.report["cache"]["path"]).is_file()


def test_corrected_brain_mask_is_what_the_next_preparation_uses(study, counted, tmp_path):
    cache = ClinicalCache(tmp_path / "cache")
    a = _prep(study, cache, keep_unmasked=True)
    corrected = a.brain.copy()
    corrected[:, :, : corrected.shape[2] // 2] = False  # the user erased half of it
    assert a.keep_brain_mask(corrected) is not None
    b = _prep(study, cache)
    assert counted["extract"] == 1
    np.testing.assert_array_equal(b.brain, corrected)
    assert b.report["brain_extraction"]["corrected"] is True
    assert b.case.images[:, ~corrected].max() == 0
    with pytest.raises(Exception, match="working grid"):
        a.keep_brain_mask(corrected[:-1])


def test_nothing_is_cached_when_nothing_expensive_runs(study, counted, tmp_path):
    cache = ClinicalCache(tmp_path / "cache")
    c = _prep(study, cache, brain_extraction="off", register="off")
    assert c.cache is None and not (tmp_path / "cache").exists()


@pytest.mark.slow  # registration + deepbet on the real study, twice: about 15-40 s
@pytest.mark.skipif(not RAW.is_dir(), reason="shared/data/real/TCGA-FG-6692-raw is absent")
def test_real_study_second_preparation_takes_seconds(tmp_path):
    pytest.importorskip("deepbet", reason="deepbet (the clinical extra) is not installed")
    cache = ClinicalCache(tmp_path / "cache")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deepbet's own deprecation warnings
        cold = prepare_clinical(RAW, cache=cache)
    t1 = time.perf_counter()
    warm = prepare_clinical(RAW, cache=cache)
    t2 = time.perf_counter()
    print(f"TCGA-FG-6692-raw prepare_clinical: cold {t1 - t0:.1f} s, warm {t2 - t1:.1f} s")
    assert cold.report["cache"]["hit"] is False and warm.report["cache"]["hit"] is True
    assert set(warm.report["registration"]) == {"t1", "t1ce", "t2"}
    np.testing.assert_array_equal(cold.case.images, warm.case.images)
    np.testing.assert_array_equal(cold.brain, warm.brain)
    assert t2 - t1 < 5.0 and t2 - t1 < (t1 - t0) / 3
