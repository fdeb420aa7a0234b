"""How much does the choice of held-out queries move a pretrained model's dense few-shot accuracy? For each model,
task and split of the word list (data.data_seed), the dense accuracy on the preset's test prompts with its 95%
interval from a bootstrap over the held-out queries (lottery/core/intervals.py); each model is loaded once.

    python experiments/split_sweep.py --experiments smollm2_icl gemma3_icl --seeds 1234 1 2 3 4 \\
        --out experiments/results/llm/split_sweep.json

The full study (experiment=smollm2_icl / gemma3_icl) runs on two of these splits; this sweep shows the spread of the
dense accuracy that every removal is measured against, over more splits than the study can afford on a CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # conftest.compose_config: the Hydra composition the tests use

TASKS = ["antonyms", "capitals", "capitalise", "number_words", "next_item", "plural"]


def main() -> None:
    import torch
    from conftest import compose_config

    from lottery.cli import prepare_job
    from lottery.core.intervals import Resamples
    from lottery.core.seeds import derive_seed
    from lottery.structured.pretrained import use_all_cores
    from lottery.structured.probe import Probe, Prompts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="+", default=["smollm2_icl", "gemma3_icl"])
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1234, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows, root = [], tempfile.mkdtemp(prefix="split_sweep_")
    for experiment in args.experiments:
        network, started = None, time.perf_counter()
        for task in args.tasks:
            for seed in args.seeds:
                cfg = compose_config([f"experiment={experiment}", f"data.task={task}", f"data.data_seed={seed}"])
                cfg.root, cfg.logger.kind = root, "none"
                setup, _, _ = prepare_job(cfg)  # sets the trainer's thread count (1 on the CPU): take every core again
                threads = use_all_cores(torch.device("cpu"), None)
                network = network if network is not None else setup.pretrained()
                dm = setup.datamodule
                test = Prompts.of(dm.task, dm.x_test, dm.y_test, dm.task.test_queries)
                out = Probe(network, dm.task, torch.device("cpu"), batch_size=16).evaluate(test)
                # the study's own resamples (lottery/structured/grid.py Intervals: derive_seed(run seed 0, 131))
                ci = Resamples.of(test.groups(), 2000, seed=derive_seed(0, 131)).interval(out["hits"])
                rows.append(
                    {"experiment": experiment, "task": task, "data_seed": seed, "acc": out["acc"], "acc_ci": ci,
                     "held_out_queries": int(test.groups().unique().numel()), "test_prompts": len(test)}
                )  # fmt: skip
                print(f"{experiment} {task} split {seed}: {out['acc']:.1%} [{ci[0]:.0%}, {ci[1]:.0%}]", flush=True)
        print(f"{experiment}: {time.perf_counter() - started:.0f} s on {threads} threads", flush=True)
    summary = {}
    for experiment in args.experiments:
        for task in args.tasks:
            accs = [r["acc"] for r in rows if r["experiment"] == experiment and r["task"] == task]
            summary[f"{experiment}/{task}"] = {
                "mean": statistics.fmean(accs),
                "sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "min": min(accs),
                "max": max(accs),
            }
    print("| experiment/task | " + " | ".join(f"split {s}" for s in args.seeds) + " | mean ± sd | range |")
    print("|" + "---|" * (len(args.seeds) + 3))
    for name, s in summary.items():
        experiment, task = name.split("/")
        cells = [
            f"{100 * r['acc']:.0f} [{100 * r['acc_ci'][0]:.0f}, {100 * r['acc_ci'][1]:.0f}]"
            for r in rows
            if r["experiment"] == experiment and r["task"] == task
        ]
        spread = f"{100 * s['mean']:.0f} ± {100 * s['sd']:.0f}"
        print(f"| {name} | " + " | ".join(cells) + f" | {spread} | {100 * (s['max'] - s['min']):.0f} |")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
