"""Datasets, all available offline: MNIST-1D and a CIFAR-10-shaped set (generated), sklearn digits (shipped),
MNIST/Fashion-MNIST (IDX files), CIFAR-10 (python-pickle batches), in-context learning prompts (generated,
lottery/data/icl.py; few-shot text, lottery/data/text_icl.py) and plain text for language modelling
(lottery/data/lm_text.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lottery.data.icl import ICL_DATASETS, load_icl
from lottery.data.splits import DatasetNotFoundError, Splits

DATASETS = ("mnist1d", "digits", "mnist", "fashion_mnist", "cifar10", "synthetic_cifar10", *ICL_DATASETS)


def load(
    name: str, root: str = "data", download: bool = False, num_samples: int = 5000, settings: Any = None
) -> Splits:
    """Load a dataset by its config name (the stable name that the experiment hash keys on). `settings`: the data
    config, read by the generated in-context learning tasks (lottery/data/icl.py)."""
    if name == "icl_text":  # needs transformers (the model's tokenizer): imported on this path only
        from lottery.data.text_icl import load_text

        return load_text(settings)
    if name == "lm_text":  # likewise
        from lottery.data.lm_text import load_lm

        return load_lm(settings)
    if name in ICL_DATASETS:
        return load_icl(settings)
    if name == "mnist1d":
        from lottery.data.mnist1d import load_mnist1d

        return load_mnist1d(num_samples=num_samples, cache_dir=Path(root) / "mnist1d")
    if name == "digits":
        from lottery.data.digits import load_digits

        return load_digits()
    if name in ("mnist", "fashion_mnist"):
        from lottery.data.idx import load_idx_dataset

        return load_idx_dataset(root, name, download=download)
    if name == "cifar10":
        from lottery.data.cifar import load_cifar10

        return load_cifar10(root, download_missing=download)
    if name == "synthetic_cifar10":
        from lottery.data.synthetic import load_synthetic_cifar10

        return load_synthetic_cifar10(num_samples=num_samples)
    raise ValueError(f"data.name={name!r} is not one of {DATASETS}")


__all__ = ["DATASETS", "DatasetNotFoundError", "Splits", "load"]
