"""A run killed with SIGKILL at any point and then re-run ends identical to an uninterrupted run."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny

KILL_SCRIPT = Path(__file__).with_name("kill_run.py")
# Rewind to step 20 so the resumed levels also exercise a rewind point inside the level.
EXTRA = ("rewind.step=20it", "optim=sgd", "optim.lr=0.05", "schedule=cosine")


def artifacts_of(seed_dir: Path) -> dict:
    """Every artifact of a run folder that a resume must reproduce: per level its metrics (wall time aside), mask,
    weights and sparsity; for the run, theta_0 (init.pt), the rewind checkpoint's weights, optimizer state and step,
    levels.csv (wall time aside) and tickets.json."""
    out = {}
    for level_dir in sorted(seed_dir.glob("level_*")):
        metrics = json.loads((level_dir / "metrics.json").read_text())
        metrics.pop("train_seconds")  # wall time is the one thing allowed to differ
        out[level_dir.name] = {
            "metrics": metrics,
            "mask": torch.load(level_dir / "mask.pt", weights_only=True),
            "weights": torch.load(level_dir / "weights.pt", weights_only=True),
            "sparsity": json.loads((level_dir / "sparsity.json").read_text()),
        }
    run = {}
    if (seed_dir / "init.pt").is_file():
        run["init"] = torch.load(seed_dir / "init.pt", weights_only=True)
    if (seed_dir / "rewind.ckpt").is_file():
        # what training continues from; Lightning's loop counters differ between a resumed and a straight run
        checkpoint = torch.load(seed_dir / "rewind.ckpt", weights_only=True)
        run["rewind"] = {k: checkpoint[k] for k in ("state_dict", "optimizer_states", "global_step")}
    if (seed_dir / "levels.csv").is_file():
        rows = list(csv.DictReader((seed_dir / "levels.csv").read_text().splitlines()))
        run["levels.csv"] = [{k: v for k, v in row.items() if k != "train_seconds"} for row in rows]
    if (seed_dir / "tickets.json").is_file():
        run["tickets.json"] = json.loads((seed_dir / "tickets.json").read_text())
    return {"levels": out, "run": run}


def same(a, b, where: str = "") -> None:
    """Equal, tensors bit for bit, in nested dicts and lists."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}/{i}")
    else:
        assert a == b, (where, a, b)


def assert_identical(a: dict, b: dict) -> None:
    assert a["levels"] and b["levels"], "no level to compare: a run that wrote nothing would pass"
    assert a["levels"].keys() == b["levels"].keys()
    same(a["levels"], b["levels"], "levels")
    same(a["run"], b["run"], "run")


def test_the_identity_helper_fails_on_empty_or_different_runs():
    level = {"metrics": {"test_acc": 0.5}, "mask": {"w": torch.ones(2)}, "weights": {}, "sparsity": {}}
    with pytest.raises(AssertionError, match="no level to compare"):
        assert_identical({"levels": {}, "run": {}}, {"levels": {}, "run": {}})
    with pytest.raises(AssertionError):
        other = {**level, "mask": {"w": torch.tensor([1.0, 0.0])}}
        assert_identical({"levels": {"level_0": level}, "run": {}}, {"levels": {"level_0": other}, "run": {}})
    with pytest.raises(AssertionError):
        assert_identical({"levels": {"level_0": level}, "run": {"init": {}}}, {"levels": {"level_0": level}, "run": {}})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from conftest import compose_config

    from lottery.cli import run_config
    from lottery.setup import experiment_hash

    root = tmp_path_factory.mktemp("uninterrupted")
    cfg = compose_config(tiny(root, *EXTRA))
    run_config(cfg)
    from omegaconf import OmegaConf

    h, _ = experiment_hash(OmegaConf.to_object(cfg))
    return artifacts_of(root / "default" / h / "seed_0"), h


