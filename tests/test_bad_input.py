"""Bad input gets a clear error naming the value and the fix, before any training, and nothing on disk is lost."""

from __future__ import annotations

import pytest
from conftest import compose_config, tiny

from lottery.cli import run_config
from lottery.core.artifacts import ArtifactError
from lottery.core.duration import DurationError
from lottery.core.pruning import PruningConfigError
from lottery.data import DatasetNotFoundError
from lottery.validate import ConfigError


@pytest.mark.parametrize(
    "override,error,message",
    [
        ("pruning.fraction=1.5", PruningConfigError, "pruning.fraction=1.5"),
        ("pruning.fraction=0", PruningConfigError, "pruning.fraction=0"),
        ("pruning.fraction=1.0", PruningConfigError, "pruning.fraction=1.0"),
        ("pruning.scope=local", ConfigError, "pruning.scope='local'"),
        ("rewind.step=60it", ConfigError, "rewind.step='60it'"),
        ("rewind.step=99ep", ConfigError, "rewind.step='99ep'"),
        ("rewind.mode=rewound", ConfigError, "rewind.mode='rewound'"),
        ("train.duration=5", DurationError, "'5'"),
        ("train.duration=0it", ConfigError, "train.duration='0it'"),
        ("levels=-1", ConfigError, "levels=-1"),
        ("pruning.ignore=[fc9]", PruningConfigError, "fc9"),
        ("+pruning.overrides={fc7: 0.1}", PruningConfigError, "fc7"),
        ("train.batch_size=100000", ValueError, "train.batch_size=100000"),
        ("data.val_size=0", ValueError, "data.val_size=0"),
        ("model.width=0", ConfigError, "model.width=0"),
        ("schedule.name=exp", ConfigError, "schedule.name='exp'"),
        ("logger.kind=tensorboard", ConfigError, "logger.kind='tensorboard'"),
        ("trainer.threads=0", ConfigError, "trainer.threads=0 must be a positive number of threads, or null"),
        ("lock_timeout=-1", ConfigError, "lock_timeout=-1.0 must be >= 0 seconds"),
    ],
)
def test_bad_values_are_refused_before_training(tmp_path, override, error, message):
    cfg = compose_config(tiny(tmp_path, override))
    with pytest.raises(error) as info:
        run_config(cfg)
    assert message in str(info.value)
    assert not list(tmp_path.rglob("level_*")), "nothing may be trained or written for a bad config"


def test_missing_dataset_folder_names_folder_and_files(tmp_path):
    folder = tmp_path / "no_mnist_here"
    cfg = compose_config(tiny(tmp_path, "data=mnist", f"data.root={folder}"))
    with pytest.raises(DatasetNotFoundError) as info:
        run_config(cfg)
    assert str(folder) in str(info.value) and "train-images-idx3-ubyte" in str(info.value)
    assert "data.download=true" in str(info.value)


def test_a_hash_folder_holding_another_config_is_refused_untouched(run_tiny):
    _, seed_dir = run_tiny("levels=0")
    record = seed_dir.parent / "hash.json"
    record.write_text('{"model.name": "something else"}\n')
    before = {p: p.read_bytes() for p in seed_dir.parent.rglob("*") if p.is_file()}
    with pytest.raises(ArtifactError, match="another configuration"):
        run_tiny("levels=0")
    assert {p: p.read_bytes() for p in seed_dir.parent.rglob("*") if p.is_file()} == before
    tree = sorted(seed_dir.parent.rglob("*"))
    with pytest.raises(ArtifactError, match="Nothing was changed"):
        run_tiny("levels=0", "seed=7")  # another seed: its folder is not made before the refusal
    assert sorted(seed_dir.parent.rglob("*")) == tree and not (seed_dir.parent / "seed_7").exists()


def test_corrupt_mask_of_a_pending_level_is_a_clear_error(run_tiny):
    _, seed_dir = run_tiny("levels=1")
    level = seed_dir / "level_2"
    level.mkdir()
    (level / "mask.pt").write_bytes(b"not a torch file")
    with pytest.raises(ArtifactError, match="mask"):
        run_tiny("levels=2")
    assert (level / "mask.pt").read_bytes() == b"not a torch file"  # left for the user to inspect


def test_mask_for_another_model_is_refused(run_tiny):
    import torch

    _, seed_dir = run_tiny("levels=1")
    level = seed_dir / "level_2"
    level.mkdir()
    torch.save({"fc1.weight": torch.ones(3, 3, dtype=torch.bool)}, level / "mask.pt")
    with pytest.raises(ArtifactError, match="fc2.weight"):
        run_tiny("levels=2")


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["optim.lr=-1"], "Invalid learning rate: -1.0"),
        (["optim.betas=[1.5,0.9]"], "Invalid beta parameter at index 0: 1.5"),
        (["optim=sgd", "optim.momentum=-0.5"], "Invalid momentum value: -0.5"),
        (["optim=sgd", "optim.weight_decay=-1"], "Invalid weight_decay value: -1.0"),
    ],
)
def test_optimizer_settings_torch_refuses_are_refused_before_anything_is_written(tmp_path, overrides, message):
    """Refused by torch.optim itself, before the first file (not after init.pt and level 0's mask are written)."""
    root = tmp_path / "out"
    with pytest.raises(ConfigError, match="torch.optim refuses the optimizer settings") as info:
        run_config(compose_config(tiny(root, *overrides)))
    assert message in str(info.value) and "nothing was written" in str(info.value)
    assert not root.exists()


def test_a_missing_rewind_point_is_refused_before_the_next_level_s_mask_is_written(run_tiny):
    _, seed_dir = run_tiny("levels=0")
    (seed_dir / "rewind.ckpt").unlink()
    tree = sorted(seed_dir.rglob("*"))
    with pytest.raises(ArtifactError, match="rewind.ckpt is missing"):
        run_tiny("levels=1")
    assert sorted(seed_dir.rglob("*")) == tree and not (seed_dir / "level_1").exists()
