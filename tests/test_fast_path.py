"""The vision path end to end on tiny data, and the speed switches: bf16 autocast, channels-last and torch.compile
each keep pruned weights exactly zero after every optimizer step; data_on_device is a no-op on the CPU."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf

from lottery.core.pruning import keep_count
from lottery.data import load
from lottery.data.datamodule import SPLITS, TensorDataModule
from lottery.models import ResNet
from lottery.training.fast import place_data
from lottery.training.module import LevelModule

# A ResNet small enough for a few CPU steps: depth 8 (one block per segment), 4/8/16 channels, 32x32 images.
SMALL_RESNET = ("model=resnet20", "model.depth=8", "model.width=0.25", "data=synthetic_cifar10", "data.augment=true")
SGD = ("optim=sgd", "optim.lr=0.05", "optim.momentum=0.9", "optim.weight_decay=0.01")
SHORT = ("levels=1", "train.duration=12it", "train.eval_every=6it", "train.checkpoint_every=6it")


def test_resnet20_imp_on_generated_cifar(run_tiny):
    """Three levels of ResNet-20 (width 0.25) with augmentation: exact densities over the 22 conv/linear weights,
    BN dense (outside the mask), pruned weights zero in every saved level."""
    rows, seed_dir = run_tiny("model=resnet20", "model.width=0.25", "data=synthetic_cifar10", "data.augment=true", *SGD)
    model = ResNet((3, 32, 32), 10, width=0.25)
    convs_and_linear = {
        f"{name}.weight" for name, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    }
    for level in range(3):
        mask = torch.load(seed_dir / f"level_{level}" / "mask.pt", weights_only=True)
        weights = torch.load(seed_dir / f"level_{level}" / "weights.pt", weights_only=True)
        assert set(mask) == convs_and_linear and len(mask) == 22  # BN scales and shifts stay dense, outside the mask
        assert sum(int(m.sum()) for m in mask.values()) == keep_count(17_132, 0.8**level)  # 17,132 prunable weights
        for name, m in mask.items():
            assert torch.count_nonzero(weights[name][~m]) == 0
    assert rows[0]["test_acc"] > 0.1  # above chance after 60 steps of a learnable task


def record_steps(monkeypatch) -> list[dict]:
    """After every optimizer step: which pruned weights are nonzero, and the layout and compile state."""
    seen = []
    optimizer_step = LevelModule.train_step

    def checked_step(self, *args, **kwargs):
        optimizer_step(self, *args, **kwargs)
        weights = dict(self.network.named_parameters())
        seen.append(
            {
                "nonzero_pruned": [
                    name for name, m in self.mask.items() if torch.count_nonzero(weights[name].detach()[~m])
                ],
                "pruned": sum(int((~m).sum()) for m in self.mask.values()),
                "channels_last": weights["conv.weight"][0].is_contiguous(memory_format=torch.channels_last),
                "compiled": getattr(self.network, "_compiled_call_impl", None) is not None,
                "precision": self.trainer.precision,
            }
        )

    monkeypatch.setattr(LevelModule, "train_step", checked_step)
    return seen


def check_run(seen: list[dict], seed_dir) -> None:
    assert len(seen) == 24 and sum(s["pruned"] > 0 for s in seen) == 12  # level 1 trains with pruned weights
    assert [s["nonzero_pruned"] for s in seen] == [[]] * 24
    weights = torch.load(seed_dir / "level_1" / "weights.pt", weights_only=True)
    plain = ResNet((3, 32, 32), 10, depth=8, width=0.25).state_dict()
    assert list(weights) == list(plain)  # plain keys: no `_orig_mod.` prefix from compile
    assert all(w.is_contiguous() for w in weights.values())  # saved in the plain layout whatever the training one


@pytest.mark.parametrize(
    "switch,expect",
    [
        ("train.precision=bf16-mixed", {"precision": "bf16-mixed", "channels_last": False}),
        # a GPU switch, left off on the CPU (lottery/training/fast.py: torch's NHWC conv backward aborted there)
        ("trainer.channels_last=true", {"precision": "32-true", "channels_last": False}),
    ],
)
def test_a_speed_switch_keeps_pruned_weights_exactly_zero(run_tiny, monkeypatch, switch, expect):
    seen = record_steps(monkeypatch)
    _, seed_dir = run_tiny(*SMALL_RESNET, *SGD, *SHORT, switch)
    assert all(s["precision"] == expect["precision"] and s["channels_last"] == expect["channels_last"] for s in seen)
    check_run(seen, seed_dir)


def test_compile_keeps_pruned_weights_exactly_zero_graph_capture(run_tiny, monkeypatch):
    """trainer.compile=true with torch.compile's aot_eager backend: dynamo's graph capture and AOTAutograd (what
    decides how parameters enter the compiled forward and backward) without inductor's C++ code generation, which
    takes about a minute per model on a 2-core CPU. The inductor path: the test below, opt-in."""
    compile_ = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_(self, backend="aot_eager", **kw))
    seen = record_steps(monkeypatch)
    _, seed_dir = run_tiny(*SMALL_RESNET, *SGD, *SHORT, "trainer.compile=true", "trainer.channels_last=true")
    assert all(s["compiled"] and not s["channels_last"] for s in seen)  # channels_last: GPU only
    check_run(seen, seed_dir)


@pytest.mark.skipif(
    os.environ.get("LOTTERY_SLOW_TESTS") != "1",
    reason="inductor compiles C++ for about a minute per model on a 2-core CPU; LOTTERY_SLOW_TESTS=1 runs it",
)
def test_compile_with_inductor_bf16_and_channels_last_keeps_pruned_weights_exactly_zero(run_tiny, monkeypatch):
    seen = record_steps(monkeypatch)
    switches = ("trainer.compile=true", "trainer.channels_last=true", "train.precision=bf16-mixed")
    _, seed_dir = run_tiny(*SMALL_RESNET, *SGD, *SHORT, *switches)
    assert all(s["compiled"] and s["channels_last"] and s["precision"] == "bf16-mixed" for s in seen)
    check_run(seen, seed_dir)


def datamodule() -> TensorDataModule:
    return TensorDataModule(load("synthetic_cifar10", num_samples=120), 20, 0, batch_size=10, seed=0, total_steps=5)


def test_data_on_device_is_a_no_op_on_the_cpu():
    dm = datamodule()
    before = {name: getattr(dm, name) for name in SPLITS}
    trainer_cfg = OmegaConf.to_object(compose_config(["trainer.data_on_device=true", "trainer.channels_last=true"]))
    place_data(dm, torch.device("cpu"), trainer_cfg.trainer)
    assert all(getattr(dm, name) is before[name] for name in SPLITS)  # the same tensors: nothing copied


def test_to_device_moves_every_split_once_in_the_asked_layout():
    dm = datamodule()
    dm.pad_value = torch.zeros(3)
    dm.to_device(torch.device("meta"), channels_last=True)  # a device without memory stands in for a GPU
    assert {getattr(dm, name).device.type for name in SPLITS} == {"meta"} and dm.pad_value.device.type == "meta"
    assert dm.x_train.is_contiguous(memory_format=torch.channels_last) and dm.device.type == "meta"
    assert dm.train_dataloader().x is dm.x_train  # batches are cut where the data lives
