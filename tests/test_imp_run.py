"""End-to-end behaviour of the IMP driver on tiny MNIST-1D runs: the output tree, densities, rewinding, masks."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml

from lottery.core.pruning import keep_count
from lottery.training.module import PREFIX, LevelModule

LEVEL_FILES = {"mask.pt", "weights.pt", "metrics.json", "sparsity.json"}
METRIC_KEYS = {"level", "density", "test_acc", "best_val_acc", "best_val_step", "train_seconds"}


def test_two_level_run_writes_the_documented_tree(run_tiny):
    rows, seed_dir = run_tiny()
    experiment = seed_dir.parent
    assert json.loads((experiment / "hash.json").read_text())  # what the hash covers, beside the results
    assert {p.name for p in seed_dir.iterdir()} >= {
        "config.yaml",
        "init.pt",
        "rewind.ckpt",
        "levels.csv",
        "tickets.json",
        "level_0",
        "level_1",
    }
    config = yaml.safe_load((seed_dir / "config.yaml").read_text())
    assert config["seed"] == 0 and config["train"]["duration"] == "60it" and config["model"]["name"] == "mlp"

    total = 40 * 100 + 100 * 100 + 100 * 10  # the MNIST-1D MLP's prunable weights
    for level in range(3):
        level_dir = seed_dir / f"level_{level}"
        assert {p.name for p in level_dir.iterdir()} == LEVEL_FILES
        mask = torch.load(level_dir / "mask.pt", weights_only=True)
        assert set(mask) == {"fc1.weight", "fc2.weight", "fc3.weight"}
        assert all(m.dtype == torch.bool for m in mask.values())
        remaining = sum(int(m.sum()) for m in mask.values())
        assert remaining == keep_count(total, 0.8**level)  # global 20% of the remaining weights per level
        metrics = json.loads((level_dir / "metrics.json").read_text())
        assert METRIC_KEYS <= metrics.keys()
        assert metrics["level"] == level and metrics["density"] == remaining / total
        assert 0.0 <= metrics["test_acc"] <= 1.0 and metrics["best_val_step"] in (20, 40, 60)
        sparsity = json.loads((level_dir / "sparsity.json").read_text())
        assert sparsity["total"] == total and sparsity["remaining"] == remaining
        assert sum(v["remaining"] for v in sparsity["layers"].values()) == remaining
        weights = torch.load(level_dir / "weights.pt", weights_only=True)
        for name, m in mask.items():
            assert torch.count_nonzero(weights[name][~m]) == 0

    with (seed_dir / "levels.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [int(r["level"]) for r in table] == [0, 1, 2]
    assert [float(r["density"]) for r in table] == [r["density"] for r in rows]


def test_rerun_skips_finished_levels(run_tiny, monkeypatch):
    first, seed_dir = run_tiny()
    before = {p: p.stat().st_mtime_ns for p in seed_dir.rglob("*.pt")}
    import lightning as L

    def no_training(*args, **kwargs):
        raise AssertionError("a finished level was trained again")

    monkeypatch.setattr(L.Trainer, "fit", no_training)
    second, _ = run_tiny()
    assert second == first
    assert {p: p.stat().st_mtime_ns for p in seed_dir.rglob("*.pt")} == before


def test_more_levels_extend_an_existing_run(run_tiny, monkeypatch):
    """`levels` is not hashed: asking for more levels trains only the new ones."""
    _, seed_dir = run_tiny("levels=1")
    fits = []
    import lightning as L

    fit = L.Trainer.fit
    monkeypatch.setattr(L.Trainer, "fit", lambda self, *a, **k: fits.append(1) or fit(self, *a, **k))
    rows, seed_dir_2 = run_tiny("levels=2")
    assert seed_dir_2 == seed_dir and len(rows) == 3 and len(fits) == 1


def record_starts(monkeypatch) -> list[dict]:
    """Patch the module to record the network weights, step and LR at the start of every level."""
    starts = []
    on_train_start = LevelModule.on_train_start

    def record(self):
        optimizer = self.trainer.optimizers[0]
        starts.append(
            {
                "weights": self.replica_weights(0),
                "step": self.trainer.global_step,
                "lr": optimizer.param_groups[0]["lr"],
                "optimizer_state": {  # replica 0's slice of the stack's state (a run is a stack of one)
                    k: {n: t[0].clone() if t.dim() else t.clone() for n, t in st.items()}
                    for k, st in self.optimizer_state()["state"].items()
                },
            }
        )
        on_train_start(self)

    monkeypatch.setattr(LevelModule, "on_train_start", record)
    return starts


def test_weight_rewinding_starts_from_rewind_weights_times_mask(run_tiny, monkeypatch):
    starts = record_starts(monkeypatch)
    _, seed_dir = run_tiny("rewind=weights", "rewind.step=20it", "optim=sgd", "schedule=cosine")
    rewind = torch.load(seed_dir / "rewind.ckpt", weights_only=True)
    assert rewind["global_step"] == 20
    for level in (1, 2):
        mask = torch.load(seed_dir / f"level_{level}" / "mask.pt", weights_only=True)
        start = starts[level]
        assert start["step"] == 20
        for key, value in start["weights"].items():
            expected = rewind["state_dict"][PREFIX + key]
            if key in mask:
                expected = expected * mask[key]
            assert torch.equal(value, expected), key  # bit for bit
        # The LR schedule and the optimizer state rewind too: LR at step 20 of the cosine schedule, momentum buffers.
        assert start["lr"] == pytest.approx(starts[0]["lr"] * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 20 / 60))))
        saved = rewind["optimizer_states"][0]["state"]
        assert start["optimizer_state"].keys() == saved.keys()
        for k in saved:
            assert torch.equal(start["optimizer_state"][k]["momentum_buffer"], saved[k]["momentum_buffer"])


def test_reset_to_initialisation_is_rewinding_to_step_zero(run_tiny, monkeypatch):
    starts = record_starts(monkeypatch)
    _, seed_dir = run_tiny("rewind=reset")
    theta0 = starts[0]["weights"]
    saved = torch.load(seed_dir / "init.pt", weights_only=True)
    assert saved.keys() == theta0.keys() and all(torch.equal(saved[k], theta0[k]) for k in saved)
    mask = torch.load(seed_dir / "level_2" / "mask.pt", weights_only=True)
    assert starts[2]["step"] == 0
    for key, value in starts[2]["weights"].items():
        assert torch.equal(value, theta0[key] * mask[key] if key in mask else theta0[key]), key


@pytest.mark.parametrize("mode", ["lr", "finetune"])
def test_lr_rewinding_and_finetuning_keep_the_trained_weights(run_tiny, monkeypatch, mode):
    starts = record_starts(monkeypatch)
    finetune_lr = ("rewind.finetune_lr=0.01",) if mode == "finetune" else ()  # cosine ends at 0: refused without it
    _, seed_dir = run_tiny(f"rewind={mode}", "rewind.step=20it", "optim=sgd", "schedule=cosine", *finetune_lr)
    trained = torch.load(seed_dir / "level_0" / "weights.pt", weights_only=True)
    mask = torch.load(seed_dir / "level_1" / "mask.pt", weights_only=True)
    for key, value in starts[1]["weights"].items():
        assert torch.equal(value, trained[key] * mask[key] if key in mask else trained[key]), key
    if mode == "lr":  # the schedule replays from step k
        assert starts[1]["step"] == 20 and starts[1]["lr"] == starts[2]["lr"]
    else:  # fine-tuning: a fresh optimizer at rewind.finetune_lr, steps counted from 0; the weights do change
        assert starts[1]["step"] == 0 and starts[1]["lr"] == pytest.approx(0.01)
        assert starts[1]["optimizer_state"] == {}
        level_1 = torch.load(seed_dir / "level_1" / "weights.pt", weights_only=True)
        changed = [k for k in mask if not torch.equal(level_1[k], trained[k] * mask[k])]
        assert changed == list(mask)


@pytest.mark.parametrize(
    "optim",
    [
        ("optim=adam", "optim.weight_decay=0.01"),
        ("optim=sgd", "optim.momentum=0.9", "optim.weight_decay=0.01"),
        ("optim=sgd", "optim.momentum=0.9", "optim.nesterov=true", "train.precision=bf16-mixed"),
    ],
    ids=["adam-wd", "sgd-momentum-wd", "sgd-nesterov-bf16"],
)
def test_masked_weights_stay_exactly_zero_after_every_step(run_tiny, monkeypatch, optim):
    violations = []
    optimizer_step = LevelModule.train_step

    def checked_step(self, *args, **kwargs):
        optimizer_step(self, *args, **kwargs)
        weights = dict(self.network.named_parameters())
        for name, m in self.mask.items():
            if torch.count_nonzero(weights[name].detach()[~m.to(weights[name].device)]):
                violations.append((self.trainer.global_step, name))

    monkeypatch.setattr(LevelModule, "train_step", checked_step)
    _, seed_dir = run_tiny(*optim)
    assert violations == []
    mask = torch.load(seed_dir / "level_2" / "mask.pt", weights_only=True)
    weights = torch.load(seed_dir / "level_2" / "weights.pt", weights_only=True)
    assert sum(int((~m).sum()) for m in mask.values()) > 0
    for name, m in mask.items():
        assert torch.count_nonzero(weights[name][~m]) == 0
        assert torch.count_nonzero(weights[name][m]) > 0.99 * int(m.sum())  # survivors do train


def test_layerwise_schedule_with_output_layer_at_half_rate(run_tiny):
    _, seed_dir = run_tiny("pruning=lth_layerwise", "levels=2")
    sparsity = json.loads((seed_dir / "level_2" / "sparsity.json").read_text())
    layers = sparsity["layers"]
    assert layers["fc1.weight"]["remaining"] == keep_count(4000, 0.8**2)
    assert layers["fc2.weight"]["remaining"] == keep_count(10000, 0.8**2)
    assert layers["fc3.weight"]["remaining"] == keep_count(1000, 0.9**2)


def test_ignored_layer_stays_dense(run_tiny):
    _, seed_dir = run_tiny("pruning.ignore=[fc3]")
    mask = torch.load(seed_dir / "level_2" / "mask.pt", weights_only=True)
    weights = torch.load(seed_dir / "level_2" / "weights.pt", weights_only=True)
    assert "fc3.weight" not in mask
    assert torch.count_nonzero(weights["fc3.weight"]) == weights["fc3.weight"].numel()
    sparsity = json.loads((seed_dir / "level_2" / "sparsity.json").read_text())
    assert sparsity["dense_layers"] == ["fc3.weight"] and sparsity["total"] == 4000 + 10000


def test_seeds_share_a_hash_and_differ_in_init(run_tiny, tmp_path):
    _, seed0 = run_tiny("seed=0", "levels=0")
    _, seed1 = run_tiny("seed=1", "levels=0")
    assert seed0.parent == seed1.parent and seed0.name == "seed_0" and seed1.name == "seed_1"
    w0 = torch.load(seed0 / "level_0" / "weights.pt", weights_only=True)
    w1 = torch.load(seed1 / "level_0" / "weights.pt", weights_only=True)
    assert not torch.equal(w0["fc1.weight"], w1["fc1.weight"])


@pytest.mark.parametrize(
    "model,data",
    [("conv2", "digits"), ("conv4", "mnist1d"), ("conv6", "digits"), ("lenet_300_100", "digits")],
)
def test_every_model_runs_a_level_of_imp(run_tiny, model, data):
    rows, seed_dir = run_tiny(f"model={model}", f"data={data}", "data.val_size=100", "model.width=0.25", "levels=1")
    mask = torch.load(seed_dir / "level_1" / "mask.pt", weights_only=True)
    total = sum(m.numel() for m in mask.values())
    assert sum(int(m.sum()) for m in mask.values()) == keep_count(total, 0.8)
    assert rows[1]["density"] == pytest.approx(0.8, abs=1 / total)


def test_mnist_from_idx_files_in_a_local_folder(run_tiny, tmp_path):
    """The IDX reader end to end, on tiny files the test writes (no download)."""
    from lottery.data.idx import write_idx

    folder = tmp_path / "mnist"
    folder.mkdir()
    gen = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 300), ("t10k", 50)):
        write_idx(
            folder / f"{prefix}-images-idx3-ubyte.gz",
            torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.uint8),
        )
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", torch.randint(0, 10, (n,), generator=gen, dtype=torch.uint8))
    rows, seed_dir = run_tiny(
        "data=mnist", f"data.root={folder}", "data.val_size=50", "model=lenet_300_100", "levels=1"
    )
    assert len(rows) == 2 and (seed_dir / "level_1" / "metrics.json").exists()


def test_a_levels_final_test_accuracy_is_its_own_evaluation(run_tiny):
    """One evaluation path: where the early-stopping point is the last step, the test accuracy measured there inside
    the fit and the level's final test accuracy are one measurement of the same weights, equal to the bit; and the
    level's weights.pt scored outside any fit (as the analyses score networks) gives the same numbers."""
    from conftest import compose_config, tiny
    from omegaconf import OmegaConf

    from lottery.setup import build
    from lottery.training.module import evaluate_network

    extra = ("train.duration=60it", "train.eval_every=20it", "optim.lr=0.0003")
    _, seed_dir = run_tiny(*extra)
    cfg = compose_config(tiny(seed_dir.parents[2], *extra))
    model_cfg, optim_cfg = (OmegaConf.to_container(c, resolve=True) for c in (cfg.model, cfg.optim))
    setup = build(OmegaConf.to_object(cfg), model_cfg, optim_cfg)  # the run's splits and network, reading only
    assert setup.paths.seed_dir == seed_dir
    dm = setup.datamodule
    at_the_end = 0
    for level in range(3):
        level_dir = seed_dir / f"level_{level}"
        metrics = json.loads((level_dir / "metrics.json").read_text())
        if metrics["early_stop_step"] == metrics["steps"]:
            at_the_end += 1
            assert metrics["early_stop_test_acc"] == metrics["test_acc"], level
        network = setup.network()
        network.load_state_dict(torch.load(level_dir / "weights.pt", weights_only=True))
        acc, loss = evaluate_network(network, dm.x_test, dm.y_test, dm.num_classes, task=getattr(dm, "task", None))
        assert (acc, loss) == (metrics["test_acc"], metrics["test_loss"]), level
    assert at_the_end, "no level stopped early at its last step: the first comparison never ran"
