"""What a run prints when its output is not a terminal (a log file, SLURM): the start block names the output folder,
every level has its line, a resumed run says where it resumed, and no line is wrapped, however narrow COLUMNS is."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import seed_dir_of, tiny

KILL_SCRIPT = Path(__file__).with_name("kill_run.py")
LEVEL_LINE = re.compile(
    r"^level (\d)  density [\d.]+%  60 steps  best val [\d.]+% at step \d+  test [\d.]+%  [\d.]+ s$"
)
SUMMARY = re.compile(r"^dense test acc [\d.]+%; lowest density within 1\.0% of it: [\d.]+% \(level \d\)$")


def lottery(*overrides: str) -> list[str]:
    """Run `lottery <overrides>` with stdout a pipe and COLUMNS=60; its stdout lines."""
    env = {**os.environ, "COLUMNS": "60", "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, "-m", "lottery.cli", *overrides], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()


def test_a_run_prints_its_folder_a_line_per_level_and_an_unwrapped_summary(tmp_path):
    overrides = tiny(tmp_path)
    lines = lottery(*overrides)
    seed_dir = seed_dir_of(overrides)
    assert lines[0].startswith("lottery: experiment default · hash ") and lines[0].endswith("seed 0 · branch none")
    assert f"  output    {seed_dir}" in lines  # on one line, however long the path
    assert "  found     nothing yet: levels 0-2 to train, 60 steps each" in lines
    assert [int(m.group(1)) for m in map(LEVEL_LINE.match, lines) if m] == [0, 1, 2]
    assert sum(bool(SUMMARY.match(line)) for line in lines) == 1  # the whole sentence on one line
    assert not any("\x1b[" in line for line in lines)  # no colour codes in a log file
    table = [line for line in lines if line.startswith("│")]
    assert len(table) == 3 and all(len(line) == len(table[0]) for line in table)


def test_a_log_file_gets_no_progress_bar_frames_even_with_the_bar_on(tmp_path):
    lines = lottery(*tiny(tmp_path), "trainer.progress_bar=true")
    assert not any("it/s" in line or "/60 " in line for line in lines)  # the bar (steps, speed): terminals only
    assert [int(m.group(1)) for m in map(LEVEL_LINE.match, lines) if m] == [0, 1, 2]


def test_a_resumed_run_says_what_it_found_and_where_it_resumed(tmp_path):
    overrides = tiny(tmp_path)
    killed = subprocess.run(
        [sys.executable, str(KILL_SCRIPT), "step", "1", "30", *overrides], capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    lines = lottery(*overrides)
    checkpoint = seed_dir_of(overrides) / "level_1" / "checkpoints" / "last.ckpt"
    assert (
        "  found     level 0 finished; level 1 resumes at step 20 of 60 (level_1/checkpoints/last.ckpt); "
        "2 of 3 levels to train"
    ) in lines
    assert f"level 1: resuming at step 20 of 60 from {checkpoint}" in lines
    skipped = [line for line in lines if line.endswith("(finished earlier, skipped)")]
    assert len(skipped) == 1 and skipped[0].startswith("level 0  density 100.00%")
    assert [int(m.group(1)) for m in map(LEVEL_LINE.match, lines) if m] == [1, 2]


def test_print_every_eval_prints_each_evaluation(run_tiny, capsys):
    run_tiny("train.print_every_eval=true", "levels=0")
    out = capsys.readouterr().out.splitlines()
    evals = [line for line in out if re.match(r"^level 0  step \d+/60  val acc [\d.]+%  val loss [\d.]+$", line)]
    assert [line.split()[3] for line in evals] == ["20/60", "40/60", "60/60"]
