"""branch=instability: linear mode connectivity of the trunk's levels (Frankle et al. 2020, "Linear Mode Connectivity
and the Lottery Ticket Hypothesis").

For each analysed level L (0: the dense network; L >= 1: the IMP ticket with its mask), two copies are trained from
the same rewind point k with different data orders, i.e. different SGD noise:

    copy a  the trunk's own level L: trained from step k with the run's data order (level 0 from step 0, which is the
            same training: its first k steps are exactly what the rewind checkpoint holds)
    copy b  trained here from the rewind checkpoint with the level's mask and a data order of another seed

The test error is then measured at `instability.points` evenly spaced points of the straight line between them, and
the error barrier (max along the path minus the endpoints' mean) says whether the level is stable (under
`instability.threshold`, 2% in the paper). Sweeping `rewind.step` shows the earliest k from which training is stable;
`lottery-compare` plots barrier and ticket accuracy against k.

Outputs: seed_<s>/branch_instability/level_<L>/copy_b/ (a level's usual files), level_<L>/instability.json (the
curve and the barrier; written last, it marks the level analysed), and branch_instability/instability.csv.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from rich.table import Table

from lottery.config import ConfigError
from lottery.console import print_table
from lottery.core import artifacts
from lottery.core.interpolation import alphas, error_barrier, interpolate
from lottery.core.layout import LevelPaths
from lottery.core.seeds import derive_seed
from lottery.training import fit, results
from lottery.training.module import evaluate_network
from lottery.training.starts import rewind_start

if TYPE_CHECKING:
    from lottery.branches.spec import BranchSpec
    from lottery.training.tracking import Tracker

BRANCH = "instability"
COLUMNS = ("level", "density", "rewind_step", "error_a", "error_b", "barrier", "loss_barrier", "stable")


def check(cfg: Any) -> None:
    """The instability settings; checked whichever branch runs, so a sweep fails before its first job."""
    ins = cfg.instability
    if ins.points < 2:
        raise ConfigError(f"instability.points={ins.points} must be at least 2 (the endpoints); the paper uses 30")
    if not 0.0 < ins.threshold < 1.0:
        raise ConfigError(f"instability.threshold={ins.threshold} must lie in (0, 1) (0.02 = 2 points of error)")
    if ins.levels is not None and any(level < 0 for level in ins.levels):
        raise ConfigError(f"instability.levels={list(ins.levels)} must be trunk levels >= 0, or null for all")
    if ins.bn_batches < 1:
        raise ConfigError(f"instability.bn_batches={ins.bn_batches} must be at least 1 batch")
    if cfg.branch == BRANCH and cfg.rewind.mode != "weights":
        raise ConfigError(
            f"branch=instability needs rewind.mode=weights (copies trained from the rewind point k), not "
            f"rewind.mode={cfg.rewind.mode!r}; use rewind=weights or rewind=reset"
        )


def check_levels(cfg: Any, levels: int) -> None:
    """instability.levels within the run's levels 0..levels (when this branch runs)."""
    wanted = cfg.instability.levels
    beyond = sorted(level for level in (wanted or []) if level > levels)
    if beyond:
        raise ConfigError(
            f"instability.levels={list(wanted)} asks for levels {beyond}, but the run has levels 0..{levels}; "
            "raise levels= or drop them"
        )


def copy_seed(seed: int) -> int:
    """The data-order seed of copy b: derived from the run seed, distinct from every run seed's own stream."""
    return derive_seed(seed, 0x5EED, 2)


def analysed_levels(setup: BranchSpec) -> list[int]:
    """instability.levels, or every level; validate.check_levels has checked they exist before any training."""
    wanted = setup.cfg.instability.levels
    return list(range(setup.levels + 1)) if wanted is None else sorted(set(wanted))


def device_of(setup: BranchSpec) -> torch.device:
    gpu = setup.cfg.trainer.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


