"""Speed of one IMP level: the framework's `fit_level` against a plain PyTorch loop and Lightning's ModelPruning.

Run from the repository root, on a quiet machine (nothing else busy; the full default run takes about 10-12 minutes
on 2 CPU cores):

    .venv/bin/python benchmarks/imp_speed.py [--steps 2000] [--repeats 3] [--workloads lenet,mnist1d] [--out PATH]
    .venv/bin/python benchmarks/imp_speed.py --steps 200 --repeats 1       # smoke test only: its numbers are noise
    .venv/bin/python benchmarks/imp_speed.py --show benchmarks/results/<file>.json    # re-print a saved table

torch keeps its default thread count unless --threads is given (the count is printed under the table). On a machine
with other jobs running, torch's threads wait on each other (on 2 busy cores a 200-step level took 30 s instead of
0.3 s), so compare only numbers from a quiet machine, or pass --threads 1 there.

Every variant trains the same network, optimizer, batch size and evaluation schedule for one level at about 80%
density, each (variant, repeat) in its own subprocess so peak memory is per variant and no variant warms up another:

    plain            (a) the baseline: a hand-written PyTorch loop over in-memory tensors, the mask re-applied with
                         masked_fill_ after every optimizer step, the same evaluations as (b), one pass each
    fit_level        (b) `lottery.imp.fit_level` built as the driver builds it (hydra compose -> OmegaConf.to_object ->
                         `prepare`), one level at a random level-1-like mask, logger=none, progress bar off
    fit_level+log    (b) the same with logger=csv and the rich progress bar on (rendered as for a terminal, into
                         /dev/null), so the cost of logging shows
    model_pruning    (c) Lightning's `ModelPruning("l1_unstructured", amount=0.2, use_lottery_ticket_hypothesis=True)`
                         on a minimal LightningModule over the same batches, pruning once when training starts

Workloads: `lenet` is LeNet-300-100 (`model=lenet_300_100 data=mnist`, batch 60, Adam 1.2e-3) on random MNIST-shaped
tensors (60,000 + 10,000 examples of 1x28x28, 10 classes, made here: `lottery.imp.datasets.load` is patched to return
them, nothing is downloaded); `mnist1d` is the default experiment (`model=mlp data=mnist1d`, batch 100, Adam 1e-3).
Evaluation and checkpoint intervals are the composed config's (train.eval_every, train.checkpoint_every,
train.checkpoint_seconds).

Each subprocess first runs a short warm-up level (the cold, first-in-process level), then levels of N and 2N steps.
Wall time per level is modelled as `start-up + steps * per-step`, solved from the N and 2N runs. Columns (medians over
--repeats):

    steps/s        1 / per-step time
    ms/step        per-step time: the slope between the N and 2N runs (evaluations and checkpoints amortised in it)
    x (a)          ms/step over the plain loop's ms/step, same workload
    x (a) net      the same with the measured evaluation and checkpoint time taken out of both: the bare loop's cost
    start-up s     the intercept: a level's time outside its steps (Trainer, module, hooks, the final evaluation), in
                   a process that already ran a level (how levels 1, 2, ... of a run behave)
    1st level s    the same for the first level in a fresh process: lazy initialisation on first use included
                   (e.g. what torch.optim sets up on its first step), module imports made before the level not
    eval ms (n)    mean time of one evaluation (every train.eval_every steps and at the end), measured around the
                   evaluation itself, and how many the 2N-step level made
    eval/(a)       eval ms over the plain loop's: one forward pass over the validation split plus accuracy and
                   cross-entropy (a bare forward pass is in the verdict line and the JSON, val_forward_ms)
    ckpt ms (n)    mean time of one resume-checkpoint save, and how many the 2N-step level wrote
    peak MB (libs) the subprocess's peak resident memory (ru_maxrss): libraries, data and training together; in
                   brackets the part the imported libraries alone take (each worker imports before loading data)
    prepare s      (b) only: compose + `prepare` (data loading included), once per run rather than per level

Targets from the issue: per-step cost of (b) within 1.10x of (a); level start-up under 1 s for LeNet-300-100;
evaluation no more than one forward pass over the validation split (judged as eval/(a) <= 1.10: the plain loop's
evaluation is exactly one forward pass plus the accuracy and loss every evaluation reports, which on a split as small
as MNIST-1D's 500 examples cost more than the pass itself). The verdicts are printed under the table, with a check that
(a) and (b) ended at the same validation loss (the plain loop copies the framework's initialisation, mask and data
order, so they train identically and the timings compare the same work).

Every number, per repeat and per run length, also goes to a JSON file (default benchmarks/results/<date>-<host>.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The pieces live in benchmarks/speed/ (this script's folder is on sys.path when it runs, as for its workers); none
# of them imports torch, Lightning or lottery at import time, so a worker's memory counts only what its variant uses.
from speed.table import report
from speed.timing import strict_json, summarise
from speed.workloads import DENSITY, VARIANTS, WARMUP_STEPS, WORKLOADS, hyperparameters

HERE = Path(__file__).resolve().parent


def run_worker(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One (workload, variant, repeat) in a fresh interpreter; returns its result or {"error": ...}."""
    with tempfile.TemporaryDirectory(prefix="imp_speed_") as tmp:
        result = Path(tmp) / "result.json"
        spec = {**spec, "result": str(result), "tmp": tmp}
        # Rich draws the progress bar only for a terminal: claim one, so (b)+log pays the drawing a user's terminal
        # gets, and send it to /dev/null so it does not garble this table.
        env = {**os.environ, "TTY_COMPATIBLE": "1", "WANDB_MODE": "disabled", "WANDB_SILENT": "true"}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
        try:
            proc = subprocess.run(
                cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if result.exists():
            return json.loads(result.read_text())
        tail = proc.stderr.strip().splitlines()[-3:]
        return {"error": f"worker exited with {proc.returncode}: " + " | ".join(tail)}


def parent(args: argparse.Namespace) -> int:
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workloads {unknown}; choose from {list(WORKLOADS)}")
    if args.steps < 2 * WARMUP_STEPS:
        raise SystemExit(f"--steps must be at least {2 * WARMUP_STEPS}")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "plain" not in variants or set(variants) - set(VARIANTS):
        raise SystemExit(f"--variants must include plain (the baseline) and come from {list(VARIANTS)}")
    plans = {w: {"overrides": WORKLOADS[w], "hp": hyperparameters(WORKLOADS[w])} for w in workloads}
    meta: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "steps": args.steps,
        "repeats": args.repeats,
        "warmup_steps": WARMUP_STEPS,
        "density": DENSITY,
        "threads_requested": args.threads,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "argv": sys.argv,
    }
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {w: {v: [] for v in variants} for w in workloads}
    started = time.perf_counter()
    # Repeats outermost and variants interleaved, so a slow spell on the machine hits every variant alike.
    for repeat in range(args.repeats):
        for w in workloads:
            for variant in variants:
                spec = {
                    "workload": w,
                    "variant": variant,
                    "steps": args.steps,
                    "repeat": repeat,
                    "threads": args.threads,
                    **plans[w],
                }
                t = time.perf_counter()
                result = run_worker(spec, timeout=args.timeout)
                raw[w][variant].append(result)
                status = result.get("error", "ok")
                print(
                    f"[{repeat + 1}/{args.repeats}] {w:8s} {variant:14s} {time.perf_counter() - t:6.1f} s  {status}",
                    flush=True,
                )
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["total_seconds"] = round(time.perf_counter() - started, 1)
    ok = [r for w in raw.values() for rs in w.values() for r in rs if "error" not in r]
    meta.update({k: ok[0][k] for k in ("torch", "lightning", "torch_threads", "torch_interop_threads")} if ok else {})
    meta.setdefault("torch_threads", "?")
    meta.setdefault("torch_interop_threads", "?")
    summary = {w: {v: summarise(raw[w][v], args.steps) for v in variants} for w in workloads}
    verdicts = report(summary, meta)
    out = Path(args.out) if args.out else HERE / "results" / f"{datetime.date.today()}-{socket.gethostname()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "workloads": plans, "summary": summary, "verdicts": verdicts, "raw": raw}
    out.write_text(json.dumps(strict_json(payload), indent=2, default=str) + "\n")
    print(f"wrote {out} ({meta['total_seconds']} s in all)")
    failed = [(w, v) for w in summary for v in summary[w] if v != "model_pruning" and "error" in summary[w][v]]
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="N: each variant trains levels of N and 2N steps")
    parser.add_argument("--repeats", type=int, default=3, help="subprocesses per variant; the table shows medians")
    parser.add_argument("--workloads", default="lenet,mnist1d", help=f"comma-separated, from {list(WORKLOADS)}")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {list(VARIANTS)}")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<date>-<hostname>.json)")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads in every worker (0: default)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before a worker is given up")
    parser.add_argument(
        "--show", default=None, metavar="JSON", help="print the table of an earlier run's JSON; no runs"
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        from speed.worker import worker  # only the worker needs the runners

        worker(json.loads(args.worker))
        return 0
    if args.show is not None:
        saved = json.loads(Path(args.show).read_text())
        report(saved["summary"], saved["meta"])
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
