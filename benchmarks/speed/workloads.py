"""What is timed: the workloads (Hydra overrides), the variants and their labels, and the shared constants.

`hyperparameters` reads, from the same composed config as (b) uses, what the plain loop and the ModelPruning
module need, so every variant trains the same thing.
"""

from __future__ import annotations

from typing import Any

VARIANTS = ("plain", "fit_level", "fit_level+log", "model_pruning", "cohort")
LABELS = {
    "plain": "(a) plain loop",
    "fit_level": "(b) fit_level",
    "fit_level+log": "(b) fit_level + csv + bar",
    "model_pruning": "(c) ModelPruning",
    "cohort": "(d) cohort of 8, per step",
}
# Hydra overrides of each workload, on top of the default experiment (conf/config.yaml).
WORKLOADS: dict[str, list[str]] = {
    "lenet": ["model=lenet_300_100", "data=mnist", "optim=adam", "optim.lr=1.2e-3", "train.batch_size=60"],
    "mnist1d": ["model=mlp", "data=mnist1d", "optim=adam", "optim.lr=1e-3", "train.batch_size=100"],
}
MNIST_SIZES = (60_000, 10_000)  # train and test examples of the real MNIST, so splits and evaluations are to scale
DENSITY = 0.8  # level 1 of 20%-per-level pruning
WARMUP_STEPS = 50


def hyperparameters(overrides: list[str]) -> dict[str, Any]:
    """What the plain loop and the ModelPruning module need, read from the same composed config as (b) uses, so
    all variants train the same thing."""
    from omegaconf import OmegaConf

    from .framework import compose, hidden_sizes  # here, not at the top: framework.py imports this module's constants

    cfg = compose(overrides)
    settings = OmegaConf.to_object(cfg)
    # The plain loop and the ModelPruning module are written for this recipe; refuse others rather than mis-compare.
    if not settings.model.name.startswith(("mlp", "lenet")):
        raise SystemExit(f"the plain loop here builds MLPs only, not model={settings.model.name}")
    if settings.optim.name != "adam" or settings.schedule.name != "constant":
        raise SystemExit(
            f"the plain loop uses Adam at a constant LR, not {settings.optim.name}/{settings.schedule.name}"
        )
    return {
        "data": settings.data.name,
        "num_samples": settings.data.num_samples,
        "val_size": settings.data.val_size,
        "split_seed": settings.data.split_seed,
        "seed": settings.seed,
        "hidden": hidden_sizes(settings.model.hidden, settings.model.width),
        "optimizer": settings.optim.name,
        "lr": settings.optim.lr,
        "betas": list(getattr(settings.optim, "betas", [0.9, 0.999])),
        "weight_decay": settings.optim.weight_decay,
        "batch_size": settings.train.batch_size,
        "eval_every": settings.train.eval_every,  # a duration string, converted once the data size is known
        "checkpoint_every": settings.train.checkpoint_every,
        "schedule": settings.schedule.name,
    }
