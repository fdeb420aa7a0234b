"""Early-bird tickets: the mask distance, the detector, and branch=early_bird end to end, including a kill and
resume of the search."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_config, seed_dir_of, tiny
from omegaconf import OmegaConf

from lottery.core.early_bird import EarlyBirdDetector, hamming_distance

KILL_SCRIPT = Path(__file__).with_name("kill_run.py")
# Snapshots every 5 of 60 steps. Consecutive masks of this tiny run differ in about 1.5% of their entries, so with a
# threshold of 3% the detector fires as soon as it has a full window of 5 distances: at step 10 + 4 * 5 = 30.
EXTRA = (
    "rewind=weights",
    "rewind.step=10it",
    "branch=early_bird",
    "early_bird.every=5it",
    "early_bird.window=5",
    "early_bird.threshold=0.03",
)


def test_hamming_distance_counts_disagreeing_entries_over_all_tensors():
    a = {"x": torch.tensor([True, True, False, False]), "y": torch.ones(2, 3, dtype=torch.bool)}
    assert hamming_distance(a, a) == 0.0
    b = {"x": torch.tensor([True, False, True, False]), "y": torch.ones(2, 3, dtype=torch.bool)}
    assert hamming_distance(a, b) == 2 / 10
    flipped = {k: ~v for k, v in a.items()}
    assert hamming_distance(a, flipped) == 1.0
    with pytest.raises(ValueError, match="different tensors"):
        hamming_distance(a, {"x": a["x"]})


def _mask_with_flips(base: torch.Tensor, flips: int) -> dict[str, torch.Tensor]:
    m = base.clone()
    m[:flips] = ~m[:flips]
    return {"w": m}


def test_detector_fires_at_the_first_full_window_under_the_threshold():
    base = torch.zeros(100, dtype=torch.bool)
    base[::2] = True
    # Mask i flips the first flips[i] entries of the base, so consecutive masks differ in 50, 30, 5, 4, 3, 2 entries.
    flips = [0, 50, 20, 15, 11, 8, 6]
    masks = [_mask_with_flips(base, f) for f in flips]
    detector = EarlyBirdDetector(window=3, threshold=0.1)
    fired = [detector.update(step, m) for step, m in zip(range(10, 80, 10), masks, strict=True)]
    assert fired == [False, False, False, False, False, True, False]  # fires once, at the third distance < 0.1
    assert detector.fired_step == 60
    assert detector.distances == pytest.approx([0.5, 0.3, 0.05, 0.04, 0.03])  # nothing recorded after firing
    assert detector.steps == [20, 30, 40, 50, 60]


def test_detector_state_round_trips_and_continues_identically():
    g = torch.Generator().manual_seed(1)
    masks = [{"w": torch.rand(64, generator=g) > 0.5} for _ in range(6)]
    whole = EarlyBirdDetector(window=2, threshold=0.6)
    for i, m in enumerate(masks):
        whole.update(i, m)
    first = EarlyBirdDetector(window=2, threshold=0.6)
    for i, m in enumerate(masks[:3]):
        first.update(i, m)
    second = EarlyBirdDetector(window=2, threshold=0.6)
    second.load_state_dict(first.state_dict())
    for i, m in enumerate(masks[3:], start=3):
        second.update(i, m)
    assert second.state_dict()["distances"] == whole.state_dict()["distances"]
    assert second.fired_step == whole.fired_step


def test_detector_rejects_bad_settings():
    with pytest.raises(ValueError, match="early_bird.window=0"):
        EarlyBirdDetector(window=0)
    with pytest.raises(ValueError, match="early_bird.threshold=0"):
        EarlyBirdDetector(threshold=0)


def bird(seed_dir: Path) -> Path:
    """The run's one early-bird folder (named after the branch and the early_bird settings that are not defaults)."""
    (folder,) = seed_dir.glob("branch_early_bird*")
    return folder


@pytest.fixture(scope="module")
def early_bird_run(tmp_path_factory):
    from lottery.cli import run_config

    root = tmp_path_factory.mktemp("early_bird")
    overrides = tiny(root, *EXTRA)
    run_config(compose_config(overrides))
    return root, overrides, seed_dir_of(overrides)


