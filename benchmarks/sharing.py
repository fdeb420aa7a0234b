"""Two `lottery` processes started together on one machine: each one's training speed against running alone.

    .venv/bin/python benchmarks/sharing.py                   # --steps 3000 --repeats 3
    .venv/bin/python benchmarks/sharing.py -- trainer.threads=null        # torch's default: a thread per core

Each measurement launches the real command (`lottery levels=0 train.duration=<steps>it logger=none ...`, the default
MNIST-1D MLP, dense level only) in fresh output folders and reads the level's steps per second from its
metrics.json (`train_seconds`: the fit's own training time, start-up excluded). "alone": one process; "together":
two processes started at the same moment, both timed. Repeats alternate alone/together; the table gives medians and
each process's speed together as a fraction of the median alone (the issue's target: at least 40% each).
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


def launch(root: Path, steps: int, env: dict[str, str], seed: int, overrides: list[str]) -> subprocess.Popen:
    args = [
        str(LOTTERY),
        f"root={root}",
        f"seed={seed}",
        "levels=0",
        f"train.duration={steps}it",
        "logger=none",
        "trainer.progress_bar=false",
        *overrides,
    ]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def speed(root: Path, steps: int) -> float:
    metrics = next(root.glob("*/*/seed_*/level_0/metrics.json"))
    return steps / json.loads(metrics.read_text())["train_seconds"]


def run(n: int, steps: int, env: dict[str, str], tmp: Path, tag: str, overrides: list[str]) -> list[float]:
    roots = [tmp / f"{tag}-{i}" for i in range(n)]
    procs = [launch(root, steps, env, i, overrides) for i, root in enumerate(roots)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"lottery failed ({p.returncode}): {err[-2000:]}")
    return [speed(root, steps) for root in roots]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for every process (repeatable)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (after --)")
    args = parser.parse_args()
    env = dict(os.environ)
    env.update(dict(kv.split("=", 1) for kv in args.env))
    alone, together = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            alone += run(1, args.steps, env, Path(tmp), f"alone{r}", args.overrides)
            together += run(2, args.steps, env, Path(tmp), f"together{r}", args.overrides)
            print(
                f"[{r + 1}/{args.repeats}] alone {alone[-1]:.0f} steps/s, together {together[-2]:.0f} and "
                f"{together[-1]:.0f} steps/s",
                flush=True,
            )
    solo = statistics.median(alone)
    fractions = [t / solo for t in together]
    print(f"env: {' '.join(args.env) or '(as set)'}; overrides: {' '.join(args.overrides) or '-'}")
    print(f"cores: {os.cpu_count()}; steps per level: {args.steps}")
    print(f"alone: median {solo:.0f} steps/s ({', '.join(f'{a:.0f}' for a in alone)})")
    print(
        f"together: {', '.join(f'{t:.0f}' for t in together)} steps/s = "
        f"{', '.join(f'{f:.0%}' for f in fractions)} of alone"
    )
    worst = min(fractions)
    print(f"worst process together: {worst:.0%} of alone (target >= 40%): {'met' if worst >= 0.4 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
