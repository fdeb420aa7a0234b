"""Checks of the transformer, in-context data and structured pruning settings, run by lottery.validate before any
training; each error names the setting, its value and the fix."""

from __future__ import annotations

from lottery.branches.registry import BRANCHES
from lottery.config import ConfigError, LotteryConfig
from lottery.core.unit_scores import SCORES
from lottery.core.units import KINDS
from lottery.data.icl import ICL_DATASETS, check_settings
from lottery.models.mlp import scaled

PROCEDURES = ("no_retrain", "imp", "both")
# lottery/structured/grid.py APPLIES says which kind gets which
GRID_SCORES = (*SCORES, "token_gradient", "angular", "single", "random", "wanda")
GRID_KINDS = (*KINDS, "weights")  # weights: every linear weight of the decoder layers (lottery/structured/weights.py)
UNIT_SCOPES = ("global", "layerwise")


def _subset(key: str, values: list, allowed: tuple[str, ...], empty_ok: bool = False) -> None:
    bad = [v for v in values if v not in allowed]
    if bad or len(set(values)) != len(values) or (not values and not empty_ok):
        raise ConfigError(f"{key}={list(values)} must list distinct values from {list(allowed)}, e.g. [{allowed[0]}]")


def check_transformer(cfg: LotteryConfig) -> None:
    m = cfg.model
    if m.n_layers < 1 or m.n_heads < 1 or m.d_mlp < 1:
        raise ConfigError(
            f"model.n_layers={m.n_layers}, model.n_heads={m.n_heads} and model.d_mlp={m.d_mlp} must be at least 1"
        )
    if scaled(m.d_model, m.width) % m.n_heads:
        raise ConfigError(
            f"model.d_model={m.d_model} times model.width={m.width} is {scaled(m.d_model, m.width)}, which "
            f"model.n_heads={m.n_heads} heads cannot share evenly; pick a d_model, width or head count that divides"
        )
    if m.positions not in ("learned", "rotary"):
        raise ConfigError(f"model.positions={m.positions!r} is not one of learned, rotary")
    if m.tied and cfg.data.name != "icl_recall":
        raise ConfigError(f"model.tied=true shares a token embedding, which data.name={cfg.data.name!r} has not")


def check_hf(cfg: LotteryConfig) -> None:
    """model=hf: the path exists and holds a supported family, and a text task has a tokenizer; no weights load."""
    from lottery.models.hf import HFModelError, check_model, has_tokenizer

    gguf_file = getattr(cfg.model, "gguf_file", None)
    try:
        check_model(cfg.model.path, cfg.model.local_files_only, gguf_file)
    except HFModelError as err:
        raise ConfigError(str(err)) from None
    if cfg.data.name == "icl_regression":
        raise ConfigError("data=icl_regression feeds vectors, which a pretrained LM cannot read; use data=icl_recall")
    if cfg.data.name in ("icl_text", "lm_text") and not has_tokenizer(cfg.model.path, gguf_file):
        raise ConfigError(
            f"data={cfg.data.name} needs the model's tokenizer, and model.path={cfg.model.path!r} holds none; save it "
            "beside the model (tokenizer.save_pretrained(model.path)) or use data=icl_recall"
        )


def _check_weights(s) -> None:
    from lottery.core.sparsity import parse_pattern
    from lottery.structured.grid import APPLIES

    for pattern in s.weight_patterns:
        try:
            parse_pattern(pattern)
        except ValueError as err:
            raise ConfigError(f"structured.weight_patterns: {err}") from None
    if len(set(s.weight_patterns)) != len(s.weight_patterns):
        raise ConfigError(f"structured.weight_patterns={list(s.weight_patterns)} lists a pattern twice")
    unused = [sc for sc in s.grid_scores if not any(k in APPLIES[sc] for k in s.grid_units)]
    if "weights" in s.grid_units and not any(sc in APPLIES and "weights" in APPLIES[sc] for sc in s.grid_scores):
        raise ConfigError(
            f"structured.grid_units lists weights, which none of structured.grid_scores={list(s.grid_scores)} ranks; "
            "add magnitude, wanda or random"
        )
    if "wanda" in unused:
        raise ConfigError(
            f"structured.grid_scores lists wanda, which ranks single weights only; add weights to "
            f"structured.grid_units={list(s.grid_units)}"
        )


