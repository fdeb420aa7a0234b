"""Control branches: what each one's mask and initialisation are, that they never retrain the trunk, and the ticket
summary they feed (seed_<s>/tickets.json)."""

from __future__ import annotations

import json

import pytest
import torch

from lottery.training.module import PREFIX, LevelModule


@pytest.fixture
def trunk(run_tiny):
    """A finished 2-level trunk with weight rewinding to step 20."""
    _, seed_dir = run_tiny("rewind=weights", "rewind.step=20it")
    return seed_dir


def run_branch(run_tiny, monkeypatch, branch):
    """Run a branch on the existing trunk; returns (seed_dir, trunk levels trained, branch start weights)."""
    import lottery.training.fit as fit

    trained, starts = [], []
    fit_stack = fit.fit_stack

    def counting(setups, specs, trackers):
        pairs = zip(setups, specs, strict=True)
        trained.extend(spec.level for setup, spec in pairs if spec.paths.dir.parent == setup.paths.seed_dir)
        return fit_stack(setups, specs, trackers)

    monkeypatch.setattr(fit, "fit_stack", counting)
    on_train_start = LevelModule.on_train_start

    def record(self):
        starts.append(self.replica_weights(0))
        on_train_start(self)

    monkeypatch.setattr(LevelModule, "on_train_start", record)
    _, seed_dir = run_tiny("rewind=weights", "rewind.step=20it", f"branch={branch}")
    return seed_dir, trained, starts


def load(path):
    return torch.load(path, weights_only=True)


def test_random_prune_keeps_every_layers_density_exactly_at_random_positions(trunk, run_tiny, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in trunk.glob("level_*/*")}
    seed_dir, trained, starts = run_branch(run_tiny, monkeypatch, "random_prune")
    assert trained == []  # the trunk is never retrained
    assert {p: p.stat().st_mtime_ns for p in trunk.glob("level_*/*")} == before
    rewind = load(seed_dir / "rewind.ckpt")["state_dict"]
    for i, level in enumerate((1, 2)):
        trunk_mask = load(seed_dir / f"level_{level}" / "mask.pt")
        mask = load(seed_dir / "branch_random_prune" / f"level_{level}" / "mask.pt")
        for name in trunk_mask:
            assert int(mask[name].sum()) == int(trunk_mask[name].sum())  # per-layer density exactly
        assert not all(torch.equal(mask[n], trunk_mask[n]) for n in mask)  # but other weights
        for key, value in starts[i].items():  # from the trunk's rewind point, times the random mask
            expected = rewind[PREFIX + key] * mask[key] if key in mask else rewind[PREFIX + key]
            assert torch.equal(value, expected), key


def test_random_reinit_keeps_the_mask_with_a_fresh_initialisation(trunk, run_tiny, monkeypatch):
    seed_dir, trained, starts = run_branch(run_tiny, monkeypatch, "random_reinit")
    assert trained == []
    theta0 = load(seed_dir / "init.pt")
    for i, level in enumerate((1, 2)):
        trunk_mask = load(seed_dir / f"level_{level}" / "mask.pt")
        mask = load(seed_dir / "branch_random_reinit" / f"level_{level}" / "mask.pt")
        assert all(torch.equal(mask[n], trunk_mask[n]) for n in mask)
        for name, m in mask.items():
            start = starts[i][name]
            assert torch.count_nonzero(start[~m]) == 0
            assert not bool((start[m] == theta0[name][m]).any()), "a weight kept the trunk's theta_0 value"
    metrics = json.loads((seed_dir / "branch_random_reinit" / "level_1" / "metrics.json").read_text())
    assert metrics["best_val_step"] >= 20 and "level_key" not in metrics


def test_oneshot_prunes_the_dense_trained_weights_straight_to_each_level(trunk, run_tiny, monkeypatch):
    from lottery.core.pruning import keep_count

    seed_dir, trained, _ = run_branch(run_tiny, monkeypatch, "oneshot")
    assert trained == []
    dense = load(seed_dir / "level_0" / "weights.pt")
    for level in (1, 2):
        mask = load(seed_dir / "branch_oneshot" / f"level_{level}" / "mask.pt")
        kept = sum(int(m.sum()) for m in mask.values())
        assert kept == keep_count(15000, 0.8**level)
        # the kept weights are the largest-magnitude dense weights
        threshold = torch.cat([dense[n][m].abs().flatten() for n, m in mask.items()]).min()
        pruned = torch.cat([dense[n][~m].abs().flatten() for n, m in mask.items()])
        assert bool((pruned <= threshold).all())


def test_tickets_json_holds_dense_accuracy_matching_density_and_margins(trunk, run_tiny, monkeypatch):
    seed_dir, _, _ = run_branch(run_tiny, monkeypatch, "random_prune")
    run_branch(run_tiny, monkeypatch, "random_reinit")
    tickets = json.loads((seed_dir / "tickets.json").read_text())
    trunk_metrics = [json.loads((seed_dir / f"level_{lvl}" / "metrics.json").read_text()) for lvl in range(3)]
    assert tickets["dense_test_acc"] == trunk_metrics[0]["test_acc"]
    assert tickets["branches"] == ["random_prune", "random_reinit"]
    # the sparsest level such that it and every denser level are within the tolerance of dense
    run = [
        m
        for i, m in enumerate(trunk_metrics)
        if all(x["test_acc"] >= trunk_metrics[0]["test_acc"] - 0.01 for x in trunk_metrics[: i + 1])
    ]
    assert tickets["min_matching_density"] == run[-1]["density"]
    for row in tickets["levels"][1:]:
        for branch in ("random_prune", "random_reinit"):
            control = json.loads((seed_dir / f"branch_{branch}" / f"level_{row['level']}" / "metrics.json").read_text())
            assert row["controls"][branch]["test_acc"] == control["test_acc"]
            assert row["margin"][branch] == row["test_acc"] - control["test_acc"]
    assert tickets["levels"][0]["controls"] == {}


def test_a_branch_on_a_fresh_folder_runs_the_trunk_first(run_tiny):
    rows, seed_dir = run_tiny("branch=random_prune", "levels=1")
    assert len(rows) == 2 and (seed_dir / "level_1" / "metrics.json").exists()
    assert (seed_dir / "branch_random_prune" / "level_1" / "metrics.json").exists()
    assert not (seed_dir / "branch_random_prune" / "level_0").exists()  # controls start at level 1


def test_unknown_branch_is_refused(tmp_path):
    from conftest import compose_config, tiny

    from lottery.cli import run_config
    from lottery.validate import ConfigError

    with pytest.raises(ConfigError, match="branch='lucky'"):
        run_config(compose_config(tiny(tmp_path, "branch=lucky")))
