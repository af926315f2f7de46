"""Never lose work: kill a process with SIGKILL at random moments while it saves versions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from napari_ssseg.core.phantom import make_phantom
from napari_ssseg.io.workspace import MANIFEST_NAME, Workspace
from napari_ssseg.io.writers import write_case

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")

WRITER = textwrap.dedent(
    """
    import sys, warnings
    import numpy as np
    warnings.simplefilter("ignore")
    from napari_ssseg.io.workspace import Workspace
    ws = Workspace.open(sys.argv[1])
    rng = np.random.default_rng(int(sys.argv[2]))
    print("ready", flush=True)
    i = 0
    while True:
        cid = ws.case_ids[i % len(ws.case_ids)]
        shape = ws.case(cid).shape
        lab = rng.integers(0, 4, size=shape).astype(np.uint8)
        prov = rng.integers(0, 5, size=shape).astype(np.uint8)
        ws.save_labels(cid, lab, source="human", note=f"save {i}", provenance=prov)
        if i % 3 == 0:
            ws.save_scribbles(cid, (lab == 1).astype(np.uint8))
        if i % 4 == 0:
            ws.set_status(cid, ("corrected", "verified")[i % 2])
        if i % 7 == 0 and len(ws.versions(cid)) > 1:
            ws.restore(cid, 1)
        i += 1
    """
)

N_KILLS = 22


def test_sigkill_during_saves_leaves_loadable_workspace(tmp_path):
    src = tmp_path / "src"
    for seed in range(2):
        write_case(make_phantom((16, 24, 24), seed=seed).to_case(name=f"c{seed}"), src)
    Workspace.create(tmp_path / "ws", from_dir=src).close()
    root = tmp_path / "ws"
    rng = np.random.default_rng(1234)
    previous_total = 0
    kills_mid_run = 0
    for k in range(N_KILLS):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(k)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.0, 0.35)))
        if proc.poll() is None:
            kills_mid_run += 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()

        # the manifest parses and lists only complete, readable files
        json.loads((root / MANIFEST_NAME).read_text())
        with Workspace.open(root, readonly=True) as ws:
            assert ws.verify() == []
            total = 0
            for cid in ws.case_ids:
                for v in ws.versions(cid):
                    lab = ws.read_version(cid, v.version)
                    assert lab.shape == ws.case(cid).shape and lab.max() <= 3
                    assert ws.read_provenance(cid, v.version).max() <= 4
                    total += 1
                if ws.versions(cid):
                    ws.latest_scribbles(cid)
            assert total >= previous_total  # committed versions are never lost
            previous_total = total
    assert kills_mid_run == N_KILLS
    assert previous_total > 0, "the writer never got to save a version"
    # the next writer takes over the dead writer's lock and cleans its temporary files
    with pytest.warns(UserWarning, match="stale lock"), Workspace.open(root) as ws:
        assert not list(root.glob("cases/*/*/.*tmp*"))
        assert ws.verify() == []
