"""launcher=cohort: a Hydra launcher that trains the jobs of a multirun that differ only in seed as one cohort.

    lottery -m launcher=cohort seed=0,1,2,3,4,5,6,7
    lottery -m launcher=cohort seed=0,1,2,3 branch=none,random_reinit,random_prune

Every job's config is composed first; jobs whose configs agree in everything but `seed` and `branch` form a group.
A group's IMP trunks (one per distinct seed) train together as one vectorized fit per level
(lottery/training/stack.py), then each job runs its branch and ticket summary as under the basic launcher, finding
its trunk finished. Groups run one after another; a job that differs in anything else (width, pruning rate, model)
is its own group. Hydra discovers launchers only under the `hydra_plugins` namespace package, hence this folder; the
work is done by lottery.cli.
"""

import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

# What may differ inside one group: a trunk cohort packs seeds; branches share their seed's trunk.
FREE = ("seed", "branch")


@dataclass
class CohortLauncherConf:
    _target_: str = "hydra_plugins.lottery_cohort_launcher.cohort_launcher.CohortLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="cohort", node=CohortLauncherConf)


def cohort_key(task: dict[str, Any]) -> str:
    """What a job shares with the jobs of its cohort: its resolved config without seed and branch."""
    return json.dumps({k: v for k, v in task.items() if k not in FREE}, sort_keys=True, default=str)


def group_jobs(tasks: Sequence[dict[str, Any]]) -> list[list[int]]:
    """Indices of the jobs of each cohort, in the sweep's order (first appearance of each group)."""
    groups: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        groups.setdefault(cohort_key(task), []).append(i)
    return list(groups.values())


class CohortLauncher(Launcher):
    def __init__(self) -> None:
        super().__init__()
        self.config: DictConfig | None = None
        self.hydra_context = None
        self.task_function = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from lottery.cli import prepare_job, run_cohort_configs, user_errors
        from lottery.training.distributed import cluster_launch

        launch = cluster_launch()
        if launch is not None:  # every rank would prepare, claim and train the whole cohort itself
            print(
                f"lottery: error: launcher=cohort trains a cohort in one process, but {launch.launcher} started "
                f"{launch.world_size} ranks; under a cluster launch use the basic launcher (trainer=ddp trains each "
                "seed over the ranks), or launcher=slurm to spread cohorts over a cluster's jobs",
                file=sys.stderr,
            )
            sys.exit(2)

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        configs, groups = compose_cohorts(self.config, self.hydra_context, job_overrides, initial_job_idx)
        log.info(f"Launching {len(job_overrides)} jobs as {len(groups)} cohort(s)")
        returns: list[JobReturn | None] = [None] * len(configs)
        for members in groups:
            try:
                rows = run_cohort_configs([prepare_composed(configs[i], prepare_job) for i in members])
            except user_errors() as err:
                print(f"lottery: error: {err}", file=sys.stderr)
                sys.exit(2)
            for i, job_rows in zip(members, rows, strict=True):
                returns[i] = job_return(configs[i], job_overrides[i], job_rows)
        return [r for r in returns if r is not None]


def compose_cohorts(
    config: DictConfig, hydra_context: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> tuple[list[DictConfig], list[list[int]]]:
    """Every job's composed config (with its `hydra` node) and the indices of each cohort's jobs."""
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    configs, tasks = [], []
    for idx, overrides in enumerate(job_overrides):
        job = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(job):
            job.hydra.job.id = job.hydra.job.num = initial_job_idx + idx
        HydraConfig.instance().set_config(job)  # `${hydra:...}` in a job's config resolves against its own
        configs.append(job)
        tasks.append(OmegaConf.to_container(_task(job), resolve=True))
    return configs, group_jobs(tasks)


def prepare_composed(config: DictConfig, prepare_job):
    """lottery.cli.prepare_job of one composed job config, with `${hydra:...}` resolving against its own."""
    HydraConfig.instance().set_config(config)
    return prepare_job(_task(config))


def _task(config: DictConfig) -> DictConfig:
    """What the job's task function would receive: the config without its `hydra` node."""
    task = config.copy()
    with open_dict(task):
        del task["hydra"]
    return task


def job_return(config: DictConfig, overrides: Sequence[str], rows: Any) -> JobReturn:
    ret = JobReturn()
    ret.overrides = list(overrides)
    ret.hydra_cfg = config
    ret.cfg = _task(config)
    ret.working_dir = os.getcwd()
    ret.task_name = config.hydra.job.name
    ret.status = JobStatus.COMPLETED
    ret.return_value = rows
    return ret
