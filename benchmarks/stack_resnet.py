"""Per replica-step cost of a stack of ResNet-20s against one plain ResNet-20 training step (synthetic CIFAR shapes).

    .venv/bin/python benchmarks/stack_resnet.py [--replicas 4] [--batch 64] [--steps 20] [--repeats 3] [--threads 1]

Both sides run the same arithmetic per replica: (a) a plain PyTorch step of one `lottery.models.ResNet` (depth 20,
SGD with momentum 0.9 and weight decay, cross-entropy on a random batch of 3x32x32 images); (b) one step of a stack of
N replicas (lottery/training/stack.py) as the engine takes it: replica-major rows through the stacked layers, the
summed per-replica losses, one foreach SGD step over the stack's flat buffer (lottery/training/flat.py). Lightning's
loop is not in either, so the ratio is the stack's own cost: (b) per step / N over (a) per step. The issue's target
for a stack of 4 on the CPU: at most 1.0x. Medians over --repeats of --steps steps each, after two warm-up steps.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

from lottery.models import ResNet
from lottery.training.flat import FlatParams
from lottery.training.stack import Stack


def timed(step, steps: int) -> float:
    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n, b = args.replicas, args.batch

    def resnet(seed: int) -> ResNet:
        torch.manual_seed(seed)
        return ResNet([3, 32, 32], 10, depth=20)

    plain = resnet(0)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4, foreach=True)
    x1, y1 = torch.randn(b, 3, 32, 32), torch.randint(0, 10, (b,))

    def plain_step() -> None:
        plain_opt.zero_grad()
        F.cross_entropy(plain(x1), y1).backward()
        plain_opt.step()

    stack = Stack([resnet(s) for s in range(n)])
    flat = FlatParams(list(stack.network.parameters()))
    stack_opt = torch.optim.SGD([flat.flat], lr=0.05, momentum=0.9, weight_decay=1e-4, foreach=True)
    xs, ys = torch.randn(n * b, 3, 32, 32), torch.randint(0, 10, (n * b,))

    def stack_step() -> None:
        stack_opt.zero_grad(set_to_none=False)
        losses = F.cross_entropy(stack.forward(xs), ys, reduction="none").view(n, -1).mean(1)
        losses.sum().backward()
        stack_opt.step()

    plain_s, stack_s = [], []
    for _ in range(args.repeats):  # interleaved, so drift of the machine hits both alike
        plain_s.append(timed(plain_step, args.steps))
        stack_s.append(timed(stack_step, args.steps))
    a, s = statistics.median(plain_s), statistics.median(stack_s)
    print(f"threads {args.threads}, batch {b}, {args.steps} steps x {args.repeats} repeats (medians)")
    print(f"(a) plain ResNet-20 step: {a * 1e3:.1f} ms")
    print(f"(b) stack of {n}: {s * 1e3:.1f} ms per step = {s / n * 1e3:.1f} ms per replica-step")
    verdict = "met" if s / n / a <= 1.0 else "MISSED"
    print(f"per replica-step / plain step = {s / n / a:.2f}x (target <= 1.0x): {verdict}")


if __name__ == "__main__":
    main()
