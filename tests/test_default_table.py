"""The README's default-run table is today's code's output: it equals the committed summary of the README's first
command (three seeds as one cohort, experiments/default_table.py regenerates both), and the default run of seed 0
still gives the committed numbers (its first two levels, bit for bit: a cohort's seed equals the seed alone). The
across-seeds summary itself is checked on constructed tickets."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from conftest import compose_config, seed_dir_of

from lottery.cli import run_config
from lottery.reports.seeds import across_seeds

REPO = Path(__file__).resolve().parents[1]
SUMMARY = REPO / "experiments" / "results" / "default" / "seeds.json"
sys.path.insert(0, str(REPO / "experiments"))


def test_the_readme_table_is_the_committed_summary():
    from default_table import END, START, block

    record = json.loads(SUMMARY.read_text())
    readme = (REPO / "README.md").read_text()
    shown = readme.split(START)[1].split(END)[0].strip()
    assert shown == block(record["summary"], record["seconds"])
    assert "lottery -m launcher=cohort seed=0,1,2" in readme.split("## Two commands")[1].split("##")[0]


def test_today_s_default_run_gives_the_committed_numbers(tmp_path):
    summary = json.loads(SUMMARY.read_text())["summary"]
    overrides = [f"root={tmp_path}", "seed=0", "levels=1", "logger=none", "trainer.progress_bar=false"]
    run_config(compose_config(overrides))
    tickets = json.loads((seed_dir_of(overrides) / "tickets.json").read_text())
    seed0 = summary["seeds"].index(0)
    for level in (0, 1):
        assert tickets["levels"][level]["test_acc"] == summary["levels"][level]["per_seed"][seed0], level


def _tickets(accs: list[float], matching: float | None) -> dict:
    densities = [0.8**i for i in range(len(accs))]
    levels = [{"level": i, "density": d, "test_acc": a} for i, (d, a) in enumerate(zip(densities, accs, strict=True))]
    return {"levels": levels, "match_tolerance": 0.01, "metric_key": "test_acc", "min_matching_density": matching}


def test_across_seeds_means_spreads_and_matching_densities():
    summary = across_seeds({0: _tickets([0.60, 0.60, 0.55], 0.8), 2: _tickets([0.62, 0.60, 0.60], 0.64)})
    assert summary["seeds"] == [0, 2]
    dense, last = summary["levels"][0], summary["levels"][2]
    assert dense["mean"] == pytest.approx(0.61) and dense["sd"] == pytest.approx(math.sqrt(2) * 0.01)
    assert (last["min"], last["max"], last["per_seed"]) == (0.55, 0.60, [0.55, 0.60])
    assert summary["matching"] == {"per_seed": [0.8, 0.64], "mean": pytest.approx(0.72), "min": 0.64, "max": 0.8}
    assert summary["mean_matching_density"] == 0.8  # mean curve 0.61, 0.60, 0.575: level 2 falls short
