"""Controls retrain exactly like the ticket (issue: controls that retrain like the ticket), and the LTH paper's
metrics: every control's start step, steps, LR sequence, optimizer state and data order equal the ticket's in every
rewind mode, and differ only in the mask or (random_reinit) the starting weights; the combinations without a
like-for-like meaning are refused; metrics.json records where each level starts and its early-stopping point."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose_config, tiny

from lottery.cli import run_config
from lottery.core.artifacts import PREFIX
from lottery.core.matching import last_matching
from lottery.reports.tickets import summarize
from lottery.setup import experiment_hash
from lottery.training import fit
from lottery.training.module import LevelModule

SGD = ("rewind.step=20it", "optim=sgd", "optim.momentum=0.9", "schedule=cosine")
MODES = {
    "weights": ("rewind=weights",),
    "lr": ("rewind=lr",),
    "finetune": ("rewind=finetune", "rewind.finetune_lr=0.02"),
}


def trace_fits(monkeypatch) -> dict[str, dict]:
    """Per fit (its level folder, relative to the seed folder): the step it starts at, its optimizer state then,
    and per optimizer step the LR and a digest of the batch it trained on."""
    fits: dict[str, dict] = {}
    current: dict[str, str] = {}
    fit_stack = fit.fit_stack

    def traced(setups, specs, trackers):
        current["name"] = str(specs[0].paths.dir.relative_to(setups[0].paths.seed_dir))
        fits[current["name"]] = {"lrs": [], "batches": [], "steps": []}
        return fit_stack(setups, specs, trackers)

    on_train_start, train_step = LevelModule.on_train_start, LevelModule.train_step

    def record_start(self):
        fits[current["name"]]["start"] = self.trainer.global_step
        fits[current["name"]]["state"] = {  # replica 0's slice of the stack's state (a run is a stack of one)
            k: {n: t[0].clone() if t.dim() else t.clone() for n, t in s.items()}
            for k, s in self.optimizer_state()["state"].items()
        }
        on_train_start(self)

    def record_step(self, xs, ys):
        trace = fits[current["name"]]
        trace["steps"].append(self.trainer.global_step)
        trace["lrs"].append(self.trainer.optimizers[0].param_groups[0]["lr"])
        trace["batches"].append(xs.clone())
        return train_step(self, xs, ys)

    monkeypatch.setattr(fit, "fit_stack", traced)
    monkeypatch.setattr(LevelModule, "on_train_start", record_start)
    monkeypatch.setattr(LevelModule, "train_step", record_step)
    return fits


@pytest.mark.parametrize("mode", list(MODES))
def test_every_control_retrains_by_the_tickets_procedure(tmp_path, monkeypatch, mode):
    fits = trace_fits(monkeypatch)
    controls = ["random_prune", "oneshot"] + (["random_reinit"] if mode != "finetune" else [])
    for branch in controls:
        run_config(compose_config(tiny(tmp_path, *SGD, *MODES[mode], f"branch={branch}")))
    for level in (1, 2):
        ticket = fits[f"level_{level}"]
        expected_start = 0 if mode == "finetune" else 20
        assert ticket["start"] == expected_start and ticket["steps"][0] == expected_start
        for branch in controls:
            control = fits[f"branch_{branch}/level_{level}"]
            assert control["start"] == ticket["start"], branch
            assert control["steps"] == ticket["steps"], branch  # the same steps, so the same evaluation steps
            assert control["lrs"] == ticket["lrs"], branch  # the same LR at every step
            for a, b in zip(control["batches"], ticket["batches"], strict=True):  # the same data order
                assert torch.equal(a, b), branch
            if branch == "random_reinit" or mode == "finetune":
                assert control["state"] == {}, branch  # a fresh optimizer state
            else:  # the rewind point's momentum, like the ticket
                assert control["state"].keys() == ticket["state"].keys()
                for k in ticket["state"]:
                    assert torch.equal(control["state"][k]["momentum_buffer"], ticket["state"][k]["momentum_buffer"])
    seed_dir = tmp_path / "default" / experiment_hash(_settings(tmp_path, *SGD, *MODES[mode]))[0] / "seed_0"
    for folder in ["", *[f"branch_{b}/" for b in controls]]:
        metrics = json.loads((seed_dir / f"{folder}level_1" / "metrics.json").read_text())
        assert metrics["start_step"] == (0 if mode == "finetune" else 20)
        assert metrics["steps_trained"] == 60 - metrics["start_step"]


def _settings(root, *extra):
    from omegaconf import OmegaConf

    return OmegaConf.to_object(compose_config(tiny(root, *extra)))


def test_random_reinit_starts_at_the_rewind_step_with_a_fresh_initialisation(tmp_path, monkeypatch):
    fits = trace_fits(monkeypatch)
    run_config(compose_config(tiny(tmp_path, *SGD, "branch=random_reinit")))
    seed_dir = next((tmp_path / "default").glob("*/seed_0"))
    rewind = torch.load(seed_dir / "rewind.ckpt", weights_only=True)
    weights = torch.load(seed_dir / "branch_random_reinit" / "level_1" / "weights.pt", weights_only=True)
    assert fits["branch_random_reinit/level_1"]["start"] == 20
    # trained from other weights than the rewind point's: no kept weight of the result equals the ticket's start
    mask = torch.load(seed_dir / "level_1" / "mask.pt", weights_only=True)
    for name, m in mask.items():
        assert not torch.equal(weights[name][m], rewind["state_dict"][PREFIX + name][m])


def test_lr_rewinding_restores_the_rewind_points_optimizer_state_bit_for_bit(tmp_path, monkeypatch):
    fits = trace_fits(monkeypatch)
    run_config(compose_config(tiny(tmp_path, "rewind.step=20it", "schedule=cosine", "rewind=lr", "optim=adam")))
    seed_dir = next((tmp_path / "default").glob("*/seed_0"))
    saved = torch.load(seed_dir / "rewind.ckpt", weights_only=True)["optimizer_states"][0]["state"]
    for level in (1, 2):
        state = fits[f"level_{level}"]["state"]
        assert state.keys() == saved.keys() and saved
        for k in saved:
            for name in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(state[k][name], saved[k][name]), (level, k, name)


def test_a_rewound_level_trains_on_the_batches_of_steps_k_onward(tmp_path, monkeypatch):
    """A level rewound to k = 20 sees exactly the batches the dense run saw at steps 20..59 (not those of 0..39)."""
    fits = trace_fits(monkeypatch)
    run_config(compose_config(tiny(tmp_path, *SGD)))
    dense, rewound = fits["level_0"], fits["level_1"]
    assert rewound["steps"] == list(range(20, 60)) and dense["steps"] == list(range(60))
    for a, b in zip(rewound["batches"], dense["batches"][20:], strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(rewound["batches"][0], dense["batches"][0])  # a restart at step 0 would fail here


def test_early_stopping_point_is_the_minimum_validation_loss_and_its_test_accuracy(tmp_path, monkeypatch):
    seen: list[tuple[str, int, float, float]] = []
    evaluate = LevelModule.evaluate

    def recorded(self, x, y):
        scores = evaluate(self, x, y)
        (acc, loss) = scores[0]  # a run is a stack of one
        split = "val" if x is self.val_data[0] else ("test" if self.test_data and x is self.test_data[0] else "?")
        seen.append((split, self.trainer.global_step, acc, loss))
        return scores

    monkeypatch.setattr(LevelModule, "evaluate", recorded)
    run_config(compose_config(tiny(tmp_path, "levels=0", "train.eval_every=10it")))
    seed_dir = next((tmp_path / "default").glob("*/seed_0"))
    metrics = json.loads((seed_dir / "level_0" / "metrics.json").read_text())
    # an evaluation at the end of a chunk of steps reads the step it evaluates
    val = [(step, loss) for split, step, _, loss in seen if split == "val"]
    best = min(val, key=lambda v: v[1])
    first_best = next(step for step, loss in val if loss == best[1])
    assert metrics["early_stop_step"] == first_best
    tests_at = {step: acc for split, step, acc, _ in seen if split == "test" and step <= 60}
    assert metrics["early_stop_test_acc"] == tests_at[first_best]
    # the test split is scored only where the validation loss reached a new minimum
    minima, running = [], float("inf")
    for step, loss in val:
        if loss < running:
            minima.append(step)
            running = loss
    assert sorted(s for s in tests_at if s in dict(val)) == minima


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ("rewind=finetune", "branch=random_reinit", "schedule=step", "schedule.milestones=[30it]"),
            "branch=random_reinit has no like-for-like meaning under rewind.mode=finetune",
        ),
        (("rewind=finetune", "schedule=cosine"), "rewind.finetune_lr=<lr>"),
        (("rewind=weights", "rewind.finetune_lr=0.01"), "rewind.finetune_lr=0.01 is the LR of fine-tuning"),
        (("rewind=finetune", "rewind.finetune_lr=0"), "must be a positive learning rate"),
        (("ticket.metric=best",), "ticket.metric='best' is not one of"),
    ],
)
def test_combinations_without_a_like_for_like_meaning_are_refused(tmp_path, extra, message):
    from lottery.config import ConfigError

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        run_config(compose_config(tiny(tmp_path, *extra)))
    assert not any((tmp_path / "default").glob("*/seed_0/level_0/metrics.json"))


def test_the_lowest_matching_density_needs_every_denser_level_to_match(tmp_path):
    assert last_matching([(0, 0.60), (1, 0.61), (2, 0.55), (3, 0.60)], 0.60, 0.01) == 1
    assert last_matching([(0, float("nan"))], 0.60, 0.01) is None
    from lottery.core.layout import RunPaths

    paths = RunPaths(root=tmp_path, name="n", hash="h", seed=0)
    for level, (density, acc) in enumerate([(1.0, 0.60), (0.8, 0.61), (0.64, 0.55), (0.51, 0.60)]):
        lp = paths.level(level)
        lp.dir.mkdir(parents=True)
        lp.metrics.write_text(json.dumps({"level": level, "density": density, "test_acc": acc}))
    summary = summarize(paths, 0.01)
    assert summary["min_matching_density"] == 0.8 and summary["min_matching_level"] == 1
    assert summary["min_matching_density_anywhere"] == 0.51  # a lucky level after a failed one, reported beside
