"""Compare two run folders level by level: masks, weights and metrics (train_seconds aside) must be bit-identical.

python experiments/same_results.py outputs_a/default/<hash>/seed_0 outputs_b/default/<hash>/seed_0
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def level_artifacts(seed_dir: Path) -> dict:
    out = {}
    for level in sorted(seed_dir.glob("level_*")):
        metrics = json.loads((level / "metrics.json").read_text())
        metrics.pop("train_seconds")
        out[level.name] = (
            metrics,
            torch.load(level / "mask.pt", weights_only=True),
            torch.load(level / "weights.pt", weights_only=True),
        )
    return out


def main(a: str, b: str) -> int:
    left, right = level_artifacts(Path(a)), level_artifacts(Path(b))
    if left.keys() != right.keys() or not left:
        print(f"different or no levels: {sorted(left)} vs {sorted(right)}")
        return 1
    bad = []
    for level, (metrics, mask, weights) in left.items():
        metrics_b, mask_b, weights_b = right[level]
        if metrics != metrics_b:
            bad.append(f"{level}: metrics differ {metrics} vs {metrics_b}")
        bad += [f"{level}: mask {k}" for k in mask if not torch.equal(mask[k], mask_b[k])]
        bad += [f"{level}: weights {k}" for k in weights if not torch.equal(weights[k], weights_b[k])]
        for name, m in mask.items():
            if torch.count_nonzero(weights[name][~m]):
                bad.append(f"{level}: pruned weights of {name} are not zero")
    print("\n".join(bad) if bad else f"identical: {len(left)} levels, pruned weights exactly zero")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
