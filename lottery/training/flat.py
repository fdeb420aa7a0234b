"""A stack's parameters and gradients in one contiguous buffer, so an optimizer step and the mask multiply are a few
operations over all of them rather than a few per tensor. Measured here with a micro-benchmark of Adam alone (one
thread): the MNIST-1D MLP's six tensors took 0.35 ms per step with the per-tensor loop, a third of its 1 ms training
step, 0.28 ms multi-tensor and 0.17 ms on one buffer; LeNet-300-100's 0.86, 0.65 and 0.53 ms.

Every parameter of the network stays a Parameter with its own name and shape (state dicts, masks and checkpoints see
nothing new); its data is a view into `flat`, and its gradient a view into `flat.grad`, which backward accumulates
into in place (the buffer is zeroed, never set to None, between steps). The optimizer holds `flat` alone. Its state
dict is converted to and from the per-parameter form, so checkpoints keep one layout whichever form trained.
Element-wise updates (Adam, SGD with momentum and weight decay) compute the same values on the buffer as per tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def flattenable(params: Sequence[torch.Tensor]) -> bool:
    """One dtype and device, default-contiguous (not channels_last): what a flat buffer can back with views."""
    return (
        len(params) > 0 and len({(p.dtype, p.device) for p in params}) == 1 and all(p.is_contiguous() for p in params)
    )


class FlatParams:
    def __init__(self, params: Sequence[nn.Parameter]) -> None:
        self.params = list(params)
        self.sizes = [p.numel() for p in self.params]
        self.shapes = [p.shape for p in self.params]
        with torch.no_grad():
            self.flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in self.params]))
        self.flat.grad = torch.zeros_like(self.flat)
        self.attach()

    def attach(self) -> None:
        """Point every parameter's data and gradient into the buffers. Again when training starts: Lightning sets
        the module's gradients to None while it starts a fit, which would leave backward writing elsewhere."""
        for p, data, grad in zip(self.params, self.views(self.flat.data), self.views(self.flat.grad), strict=True):
            p.data = data
            p.grad = grad

    def attached(self) -> bool:
        """Whether every gradient is still the buffer's view (the first one starts where the buffer does)."""
        grads = [p.grad for p in self.params]
        return all(g is not None for g in grads) and grads[0].data_ptr() == self.flat.grad.data_ptr()

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [part.view(shape) for part, shape in zip(flat.split(self.sizes), self.shapes, strict=True)]

    def flat_mask(self, keep: dict[int, torch.Tensor]) -> torch.Tensor:
        """The float mask over the buffer: `keep[i]` for parameter i where given, 1 elsewhere."""
        parts = [
            keep[i].reshape(-1).to(self.flat.dtype) if i in keep else torch.ones(n, dtype=self.flat.dtype)
            for i, n in enumerate(self.sizes)
        ]
        return torch.cat([part.to(self.flat.device) for part in parts])

    def state_per_param(self, state: dict) -> dict:
        """An optimizer state dict over `flat` as the one an optimizer over the separate parameters would save."""
        entry = state["state"].get(0, {})
        per = {}
        if entry:
            for i, views in enumerate(zip(*(self._split(v) for v in entry.values()), strict=True)):
                per[i] = dict(zip(entry.keys(), views, strict=True))
        groups = [{**g, "params": list(range(len(self.params)))} for g in state["param_groups"]]
        return {"state": per, "param_groups": groups}

    def _split(self, value):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return [v.clone() for v in self.views(value)]
        return [value] * len(self.params)


def state_flat(state: dict, count: int) -> dict:
    """The reverse of FlatParams.state_per_param: an optimizer state dict over `count` separate parameters as the
    one an optimizer over their flat buffer loads."""
    per = state["state"]
    flat = {}
    if per:
        flat[0] = {
            k: torch.cat([per[i][k].reshape(-1) for i in range(count)]) if v.dim() > 0 else v for k, v in per[0].items()
        }
    return {"state": flat, "param_groups": [{**g, "params": [0]} for g in state["param_groups"]]}