@pytest.mark.parametrize(
    "point,level,step,resumed_starts",
    [
        # (where to kill, then the step each level that still had to run started from on the re-run)
        ("step", 0, 10, [0, 20, 20]),  # before the rewind point and any resume checkpoint: level 0 starts over
        ("step", 0, 30, [20, 20, 20]),  # after the rewind capture: level 0 resumes from its step-20 checkpoint
        ("checkpoint", 1, 40, [20, 20]),  # half-written checkpoint: ignored, level 1 restarts at its rewind step
        ("step", 2, 59, [40]),  # the last step of the last level: resumes from its step-40 checkpoint
        ("level_end", 0, 0, [20, 20]),  # between levels: level 0 is done and never retrained
        ("level_end", 1, 0, [20]),  # between levels 1 and 2
        ("checkpoint", 0, 20, [0, 20, 20]),  # while writing the step-20 checkpoint of level 0 (the rewind step)
        ("step", 1, 21, [20, 20]),  # the first step after rewinding (inside a chunk of steps 20-29)
        ("artifact:mask.pt", 2, 0, [20]),  # level 2's mask written but not yet renamed into place
        ("artifact:weights.pt", 1, 0, [40, 20]),  # level 1 trained, its weights not yet in place
        ("artifact:metrics.json", 1, 0, [40, 20]),  # level 1's weights in place, its finishing marker not
        ("artifact:sparsity.json", 0, 0, [40, 20, 20]),
    ],
)
def test_killed_run_resumes_to_identical_results(
    tmp_path, monkeypatch, uninterrupted, point, level, step, resumed_starts
):
    expected, h = uninterrupted
    overrides = tiny(tmp_path, *EXTRA)
    proc = subprocess.run(
        [sys.executable, str(KILL_SCRIPT), point, str(level), str(step), *overrides],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-3000:]  # it really was killed
    seed_dir = tmp_path / "default" / h / "seed_0"
    assert not (seed_dir / f"level_{max(level, 0) + 1}" / "metrics.json").exists() or point == "level_end"

    from conftest import compose_config

    from lottery.cli import run_config
    from lottery.training.module import LevelModule

    starts = []
    on_train_start = LevelModule.on_train_start

    def record_start(self):
        starts.append(self.trainer.global_step)
        on_train_start(self)

    monkeypatch.setattr(LevelModule, "on_train_start", record_start)
    run_config(compose_config(overrides))  # the same command again
    assert starts == resumed_starts
    assert_identical(artifacts_of(seed_dir), expected)
    assert not list(seed_dir.rglob("*.tmp")), "temporary files left behind"
    assert not list(seed_dir.rglob(".*.tmp")), "temporary files left behind"
    assert not list(seed_dir.rglob("last.ckpt")), "resume checkpoints of finished levels are cleaned up"


def test_a_control_branch_killed_mid_level_resumes_to_identical_results(tmp_path, tmp_path_factory):
    from conftest import compose_config

    from lottery.cli import run_config
    from lottery.setup import experiment_hash

    reference = tmp_path_factory.mktemp("branch_reference")
    run_config(compose_config(tiny(reference, *EXTRA, "branch=random_prune")))
    overrides = tiny(tmp_path, *EXTRA, "branch=random_prune")
    proc = subprocess.run(
        [sys.executable, str(KILL_SCRIPT), "branch_step", "2", "50", *overrides], capture_output=True, timeout=300
    )
    assert proc.returncode == -9
    run_config(compose_config(overrides))
    from omegaconf import OmegaConf

    h, _ = experiment_hash(OmegaConf.to_object(compose_config(overrides)))
    for sub in ("seed_0", "seed_0/branch_random_prune"):
        assert_identical(artifacts_of(tmp_path / "default" / h / sub), artifacts_of(reference / "default" / h / sub))


def as_written_before_the_one_engine(path: Path) -> None:
    """Rewrite a checkpoint into the layout the solo LevelModule wrote under Lightning's automatic optimization:
    the step counted under `automatic_optimization`, none under `manual_optimization`, no engine version, and the
    process's RNG state beside the progress."""
    from lottery.training.checkpoints import AUTOMATIC, MANUAL

    checkpoint = torch.load(path, weights_only=True)
    loops = checkpoint["loops"]["fit_loop"]
    automatic = loops[AUTOMATIC]["optimizer"]["step"]
    automatic["total"], automatic["current"] = dict(loops[MANUAL]["total"]), dict(loops[MANUAL]["current"])
    loops[MANUAL]["total"] = {"ready": 0, "completed": 0}
    loops[MANUAL]["current"] = {"ready": 0, "completed": 0}
    del checkpoint["lottery_engine"]
    checkpoint["lottery"]["torch_rng"] = torch.get_rng_state()
    torch.save(checkpoint, path)


