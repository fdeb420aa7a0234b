"""Past one machine, simulated on this one: two "nodes" started by torchrun (a c10d rendezvous, gloo), each one
`lottery` command, train a level exactly as the one-node two-process run does; a rank killed mid level and the job
started again resumes to the uninterrupted result; a multi-node setting without a cluster launcher is refused before
anything is written (lottery/training/distributed.py)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_config, seed_dir_of, tiny
from test_resume import artifacts_of, assert_identical

from lottery.config import ConfigError
from lottery.training.distributed import ClusterLaunch, cluster_launch
from lottery.validate import check_cluster

BIN = Path(sys.executable).parent
KILL_SCRIPT = Path(__file__).with_name("kill_rank.py")
SETTINGS = ("levels=1", "trainer=ddp", "trainer.accelerator=cpu", "trainer.threads=1")
TWO_NODES = ("trainer.num_nodes=2", "trainer.devices=1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def torchrun_two_nodes(root: Path, *entry: str) -> list[subprocess.CompletedProcess]:
    """The issue's exact form, started twice (one command per "machine"): torchrun --nnodes=2 --nproc-per-node=1
    --rdzv-backend=c10d --rdzv-endpoint=localhost:<port> $(which lottery) trainer=ddp ... trainer.num_nodes=2."""
    port = free_port()
    command = [
        str(BIN / "torchrun"),
        "--nnodes=2",
        "--nproc-per-node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=localhost:{port}",
        *(entry or (str(BIN / "lottery"),)),
        *tiny(root, *SETTINGS, *TWO_NODES),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_"))}
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for _ in (0, 1)
    ]
    done = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(command, p.returncode, out))
    return done


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_nodes")
    runs = torchrun_two_nodes(root)
    assert [r.returncode for r in runs] == [0, 0], "\n".join(r.stdout[-3000:] for r in runs)
    return root, runs


def test_two_torchrun_nodes_train_a_level_as_one_node_with_two_processes(tmp_path, two_nodes, run_tiny):
    root, runs = two_nodes
    seed_dir = seed_dir_of(tiny(root, *SETTINGS, *TWO_NODES))
    _, one_node = run_tiny(*SETTINGS, "trainer.devices=2", root=tmp_path / "one_node")  # spawned workers
    assert seed_dir.name == one_node.name and seed_dir.parent.name == one_node.parent.name  # nodes: not hashed
    multi, single = artifacts_of(seed_dir), artifacts_of(one_node)
    level_1 = multi["levels"]["level_1"]["metrics"]
    assert level_1["processes"] == 2 and level_1["density"] == 0.8
    assert_identical(multi, single)
    # rank 0 drove the run and printed it; the other rank only followed its fits
    outputs = sorted((r.stdout for r in runs), key=lambda out: "training the fits rank 0 sends" in out)
    assert "level 1  density 80.00%" in outputs[0]
    assert "rank 1 of 2 (torchrun): training the fits rank 0 sends" in outputs[1] and "level 1" not in outputs[1]


def test_a_rank_killed_mid_level_resumes_to_the_uninterrupted_result(tmp_path, two_nodes):
    """Rank 1 dies after step 30 of level 1 (its last checkpoint: step 20); rank 0's collective then fails, both
    commands end, and the same two commands started again resume the level from the checkpoint."""
    killed = torchrun_two_nodes(tmp_path, str(KILL_SCRIPT), "1", "2", "30")
    assert all(r.returncode != 0 for r in killed)
    seed_dir = seed_dir_of(tiny(tmp_path, *SETTINGS, *TWO_NODES))
    assert (seed_dir / "level_1" / "checkpoints" / "last.ckpt").is_file()
    assert not (seed_dir / "level_1" / "metrics.json").exists()
    again = torchrun_two_nodes(tmp_path)
    assert [r.returncode for r in again] == [0, 0], "\n".join(r.stdout[-3000:] for r in again)
    assert any("resum" in r.stdout.lower() for r in again)
    root, _ = two_nodes
    assert_identical(artifacts_of(seed_dir), artifacts_of(seed_dir_of(tiny(root, *SETTINGS, *TWO_NODES))))


def test_num_nodes_without_a_cluster_launcher_is_refused_before_anything_is_written(tmp_path):
    from lottery.cli import run_config

    with pytest.raises(ConfigError, match=r"trainer.num_nodes=2 needs its ranks started by a cluster launcher"):
        run_config(compose_config(tiny(tmp_path, *SETTINGS, *TWO_NODES)))
    assert not (tmp_path / "default").exists()


@pytest.mark.parametrize(
    ("overrides", "launch", "message"),
    [
        (("trainer.num_nodes=2", "trainer.devices=1"), ClusterLaunch("torchrun", 0, 4), r"started 4 ranks, but"),
        (("trainer=cpu",), ClusterLaunch("srun", 1, 2), r"srun started this process as rank 1 of 2, but trainer"),
    ],
)
def test_a_cluster_launch_that_does_not_match_the_trainer_is_refused(tmp_path, overrides, launch, message):
    from omegaconf import OmegaConf

    settings = OmegaConf.to_object(compose_config(tiny(tmp_path, *SETTINGS, *overrides)))
    with pytest.raises(ConfigError, match=message):
        check_cluster(settings, launch)


def test_torchrun_and_srun_environments_are_detected(monkeypatch):
    for key in [k for k in os.environ if k.startswith(("SLURM_", "TORCHELASTIC_"))]:
        monkeypatch.delenv(key)
    assert cluster_launch() is None
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cluster_launch() == ClusterLaunch("torchrun", 1, 2)
    monkeypatch.setenv("WORLD_SIZE", "1")  # one rank: nothing to coordinate
    assert cluster_launch() is None


# ---- a study through submitit (launcher=slurm's code path, local processes), with a forced time limit
STUDY = ("seed=0,1", "branch=none,random_reinit")
TESTS = Path(__file__).parent


def time_limit_at(folder: Path, job: int, level: int = 1, step: int = 30) -> list[str]:
    """tests/timeout_callback.py: submitit's time-limit signal in job <job> after step <step> of level <level>."""
    key = "+hydra.callbacks.time_limit"
    return [
        f"{key}._target_=timeout_callback.TimeLimitAt",
        f"{key}.job={job}",
        f"{key}.level={level}",
        f"{key}.step={step}",
        f"{key}.folder={folder}",
    ]


