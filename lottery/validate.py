"""Checks of a whole configuration that run before any training, so a bad value costs seconds, not a level.

Per-field checks that need the model or the data (unknown layers in pruning.ignore, a missing dataset folder) happen
where those are built, still before the first step; see the table in the README.
"""

from __future__ import annotations

from lottery.branches.registry import BRANCHES, NAMES
from lottery.config import ConfigError, LotteryConfig, ResNetConfig, VGGConfig
from lottery.core.duration import Duration
from lottery.core.lr_schedule import KINDS as SCHEDULES
from lottery.core.pruning import SCOPES, check_fraction
from lottery.core.schedule import SparsitySchedule
from lottery.data import DATASETS
from lottery.structured.checks import check_structured
from lottery.training.distributed import STRATEGIES, ClusterLaunch, cluster_launch

REWIND_MODES = ("weights", "lr", "finetune")
LOGGERS = ("wandb", "csv", "none")
WANDB_MODES = ("offline", "online", "disabled")


def _one_of(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not one of {allowed}")


def sparsity_schedule(cfg: LotteryConfig) -> SparsitySchedule:
    p = cfg.pruning
    return SparsitySchedule.build(p.schedule, p.fraction, p.densities, p.target_density, p.over_levels)


def validate(cfg: LotteryConfig) -> None:
    from lottery.structured.pretrained import scores_as_loaded

    if cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed} must be >= 0")
    if not scores_as_loaded(cfg):  # a study of a pretrained model as loaded trains nothing: these do not apply
        check_training(cfg)
    _one_of("data.name", cfg.data.name, DATASETS)
    _one_of("pruning.strategy", cfg.pruning.strategy, ("magnitude", "structured"))
    _one_of("ticket.metric", cfg.ticket.metric, ("final", "early_stop"))
    _one_of("logger.kind", cfg.logger.kind, LOGGERS)
    _one_of("branch", cfg.branch, NAMES)
    if not 0.0 <= cfg.ticket.match_tolerance < 1.0:
        raise ConfigError(f"ticket.match_tolerance={cfg.ticket.match_tolerance} must lie in [0, 1) (0.01 = 1 point)")
    _one_of("logger.mode", cfg.logger.mode, WANDB_MODES)
    if cfg.lock_timeout is not None and cfg.lock_timeout < 0:
        raise ConfigError(
            f"lock_timeout={cfg.lock_timeout} must be >= 0 seconds (0 refuses at once), or null to wait as long as "
            "it takes"
        )
    check_branches(cfg)
    check_trainer(cfg)
    if cfg.model.width <= 0:
        raise ConfigError(f"model.width={cfg.model.width} must be positive (1.0 is the published size)")
    check_depth(cfg)
    check_fetched_model(cfg)
    check_structured(cfg)  # transformers, in-context data, structured pruning


def check_training(cfg: LotteryConfig) -> None:
    """The settings of training, rewinding and the sparsity schedule (every run but a study of a model as loaded)."""
    if cfg.levels is not None and cfg.levels < 0:
        raise ConfigError(f"levels={cfg.levels} must be >= 0 (0 trains the dense network only)")
    for key in ("train.duration", "train.eval_every", "train.checkpoint_every", "rewind.step", "schedule.warmup"):
        section, field = key.split(".")
        value = getattr(getattr(cfg, section), field)
        if value is not None or key != "train.checkpoint_every":  # null: checkpoints by the clock only
            Duration.parse(value)
    seconds = cfg.train.checkpoint_seconds
    if seconds is not None and seconds < 0:
        raise ConfigError(
            f"train.checkpoint_seconds={seconds} must be >= 0 (seconds of training between resume checkpoints; "
            "null: no clock, only train.checkpoint_every)"
        )
    if seconds is None and cfg.train.checkpoint_every is None:
        raise ConfigError(
            "train.checkpoint_seconds=null and train.checkpoint_every=null leave a level no resume checkpoint; "
            "set one of them (e.g. train.checkpoint_seconds=30 or train.checkpoint_every=500it)"
        )
    for m in cfg.schedule.milestones:
        Duration.parse(m)
    if Duration.parse(cfg.train.duration) == Duration():
        raise ConfigError(f"train.duration={cfg.train.duration!r} is zero; give a length such as '3000it' or '20ep'")
    if cfg.train.batch_size < 1:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} must be a positive number of examples")
    _one_of("pruning.scope", cfg.pruning.scope, SCOPES)
    schedule = sparsity_schedule(cfg)
    schedule.resolve_levels(cfg.levels)
    if schedule.kind == "fraction":
        check_fraction(cfg.pruning.fraction, "pruning.fraction")
    for pattern, rate in cfg.pruning.overrides.items():
        check_fraction(rate, f"pruning.overrides[{pattern!r}]")
    _one_of("rewind.mode", cfg.rewind.mode, REWIND_MODES)
    finetune_lr = cfg.rewind.finetune_lr
    if finetune_lr is not None and cfg.rewind.mode != "finetune":
        raise ConfigError(
            f"rewind.finetune_lr={finetune_lr} is the LR of fine-tuning, which rewind.mode={cfg.rewind.mode!r} does "
            "not use; drop it, or use rewind=finetune"
        )
    if finetune_lr is not None and not finetune_lr > 0:
        raise ConfigError(f"rewind.finetune_lr={finetune_lr} must be a positive learning rate, e.g. 1e-4")
    _one_of("schedule.name", cfg.schedule.name, SCHEDULES)


