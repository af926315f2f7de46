"""``benchmarks/gpu_check.py`` runs end to end on CPU (the tests never need a GPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
TINY = ["--phantom-shape", "40", "56", "56", "--phantom-spacing", "2", "--repeats", "1"]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_run_measures_inference_and_training(gpu_check, tmp_path, capsys):
    out = tmp_path / "check.json"
    args = ["--device", "cpu", *TINY, "--steps", "2", "--patch", "32", "--json", str(out)]
    assert gpu_check.main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads(out.read_text())
    assert printed == written
    assert written["device"] == "cpu" and written["torch"] == torch.__version__
    inf = written["inference"]
    assert inf["device_used"] == "cpu" and inf["amp"] is False
    assert len(inf["runs"]) == 1
    run = inf["runs"][0]
    assert run["seconds"] > 0 and run["peak_gpu_allocated_mib"] == "n/a on CPU"
    assert run["peak_process_rss_mib"] > 50  # torch + MONAI + the model: a measured RSS
    assert inf["roi_size"] == [64, 64, 64] and inf["windows"] >= 1
    assert inf["tumour_voxels"] > 0  # the shipped model finds the phantom's tumour
    train = written["training"]
    assert train["amp"] == "off (float32)"
    assert train["patch"] == [32, 32, 32] and train["batch_size"] == 2
    assert train["targets"] == "labels"
    assert len(train["steps"]) == 2
    losses = [s["loss"] for s in train["steps"]]
    assert all(np.isfinite(losses)) and all(0 < v < 10 for v in losses)
    assert train["seconds_per_step"] > 0
    assert train["peak_gpu_allocated_mib"] == "n/a on CPU"


def test_cpu_bfloat16_autocast(gpu_check, capsys):
    args = ["--device", "cpu", *TINY, "--steps", "1", "--patch", "16", "--amp", "bf16"]
    assert gpu_check.main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["training"]["amp"] == "bfloat16 autocast on cpu, no GradScaler"
    assert np.isfinite(summary["training"]["steps"][0]["loss"])


def test_fp16_on_cpu_is_refused(gpu_check, capsys):
    assert gpu_check.main(["--device", "cpu", "--amp", "fp16", *TINY]) == 2
    assert "--amp fp16 needs CUDA" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda(gpu_check, capsys):
    assert gpu_check.main(["--device", "cuda", *TINY]) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "--device cpu" in err
