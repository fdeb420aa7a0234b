"""Typed config schemas: Hydra validates every composed config against these, so a typo or a wrong type fails at
compose time, and the entry point converts the result once into these dataclasses (the IMP driver never sees a
DictConfig).

Fields marked `metadata={"hash": False}` do not change results (paths, devices, loggers, the seed and the number of
levels) and stay out of the experiment hash; see lottery/core/hashing.py. Units are in the comments.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

NO_HASH = {"hash": False}


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key, the value and the fix."""


def without_name(node: dict[str, Any]) -> dict[str, Any]:
    """A model/optimizer config minus `name` (the stable key the hash uses) and `fetched` (FetchedHFConfig's catalog
    name): keys, not constructor arguments."""
    return {k: v for k, v in node.items() if k not in ("name", "fetched")}


# ---- model: one schema per architecture family; `name` is the stable key hashed instead of the import path.
@dataclass
class ModelConfig:
    _target_: str = MISSING
    name: str = MISSING
    width: float = 1.0  # multiplier on every hidden layer's units/channels; 1.0 is the published size


@dataclass
class MLPConfig(ModelConfig):
    _target_: str = "lottery.models.MLP"
    hidden: list[int] = field(default_factory=lambda: [100, 100])  # hidden units per layer, before `width`


@dataclass
class ConvConfig(ModelConfig):
    _target_: str = "lottery.models.ConvNet"
    blocks: list[int] = field(default_factory=lambda: [64, 128])  # channels per block of two 3x3 convs + max-pool
    fc: list[int] = field(default_factory=lambda: [256, 256])  # hidden units of the classifier


@dataclass
class ResNetConfig(ModelConfig):
    _target_: str = "lottery.models.ResNet"
    depth: int = 20  # layers with weights, 6n+2 (n blocks per segment): 20, 32, 44, 56, 110; `width` scales 16/32/64


@dataclass
class VGGConfig(ModelConfig):
    _target_: str = "lottery.models.VGG"
    depth: int = 16  # 11 | 13 | 16 | 19 (open_lth's cifar_vgg plans); `width` scales every conv's channels


@dataclass
class TransformerConfig(ModelConfig):
    _target_: str = "lottery.models.Transformer"
    d_model: int = 64  # residual stream width, before `width`; split evenly over the heads
    n_layers: int = 2  # pre-norm blocks of attention + MLP
    n_heads: int = 4  # attention heads per layer
    d_mlp: int = 256  # MLP hidden units per layer, before `width`
    tied: bool = False  # token tasks: the output head reuses the token embedding
    positions: str = "learned"  # learned: absolute position embeddings (GPT-2, OPT) | rotary (RoPE, as in LLaMA)


@dataclass
class HFConfig(ModelConfig):
    """A pretrained Hugging Face causal LM (lottery/models/hf.py; needs `pip install -e '.[hf]'`)."""

    _target_: str = "lottery.models.hf.HFCausalLM"
    path: str = MISSING  # a folder written by save_pretrained, or a hub id such as facebook/opt-1.3b
    dtype: str = "float32"  # float32 | bfloat16 | float16: the weights' dtype (bfloat16 halves memory on a GPU)
    token_offset: int = 0  # token tasks with their own vocabulary (icl_recall): task token i is model token offset+i
    gguf_file: str | None = None  # a GGUF file inside model.path, loaded (dequantized) by transformers' GGUF support
    # local files only; null: when model.path is a folder or HF_HUB_OFFLINE=1. Not hashed: where files come from.
    local_files_only: bool | None = field(default=None, metadata=NO_HASH)


@dataclass
class FetchedHFConfig(HFConfig):
    """A model of the catalog (lottery/models/catalog.py) with its preset conf/model/<fetched>.yaml: model=hf on the
    file `lottery-models fetch <fetched>` caches; model.path is its cache folder, ${lottery.model_folder:<fetched>}.
    The catalog name is hashed and the folder is not (it differs per machine): the file is pinned by its sha256,
    checked before anything loads (lottery/validate.py). HFConfig itself is unchanged, so no old hash moves."""

    fetched: str = MISSING  # the catalog name, e.g. smollm2_135m
    path: str = field(default=MISSING, metadata=NO_HASH)


def model_folder(name: str) -> str:
    """The cache folder of catalog model `name` ($LOTTERY_MODELS/<name> or ~/.cache/lottery/models/<name>)."""
    from lottery.models.catalog import folder

    return str(folder(name))


