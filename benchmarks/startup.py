"""Start-up and resume time of the `lottery` command, against the issue's 2.5 s targets.

    .venv/bin/python benchmarks/startup.py [--repeats 3] [--tree PATH ...] [-- <extra lottery overrides>]

Each measurement is a fresh process (benchmarks/speed/probe.py) launched as a user launches `lottery`, timed from
the launch to the first optimizer step of a level, with the default experiment (MLP on MNIST-1D) and
`logger=none trainer.progress_bar=false` (the sweep settings):

    first start-up    a new output root and an empty data cache (MNIST-1D is generated)
    start-up          a new output root, the data cache filled by an earlier run (the usual case)
    resume            the same command again after a run was killed at step 700 of level 0 (a checkpoint at
                      step 500, train.checkpoint_every=500it): from launch to the resumed level's first step

Levels are 1000 steps (train.duration=1000it) so the killed run is short; the start-up itself does not depend on it.

Every phase's end is printed too (imports, Hydra composition, prepare, checkpoint check, Trainer construction), as
medians over the repeats. `--tree A --tree B` runs the same measurements with each source tree first on
PYTHONPATH, interleaved repeat by repeat so that load on a shared machine falls on both alike, and prints B/A.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBE = Path(__file__).with_name("speed") / "probe.py"
TARGET_SECONDS = 2.5
BASE = ["logger=none", "trainer.progress_bar=false", "train.checkpoint_every=500it", "train.duration=1000it"]
KILL = "kill:0:700"


def launch(tree: Path, mode: str, overrides: list[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep)}
    env.setdefault("WANDB_MODE", "offline")
    started = time.time()
    proc = subprocess.run(
        [sys.executable, str(PROBE), mode, repr(started), *overrides],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    marks: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        if line.startswith("probe "):
            phase, seconds = line.removeprefix("probe ").rsplit(" ", 1)
            marks.setdefault(phase, float(seconds))  # the first check / Trainer of the process
    expected = -9 if mode.startswith("kill") else 0
    if proc.returncode != expected or "first training step" not in marks and expected == 0:
        raise RuntimeError(f"probe {mode} in {tree} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return marks


def measure(tree: Path, extra: list[str]) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        common = [*BASE, f"data.root={tmp}/data", *extra]
        first = launch(tree, "first", [*common, f"root={tmp}/fresh"])
        launch(tree, KILL, [*common, f"root={tmp}/killed"])
        warm = launch(tree, "first", [*common, f"root={tmp}/warm"])
        resume = launch(tree, "first", [*common, f"root={tmp}/killed"])
    return {"first start-up": first, "start-up": warm, "resume": resume}


def medians(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for case in runs[0]:
        phases = [p for p in runs[0][case] if all(p in r[case] for r in runs)]
        out[case] = {p: statistics.median(r[case][p] for r in runs) for p in phases}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tree", action="append", type=Path, help="source tree(s) to time; default: this one")
    parser.add_argument("extra", nargs="*", help="extra lottery overrides (after --)")
    args = parser.parse_args(argv)
    trees = args.tree or [Path(__file__).resolve().parent.parent]
    runs: dict[Path, list] = {t: [] for t in trees}
    for _ in range(args.repeats):
        for tree in trees:  # interleaved: load on a shared machine falls on every tree alike
            runs[tree].append(measure(tree, args.extra))
            steps = {case: round(m["first training step"], 2) for case, m in runs[tree][-1].items()}
            print(f"{tree}: {steps}", flush=True)
    results = {t: medians(r) for t, r in runs.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"seconds from launch, median of {args.repeats}; load average {load:.2f} on {os.cpu_count()} cores")
    for case in results[trees[0]]:
        print(f"\n{case}")
        for phase in results[trees[0]][case]:
            cells = [f"{results[t][case].get(phase, float('nan')):7.2f}" for t in trees]
            ratio = ""
            if len(trees) == 2 and phase in results[trees[1]][case]:
                ratio = f"  x{results[trees[1]][case][phase] / results[trees[0]][case][phase]:.2f}"
            print(f"  {phase:32s}" + "".join(cells) + ratio)
        total = [results[t][case].get("first training step", float("nan")) for t in trees]
        verdict = ", ".join(f"{'met' if s < TARGET_SECONDS else 'missed'} ({s:.2f} s)" for s in total)
        print(f"  target {TARGET_SECONDS} s: {verdict}")
    if len(trees) > 1:
        print("\ncolumns: " + ", ".join(str(t) for t in trees))
    return 0


if __name__ == "__main__":
    sys.exit(main())
