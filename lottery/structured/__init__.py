"""Structured lottery tickets over attention heads and MLP units (`pruning.strategy=structured`, `structured.*`).

    plan.py        structured IMP: the plan that removes whole units by score (the Plan interface of core/pruning.py)
    scoring.py     magnitude and gradient importance of a run's units, on its own training prompts
    no_retrain.py  the Bansal et al. 2023 protocol: rank once, remove the least important x%, evaluate, no retraining
    report.py      seed_<s>/structured.json: removable fractions at a tolerance, curves, head-survival heatmaps
    figures.py     its figures;  run.py  what a structured run does after its trunk;  checks.py  its settings
    export.py      the compact model: pruned heads and units physically removed, same outputs, fewer parameters
    rebuild.py     a level's network and data rebuilt from its folder (for export)
`lottery-compare` reads these runs in lottery/reports/heads.py (head-survival overlap, Spearman of head scores).

The masks on disk are plain weight masks (lottery/core/units.py expands unit masks into them), so every level has the
same files as a weight-pruning level, and the unit mask is read back from mask.pt with `contract`.
"""
