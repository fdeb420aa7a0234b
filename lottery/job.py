"""One job of a sweep: the IMP trunk of one seed, then its branch (lottery/branches/registry.py), then the seed's
ticket summary, each under its own lock, so that jobs sharing a trunk (same hash and seed) take turns instead of
training it twice or writing over each other's files:

    seed_<s>/.lock              the trunk: level_<L>/, init.pt, rewind.ckpt, levels.csv, config.yaml
    seed_<s>/branch_<b>/.lock   one branch (a control or an analysis): everything under branch_<b>/
    seed_<s>/.tickets.lock      tickets.json and the W&B summary, recomputed from what is on disk (held briefly)

A job that finds a lock held waits (lottery/guard.py says once which pid it waits for), then carries on from what the
holder left on disk: finished levels (those with a metrics.json) are skipped, so the second of two jobs needing one
trunk reads it and goes straight to its own branch. Branches of one seed run side by side: each writes only under
its own folder and logs to its own W&B run (one per hash, seed and branch; training/tracking.py). A job holds one
lock at a time, so jobs cannot deadlock. While a branch trains, another job may only add trunk levels beyond the ones
the branch reads; finished levels are never rewritten.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lottery.branches.controls import run_controls
from lottery.branches.registry import BRANCHES
from lottery.console import say
from lottery.core import artifacts
from lottery.core.layout import level_dirs, level_of
from lottery.guard import exclusive
from lottery.imp import run_trunk, run_trunks
from lottery.reports import tickets
from lottery.reports.start import found_line
from lottery.structured.pretrained import run_pretrained, scores_as_loaded
from lottery.structured.run import finish_structured
from lottery.structured.transfer import run_transfer
from lottery.training.progress import checkpoint_step
from lottery.training.tracking import Tracker

if TYPE_CHECKING:
    from lottery.core.layout import RunPaths
    from lottery.setup import Setup

TICKETS_TMP = ".tickets.json.*.tmp"  # tickets.json's temporary files (lottery/core/artifacts.py names them)


def run(setup: Setup, resolved: dict[str, Any], config_yaml: str) -> list[dict[str, Any]]:
    """Run (or resume) every trunk level of one seed, then the configured control branch; returns the trunk's
    per-level metrics and leaves seed_<s>/tickets.json up to date."""
    paths, cfg = setup.paths, setup.cfg
    branch = BRANCHES.get(cfg.branch)  # None: branch=none, the trunk alone
    folder = branch.folder_of(cfg) if branch is not None else cfg.branch  # the branch's folder and W&B run
    wait = cfg.lock_timeout
    trunk_tracker = Tracker(cfg, paths, resolved, branch="trunk")
    trackers = [trunk_tracker] if branch is None else [trunk_tracker, Tracker(cfg, paths, resolved, branch=folder)]
    job_tracker = trackers[-1]  # the run that gets this job's summary
    try:
        if scores_as_loaded(cfg):  # the pretrained model as loaded: no levels, no weights, the grid is the study
            with ExitStack() as locks:
                hold(locks, paths.seed_dir, "the pretrained study", wait, paths.seed_dir.rglob(".*.tmp"), config_yaml)
                run_pretrained(setup, trunk_tracker)
                run_transfer(setup)  # what else its removals break (structured.transfer; nothing when empty)
            return []
        with ExitStack() as locks:
            hold_trunks(locks, [setup], [config_yaml])
            rows = run_trunk(setup, trunk_tracker)
        if branch is not None:
            with ExitStack() as locks:
                hold_branches(locks, [setup], folder, [config_yaml])
                branch.run(setup, job_tracker)
        if cfg.pruning.strategy == "structured":  # the no-retrain grid and seed_<s>/structured.json
            with exclusive(paths.seed_dir / ".structured.lock", "the structured report", wait):
                finish_structured(setup)
        # Serialised so that the last job to finish writes a summary that includes every job's levels.
        with exclusive(paths.seed_dir / ".tickets.lock", "the ticket summary", wait):
            _remove(paths.seed_dir.glob(TICKETS_TMP))
            summary = tickets.write(paths, cfg.ticket.match_tolerance, cfg.ticket.metric)
            if job_tracker.run is not None:
                _log_summary(setup, summary, job_tracker)
    finally:
        for tracker in trackers:
            tracker.finish()
    return rows


def run_cohort(setups: Sequence[Setup], resolved: Sequence[dict[str, Any]], config_yaml: Sequence[str]) -> None:
    """Jobs that differ only in seed (launcher=cohort): their trunks train as one stack (lottery/training/stack.py),
    level by level, under every seed's trunk lock (taken in folder order, so two cohorts sharing seeds cannot
    deadlock, and a solo job holding one lock at a time cannot either); then each job's branch and ticket summary run
    as in `run`, which finds the trunk finished."""
    order = sorted(range(len(setups)), key=lambda i: str(setups[i].paths.seed_dir))
    trackers = [Tracker(setups[i].cfg, setups[i].paths, resolved[i], branch="trunk") for i in order]
    try:
        with ExitStack() as locks:
            hold_trunks(locks, [setups[i] for i in order], [config_yaml[i] for i in order])
            run_trunks([setups[i] for i in order], trackers)
    finally:
        for tracker in trackers:
            tracker.finish()


def run_cohort_branch(setups: Sequence[Setup], resolved: Sequence[dict[str, Any]], config_yaml: Sequence[str]) -> None:
    """The control branch (random_reinit, random_prune, oneshot) of several seeds' finished trunks as one cohort per
    level, under every seed's branch lock (in folder order); `run` then finds its levels finished."""
    branch = BRANCHES[setups[0].cfg.branch]
    assert branch.control is not None, f"branch {branch.name} is not a control"
    folder = branch.folder_of(setups[0].cfg)
    order = sorted(range(len(setups)), key=lambda i: str(setups[i].paths.seed_dir))
    trackers = [Tracker(setups[i].cfg, setups[i].paths, resolved[i], branch=folder) for i in order]
    try:
        with ExitStack() as locks:
            hold_branches(locks, [setups[i] for i in order], folder, [config_yaml[i] for i in order])
            run_controls([setups[i] for i in order], branch.control, trackers, folder)
    finally:
        for tracker in trackers:
            tracker.finish()


