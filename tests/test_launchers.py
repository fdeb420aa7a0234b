"""Launcher presets: launcher=joblib runs a sweep's jobs side by side on this machine, launcher=slurm composes into a
valid SLURM job array (checked by building its sbatch script; no cluster needed), and trainer.threads is applied."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import compose_config, tiny
from omegaconf import OmegaConf
from test_cli import lottery

from lottery import config as C
from lottery.validate import validate

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def test_joblib_sweep_runs_two_jobs_in_their_own_processes_sharing_one_trunk(tmp_path):
    """The issue's example: two branches of one seed need the same trunk. Both jobs succeed, in two worker
    processes, each with the cores split between them, and the seed folder ends with both controls."""
    sweep = ("launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0", "branch=random_reinit,random_prune")
    proc = lottery("-m", *tiny(tmp_path, *sweep), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout and "is launching 2 jobs" in proc.stdout
    (seed_dir,) = list(tmp_path.glob("default/*/seed_0"))
    trunk = [json.loads((seed_dir / f"level_{lvl}" / "metrics.json").read_text()) for lvl in range(3)]
    assert [m["target_density"] for m in trunk] == [1.0, 0.8, pytest.approx(0.64)]
    pids = set()
    for branch in ("random_reinit", "random_prune"):
        folder = seed_dir / f"branch_{branch}"
        for lvl in (1, 2):
            metrics = json.loads((folder / f"level_{lvl}" / "metrics.json").read_text())
            # Both controls keep exactly the trunk's number of weights (random_prune: its per-layer counts).
            assert metrics["density"] == trunk[lvl]["density"]
            assert metrics["remaining_weights"] == trunk[lvl]["remaining_weights"]
            mask = torch.load(folder / f"level_{lvl}" / "mask.pt", weights_only=True)
            assert sum(int(m.sum()) for m in mask.values()) == metrics["remaining_weights"]
        job = OmegaConf.load(folder / "config.yaml")  # the job's own resolved config
        assert job.branch == branch
        assert job.trainer.threads == max(1, CORES // 2) and job.trainer.progress_bar is False
        pids.add(int((folder / ".lock").read_text().split()[0]))  # the last holder of the branch's lock
    assert len(pids) == 2, "the two jobs should run in two joblib worker processes"
    summary = json.loads((seed_dir / "tickets.json").read_text())
    assert summary["branches"] == ["random_prune", "random_reinit"]
    assert all(set(r["controls"]) == {"random_prune", "random_reinit"} for r in summary["levels"][1:])
    assert not list(seed_dir.rglob("*.tmp"))
    assert sorted(p.name for p in tmp_path.glob(".hydra/multirun/*/*/*") if p.is_dir()) == ["0", "1"]


def slurm_config(*overrides: str, keep_hydra: bool = True):
    return compose_config(["launcher=slurm", "hydra.launcher.partition=gpu", *overrides], keep_hydra=keep_hydra)


def test_slurm_preset_composes_validates_and_builds_an_sbatch_script(tmp_path, monkeypatch, capsys):
    """The real plugin launches the sweep up to submission; the sbatch script it would submit is checked instead."""
    import submitit
    from hydra.utils import instantiate

    cfg = slurm_config(f"root={tmp_path}", "trainer=gpu")
    launcher_cfg = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher_cfg["_target_"].endswith("SlurmLauncher")
    assert launcher_cfg["gpus_per_node"] == 1 and launcher_cfg["tasks_per_node"] == 1
    assert Path(launcher_cfg["submitit_folder"]).is_relative_to(tmp_path)  # under the outputs root
    settings = OmegaConf.to_object(
        slurm_config(f"root={tmp_path}", "trainer=gpu", keep_hydra=False)
    )  # as a job sees it
    validate(settings)
    assert settings.trainer.threads == launcher_cfg["cpus_per_task"] == 4

    scripts = []

    def capture(executor, fn, *iterables):  # stands in for sbatch: keep the script, run nothing
        scripts.append(executor._executor._make_submission_file_text("python -m submitit.core._submit", "0"))
        return []

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # as if srun were here
    monkeypatch.setattr(submitit.AutoExecutor, "map_array", capture)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0)
    assert f"root={tmp_path} is under /tmp" in capsys.readouterr().err  # warned before submission
    (script,) = scripts
    for flag in (
        "--partition=gpu",
        "--gpus-per-node=1",
        "--cpus-per-task=4",
        "--ntasks-per-node=1",
        "--mem=16GB",
        "--time=240",
        "--job-name=lottery-default",
        f"--output={tmp_path}",
    ):
        assert f"#SBATCH {flag}" in script, flag


def test_slurm_with_cohorts_submits_one_array_task_per_cohort(tmp_path, monkeypatch):
    """hydra.launcher.cohorts=true: 2 seeds x 2 branches x 2 widths are 8 jobs and 2 cohorts (by width), so 2 array
    tasks, each holding its 4 jobs' composed configs; the sbatch script asks for what launcher=slurm asks for."""
    import submitit
    from hydra.utils import instantiate

    from hydra_plugins.lottery_cohort_launcher import submitit_cohorts
    from hydra_plugins.lottery_cohort_launcher.cohort_launcher import group_jobs

    def compose(config, hydra_context, job_overrides, initial_job_idx):  # Hydra's sweep composes; the test does
        configs = [slurm_config(f"root={tmp_path}", "trainer=gpu", *o) for o in job_overrides]
        tasks = [OmegaConf.to_container(slurm_config(f"root={tmp_path}", *o, keep_hydra=False)) for o in job_overrides]
        return configs, group_jobs(tasks)

    submitted = []

    def capture(executor, fn, *iterables):  # stands in for sbatch: keep the tasks and the script, run nothing
        submitted.append((fn, iterables[0]))
        submitted.append(executor._executor._make_submission_file_text("python -m submitit.core._submit", "0"))
        return [Finished([[{"level": 0}]] * len(task)) for task in iterables[0]]

    class Finished:  # a submitit job that has run: each job of the task returns its rows
        def __init__(self, rows):
            self.rows = rows

        def results(self):
            return [self.rows]

    monkeypatch.setattr(submitit_cohorts, "compose_cohorts", compose)
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    monkeypatch.setattr(submitit.AutoExecutor, "map_array", capture)
    cfg = slurm_config(f"root={tmp_path}", "trainer=gpu", "hydra.launcher.cohorts=true")
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=type("Context", (), {"callbacks": None})(), task_function=None, config=cfg)
    sweep = [
        [f"seed={s}", f"branch={b}", f"model.width={w}"]
        for w in (1, 2)
        for s in (0, 1)
        for b in ("none", "random_reinit")
    ]
    returns = launcher.launch(sweep, initial_job_idx=0)
    assert [r.overrides for r in returns] == sweep and all(r.return_value == [{"level": 0}] for r in returns)
    (task, groups), script = submitted
    assert isinstance(task, submitit_cohorts.CohortTask) and len(groups) == 2
    assert [(c.seed, c.branch, c.model.width) for c in groups[1]] == [
        (0, "none", 2.0),
        (0, "random_reinit", 2.0),
        (1, "none", 2.0),
        (1, "random_reinit", 2.0),
    ]
    for flag in ("--gpus-per-node=1", "--ntasks-per-node=1", "--time=240", "--job-name=lottery-default"):
        assert f"#SBATCH {flag}" in script, flag


