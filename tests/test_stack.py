"""Stacked replicas (lottery/training/stack.py): a replica computes the same bits, outputs, gradients and BatchNorm
running statistics, in a stack of 1, 3 and 8, and a stack of one computes what the plain network does."""

from __future__ import annotations

import copy

import pytest
import torch

from lottery.models import MLP, VGG, ConvNet, ResNet, Transformer
from lottery.training.stack import EXPLICIT, SINGLE, VMAP, Stack, kind_of

MODELS = {
    "mlp": (lambda: MLP([40], 10, [100, 100]), (24, 40)),
    "lenet_300_100": (lambda: MLP([1, 28, 28], 10, [300, 100]), (12, 1, 28, 28)),
    "conv": (lambda: ConvNet([3, 16, 16], 10, [8, 16], [32]), (10, 3, 16, 16)),
    "resnet20": (lambda: ResNet([3, 16, 16], 10, depth=20, width=0.5), (8, 3, 16, 16)),
    "vgg11": (lambda: VGG([3, 32, 32], 10, depth=11, width=0.125), (6, 3, 32, 32)),
    "transformer": (lambda: Transformer([12], 20, d_model=16, n_layers=1, n_heads=2, d_mlp=32), (6, 12)),
}


def replicas(make, n):
    nets = []
    for seed in range(n):
        torch.manual_seed(seed)
        nets.append(make())
    return nets


def replica_zero(make, shape, n, train=True):
    """Replica 0's outputs, gradients and buffers after one forward/backward in a stack of n (the other replicas get
    other inputs)."""
    stack = Stack(replicas(make, n))
    stack.network.train(train)
    g = torch.Generator().manual_seed(7)
    if make is MODELS["transformer"][0]:
        x = torch.randint(0, 20, (n, *shape), generator=g)
    else:
        x = torch.randn(n, *shape, generator=g)
    out = stack.forward(x.reshape(-1, *shape[1:]))
    (out.float() ** 2).sum().backward()
    grads = {k: p.grad[0].clone() for k, p in stack.network.named_parameters()}
    buffers = {k: b[0].clone() for k, b in stack.network.named_buffers()}
    return out.view(n, -1, *out.shape[1:])[0].detach(), grads, buffers, stack.kind


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    """Both thread counts: batched products of small matrices (10 rows) summed differently at N = 1 and N = 3 with
    two threads only, which is why every stacked layer calls the solo kernel per replica."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_replica_computes_the_same_bits_in_stacks_of_1_3_and_8(name, threads):
    make, shape = MODELS[name]
    one = replica_zero(make, shape, 1)
    assert one[3] == (VMAP if name == "transformer" else EXPLICIT)
    for n in (3, 8):
        out, grads, buffers, _ = replica_zero(make, shape, n)
        assert torch.equal(out, one[0]), (name, n)
        assert grads.keys() == one[1].keys() and all(torch.equal(grads[k], one[1][k]) for k in grads), (name, n)
        assert all(torch.equal(buffers[k], one[2][k]) for k in buffers), (name, n)
    if name == "resnet20":  # the running statistics moved, per replica
        assert not torch.equal(one[2]["bn.running_mean"], torch.zeros_like(one[2]["bn.running_mean"]))


@pytest.mark.parametrize("name", ["mlp", "conv", "resnet20"])
def test_a_stack_of_one_computes_what_the_plain_network_does(name, threads):
    """With several threads every stacked layer is the plain layer's own call on the replica's rows: the same bits.
    On one thread a stacked Linear is one `baddbmm` (N-independent there, and one call for the whole stack), which
    sums a row in another order than `F.linear`: equal to float rounding, and no more (nothing reads the plain
    network's outputs beside the stack's: a level's every evaluation goes through the stack, evaluate_stack)."""
    make, shape = MODELS[name]
    (plain,) = replicas(make, 1)
    stack = Stack([copy.deepcopy(plain)])
    x = torch.randn(*shape)
    if threads > 1:
        assert torch.equal(stack.forward(x), plain(x))
    else:
        torch.testing.assert_close(stack.forward(x), plain(x), rtol=0, atol=1e-6)
    # the names are the plain network's, with a leading replica dimension
    assert {k: v.shape[1:] for k, v in stack.network.state_dict().items()} == {
        k: v.shape for k, v in plain.state_dict().items()
    }


def test_eval_mode_uses_each_replicas_own_running_statistics():
    make, shape = MODELS["resnet20"]
    nets = replicas(make, 3)
    for i, net in enumerate(nets):
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(0.1 * i)
                m.running_var.fill_(1.0 + i)
    alone = [Stack([copy.deepcopy(n)]) for n in nets]
    stack = Stack(nets)
    stack.network.eval()
    x = torch.randn(3, *shape)
    out = stack.forward(x.reshape(-1, *shape[1:])).view(3, shape[0], -1)
    for i, s in enumerate(alone):
        s.network.eval()
        assert torch.equal(out[i], s.forward(x[i])), i


def test_kinds_follow_the_model_never_the_size():
    assert kind_of(MLP([4], 2, [3])) == EXPLICIT
    assert kind_of(ResNet([3, 8, 8], 10, depth=8, width=0.25)) == EXPLICIT
    assert kind_of(Transformer([6], 10, d_model=8, n_layers=1, n_heads=2, d_mlp=8)) == VMAP
    assert kind_of(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.2))) == SINGLE
    assert kind_of(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))) == SINGLE


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda params: torch.optim.Adam(params, lr=1e-2, weight_decay=0.01, foreach=True),
        lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4, foreach=True),
    ],
    ids=["adam", "sgd"],
)
def test_a_flat_buffer_trains_exactly_as_separate_parameters(optimizer):
    """lottery/training/flat.py: the same updates, bit for bit, gradients accumulated in the buffer, and an optimizer
    state that converts to the per-parameter form and back."""
    from lottery.training.flat import FlatParams, state_flat

    make, shape = MODELS["resnet20"]
    (net,) = replicas(make, 1)
    separate, flat = Stack([copy.deepcopy(net)]), Stack([copy.deepcopy(net)])
    params = list(separate.network.parameters())
    buffer = FlatParams(list(flat.network.parameters()))
    opt_a, opt_b = optimizer(params), optimizer([buffer.flat])
    for _ in range(4):
        x, y = torch.randn(*shape), torch.randint(0, 10, (shape[0],))
        opt_a.zero_grad()
        torch.nn.functional.cross_entropy(separate.forward(x), y).backward()
        opt_a.step()
        opt_b.zero_grad(set_to_none=False)
        torch.nn.functional.cross_entropy(flat.forward(x), y).backward()
        opt_b.step()
        assert buffer.attached()
    for a, b in zip(params, flat.network.parameters(), strict=True):
        assert torch.equal(a, b)
    per = buffer.state_per_param(opt_b.state_dict())
    expected = opt_a.state_dict()
    assert per["param_groups"] == expected["param_groups"]
    for i, entry in expected["state"].items():
        assert all(torch.equal(torch.as_tensor(per["state"][i][k]), torch.as_tensor(v)) for k, v in entry.items())
    back = state_flat(per, len(params))
    assert all(
        torch.equal(torch.as_tensor(back["state"][0][k]), torch.as_tensor(v))
        for k, v in opt_b.state_dict()["state"][0].items()
    )