# ---- data
@dataclass
class DataConfig:
    name: str = MISSING  # mnist1d | digits | mnist | fashion_mnist | cifar10 | synthetic_cifar10
    val_size: int = 500  # examples carved from the training split for validation (early-stopping metrics)
    split_seed: int = 0  # seeds the validation carve, the same for every run seed so seeds are comparable
    # Generated datasets only: examples generated. mnist1d: 80% train, 20% test; synthetic_cifar10: 5/6 train, 1/6 test
    num_samples: int = 5000
    # Training batches of images get a random crop (padding 4) and horizontal flip, on the batch's device
    # (lottery/data/augment.py); the standard CIFAR-10 augmentation. Changes results, so it is hashed (when true).
    augment: bool = False
    root: str = field(default="data", metadata=NO_HASH)  # folder of the dataset files (mnist, cifar10, ...)
    download: bool = field(default=False, metadata=NO_HASH)  # fetch missing files, verifying their checksums


@dataclass
class RecallDataConfig(DataConfig):
    """Associative recall prompts (lottery/data/icl.py): keys, each followed by its pair; repeated keys are queries."""

    num_train: int = 40000  # prompts in the training pool (the validation split is carved from it)
    num_test: int = 2000  # held-out prompts that score each level
    data_seed: int = 1234  # seeds the prompts, the same for every run seed
    n_keys: int = 16  # distinct key tokens
    n_values: int = 16  # distinct value tokens (chance accuracy is 1 / n_values)
    n_pairs: int = 24  # key-value pairs per prompt (sequence length 2 * n_pairs - 1)
    format: str = "pair"  # pair: a pair is one token (one attention layer suffices) | split: an induction task


@dataclass
class RegressionDataConfig(DataConfig):
    """In-context linear regression prompts (Garg et al. 2022): x_1 y_1 ... x_K, y = w.x + noise, w per prompt."""

    num_train: int = 40000
    num_test: int = 2000
    data_seed: int = 1234
    n_dims: int = 5  # dimension d of x and w
    n_points: int = 20  # (x, y) pairs per prompt (sequence length 2 * n_points - 1)
    noise_std: float = 0.0  # standard deviation of the label noise
    acc_tolerance: float = 0.1  # a query counts as correct when (prediction - y)^2 / d is below this


@dataclass
class TextDataConfig(DataConfig):
    """Few-shot text prompts from the word lists shipped with the package (lottery/data/text_icl.py), tokenized by the
    model's own tokenizer: `x_1 -> y_1 \\n ... x_k ->` and the answer ` y`, scored by exact match of its tokens."""

    name: str = "icl_text"
    task: str = "antonyms"  # a word list of lottery/data/word_lists/ (antonyms, capitals, capitalise, ...)
    # Your own word list instead: a file of `x<TAB>y` lines (blank lines and # comments skipped). Overrides `task`
    # (reports then name the task by the file's stem). Hashed as the path given: edit the file, rename it too.
    task_file: str | None = None
    num_train: int = 2000  # prompts in the training pool (fine-tuning, and the gradient score's prompts)
    num_test: int = 200  # held-out prompts that score each level
    data_seed: int = 1234  # seeds the pairs' train/test split and every prompt, the same for every run seed
    shots: list[int] = field(default_factory=lambda: [0, 1, 2, 4])  # in-context examples per prompt, cycled
    test_fraction: float = 0.3  # share of the task's pairs kept for test queries (never shown in training prompts)
    tokenizer: str = field(default=MISSING, metadata=NO_HASH)  # the tokenizer's folder or hub id: ${model.path}
    # the GGUF file in that folder holding the tokenizer: ${model.gguf_file}. Not hashed: model.gguf_file is.
    tokenizer_gguf: str | None = field(default=None, metadata=NO_HASH)


@dataclass
class LMTextDataConfig(DataConfig):
    """Language modelling on plain text (lottery/data/lm_text.py): documents separated by blank lines, tokenized by the
    model's own tokenizer, cut into windows; next-token accuracy and loss (perplexity = exp(loss))."""

    name: str = "lm_text"
    # The text file. Hashed as the path given (it changes results): edit the file, rename it too.
    path: str = ""
    context: int = 128  # tokens per window at most (a document longer than that is cut into several)
    test_fraction: float = 0.2  # share of the documents whose windows are test windows (split by document)
    num_test: int = 1000  # test windows at most (the first of the shuffled test documents)
    data_seed: int = 1234  # seeds the documents' train/test split, the same for every run seed
    val_size: int = 8  # training windows carved for validation (a small text has few windows)
    tokenizer: str = field(default=MISSING, metadata=NO_HASH)  # the tokenizer's folder or hub id: ${model.path}
    # the GGUF file in that folder holding the tokenizer: ${model.gguf_file}. Not hashed: model.gguf_file is.
    tokenizer_gguf: str | None = field(default=None, metadata=NO_HASH)