def test_slurm_runs_a_multi_node_ddp_job_as_one_task_per_rank(tmp_path, monkeypatch):
    """trainer=ddp trainer.num_nodes=2 trainer.devices=4 asks SLURM for 2 nodes of 4 tasks (and GPUs): srun starts
    the 8 ranks, rank 0 drives (lottery/training/distributed.py)."""
    import submitit
    from hydra.utils import instantiate

    scripts = []
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    monkeypatch.setattr(
        submitit.AutoExecutor,
        "map_array",
        lambda executor, fn, *it: scripts.append(executor._executor._make_submission_file_text("python", "0")) or [],
    )
    cfg = slurm_config(f"root={tmp_path}", "trainer=ddp", "trainer.num_nodes=2", "trainer.devices=4")
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    launcher.launch([["seed=0"]], initial_job_idx=0)
    for flag in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4"):
        assert f"#SBATCH {flag}" in scripts[0], flag
    single = OmegaConf.to_container(slurm_config("trainer=ddp", "trainer.devices=2").hydra.launcher, resolve=True)
    assert (single["nodes"], single["tasks_per_node"]) == (1, 2)


def test_slurm_warns_about_a_root_each_node_has_its_own_of(tmp_path, capsys):
    from hydra_plugins.lottery_cohort_launcher.submitit_cohorts import warn_local_root

    assert warn_local_root(str(tmp_path / "outputs"))  # pytest's tmp_path is under /tmp
    assert "is under /tmp, which each node of a cluster has its own of" in capsys.readouterr().err
    assert not warn_local_root("/shared/lab/outputs")
    assert not warn_local_root("/home/me/outputs")
    assert not warn_local_root("/tmpfiles/outputs")  # a folder whose name only starts like /tmp


