"""Wall time of a seed sweep trained as one cohort against one seed trained alone, with the real command.

    .venv/bin/python benchmarks/cohort_wall.py                       # the default experiment, 8 seeds
    .venv/bin/python benchmarks/cohort_wall.py --seeds 3 -- experiment=lth_lenet_digits

Runs, one after another in fresh output folders: (1) `lottery seed=0 <overrides>`, one seed's whole IMP run with the
basic launcher (solo fits); (2) `lottery -m launcher=cohort seed=0,...,N-1 <overrides>`, the N seeds' runs as one
cohort. Both with logger=none and no progress bar; times are whole commands (start-up, data, every level, reports).
The target (issue: cohorts): the N-seed cohort within 2.0x one seed alone, i.e. at least N/2 times faster than the
N solo runs one after another (estimated as N times the solo run: the seeds' runs cost the same). It also checks that
every seed's levels came out of a cohort of N and that the cohort's seed 0 has the solo run's masks and weights, bit for
bit (one engine: a solo run is a stack of one).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

LOTTERY = Path(sys.executable).with_name("lottery")
QUIET = ["logger=none", "trainer.progress_bar=false"]


def timed(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run([str(LOTTERY), *args], cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr[-3000:]}")
    return seconds


def seed_dirs(root: Path) -> dict[int, Path]:
    return {int(d.name.removeprefix("seed_")): d for d in root.glob("*/*/seed_*")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both runs (after --)")
    args = parser.parse_args()
    seeds = ",".join(str(s) for s in range(args.seeds))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        solo = timed([f"root={tmp / 'solo'}", "seed=0", *QUIET, *args.overrides], tmp)
        print(f"one seed alone: {solo:.1f} s", flush=True)
        cohort = timed(
            ["-m", "launcher=cohort", f"root={tmp / 'cohort'}", f"seed={seeds}", *QUIET, *args.overrides], tmp
        )
        print(f"{args.seeds} seeds as one cohort: {cohort:.1f} s", flush=True)
        dirs = seed_dirs(tmp / "cohort")
        assert sorted(dirs) == list(range(args.seeds)), sorted(dirs)
        sizes = {
            json.loads(m.read_text()).get("cohort", {}).get("size")
            for d in dirs.values()
            for m in d.glob("level_*/metrics.json")
        }
        solo_dir = seed_dirs(tmp / "solo")[0]
        levels = sorted(p.name for p in solo_dir.glob("level_*"))
        same_masks = all(
            all(
                torch.equal(a, b)
                for a, b in zip(
                    torch.load(solo_dir / lv / name).values(), torch.load(dirs[0] / lv / name).values(), strict=True
                )
            )
            for lv in levels
            for name in ("mask.pt", "weights.pt")
        )
    ratio = cohort / solo
    print(f"overrides: {' '.join(args.overrides) or '(the default experiment)'}; levels: {len(levels)}")
    print(f"cohort sizes in metrics.json: {sorted(sizes)}; seed 0 masks and weights as the solo run's: {same_masks}")
    print(
        f"cohort of {args.seeds} / one seed alone = {ratio:.2f}x "
        f"(target <= 2.0x): {'met' if ratio <= 2.0 else 'MISSED'}; "
        f"against {args.seeds} solo runs in turn (~{args.seeds * solo:.0f} s): {args.seeds * solo / cohort:.1f}x faster"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