# ---- optimizer: built with hydra.utils.instantiate as a partial, completed with the model's parameters
@dataclass
class OptimConfig:
    _target_: str = MISSING
    _partial_: bool = True
    name: str = MISSING
    lr: float = MISSING  # base learning rate, before the schedule's multiplier
    weight_decay: float = 0.0  # L2 coefficient, coupled as in torch.optim


@dataclass
class AdamConfig(OptimConfig):
    _target_: str = "torch.optim.Adam"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class SGDConfig(OptimConfig):
    _target_: str = "torch.optim.SGD"
    momentum: float = 0.0
    nesterov: bool = False


# ---- LR schedule, as a multiplier of the base LR; durations like '80ep' or '500it'
@dataclass
class ScheduleConfig:
    name: str = "constant"  # constant | step | cosine | linear
    warmup: str = "0it"  # linear warm-up from 0
    milestones: list[str] = field(default_factory=list)  # step schedule: multiply by gamma at each of these
    gamma: float = 0.1


# ---- pruning
@dataclass
class PruningConfig:
    strategy: str = "magnitude"
    scope: str = "global"  # global: one ranking over all prunable weights | layerwise: each layer on its own
    schedule: str = "fraction"  # fraction | densities | geometric | oneshot (see lottery/core/schedule.py)
    fraction: float = 0.2  # fraction schedule: share of the *remaining* weights pruned per level, in (0, 1)
    overrides: dict[str, float] = field(default_factory=dict)  # fraction schedule, layerwise: {fc3: 0.1, "conv*": 0.15}
    ignore: list[str] = field(default_factory=list)  # layer patterns never pruned, e.g. [fc3]
    densities: list[float] = field(default_factory=list)  # densities schedule: target density of levels 1, 2, ...
    target_density: float | None = None  # geometric / oneshot: the density to reach (0.01 keeps 1% of the weights)
    over_levels: int | None = None  # geometric: the number of levels in which to reach target_density


# ---- rewinding
@dataclass
class RewindConfig:
    mode: str = "weights"  # weights: rewind weights+state to step k | lr: keep weights, replay LR from k | finetune
    step: str = "0it"  # the rewind point k; 0it is the original LTH reset to initialisation
    # mode=finetune: the constant LR of fine-tuning (absolute, like optim.lr); null: the schedule's final LR, which
    # must then be above 0 (cosine and linear schedules end at 0 and need this set)
    finetune_lr: float | None = None


# ---- training of each level
@dataclass
class TrainConfig:
    duration: str = "3000it"  # training length of every level
    batch_size: int = 100
    eval_every: str = "100it"  # validation interval (best_val_acc and its step are measured at these points)
    precision: str = "32-true"  # Lightning precision, e.g. bf16-mixed on a GPU; changes results, so it is hashed
    # Resume points inside a level (last.ckpt): at most `checkpoint_seconds` of training is redone after a kill
    # (null: no clock), and also every `checkpoint_every` steps if set (e.g. 500it; null: by the clock only). Both
    # are exact: a level resumes bit for bit from whatever step it was saved at.
    checkpoint_every: str | None = field(default=None, metadata=NO_HASH)
    checkpoint_seconds: float | None = field(default=30.0, metadata=NO_HASH)
    log_every: int = field(default=50, metadata=NO_HASH)  # steps between logged training-loss values
    # Level 0's network kept at these steps as seed_<s>/series/step_<n>.ckpt (lottery/core/series.py): a list of
    # steps, geometric (1, 2, 4, ...) or geometric:<first>; a no-retrain study then runs at every point. Not hashed:
    # keeping a copy changes nothing that trains.
    save_at: Any = field(default_factory=list, metadata=NO_HASH)
    print_every_eval: bool = field(default=False, metadata=NO_HASH)  # print a line at every evaluation


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"  # cpu | gpu | auto
    devices: Any = 1
    # auto: one process | ddp: data-parallel over `devices` processes, spawned per level (training/distributed.py)
    strategy: str = "auto"
    # Machines of a trainer=ddp run whose ranks a cluster launcher starts (torchrun, srun): num_nodes x devices
    # processes in all, each running the `lottery` command (training/distributed.py). 1: this machine only.
    num_nodes: int = 1
    # Seconds any rank of a cluster launch (torchrun, srun) waits for another before it stops with a message naming
    # itself, what it waited for and this setting: a follower for rank 0's next fit (rank 0 prunes, rewinds and reports
    # between fits meanwhile), every rank inside a fit for the others' gradients, rank 0 for a trunk lock. A lost or
    # frozen rank then ends every other rank within this bound, not a week. Raise it when work between fits is longer.
    wait_timeout: float = field(default=1800.0, metadata=NO_HASH)
    deterministic: bool = True  # bit-identical resumes on CPU need deterministic kernels
    progress_bar: bool = True
    # torch intra-op threads of this process; null: torch's default, one per core (conf/trainer/cpu.yaml sets 1).
    # Jobs side by side on one machine must share its cores (oversubscribed threads wait on each other; README,
    # Threads): launcher=joblib sets cores // n_jobs, launcher=slurm the task's cpus_per_task; launcher=cohort keeps it.
    threads: int | None = None
    # Speed switches (training/fast.py). Not hashed: they change speed and at most float rounding, not the recipe.
    # Move the train/val/test tensors to the GPU once per run (no DataLoader workers, no per-step copies); no-op on CPU.
    data_on_device: bool = True
    channels_last: bool = False  # NHWC memory layout for conv weights and image batches (faster convs on GPUs)
    compile: bool = False  # torch.compile the network in place (nn.Module.compile: state-dict keys keep their names)


