"""Shared test configuration: isolate napari settings and caches from the user's."""

from __future__ import annotations

import os
import tempfile

_TMP = tempfile.mkdtemp(prefix="ssseg-tests-")
for _var, _sub in (
    ("XDG_RUNTIME_DIR", "run"),
    ("XDG_CACHE_HOME", "cache"),
    ("XDG_CONFIG_HOME", "config"),
    ("NAPARI_SSSEG_CACHE", "ssseg-cache"),
):
    _p = os.path.join(_TMP, _sub)
    os.makedirs(_p, mode=0o700, exist_ok=True)
    os.environ.setdefault(_var, _p)
# napari needs a real X display (pytest-xvfb provides one); offscreen has no OpenGL.
os.environ.pop("QT_QPA_PLATFORM", None)
