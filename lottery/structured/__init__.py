"""Structured lottery tickets over attention heads and MLP units (`pruning.strategy=structured`, `structured.*`).

    plan.py        structured IMP: the trunk's levels remove whole units by score, rewind and retrain; controls
    scoring.py     magnitude and gradient importance of a run's units, on its own training prompts
    no_retrain.py  the Bansal et al. 2023 protocol: rank once, remove the least important x%, evaluate, no retraining
    report.py      seed_<s>/structured.json: removable fractions at a tolerance, curves, head-survival heatmaps
    export.py      the compact model: pruned heads and units physically removed, same outputs, fewer parameters
    compare.py     `lottery-compare` on these runs: head-survival overlap and Spearman of head scores

The masks on disk are plain weight masks (lottery/core/units.py expands unit masks into them), so every level has the
same files as a weight-pruning level, and the unit mask is read back from mask.pt with `contract`.
"""
