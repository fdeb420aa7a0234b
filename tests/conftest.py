"""Shared helpers: compose configs with Hydra's compose API and run tiny experiments in a temporary root."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from lottery.cli import CONF_DIR

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def pytest_configure(config):
    """The models' cache (lottery-models, and the dequantized copies of GGUF files) of the tests is their own: nothing
    a test loads or writes reaches the user's ~/.cache/lottery/models. Under pytest only: scripts that borrow
    compose_config (benchmarks/, experiments/) read the user's cache."""
    os.environ["LOTTERY_MODELS"] = tempfile.mkdtemp(prefix="lottery-test-models-")


def pytest_unconfigure(config):
    shutil.rmtree(os.environ.get("LOTTERY_MODELS", ""), ignore_errors=True)


# A run that takes a few seconds on 2 CPU cores: 600 MNIST-1D examples, 60 steps per level.
TINY = [
    "data.num_samples=600",
    "data.val_size=80",
    "train.duration=60it",
    "train.batch_size=32",
    "train.eval_every=20it",
    "train.checkpoint_every=20it",
    "train.log_every=10",
    "levels=2",
    "logger=none",
    "trainer.progress_bar=false",
]


# The in-context recall task at test size (6 key-value pairs over 3 keys and 3 values): seconds per run.
TINY_RECALL = [
    "data=icl_recall",
    "data.num_train=400",
    "data.num_test=60",
    "data.val_size=60",
    "data.n_pairs=6",
    "data.n_keys=3",
    "data.n_values=3",
]


def compose_config(overrides: list[str] | tuple[str, ...] = (), keep_hydra: bool = False):
    """The config a Hydra job of `lottery <overrides>` receives: HydraConfig is set, so `${hydra:...}` (the launcher
    presets use it) resolves, and the `hydra` node is removed unless `keep_hydra`."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    if not keep_hydra:
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


def tiny(root: Path, *extra: str) -> list[str]:
    return [*TINY, f"root={root}", *extra]


def seed_dir_of(overrides: list[str] | tuple[str, ...]) -> Path:
    """The seed folder a run of these overrides writes to (<root>/<name>/<hash>/seed_<s>)."""
    from omegaconf import OmegaConf

    from lottery.setup import experiment_hash

    settings = OmegaConf.to_object(compose_config(overrides))
    h, _ = experiment_hash(settings)
    return Path(settings.root) / settings.name / h / f"seed_{settings.seed}"


@pytest.fixture
def run_tiny(tmp_path):
    """Run a tiny experiment in-process; returns (rows, seed_dir)."""
    from lottery.cli import run_config

    def _run(*extra: str, root: Path | None = None):
        overrides = tiny(root or tmp_path, *extra)
        rows = run_config(compose_config(overrides))
        return rows, seed_dir_of(overrides)

    return _run
