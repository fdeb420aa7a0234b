"""The block a job prints before it trains: what runs and where its results go, and on a re-run what was found there.

    lottery: experiment default · hash 2416f4a012 · seed 0 · branch none
      output    outputs/default/2416f4a012/seed_0
      settings  model.name=mlp data.name=mnist1d optim.name=adam optim.lr=0.001
      overrides seed=0 trainer.progress_bar=false
      found     levels 0-3 finished; level 4 resumes at step 1500 of 3000 (level_4/checkpoints/last.ckpt)

`settings` are the hashed settings that differ from the schema defaults (lottery/core/hashing.py, what names the
hash folder); `overrides` are the command line's, hashed or not. The header is printed before the data loads, so a
long start-up already shows where the run writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lottery.console import say


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def header_lines(
    name: str, hash_: str, seed: int, branch: str, seed_dir: Path, settings: dict[str, Any], overrides: list[str]
) -> list[str]:
    lines = [
        f"lottery: experiment {name} · hash {hash_} · seed {seed} · branch {branch}",
        f"  output    {seed_dir}",
        "  settings  " + (" ".join(f"{k}={_value(v)}" for k, v in settings.items()) or "all defaults"),
    ]
    if overrides:
        lines.append("  overrides " + " ".join(overrides))
    return lines


def spans(numbers: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def found_line(levels: int, done: list[int], resume: tuple[int, int, int, Path] | None, total_steps: int) -> str:
    """What a job found of its trunk: `done` the finished levels, `resume` (level, step, total, checkpoint) of an
    interrupted one (step None: its checkpoint could not be read and will be checked when the level starts)."""
    if not done and resume is None:
        return f"  found     nothing yet: levels 0-{levels} to train, {total_steps} steps each"
    parts = []
    if done:
        word = "level" if len(done) == 1 else "levels"
        parts.append(f"{word} {spans(done)} finished")
    if resume is not None:
        level, step, total, checkpoint = resume
        at = f"at step {step} of {total}" if step is not None else "from its checkpoint"
        parts.append(f"level {level} resumes {at} ({checkpoint})")
    todo = levels + 1 - len(done)
    parts.append("nothing left to train" if todo == 0 else f"{todo} of {levels + 1} levels to train")
    return "  found     " + "; ".join(parts)


def print_lines(lines: list[str]) -> None:
    for line in lines:
        say(line)