def test_early_bird_branch_stops_the_search_and_prunes_the_early_weights(early_bird_run):
    from lottery.core.pruning import prune
    from lottery.setup import prepare

    _, overrides, seed_dir = early_bird_run
    branch = bird(seed_dir)
    search = json.loads((branch / "search" / "search.json").read_text())
    assert search["fired"] and search["watched_level"] == 2
    step = search["early_bird_step"]
    assert step == 30 and search["steps"] == [10, 15, 20, 25, 30]
    assert max(search["distances"]) < 0.03
    assert all(s % 5 == 0 for s in search["steps"]) and search["steps"][0] == 10  # the first distance needs 2 masks
    assert not (branch / "search" / "checkpoints").exists()

    cfg = compose_config(overrides)
    setup = prepare(OmegaConf.to_object(cfg), OmegaConf.to_container(cfg.model), OmegaConf.to_container(cfg.optim))
    weights = torch.load(branch / "search" / "weights.pt", weights_only=True)
    dense = {n: torch.ones(s, dtype=torch.bool) for n, s in setup.shapes.items()}
    for level in (1, 2):
        mask = torch.load(branch / f"level_{level}" / "mask.pt", weights_only=True)
        expected = prune({n: weights[n] for n in dense}, dense, setup.plan, level)
        assert all(torch.equal(mask[n], expected[n]) for n in mask)
        trunk = json.loads((seed_dir / f"level_{level}" / "metrics.json").read_text())
        ticket = json.loads((branch / f"level_{level}" / "metrics.json").read_text())
        assert ticket["density"] == trunk["density"]  # exactly the trunk's density at each level
        trained = torch.load(branch / f"level_{level}" / "weights.pt", weights_only=True)
        assert all(not trained[n][~mask[n]].any() for n in mask)
    # The early-bird weights are not the fully trained dense weights: the search really stopped early.
    final = torch.load(seed_dir / "level_0" / "weights.pt", weights_only=True)
    assert any(not torch.equal(weights[k], final[k]) for k in final)


def test_early_bird_report_counts_the_steps_each_mask_cost(early_bird_run):
    _, _, seed_dir = early_bird_run
    report = json.loads((bird(seed_dir) / "early_bird.json").read_text())
    step = report["early_bird_step"]
    assert [r["level"] for r in report["levels"]] == [1, 2]
    for r in report["levels"]:
        trunk = json.loads((seed_dir / f"level_{r['level']}" / "metrics.json").read_text())
        imp_cost = 60 + 50 * (r["level"] - 1)  # level 0 trains 60 steps, each rewound level 60 - k = 50
        assert r["imp_search_steps"] == imp_cost
        assert r["early_bird_search_steps"] == step
        assert r["steps_saved"] == imp_cost - step
        assert r["imp_test_acc"] == trunk["test_acc"]
        assert r["difference"] == r["early_bird_test_acc"] - trunk["test_acc"]
    tickets = json.loads((seed_dir / "tickets.json").read_text())
    assert tickets["branches"] == ["early_bird_every5it_threshold0.03"]  # the settings that differ from defaults
    assert (
        tickets["levels"][1]["controls"]["early_bird_every5it_threshold0.03"]["test_acc"]
        == report["levels"][0]["early_bird_test_acc"]
    )


def test_a_detector_that_never_fires_falls_back_to_the_trained_dense_network(run_tiny):
    _, seed_dir = run_tiny("branch=early_bird", "early_bird.every=20it", "early_bird.threshold=0.000001", "levels=1")
    search = json.loads((bird(seed_dir) / "search" / "search.json").read_text())
    assert not search["fired"] and search["early_bird_step"] == 60
    weights = torch.load(bird(seed_dir) / "search" / "weights.pt", weights_only=True)
    final = torch.load(seed_dir / "level_0" / "weights.pt", weights_only=True)
    assert all(torch.equal(weights[k], final[k]) for k in final)  # the search is the trunk's level 0, bit for bit


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("branch=early_bird", "levels=0"), "needs at least one pruning level"),
        (("branch=early_bird", "early_bird.level=5"), "early_bird.level=5 is beyond"),
        (("branch=early_bird", "early_bird.every=0it"), "early_bird.every='0it' is zero"),
        (("branch=early_bird", "early_bird.window=0"), "early_bird.window=0"),
        (("branch=early_bird", "rewind=lr"), "needs rewind.mode=weights"),
    ],
)
def test_bad_early_bird_settings_fail_before_training(tmp_path, overrides, message):
    from lottery.cli import run_config
    from lottery.validate import ConfigError

    with pytest.raises(ConfigError, match=message):
        run_config(compose_config(tiny(tmp_path, *overrides)))
    assert not list(tmp_path.rglob("metrics.json"))