def run_study(root: Path, *extra: str) -> str:
    """`lottery -m <STUDY> <extra>` as a command (a launcher needs a process of its own), in <root>."""
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [str(BIN / "lottery"), "-m", *tiny(root, "levels=1", *STUDY, *extra)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def study_artifacts(root: Path) -> dict:
    levels, runs = {}, {}
    for seed_dir in sorted(root.glob("default/*/seed_*")):
        for folder in (seed_dir, seed_dir / "branch_random_reinit"):
            found = artifacts_of(folder)
            for level, files in found["levels"].items():
                files["metrics"].pop("cohort", None)  # the size of the stack a level trained in
                levels[f"{folder.relative_to(root)}/{level}"] = files
            runs[str(folder.relative_to(root))] = found["run"]
    return {"levels": levels, "run": runs}


def submitit_logs(root: Path) -> str:
    return "".join(p.read_text() for p in root.glob(".hydra/multirun/*/*/submitit/*/*") if p.suffix in (".out", ".err"))


@pytest.fixture(scope="module")
def local_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("local_study")
    run_study(root)  # Hydra's basic launcher, uninterrupted
    return study_artifacts(root)


def test_a_submitit_study_with_a_timed_out_job_ends_as_the_uninterrupted_local_run(tmp_path, local_study):
    """2 seeds x 2 branches, one array task per job; job 3 (seed 1's control, which trains seed 1's trunk too when
    it takes the trunk's lock first) gets the time-limit signal at step 30 of its first level 1, is requeued by
    submitit and resumes from that level's checkpoint."""
    run_study(tmp_path, "launcher=slurm_local", "hydra.launcher.timeout_min=3", *time_limit_at(tmp_path / "m", 3))
    logs = submitit_logs(tmp_path)
    assert (tmp_path / "m" / "time-limit-sent").is_file()
    assert "this job is timed-out" in logs and "Requeued job" in logs and "resuming at step" in logs
    study = study_artifacts(tmp_path)
    assert len(study["levels"]) == 6  # per seed: trunk levels 0 and 1, the control's level 1
    assert_identical(study, local_study)


def test_a_cohort_is_one_submitit_task_that_resumes_after_its_time_limit(tmp_path, local_study):
    """hydra.launcher.cohorts=true: the 4 jobs differ only in seed and branch, so they are one array task that trains
    both seeds' trunks as one stack; the time limit hits it inside level 1 and the requeued task resumes the stack."""
    out = run_study(
        tmp_path,
        "launcher=slurm_local",
        "hydra.launcher.cohorts=true",
        "hydra.launcher.timeout_min=3",
        *time_limit_at(tmp_path / "m", 0),
    )
    assert "4 jobs as 1 array task(s), one per cohort" in out
    logs = submitit_logs(tmp_path)
    assert "this job is timed-out" in logs and "Requeued job" in logs
    assert "seed 0, 1 level 1: resuming at step 20 of 60" in logs
    sizes = {
        json.loads(p.read_text()).get("cohort", {}).get("size")
        for p in tmp_path.glob("default/*/seed_*/level_*/metrics.json")
    }
    assert sizes == {2}
    assert_identical(study_artifacts(tmp_path), local_study)


FREEZE_SCRIPT = Path(__file__).with_name("freeze_rank.py")
WAIT = 15  # trainer.wait_timeout of the freeze tests, seconds
SLACK = 60  # beyond it, for the error to travel and the processes to exit on a loaded 2-core machine


@pytest.mark.parametrize(
    ("frozen", "when", "waited_for"),
    [
        (0, "between", "rank 0's next message"),  # rank 0 lost while the follower waits for its next fit
        (1, "inside:30", "the other ranks inside a fit"),  # a follower lost while rank 0 waits for its gradients
    ],
)
def test_a_frozen_rank_ends_every_other_rank_within_wait_timeout(tmp_path, frozen, when, waited_for):
    """A rank frozen with its sockets open (SIGSTOP: a node lost without closing them) is waited for at most
    trainer.wait_timeout: the other node's command ends with a message naming its rank, what it waited for and the
    setting, within the bound plus a stated slack, instead of the week the control group used to allow."""
    import signal
    import time

    stamp = tmp_path / "frozen_at"
    command = [
        str(BIN / "torchrun"), "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
        f"--rdzv-endpoint=localhost:{free_port()}", str(FREEZE_SCRIPT), str(frozen), when, str(stamp),
        *tiny(tmp_path, *SETTINGS, *TWO_NODES, f"trainer.wait_timeout={WAIT}"),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_"))}
    procs = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
        )  # fmt: skip
        for _ in (0, 1)
    ]
    try:
        deadline = time.time() + 400
        while not stamp.exists() and time.time() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.5)
        assert stamp.exists(), "\n".join(p.communicate(timeout=60)[0][-3000:] for p in procs if p.poll() is not None)
        frozen_at = float(stamp.read_text().split()[0])
        ended = None
        while ended is None and time.time() < frozen_at + WAIT + SLACK:
            ended = next((p for p in procs if p.poll() is not None), None)
            time.sleep(0.5)
        assert ended is not None, f"no command ended within wait_timeout={WAIT} s + {SLACK} s of the freeze"
        ended_after = time.time() - frozen_at
        out = ended.communicate(timeout=30)[0]
        assert ended.returncode != 0 and ended_after >= WAIT - 1, (ended_after, out[-3000:])
        other = 1 - frozen
        assert f"lottery: error: rank {other} waited for {waited_for}" in out, out[-3000:]
        assert f"trainer.wait_timeout={WAIT:g} s" in out and "raise trainer.wait_timeout" in out
    finally:
        for p in procs:  # the frozen rank's command is still there, stopped: end it and its rank
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=30)
        if stamp.exists():  # the frozen rank itself, which its torchrun may have left behind, stopped
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(stamp.read_text().split()[1]), signal.SIGKILL)


