"""Every config option composes, typos fail at compose time, and hashes and schema defaults are pinned."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from conftest import compose_config
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from lottery import config as C
from lottery.cli import CONF_DIR
from lottery.setup import experiment_hash

GROUPS = ["model", "data", "optim", "schedule", "pruning", "rewind", "trainer", "logger", "launcher", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


REQUIRED = {("model", "hf"): ["model.path=facebook/opt-125m"]}  # options with a value the user must give


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes_into_the_typed_schema(group, option):
    cfg = compose_config([f"{group}={option}", *REQUIRED.get((group, option), [])])
    settings = OmegaConf.to_object(cfg)
    assert isinstance(settings, C.LotteryConfig)
    assert isinstance(settings.model, C.ModelConfig) and isinstance(settings.optim, C.OptimConfig)
    experiment_hash(settings)  # every option can be hashed


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"conf/{group}/ is empty"


@pytest.mark.parametrize(
    "override,error",
    [
        ("pruning.fractoin=0.2", ConfigCompositionException),  # typo in a key
        ("levels=many", ConfigCompositionException),  # wrong type
        ("train.batch_size=1.5", ConfigCompositionException),
        ("model.hidden=[a,b]", ConfigCompositionException),
        ("model=resnet999", ConfigCompositionException),  # unknown option
    ],
)
def test_typos_and_wrong_types_fail_at_compose_time(override, error):
    with pytest.raises(error):
        compose_config([override])


def test_a_typo_in_a_config_file_fails_at_compose_time(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "model" / "typo.yaml").write_text("defaults:\n  - mlp_schema\nname: typo\nhiden: [300, 100]\n")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises(ConfigCompositionException, match="hiden"):
            compose(config_name="config", overrides=["model=typo"])


# ---- pinned hashes: changing what a hash covers renames every result folder, so it must be deliberate.
PINNED = {
    (): "2416f4a012",
    ("seed=3", "levels=9", "logger=none", "trainer=gpu", "root=/elsewhere"): "2416f4a012",  # not hashed
    ("pruning.fraction=0.3",): None,
    ("model.width=2",): None,
    ("experiment=lth_lenet_mnist",): None,
}


def test_hashes_are_pinned():
    got = {k: experiment_hash(OmegaConf.to_object(compose_config(list(k))))[0] for k in PINNED}
    assert got[()] == PINNED[()], f"the default hash changed to {got[()]}; old result folders would be orphaned"
    assert got[("seed=3", "levels=9", "logger=none", "trainer=gpu", "root=/elsewhere")] == got[()]
    assert len({got[k] for k in PINNED if PINNED[k] is None} | {got[()]}) == 4  # each real change is a new hash
    assert got == {**PINNED, **{k: got[k] for k in PINNED if PINNED[k] is None}}


def test_hash_inputs_of_the_default_config_are_pinned():
    _, inputs = experiment_hash(OmegaConf.to_object(compose_config([])))
    assert inputs == {
        "model.name": "mlp",
        "data.name": "mnist1d",
        "optim.name": "adam",
        "optim.lr": 1e-3,
    }


def test_schema_defaults_are_pinned():
    """Defaults stay out of the hash, so changing one silently changes what old hashes mean: pin them."""
    defaults = {
        cls.__name__: {
            f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
            for f in dataclasses.fields(cls)
            if f.name != "_target_" and not dataclasses.is_dataclass(f.type)
        }
        for cls in (
            C.ModelConfig,
            C.MLPConfig,
            C.ConvConfig,
            C.ResNetConfig,
            C.VGGConfig,
            C.DataConfig,
            C.OptimConfig,
            C.AdamConfig,
            C.SGDConfig,
            C.ScheduleConfig,
            C.PruningConfig,
            C.RewindConfig,
            C.TrainConfig,
        )
    }
    assert defaults["MLPConfig"]["hidden"] == [100, 100] and defaults["MLPConfig"]["width"] == 1.0
    assert defaults["ConvConfig"]["blocks"] == [64, 128] and defaults["ConvConfig"]["fc"] == [256, 256]
    assert defaults["ResNetConfig"]["depth"] == 20 and defaults["ResNetConfig"]["width"] == 1.0
    assert defaults["VGGConfig"]["depth"] == 16 and defaults["VGGConfig"]["width"] == 1.0
    assert defaults["DataConfig"] == {
        "name": "???",
        "val_size": 500,
        "split_seed": 0,
        "num_samples": 5000,
        "augment": False,
        "root": "data",
        "download": False,
    }
    assert defaults["OptimConfig"]["weight_decay"] == 0.0 and defaults["AdamConfig"]["betas"] == [0.9, 0.999]
    assert defaults["SGDConfig"]["momentum"] == 0.0 and defaults["SGDConfig"]["nesterov"] is False
    assert defaults["ScheduleConfig"] == {"name": "constant", "warmup": "0it", "milestones": [], "gamma": 0.1}
    assert defaults["PruningConfig"] == {
        "strategy": "magnitude",
        "scope": "global",
        "schedule": "fraction",
        "fraction": 0.2,
        "overrides": {},
        "ignore": [],
        "densities": [],
        "target_density": None,
        "over_levels": None,
    }
    assert defaults["RewindConfig"] == {"mode": "weights", "step": "0it", "finetune_lr": None}
    assert defaults["TrainConfig"] == {
        "duration": "3000it",
        "batch_size": 100,
        "eval_every": "100it",
        "precision": "32-true",
        "checkpoint_every": None,
        "checkpoint_seconds": 30.0,
        "log_every": 50,
        "print_every_eval": False,
        "save_at": [],
    }
