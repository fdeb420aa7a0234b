"""experiments/gpu_smoke.py: its logic on the CPU (tiny), and a clear refusal where no GPU is visible."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "gpu_smoke.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_smoke", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cpu_check_runs_three_levels_and_finds_pruned_weights_zero(capsys, tmp_path):
    small = ["--steps", "4", "--width", "0.25", "--batch-size", "16", "--samples", "600"]
    assert load_script().main(["--cpu", *small, "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\s+(\d)\s+([\d.]+)%\s+(\d+)\s+[\d.]+\s+[\d.]+\s+[\d.]+%$", out, flags=re.MULTILINE)
    assert [(r[0], r[1], r[2]) for r in rows] == [("0", "100.00", "4"), ("1", "80.00", "3"), ("2", "64.00", "3")]
    assert "pruned weights exactly zero at every level: yes" in out and "bf16-mixed, channels_last" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU, so the script would run")
def test_without_a_gpu_it_stops_with_a_clear_error():
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "sees no CUDA GPU" in result.stderr and "--cpu --steps 20" in result.stderr and result.stdout == ""
