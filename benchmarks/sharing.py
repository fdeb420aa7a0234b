"""Two `lottery` processes started together on one machine: each one's training speed against running alone.

    .venv/bin/python benchmarks/sharing.py                   # --steps 3000 --repeats 3
    .venv/bin/python benchmarks/sharing.py -- trainer.threads=null        # torch's default: a thread per core
    .venv/bin/python benchmarks/sharing.py --cohort 8        # a cohort of 8 seeds (launcher=cohort) beside a solo run

Each measurement launches the real command (`lottery levels=0 train.duration=<steps>it logger=none ...`, the default
MNIST-1D MLP, dense level only) in fresh output folders and reads the level's steps per second from its
metrics.json (`train_seconds`: the fit's own training time, start-up excluded). "alone": one process; "together":
two processes started at the same moment, both timed. With --cohort N the first process is `lottery -m
launcher=cohort seed=0,...,N-1 ...` (its speed: the stack's steps per second) and the second a solo run, each compared
with itself alone. Repeats alternate alone/together; the table gives medians and each process's speed together as a
fraction of its median alone (the issue's target: at least 40% each).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

LOTTERY = Path(sys.executable).with_name("lottery")


def launch(root: Path, steps: int, env: dict[str, str], seed: int, overrides: list[str], cohort: int):
    seeds = ["-m", "launcher=cohort", "seed=" + ",".join(str(seed + i) for i in range(cohort))] if cohort > 1 else []
    args = [
        str(LOTTERY),
        *seeds,
        f"root={root}",
        *([] if seeds else [f"seed={seed}"]),
        "levels=0",
        f"train.duration={steps}it",
        "logger=none",
        "trainer.progress_bar=false",
        *overrides,
    ]
    root.mkdir(parents=True)  # the working folder too: a multirun's Hydra folder lands inside it
    return subprocess.Popen(args, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def speed(root: Path, steps: int) -> float:
    """Steps per second of the level's fit (a cohort's seeds share one fit: any seed's record)."""
    metrics = next(root.glob("*/*/seed_*/level_0/metrics.json"))
    return steps / json.loads(metrics.read_text())["train_seconds"]


def run(sizes: list[int], steps: int, env: dict[str, str], tmp: Path, tag: str, overrides: list[str]) -> list[float]:
    """Start one process per entry of `sizes` (1: a solo run, N > 1: a cohort of N seeds) at once; their speeds."""
    roots = [tmp / f"{tag}-{i}" for i in range(len(sizes))]
    pairs = enumerate(zip(roots, sizes, strict=True))
    procs = [launch(root, steps, env, 10 * i, overrides, n) for i, (root, n) in pairs]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"lottery failed ({p.returncode}): {err[-2000:]}")
    return [speed(root, steps) for root in roots]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cohort", type=int, default=1, help="seeds in the first process's cohort (1: two solo runs)")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for every process (repeatable)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (after --)")
    args = parser.parse_args()
    env = dict(os.environ)
    env.update(dict(kv.split("=", 1) for kv in args.env))
    sizes = [args.cohort, 1]
    names = [f"cohort of {args.cohort}" if args.cohort > 1 else "solo", "solo"]
    alone: list[list[float]] = [[], []]
    together: list[list[float]] = [[], []]
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            kinds = [0] if args.cohort == 1 else [0, 1]  # two solo runs: one "alone" kind
            for k in kinds:
                alone[k] += run([sizes[k]], args.steps, env, Path(tmp), f"alone{r}-{k}", args.overrides)
            pair = run(sizes, args.steps, env, Path(tmp), f"together{r}", args.overrides)
            for k in (0, 1):
                together[k].append(pair[k])
            print(
                f"[{r + 1}/{args.repeats}] alone {', '.join(f'{a[-1]:.0f}' for a in alone if a)} steps/s, "
                f"together {pair[0]:.0f} ({names[0]}) and {pair[1]:.0f} ({names[1]}) steps/s",
                flush=True,
            )
    if args.cohort == 1:
        alone[1] = alone[0]
    print(f"env: {' '.join(args.env) or '(as set)'}; overrides: {' '.join(args.overrides) or '-'}")
    print(f"cores: {os.cpu_count()}; steps per level: {args.steps}")
    worst = 1.0
    for k in (0, 1):
        solo = statistics.median(alone[k])
        fractions = [t / solo for t in together[k]]
        worst = min(worst, *fractions)
        print(
            f"{names[k]}: alone median {solo:.0f} steps/s ({', '.join(f'{a:.0f}' for a in alone[k])}); together "
            f"{', '.join(f'{t:.0f}' for t in together[k])} = {', '.join(f'{f:.0%}' for f in fractions)} of alone"
        )
    print(f"worst process together: {worst:.0%} of alone (target >= 40%): {'met' if worst >= 0.4 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
