"""The standard CIFAR augmentation, batched: a random 32x32 crop of the image padded by 4, then a random horizontal
flip (torchvision's RandomCrop(32, padding=4) and RandomHorizontalFlip, as open_lth and the LMC paper train).

Pure tensor ops on whatever device the batch is on (one gather per batch, no per-image loop, no DataLoader
workers). The random draws are a pure function of (seed, epoch): one generator seeded with (seed, epoch,
AUGMENT_STREAM) draws a crop offset and a flip bit for every position of the epoch, and step t uses the draws of its
batch's positions, so an augmented batch is a pure function of (seed, step) like the data order itself
(lottery/data/batches.py); rewinding and resuming stay bit-exact. The draws are made on the CPU, once per epoch,
so a GPU and a CPU run see the same crops and flips.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lottery.core.seeds import derive_seed

PADDING = 4  # pixels of padding on every side, so a crop is shifted by up to 4 pixels each way
AUGMENT_STREAM = 1  # a third seed word keeps these draws independent of the epoch permutation's


@dataclass(frozen=True)
class Draws:
    """Per position in an epoch: the crop window's top-left corner in the padded image, and whether to flip."""

    dy: torch.Tensor  # int64 (n,), in [0, 2 * padding]; `padding` is the uncropped (centre) window
    dx: torch.Tensor  # int64 (n,)
    flip: torch.Tensor  # bool (n,)

    def to(self, device: torch.device) -> Draws:
        return Draws(self.dy.to(device), self.dx.to(device), self.flip.to(device))

    def __getitem__(self, positions: slice) -> Draws:
        return Draws(self.dy[positions], self.dx[positions], self.flip[positions])


def epoch_draws(n: int, seed: int, epoch: int, padding: int = PADDING) -> Draws:
    state = derive_seed(seed, epoch, AUGMENT_STREAM)
    generator = torch.Generator().manual_seed(state)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.randint(0, 2, (n,), generator=generator).bool()
    return Draws(dy, dx, flip)


def crop_flip(x: torch.Tensor, draws: Draws, padding: int = PADDING, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Item i: the window at (draws.dy[i], draws.dx[i]) of x[i] padded by `padding`, mirrored left-right if
    draws.flip[i]. `fill` (one value per channel, on x's device) pads; None pads with zeros. The result keeps x's
    memory format (channels-last batches stay channels-last)."""
    if x.dim() != 4:
        raise ValueError(f"crop_flip takes image batches shaped (N, C, H, W), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    if fill is None:
        padded = x.new_zeros(n, c, h + 2 * padding, w + 2 * padding)
    else:
        padded = fill.to(x.dtype).view(1, c, 1, 1).expand(n, c, h + 2 * padding, w + 2 * padding).clone()
    padded[:, :, padding : padding + h, padding : padding + w] = x
    rows = draws.dy[:, None] + torch.arange(h, device=x.device)  # (n, h): padded rows of each crop
    cols = draws.dx[:, None] + torch.arange(w, device=x.device)  # (n, w)
    cols = torch.where(draws.flip[:, None], cols.flip(1), cols)  # a flipped crop reads its window right to left
    items = torch.arange(n, device=x.device)[:, None, None]
    out = padded[items, :, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c): advanced indices come first
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return out.permute(0, 3, 1, 2).contiguous(memory_format=layout)
