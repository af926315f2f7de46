"""The workspace lock file: one writing process per workspace (pid, host, time), and one
open writable :class:`~napari_ssseg.io.workspace.Workspace` per folder in this process.

A lock whose process is dead on this host is taken over with a warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import uuid
import warnings
from pathlib import Path

from napari_ssseg.io.atomic import atomic_write_text
from napari_ssseg.io.workspace._base import LOCK_NAME, WorkspaceLockedError, _now


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


_OPEN_IN_PROCESS: set[str] = set()
_OPEN_GUARD = threading.Lock()


def _acquire_lock(root: Path) -> Path:
    lock = root / LOCK_NAME
    key = str(root.resolve())
    me = {"pid": os.getpid(), "host": socket.gethostname(), "time": _now()}
    with _OPEN_GUARD:
        if key in _OPEN_IN_PROCESS:
            raise WorkspaceLockedError(
                f"Workspace {str(root)!r} is already open for writing in this program. Use "
                "the open Workspace object, or close it first."
            )
        for _attempt in range(5):
            tmp = root / f".{LOCK_NAME}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
            atomic_write_text(tmp, json.dumps(me))
            try:
                os.link(tmp, lock)  # atomic create-if-absent, with the content in place
            except FileNotFoundError:  # our temp file was cleaned by the lock holder: retry
                continue
            except FileExistsError:
                holder = _read_lock(lock)
                if holder is None:
                    # vanished between link and read, or unreadable: retry, then refuse
                    if lock.exists() and _attempt >= 2:
                        raise WorkspaceLockedError(
                            f"Workspace {str(root)!r} has an unreadable lock file "
                            f"{str(lock)!r}. If no other program uses the workspace, delete "
                            "that file and open it again."
                        ) from None
                    continue
                if _is_stale(holder):
                    warnings.warn(
                        f"Workspace {str(root)!r}: taking over a stale lock of process "
                        f"{holder.get('pid')} on {holder.get('host')} (since "
                        f"{holder.get('time')}), which is no longer running. The previous "
                        "session ended without closing the workspace; its saved versions are "
                        "kept.",
                        UserWarning,
                        stacklevel=4,
                    )
                    with contextlib.suppress(FileNotFoundError):
                        lock.unlink()
                    continue
                raise WorkspaceLockedError(
                    f"Workspace {str(root)!r} is in use by process {holder.get('pid')} on host "
                    f"{holder.get('host')!r} (since {holder.get('time')}). Only one program may "
                    "write a workspace at a time: close the other program, or open this one "
                    "read-only (Workspace.open(path, readonly=True), CLI: status works "
                    f"read-only). If that process is gone, delete {str(lock)!r}."
                ) from None
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            _OPEN_IN_PROCESS.add(key)
            return lock
    raise WorkspaceLockedError(
        f"Could not take the lock of workspace {str(root)!r} ({str(lock)!r} keeps changing). "
        "Another program is opening it; try again."
    )


def _read_lock(lock: Path) -> dict | None:
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_stale(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return False
    try:
        pid = int(holder["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    if pid == os.getpid():
        return True  # our own pid but not in _OPEN_IN_PROCESS: left over, e.g. after a fork
    return not _pid_alive(pid)


def _release_lock(root: Path) -> None:
    lock = root / LOCK_NAME
    holder = _read_lock(lock)
    if holder is not None and holder.get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
    with _OPEN_GUARD:
        _OPEN_IN_PROCESS.discard(str(root.resolve()))
