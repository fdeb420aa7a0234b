"""The `lottery` command: a Hydra app that runs (or resumes) one IMP experiment per job.

    lottery                                     # the default: MLP on MNIST-1D, 10 levels of 20% global pruning
    lottery -m seed=0,1,2 pruning.fraction=0.2,0.3 model.width=0.5,1,2    # a multirun sweep
    lottery -m launcher=joblib seed=0,1 branch=none,random_reinit      # jobs side by side on this machine
    lottery -m launcher=slurm trainer=gpu hydra.launcher.partition=<p> seed=0,1,2   # a SLURM job array
    lottery experiment=lth_lenet_mnist          # a preset from conf/experiment/

Results land in outputs/<name>/<hash>/seed_<s>/level_<L>/; re-running the same command resumes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from lottery.config import register

register()

# The repository's conf/ folder (the package is installed in editable mode, see the README).
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean bad input: printed as one line and exit status 2, not a traceback."""
    from lottery.config import ConfigError
    from lottery.core.artifacts import ArtifactError
    from lottery.core.duration import DurationError
    from lottery.core.lr_schedule import ScheduleError
    from lottery.core.masks import MaskMismatchError
    from lottery.core.pruning import PruningConfigError
    from lottery.data import DatasetNotFoundError
    from lottery.guard import OutputFolderError, RunLockedError

    return (
        ArtifactError,
        ConfigError,
        DurationError,
        ScheduleError,
        MaskMismatchError,
        PruningConfigError,
        DatasetNotFoundError,
        OutputFolderError,
        RunLockedError,
    )


def use_threads(threads: int | None) -> None:
    """Cap torch's threads in this process (trainer.threads). By default torch runs one thread per core in every
    process, so jobs side by side on one machine oversubscribe its cores (the README's Threads section says how
    much that costs). None keeps torch's default."""
    from lottery.validate import check_threads

    check_threads(threads)
    if threads is None:
        return
    import torch

    torch.set_num_threads(threads)