@torch.no_grad()
def reestimate_batchnorm(network: torch.nn.Module, x_train: torch.Tensor, batch_size: int, batches: int) -> None:
    """Interpolated BatchNorm statistics are not the statistics of the interpolated network; recompute them as a
    cumulative average over the first `batches` training batches (the split is already shuffled by the carve)."""
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    device = next(network.parameters()).device
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    network.train()
    for i in range(batches):
        chunk = x_train[i * batch_size : (i + 1) * batch_size]
        if len(chunk) == 0:
            break
        network(chunk.to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


def interpolation_curve(
    setup: BranchSpec, state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor], points: int
) -> dict[str, list[float]]:
    """Test error and loss at each interpolation point, measured exactly as a level's final test accuracy."""
    dm, device = setup.datamodule, device_of(setup)
    network = setup.network().to(device)
    curve: dict[str, list[float]] = {"alpha": [], "test_error": [], "test_loss": []}
    for alpha in alphas(points):
        network.load_state_dict(interpolate(state_a, state_b, alpha))
        reestimate_batchnorm(network, dm.x_train, dm.batch_size, setup.cfg.instability.bn_batches)
        task = getattr(dm, "task", None)  # in-context tasks score with their own metrics (lottery/data/tasks.py)
        acc, loss = evaluate_network(network, dm.x_test, dm.y_test, dm.num_classes, device, task=task)
        curve["alpha"].append(alpha)
        curve["test_error"].append(1.0 - acc)
        curve["test_loss"].append(loss)
    return curve


def analyse_level(setup: BranchSpec, level: int, tracker: Tracker) -> dict[str, Any]:
    paths, cfg = setup.paths, setup.cfg.instability
    trunk = paths.level(level)
    if not trunk.done:
        raise artifacts.ArtifactError(
            f"branch=instability needs the trunk's level {level} in {trunk.dir}, which is not finished"
        )
    out_dir = paths.branch_level(BRANCH, level).dir
    record_path = out_dir / "instability.json"
    if record_path.is_file():
        record = artifacts.read_json(record_path, "instability record")
        settings = ("points", "threshold", "bn_batches")
        if all(record.get(k) == getattr(cfg, k) for k in settings):
            return record  # recomputed (from the two copies on disk, no training) when the analysis settings change
    copy_b = LevelPaths(out_dir / "copy_b")
    mask = artifacts.load_torch(trunk.mask, "trunk mask")
    if not copy_b.done:
        spec = fit.LevelFit(
            copy_b, level, mask, rewind_start(setup), data_seed=copy_seed(setup.cfg.seed), label="instability copy b"
        )
        results.finish_level(setup, spec, fit.fit_level(setup, spec, tracker), tracker, key=False)
    metrics_a = artifacts.read_json(trunk.metrics, "trunk level metrics")
    metrics_b = artifacts.read_json(copy_b.metrics, "copy b metrics")
    state_a = artifacts.load_torch(trunk.weights, "trunk weights")
    state_b = artifacts.load_torch(copy_b.weights, "copy b weights")
    curve = interpolation_curve(setup, state_a, state_b, cfg.points)
    errors = curve["test_error"]
    barrier = error_barrier(errors)
    record = {
        "level": level,
        "density": metrics_a["density"],
        "rewind_step": setup.rewind_step,
        "points": cfg.points,
        "threshold": cfg.threshold,
        "bn_batches": cfg.bn_batches,
        "error_a": errors[0],
        "error_b": errors[-1],
        "test_acc_a": metrics_a["test_acc"],
        "test_acc_b": metrics_b["test_acc"],
        "barrier": barrier,
        "loss_barrier": error_barrier(curve["test_loss"]),
        "stable": barrier < cfg.threshold,
        "data_seeds": {"a": setup.cfg.seed, "b": copy_seed(setup.cfg.seed)},
        **curve,
    }
    artifacts.write_json(record, record_path)  # last: marks the level analysed
    tracker.log({f"instability/{k}": record[k] for k in ("level", "density", "barrier", "loss_barrier")})
    return record


def run_instability(setup: BranchSpec, tracker: Tracker) -> list[dict[str, Any]]:
    """Analyse (or resume analysing) every requested level; the trunk's levels must be finished."""
    records = [analyse_level(setup, level, tracker) for level in analysed_levels(setup)]
    artifacts.write_csv(records, setup.paths.branch_dir(BRANCH) / "instability.csv", COLUMNS)
    if setup.cfg.trainer.progress_bar:
        print_table(instability_table(records, f"{setup.paths.seed_dir} · instability (k = {setup.rewind_step})"))
    return records


def instability_table(records: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in ("level", "density", "error a", "error b", "barrier", "stable"):
        table.add_column(column, justify="right")
    for r in records:
        table.add_row(
            str(r["level"]),
            f"{r['density']:.2%}",
            f"{r['error_a']:.2%}",
            f"{r['error_b']:.2%}",
            f"{r['barrier']:.2%}",
            "yes" if r["stable"] else "no",
        )
    if records:
        first = records[0]
        table.caption = f"stable: test-error barrier under {first['threshold']:.1%} on {first['points']} points"
    return table
