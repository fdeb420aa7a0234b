"""The README's table of the default run, made by today's code: runs the README's first command (three seeds of the
default experiment as one cohort) in a fresh output folder, times it, and writes the table between the README's
markers, the summary to experiments/results/default/seeds.json. Run it whenever the engine's numerics change;
tests/test_default_table.py fails when the README and the committed summary disagree, or when today's code no longer
gives the committed numbers.

    python experiments/default_table.py [--readme README.md] [--save experiments/results/default]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lottery.core import artifacts
from lottery.reports.seeds import plain_table

COMMAND = ["-m", "launcher=cohort", "seed=0,1,2"]
QUIET = ["logger=none", "trainer.progress_bar=false"]
START, END = "<!-- default-run:start -->", "<!-- default-run:end -->"


def block(summary: dict, seconds: float | None) -> str:
    timing = (
        "" if seconds is None else f"\nreal {seconds:.0f} s (the three seeds as one cohort, alone on the 2-core CPU)"
    )
    return f"```\n$ lottery {' '.join(COMMAND + QUIET)}\n{plain_table(summary)}{timing}\n```"


def replace_block(readme: str, text: str) -> str:
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(readme):
        raise SystemExit(f"the README has no {START} ... {END} block")
    return pattern.sub(lambda _: f"{START}\n{text}\n{END}", readme)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--save", type=Path, default=Path("experiments/results/default"))
    args = parser.parse_args()
    lottery = Path(sys.executable).with_name("lottery")
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        env = {**os.environ, "WANDB_MODE": "offline"}
        subprocess.run([str(lottery), *COMMAND, *QUIET, f"root={root}"], check=True, env=env)
        seconds = time.perf_counter() - started
        (found,) = Path(root, "default").glob("*/seeds.json")
        summary = json.loads(found.read_text())
    args.save.mkdir(parents=True, exist_ok=True)
    record = {"command": f"lottery {' '.join(COMMAND + QUIET)}", "seconds": seconds, "summary": summary}
    artifacts.write_json(record, args.save / "seeds.json")  # temporary file, then rename
    artifacts.write_text(replace_block(args.readme.read_text(), block(summary, seconds)), args.readme)
    print(block(summary, seconds))


if __name__ == "__main__":
    main()