def prepare_job(cfg: DictConfig) -> tuple[Any, dict[str, Any], str]:
    """(Setup, resolved config, its YAML) of one composed config: announced, validated, data loaded."""
    from lottery.setup import prepare

    settings = OmegaConf.to_object(cfg)  # the typed dataclasses; the driver never sees a DictConfig
    announce(settings)
    use_threads(settings.trainer.threads)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    optim_cfg = OmegaConf.to_container(cfg.optim, resolve=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return prepare(settings, model_cfg, optim_cfg), resolved, OmegaConf.to_yaml(cfg, resolve=True)


def run_config(cfg: DictConfig) -> list[dict[str, Any]]:
    """Run one composed config (what each Hydra job does); also the entry point for tests. Under a cluster launch
    (torchrun, srun: lottery/training/distributed.py) rank 0 runs it and the other ranks follow its fits."""
    from lottery.training import distributed
    from lottery.validate import validate

    launch = distributed.cluster_launch()
    if launch is None:
        return run_job(cfg)
    settings = OmegaConf.to_object(cfg)
    validate(settings)  # on every rank, before any rank waits for another: a bad setting stops them all alike
    use_threads(settings.trainer.threads)
    distributed.join(settings.trainer)
    if launch.rank == 0:
        bound = settings.trainer.wait_timeout
        if cfg.lock_timeout is None or cfg.lock_timeout > bound:
            cfg.lock_timeout = bound  # the followers stop after wait_timeout: rank 0 waits on a lock no longer
        return distributed.lead(lambda: run_job(cfg))
    print(f"rank {launch.rank} of {launch.world_size} ({launch.launcher}): training the fits rank 0 sends", flush=True)
    distributed.follow(launch, follower_fits(cfg, settings))
    return []


def follower_fits(cfg: DictConfig, settings: Any):
    """A follower's rebuild of rank 0's fits: this rank's Setup, built once from the same config and reading only
    (lottery/setup.build), and each fit rebuilt from its order (training/fit.follow_fit)."""
    from lottery.branches.registry import FIT_CALLBACKS
    from lottery.setup import build
    from lottery.training.fit import follow_fit

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    optim_cfg = OmegaConf.to_container(cfg.optim, resolve=True)
    built: list[Any] = []

    def rebuild(order: dict):
        if not built:  # at the first fit: a job whose rank 0 fits nothing (a study as loaded) loads nothing here
            built.append(build(settings, model_cfg, optim_cfg))
        return follow_fit(built[0], order, FIT_CALLBACKS)

    return rebuild


def run_job(cfg: DictConfig) -> list[dict[str, Any]]:
    """One composed config's whole run, in this process."""
    from lottery.core import artifacts
    from lottery.job import run
    from lottery.reports.table import print_ticket_table

    setup, resolved, config_yaml = prepare_job(cfg)
    rows = run(setup, resolved, config_yaml)
    if setup.paths.tickets.is_file():  # a pretrained model scored as loaded has no levels, so no tickets
        print_ticket_table(artifacts.read_json(setup.paths.tickets, "tickets"), title=f"{setup.paths.seed_dir}")
    return rows


def run_cohort_configs(jobs: list[tuple[Any, dict[str, Any], str]]) -> list[list[dict[str, Any]]]:
    """Run prepared jobs that differ only in seed as one cohort (launcher=cohort): the trunks together, then each
    job's branch and summary; returns each job's trunk rows, in order."""
    from lottery.branches.registry import BRANCHES
    from lottery.core import artifacts
    from lottery.job import run, run_cohort, run_cohort_branch
    from lottery.reports.table import print_ticket_table
    from lottery.structured.pretrained import scores_as_loaded

    trunks = {str(setup.paths.seed_dir): (setup, r, y) for setup, r, y in reversed(jobs)}  # one per seed
    trunk_jobs = sorted(trunks.values(), key=lambda job: str(job[0].paths.seed_dir))
    # a pretrained model scored as loaded has no trunk to train: its jobs go straight to `run` below
    trunk_jobs = [job for job in trunk_jobs if not scores_as_loaded(job[0].cfg)]
    if trunk_jobs:
        run_cohort([s for s, _, _ in trunk_jobs], [r for _, r, _ in trunk_jobs], [y for _, _, y in trunk_jobs])
    by_branch: dict[str, dict[str, tuple]] = {}
    for setup, r, y in jobs:
        branch = BRANCHES.get(setup.cfg.branch)
        if branch is not None and branch.control is not None:  # a control: its seeds pack like the trunks
            by_branch.setdefault(setup.cfg.branch, {})[str(setup.paths.seed_dir)] = (setup, r, y)
    for members in by_branch.values():
        packed = sorted(members.values(), key=lambda job: str(job[0].paths.seed_dir))
        run_cohort_branch([s for s, _, _ in packed], [r for _, r, _ in packed], [y for _, _, y in packed])
    out = []
    for setup, resolved, config_yaml in jobs:
        out.append(run(setup, resolved, config_yaml))
        if setup.paths.tickets.is_file():
            print_ticket_table(artifacts.read_json(setup.paths.tickets, "tickets"), title=f"{setup.paths.seed_dir}")
    seeds_summary([setup for setup, _, _ in jobs])
    return out


def seeds_summary(setups: list[Any]) -> dict[str, Any] | None:
    """With two or more seeds of one configuration: the table across them, printed and written to
    <experiment>/seeds.json (lottery/reports/seeds.py)."""
    from lottery.console import print_table
    from lottery.core import artifacts
    from lottery.reports.seeds import across_seeds, seeds_table

    tickets = {s.cfg.seed: s.paths.tickets for s in setups if s.paths.tickets.is_file()}
    if len(tickets) < 2:
        return None
    summary = across_seeds({seed: artifacts.read_json(path, "tickets") for seed, path in tickets.items()})
    experiment = setups[0].paths.experiment
    artifacts.write_json(summary, experiment / "seeds.json")
    print_table(seeds_table(summary, f"{experiment}: {len(tickets)} seeds"))
    return summary


def announce(settings: Any) -> None:
    """The start block's header (lottery/reports/start.py): printed before the data loads, so the output folder is
    the first thing a run says."""
    from hydra.core.hydra_config import HydraConfig

    from lottery.core.layout import RunPaths
    from lottery.reports.start import header_lines, print_lines
    from lottery.setup import experiment_hash

    h, inputs = experiment_hash(settings)
    seed_dir = RunPaths(root=settings.root, name=settings.name, hash=h, seed=settings.seed).seed_dir
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    print_lines(header_lines(settings.name, h, settings.seed, settings.branch, seed_dir, inputs, overrides))


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    from lottery.training.distributed import WaitTimeout

    try:
        run_config(cfg)
    except user_errors() as err:
        print(f"lottery: error: {err}", file=sys.stderr)
        sys.exit(2)
    except WaitTimeout as err:  # another rank of a cluster launch is lost: this one stops, saying so
        print(f"lottery: error: {err}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
