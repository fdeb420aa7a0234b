"""A stack of N >= 1 replicas of one network: the one shape every fit trains, a solo run being N = 1.

Replicas share the architecture and differ in their weights (seed, mask, start). Every parameter and buffer gets a
leading replica dimension and keeps the solo network's name, so a stack's state dict is its replicas' state dicts
stacked, and replica i's is a slice. Activations travel replica-major as (N * B, ...): replica i owns rows
i*B ... (i+1)*B - 1, so the model's own forward (flatten, relu, pooling, residual adds, means over a feature map),
which treats every example alike, runs unchanged, and only layers with weights need a stacked form.

Three kinds, chosen by the model and never by N, so a replica computes the same bits at every N:

    explicit  every parameter and buffer lives in a Linear, Conv1d/2d or BatchNorm1d/2d: these become stacked layers
              whose weights carry the replica dimension. Convolutions and BatchNorm call the solo kernel once per
              replica on its own rows (running statistics per replica); a Linear is one `baddbmm` on one thread
              and a call per replica on more (see StackedLinear). Batched kernels were kept only where measured
              N-independent: one grouped convolution summed a replica's outputs differently at N = 8 than at N = 1
              even on one thread, a `baddbmm` only with several threads. So a replica's outputs, gradients and
              statistics are bit-identical at every N (tests/test_stack.py, on one and two threads). Beyond the
              layers a stack saves one Lightning step per chunk, one optimizer call over a flat buffer, one mask
              multiply, one loss and one data gather for all replicas.
    vmap      the rest of our own models (the Transformer uses its position table and a tied embedding directly in
              its forward): `vmap(functional_call)` over the stacked parameters, PyTorch's ensembling recipe.
    single    models that neither form can run (Hugging Face models; active dropout, whose draws would depend on N):
              the plain network, N = 1 only; a group of them trains one by one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F

EXPLICIT, VMAP, SINGLE = "explicit", "vmap", "single"
STACKABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)
# Our own models whose forward reads parameters outside stackable layers; vmap keeps them per replica.
VMAPPABLE = ("Transformer",)


def kind_of(network: nn.Module) -> str:
    """Which stack form runs this network (see the module docstring)."""
    dropout = any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in network.modules())
    if dropout:
        return SINGLE
    owned = set()
    for module in network.modules():
        if isinstance(module, STACKABLE):
            owned.update(id(t) for t in (*module.parameters(recurse=False), *module.buffers(recurse=False)))
    tensors = [*network.parameters(), *network.buffers()]
    if all(id(t) in owned for t in tensors) and all(_plain_layer(m) for m in network.modules()):
        return EXPLICIT
    batchnorm = any(isinstance(m, nn.modules.batchnorm._NormBase) for m in network.modules())
    if type(network).__name__ in VMAPPABLE and not batchnorm and not list(network.buffers()):
        return VMAP
    return SINGLE


def _plain_layer(module: nn.Module) -> bool:
    """A stackable layer in a form the stacked layers reproduce (zero padding; BatchNorm with a fixed momentum)."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return module.padding_mode == "zeros" and isinstance(module.padding, tuple)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.momentum is not None and module.track_running_stats and module.affine
    return True


def _stacked(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.detach() for t in tensors]).clone()


