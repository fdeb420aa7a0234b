"""launcher=slurm and launcher=slurm_local: Hydra's submitit launchers (one array task per job, requeue on timeout),
and with `hydra.launcher.cohorts=true` one array task per cohort.

    lottery -m launcher=slurm hydra.launcher.cohorts=true seed=0,1,2,3,4,5,6,7 model.width=0.5,1
    lottery -m launcher=slurm_local hydra.launcher.cohorts=true seed=0,1 branch=none,random_reinit

With cohorts, jobs that agree in everything but seed and branch (cohort_launcher.group_jobs, the grouping of
launcher=cohort) become one array task, which trains their trunks as one stack per level and then runs each job's
branch and summary (lottery.cli.run_cohort_configs); a job alone in its group is a task of its own. So the example
above is 2 tasks of 8 seeds, not 16 tasks. Each task's files land in the same hash folders as a local run's. A task
that gets submitit's time-limit signal is requeued with the same jobs (`checkpoint` below) and resumes them where they
stopped, as a job of Hydra's own launcher does. Without cohorts (the default) Hydra's launcher runs unchanged.
"""

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, setup_globals
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.lottery_cohort_launcher.cohort_launcher import compose_cohorts, job_return, prepare_composed

log = logging.getLogger(__name__)
MODULE = "hydra_plugins.lottery_cohort_launcher.submitit_cohorts"


@dataclass
class LotterySlurmConf(SlurmQueueConf):
    _target_: str = f"{MODULE}.SlurmLauncher"
    cohorts: bool = False  # one array task per cohort (jobs differing only in seed and branch) instead of per job


@dataclass
class LotteryLocalConf(LocalQueueConf):
    _target_: str = f"{MODULE}.LocalLauncher"
    cohorts: bool = False


ConfigStore.instance().store(group="hydra/launcher", name="lottery_slurm", node=LotterySlurmConf)
ConfigStore.instance().store(group="hydra/launcher", name="lottery_local", node=LotteryLocalConf)


class CohortTask:
    """One array task: a cohort's composed job configs, prepared and trained in the task's process. Picklable (it
    travels to the cluster node), and checkpointable: on submitit's time-limit signal the same call is requeued.
    The sweep's Hydra callbacks (hydra.callbacks) hear on_job_start and on_job_end of every job, as under Hydra's
    own launcher, whose run_job calls them."""

    def __init__(self, callbacks: Any) -> None:
        self.callbacks = callbacks

    def __call__(self, configs: list[DictConfig], singleton_state: dict) -> list[Any]:
        from lottery.cli import prepare_job, run_cohort_configs

        Singleton.set_state(singleton_state)
        setup_globals()
        for config in configs:
            self.callbacks.on_job_start(config=config, task_function=None)
        rows = run_cohort_configs([prepare_composed(config, prepare_job) for config in configs])
        for config, job_rows in zip(configs, rows, strict=True):
            self.callbacks.on_job_end(config=config, job_return=job_return(config, [], job_rows))
        return rows

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class _CohortsLauncher(BaseSubmititLauncher):
    def __init__(self, cohorts: bool = False, **params: Any) -> None:
        super().__init__(**params)
        self.cohorts = cohorts

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        if not self.cohorts:
            return super().launch(job_overrides, initial_job_idx)
        ranks = int(self.params.get("nodes") or 1) * int(self.params.get("tasks_per_node") or 1)
        if ranks > 1:  # each rank of the array task would run CohortTask: every rank would drive the whole cohort
            print(
                f"lottery: error: hydra.launcher.cohorts=true trains each cohort in one process per array task, but "
                f"this task would start {ranks} ranks (nodes={self.params.get('nodes')}, tasks_per_node="
                f"{self.params.get('tasks_per_node')}: trainer=ddp or trainer.num_nodes > 1), each of which would "
                "drive the cohort itself; use hydra.launcher.cohorts=false (each job its own task, trained over its "
                "ranks) or one process per task (trainer=gpu or trainer=cpu). Nothing was submitted",
                file=sys.stderr,
            )
            sys.exit(2)
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configs, groups = compose_cohorts(self.config, self.hydra_context, job_overrides, initial_job_idx)
        log.info(
            f"Submitit '{self._EXECUTOR}': {len(job_overrides)} jobs as {len(groups)} array task(s), one per cohort"
        )
        tasks = [[configs[i] for i in members] for members in groups]
        task = CohortTask(self.hydra_context.callbacks)
        jobs = self.executor().map_array(task, tasks, [Singleton.get_state()] * len(tasks))
        returns: list[JobReturn | None] = [None] * len(configs)
        for members, job in zip(groups, jobs, strict=True):
            for i, rows in zip(members, job.results()[0], strict=True):
                returns[i] = job_return(configs[i], job_overrides[i], rows)
        return [r for r in returns if r is not None]

    def executor(self) -> Any:
        """The executor Hydra's launcher builds (BaseSubmititLauncher.launch builds it inline, so it is rebuilt here
        the same way): the folder and max_num_timeout at construction, the queue's parameters after."""
        import submitit

        init_keys = {"submitit_folder", "max_num_timeout"}
        init = {"folder": self.params["submitit_folder"]}
        if "max_num_timeout" in self.params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = self.params["max_num_timeout"]
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{(k if k in shared else f"{self._EXECUTOR}_{k}"): v for k, v in self.params.items() if k not in init_keys}
        )
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        return executor


class SlurmLauncher(_CohortsLauncher):
    _EXECUTOR = "slurm"

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        warn_local_root(str(self.config.root))
        return super().launch(job_overrides, initial_job_idx)


# Folders every machine has its own of: a cluster job's results written there are lost to the submitting machine and
# to every later job (resume, trunks shared between jobs, lottery-compare).
NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm")


def warn_local_root(root: str) -> bool:
    """Warn (on stderr, before anything is submitted) when `root` is a folder local to each machine."""
    resolved = Path(root).expanduser().resolve()
    local = next((d for d in NODE_LOCAL if resolved.is_relative_to(d)), None)
    if local is None:
        return False
    message = (
        f"lottery: warning: root={root} is under {local}, which each node of a cluster has its own of: the jobs' "
        "results, resume checkpoints and shared trunks would not be seen by the other nodes or by this one. Use a "
        "folder on a shared file system (root=/path/on/shared/fs)."
    )
    log.warning(message)
    print(message, file=sys.stderr)
    return True


class LocalLauncher(_CohortsLauncher):
    _EXECUTOR = "local"
