"""Everything that uses the `lottery` package: (b), the framework's own `fit_level`, and the lottery helpers the
hand-written runners (a) and (c) share with it (config, data, mask, data order), so all variants train alike.

Every `lottery` import of the benchmark is here, inside the function that needs it: a worker imports only what its
variant trains with (its peak memory counts it), and a move of lottery's modules is fixed in this file alone.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .nets import density_of
from .timing import Timer
from .workloads import DENSITY, MNIST_SIZES


# ----------------------------------------------------------------------------------------------------------------
# lottery helpers shared by every runner (and the parent's hyperparameters)
# ----------------------------------------------------------------------------------------------------------------
def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from lottery.cli import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def hidden_sizes(hidden: list[int], width: float) -> list[int]:
    """The hidden layer sizes lottery.models builds for the config's widths."""
    from lottery.models.mlp import scaled

    return [scaled(h, width) for h in hidden]


def eval_interval(duration: str, steps_per_epoch: int) -> int:
    """train.eval_every (a duration string) in steps."""
    from lottery.core.duration import steps as to_steps

    return max(1, to_steps(duration, steps_per_epoch))


def load_splits(hp: dict[str, Any]):
    """The workload's data: random MNIST-shaped tensors (LeNet) or the real, generated MNIST-1D."""
    import torch

    from lottery.data.splits import Splits

    if hp["data"] == "mnist1d":
        from lottery.data import load

        return load("mnist1d", num_samples=hp["num_samples"])
    g = torch.Generator().manual_seed(1234)
    n_train, n_test = MNIST_SIZES
    return Splits(
        x_train=torch.randn(n_train, 1, 28, 28, generator=g),
        y_train=torch.randint(0, 10, (n_train,), generator=g),
        x_test=torch.randn(n_test, 1, 28, 28, generator=g),
        y_test=torch.randint(0, 10, (n_test,), generator=g),
        num_classes=10,
    )


def random_mask(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, Any]:
    """A level-1-like mask: DENSITY of each layer's weights kept, at random positions (the same for a seed)."""
    import math

    import torch

    from lottery.core.overlap import random_mask_like

    reference = {}
    for name, shape in shapes.items():
        flat = torch.zeros(math.prod(shape), dtype=torch.bool)
        flat[: round(DENSITY * flat.numel())] = True
        reference[name] = flat.view(shape)
    return random_mask_like(reference, torch.Generator().manual_seed(seed))


def batches(x, y, batch_size: int, seed: int, steps: int) -> Iterator[tuple[Any, Any]]:
    """Step-indexed batches: the data order of lottery.data.batches (one permutation per epoch), so (a) and (b) see
    the same examples in the same order."""
    from lottery.data.batches import epoch_permutation

    spe = len(x) // batch_size
    perm = None
    for step in range(steps):
        epoch, i = divmod(step, spe)
        if i == 0 or perm is None:
            perm = epoch_permutation(len(x), seed, epoch)
        idx = perm[i * batch_size : (i + 1) * batch_size]
        yield x[idx], y[idx]


def import_stack(variant: str) -> None:
    """Import what the variant trains with (a failing import of ModelPruning makes (c) n/a)."""
    import lottery.core.overlap  # noqa: F401
    import lottery.data.batches  # noqa: F401

    if variant != "plain":
        import lightning  # noqa: F401
    if variant == "model_pruning":
        from lightning.pytorch.callbacks import ModelPruning  # noqa: F401
    if variant.startswith("fit_level") or variant == "cohort":
        import hydra  # noqa: F401

        import lottery.setup  # noqa: F401
        import lottery.training.fit  # noqa: F401


# ----------------------------------------------------------------------------------------------------------------
# (b): the framework's fit_level
# ----------------------------------------------------------------------------------------------------------------
class FrameworkRunner:
    """(b): compose, prepare and fit_level, as lottery.cli.run_config and lottery.imp.train_level do it."""

    def __init__(self, spec: dict[str, Any], logged: bool) -> None:
        import lottery.setup as setup_module
        from lottery.training import checkpoints
        from lottery.training.module import LevelModule

        self.spec, self.logged = spec, logged
        self.count = 0
        if spec["hp"]["data"] != "mnist1d":
            splits = load_splits(spec["hp"])  # made once, outside the timings; prepare() then just receives it
            setup_module.datasets.load = lambda *args, **kwargs: splits
        # Time evaluations and checkpoint saves where they happen (class attribute and module global, looked up at
        # call time), to split them out of the per-step cost.
        self.evals, self.ckpts = Timer(), Timer()
        LevelModule.evaluate = self.evals.wrap(LevelModule.evaluate)
        checkpoints.save_split = self.ckpts.wrap(checkpoints.save_split)

    def run(self, steps: int) -> dict[str, Any]:
        from omegaconf import OmegaConf

        from lottery.core import masks as M
        from lottery.setup import prepare
        from lottery.training.fit import LevelFit, fit_level
        from lottery.training.tracking import Tracker

        self.count += 1
        root = Path(self.spec["tmp"]) / f"run{self.count}"  # a fresh root: never resume an earlier run's level
        overrides = [
            *self.spec["overrides"],
            f"train.duration={steps}it",
            f"root={root}",
            f"logger={'csv' if self.logged else 'none'}",
            f"trainer.progress_bar={'true' if self.logged else 'false'}",
        ]
        start = time.perf_counter()
        cfg = compose(overrides)
        settings = OmegaConf.to_object(cfg)
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
        optim_cfg = OmegaConf.to_container(cfg.optim, resolve=True)
        setup = prepare(settings, model_cfg, optim_cfg)
        prepare_seconds = time.perf_counter() - start
        mask = random_mask(setup.shapes, settings.seed)
        tracker = Tracker(settings, setup.paths, {}, branch="trunk")
        self.evals.reset()
        self.ckpts.reset()
        start = time.perf_counter()
        module = fit_level(setup, LevelFit(setup.paths.level(1), 1, mask), tracker)
        seconds = time.perf_counter() - start
        tracker.finish()
        weights = {n: w.detach() for n, w in M.prunable_weights(module.network).items()}
        result = {
            "steps": steps,
            "seconds": seconds,
            "evals": self.evals.calls,
            "eval_seconds": self.evals.seconds,
            "ckpts": self.ckpts.calls,
            "ckpt_seconds": self.ckpts.seconds,
            "val_loss": float("nan"),
            "density": density_of(weights),
            "prepare_seconds": prepare_seconds,
        }
        _, result["val_loss"] = module.evaluate(setup.datamodule.x_val, setup.datamodule.y_val)
        self.evals.reset()  # that check is not part of the level
        del module, setup
        gc.collect()
        return result
