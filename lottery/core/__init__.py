"""The pure pruning core: durations, masks, pruning plans, schedules, seeds, hashing, the run layout and artifact I/O.

Imports torch and the standard library only (no Lightning, Hydra or W&B; tests/test_core_purity.py checks), so the
semantics of a ticket can be read and tested without the training stack.
"""
