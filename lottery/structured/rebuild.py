"""Rebuild a finished level's network from what a run left on disk (config.yaml, weights.pt, mask.pt), without Hydra:
for the compact export command and for reports that read runs they did not train."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from hydra.utils import instantiate

from lottery.config import LMTextDataConfig, RecallDataConfig, RegressionDataConfig, TextDataConfig, without_name
from lottery.core import artifacts
from lottery.core import masks as M
from lottery.core.units import UnitMask, contract
from lottery.data import load
from lottery.data.splits import Splits

DATA_SCHEMAS = {
    "icl_recall": RecallDataConfig,
    "icl_regression": RegressionDataConfig,
    "icl_text": TextDataConfig,
    "lm_text": LMTextDataConfig,
}


def run_config(seed_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((Path(seed_dir) / "config.yaml").read_text())


def splits_of(config: dict[str, Any]) -> Splits:
    data = config["data"]
    if data["name"] not in DATA_SCHEMAS:
        raise ValueError(f"{data['name']!r} is not an in-context learning dataset; structured runs use icl_* data")
    return load(data["name"], settings=DATA_SCHEMAS[data["name"]](**data))


def network_of(config: dict[str, Any], splits: Splits) -> torch.nn.Module:
    model = without_name(config["model"])
    return instantiate(model, input_shape=splits.input_shape, num_classes=splits.num_classes, _convert_="all")


def rebuild(level_dir: Path) -> tuple[torch.nn.Module, UnitMask, torch.Tensor]:
    """(network with the level's trained weights, its unit mask, the test prompts) of a finished level folder of a
    trunk (seed_<s>/level_<L>) or a branch (seed_<s>/branch_<b>/level_<L>)."""
    level_dir = Path(level_dir)
    seed_dir = level_dir.parent if (level_dir.parent / "config.yaml").is_file() else level_dir.parent.parent
    config = run_config(seed_dir)
    splits = splits_of(config)
    network = network_of(config, splits)
    network.load_state_dict(artifacts.load_torch(level_dir / "weights.pt", "trained weights"))
    mask = artifacts.load_torch(level_dir / "mask.pt", "mask")
    M.check_compatible(mask, M.prunable_weights(network), source=str(level_dir / "mask.pt"))
    return network.eval(), contract(mask, network.layout()), splits.x_test
