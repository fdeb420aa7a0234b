"""One configuration's tickets across seeds: per level, the test accuracy's mean, standard deviation and range over
seeds, and the lowest matching density of each seed with its spread. A single seed's level-to-level wobble (about two
points on the default run) decides whether a run reads "a ticket at 33%" or "no ticket"; over seeds the claim
carries its uncertainty. Printed at the end of `lottery -m launcher=cohort seed=0,1,2` (and written to
<experiment>/seeds.json); experiments/default_table.py puts the default run's into the README.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from rich.table import Table

from lottery.core.matching import last_matching


def across_seeds(tickets: Mapping[int, dict[str, Any]]) -> dict[str, Any]:
    """{seeds, levels: [{level, density, mean, sd, min, max, per_seed}], dense, matching: {per_seed, mean, min, max},
    mean_matching_density} from each seed's tickets.json (the trunk's final test accuracy by default)."""
    seeds = sorted(tickets)
    first = tickets[seeds[0]]
    key, tolerance = first.get("metric_key", "test_acc"), first["match_tolerance"]
    levels = []
    for i, row in enumerate(first["levels"]):
        values = [tickets[s]["levels"][i][key] for s in seeds if i < len(tickets[s]["levels"])]
        if len(values) < len(seeds):
            break  # a level not every seed has finished
        densities = {tickets[s]["levels"][i]["density"] for s in seeds}
        levels.append(
            {
                "level": row["level"],
                "density": row["density"] if len(densities) == 1 else statistics.fmean(densities),
                "mean": statistics.fmean(values),
                "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values),
                "max": max(values),
                "per_seed": values,  # in the order of "seeds"
            }
        )
    matching = [tickets[s]["min_matching_density"] for s in seeds]
    known = [m for m in matching if m is not None]
    # the same rule on the mean curve: the last level before the mean first falls below mean dense - tolerance
    mean_match = last_matching([(r["density"], r["mean"]) for r in levels], levels[0]["mean"], tolerance)
    return {
        "seeds": seeds,
        "metric_key": key,
        "match_tolerance": tolerance,
        "levels": levels,
        "matching": {
            "per_seed": matching,
            "mean": statistics.fmean(known) if known else None,
            "min": min(known) if known else None,
            "max": max(known) if known else None,
        },
        "mean_matching_density": mean_match,
    }


def seeds_table(summary: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    for column in ("level", "density", "test acc mean", "sd", "min-max", *[f"seed {s}" for s in summary["seeds"]]):
        table.add_column(column, justify="right")
    for r in summary["levels"]:
        table.add_row(
            str(r["level"]),
            f"{r['density']:.2%}",
            f"{r['mean']:.2%}",
            f"{r['sd']:.2%}",
            f"{r['min']:.2%}-{r['max']:.2%}",
            *[f"{v:.2%}" for v in r["per_seed"]],
        )
    table.caption = caption(summary)
    return table


def caption(summary: dict[str, Any]) -> str:
    m, dense = summary["matching"], summary["levels"][0]
    per_seed = ", ".join(f"{'none' if v is None else format(v, '.2%')}" for v in m["per_seed"])
    spread = "" if m["min"] is None else f" (range {m['min']:.2%}-{m['max']:.2%})"
    mean_match = summary["mean_matching_density"]
    return (
        f"{len(summary['seeds'])} seeds; dense {dense['mean']:.2%} +- {dense['sd']:.2%}; lowest density within "
        f"{summary['match_tolerance']:.1%} of dense, per seed: {per_seed}{spread}; of the mean curve: "
        f"{'none' if mean_match is None else format(mean_match, '.2%')}"
    )


def plain_table(summary: dict[str, Any]) -> str:
    """The table as plain text (the README's block: experiments/default_table.py writes it, a test compares it)."""
    seeds = summary["seeds"]
    head = f"{'level':>5}  {'density':>8}  {'mean':>7}  {'sd':>6}  {'min-max':>15}" + "".join(
        f"  {'seed ' + str(s):>7}" for s in seeds
    )
    lines = [head]
    for r in summary["levels"]:
        lines.append(
            f"{r['level']:>5}  {r['density']:>8.2%}  {r['mean']:>7.2%}  {r['sd']:>6.2%}  "
            f"{r['min']:>6.2%}-{r['max']:<8.2%}" + "".join(f"  {v:>7.2%}" for v in r["per_seed"])
        )
    lines.append(caption(summary))
    return "\n".join(lines)
