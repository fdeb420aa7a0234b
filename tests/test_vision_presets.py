"""The CIFAR-10 presets compose into the typed schema, pass validation and carry the published recipe; their hashes
are pinned (a change renames their result folders)."""

from __future__ import annotations

import pytest
from conftest import compose_config
from omegaconf import OmegaConf

from lottery.config import LotteryConfig
from lottery.setup import experiment_hash
from lottery.validate import validate

RECIPE = {  # shared by both: open_lth's and the LMC paper's CIFAR-10 training
    "data.name": "cifar10",
    "data.val_size": 5000,
    "data.augment": True,
    "optim.name": "sgd",
    "optim.lr": 0.1,
    "optim.weight_decay": 1e-4,
    "optim.momentum": 0.9,
    "schedule.name": "step",
    "schedule.milestones": ["31250it", "46875it"],
    "train.duration": "62500it",
    "train.batch_size": 128,
    "train.eval_every": "1000it",
    "rewind.mode": "weights",
    "pruning.scope": "global",
    "pruning.fraction": 0.2,
}
PRESETS = {
    "lth_resnet20_cifar10": ({"model.name": "resnet20", "model.depth": 20, "rewind.step": "500it"}, "f563f32ea2"),
    "lth_vgg16_cifar10": (
        {"model.name": "vgg16", "model.depth": 16, "rewind.step": "1000it", "pruning.ignore": ["fc"]},
        "de19b6ee60",
    ),
}


def get(cfg: LotteryConfig, key: str):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_composes_validates_and_carries_the_recipe(preset):
    cfg = OmegaConf.to_object(compose_config([f"experiment={preset}"]))
    assert isinstance(cfg, LotteryConfig) and cfg.name == preset
    validate(cfg)
    specific, _ = PRESETS[preset]
    assert {key: get(cfg, key) for key in {**RECIPE, **specific}} == {**RECIPE, **specific}
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.data_on_device and cfg.train.precision == "32-true"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_hash_is_pinned(preset):
    h, inputs = experiment_hash(OmegaConf.to_object(compose_config([f"experiment={preset}"])))
    assert "data.augment" in inputs and "trainer.channels_last" not in inputs  # speed switches are not hashed
    assert h == PRESETS[preset][1], f"{preset}'s hash changed to {h}; its result folders would be orphaned"
    faster = ["train.precision=bf16-mixed", "trainer.channels_last=true", "trainer.compile=true"]
    h_fast, _ = experiment_hash(OmegaConf.to_object(compose_config([f"experiment={preset}", *faster[1:]])))
    assert h_fast == h  # channels_last and compile: the same results folder
    h_bf16, _ = experiment_hash(OmegaConf.to_object(compose_config([f"experiment={preset}", faster[0]])))
    assert h_bf16 != h  # bf16 changes results: its own folder
