"""The engine's GPU targets (issue "One training engine"): replica-steps per second of a stack against one solo run.

    .venv/bin/python benchmarks/gpu_stack.py                       # on a GPU machine: under 5 minutes
    .venv/bin/python benchmarks/gpu_stack.py --device cpu --lenet 4 --resnet 2 --steps 5 --repeats 1   # logic only

Two workloads, each as the engine trains them (lottery/training/stack.py, flat.py: replica-major rows through the
stacked layers, the summed per-replica losses, one foreach optimizer step over the flat buffer, the masks multiplied
in), with Lightning's loop left out of both sides:
  - LeNet-300-100 at batch 60, Adam, MNIST-shaped random data: a stack of --lenet (64) against a stack of one
    (the solo run); target: at least 30x the solo run's replica-steps per second;
  - ResNet-20 at batch 128, SGD with momentum, CIFAR-shaped random data, bf16 autocast and channels-last: a stack of
    --resnet (16) against a stack of one; target: at least 4x.
Also checked, for each workload: replica 0's loss and gradients after one step are the same bits in the stack as in
the stack of one (the engine's CPU guarantee; on a GPU, batched kernels may choose other algorithms by batch count,
and this says whether they did). torch's CPU threads are set to one, which also picks the stacked Linear's batched
kernel (baddbmm) as on the CPU. Times are medians of --repeats runs of --steps steps after --warmup steps, with the
device synchronised around each run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

from lottery.models import MLP, ResNet
from lottery.training.flat import FlatParams
from lottery.training.stack import Stack, to_channels_last


def make_stack(build, n: int, device: torch.device, channels_last: bool) -> Stack:
    nets = []
    for seed in range(n):
        torch.manual_seed(seed)
        nets.append(build())
    stack = Stack(nets)
    stack.network.to(device)
    if channels_last:
        to_channels_last(stack.network)
    return stack


def stepper(stack: Stack, n: int, batch: int, shape, optimizer, device, bf16: bool, channels_last: bool):
    """One engine step of the stack, and the tensors it trains on (fixed random batches: speed, not learning)."""
    flat = FlatParams(list(stack.network.parameters()))
    opt = optimizer([flat.flat])
    keep = (torch.rand_like(flat.flat) > 0.2).to(flat.flat.dtype)  # an 80%-density mask over every parameter
    # replica i's batch (rows i*B..(i+1)*B-1) drawn from seed i alone, so replica 0's is the same at every n
    gens = [torch.Generator().manual_seed(i) for i in range(n)]
    xs = torch.stack([torch.randn(batch, *shape, generator=g) for g in gens]).to(device)
    ys = torch.stack([torch.randint(0, 10, (batch,), generator=g) for g in gens]).to(device)
    rows = xs.reshape(n * batch, *shape)
    if channels_last and rows.dim() == 4:
        rows = rows.contiguous(memory_format=torch.channels_last)

    def losses() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = stack.forward(rows)
        return F.cross_entropy(logits.float(), ys.reshape(-1), reduction="none").view(n, -1).mean(1)

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        losses().sum().backward()
        opt.step()
        with torch.no_grad():
            flat.flat.mul_(keep)

    return step, losses


def timed(step, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - start) / steps


def same_bits(build, n: int, batch: int, shape, optimizer, device, bf16: bool, channels_last: bool) -> bool:
    """Replica 0's loss and gradient after one step: the stack of n against the stack of one."""
    out = []
    for size in (1, n):
        stack = make_stack(build, size, device, channels_last)
        _, losses = stepper(stack, size, batch, shape, optimizer, device, bf16, channels_last)
        loss = losses()
        loss.sum().backward()
        # the buffer is parameter-major (every replica's copy of a parameter together): replica 0's slice of each
        grad = torch.cat([p.grad[0].reshape(-1) for p in stack.network.parameters()])
        out.append((loss[0].detach().cpu(), grad.cpu()))
    return torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


def workload(name, build, n, batch, shape, optimizer, target, args, device, bf16=False, channels_last=False) -> bool:
    solo_step, stack_step = (
        stepper(make_stack(build, size, device, channels_last), size, batch, shape, optimizer, device, bf16, cl)[0]
        for size, cl in ((1, channels_last), (n, channels_last))
    )
    solo, stacked = [], []
    for _ in range(args.repeats):  # interleaved, so drift of the machine hits both alike
        solo.append(timed(solo_step, args.steps, args.warmup, device))
        stacked.append(timed(stack_step, args.steps, args.warmup, device))
    a, s = statistics.median(solo), statistics.median(stacked)
    ratio = (n / s) / (1 / a)
    bits = same_bits(build, n, batch, shape, optimizer, device, bf16, channels_last)
    print(
        f"{name}: solo {1 / a:.1f} steps/s ({a * 1e3:.2f} ms); stack of {n} {n / s:.1f} replica-steps/s "
        f"({s * 1e3:.2f} ms per step) = {ratio:.1f}x the solo run (target >= {target}x): "
        f"{'met' if ratio >= target else 'MISSED'}; replica 0 same bits alone and in the stack: {bits}",
        flush=True,
    )
    return ratio >= target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--lenet", type=int, default=64, help="replicas of LeNet-300-100")
    parser.add_argument("--resnet", type=int, default=16, help="replicas of ResNet-20")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)
    print(f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}; torch {torch.__version__}")
    adam = lambda params: torch.optim.Adam(params, lr=1.2e-3, foreach=True)  # noqa: E731
    sgd = lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4, foreach=True)  # noqa: E731
    lenet = lambda: MLP((1, 28, 28), 10, [300, 100])  # noqa: E731
    resnet = lambda: ResNet([3, 32, 32], 10, depth=20)  # noqa: E731
    workload("LeNet-300-100, batch 60, Adam", lenet, args.lenet, 60, (1, 28, 28), adam, 30, args, device)
    on_gpu = device.type == "cuda"
    label = "ResNet-20, batch 128, SGD" + (", bf16, channels-last" if on_gpu else " (fp32 on the CPU)")
    workload(label, resnet, args.resnet, 128, (3, 32, 32), sgd, 4, args, device, bf16=on_gpu, channels_last=on_gpu)


if __name__ == "__main__":
    main()