def test_a_killed_rank_0_ends_the_follower_at_once(tmp_path):
    """A rank 0 that dies outright between fits (SIGKILL: its sockets close) ends the follower's wait long before
    trainer.wait_timeout (here ten minutes), with the message naming its rank and what it waited for."""
    import time

    stamp, bound = tmp_path / "killed_at", 600
    command = [
        str(BIN / "torchrun"), "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
        f"--rdzv-endpoint=localhost:{free_port()}", str(FREEZE_SCRIPT), "0", "between", str(stamp),
        *tiny(tmp_path, *SETTINGS, *TWO_NODES, f"trainer.wait_timeout={bound}"),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_"))}
    env["FREEZE_SIGNAL"] = "KILL"
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for _ in (0, 1)
    ]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert stamp.exists(), outs
    ended_after = time.time() - float(stamp.read_text().split()[0])  # both commands have ended by now
    print(f"both commands ended {ended_after:.1f} s after rank 0 was killed")  # pytest -s shows it
    assert ended_after < SLACK, ended_after  # not the bound: the closed connection ended the wait
    assert all(p.returncode != 0 for p in procs)
    follower = next(o for o in outs if "lottery: error: rank 1 waited for" in o)
    assert "rank 0's next message" in follower and "connection closed" in follower, follower[-3000:]