@dataclass
class LoggerConfig:
    kind: str = "wandb"  # wandb | csv | none
    project: str = "lottery"
    mode: str = "offline"  # wandb: offline (default, never needs network) | online | disabled
    entity: str | None = None


@dataclass
class TicketConfig:
    match_tolerance: float = 0.01  # a level "matches" when its test accuracy is at most this below dense (0.01 = 1 pt)
    log_masks: bool = False  # also log each level's mask to W&B as an artifact
    # the test accuracy tickets are judged by: final (after the last step) | early_stop (at the evaluation step of
    # minimum validation loss, the LTH paper's metric)
    metric: str = "final"


@dataclass
class InstabilityConfig:
    """branch=instability: linear mode connectivity of each analysed level (see lottery/branches/instability.py)."""

    points: int = 30  # evenly spaced interpolation points between the two copies, endpoints included
    threshold: float = 0.02  # a level is stable when its test-error barrier is below this (0.02 = 2 points)
    levels: list[int] | None = None  # trunk levels to analyse; null: every level, 0 (dense) included
    bn_batches: int = 10  # networks with BatchNorm: training batches that re-estimate its statistics on the path


@dataclass
class EarlyBirdConfig:
    """branch=early_bird: draw the ticket when the magnitude mask stops changing (lottery/branches/early_bird.py)."""

    every: str = "50it"  # interval between mask snapshots during the dense search run
    window: int = 5  # consecutive mask distances that must all be below `threshold` (You et al.: 5)
    threshold: float = 0.1  # normalised Hamming distance between consecutive masks (You et al.: 0.1)
    level: int | None = None  # the detector watches the mask of this level's density; null: the last level


