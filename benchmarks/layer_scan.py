"""The single-layer scan of a pretrained model (each decoder layer removed alone, on the study's test prompts) with the
kept prefix (Probe.layer_scan: one dense pass per batch keeps every layer's input, and the pass without layer i
starts at layer i) against one full forward pass per layer (Probe.evaluate with that layer skipped), in one process,
one after the other, on the same prompts and batches. Target (issue 32): the scan in at most 0.6x the time of the
full passes, with results identical to them.

    .venv/bin/python benchmarks/layer_scan.py [--preset smollm2_135m] [--task capitals] [--test 200] [--repeats 2]
        [--out benchmarks/results/<date>-layer-scan-<preset>.json]

Each method runs `repeats` times, alternating (scan, passes, scan, passes, ...), so a slow moment of the machine falls
on both; the ratio is of the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="smollm2_135m", help="a model preset fetched by lottery-models")
    parser.add_argument("--task", default="capitals")
    parser.add_argument("--test", type=int, default=200, help="test prompts")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", help="write the result here as JSON")
    args = parser.parse_args()

    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import compose_config

    from lottery.cli import prepare_job
    from lottery.structured.budget import batch_size_for
    from lottery.structured.pretrained import use_all_cores
    from lottery.structured.probe import Probe, Prompts

    overrides = [
        f"model={args.preset}",
        "data=icl_text",
        f"data.task={args.task}",
        f"data.num_test={args.test}",
        "pruning.strategy=structured",
        "structured.procedure=no_retrain",
    ]
    setup, _, _ = prepare_job(compose_config(overrides))
    device = torch.device("cpu")
    threads = use_all_cores(device, None)
    network = setup.pretrained().to(device)
    dm, cfg = setup.datamodule, setup.cfg
    test = Prompts.of(dm.task, dm.x_test, dm.y_test, getattr(dm.task, "test_queries", None))
    batch = batch_size_for(network, test.x.shape[1], cfg.structured.memory_gb, True)
    probe = Probe(network, dm.task, device, batch)
    n = network.shape.n_layers

    def passes():
        return {i: probe.evaluate(test, {"layers": torch.arange(n) == i}) for i in range(n)}

    times: dict[str, list[float]] = {"scan": [], "passes": []}
    results = {}
    for _ in range(args.repeats):
        for name, fn in (("scan", lambda: probe.layer_scan(test)), ("passes", passes)):
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    identical = all(results["scan"][i] == results["passes"][i] for i in range(n))
    scan, full = statistics.median(times["scan"]), statistics.median(times["passes"])
    out = {
        "preset": args.preset,
        "task": args.task,
        "test_prompts": len(test),
        "batch_size": batch,
        "threads": threads,
        "layers": n,
        "scan_seconds": times["scan"],
        "full_passes_seconds": times["passes"],
        "ratio": scan / full,
        "target_ratio": 0.6,
        "identical": identical,  # every layer's acc, loss, hits, tokens and by_context equal, bit for bit
        "ideal_ratio": (n + n * (n - 1) / 2) / (n * (n - 1)),  # layer evaluations only (embedding and head aside)
        "command": "benchmarks/layer_scan.py " + " ".join(sys.argv[1:]),
        "torch": torch.__version__,
    }
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
