"""One engine (lottery/training/stack.py, fit.py): seeds trained as one stack give each seed exactly what it gets alone
(a solo run is a stack of one), keep per-replica masks exact, never leak between replicas, resume bit for bit after a
kill, train one at a time what cannot stack, and the cohort launcher groups a sweep by everything but seed and
branch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_RECALL, compose_config, seed_dir_of, tiny
from test_resume import artifacts_of, assert_identical

from lottery.cli import prepare_job, run_cohort_configs, run_config
from lottery.core import masks as M
from lottery.models.mlp import MLP
from lottery.training import fit
from lottery.training.module import LevelModule
from lottery.training.stack import Stack

KILL_SCRIPT = Path(__file__).with_name("kill_cohort.py")
# Rewinding to step 20 and SGD with momentum under a cosine schedule: optimizer state, LR position and rewind point
# all have to be sliced and stacked correctly for the results below to match.
EXTRA = ("rewind.step=20it", "optim=sgd", "optim.lr=0.05", "schedule=cosine")


def cohort(root: Path, seeds, *extra: str) -> dict[int, Path]:
    jobs = [prepare_job(compose_config(tiny(root, *EXTRA, *extra, f"seed={s}"))) for s in seeds]
    run_cohort_configs(jobs)
    return {s: seed_dir_of(tiny(root, *EXTRA, *extra, f"seed={s}")) for s in seeds}


def without_cohort_record(artifacts: dict) -> dict:
    """The artifacts minus the record of the stack a level trained in (its size), which is all that may differ."""
    levels = {
        name: {**level, "metrics": {k: v for k, v in level["metrics"].items() if k != "cohort"}}
        for name, level in artifacts["levels"].items()
    }
    return {"levels": levels, "run": artifacts["run"]}


@pytest.fixture(scope="module")
def cohort_of_three(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort3")
    return {s: artifacts_of(d) for s, d in cohort(root, (0, 1, 2)).items()}


def test_a_seed_alone_equals_it_in_a_stack_of_three_bit_for_bit(tmp_path, cohort_of_three):
    """Masks, weights and every metric: the solo command and the cohort launcher run one engine."""
    run_config(compose_config(tiny(tmp_path, *EXTRA, "seed=1")))
    alone = artifacts_of(seed_dir_of(tiny(tmp_path, *EXTRA, "seed=1")))
    assert [a["metrics"]["cohort"]["size"] for a in cohort_of_three[1]["levels"].values()] == [3, 3, 3]
    assert cohort_of_three[1]["levels"]["level_0"]["metrics"]["cohort"]["device"] == "cpu"
    assert all("cohort" not in a["metrics"] for a in alone["levels"].values())  # a stack of one records none
    assert_identical(without_cohort_record(cohort_of_three[1]), alone)
    # and the seeds really differ from each other (different init and data order)
    w0, w1 = cohort_of_three[0]["levels"]["level_2"]["weights"], cohort_of_three[1]["levels"]["level_2"]["weights"]
    assert not torch.equal(w0["fc1.weight"], w1["fc1.weight"])


def test_a_seed_in_a_stack_of_eight_equals_it_alone(tmp_path):
    """With Adam (the multi-tensor implementation every fit uses) and weight decay."""
    adam = ("levels=1", "optim=adam", "optim.weight_decay=0.01")
    dirs = cohort(tmp_path, range(8), *adam)
    run_config(compose_config(tiny(tmp_path / "alone", *EXTRA, *adam, "seed=5")))
    alone = seed_dir_of(tiny(tmp_path / "alone", *EXTRA, *adam, "seed=5"))
    assert_identical(without_cohort_record(artifacts_of(dirs[5])), without_cohort_record(artifacts_of(alone)))


def module_of(nets, masks=None, **kwargs):
    masks = masks or [M.dense_mask({k: v.shape for k, v in M.prunable_weights(n).items()}) for n in nets]
    return LevelModule(
        Stack(nets), torch.optim.SGD, lambda s: 1.0, masks, (torch.zeros(1, 12), torch.zeros(1).long()), 3, 1, 1
    )


def test_each_replica_keeps_its_own_mask_exactly():
    torch.manual_seed(0)
    nets = [MLP([12], 3, [16]) for _ in range(3)]
    masks = []
    for i, net in enumerate(nets):
        w = M.prunable_weights(net)
        g = torch.Generator().manual_seed(i)
        masks.append({k: torch.rand(v.shape, generator=g) < 0.3 + 0.3 * i for k, v in w.items()})
    module = module_of(nets, masks)
    optimizer = torch.optim.Adam(module.network.parameters(), lr=0.1, weight_decay=0.1)
    module.enforce_mask()
    for _ in range(5):
        loss = module.replica_losses(torch.randn(3, 10, 12), torch.randint(0, 3, (3, 10))).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        module.enforce_mask()
    for i, mask in enumerate(masks):
        weights = module.replica_weights(i)
        for k, m in mask.items():
            assert bool((weights[k][~m] == 0).all()), (i, k)
            assert bool((weights[k][m] != 0).all()), (i, k)  # survivors moved off zero
        assert M.density({k: weights[k] != 0 for k in mask}) == M.density(mask)


def test_a_replicas_gradient_does_not_depend_on_another_replicas_data():
    torch.manual_seed(0)
    nets = [MLP([12], 3, [16]) for _ in range(3)]
    solo = MLP([12], 3, [16])
    solo.load_state_dict(nets[0].state_dict())
    module = module_of(nets)
    xs, ys = torch.randn(3, 10, 12), torch.randint(0, 3, (3, 10))

    def grads(xs):
        module.zero_grad()
        module.replica_losses(xs, ys).sum().backward()
        return {k: p.grad.clone() for k, p in module.network.named_parameters()}

    before = grads(xs)
    changed = xs.clone()
    changed[1] = torch.randn(10, 12) * 5
    after = grads(changed)
    for k in before:
        assert torch.equal(before[k][0], after[k][0]) and torch.equal(before[k][2], after[k][2]), k
        assert not torch.equal(before[k][1], after[k][1]), k
    # replica 0's gradient is its plain network's gradient on its own batch, bit for bit
    torch.nn.functional.cross_entropy(solo(xs[0]), ys[0]).backward()
    for name, p in solo.named_parameters():
        assert torch.equal(before[name][0], p.grad), name


@pytest.mark.parametrize(
    "point,level,step,resumes",
    [
        # after the rewind capture and the step-20 checkpoints: level 0 resumes at 20
        ("step", 0, 30, ["seed 0, 1 level 0: resuming at step 20 of 60"]),
        # seed 0 saved step 40, seed 1 had no checkpoint yet: two sub-cohorts, seed 1 restarts at its rewind step
        ("split", 1, 40, ["seed 0 level 1: resuming at step 40 of 60"]),
        # seed 0 finished level 1, seed 1 did not: seed 1 resumes level 1 alone
        ("level_end", 1, 0, ["seed 1 level 1: resuming at step 40 of 60"]),
    ],
)
def test_a_killed_cohort_resumes_to_identical_results(tmp_path, capsys, cohort_of_three, point, level, step, resumes):
    overrides = [*tiny(tmp_path, *EXTRA)]
    killed = subprocess.run(
        [sys.executable, str(KILL_SCRIPT), point, str(level), str(step), "0,1", *overrides],
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    capsys.readouterr()
    dirs = cohort(tmp_path, (0, 1))
    said = [line.split(" from ")[0] for line in capsys.readouterr().out.splitlines() if "resuming" in line]
    assert said == resumes
    for s in (0, 1):
        assert_identical(without_cohort_record(artifacts_of(dirs[s])), without_cohort_record(cohort_of_three[s]))
    assert not list(tmp_path.rglob("last.ckpt")) and not list(tmp_path.rglob(".stack"))


def test_what_cannot_stack_trains_one_replica_at_a_time_with_a_notice(tmp_path, capsys, monkeypatch, cohort_of_three):
    """A distributed trainer, or a model the stack cannot run, does not end the sweep: its replicas train apart, each
    to exactly what it trains in a stack (here: an MLP the grouping is told it cannot stack)."""
    setups = [prepare_job(compose_config(tiny(tmp_path, "trainer.devices=2", "trainer.strategy=ddp")))[0]]
    assert "trainer.strategy=ddp trainer.devices=2" in fit._unstackable(setups[0], None)
    monkeypatch.setattr(fit, "kind_of", lambda network: "single")  # what fit_levels reads to group; Stack is untouched
    capsys.readouterr()
    dirs = cohort(tmp_path / "apart", (0, 1))
    notices = [line for line in capsys.readouterr().out.splitlines() if "train one at a time" in line]
    assert notices == [
        f"level {n}: 2 replicas train one at a time: model=mlp cannot be stacked (dropout, or a layer the stack lacks)"
        for n in range(3)
    ]
    for s in (0, 1):
        apart = artifacts_of(dirs[s])
        assert all("cohort" not in level["metrics"] for level in apart["levels"].values())  # each a stack of one
        assert_identical(without_cohort_record(cohort_of_three[s]), apart)
    dropout = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.1))
    assert Stack([dropout]).kind == "single"
    with pytest.raises(ValueError, match="cannot be stacked"):
        Stack([dropout, dropout])


def test_the_launcher_groups_a_mixed_sweep_by_everything_but_seed_and_branch():
    from omegaconf import OmegaConf

    from hydra_plugins.lottery_cohort_launcher.cohort_launcher import group_jobs

    sweep = [
        (seed, width, branch) for width in (0.5, 1.0) for seed in (0, 1, 2) for branch in ("none", "random_reinit")
    ]
    tasks = []
    for seed, width, branch in sweep:
        cfg = compose_config(["launcher=cohort", f"seed={seed}", f"model.width={width}", f"branch={branch}"])
        tasks.append(OmegaConf.to_container(cfg, resolve=True))
    groups = group_jobs(tasks)
    assert [[sweep[i][1] for i in g] for g in groups] == [[0.5] * 6, [1.0] * 6]
    assert [sorted({sweep[i][0] for i in g}) for g in groups] == [[0, 1, 2], [0, 1, 2]]


def test_launcher_cohort_runs_a_sweep_from_the_command_line(tmp_path):
    """The real entry point: Hydra discovers the launcher plugin, trains both seeds' trunks as a cohort of 2, then
    both seeds' control branch as a cohort of 2; every file lands where a solo run puts it."""
    lottery = Path(sys.executable).with_name("lottery")
    overrides = [o for o in tiny(tmp_path) if not o.startswith("levels")] + ["levels=1"]
    done = subprocess.run(
        [str(lottery), "-m", "launcher=cohort", "seed=0,1", "branch=none,random_reinit", *overrides],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for seed in (0, 1):
        seed_dir = seed_dir_of([*overrides, f"seed={seed}"])
        metrics = json.loads((seed_dir / "level_1" / "metrics.json").read_text())
        assert metrics["cohort"] == {"size": 2, "device": "cpu"}
        control = json.loads((seed_dir / "branch_random_reinit" / "level_1" / "metrics.json").read_text())
        assert control["cohort"] == {"size": 2, "device": "cpu"}  # the control's seeds packed too
        assert control["train_seconds"] < 600  # the rewind point's clock, not the machine's uptime
        assert (seed_dir / "tickets.json").is_file() and (seed_dir / "rewind.ckpt").is_file()
    assert "seed 0 level 1" in done.stdout and "seed 1 random_reinit level 1" in done.stdout


def test_a_cohort_logs_one_wandb_run_per_seed_with_its_own_metrics(tmp_path, monkeypatch):
    """W&B keeps one run per (hash, seed, branch): the replicas of a cohort log to their seeds' own trunk runs, open
    side by side in one process, each with its training loss, evaluations and level metrics."""
    from wandb_records import read_run

    from lottery.core.layout import RunPaths
    from lottery.training.tracking import run_id

    monkeypatch.setenv("WANDB_MODE", "offline")
    dirs = cohort(tmp_path, (0, 1), "logger=wandb", "levels=1")
    for seed, seed_dir in dirs.items():
        (run_dir,) = (seed_dir / "wandb").glob("offline-run-*")
        run = read_run(run_dir)
        paths = RunPaths(root=tmp_path, name="default", hash=seed_dir.parent.name, seed=seed)
        assert run["run"][0] == run_id(paths, "trunk") and run["run"][1] == "trunk"
        assert f"seed:{seed}" in run["run"][3]
        assert {"train/loss", "val/acc", "val/loss", "imp/test_acc", "imp/level"} <= run["history"]


@pytest.mark.parametrize("branch", ["random_reinit", "random_prune"])
def test_a_control_in_a_cohort_equals_it_as_a_cohort_of_one(tmp_path, branch):
    """A control's replicas (a fresh initialisation from the rewind point with a fresh optimizer; a random mask)
    pack like the trunk's: seed 1's control in a cohort of 2 equals seed 1's control as a cohort of one."""
    pair = cohort(tmp_path / "pair", (0, 1), f"branch={branch}", "levels=1")[1] / f"branch_{branch}"
    alone = cohort(tmp_path / "alone", (1,), f"branch={branch}", "levels=1")[1] / f"branch_{branch}"
    assert_identical(without_cohort_record(artifacts_of(pair)), without_cohort_record(artifacts_of(alone)))
    assert json.loads((pair / "level_1" / "metrics.json").read_text())["cohort"]["size"] == 2


RESNET = (
    "data=synthetic_cifar10",
    "data.num_samples=240",
    "data.val_size=40",
    "model=resnet20",
    "model.width=0.25",
    "train.batch_size=16",
    "levels=1",
)


def test_a_resnet_seed_alone_equals_it_in_a_stack_of_three(tmp_path):
    """BatchNorm models stack: running statistics per replica, train/eval switched around every evaluation."""
    three = cohort(tmp_path / "three", (0, 1, 2), *RESNET)
    run_config(compose_config(tiny(tmp_path / "alone", *EXTRA, *RESNET, "seed=1")))
    alone = artifacts_of(seed_dir_of(tiny(tmp_path / "alone", *EXTRA, *RESNET, "seed=1")))
    assert "level_1" in alone["levels"] and any("running_mean" in k for k in alone["levels"]["level_1"]["weights"])
    assert_identical(without_cohort_record(artifacts_of(three[1])), alone)


def test_csv_logs_and_printed_evaluations_are_the_same_alone_and_in_a_stack(tmp_path, capsys):
    """logger=csv writes each seed's metrics.csv under launcher=cohort too, with the solo run's exact rows; and
    train.print_every_eval prints each seed's evaluations."""
    settings = ("logger=csv", "train.print_every_eval=true", "levels=1")
    pair = cohort(tmp_path / "pair", (0, 1), *settings)
    out = capsys.readouterr().out
    run_config(compose_config(tiny(tmp_path / "alone", *EXTRA, *settings, "seed=1")))
    solo_out = capsys.readouterr().out
    alone = seed_dir_of(tiny(tmp_path / "alone", *EXTRA, *settings, "seed=1"))
    for level in (0, 1):
        logged = (pair[1] / "logs" / f"level_{level}" / "metrics.csv").read_text()
        assert "val/acc" in logged and "train/loss" in logged
        assert logged == (alone / "logs" / f"level_{level}" / "metrics.csv").read_text()
    for seed in (0, 1):
        assert f"seed {seed} level 1  step 60/60  val acc" in out
    assert "level 1  step 60/60  val acc" in solo_out


LENET = ("model=lenet_300_100", "model.width=0.25", "levels=1")
CONV = (
    "data=synthetic_cifar10",
    "data.num_samples=240",
    "data.val_size=40",
    "model=conv2",
    "model.width=0.25",
    "train.batch_size=16",
    "levels=1",
)


@pytest.mark.parametrize("model", [LENET, CONV], ids=["lenet_300_100", "conv2"])
def test_lenet_and_a_conv_net_seed_alone_equals_it_in_a_stack_of_three(tmp_path, model):
    three = cohort(tmp_path / "three", (0, 1, 2), *model)
    run_config(compose_config(tiny(tmp_path / "alone", *EXTRA, *model, "seed=2")))
    alone = artifacts_of(seed_dir_of(tiny(tmp_path / "alone", *EXTRA, *model, "seed=2")))
    assert "level_1" in alone["levels"]
    assert_identical(without_cohort_record(artifacts_of(three[2])), alone)


TRANSFORMER = ("model=transformer", *TINY_RECALL, "model.d_model=8", "model.d_mlp=8", "levels=1")


@pytest.mark.parametrize("model", [(), TRANSFORMER], ids=["mlp", "transformer"])
def test_compile_compiles_every_stack_and_trains_a_seed_alone_as_in_a_stack(tmp_path, monkeypatch, model):
    """trainer.compile=true at every N, for explicit stacks (the MLP: the network compiled in place) and vmap stacks
    (the transformer: the vmapped forward, as the network's own forward never runs there), with torch.compile's
    aot_eager backend: dynamo's graph capture and AOTAutograd without inductor's minute of C++ code generation per
    model on this CPU (the inductor path is tests/test_fast_path.py's opt-in test). Graphs are captured, and a seed's
    bits still do not depend on N."""
    from torch._dynamo.utils import counters

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn=None, **kw: compile_(fn, **{**kw, "backend": "aot_eager"}))
    module_compile = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: module_compile(self, backend="aot_eager"))
    torch._dynamo.reset()
    counters.clear()
    settings = (*model, "trainer.compile=true", "levels=1")
    pair = cohort(tmp_path / "pair", (0, 1), *settings)
    assert counters["stats"]["unique_graphs"] >= 1
    run_config(compose_config(tiny(tmp_path / "alone", *EXTRA, *settings, "seed=1")))
    alone = artifacts_of(seed_dir_of(tiny(tmp_path / "alone", *EXTRA, *settings, "seed=1")))
    assert "level_1" in alone["levels"]
    assert_identical(without_cohort_record(artifacts_of(pair[1])), alone)