@pytest.mark.parametrize("kill_step", [20, 24])
def test_early_bird_search_killed_resumes_to_the_same_ticket(tmp_path, early_bird_run, kill_step):
    """Killed right at a resume checkpoint's step and between two, the search resumes with the detector's state
    from the checkpoint and fires at the same step with the same weights."""
    from lottery.cli import run_config

    _, _, reference = early_bird_run
    overrides = tiny(tmp_path, *EXTRA)
    # Fits 1-3 are the trunk's levels; fit 4 is the search.
    proc = subprocess.run(
        [sys.executable, str(KILL_SCRIPT), "fit:4", "0", str(kill_step), *overrides], capture_output=True, timeout=300
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    seed_dir = seed_dir_of(overrides)
    assert not (bird(seed_dir) / "search" / "search.json").exists()
    run_config(compose_config(overrides))
    for name in ("search/search.json", "early_bird.json"):
        got = json.loads((bird(seed_dir) / name).read_text())
        assert got == json.loads((bird(reference) / name).read_text()), name
    for name in ("search/weights.pt", "level_2/weights.pt"):
        got = torch.load(bird(seed_dir) / name, weights_only=True)
        want = torch.load(bird(reference) / name, weights_only=True)
        assert all(torch.equal(got[k], want[k]) for k in want), name


def test_early_bird_search_killed_after_firing_at_a_checkpoint_step_stops_at_once_on_resume(tmp_path):
    """With a window of 7 the detector fires at step 40, where a resume checkpoint is also saved (with the detector's
    fired state). Killed before the search's weights are renamed into place, the re-run resumes from that checkpoint
    and must stop there rather than train on."""
    from lottery.cli import run_config

    extra = (*EXTRA, "early_bird.window=7", "levels=1")
    reference = tmp_path / "reference"
    run_config(compose_config(tiny(reference, *extra)))
    overrides = tiny(tmp_path / "killed", *extra)
    proc = subprocess.run(
        [sys.executable, str(KILL_SCRIPT), "artifact:search/weights.pt", "0", "0", *overrides],
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    seed_dir = seed_dir_of(overrides)
    assert (bird(seed_dir) / "search" / "checkpoints" / "last.ckpt").exists()
    run_config(compose_config(overrides))
    want_dir = bird(seed_dir_of(tiny(reference, *extra))) / "search"
    got = json.loads((bird(seed_dir) / "search" / "search.json").read_text())
    assert got == json.loads((want_dir / "search.json").read_text())
    assert got["early_bird_step"] == 40
    weights = torch.load(bird(seed_dir) / "search" / "weights.pt", weights_only=True)
    want = torch.load(want_dir / "weights.pt", weights_only=True)
    assert all(torch.equal(weights[k], want[k]) for k in want)


def test_early_bird_searches_with_other_settings_are_kept_apart(early_bird_run):
    """A second threshold is a second search in its own folder, never the first one's record reused."""
    from lottery.cli import run_config

    root, overrides, seed_dir = early_bird_run
    first = json.loads((seed_dir / "branch_early_bird_every5it_threshold0.03" / "search" / "search.json").read_text())
    run_config(compose_config([*overrides, "early_bird.threshold=0.05", "early_bird.window=6"]))
    second_dir = seed_dir / "branch_early_bird_every5it_window6_threshold0.05"
    second = json.loads((second_dir / "search" / "search.json").read_text())
    assert (first["threshold"], first["window"], first["early_bird_step"]) == (0.03, 5, 30)
    assert (second["threshold"], second["window"], second["early_bird_step"]) == (0.05, 6, 35)
    assert second["distances"][:5] == first["distances"]  # the same dense run, watched for longer
    tickets = json.loads((seed_dir / "tickets.json").read_text())
    assert tickets["branches"] == ["early_bird_every5it_threshold0.03", "early_bird_every5it_window6_threshold0.05"]