def hold(locks: ExitStack, folder: Path, what: str, timeout, temporaries: Iterable[Path], config_yaml: str) -> None:
    """The steps every writer of a folder takes first, solo or in a cohort: its lock (held until `locks` closes), the
    temporary files a killed writer left (never valid artifacts: the lock says nobody writes them now) removed, and
    the job's own config written as folder/config.yaml."""
    locks.enter_context(exclusive(folder / ".lock", what, timeout))
    _remove(temporaries)
    artifacts.write_text(config_yaml, folder / "config.yaml")


def hold_trunks(locks: ExitStack, setups: Sequence[Setup], config_yaml: Sequence[str]) -> None:
    """Every seed's trunk folder, in the order given (folder order for a cohort: two cohorts cannot deadlock)."""
    for setup, text in zip(setups, config_yaml, strict=True):
        paths = setup.paths
        hold(locks, paths.seed_dir, "the trunk", setup.cfg.lock_timeout, _trunk_temporaries(paths), text)
        say(found(setup))


def hold_branches(locks: ExitStack, setups: Sequence[Setup], folder: str, config_yaml: Sequence[str]) -> None:
    """Every seed's branch folder: each job's own config, branch and all, goes there."""
    for setup, text in zip(setups, config_yaml, strict=True):
        branch_dir = setup.paths.branch_dir(folder)
        hold(locks, branch_dir, f"branch {folder}", setup.cfg.lock_timeout, branch_dir.rglob(".*.tmp"), text)


def found(setup: Setup) -> str:
    """The start block's last line: the trunk's finished levels and where an interrupted one resumes (read under the
    trunk's lock, so it is what this job will really do)."""
    paths = setup.paths
    done = [level for level in range(setup.levels + 1) if paths.level(level).done]
    resume = None
    for level in range(setup.levels + 1):
        checkpoint = paths.level(level).last_checkpoint
        if not paths.level(level).done and checkpoint.is_file():
            step = checkpoint_step(checkpoint)
            resume = (level, step, setup.total_steps, checkpoint.relative_to(paths.seed_dir))
            break
    return found_line(setup.levels, done, resume, setup.total_steps)


def _trunk_temporaries(paths: RunPaths) -> Iterable[Path]:
    """Temporary files the trunk writes: beside its artifacts in seed_<s>/ and under level_<L>/ (not those of
    branches, tickets.json or W&B, which other jobs may be writing right now)."""
    top = (p for p in paths.seed_dir.glob(".*.tmp") if not p.match(TICKETS_TMP))
    return [*top, *(tmp for d in paths.level_dirs() for tmp in d.glob("**/.*.tmp"))]


def _remove(files: Iterable[Path]) -> None:
    for stale in list(files):
        stale.unlink(missing_ok=True)


def _log_summary(setup: Setup, summary: dict[str, Any], tracker: Tracker) -> None:
    paths, branch = setup.paths, BRANCHES.get(setup.cfg.branch)
    figure = paths.seed_dir / "accuracy_vs_density.png"
    plot_tickets(summary, figure)
    own = branch is not None and branch.own_levels  # the job's summary run shows its own levels' masks
    folder = paths.branch_dir(branch.folder_of(setup.cfg)) if own else paths.seed_dir
    masks = {level_of(d): d / "mask.pt" for d in level_dirs(folder)} if setup.cfg.ticket.log_masks else None
    tracker.log_summary(summary, figure, masks)


def plot_tickets(summary: dict[str, Any], path: Path) -> None:
    """Test accuracy against density for the ticket and each control of one seed (the figure sent to W&B)."""
    from lottery.reports.plotting import plot

    key = summary.get("metric_key", "test_acc")

    def point(record: dict[str, Any]) -> dict[str, Any]:
        return {"density": record["density"], "mean": record[key], "std": 0.0, "seeds": 1}

    # levels written before the metric existed have None for it and are left out
    lines = {"ticket": [point(r) for r in summary["levels"] if r.get(key) is not None]}
    for b in summary["branches"]:
        controls = [r["controls"][b] for r in summary["levels"] if b in r["controls"]]
        lines[b] = [point(c) for c in controls if c.get(key) is not None]
    plot({k: v for k, v in lines.items() if v}, key, path)