@dataclass
class StructuredConfig:
    """Structured pruning of transformers: whole attention heads, MLP hidden units and MLP blocks (read when
    pruning.strategy=structured; lottery/structured/). Unit counts per level follow the pruning schedule."""

    # no_retrain: remove the least important x% of units for x in `grid` and evaluate without retraining (Bansal
    # et al. 2023): a pretrained model (model=hf) as loaded, a model from scratch after training level 0 |
    # imp: structured IMP with rewinding over the trunk's levels | both
    procedure: str = field(default="both", metadata=NO_HASH)
    # model=hf with procedure=no_retrain: fine-tune level 0 on the task's training prompts first (train.duration,
    # optim.*), then run the grid on those weights. Off by default: the published protocol never fine-tunes.
    finetune: bool = False
    # kinds IMP removes: heads, mlp_units, mlp_blocks, layers (whole decoder blocks; model=hf)
    units: list[str] = field(default_factory=lambda: ["heads"])
    score: str = "magnitude"  # IMP's importance: magnitude | gradient (|<dL/dA_u, A_u>|, Michel et al. 2019)
    scope: str = "global"  # global: one ranking per kind over all layers | layerwise: the schedule in every layer
    score_examples: int = 1024  # training prompts the gradient score averages over
    # no_retrain: fractions of each kind's units removed, the kinds and the scores (random: the control)
    grid: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], metadata=NO_HASH)
    grid_units: list[str] = field(default_factory=lambda: ["heads", "mlp_blocks", "mlp_units"], metadata=NO_HASH)
    # magnitude and gradient (Michel et al. 2019, per prompt) rank heads and FFN units/blocks; token_gradient (Bansal
    # et al. 2023's released code, per token) ranks heads; single (the accuracy drop, then loss rise, when one unit is
    # removed alone; Bansal et al.'s FFN ranking) ranks FFN blocks and layers (heads with single_heads); gradient and
    # angular (Gromov et al. 2024) rank layers; random is the control. Each kind gets the scores that apply.
    grid_scores: list[str] = field(
        default_factory=lambda: ["magnitude", "gradient", "angular", "single", "random"], metadata=NO_HASH
    )
    random_draws: int = field(default=5, metadata=NO_HASH)  # random removals averaged per grid point
    # Intervals (pretrained no_retrain): every accuracy gets a two-sided `confidence` interval from `bootstrap`
    # resamples of the distinct held-out queries (not prompts), and a fraction is claimed removable only where the
    # drop from dense is within ticket.match_tolerance at that confidence (one-sided, paired on the same resamples).
    confidence: float = field(default=0.95, metadata=NO_HASH)
    bootstrap: int = field(default=2000, metadata=NO_HASH)
    # Rank heads by knock-out too (`single`: one evaluation of the scoring prompts per head); FFN blocks and layers
    # are always ranked so when grid_scores lists single.
    single_heads: bool = field(default=False, metadata=NO_HASH)
    # grid_units=[weights] (every linear weight of the decoder layers, lottery/structured/weights.py): N:M patterns
    # measured beside the unstructured grid, e.g. ["2:4"] (2 kept of every 4 consecutive inputs); [] for none
    weight_patterns: list[str] = field(default_factory=lambda: ["2:4"], metadata=NO_HASH)
    # A removable fraction is claimed only when dense test accuracy beats chance by at least this (0.1 = 10 points).
    min_above_chance: float = field(default=0.1, metadata=NO_HASH)
    # Dead FFN units (pretrained no_retrain): a gated or GELU unit is dead when its largest |activation| over the
    # prompts' tokens is below this fraction of its layer's mean |activation|; a ReLU unit when it is 0 on them all.
    census_relative: float = field(default=0.01, metadata=NO_HASH)
    # Pretrained no_retrain, what else breaks (lottery/structured/transfer.py): the units removed for this task,
    # evaluated on other word-list tasks (by name, or a .tsv) and held-out general text (lm:<text file>), at every grid
    # fraction, beside random removal; transfer_scores: the scores whose removals are measured (null: every one)
    transfer: list[str] = field(default_factory=list, metadata=NO_HASH)
    transfer_scores: list[str] | None = field(default=None, metadata=NO_HASH)
    # Pretrained no_retrain along the model's own training (lottery/structured/checkpoints.py): earlier checkpoints as
    # "<folder>@<tokens seen>", each studied as model.path is, and the tokens model.path itself saw
    checkpoints: list[str] = field(default_factory=list, metadata=NO_HASH)
    final_tokens: float | None = field(default=None, metadata=NO_HASH)
    transfer_windows: int = field(default=64, metadata=NO_HASH)  # held-out windows of each text
    transfer_context: int = field(default=128, metadata=NO_HASH)  # tokens per window
    # Pretrained no_retrain: prompts per forward (and backward) pass; null: the most that fit in memory_gb (GiB) with
    # the weights (lottery/structured/budget.py). Memory and speed only.
    batch_size: int | None = field(default=None, metadata=NO_HASH)
    memory_gb: float = field(default=2.0, metadata=NO_HASH)


