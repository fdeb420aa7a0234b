"""lottery: lottery-ticket experiments (iterative magnitude pruning with rewinding) on Lightning and Hydra."""

__version__ = "0.1.0"
