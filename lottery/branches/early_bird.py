"""branch=early_bird: tickets drawn when the magnitude mask stops changing (You et al. 2020, "Drawing Early-Bird
Tickets"), retrained like the trunk's tickets so that the only difference is the mask.

1. Search: a dense run from the seed's theta_0 with the run's data order (so its first steps are exactly the trunk's
   level 0). Every `early_bird.every` steps the mask of the watched level's density is drawn with the run's own
   pruning plan (scope, ignored layers, per-layer rates) and its normalised Hamming distance to the previous one is
   recorded; the run stops at the first step where the last `window` distances are all below `threshold`, and its
   weights there are the early-bird weights. If the detector never fires, the search ends with the dense training and
   the record says so.
2. Tickets: for every trunk level L >= 1, the early-bird weights pruned straight to level L's density (one shot), then
   trained from the rewind point k like the trunk's level L.
3. Report: seed_<s>/branch_early_bird/early_bird.json compares each early-bird ticket with the IMP ticket at the same
   level, and the steps spent finding each mask: L full trainings for IMP, the search's steps for the early bird.

Outputs, in branch_early_bird/ (or branch_early_bird_<setting><value>.../ when early_bird settings differ from their
defaults, so that a sweep over them keeps each search apart): search/ (weights.pt at the firing step; search.json,
written last), level_<L>/ (a level's usual files; `lottery-compare` and tickets.json treat the line like a control),
early_bird.json.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lightning as L

from lottery.branches.controls import Control
from lottery.config import ConfigError, EarlyBirdConfig
from lottery.console import console
from lottery.core import artifacts
from lottery.core import masks as M
from lottery.core.duration import Duration, steps
from lottery.core.early_bird import EarlyBirdDetector
from lottery.core.layout import LevelPaths
from lottery.training import fit
from lottery.training.results import plain_state, remove_checkpoint
from lottery.training.starts import start_step, ticket_start

if TYPE_CHECKING:
    from lottery.branches.spec import BranchSpec
    from lottery.training.tracking import Tracker

BRANCH = "early_bird"  # the branch; its folder is branch_<branch_folder(cfg)>/, the name plus changed settings


def branch_folder(cfg: Any) -> str:
    """The branch's folder (and W&B run) name: its name, plus every early_bird setting that differs from its default,
    so that a sweep over them keeps each search apart (branch_early_bird_threshold0.02/)."""
    changed = [
        f"_{f.name}{getattr(cfg.early_bird, f.name)}"
        for f in dataclasses.fields(EarlyBirdConfig)
        if getattr(cfg.early_bird, f.name) != f.default
    ]
    return BRANCH + "".join(changed)


def check(cfg: Any) -> None:
    """The early-bird settings; checked whichever branch runs, so a sweep fails before its first job."""
    eb = cfg.early_bird
    if cfg.branch == BRANCH and cfg.rewind.mode != "weights":
        raise ConfigError(
            f"branch=early_bird retrains its tickets from the rewind point like the trunk: it needs "
            f"rewind.mode=weights, not rewind.mode={cfg.rewind.mode!r}"
        )
    if Duration.parse(eb.every) == Duration():
        raise ConfigError(f"early_bird.every={eb.every!r} is zero; give an interval such as '50it' or '1ep'")
    if eb.window < 1:
        raise ConfigError(f"early_bird.window={eb.window} must be at least 1 distance (You et al. use 5)")
    if not 0.0 < eb.threshold <= 1.0:
        raise ConfigError(f"early_bird.threshold={eb.threshold} must lie in (0, 1] (You et al. use 0.1)")
    if eb.level is not None and eb.level < 1:
        raise ConfigError(f"early_bird.level={eb.level} must be a pruned level >= 1, or null for the last level")


def check_levels(cfg: Any, levels: int) -> None:
    """At least one pruning level, and early_bird.level among them (when this branch runs)."""
    if levels < 1:
        raise ConfigError("branch=early_bird needs at least one pruning level; set levels= to 1 or more")
    if cfg.early_bird.level is not None and cfg.early_bird.level > levels:
        raise ConfigError(
            f"early_bird.level={cfg.early_bird.level} is beyond the run's last level {levels}; lower it or "
            "raise levels="
        )


class EarlyBirdCallback(L.Callback):
    """Draws the watched mask every `every` steps, feeds the detector and stops the fit when it fires. Its state (the
    detector's distances and last mask) goes into the level's resume checkpoints, so a killed search resumes exactly.
    The followers of a cluster launch make it again by name (`remade_by`, branches/registry.FIT_CALLBACKS)."""

    remade_by = "early_bird"

    def __init__(self, detector: EarlyBirdDetector, every: int, draw_mask: Callable[[dict], M.Mask]) -> None:
        self.detector = detector
        self.every = max(1, every)
        self.draw_mask = draw_mask

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.detector.fired_step is not None:  # resumed from a checkpoint saved at the firing step itself
            trainer.should_stop = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every:
            return
        weights = pl_module.prunable_of(0)  # the search is a stack of one
        if self.detector.update(step, self.draw_mask(weights)):
            trainer.should_stop = True  # the loop ends after this step: the network holds the step's weights

    def state_dict(self) -> dict[str, Any]:
        return self.detector.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.detector.load_state_dict(state_dict)


def watched_level(setup: BranchSpec) -> int:
    """early_bird.level, or the last level; validate.check_levels has checked it exists before any training."""
    return setup.levels if setup.cfg.early_bird.level is None else setup.cfg.early_bird.level


def search_paths(setup: BranchSpec) -> LevelPaths:
    return LevelPaths(setup.paths.branch_dir(branch_folder(setup.cfg)) / "search")


def search_callback(setup: BranchSpec) -> EarlyBirdCallback:
    """The search's callback, made from the run's settings alone (so a cluster follower makes the same one: it stops
    every rank's loop at the same step)."""
    eb = setup.cfg.early_bird
    level = watched_level(setup)
    dense = setup.dense_mask()

    def draw_mask(weights: dict) -> M.Mask:
        return setup.plan.prune({n: w.cpu() for n, w in weights.items()}, dense, level)

    every = steps(eb.every, setup.datamodule.steps_per_epoch)
    return EarlyBirdCallback(EarlyBirdDetector(window=eb.window, threshold=eb.threshold), every, draw_mask)


def run_search(setup: BranchSpec, tracker: Tracker) -> dict[str, Any]:
    """The dense search run (resumable); returns its record, with the early-bird weights in search/weights.pt."""
    lp = search_paths(setup)
    record_path = lp.dir / "search.json"
    if record_path.is_file():
        return artifacts.read_json(record_path, "early-bird search record")
    eb = setup.cfg.early_bird
    level = watched_level(setup)
    callback = search_callback(setup)
    detector = callback.detector
    spec = fit.LevelFit(lp, 0, setup.dense_mask(), callbacks=(callback,), label="early-bird search")
    module = fit.fit_level(setup, spec, tracker)
    weights = plain_state(module.network)
    fired = detector.fired_step is not None
    record = {
        "watched_level": level,
        "watched_density": setup.plan.report(callback.draw_mask(weights), level)["density"],
        "every": callback.every,
        "window": eb.window,
        "threshold": eb.threshold,
        "fired": fired,
        "early_bird_step": detector.fired_step if fired else setup.total_steps,
        "steps": detector.steps,
        "distances": detector.distances,
    }
    artifacts.save_torch(weights, lp.weights)
    artifacts.write_json(record, record_path)  # last: marks the search finished
    remove_checkpoint(lp.last_checkpoint)
    if not fired:
        console(stderr=True).print(
            f"[yellow]early bird: the mask distances never stayed below {eb.threshold} for {eb.window} snapshots; "
            "the tickets are drawn from the fully trained dense network (see search.json's distances)[/]"
        )
    return record


def early_bird_mask(setup: BranchSpec, level: int) -> M.Mask:
    """The early-bird weights pruned in one shot to level L's density, with the trunk's pruning plan."""
    weights = artifacts.load_torch(search_paths(setup).weights, "early-bird weights")
    dense = setup.dense_mask()
    return setup.plan.prune({n: weights[n] for n in dense}, dense, level)


EARLY_BIRD = Control(BRANCH, early_bird_mask, ticket_start)  # retrained like the IMP ticket


def trained_steps(setup: BranchSpec, level: int) -> int:
    """The steps trunk level `level` really trained: T for level 0, T - k for a level rewound to step k."""
    metrics = artifacts.read_json(setup.paths.level(level).metrics, "level metrics")
    if "steps_trained" in metrics:
        return int(metrics["steps_trained"])
    return setup.total_steps - start_step(setup, level)  # levels written before steps_trained existed


def report(setup: BranchSpec, search: dict[str, Any]) -> dict[str, Any]:
    """Each early-bird ticket beside the IMP ticket of its level, with the training steps each spent on its mask."""
    rows = []
    for level in range(1, setup.levels + 1):
        ticket = setup.paths.level(level)
        bird = setup.paths.branch_level(branch_folder(setup.cfg), level)
        if not (ticket.done and bird.done):
            continue
        imp = artifacts.read_json(ticket.metrics, "level metrics")
        eb = artifacts.read_json(bird.metrics, "early-bird level metrics")
        imp_search = sum(trained_steps(setup, lvl) for lvl in range(level))  # levels 0..L-1 drew level L's mask
        rows.append(
            {
                "level": level,
                "density": eb["density"],
                "early_bird_test_acc": eb["test_acc"],
                "imp_test_acc": imp["test_acc"],
                "difference": eb["test_acc"] - imp["test_acc"],
                "imp_search_steps": imp_search,
                "early_bird_search_steps": search["early_bird_step"],
                "steps_saved": imp_search - search["early_bird_step"],
            }
        )
    summary = {**search, "train_steps_per_ticket": setup.total_steps - setup.rewind_step, "levels": rows}
    artifacts.write_json(summary, setup.paths.branch_dir(branch_folder(setup.cfg)) / "early_bird.json")
    return summary


def run_early_bird(setup: BranchSpec, tracker: Tracker) -> dict[str, Any]:
    search = run_search(setup, tracker)
    tracker.log({"early_bird/step": search["early_bird_step"], "early_bird/fired": int(search["fired"])})
    EARLY_BIRD.run(setup, tracker, folder=branch_folder(setup.cfg))
    return report(setup, search)
