"""Where a run's artifacts live: outputs/<experiment>/<hash>/seed_<s>/level_<L>/.

    <root>/<name>/<hash>/hash.json           the settings the hash covers (the folder describes itself)
    <root>/<name>/<hash>/seed_<s>/config.yaml  the resolved config of this seed's run
                                 init.pt       theta_0, the seeded initialisation (a plain state dict)
                                 rewind.ckpt   full training state at the rewind step k (level 0)
                                 levels.csv    one row per finished level
                                 level_<L>/mask.pt, weights.pt, metrics.json, sparsity.json
                                 level_<L>/checkpoints/last.ckpt   only while the level runs (resume point)
                                 tickets.json  ticket quality: dense accuracy, matching density, margins over controls
                                 branch_<b>/level_<L>/...           a control branch's levels, same files
                                 branch_<b>/config.yaml             the resolved config of the branch's job
                                 .lock, .tickets.lock, branch_<b>/.lock   flocks of jobs sharing the seed (job.py)

Every module finds these folders through this one (`level_dirs`, `branch_dirs`), never by its own glob.

`metrics.json` is written last: its presence is what marks a level finished, so a re-run skips exactly the levels
whose every artifact is on disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LEVEL, BRANCH = "level_", "branch_"  # folder prefixes: level_<L>/, branch_<name>/


def level_dirs(folder: Path) -> list[Path]:
    """The level_<L> folders directly under a seed or branch folder, in name order."""
    return sorted(Path(folder).glob(f"{LEVEL}*"))


def branch_dirs(seed_dir: Path) -> list[Path]:
    """The branch_<name> folders of a seed folder, in name order."""
    return sorted(d for d in Path(seed_dir).glob(f"{BRANCH}*") if d.is_dir())


def level_of(level_dir: Path) -> int:
    return int(Path(level_dir).name.removeprefix(LEVEL))


def branch_of(branch_dir: Path) -> str:
    return Path(branch_dir).name.removeprefix(BRANCH)


def is_branch_dir(folder: Path) -> bool:
    return Path(folder).name.startswith(BRANCH)


@dataclass(frozen=True)
class LevelPaths:
    dir: Path

    @property
    def mask(self) -> Path:
        return self.dir / "mask.pt"

    @property
    def weights(self) -> Path:
        return self.dir / "weights.pt"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.json"

    @property
    def sparsity(self) -> Path:
        return self.dir / "sparsity.json"

    @property
    def last_checkpoint(self) -> Path:
        return self.dir / "checkpoints" / "last.ckpt"

    @property
    def done(self) -> bool:
        return self.metrics.is_file()


@dataclass(frozen=True)
class RunPaths:
    root: Path
    name: str
    hash: str
    seed: int

    @property
    def experiment(self) -> Path:
        return Path(self.root) / self.name / self.hash

    @property
    def hash_file(self) -> Path:
        return self.experiment / "hash.json"

    @property
    def seed_dir(self) -> Path:
        return self.experiment / f"seed_{self.seed}"

    @property
    def config(self) -> Path:
        return self.seed_dir / "config.yaml"

    @property
    def init(self) -> Path:
        return self.seed_dir / "init.pt"

    @property
    def rewind(self) -> Path:
        return self.seed_dir / "rewind.ckpt"

    @property
    def series(self) -> Path:
        """Level 0's network at the steps of train.save_at (lottery/core/series.py)."""
        return self.seed_dir / "series"

    def series_point(self, step: int) -> Path:
        return self.series / f"step_{step}.ckpt"

    @property
    def levels_csv(self) -> Path:
        return self.seed_dir / "levels.csv"

    @property
    def tickets(self) -> Path:
        return self.seed_dir / "tickets.json"

    def level(self, level: int) -> LevelPaths:
        return LevelPaths(self.seed_dir / f"{LEVEL}{level}")

    def level_dirs(self) -> list[Path]:
        """The trunk's level folders."""
        return level_dirs(self.seed_dir)

    def branch_dirs(self) -> list[Path]:
        return branch_dirs(self.seed_dir)

    def branch_dir(self, branch: str) -> Path:
        return self.seed_dir / f"{BRANCH}{branch}"

    def branch_level(self, branch: str, level: int) -> LevelPaths:
        return LevelPaths(self.branch_dir(branch) / f"{LEVEL}{level}")