def test_a_wait_timeout_that_is_not_positive_is_refused():
    from omegaconf import OmegaConf

    from lottery.validate import validate

    settings = OmegaConf.to_object(compose_config(["trainer.wait_timeout=0"]))
    with pytest.raises(ConfigError, match=r"trainer.wait_timeout=0.0 must be a positive number of seconds"):
        validate(settings)


class _NotPlain:
    """Any object that is not plain values or tensors (a Trainer, a module, a function would do the same)."""


def captured_orders(monkeypatch, run, *extra: str) -> tuple[list[dict], list]:
    """Run a job in this process as a cluster launch's rank 0 would, recording every message it sends to the
    followers as they would receive it (encoded, then decoded with weights_only), and each fit's module."""
    from lottery.training import distributed as D

    sent, modules = [], []
    real_fit = D.fit

    def recording_fit(trainer, module, ckpt_path, order):
        modules.append(module)
        real_fit(trainer, module, ckpt_path, order)

    monkeypatch.setattr(D, "_control", ["group"])  # the cluster mode's switch: rank 0 sends before each fit
    monkeypatch.setattr(D, "_send", lambda message: sent.append(D.decode(D.encode(message))))
    monkeypatch.setattr(D, "_fit", lambda trainer, module, ckpt_path: trainer.fit(module, ckpt_path=ckpt_path))
    monkeypatch.setattr("lottery.training.fit.distributed.fit", recording_fit)
    run(*extra)
    return sent, modules


