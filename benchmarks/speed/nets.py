"""The hand-written PyTorch pieces of (a) and (c): the network, its weights, one evaluation and the validation carve.

Each copies what the framework does (layer order, split seed, metrics), so (a) and (c) train and evaluate exactly
what (b) does; none of them uses the `lottery` package.
"""

from __future__ import annotations

from typing import Any


def carve(splits, hp: dict[str, Any]):
    """The validation carve of lottery.data.datamodule.TensorDataModule, written out (same seed, same examples)."""
    import torch

    order = torch.randperm(len(splits.x_train), generator=torch.Generator().manual_seed(hp["split_seed"]))
    val, train = order[: hp["val_size"]], order[hp["val_size"] :]
    return splits.x_train[train], splits.y_train[train], splits.x_train[val], splits.y_train[val]


def mlp(in_features: int, hidden: list[int], num_classes: int):
    """The same layers as lottery.models.MLP, hand-written (created in the same order, so the same init per seed)."""
    from torch import nn

    sizes = [in_features, *hidden, num_classes]
    layers: list[nn.Module] = [nn.Flatten()]
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def linear_weights(net) -> dict[str, Any]:
    from torch import nn

    return {f"fc{i + 1}.weight": m.weight for i, m in enumerate(x for x in net if isinstance(x, nn.Linear))}


def evaluate(net, x, y) -> tuple[float, float]:
    """Accuracy and cross-entropy on a whole split in one forward pass (what (b) does at each evaluation)."""
    import torch
    from torch.nn import functional as F

    with torch.no_grad():
        net.eval()
        logits = net(x)
        net.train()
        return float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y))


def density_of(weights: dict[str, Any]) -> float:
    kept = sum(int((w != 0).sum()) for w in weights.values())
    return kept / sum(w.numel() for w in weights.values())
