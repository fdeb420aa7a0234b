"""trainer=ddp: a level trained by 2 data-parallel CPU processes (gloo) ends with identical weights on both ranks and
follows the single-process run with the same global batch (up to floating-point summation order)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose_config, tiny

from lottery.training.module import weights_digest

DDP = ("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")


def test_two_process_ddp_matches_the_single_process_run(tmp_path, run_tiny):
    _, single = run_tiny("levels=1", root=tmp_path / "single")
    _, ddp = run_tiny("levels=1", *DDP, root=tmp_path / "ddp")
    assert ddp.name == single.name and ddp.parent.name == single.parent.name  # devices do not change the hash
    for level in (0, 1):
        metrics = json.loads((ddp / f"level_{level}" / "metrics.json").read_text())
        # Written only after every rank's weights digest was gathered and found equal (LevelModule.on_train_end).
        assert metrics["processes"] == 2
        reference = json.loads((single / f"level_{level}" / "metrics.json").read_text())
        assert "processes" not in reference
        assert metrics["best_val_step"] > 0 and metrics["best_val_acc"] > 0  # progress came back from the workers
        mask = torch.load(ddp / f"level_{level}" / "mask.pt", weights_only=True)
        want_mask = torch.load(single / f"level_{level}" / "mask.pt", weights_only=True)
        assert all(torch.equal(mask[k], want_mask[k]) for k in want_mask)
        weights = torch.load(ddp / f"level_{level}" / "weights.pt", weights_only=True)
        want = torch.load(single / f"level_{level}" / "weights.pt", weights_only=True)
        for k in want:
            assert torch.allclose(weights[k], want[k], atol=1e-6, rtol=0), k
        for k, m in mask.items():
            assert not weights[k][~m].any(), k


def test_weights_digest_sees_a_one_bit_difference():
    net = torch.nn.Linear(4, 3)
    before = weights_digest(net)
    assert weights_digest(net) == before
    with torch.no_grad():
        bits = net.weight.view(torch.int32)
        bits[1, 2] ^= 1  # the last bit of one weight's mantissa
    assert weights_digest(net) != before


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ((*DDP, "train.batch_size=33"), "train.batch_size=33 is the global batch and must divide evenly"),
        (("trainer.strategy=fsdp",), "trainer.strategy='fsdp' is not one of"),
    ],
)
def test_bad_ddp_settings_fail_before_training(tmp_path, overrides, message):
    from lottery.cli import run_config
    from lottery.validate import ConfigError

    with pytest.raises(ConfigError, match=message):
        run_config(compose_config(tiny(tmp_path, *overrides)))
