"""The transformer, in-context data and structured-pruning settings: schema defaults and hashes are pinned, and bad
values are refused before training with the setting, its value and the fix."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import compose_config, tiny
from omegaconf import OmegaConf

from lottery import config as C
from lottery.cli import run_config
from lottery.setup import experiment_hash
from lottery.validate import ConfigError


def defaults(cls) -> dict:
    return {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(cls)
        if f.name != "_target_"
    }


def test_schema_defaults_are_pinned():
    """Defaults stay out of the hash, so changing one silently changes what old hashes mean."""
    assert {k: v for k, v in defaults(C.TransformerConfig).items() if k != "name"} == {
        "width": 1.0,
        "d_model": 64,
        "n_layers": 2,
        "n_heads": 4,
        "d_mlp": 256,
        "tied": False,
        "positions": "learned",
    }
    common = {"num_train": 40000, "num_test": 2000, "data_seed": 1234}
    recall, regression = defaults(C.RecallDataConfig), defaults(C.RegressionDataConfig)
    assert {k: recall[k] for k in (*common, "n_keys", "n_values", "n_pairs", "format")} == {
        **common,
        "n_keys": 16,
        "n_values": 16,
        "n_pairs": 24,
        "format": "pair",
    }
    assert {k: regression[k] for k in (*common, "n_dims", "n_points", "noise_std", "acc_tolerance")} == {
        **common,
        "n_dims": 5,
        "n_points": 20,
        "noise_std": 0.0,
        "acc_tolerance": 0.1,
    }
    assert defaults(C.StructuredConfig) == {
        "procedure": "both",
        "units": ["heads"],
        "score": "magnitude",
        "scope": "global",
        "score_examples": 1024,
        "grid": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        "grid_units": ["heads", "mlp_blocks", "mlp_units"],
        "grid_scores": ["magnitude", "gradient", "angular", "single", "random"],
        "random_draws": 5,
        "finetune": False,
        "min_above_chance": 0.1,
        "census_relative": 0.01,
        "batch_size": None,
        "memory_gb": 2.0,
        "confidence": 0.95,
        "bootstrap": 2000,
        "single_heads": False,
        "weight_patterns": ["2:4"],
        "transfer": [],
        "transfer_scores": None,
        "checkpoints": [],
        "final_tokens": None,
        "transfer_windows": 64,
        "transfer_context": 128,
    }


def hash_of(*overrides: str) -> str:
    return experiment_hash(OmegaConf.to_object(compose_config(list(overrides))))[0]


def test_hashes_cover_what_changes_results_and_nothing_else():
    assert hash_of() == "2416f4a012"  # the default run's folder is unchanged by the new settings
    base = ("model=transformer", "data=icl_recall", "pruning.strategy=structured")
    assert hash_of(*base) == "7ea942044d"
    # which steps run, and the no-retrain grid (recomputed in seconds beside the levels), do not rename the folder
    for unhashed in ("structured.procedure=imp", "structured.grid=[0.5]", "structured.random_draws=2"):
        assert hash_of(*base, unhashed) == hash_of(*base)
    changed = {
        hash_of(*base, o) for o in ("structured.score=gradient", "structured.units=[mlp_units]", "data.n_keys=8")
    }
    assert len(changed | {hash_of(*base)}) == 4


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model=transformer"], "data=icl_recall or data=icl_regression"),
        (["data=icl_recall"], "use model=transformer"),
        (["pruning.strategy=structured"], "pruning.strategy=structured removes attention heads"),
        (["model=transformer", "data=icl_recall", "model.n_heads=3"], "model.n_heads=3"),
        (["model=transformer", "data=icl_recall", "model.positions=alibi"], "model.positions='alibi'"),
        (["model=transformer", "data=icl_regression", "model.tied=true"], "model.tied=true"),
        (["model=transformer", "data=icl_recall", "data.n_pairs=1"], "data.n_pairs=1"),
        (["model=transformer", "data=icl_recall", "data.format=tokens"], "data.format='tokens'"),
        (["model=transformer", "data=icl_regression", "data.acc_tolerance=0"], "data.acc_tolerance=0"),
        (["model=transformer", "data=icl_recall", "structured.units=[head]"], "structured.units=['head']"),
        (["model=transformer", "data=icl_recall", "structured.score=random"], "structured.score='random'"),
        (["model=transformer", "data=icl_recall", "structured.grid=[0.5,0.2]"], "structured.grid=[0.5, 0.2]"),
        (["model=transformer", "data=icl_recall", "structured.procedure=later"], "structured.procedure='later'"),
        (["model=transformer", "data=icl_recall", "structured.confidence=1.5"], "structured.confidence=1.5"),
        (["model=transformer", "data=icl_recall", "structured.bootstrap=10"], "structured.bootstrap=10"),
        (
            ["model=transformer", "data=icl_recall", "pruning.strategy=structured", "branch=early_bird"],
            "branch=early_bird is not available for pruning.strategy=structured",
        ),
        (
            ["model=transformer", "data=icl_recall", "pruning.strategy=structured", "pruning.ignore=[unembed]"],
            "structured.units",
        ),
    ],
)
def test_bad_structured_settings_are_refused_before_training(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as info:
        run_config(compose_config(tiny(tmp_path, *overrides)))
    assert message in str(info.value)
    assert not list(tmp_path.rglob("level_*"))