def tensors_in(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors_in(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors_in(v)]
    return []


def test_a_message_is_plain_values_and_tensors_read_weights_only():
    """A follower reads what arrives with torch.load(weights_only=True): masks and plain values come through, any
    other object is refused before anything of it runs."""
    import pickle

    from lottery.training import distributed as D

    mask = {"fc1.weight": torch.rand(4, 3) < 0.5}
    back = D.decode(D.encode({"kind": "fit", "order": {"mask": mask, "step": 20, "dir": "/x", "lr": None}}))
    assert torch.equal(back["order"]["mask"]["fc1.weight"], mask["fc1.weight"]) and back["order"]["step"] == 20
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        D.decode(D.encode({"kind": "fit", "order": _NotPlain()}))


def test_rank_0_sends_each_fit_as_an_order_without_data_and_a_follower_rebuilds_the_same_fit(
    tmp_path, monkeypatch, run_tiny
):
    """The orders of a two-level run (level 0, and level 1 rewound to step 20 with its start checkpoint) carry no
    tensor of the dataset: each is a mask or start weights of the network's own shapes. A follower's rebuild from its
    own Setup (follow_fit) gives the fit rank 0 trains: the same data (digest), masks, start, steps and callbacks."""
    from omegaconf import OmegaConf

    from lottery.branches.registry import FIT_CALLBACKS
    from lottery.setup import build
    from lottery.training import distributed as D
    from lottery.training.fit import follow_fit

    extra = ("levels=1", "rewind.step=20it")
    rebuilt = []

    def rebuild_at_send(message):  # while rank 0's start checkpoint still exists, as a follower's fit reads it
        decoded = D.decode(D.encode(message))
        sent.append(decoded)
        if decoded["kind"] == "fit":
            rebuilt.append(follow_fit(setup, decoded["order"], FIT_CALLBACKS))

    cfg = compose_config(tiny(tmp_path, *extra))
    setup = build(OmegaConf.to_object(cfg), *(OmegaConf.to_container(c, resolve=True) for c in (cfg.model, cfg.optim)))
    sent, modules = captured_orders(monkeypatch, run_tiny, *extra)
    assert [m["kind"] for m in sent] == ["fit", "fit"]  # lead() sends "stop"; run_config here is rank 0's job alone
    shapes = {tuple(v.shape) for v in setup.network().state_dict().values()}
    data_sizes = {len(setup.datamodule.x_train), len(setup.datamodule.x_val), len(setup.datamodule.x_test)}
    for message in sent:
        tensors = tensors_in(message)
        assert tensors and {tuple(t.shape) for t in tensors} <= shapes
        assert not any(t.shape and t.shape[0] in data_sizes for t in tensors)
    assert sent[1]["order"]["start"]["step"] == 20 and sent[1]["order"]["ckpt_path"].endswith("start.ckpt")

    sent.clear()
    monkeypatch.setattr(D, "_send", rebuild_at_send)
    for level_dir in sorted(setup.paths.seed_dir.glob("level_*")):  # train both levels again, rebuilding each fit
        shutil.rmtree(level_dir)
    modules.clear()
    run_tiny(*extra)
    for (trainer, module, ckpt_path), message, theirs in zip(rebuilt, sent, modules, strict=True):
        D.check_data(module, message["digest"], rank=1)  # the follower's own data is rank 0's
        assert D.digest(D.data_of(module)) == D.digest(D.data_of(theirs))
        assert all(torch.equal(a, b) for a, b in zip(module.mask.values(), theirs.mask.values(), strict=True))
        assert ckpt_path == message["order"]["ckpt_path"] and trainer.max_steps == 60
        assert (module.periods, module.marks, module.total_steps) == (theirs.periods, theirs.marks, theirs.total_steps)
        assert [module.lr_lambda(s) for s in range(60)] == [theirs.lr_lambda(s) for s in range(60)]
    with pytest.raises(RuntimeError, match="rank 1 loaded other data than rank 0"):
        D.check_data(rebuilt[0][1], "another digest", rank=1)


def test_a_follower_makes_the_early_bird_search_callback_by_name(tmp_path, monkeypatch, run_tiny):
    """The one fit that carries a callback: the follower makes the same search callback from its settings."""
    from omegaconf import OmegaConf

    from lottery.branches.early_bird import EarlyBirdCallback
    from lottery.branches.registry import FIT_CALLBACKS
    from lottery.setup import build
    from lottery.training.fit import follow_fit

    extra = ("levels=1", "rewind.step=10it", "branch=early_bird", "early_bird.every=5it", "early_bird.window=5")
    sent, modules = captured_orders(monkeypatch, run_tiny, *extra)
    searches = [m for m in sent if m["order"]["callbacks"]]
    assert [m["order"]["callbacks"] for m in searches] == [["early_bird"]]
    cfg = compose_config(tiny(tmp_path, *extra))
    setup = build(OmegaConf.to_object(cfg), *(OmegaConf.to_container(c, resolve=True) for c in (cfg.model, cfg.optim)))
    trainer, module, _ = follow_fit(setup, searches[0]["order"], FIT_CALLBACKS)
    (callback,) = [c for c in trainer.callbacks if isinstance(c, EarlyBirdCallback)]
    assert callback.every == 5 and module.periods == modules[sent.index(searches[0])].periods
