"""A checkpoint series (train.save_at) and the over-training study along it: the saved points are the training state
at those steps (bit for bit against the rewind point and against a run that stops there), each point gets the
study the final network gets and over_training.json reads them right, a kill inside a point's study resumes to the
same files, and bad input is refused before anything is written or measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_config, seed_dir_of, tiny

from lottery.cli import run_config
from lottery.config import ConfigError
from lottery.core import artifacts
from lottery.core.series import SeriesError, series_steps
from lottery.data.lm_text import SAMPLE

KILL_SCRIPT = Path(__file__).with_name("kill_study.py")
LM = [
    "model=transformer", "model.d_model=32", "model.n_layers=2", "model.n_heads=2", "model.d_mlp=64",
    "data=lm_text", "data.tokenizer=chars", f"data.path={SAMPLE}", "data.context=32", "data.num_test=24",
    "data.val_size=16", "train.duration=32it", "train.batch_size=16", "train.eval_every=16it", "rewind.step=16it",
    "pruning.strategy=structured", "structured.procedure=no_retrain", "structured.grid_units=[heads,mlp_units,weights]",
    "structured.grid_scores=[magnitude,gradient,wanda,random]", "structured.grid=[0.25,0.5]",
    "structured.random_draws=1", "structured.score_examples=16", "structured.bootstrap=200",
]  # fmt: skip
SERIES = "train.save_at=[8,16]"


def _state(path: Path) -> dict[str, torch.Tensor]:
    return artifacts.load_torch(path, "checkpoint")["state_dict"]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    overrides = tiny(tmp_path_factory.mktemp("series"), *LM, SERIES)
    run_config(compose_config(overrides))
    return overrides, seed_dir_of(overrides)


def test_series_steps_are_parsed_and_bad_ones_refused():
    assert series_steps([3, 10], 20) == (3, 10)
    assert series_steps("geometric", 20) == (1, 2, 4, 8, 16)
    assert series_steps("geometric:4", 64) == (4, 8, 16, 32)
    assert series_steps([], 20) == ()
    for bad, message in (
        ([20], "at or past the end of training"),
        ([5, 3], "increasing steps"),
        ([0, 3], "increasing steps"),
        ("geometric:3", "power of two"),
        ("every:4", "geometric"),
        ("geometric:32", "at or past the end"),
        ([1.5], "list of steps"),
    ):
        with pytest.raises(SeriesError, match=message):
            series_steps(bad, 20)


def test_series_points_are_the_training_state_at_those_steps(whole, tmp_path):
    overrides, seed_dir = whole
    point = artifacts.load_torch(seed_dir / "series" / "step_16.ckpt", "series point")
    rewind = artifacts.load_torch(seed_dir / "rewind.ckpt", "rewind point")  # rewind.step=16it: the same step
    assert point["global_step"] == rewind["global_step"] == 16
    assert point["state_dict"].keys() == rewind["state_dict"].keys()
    for k, v in point["state_dict"].items():
        assert torch.equal(v, rewind["state_dict"][k]), k
    states = point["optimizer_states"][0]["state"], rewind["optimizer_states"][0]["state"]
    assert states[0].keys() == states[1].keys()
    for a, b in zip(states[0].values(), states[1].values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))
    assert artifacts.load_torch(seed_dir / "series" / "step_8.ckpt", "series point")["global_step"] == 8
    # a run that stops at step 16 (constant learning rate, data order a function of seed and step) ends with them
    short = [o for o in tiny(tmp_path, *LM) if o not in ("train.duration=32it", "rewind.step=16it")]
    short += ["train.duration=16it", "rewind.step=0it"]
    run_config(compose_config(short))
    final = artifacts.load_torch(seed_dir_of(short) / "level_0" / "weights.pt", "level 0 weights")
    stripped = {k.removeprefix(artifacts.PREFIX): v for k, v in point["state_dict"].items()}
    assert final.keys() == stripped.keys() and all(torch.equal(final[k], stripped[k]) for k in final)


def test_over_training_reads_every_point_s_study(whole):
    overrides, seed_dir = whole
    study = json.loads((seed_dir / "over_training.json").read_text())
    points = study["points"]
    assert [p["step"] for p in points] == [8, 16, 32] and [p["final"] for p in points] == [False, False, True]
    per_step = study["tokens_per_step"]
    assert per_step == 16 * study["tokens_per_example"] and 1 < study["tokens_per_example"] <= 32
    for p in points:
        assert p["tokens"] == p["step"] * per_step
        assert p["tokens_per_parameter"] == p["tokens"] / study["model"]["parameters"]
        folder = seed_dir / "no_retrain" / (f"series/step_{p['step']}" if not p["final"] else "")
        results = json.loads((folder / "results.json").read_text())
        assert p["removable"] == results["removable"] and p["dense"]["loss"] == results["dense"]["loss"]
        assert p["dead_units"]["units"] == 2 * 64 and p["dead_units"]["dead"] == results["census"]["dead_total"]
        half = {sc: c for sc, c in results["curves"]["weights"].items()}
        assert p["weights"]["wanda"]["0.5"]["perplexity"] == half["wanda"][1]["perplexity"]
        assert p["weights"]["magnitude"]["2:4"]["density"] == 0.5
        assert set(p["agreement"]) == {"heads", "mlp_units"}
    final = points[-1]["agreement"]
    assert all(
        v["spearman"] == pytest.approx(1.0) and v["top_k_overlap"] == 1.0 for by in final.values() for v in by.values()
    )
    early = points[0]["agreement"]["mlp_units"]["magnitude"]
    assert early["top_k"] == 64 // 4 * 2 and early["top_k_random"] == 0.25 and -1 <= early["spearman"] <= 1
    assert (seed_dir / "over_training.png").is_file()
    assert study["cost"]["training_seconds"] > 0 and study["cost"]["study_seconds"] > 0


@pytest.mark.parametrize("after", [2, 12])  # the first point's dense evaluation; inside the second point
def test_a_kill_inside_a_series_point_resumes_to_the_same_files(whole, tmp_path, after):
    overrides, seed_dir = whole
    mine = tiny(tmp_path, *LM, SERIES)
    proc = subprocess.run(
        [sys.executable, str(KILL_SCRIPT), f"series:{after}", *mine], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    again = seed_dir_of(mine)
    assert not (again / "over_training.json").exists()
    run_config(compose_config(mine))
    for step in (8, 16):
        name = f"no_retrain/series/step_{step}/results.json"
        assert (again / name).read_bytes() == (seed_dir / name).read_bytes(), step
    a, b = (json.loads((d / "over_training.json").read_text()) for d in (again, seed_dir))
    assert {k: v for k, v in a.items() if k != "cost"} == {k: v for k, v in b.items() if k != "cost"}


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_bad_series_input_is_refused_before_anything_is_written_or_measured(tmp_path):
    root = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"train.save_at=\[40\] asks for step 40, at or past the end"):
        run_config(compose_config(tiny(root, *LM, "train.save_at=[40]")))
    assert not root.exists()
    with pytest.raises(ConfigError, match="power of two"):
        run_config(compose_config(tiny(root, *LM, "train.save_at=geometric:3")))
    assert not root.exists()
    # level 0 trained without a series: asking for one later names the missing steps and loses nothing
    plain = tiny(root, *LM)
    run_config(compose_config(plain))
    before = _tree(root)
    with pytest.raises(ConfigError, match=r"asks for steps \[8\], which .*series does not hold"):
        run_config(compose_config([*plain, "train.save_at=[8]"]))
    assert _tree(root) == before
    # a file at a series point that another network wrote is refused, naming it, before any point is measured
    seed_dir = seed_dir_of(plain)
    (seed_dir / "series").mkdir()
    other = {artifacts.PREFIX + "embed.weight": torch.zeros(3, 3)}
    torch.save({"state_dict": other, "global_step": 8}, seed_dir / "series" / "step_8.ckpt")
    before = _tree(root)
    with pytest.raises(ConfigError, match=r"step_8.ckpt holds another network's weights"):
        run_config(compose_config([*plain, "train.save_at=[8]"]))
    assert _tree(root) == before
