"""The `lottery` console script: a clear one-line error for bad input, and Hydra multirun sweeps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import compose_config, tiny

LOTTERY = shutil.which("lottery") or str(Path(sys.executable).with_name("lottery"))


def lottery(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run([LOTTERY, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_bad_value_exits_2_with_one_clear_line(tmp_path):
    proc = lottery(*tiny(tmp_path, "pruning.fraction=1.5"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "lottery: error: pruning.fraction=1.5 is not a fraction in (0, 1)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_multirun_over_seeds_and_fractions_lands_in_shared_hashes(tmp_path):
    proc = lottery("-m", *tiny(tmp_path, "levels=1", "seed=0,1", "pruning.fraction=0.2,0.5"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    experiments = sorted((tmp_path / "default").iterdir())
    assert len(experiments) == 2  # one hash per fraction, shared by both seeds
    for experiment in experiments:
        fraction = json.loads((experiment / "hash.json").read_text()).get("pruning.fraction", 0.2)
        assert sorted(p.name for p in experiment.glob("seed_*")) == ["seed_0", "seed_1"]
        for seed_dir in experiment.glob("seed_*"):
            metrics = json.loads((seed_dir / "level_1" / "metrics.json").read_text())
            assert metrics["target_density"] == 1 - fraction
    assert "level" in proc.stdout and "density" in proc.stdout  # the ticket table


def test_wandb_offline_runs_per_branch_hold_the_documented_metrics(tmp_path):
    """One offline W&B run per (hash, seed, branch) under the seed folder, id derived from the folder, with the
    stable metric names, read back from the run files themselves."""
    from wandb_records import read_run

    from lottery.core.layout import RunPaths
    from lottery.training.tracking import run_id

    proc = lottery(
        *tiny(tmp_path, "logger=wandb", "levels=1", "branch=random_prune", "ticket.log_masks=true"), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "W&B" not in proc.stderr  # no W&B warning: it worked
    (seed_dir,) = list((tmp_path / "default").glob("*/seed_0"))
    paths = RunPaths(root=tmp_path, name="default", hash=seed_dir.parent.name, seed=0)
    runs = {r.name.rsplit("-", 3)[-3:][-1]: read_run(r) for r in (seed_dir / "wandb").glob("offline-run-*")}
    assert len(runs) == 2
    by_type = {r["run"][1]: r for r in runs.values()}
    trunk, branch = by_type["trunk"], by_type["random_prune"]
    assert trunk["run"][0] == run_id(paths, "trunk") and branch["run"][0] == run_id(paths, "random_prune")
    assert trunk["run"][2] == paths.hash and set(trunk["run"][3]) == {"model:mlp", "data:mnist1d", "seed:0"}
    per_level = {"imp/level", "imp/density", "imp/test_acc", "imp/best_val_acc", "imp/best_val_step"}
    assert {"train/loss", "val/acc"} | per_level <= trunk["history"]
    assert per_level <= branch["history"]
    assert {"ticket/dense_test_acc", "ticket/min_matching_density"} <= branch["summary"]
    assert {"ticket/levels/_type", "ticket/accuracy_vs_density/_type"} <= branch["history"]  # table, image
    assert ("mask", f"masks-{paths.hash}-s0-random_prune") in branch["artifacts"]  # opted in: the masks

    # lottery-compare logs its report as one W&B run of job type `compare`.
    report = tmp_path / "report"
    compare = subprocess.run(
        [
            shutil.which("lottery-compare") or str(Path(LOTTERY).with_name("lottery-compare")),
            str(tmp_path),
            "--out",
            str(report),
            "--wandb",
            "offline",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_SILENT": "true"},
    )
    assert compare.returncode == 0, compare.stderr[-3000:]
    (compare_run,) = list((report / "wandb").glob("offline-run-*"))
    records = read_run(compare_run)
    assert records["run"][1] == "compare"
    assert {"compare/accuracy/_type", "compare/accuracy_vs_density/_type"} <= records["history"]

    # A re-run of the finished experiment opens no new W&B run.
    again = lottery(
        *tiny(tmp_path, "logger=wandb", "levels=1", "branch=random_prune", "ticket.log_masks=true"), cwd=tmp_path
    )
    assert again.returncode == 0 and len(list((seed_dir / "wandb").glob("offline-run-*"))) == 2


def test_schedule_by_width_multirun_from_the_command_line(tmp_path):
    """`lottery -m pruning=A,B model.width=...`: four experiments; levels 0 and 1 (identical under both schedules)
    are trained once per width and reused by the other schedule (counted from the level records)."""
    sweep = ("pruning=global_20,target_list", "model.width=0.5,1", "levels=2")
    proc = lottery("-m", *tiny(tmp_path, *sweep), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    experiments = sorted((tmp_path / "default").iterdir())
    assert len(experiments) == 4
    records = [json.loads(p.read_text()) for p in (tmp_path / "default").glob("*/seed_0/level_*/metrics.json")]
    assert len(records) == 12
    assert sum("reused_from" in r for r in records) == 4  # levels 0 and 1 of the second schedule, at both widths


def test_trainer_threads_is_applied_to_torch(tmp_path):
    import torch

    from lottery.cli import run_config

    before = torch.get_num_threads()
    try:
        run_config(compose_config(tiny(tmp_path, "levels=0", "trainer.threads=1")))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