def test_checkpoints_written_before_the_one_engine_are_converted_and_resume_identically(tmp_path, uninterrupted):
    from conftest import compose_config

    from lottery.cli import run_config

    expected, h = uninterrupted
    overrides = tiny(tmp_path, *EXTRA)
    proc = subprocess.run(
        [sys.executable, str(KILL_SCRIPT), "step", "1", "45", *overrides], capture_output=True, timeout=300
    )
    assert proc.returncode == -9
    seed_dir = tmp_path / "default" / h / "seed_0"
    old = [seed_dir / "rewind.ckpt", seed_dir / "level_1" / "checkpoints" / "last.ckpt"]
    for path in old:
        as_written_before_the_one_engine(path)
    assert int(torch.load(old[1], weights_only=True)["global_step"]) == 40
    run_config(compose_config(overrides))
    assert_identical(artifacts_of(seed_dir), expected)


FIXTURE = Path(__file__).with_name("fixtures") / "pre_engine_run"  # written by the code before the one engine


def test_a_run_killed_under_the_code_before_the_one_engine_resumes_from_its_checkpoint(tmp_path, uninterrupted, capsys):
    """Not a checkpoint made to look old: the seed folder the old code itself left when killed mid level 1
    (tests/fixtures/pre_engine_run/README.md says how it was made). Today's code converts its checkpoints and resumes
    level 1 from the old code's step 40, leaving the old code's level 0 as it was. The old code's training sums in
    another order than today's (its level 0 weights differ from today's in the last bits), so the resumed run is
    compared with the same folder whose level 1 checkpoint was removed (which restarts level 1 at its rewind point
    under today's code): a resume that ignored the old checkpoint would equal it."""
    import shutil

    from conftest import compose_config

    from lottery.cli import run_config

    _, h = uninterrupted
    runs = {}
    for name, keep_checkpoint in (("resumed", True), ("restarted", False)):
        root = tmp_path / name
        seed_dir = root / "default" / h / "seed_0"
        shutil.copytree(FIXTURE / "seed_0", seed_dir)
        assert "lottery_engine" not in torch.load(seed_dir / "level_1/checkpoints/last.ckpt", weights_only=True)
        if not keep_checkpoint:
            (seed_dir / "level_1" / "checkpoints" / "last.ckpt").unlink()
        capsys.readouterr()
        run_config(compose_config(tiny(root, *EXTRA)))
        out = capsys.readouterr().out
        runs[name] = artifacts_of(seed_dir)
        assert sorted(runs[name]["levels"]) == ["level_0", "level_1", "level_2"]
        for level_0_file in ("weights.pt", "mask.pt", "metrics.json"):  # the old code's level 0, untouched
            assert (seed_dir / "level_0" / level_0_file).read_bytes() == (
                FIXTURE / "seed_0" / "level_0" / level_0_file
            ).read_bytes()
        if keep_checkpoint:
            assert "step 40" in out, out[-2000:]
    a, b = runs["resumed"]["levels"]["level_1"]["weights"], runs["restarted"]["levels"]["level_1"]["weights"]
    assert any(not torch.equal(a[k], b[k]) for k in a)  # level 1 went on from the old code's step 40


def test_a_checkpoint_of_an_unknown_engine_version_is_refused_by_name():
    from lottery.core.artifacts import ArtifactError
    from lottery.training.checkpoints import convert

    with pytest.raises(ArtifactError, match=r"old\.ckpt was written by training engine version 99; .* version 2"):
        convert({"lottery_engine": 99, "global_step": 0}, "old.ckpt")
    with pytest.raises(ArtifactError, match=r"its step counters are not Lightning 2's"):
        convert({"loops": {}, "global_step": 5}, "odd.ckpt")