def test_slurm_asks_for_the_gpus_the_trainer_uses():
    gpus = lambda *o: OmegaConf.to_container(slurm_config(*o).hydra.launcher, resolve=True)["gpus_per_node"]  # noqa: E731
    assert gpus("trainer=cpu") == 0
    assert gpus("trainer=gpu", "trainer.devices=2") == 2
    assert gpus("trainer=gpu", "trainer.devices=[0,3]") == 2
    assert gpus("trainer=gpu", "hydra.launcher.gpus_per_node=8") == 8
    with pytest.raises(Exception, match="trainer.accelerator=auto.*hydra.launcher.gpus_per_node=<n>"):
        gpus("trainer.accelerator=auto")


@pytest.mark.parametrize("n_jobs,cores,threads", [(2, 2, 1), (2, 16, 8), (-1, 8, 1), (-2, 8, 8 // 7), (3, 2, 1)])
def test_joblib_preset_divides_the_cores_among_the_jobs(monkeypatch, n_jobs, cores, threads):
    monkeypatch.setattr(C.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    cfg = compose_config(["launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"])
    assert cfg.trainer.threads == threads


def test_slurm_cohorts_over_several_ranks_are_refused_before_submission(tmp_path, monkeypatch, capsys):
    """launcher=slurm hydra.launcher.cohorts=true trainer=ddp trainer.num_nodes=2: every rank of the array task would
    drive the cohort itself; refused before anything is submitted."""
    import submitit
    from hydra.utils import instantiate

    submitted = []
    monkeypatch.setattr(submitit.AutoExecutor, "map_array", lambda *a: submitted.append(a))
    cfg = slurm_config(f"root={tmp_path}", "trainer=ddp", "trainer.num_nodes=2", "hydra.launcher.cohorts=true")
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=type("Context", (), {"callbacks": None})(), task_function=None, config=cfg)
    with pytest.raises(SystemExit) as info:
        launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0)
    assert info.value.code == 2 and submitted == []
    err = capsys.readouterr().err
    assert "would start 4 ranks" in err and "hydra.launcher.cohorts=false" in err
    assert not (tmp_path / "default").exists()


@pytest.mark.parametrize("launcher", ["basic", "cohort"])
def test_a_sweep_with_one_bad_job_is_refused_before_any_job_starts(tmp_path, launcher):
    """hydra/sweeper=lottery composes and checks every job first: the good jobs before the bad ones do not train."""
    sweep = (f"launcher={launcher}", "seed=0,1", "optim.lr=0.001,-1", "train.duration=10it")
    proc = lottery("-m", *tiny(tmp_path / "out", *sweep), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "2 of the sweep's 4 jobs are refused, so none was started" in proc.stderr
    assert "job 1 (seed=0 optim.lr=-1" in proc.stderr and "job 3 (seed=1 optim.lr=-1" in proc.stderr
    assert "Invalid learning rate: -1.0" in proc.stderr
    assert not (tmp_path / "out").exists()  # no folder of any job, not even Hydra's multirun log
