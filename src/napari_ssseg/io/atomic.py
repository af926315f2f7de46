"""Atomic file writes: write to a temporary file in the same folder, then rename.

A reader never sees a half-written file, and a crash or a full disk during a write leaves
the previous version of the file intact.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from napari_ssseg.errors import InputError

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "check_writable_dir"]


def check_writable_dir(path: str | os.PathLike, create: bool = True) -> Path:
    """Return ``path`` as a folder that exists and can be written, or raise a clear error.

    Parameters
    ----------
    path : path-like
        Folder to check.
    create : bool
        Create it (and its parents) if it does not exist.
    """
    path = Path(path)
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"Cannot create the output folder {str(path)!r} ({exc.strerror or exc}). "
            "Choose a folder you can write to."
        ) from None
    if not path.is_dir():
        raise InputError(f"Output folder {str(path)!r} does not exist or is not a folder.")
    if not os.access(path, os.W_OK):
        raise InputError(
            f"Output folder {str(path)!r} is not writable. Choose a folder you can write to."
        )
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary name keeps the file's extension (``suffix``, default: every suffix of
    ``path``, e.g. ``.nii.gz``) so that writers choosing a format from the name still work.
    On any exception the temporary file is removed and ``path`` is untouched.

    Examples
    --------
    >>> with atomic_path("labels.nii.gz") as tmp:  # doctest: +SKIP
    ...     sitk.WriteImage(image, str(tmp))
    """
    path = Path(path)
    parent = check_writable_dir(path.parent if str(path.parent) else ".")
    if suffix is None:
        suffix = "".join(path.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        # mkstemp creates the file with mode 0600; give it the mode a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _fsync_dir(parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(
            f"Could not write {str(path)!r}: {exc.strerror or exc}. The previous version of the "
            "file, if any, is intact. Free some disk space or choose another location."
        ) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: done once, at import
    os.umask(mask)
    return mask


#: The process umask, read once when the module is imported (reading it means setting it for
#: a moment, which would race with files created by other threads, e.g. the GUI's).
_UMASK = _read_umask()


def _umask() -> int:
    return _UMASK


def _fsync_file(path: Path) -> None:
    with contextlib.suppress(OSError), open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
