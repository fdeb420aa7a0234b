"""Branches beside the IMP trunk, read from what the trunk left on disk: the controls (random_reinit, random_prune,
oneshot), the early-bird tickets and the instability analysis. Each branch is one module; `registry.py` names them."""
