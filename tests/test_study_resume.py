"""A pretrained no-retrain study survives a kill: every measurement is kept in no_retrain/partial.json as it is made,
and a re-run resumes after the last one and ends with the same results.json, byte for byte, as an uninterrupted run
(killed after the dense evaluation, among the scores and layer removals, and among the grid points)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from conftest import compose_config, seed_dir_of, tiny  # noqa: E402
from hf_models import save_model  # noqa: E402
from test_pretrained import GRID, RECALL  # noqa: E402

from lottery.cli import run_config  # noqa: E402

KILL_SCRIPT = Path(__file__).with_name("kill_study.py")
SCORES = "structured.grid_scores=[gradient,token_gradient,angular,single,random]"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    folder = save_model(root / "llama", "llama", kv_heads=2)
    overrides = tiny(root / "out", "model=hf", f"model.path={folder}", *RECALL, *GRID, SCORES)
    run_config(compose_config(overrides))
    return folder, seed_dir_of(overrides)


@pytest.mark.parametrize("after", [1, 6, 20])  # the dense evaluation; scores and layers; grid points
def test_a_killed_study_resumes_to_the_same_results(uninterrupted, tmp_path, after):
    folder, whole = uninterrupted
    overrides = tiny(tmp_path, "model=hf", f"model.path={folder}", *RECALL, *GRID, SCORES)
    proc = subprocess.run(
        [sys.executable, str(KILL_SCRIPT), str(after), *overrides], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    seed_dir = seed_dir_of(overrides)
    partial = json.loads((seed_dir / "no_retrain" / "partial.json").read_text())
    assert len(partial["done"]) == after and not (seed_dir / "no_retrain" / "results.json").exists()
    run_config(compose_config(overrides))
    resumed = (seed_dir / "no_retrain" / "results.json").read_bytes()
    assert resumed == (whole / "no_retrain" / "results.json").read_bytes()
    run = json.loads((seed_dir / "no_retrain" / "run.json").read_text())
    assert run["timing"]["resumed_measurements"] == after
    assert not (seed_dir / "no_retrain" / "partial.json").exists()  # a finished study keeps no partial file
    assert json.loads((seed_dir / "structured.json").read_text())["run"]["timing"]["resumed_measurements"] == after


def test_partial_results_of_other_settings_are_not_mixed_in(uninterrupted, tmp_path):
    folder, whole = uninterrupted
    overrides = tiny(tmp_path, "model=hf", f"model.path={folder}", *RECALL, *GRID, SCORES)
    subprocess.run([sys.executable, str(KILL_SCRIPT), "3", *overrides], capture_output=True, timeout=300)
    seed_dir = seed_dir_of(overrides)
    assert (seed_dir / "no_retrain" / "partial.json").is_file()
    run_config(compose_config([*overrides, "structured.random_draws=3"]))  # another grid: nothing is kept from before
    run = json.loads((seed_dir / "no_retrain" / "run.json").read_text())
    assert run["timing"]["resumed_measurements"] == 0
