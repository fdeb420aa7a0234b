"""The finished levels of output folders, read for `lottery-compare` without re-running anything: one Experiment per
hash folder, its lines (the ticket and each branch with levels of its own), one metrics record per seed and level,
and a label made of the settings that differ between the experiments compared."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lottery.core.layout import branch_dirs, branch_of, level_dirs

# The reports' CSV files end lines as the csv module does by default (\r\n), as they always have.
CSV_LINE_END = "\r\n"
HASHED_SECTIONS = ("model", "data", "optim", "schedule", "pruning", "rewind", "train")


@dataclass
class Experiment:
    path: Path
    settings: dict[str, Any]  # flattened resolved config of the result-affecting sections
    # line ("ticket" or a branch) -> level -> one metrics record per seed
    lines: dict[str, dict[int, list[dict[str, Any]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    label: str = ""

    @property
    def seed_dirs(self) -> list[Path]:
        return sorted(self.path.glob("seed_*"))


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): json.dumps(node) if isinstance(node, (list, dict)) else node}


def find_experiments(paths: list[Path]) -> list[Path]:
    """Hash folders (holding hash.json) at, or up to two levels below, each path."""
    found: list[Path] = []
    for p in paths:
        for pattern in ("hash.json", "*/hash.json", "*/*/hash.json"):
            found += [h.parent for h in sorted(p.glob(pattern))]
    return sorted(dict.fromkeys(f.resolve() for f in found))


def collect(paths: list[Path] | Path, name: str | None = None) -> list[Experiment]:
    paths = [paths] if isinstance(paths, Path) else paths
    experiments = []
    for exp_dir in find_experiments(paths):
        configs = [s / "config.yaml" for s in sorted(exp_dir.glob("seed_*")) if (s / "config.yaml").is_file()]
        if not configs:
            continue
        config = yaml.safe_load(configs[0].read_text())
        if name is not None and config.get("name") != name:
            continue
        settings = {k: v for k, v in _flatten(config).items() if k.split(".")[0] in HASHED_SECTIONS}
        settings["name"] = config.get("name")
        exp = Experiment(path=exp_dir, settings=settings)
        for seed_dir in exp.seed_dirs:
            sources = [("ticket", seed_dir)] + [(branch_of(b), b) for b in branch_dirs(seed_dir)]
            for line, folder in sources:
                for level_dir in level_dirs(folder):
                    if (level_dir / "metrics.json").is_file():
                        metrics = json.loads((level_dir / "metrics.json").read_text())
                        exp.lines[line][int(metrics["level"])].append(metrics)
        if exp.lines:
            experiments.append(exp)
    varying = sorted(
        k
        for k in {k for e in experiments for k in e.settings}
        if len({json.dumps(e.settings.get(k)) for e in experiments}) > 1 and not k.startswith("model._target_")
    )
    for e in experiments:
        # Unset options (None, empty lists) are implied by the ones that are set, e.g. pruning.schedule=fraction.
        parts = [f"{k}={e.settings.get(k)}" for k in varying if e.settings.get(k) not in (None, "[]", "{}")]
        e.label = ", ".join(parts) or str(e.settings.get("name") or e.path.parent.name)  # settings, never a hash
    return experiments


def summarize(exp: Experiment, metric: str, line: str = "ticket") -> list[dict[str, Any]]:
    rows = []
    for level in sorted(exp.lines.get(line, {})):
        records = exp.lines[line][level]
        records = [m for m in records if m.get(metric) is not None]  # levels written before the metric existed
        if not records:
            continue
        values = [m[metric] for m in records]
        rows.append(
            {
                "label": exp.label,
                "line": line,
                "hash": exp.path.name,
                "level": level,
                "density": statistics.fmean(m["density"] for m in records),
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "seeds": len(values),
            }
        )
    return rows