@dataclass
class LotteryConfig:
    model: Any = MISSING
    data: DataConfig = MISSING
    optim: Any = MISSING
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    rewind: RewindConfig = field(default_factory=RewindConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig, metadata=NO_HASH)
    logger: LoggerConfig = field(default_factory=LoggerConfig, metadata=NO_HASH)
    ticket: TicketConfig = field(default_factory=TicketConfig, metadata=NO_HASH)
    instability: InstabilityConfig = field(default_factory=InstabilityConfig, metadata=NO_HASH)
    early_bird: EarlyBirdConfig = field(default_factory=EarlyBirdConfig, metadata=NO_HASH)
    # none: the IMP trunk only | random_reinit | random_prune | oneshot: a control beside the trunk's levels |
    # instability: linear mode connectivity of the levels | early_bird: tickets drawn when the mask settles
    branch: str = field(default="none", metadata=NO_HASH)
    name: str = field(default="default", metadata=NO_HASH)  # experiment name: outputs/<name>/<hash>/
    seed: int = field(default=0, metadata=NO_HASH)  # seeds share a hash so they compare: seed_<s>/ below it
    # Pruning rounds after the dense level 0. null: the schedule's own count (10 for a fraction schedule). Not hashed:
    # more levels extend a run, fewer run a prefix of it.
    levels: int | None = field(default=None, metadata=NO_HASH)
    root: str = field(default="outputs", metadata=NO_HASH)  # output root
    # Seconds a job waits for another job holding its seed's trunk, branch or ticket summary (lottery/job.py) before
    # it gives up; null: as long as it takes; 0: refuse at once.
    lock_timeout: float | None = field(default=None, metadata=NO_HASH)
    structured: StructuredConfig = field(default_factory=StructuredConfig)  # heads and MLP units (transformers)


def cores_per_job(n_jobs: int | None) -> int:
    """Threads for each of `n_jobs` jobs running at once on this machine's cores (the CPUs this process may use),
    at least 1. n_jobs follows joblib: -1 is one job per core, -2 all cores but one, null one job."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if not n_jobs:
        jobs = 1
    elif n_jobs > 0:
        jobs = n_jobs
    else:
        jobs = max(1, cores + 1 + n_jobs)
    return max(1, cores // jobs)


def gpus_per_node(accelerator: str, devices: Any) -> int:
    """The GPUs a cluster job asks for, following the trainer: 0 for trainer=cpu, `devices` GPUs for trainer=gpu."""
    if accelerator == "cpu":
        return 0
    if accelerator in ("gpu", "cuda"):
        if isinstance(devices, int) and devices > 0:
            return devices
        if isinstance(devices, Sequence) and not isinstance(devices, str) and len(devices) > 0:
            return len(devices)  # a list of device indices
    raise ValueError(
        f"cannot tell how many GPUs a job with trainer.accelerator={accelerator} trainer.devices={devices} needs; "
        "use trainer=cpu or trainer=gpu with a count of devices, or set hydra.launcher.gpus_per_node=<n>"
    )


def tasks_per_node(strategy: str, devices: Any) -> int:
    """SLURM tasks per node of a cluster job: one per DDP process (srun starts every rank, lottery/training/
    distributed.py), else one."""
    return devices if strategy == "ddp" and isinstance(devices, int) and devices > 0 else 1


def register() -> None:
    """Register the schemas with Hydra's ConfigStore (conf/*.yaml extend them through their defaults lists) and the
    resolvers the launcher presets (conf/launcher/) and the catalog models' presets use."""
    resolvers = (
        ("lottery.cores_per_job", cores_per_job),
        ("lottery.gpus_per_node", gpus_per_node),
        ("lottery.tasks_per_node", tasks_per_node),
        ("lottery.model_folder", model_folder),  # conf/model/<catalog model>.yaml
    )
    for name, resolver in resolvers:
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    cs = ConfigStore.instance()
    cs.store(name="lottery_schema", node=LotteryConfig)
    cs.store(group="model", name="mlp_schema", node=MLPConfig)
    cs.store(group="model", name="conv_schema", node=ConvConfig)
    cs.store(group="model", name="resnet_schema", node=ResNetConfig)
    cs.store(group="model", name="vgg_schema", node=VGGConfig)
    cs.store(group="model", name="transformer_schema", node=TransformerConfig)
    cs.store(group="model", name="hf_schema", node=HFConfig)
    cs.store(group="model", name="hf_fetched_schema", node=FetchedHFConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="data", name="icl_recall_schema", node=RecallDataConfig)
    cs.store(group="data", name="icl_regression_schema", node=RegressionDataConfig)
    cs.store(group="data", name="icl_text_schema", node=TextDataConfig)
    cs.store(group="data", name="lm_text_schema", node=LMTextDataConfig)
    cs.store(group="optim", name="adam_schema", node=AdamConfig)
    cs.store(group="optim", name="sgd_schema", node=SGDConfig)
    cs.store(group="schedule", name="schedule_schema", node=ScheduleConfig)
    cs.store(group="pruning", name="pruning_schema", node=PruningConfig)
    cs.store(group="rewind", name="rewind_schema", node=RewindConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
