"""Checks of a whole configuration that run before any training, so a bad value costs seconds, not a level.

Per-field checks that need the model or the data (unknown layers in pruning.ignore, a missing dataset folder) happen
where those are built, still before the first step; see the table in the README.
"""

from __future__ import annotations

from lottery.branches.controls import BRANCHES as CONTROL_BRANCHES
from lottery.config import LotteryConfig, ResNetConfig, VGGConfig
from lottery.core.duration import Duration
from lottery.core.lr_schedule import KINDS as SCHEDULES
from lottery.core.pruning import SCOPES, check_fraction
from lottery.core.schedule import SparsitySchedule
from lottery.data import DATASETS
from lottery.training.distributed import STRATEGIES

REWIND_MODES = ("weights", "lr", "finetune")
ANALYSES = ("instability", "early_bird")  # branches that analyse the trunk rather than control it
BRANCHES = ("none", *CONTROL_BRANCHES, *ANALYSES)
LOGGERS = ("wandb", "csv", "none")
WANDB_MODES = ("offline", "online", "disabled")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key, the value and the fix."""


def _one_of(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not one of {allowed}")


def sparsity_schedule(cfg: LotteryConfig) -> SparsitySchedule:
    p = cfg.pruning
    return SparsitySchedule.build(p.schedule, p.fraction, p.densities, p.target_density, p.over_levels)


def validate(cfg: LotteryConfig) -> None:
    if cfg.levels is not None and cfg.levels < 0:
        raise ConfigError(f"levels={cfg.levels} must be >= 0 (0 trains the dense network only)")
    if cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed} must be >= 0")
    for key in ("train.duration", "train.eval_every", "train.checkpoint_every", "rewind.step", "schedule.warmup"):
        section, field = key.split(".")
        Duration.parse(getattr(getattr(cfg, section), field))
    for m in cfg.schedule.milestones:
        Duration.parse(m)
    if Duration.parse(cfg.train.duration) == Duration():
        raise ConfigError(f"train.duration={cfg.train.duration!r} is zero; give a length such as '3000it' or '20ep'")
    if cfg.train.batch_size < 1:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} must be a positive number of examples")
    _one_of("data.name", cfg.data.name, DATASETS)
    _one_of("pruning.scope", cfg.pruning.scope, SCOPES)
    _one_of("pruning.strategy", cfg.pruning.strategy, ("magnitude", "structured"))
    schedule = sparsity_schedule(cfg)
    schedule.resolve_levels(cfg.levels)
    if schedule.kind == "fraction":
        check_fraction(cfg.pruning.fraction, "pruning.fraction")
    for pattern, rate in cfg.pruning.overrides.items():
        check_fraction(rate, f"pruning.overrides[{pattern!r}]")
    _one_of("rewind.mode", cfg.rewind.mode, REWIND_MODES)
    _one_of("schedule.name", cfg.schedule.name, SCHEDULES)
    _one_of("logger.kind", cfg.logger.kind, LOGGERS)
    _one_of("branch", cfg.branch, BRANCHES)
    if not 0.0 <= cfg.ticket.match_tolerance < 1.0:
        raise ConfigError(f"ticket.match_tolerance={cfg.ticket.match_tolerance} must lie in [0, 1) (0.01 = 1 point)")
    _one_of("logger.mode", cfg.logger.mode, WANDB_MODES)
    if cfg.lock_timeout is not None and cfg.lock_timeout < 0:
        raise ConfigError(
            f"lock_timeout={cfg.lock_timeout} must be >= 0 seconds (0 refuses at once), or null to wait as long as "
            "it takes"
        )
    check_analyses(cfg)
    check_trainer(cfg)
    if cfg.model.width <= 0:
        raise ConfigError(f"model.width={cfg.model.width} must be positive (1.0 is the published size)")
    check_depth(cfg)
    from lottery.structured.checks import check_structured  # transformers, in-context data, structured pruning

    check_structured(cfg)


def check_depth(cfg: LotteryConfig) -> None:
    """The vision models' depths, with the models' own messages, before the data is loaded."""
    from lottery.models.resnet import blocks_per_segment
    from lottery.models.vgg import PLANS

    if isinstance(cfg.model, ResNetConfig):
        try:
            blocks_per_segment(cfg.model.depth)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    if isinstance(cfg.model, VGGConfig) and cfg.model.depth not in PLANS:
        raise ConfigError(f"model.depth={cfg.model.depth} is not a VGG depth: use one of {sorted(PLANS)} (VGG-16: 16)")


def check_steps(cfg: LotteryConfig, total: int, rewind: int) -> None:
    """Checks that need the steps per epoch, i.e. the dataset and batch size."""
    if rewind >= total:
        raise ConfigError(
            f"rewind.step={cfg.rewind.step!r} is step {rewind}, at or past the end of training "
            f"(train.duration={cfg.train.duration!r} is {total} steps); rewind to an earlier point such as '0it'"
        )


def check_analyses(cfg: LotteryConfig) -> None:
    """The instability and early-bird settings; checked whichever branch runs, so a sweep fails before its first job."""
    ins, eb = cfg.instability, cfg.early_bird
    if ins.points < 2:
        raise ConfigError(f"instability.points={ins.points} must be at least 2 (the endpoints); the paper uses 30")
    if not 0.0 < ins.threshold < 1.0:
        raise ConfigError(f"instability.threshold={ins.threshold} must lie in (0, 1) (0.02 = 2 points of error)")
    if ins.levels is not None and any(level < 0 for level in ins.levels):
        raise ConfigError(f"instability.levels={list(ins.levels)} must be trunk levels >= 0, or null for all")
    if ins.bn_batches < 1:
        raise ConfigError(f"instability.bn_batches={ins.bn_batches} must be at least 1 batch")
    if cfg.branch == "instability" and cfg.rewind.mode != "weights":
        raise ConfigError(
            f"branch=instability needs rewind.mode=weights (copies trained from the rewind point k), not "
            f"rewind.mode={cfg.rewind.mode!r}; use rewind=weights or rewind=reset"
        )
    if cfg.branch == "early_bird" and cfg.rewind.mode != "weights":
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


def check_levels(cfg: LotteryConfig, levels: int) -> None:
    """Checks that need the run's number of pruning levels, resolved from `levels` and the schedule."""
    wanted = cfg.instability.levels
    beyond = sorted(level for level in (wanted or []) if level > levels)
    if cfg.branch == "instability" and beyond:
        raise ConfigError(
            f"instability.levels={list(wanted)} asks for levels {beyond}, but the run has levels 0..{levels}; "
            "raise levels= or drop them"
        )
    if cfg.branch == "early_bird":
        if levels < 1:
            raise ConfigError("branch=early_bird needs at least one pruning level; set levels= to 1 or more")
        if cfg.early_bird.level is not None and cfg.early_bird.level > levels:
            raise ConfigError(
                f"early_bird.level={cfg.early_bird.level} is beyond the run's last level {levels}; lower it or "
                "raise levels="
            )


def check_trainer(cfg: LotteryConfig) -> None:
    t = cfg.trainer
    _one_of("trainer.strategy", t.strategy, STRATEGIES)
    if t.strategy == "ddp":
        if not isinstance(t.devices, int) or t.devices < 1:
            raise ConfigError(
                f"trainer.devices={t.devices!r} must be a number of processes >= 1 for trainer.strategy=ddp"
            )
        if cfg.train.batch_size % t.devices:
            raise ConfigError(
                f"train.batch_size={cfg.train.batch_size} is the global batch and must divide evenly over "
                f"trainer.devices={t.devices} processes; use a multiple of {t.devices}"
            )


def check_augment(cfg: LotteryConfig, input_shape: tuple[int, ...]) -> None:
    """data.augment crops and flips images; it needs the dataset, so it is checked once the data is loaded."""
    if cfg.data.augment and len(input_shape) != 3:
        raise ConfigError(
            f"data.augment=true crops and flips images shaped (C, H, W), but data.name={cfg.data.name!r} has "
            f"examples shaped {input_shape}; set data.augment=false or use an image dataset such as cifar10"
        )
