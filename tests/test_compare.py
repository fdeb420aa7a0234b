"""`lottery-compare` reads outputs without re-running anything: accuracy against density per configuration (ticket and
controls, over seeds) and the mask overlap across seeds."""

from __future__ import annotations

import csv
import time

import pytest
import torch
from conftest import compose_config, tiny

from lottery.cli import run_config
from lottery.core.overlap import expected_random_jaccard, jaccard, random_mask_like, sign_agreement
from lottery.reports.compare import collect, main

PNG = b"\x89PNG\r\n\x1a\n"


def rows_of(path):
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two schedules x two seeds, plus a random_prune control for the first schedule."""
    root = tmp_path_factory.mktemp("sweep")
    for schedule in (["pruning=global_20", "levels=2"], ["pruning=target_list", "pruning.densities=[0.6,0.3]"]):
        for seed in (0, 1):
            run_config(compose_config(tiny(root, *schedule, f"seed={seed}")))
    for seed in (0, 1):
        run_config(compose_config(tiny(root, "pruning=global_20", "levels=2", f"seed={seed}", "branch=random_prune")))
    return root


def test_compare_writes_accuracy_and_overlap_reports(sweep, tmp_path):
    import lightning as L

    fit = L.Trainer.fit
    L.Trainer.fit = lambda *a, **k: pytest.fail("lottery-compare must not train")
    try:
        start = time.perf_counter()
        assert main([str(sweep), "--out", str(tmp_path / "report")]) == 0
        elapsed = time.perf_counter() - start
    finally:
        L.Trainer.fit = fit
    assert elapsed < 10
    report = tmp_path / "report"
    for name in ("accuracy_vs_density.png", "mask_overlap.png"):
        assert (report / name).read_bytes()[:8] == PNG
    accuracy = rows_of(report / "accuracy_vs_density.csv")
    lines = {(r["label"], r["line"]) for r in accuracy}
    assert lines == {
        ("pruning.schedule=fraction", "ticket"),
        ("pruning.schedule=fraction", "random_prune"),
        ("pruning.densities=[0.6, 0.3], pruning.schedule=densities", "ticket"),
    }
    assert {r["seeds"] for r in accuracy} == {"2"}
    assert sorted({round(float(r["density"]), 4) for r in accuracy}) == [0.3, 0.6, 0.64, 0.8, 1.0]

    overlap = rows_of(report / "mask_overlap.csv")
    assert {(r["seed_a"], r["seed_b"]) for r in overlap} == {("seed_0", "seed_1")}
    assert {r["layer"] for r in overlap} == {"fc1.weight", "fc2.weight", "fc3.weight", "*"}
    dense = [r for r in overlap if r["level"] == "0"]
    assert all(float(r["jaccard"]) == 1.0 for r in dense)
    for r in overlap:
        assert 0.0 <= float(r["jaccard"]) <= 1.0 and 0.0 <= float(r["sign_agreement"]) <= 1.0
        # the heatmap shows the overlap relative to two random masks of the same densities; the raw value stays
        assert float(r["jaccard_over_random"]) == pytest.approx(float(r["jaccard"]) / float(r["random_jaccard"]))


def test_a_single_configuration_is_labelled_by_its_name_not_a_hash(sweep):
    first = collect([sweep])[0]
    assert [e.label for e in collect([first.path])] == ["default"]  # compared with nothing, nothing differs


def test_collect_finds_experiments_from_a_root_a_name_or_hash_folders(sweep):
    assert len(collect([sweep])) == 2
    assert len(collect([sweep / "default"])) == 2
    (one, *_) = sorted((sweep / "default").iterdir())
    assert len(collect([one])) == 1


def test_compare_on_an_empty_root_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert f"no finished levels under {tmp_path}" in capsys.readouterr().out


def test_overlap_of_identical_masks_is_one_and_of_random_masks_near_the_density():
    gen = torch.Generator().manual_seed(0)
    reference = {"w": torch.rand(200, 500, generator=gen) < 0.2}
    assert jaccard(reference["w"], reference["w"]) == 1.0
    a, b = random_mask_like(reference, gen)["w"], random_mask_like(reference, gen)["w"]
    assert int(a.sum()) == int(reference["w"].sum())  # random masks keep the per-layer count exactly
    d = int(a.sum()) / a.numel()
    expected = expected_random_jaccard(a.numel(), int(a.sum()), int(b.sum()))
    assert expected == pytest.approx(d * d / (2 * d - d * d))
    assert jaccard(a, b) == pytest.approx(expected, abs=0.01)
    assert int((a & b).sum()) / int(a.sum()) == pytest.approx(d, abs=0.01)  # overlap share ~ the density


def test_sign_agreement():
    a = torch.tensor([1.0, -1.0, 2.0, -3.0])
    b = torch.tensor([1.0, 1.0, 5.0, 3.0])
    assert sign_agreement(a, b, torch.tensor([True, True, True, True])) == 0.5
    assert sign_agreement(a, b, torch.tensor([True, False, True, False])) == 1.0
