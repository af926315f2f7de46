"""Annotation workspace on disk: cases, versioned labels, scribbles, provenance, models.

A workspace is a folder::

    WS/
      workspace.json           human-readable manifest (``schema_version``), the only index
      workspace.json.bak       the manifest as it was before the last change
      workspace.lock           present while a process has the workspace open for writing
      images/<case>/...        copied images (only with ``copy_images=True``)
      cases/<case>/labels/v0001.nii.gz       label versions (immutable, never rewritten)
      cases/<case>/provenance/v0001.nii.gz   per-voxel provenance of each version
      cases/<case>/scribbles/s0001.nii.gz    scribble saves
      cases/<case>/uncertainty_<kind>.nii.gz latest uncertainty map of a proposal
      snapshots/<name>/                      frozen copies of labels for training runs
      runs/<run>/                            training runs (snapshot + checkpoint)

Never losing work
-----------------
Every file is written through :func:`napari_ssseg.io.atomic.atomic_path` (temporary file +
rename), and a label version file is written *before* the manifest that lists it, so a crash
at any moment leaves a manifest that only lists complete files. Each manifest write first
saves the previous manifest as ``workspace.json.bak``; a corrupt manifest is detected on
:meth:`Workspace.open` and restored from it. A lock file (pid, host, time) stops a second
process from writing; a lock whose process is dead on this host is taken over with a warning.

Label version files hold the internal values (0 bg, 1 NCR, 2 ED, 3 ET; i.e. the BraTS 2023
convention) on the case's **source file grid** (array order, spacing, origin, direction), so
they open in any viewer on top of the source images. Exports convert to the case's
convention (:mod:`napari_ssseg.io.workspace_export`).

The manifest never loads images: :attr:`Workspace.cases` is built from the JSON alone (plus
an existence check of each referenced image file).

Modules
-------
The package re-exports everything below; import from ``napari_ssseg.io.workspace``.

=====================  ======================================================================
``core``               :class:`Workspace` (create, open, close, cases, verify, summary),
                       :func:`record_run_in`
``artifacts``          per-case status, label versions and provenance, scribbles, uncertainty,
                       scores, features (mixin of :class:`Workspace`)
``runs``               models, snapshots, training-run records (mixin), :func:`read_run`,
                       :func:`read_snapshot`, :func:`add_run_command`
``lock``               the lock file (one writing process per workspace)
``autosave``           :class:`Autosaver`
``records``            :class:`CaseRecord`, :class:`LabelVersion`, :class:`TrainingRun`
``_base``              constants, errors, manifest validation, volume helpers, the shared
                       manifest state (``_WorkspaceBase``)
=====================  ======================================================================
"""

from __future__ import annotations

from napari_ssseg.io.workspace._base import (
    BACKUP_NAME,
    LOCK_NAME,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    SNAPSHOT_MANIFEST,
    SOURCES,
    STATUSES,
    WorkspaceLockedError,
)
from napari_ssseg.io.workspace.autosave import Autosaver
from napari_ssseg.io.workspace.core import Workspace, record_run_in
from napari_ssseg.io.workspace.records import CaseRecord, LabelVersion, TrainingRun
from napari_ssseg.io.workspace.runs import RUN_STATES, add_run_command, read_run, read_snapshot

__all__ = [
    "SCHEMA_VERSION",
    "MANIFEST_NAME",
    "LOCK_NAME",
    "BACKUP_NAME",
    "SNAPSHOT_MANIFEST",
    "STATUSES",
    "SOURCES",
    "CaseRecord",
    "LabelVersion",
    "TrainingRun",
    "Workspace",
    "WorkspaceLockedError",
    "Autosaver",
    "read_snapshot",
    "RUN_STATES",
    "read_run",
    "record_run_in",
    "add_run_command",
]