def check_structured(cfg: LotteryConfig) -> None:
    hf = cfg.model.name == "hf"
    scratch = cfg.model.name == "transformer" or str(getattr(cfg.model, "_target_", "")).endswith("Transformer")
    transformer = scratch or hf  # models with heads and MLP units
    icl = cfg.data.name in ICL_DATASETS
    if transformer and not icl:
        raise ConfigError(
            f"model={cfg.model.name} reads prompts of in-context tasks, not data.name={cfg.data.name!r}; "
            f"use data={' or data='.join(ICL_DATASETS)}"
        )
    if icl and not transformer:
        raise ConfigError(
            f"data.name={cfg.data.name!r} holds sequence prompts that model={cfg.model.name} cannot read; "
            "use model=transformer or model=hf"
        )
    if scratch:
        check_transformer(cfg)
        if cfg.data.name == "icl_text":
            raise ConfigError("data=icl_text is tokenized by a pretrained model's tokenizer; use model=hf model.path=")
    if hf:
        check_hf(cfg)
    if icl:
        try:
            check_settings(cfg.data)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    branch = BRANCHES.get(cfg.branch)
    if cfg.pruning.strategy == "structured" and branch is not None and branch.not_structured:
        available = ["none", *(name for name, b in BRANCHES.items() if not b.not_structured)]
        raise ConfigError(
            f"branch={cfg.branch} is not available for pruning.strategy=structured yet ({branch.not_structured}); "
            f"use pruning.strategy=magnitude, or branch={', '.join(available[:-1])} or {available[-1]}"
        )
    s = cfg.structured
    if s.procedure not in PROCEDURES:
        raise ConfigError(f"structured.procedure={s.procedure!r} is not one of {PROCEDURES}")
    _subset("structured.units", s.units, KINDS)
    if s.score not in SCORES:
        raise ConfigError(f"structured.score={s.score!r} is not one of {SCORES} (random is the control branch)")
    if s.scope not in UNIT_SCOPES:
        raise ConfigError(f"structured.scope={s.scope!r} is not one of {UNIT_SCOPES}")
    if s.score_examples < 1:
        raise ConfigError(f"structured.score_examples={s.score_examples} must be a positive number of prompts")
    _subset("structured.grid_units", s.grid_units, GRID_KINDS)
    _subset("structured.grid_scores", s.grid_scores, GRID_SCORES)
    _check_weights(s)
    if scratch and "layers" in [*s.units, *s.grid_units]:
        raise ConfigError(
            "unit kind layers (whole decoder blocks) is available for model=hf only; use structured.units and "
            "structured.grid_units from heads, mlp_units, mlp_blocks"
        )
    if hf and s.procedure == "no_retrain" and not s.finetune and cfg.branch != "none":
        raise ConfigError(
            f"branch={cfg.branch} retrains levels, but structured.procedure=no_retrain scores the pretrained model as "
            "loaded and trains nothing (its random removals are the control); use branch=none, or "
            "structured.procedure=imp for structured IMP and its controls"
        )
    if s.finetune and not hf:
        raise ConfigError("structured.finetune=true fine-tunes a pretrained model; it needs model=hf")
    if not 0.0 <= s.min_above_chance < 1.0:
        raise ConfigError(f"structured.min_above_chance={s.min_above_chance} must lie in [0, 1), e.g. 0.1")
    if not 0.0 < s.census_relative < 1.0:
        raise ConfigError(f"structured.census_relative={s.census_relative} must lie in (0, 1), e.g. 0.01")
    if s.batch_size is not None and s.batch_size < 1:
        raise ConfigError(f"structured.batch_size={s.batch_size} must be a positive number of prompts, or null")
    if s.memory_gb <= 0:
        raise ConfigError(f"structured.memory_gb={s.memory_gb} must be a positive number of GiB, e.g. 2.0")
    if not s.grid or any(not 0.0 < x < 1.0 for x in s.grid) or sorted(set(s.grid)) != list(s.grid):
        raise ConfigError(
            f"structured.grid={list(s.grid)} must be increasing fractions of units removed in (0, 1), e.g. [0.1, 0.5]"
        )
    if s.random_draws < 1:
        raise ConfigError(f"structured.random_draws={s.random_draws} must be at least 1")
    if not 0.5 <= s.confidence < 1.0:
        raise ConfigError(f"structured.confidence={s.confidence} must lie in [0.5, 1), e.g. 0.95")
    if s.bootstrap < 100:
        raise ConfigError(f"structured.bootstrap={s.bootstrap} resamples are too few for an interval; use >= 100")
    from lottery.structured import checkpoints
    from lottery.structured.transfer import TransferError, check

    try:
        check(cfg)
        checkpoints.check(cfg)
    except (TransferError, ValueError) as err:
        raise ConfigError(str(err)) from None
    if cfg.pruning.strategy != "structured":
        return
    if not transformer:
        raise ConfigError(
            f"pruning.strategy=structured removes attention heads and MLP units, which model={cfg.model.name} does "
            "not have; use model=transformer or model=hf (or pruning.strategy=magnitude)"
        )
    if cfg.pruning.ignore or cfg.pruning.overrides:
        raise ConfigError(
            f"pruning.ignore={list(cfg.pruning.ignore)} and pruning.overrides={dict(cfg.pruning.overrides)} select "
            "weights; structured pruning selects unit kinds with structured.units=[heads, mlp_units, mlp_blocks]"
        )
