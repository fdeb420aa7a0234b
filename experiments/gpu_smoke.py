"""GPU smoke test of the vision fast path: a short ResNet-20 IMP on CIFAR-10-shaped data generated on the fly.

Three levels (dense, then two of global 20% pruning with weights rewound to step steps/10) of a few hundred steps
each; SGD 0.1 with momentum, batch 128, crop+flip augmentation, the data on the GPU, bf16 autocast and channels-last.
Prints steps per second per level and the peak GPU memory, and checks that pruned weights stayed exactly zero.
Needs no dataset files and no network. On a GPU machine, after the README's setup (install a CUDA build of torch
first, then `pip install -e .`):

    .venv/bin/python experiments/gpu_smoke.py                    # one GPU; meant to take under 5 minutes on an H100
    .venv/bin/python experiments/gpu_smoke.py --compile          # also torch.compile (level 0 pays the compilation)
    .venv/bin/python experiments/gpu_smoke.py trainer.deterministic=false   # any further Hydra override
    .venv/bin/python experiments/gpu_smoke.py --cpu --steps 20   # logic check without a GPU (slow, small data)

Without a GPU (and without --cpu) it stops with exit code 2 and says so. Its GPU numbers have NOT been measured yet:
it was written on a machine without a GPU, where only the --cpu check ran (see experiments/README.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

GPU_SAMPLES = 60_000  # CIFAR-10's size: 50,000 train (5,000 of them for validation) + 10,000 test
CPU_SAMPLES = 2_400  # enough for the logic check; generating and evaluating 60,000 images on a CPU takes long


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU: a check of the logic, not of speed")
    parser.add_argument("--steps", type=int, help="optimizer steps per level (default 300; 20 with --cpu)")
    parser.add_argument("--levels", type=int, default=2, help="pruning levels after the dense level 0 (default 2)")
    parser.add_argument("--width", type=float, default=1.0, help="ResNet-20 width multiplier (default 1)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--samples", type=int, help=f"examples generated ({GPU_SAMPLES}; {CPU_SAMPLES} with --cpu)")
    parser.add_argument("--compile", action="store_true", help="trainer.compile=true")
    parser.add_argument("--root", help="output folder to keep (default: a temporary folder, removed at the end)")
    parser.add_argument("overrides", nargs="*", help="further Hydra overrides, e.g. trainer.deterministic=false")
    args = parser.parse_args(argv)
    args.steps = args.steps or (20 if args.cpu else 300)
    args.samples = args.samples or (CPU_SAMPLES if args.cpu else GPU_SAMPLES)
    if args.steps < 2 or args.levels < 0:
        parser.error(f"--steps={args.steps} must be at least 2 and --levels={args.levels} at least 0")
    return args


def overrides(args: argparse.Namespace, root: str) -> list[str]:
    train_examples = args.samples - args.samples // 6  # synthetic_cifar10 keeps one example in 6 for the test split
    val_size = max(1, min(5000, train_examples // 10))
    return [
        "model=resnet20",
        f"model.width={args.width}",
        "data=synthetic_cifar10",
        f"data.num_samples={args.samples}",
        f"data.val_size={val_size}",
        "data.augment=true",
        "optim=sgd",  # LR 0.1, momentum 0.9, weight decay 1e-4
        "rewind=weights",
        f"rewind.step={max(1, args.steps // 10)}it",
        f"train.duration={args.steps}it",
        f"train.batch_size={args.batch_size}",
        f"train.eval_every={args.steps}it",  # one evaluation, at the end of each level
        f"train.checkpoint_every={args.steps}it",  # no mid-level resume checkpoints: time the training itself
        "train.checkpoint_seconds=null",  # nor any by the clock
        "train.precision=bf16-mixed",
        f"trainer={'cpu' if args.cpu else 'gpu'}",
        "trainer.channels_last=true",
        f"trainer.compile={str(args.compile).lower()}",
        "trainer.progress_bar=false",
        "logger=none",
        f"levels={args.levels}",
        "name=gpu_smoke",
        f"root={root}",
        *args.overrides,
    ]


def pruned_weights_are_zero(level_dir: Path) -> bool:
    import torch

    mask = torch.load(level_dir / "mask.pt", weights_only=True)
    weights = torch.load(level_dir / "weights.pt", weights_only=True)
    return all(torch.count_nonzero(weights[name][~m]) == 0 for name, m in mask.items())


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print(
            f"gpu_smoke: error: torch {torch.__version__} sees no CUDA GPU (its CUDA build: {torch.version.cuda}). "
            "On a GPU machine install a CUDA build of torch before `pip install -e .` (see the README); "
            "without a GPU, `--cpu --steps 20` checks the logic.",
            file=sys.stderr,
        )
        return 2
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from lottery.cli import CONF_DIR, run_config
    from lottery.setup import experiment_hash

    root = args.root or tempfile.mkdtemp(prefix="gpu_smoke_")
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides(args, root))
        settings = OmegaConf.to_object(cfg)
        device = "CPU" if args.cpu else torch.cuda.get_device_name(0)
        on_off = {True: "on", False: "off"}
        print(
            f"gpu_smoke: {device}, torch {torch.__version__}, ResNet-20 width {args.width}, batch {args.batch_size}, "
            f"{args.steps} steps per level, {settings.train.precision}, channels_last, "
            f"compile {on_off[settings.trainer.compile]}, deterministic {on_off[settings.trainer.deterministic]}"
        )
        if not args.cpu:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        run_config(cfg)
        wall = time.perf_counter() - start
        seed_dir = Path(root) / settings.name / experiment_hash(settings)[0] / f"seed_{settings.seed}"
        rewind = max(1, args.steps // 10)
        print("level  density  steps  train s  steps/s  test acc")
        all_zero = True
        for level in range(args.levels + 1):
            level_dir = seed_dir / f"level_{level}"
            m = json.loads((level_dir / "metrics.json").read_text())
            trained = args.steps - (rewind if level else 0)  # later levels start from the rewind point
            print(
                f"{level:5d}  {m['density']:7.2%}  {trained:5d}  {m['train_seconds']:7.2f}  "
                f"{trained / m['train_seconds']:7.1f}  {m['test_acc']:8.2%}"
            )
            all_zero &= pruned_weights_are_zero(level_dir)
        print(
            "steps/s: steps trained / the fit's training-loop time (its final evaluation included; level 0 also pays "
            "cuDNN warm-up, the rewind checkpoint and, with --compile, compilation)"
        )
        if not args.cpu:
            gib = 2**30
            print(
                f"peak GPU memory: {torch.cuda.max_memory_allocated() / gib:.2f} GiB allocated "
                f"(torch.cuda.max_memory_allocated), {torch.cuda.max_memory_reserved() / gib:.2f} GiB reserved"
            )
        print(f"pruned weights exactly zero at every level: {'yes' if all_zero else 'NO'}")
        print(f"wall time of the run: {wall:.1f} s (data generation, start-up and every level)")
        return 0 if all_zero else 1
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
