"""Tests of atomic writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from napari_ssseg.errors import InputError
from napari_ssseg.io.atomic import atomic_path, atomic_write_text, check_writable_dir


def test_atomic_write_replaces_and_uses_umask_mode(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    old = os.umask(0o022)
    try:
        atomic_write_text(target, "three")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_failure_keeps_previous_version_and_cleans_up(tmp_path):
    target = tmp_path / "labels.nii.gz"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.nii.gz"]


def test_disk_full_is_a_clear_error(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(InputError, match="previous version of the file, if any, is intact"):
        with atomic_path(target):
            raise OSError(28, "No space left on device")
    assert target.read_bytes() == b"old"


def test_unwritable_folder(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:  # root may write anywhere (CI runs as root): deny it the way a
        # read-only mount would, through the permission check the function relies on
        import napari_ssseg.io.atomic as atomic

        real = atomic.os.access
        monkeypatch.setattr(
            atomic.os, "access", lambda p, m: False if Path(p) == ro else real(p, m)
        )
    with pytest.raises(InputError, match="not writable"):
        check_writable_dir(ro)


def test_output_path_under_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="Cannot create the output folder"):
        check_writable_dir(f / "sub")