class StackedLinear(nn.Module):
    """Linear of N replicas. On one thread (trainer.threads=1, the CPU default) one `baddbmm` over the stacked (N, out,
    in) weights: measured here, a replica's outputs and gradients from it are the same bits at N = 1, 3 and 8 for
    every shape tried. With more threads, each replica's rows through its own weight, the solo call: there a batched
    product of small matrices (10 rows of 256 features) summed replica 0's outputs differently at N = 3 and 8 than
    at N = 1 (one matrix runs multi-threaded, a batch of them one thread each). The choice depends on the thread
    count, never on N, so a replica's bits never depend on its stack. On a GPU always the batched product: a call
    per replica would leave the device idle, which is what stacking is for there; whether cuBLAS then gives a
    replica the same bits at every N has not been measured (benchmarks/gpu_stack.py reports it)."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(_stacked([m.weight for m in layers]))  # (N, out, in)
        self.bias = nn.Parameter(_stacked([m.bias for m in layers])) if layers[0].bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.weight.shape[0]
        if x.is_cuda or torch.get_num_threads() == 1:
            rows = x.reshape(n, -1, x.shape[-1])
            w = self.weight.transpose(1, 2)
            out = torch.bmm(rows, w) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(1), rows, w)
            return out.reshape(*x.shape[:-1], out.shape[-1])
        rows = x.view(n, -1, *x.shape[1:])
        outs = [F.linear(rows[i], self.weight[i], None if self.bias is None else self.bias[i]) for i in range(n)]
        return outs[0] if n == 1 else torch.cat(outs)


class StackedConv(nn.Module):
    """Conv1d/Conv2d of N replicas, one convolution per replica on its own rows. Not one grouped convolution with N
    groups: measured here, the CPU kernels chose other algorithms for the grouped shape, and a replica's outputs at
    N = 8 differed in the last bits from N = 1 (the per-replica call is the solo call, so it cannot differ)."""

    def __init__(self, layers: Sequence[nn.Conv1d | nn.Conv2d]) -> None:
        super().__init__()
        first = layers[0]
        self.weight = nn.Parameter(_stacked([m.weight for m in layers]))  # (N, out, in / groups, *kernel)
        self.bias = nn.Parameter(_stacked([m.bias for m in layers])) if first.bias is not None else None
        self.conv = F.conv1d if isinstance(first, nn.Conv1d) else F.conv2d
        self.stride, self.padding, self.dilation, self.groups = (
            first.stride,
            first.padding,
            first.dilation,
            first.groups,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.weight.shape[0]
        rows = x.view(n, -1, *x.shape[1:])
        outs = [
            self.conv(
                rows[i],
                self.weight[i],
                None if self.bias is None else self.bias[i],
                self.stride,
                self.padding,
                self.dilation,
                self.groups,
            )
            for i in range(n)
        ]
        return outs[0] if n == 1 else torch.cat(outs)


class StackedBatchNorm(nn.Module):
    """BatchNorm1d/2d of N replicas, one call per replica on its own rows: each replica's batch statistics come from
    its own examples, and its running statistics (rows of (N, C) buffers, updated in place through the row views) are
    its own."""

    def __init__(self, layers: Sequence[nn.modules.batchnorm._BatchNorm]) -> None:
        super().__init__()
        first = layers[0]
        self.weight = nn.Parameter(_stacked([m.weight for m in layers]))
        self.bias = nn.Parameter(_stacked([m.bias for m in layers]))
        self.register_buffer("running_mean", _stacked([m.running_mean for m in layers]))
        self.register_buffer("running_var", _stacked([m.running_var for m in layers]))
        self.register_buffer("num_batches_tracked", _stacked([m.num_batches_tracked for m in layers]))
        self.momentum, self.eps = first.momentum, first.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.weight.shape[0]
        if self.training:
            self.num_batches_tracked.add_(1)
        rows = x.view(n, -1, *x.shape[1:])
        outs = [
            F.batch_norm(
                rows[i],
                self.running_mean[i],
                self.running_var[i],
                self.weight[i],
                self.bias[i],
                self.training,
                self.momentum,
                self.eps,
            )
            for i in range(n)
        ]
        return outs[0] if n == 1 else torch.cat(outs)


def _stacked_layer(layers: Sequence[nn.Module]) -> nn.Module:
    first = layers[0]
    if isinstance(first, nn.Linear):
        return StackedLinear(layers)
    if isinstance(first, (nn.Conv1d, nn.Conv2d)):
        return StackedConv(layers)
    return StackedBatchNorm(layers)


class Stack:
    """How N replicas run: `network` holds every parameter and buffer with a leading replica dimension under the
    solo names (for `single`, the plain network itself), and `forward` maps replica-major inputs (N * B, ...) to
    replica-major outputs."""

    def __init__(self, networks: Sequence[nn.Module], kind: str | None = None) -> None:
        self.size = len(networks)
        self.kind = kind or kind_of(networks[0])
        if self.kind == SINGLE and self.size > 1:
            raise ValueError(f"a {type(networks[0]).__name__} cannot be stacked; train its {self.size} replicas apart")
        self._template: tuple[nn.Module, ...] = ()
        self._compiled, self._vmapped = False, None
        if self.kind == EXPLICIT:
            self.network = _explicit(networks)
        elif self.kind == VMAP:
            self._template = (copy.deepcopy(networks[0]).to("meta"),)  # a tuple: kept out of any module's children
            stacked, _ = stack_module_state(list(networks))
            self.network = copy.deepcopy(networks[0])
            for name, tensor in stacked.items():
                owner, _, leaf = name.rpartition(".")
                setattr(self.network.get_submodule(owner), leaf, nn.Parameter(tensor.detach().clone()))
        else:
            self.network = networks[0]

    @property
    def stacked(self) -> bool:
        """Whether the network's tensors carry the replica dimension (not for `single`)."""
        return self.kind != SINGLE

    def compile(self) -> None:
        """trainer.compile: the network in place (nn.Module.compile keeps plain state-dict names); for a vmap stack,
        whose forward calls the replicas' template functionally and never the network's own forward, the vmapped
        forward itself (dynamo captures vmap over functional_call as one graph)."""
        if self.kind == VMAP:
            self._compiled = True
        else:
            self.network.compile()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind != VMAP:
            return self.network(x)
        if self._compiled:
            if self._vmapped is None:  # built on first use, so a stack pickled to DDP workers carries no compiled code
                # Static shapes: with dynamic ones (dynamo's default once a second batch size appears, as evaluation's
                # chunks do) torch 2.13's fake tensors fail inside vmap ("Cannot call sizes() on tensor with symbolic
                # sizes"); a few shapes (the batch, the evaluation chunks) compile once each instead.
                self._vmapped = torch.compile(self._vmap_forward, dynamic=False)
            return self._vmapped(x)
        return self._vmap_forward(x)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_vmapped": None}

    def _vmap_forward(self, x: torch.Tensor) -> torch.Tensor:
        params = dict(self.network.named_parameters())
        xs = x.view(self.size, -1, *x.shape[1:])

        def one(p: Mapping[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
            return functional_call(self._template[0], dict(p), (xi,))

        out = vmap(one)(params, xs)
        return out.reshape(-1, *out.shape[2:])

    def replica_state(self, state: Mapping[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
        """Replica i's solo tensors out of the stack's (a parameter, buffer or optimizer-state dict)."""
        if not self.stacked:
            return {k: v.detach().clone() for k, v in state.items()}
        return {k: v.detach()[i].clone() for k, v in state.items()}

    def params(self) -> dict[str, torch.Tensor]:
        """Every parameter with the replica dimension first (views for `single`, so in-place updates land)."""
        named = dict(self.network.named_parameters())
        return named if self.stacked else {k: v.unsqueeze(0) for k, v in named.items()}


def _explicit(networks: Sequence[nn.Module]) -> nn.Module:
    """A copy of networks[0] whose stackable layers hold all replicas (same names, a leading replica dimension)."""
    stacked = copy.deepcopy(networks[0])
    modules = [dict(n.named_modules()) for n in networks]
    for name, module in list(stacked.named_modules()):
        if isinstance(module, STACKABLE):
            owner, _, leaf = name.rpartition(".")
            layer = _stacked_layer([m[name] for m in modules])
            if name == "":
                return layer
            setattr(stacked.get_submodule(owner), leaf, layer)
    return stacked


def to_channels_last(network: nn.Module) -> nn.Module:
    """trainer.channels_last on a stack: each replica's 2-d convolution weight in NHWC layout (a stacked (N, O, I, kh,
    kw) weight stored as (N, O, kh, kw, I)), and plain 4-d weights (a `single` stack) as Module.to does it."""
    for module in network.modules():
        if isinstance(module, StackedConv) and module.weight.dim() == 5:
            module.weight.data = module.weight.data.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    for p in network.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
    return network


def repeat_rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """One split for every replica: (B, ...) -> (N * B, ...) replica-major (a view-free copy only when N > 1)."""
    return x if n == 1 else x.unsqueeze(0).expand(n, *x.shape).reshape(n * x.shape[0], *x.shape[1:])