def check_fetched_model(cfg: LotteryConfig) -> None:
    """A catalog model's preset (model=smollm2_135m, ...): its file is fetched and has the catalog's sha256, before
    check_hf reads its header; otherwise the error names `lottery-models fetch NAME` (or `--force`)."""
    name = getattr(cfg.model, "fetched", None)
    if name is None:
        return
    from lottery.models.fetch import ModelError, check_fetched

    try:
        check_fetched(name, cfg.model.path, cfg.model.gguf_file)
    except ModelError as err:
        raise ConfigError(str(err)) from None


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


def check_finetune(cfg: LotteryConfig, final_multiplier: float) -> None:
    """Fine-tuning at the schedule's final LR trains nothing when the schedule ends at 0 (cosine, linear)."""
    if cfg.rewind.mode == "finetune" and cfg.rewind.finetune_lr is None and final_multiplier == 0.0:
        raise ConfigError(
            f"rewind.mode=finetune trains at the schedule's final LR, and schedule.name={cfg.schedule.name!r} ends at "
            "0, so fine-tuning would change nothing; give the fine-tuning LR with rewind.finetune_lr=<lr> (e.g. a "
            "tenth of optim.lr), or use a schedule that ends above 0 (schedule=constant or step)"
        )


def check_branches(cfg: LotteryConfig) -> None:
    """Every branch's own settings (lottery/branches/registry.py), whichever branch runs, so a sweep fails before its
    first job."""
    for branch in BRANCHES.values():
        branch.check(cfg)


def check_levels(cfg: LotteryConfig, levels: int) -> None:
    """Checks that need the run's number of pruning levels, resolved from `levels` and the schedule."""
    if cfg.branch in BRANCHES:
        BRANCHES[cfg.branch].check_levels(cfg, levels)


def check_threads(threads: int | None) -> None:
    """trainer.threads, checked before torch's threads are set (the first thing a job does)."""
    if threads is not None and threads < 1:
        raise ConfigError(
            f"trainer.threads={threads} must be a positive number of threads, or null for torch's default "
            "(one per core)"
        )


def check_trainer(cfg: LotteryConfig) -> None:
    t = cfg.trainer
    check_threads(t.threads)
    _one_of("trainer.strategy", t.strategy, STRATEGIES)
    if not isinstance(t.num_nodes, int) or t.num_nodes < 1:
        raise ConfigError(f"trainer.num_nodes={t.num_nodes!r} must be a number of machines >= 1")
    if t.num_nodes > 1 and t.strategy != "ddp":
        raise ConfigError(
            f"trainer.num_nodes={t.num_nodes} spreads data-parallel training over machines, which needs "
            f"trainer.strategy=ddp (use trainer=ddp), not trainer.strategy={t.strategy!r}"
        )
    if t.strategy == "ddp":
        if not isinstance(t.devices, int) or t.devices < 1:
            raise ConfigError(
                f"trainer.devices={t.devices!r} must be a number of processes >= 1 for trainer.strategy=ddp"
            )
        processes = t.num_nodes * t.devices
        if cfg.train.batch_size % processes:
            where = f"trainer.devices={t.devices}" + (f" x trainer.num_nodes={t.num_nodes}" if t.num_nodes > 1 else "")
            raise ConfigError(
                f"train.batch_size={cfg.train.batch_size} is the global batch and must divide evenly over "
                f"{where} processes; use a multiple of {processes}"
            )
    check_cluster(cfg, cluster_launch())


def check_cluster(cfg: LotteryConfig, launch: ClusterLaunch | None) -> None:
    """The trainer against the ranks a cluster launcher (torchrun, srun) started, on every rank alike, before any
    rank waits for another."""
    t = cfg.trainer
    if not t.wait_timeout > 0:
        raise ConfigError(
            f"trainer.wait_timeout={t.wait_timeout} must be a positive number of seconds a rank of a cluster launch "
            "waits for another before it stops, e.g. 1800"
        )
    if launch is None:
        if t.num_nodes > 1:
            raise ConfigError(
                f"trainer.num_nodes={t.num_nodes} needs its ranks started by a cluster launcher, one command per "
                f"machine, and this process was not: run `torchrun --nnodes={t.num_nodes} --nproc-per-node="
                f"{t.devices} --rdzv-backend=c10d --rdzv-endpoint=<first machine>:<port> $(which lottery) ...` on "
                "each machine, or srun under SLURM (README, Clusters); on one machine use trainer.num_nodes=1 "
                "trainer.devices=<processes>"
            )
        return
    if t.strategy != "ddp":
        raise ConfigError(
            f"{launch.launcher} started this process as rank {launch.rank} of {launch.world_size}, but "
            f"trainer.strategy={t.strategy!r} trains in one process; use trainer=ddp with trainer.num_nodes x "
            f"trainer.devices = {launch.world_size}"
        )
    if t.num_nodes * t.devices != launch.world_size:
        raise ConfigError(
            f"{launch.launcher} started {launch.world_size} ranks, but trainer.num_nodes={t.num_nodes} x "
            f"trainer.devices={t.devices} = {t.num_nodes * t.devices}; set them to the machines and the processes "
            "per machine the launcher started"
        )


def check_augment(cfg: LotteryConfig, input_shape: tuple[int, ...]) -> None:
    """data.augment crops and flips images; it needs the dataset, so it is checked once the data is loaded."""
    if cfg.data.augment and len(input_shape) != 3:
        raise ConfigError(
            f"data.augment=true crops and flips images shaped (C, H, W), but data.name={cfg.data.name!r} has "
            f"examples shaped {input_shape}; set data.augment=false or use an image dataset such as cifar10"
        )
