"""The subprocess worker: one (workload, variant, repeat) in a fresh interpreter, started by imp_speed.py --worker.

It imports the variant's libraries, then trains a warm-up level and levels of N and 2N steps, and writes what it
measured (or the error) to the JSON file the parent named in the spec.
"""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path
from typing import Any

from .cohort import CohortRunner
from .framework import FrameworkRunner, import_stack
from .model_pruning import ModelPruningRunner
from .plain import PlainRunner
from .workloads import WARMUP_STEPS


def worker(spec: dict[str, Any]) -> None:
    import warnings

    import torch

    warnings.filterwarnings("ignore")  # Lightning's advice (workers, logging intervals) is noise here
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    os.chdir(spec["tmp"])  # anything a library writes to the working directory lands in the temporary folder
    out: dict[str, Any] = {"workload": spec["workload"], "variant": spec["variant"], "repeat": spec["repeat"]}
    try:
        from importlib.metadata import version

        # Read the version without importing Lightning: the plain loop's peak memory must not include it.
        out.update(torch=torch.__version__, lightning=version("lightning"))
        variant = spec["variant"]
        import_stack(variant)
        # Libraries first, data second in every variant, so peak memory compares like with like; this is the part
        # of the peak that the libraries alone take.
        out["rss_after_imports_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        runner: PlainRunner | FrameworkRunner | ModelPruningRunner | CohortRunner
        if variant == "plain":
            runner = PlainRunner(spec)
        elif variant in ("fit_level", "fit_level+log"):
            runner = FrameworkRunner(spec, logged=variant == "fit_level+log")
        elif variant == "cohort":
            runner = CohortRunner(spec)
        else:
            runner = ModelPruningRunner(spec)
        n = spec["steps"]
        out["warmup"] = runner.run(WARMUP_STEPS)
        # Alternate the order of the two lengths between repeats, so neither always runs in a warmer process.
        lengths = (n, 2 * n) if spec["repeat"] % 2 == 0 else (2 * n, n)
        out["runs"] = {str(k): runner.run(k) for k in lengths}
        if isinstance(runner, PlainRunner):
            out.update(runner.extra())
    except Exception as err:  # reported in the table (as n/a for ModelPruning) rather than crashing the benchmark
        out["error"] = f"{type(err).__name__}: {err}".replace("\n", " ")[:300]
    out["torch_threads"] = torch.get_num_threads()
    out["torch_interop_threads"] = torch.get_num_interop_threads()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    Path(spec["result"]).write_text(json.dumps(out, default=str))
