"""`lottery-compare` reads every experiment under a root and draws one accuracy-vs-density line per configuration."""

from __future__ import annotations

import csv

from conftest import compose_config, tiny

from lottery.cli import run_config
from lottery.compare import collect, main


def test_compare_draws_one_line_per_schedule_with_seeds_averaged(tmp_path):
    root = tmp_path / "out"
    for schedule in (["pruning=global_20", "levels=2"], ["pruning=target_list", "pruning.densities=[0.6,0.3]"]):
        for seed in (0, 1):
            run_config(compose_config(tiny(root, *schedule, f"seed={seed}")))
    experiments = collect(root)
    assert len(experiments) == 2
    assert sorted(e.label for e in experiments) == [
        "pruning.densities=[0.6, 0.3], pruning.schedule=densities",
        "pruning.schedule=fraction",
    ]
    assert all(len(e.levels[2]) == 2 for e in experiments)  # both seeds found

    out = tmp_path / "fig" / "schedules.png"
    assert main([str(root), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    with out.with_suffix(".csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {r["seeds"] for r in rows} == {"2"}
    densities = sorted({round(float(r["density"]), 4) for r in rows})
    assert densities == [0.3, 0.6, 0.64, 0.8, 1.0]


def test_compare_on_an_empty_root_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert f"no finished levels under {tmp_path}" in capsys.readouterr().out
