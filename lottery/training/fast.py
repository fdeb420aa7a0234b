"""The speed switches of a level: trainer.data_on_device, trainer.channels_last and trainer.compile.

None is hashed: they change how fast a level trains, not the recipe. channels_last and compile may change float
rounding (kernels that sum in another order), as any change of GPU kernel does. Each keeps pruned weights exactly
zero (tests/test_fast_path.py): the mask is a masked fill of the parameters themselves after every optimizer step,
outside the compiled forward, whatever the memory layout.
"""

from __future__ import annotations

import torch

from lottery.config import TrainerConfig
from lottery.data.datamodule import TensorDataModule
from lottery.training.stack import Stack, to_channels_last


def prepare_stack(stack: Stack, trainer: TrainerConfig) -> None:
    """Apply channels_last and compile to a freshly built stack, before its optimizer exists. channels_last is
    a GPU speed switch and is left off on the CPU: there torch 2.13's NHWC convolution backward aborted the process
    (a double free inside autograd) on this project's AMD EPYC machines, and it buys nothing on a CPU."""
    if trainer.channels_last and on_gpu(trainer):
        to_channels_last(stack.network)  # conv weights only (each replica's, in a stack); Linear is unchanged
    if trainer.compile:
        # In place (Stack.compile: nn.Module.compile), not `torch.compile(network)`: the wrapper that returns
        # prefixes every state-dict key with `_orig_mod.`, while masks, checkpoints and weights.pt name them plainly.
        stack.compile()


def on_gpu(trainer: TrainerConfig) -> bool:
    return trainer.accelerator in ("gpu", "cuda") or (trainer.accelerator == "auto" and torch.cuda.is_available())


def place_data(datamodule: TensorDataModule, device: torch.device, trainer: TrainerConfig) -> None:
    """Move the splits to the training device once per run (they stay there for every later level). A no-op on the
    CPU, where they already are."""
    if trainer.data_on_device and device.type != "cpu":
        datamodule.to_device(device, channels_last=trainer.channels_last)
