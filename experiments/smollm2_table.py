"""The SmolLM2 study's table (experiments/README.md) from its results files:

    python experiments/smollm2_table.py outputs/smollm2_icl

One row per task (seed_0/no_retrain/results.json under each hash folder): dense accuracy at 4 shots, and per unit kind
the largest fraction removable within tolerance by each score against random removal, the heads-then-FFN step, the
dead FFN units and the run's wall time. A dash: not claimed (dense too close to chance)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = [("heads", "gradient"), ("heads", "random"), ("mlp_blocks", "gradient"), ("mlp_blocks", "random")]
COLUMNS += [("layers", "angular"), ("layers", "single"), ("layers", "gradient"), ("layers", "random")]


def fraction(value) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def main(root: str) -> None:
    rows = []
    for path in sorted(Path(root).glob("*/seed_0/no_retrain/results.json")):
        r = json.loads(path.read_text())
        combined = r.get("combined", {})
        step = (
            f"{fraction(combined['heads_fraction'])} + {fraction(combined['removable_fraction'])}"
            if "curve" in combined
            else "-"
        )
        cells = [fraction(r["removable"].get(k, {}).get(s)) for k, s in COLUMNS]
        census = r["census"]
        rows.append(
            [r["data"]["task"], f"{100 * r['dense']['acc']:.1f}", *cells, step,
             f"{census['dead_total']}/{census['units_total']}", f"{r['run']['seconds'] / 60:.1f}"]
        )  # fmt: skip
    header = ["task", "dense %", *(f"{k} {s}" for k, s in COLUMNS), "heads + FFN blocks", "dead FFN units", "min"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in sorted(rows):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "outputs/smollm2_icl")
