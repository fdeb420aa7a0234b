"""GPU-side augmentation semantics, run on CPU tensors: crops are windows of the padded image, flips are exact
mirror images, padding holds the fill, and every batch is a pure function of (seed, step)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from lottery.data.augment import PADDING, Draws, crop_flip, epoch_draws
from lottery.data.batches import StepBatches

P = PADDING


def images(n: int = 6, c: int = 3, side: int = 8) -> torch.Tensor:
    # Distinct, nonzero values everywhere, so a misplaced pixel or a stray zero cannot go unnoticed.
    return torch.arange(1, n * c * side * side + 1, dtype=torch.float32).view(n, c, side, side)


def fixed(n: int, dy: int, dx: int, flip: bool) -> Draws:
    return Draws(torch.full((n,), dy), torch.full((n,), dx), torch.full((n,), flip))


def test_an_unshifted_flipped_item_equals_torch_flip_of_the_original():
    x = images()
    assert torch.equal(crop_flip(x, fixed(len(x), P, P, True)), torch.flip(x, dims=[3]))
    assert torch.equal(crop_flip(x, fixed(len(x), P, P, False)), x)  # the centre window, unflipped: the identity


def test_each_crop_is_a_window_of_the_zero_padded_image_and_flips_mirror_it():
    x = images(n=64)
    draws = epoch_draws(len(x), seed=3, epoch=0)
    out = crop_flip(x, draws)
    padded = F.pad(x, (P, P, P, P))  # zeros
    for i in range(len(x)):
        dy, dx = int(draws.dy[i]), int(draws.dx[i])
        window = padded[i, :, dy : dy + 8, dx : dx + 8]
        assert torch.equal(out[i], torch.flip(window, dims=[2]) if draws.flip[i] else window), i
    assert set(draws.dy.tolist()) <= set(range(2 * P + 1)) and set(draws.dx.tolist()) <= set(range(2 * P + 1))


def test_the_padding_region_is_zeros_or_the_given_fill():
    x = images()
    corner = crop_flip(x, fixed(len(x), 0, 0, False))  # window at the top-left: 4 rows and 4 columns of padding
    assert torch.count_nonzero(corner[:, :, :P, :]) == 0 and torch.count_nonzero(corner[:, :, :, :P]) == 0
    assert torch.equal(corner[:, :, P:, P:], x[:, :, :-P, :-P])
    fill = torch.tensor([-1.5, 0.25, 7.0])
    corner = crop_flip(x, fixed(len(x), 2 * P, 2 * P, False), fill=fill)  # bottom-right window
    for c in range(3):
        assert bool((corner[:, c, -P:, :] == fill[c]).all()) and bool((corner[:, c, :, -P:] == fill[c]).all())
    assert torch.equal(corner[:, :, :-P, :-P], x[:, :, P:, P:])


def test_draws_are_a_pure_function_of_seed_and_epoch():
    a, b = epoch_draws(1000, seed=0, epoch=2), epoch_draws(1000, seed=0, epoch=2)
    assert all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("dy", "dx", "flip"))
    for other in (epoch_draws(1000, seed=0, epoch=3), epoch_draws(1000, seed=1, epoch=2)):
        assert not torch.equal(a.dy, other.dy) and not torch.equal(a.flip, other.flip)
    assert set(a.dy.tolist()) == set(range(2 * P + 1)) and 0.4 < a.flip.float().mean() < 0.6  # all offsets occur


def batches(x: torch.Tensor, start: int = 0, seed: int = 0) -> StepBatches:
    y = torch.arange(len(x)) % 10
    return StepBatches(x, y, batch_size=8, seed=seed, total_steps=12, start_step=lambda: start, augment=True)


def test_an_augmented_batch_is_a_pure_function_of_seed_and_step():
    x = images(n=40)  # 5 steps per epoch, so 12 steps cross two epoch boundaries
    full = list(batches(x))
    resumed = list(batches(x, start=7))  # a level resumed (or rewound) at step 7
    assert len(full) == 12 and len(resumed) == 5
    for step, (xb, yb) in enumerate(resumed, start=7):
        assert torch.equal(xb, full[step][0]) and torch.equal(yb, full[step][1]), step  # bit-identical
    assert torch.equal(batches(x).batch(3)[0], full[3][0])
    assert not torch.equal(full[0][0], full[5][0])  # other step, other draws (and order)
    assert not torch.equal(batches(x, seed=1).batch(3)[0], full[3][0])
    plain = StepBatches(x, torch.arange(40) % 10, batch_size=8, seed=0, total_steps=12)
    assert torch.equal(plain.batch(3)[1], full[3][1])  # augmentation leaves the data order alone
    assert not torch.equal(plain.batch(3)[0], full[3][0])


def test_channels_last_batches_stay_channels_last_and_equal():
    x = images()
    draws = epoch_draws(len(x), seed=0, epoch=0)
    out = crop_flip(x.contiguous(memory_format=torch.channels_last), draws)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, crop_flip(x, draws)) and crop_flip(x, draws).is_contiguous()


def test_augmenting_anything_but_image_batches_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        crop_flip(torch.zeros(4, 40), fixed(4, 0, 0, False))
    with pytest.raises(ValueError, match=r"data.augment=true crops and flips images.*\(40,\).*data.augment=false"):
        StepBatches(torch.zeros(16, 40), torch.zeros(16), batch_size=4, seed=0, total_steps=2, augment=True)


def test_augmenting_a_vector_dataset_fails_before_training(run_tiny):
    from lottery.validate import ConfigError

    with pytest.raises(ConfigError, match=r"data.augment=true .* data.name='mnist1d' has examples shaped \(40,\)"):
        run_tiny("data.augment=true")


def test_under_ddp_each_rank_gets_its_slice_of_the_augmented_global_batch():
    x = images(n=40)
    b = batches(x)
    for step in (0, 6):
        xg, yg = b.batch(step)
        for rank in range(2):
            xr, yr = b.batch(step, rank=rank, world=2)
            assert torch.equal(xr, xg[rank::2]) and torch.equal(yr, yg[rank::2])
