"""Memory and wall time of scoring a pretrained model as loaded (model=hf, structured.procedure=no_retrain), against
the issue's targets: peak memory of scoring plus the grid at most 2.5 GB with 200 test prompts, and the grid's wall
time at most 1.3x its number of evaluations times one batched forward pass over the test prompts.

    .venv/bin/python benchmarks/hf_grid.py [--model-path ../shared/models/smollm2-135m-instruct-gguf] \\
        [--gguf SmolLM2-135M-Instruct.Q4_1.gguf] [--task capitals] [--test 200] [-- <extra lottery overrides>]
    .venv/bin/python benchmarks/hf_grid.py --preset gemma3_270m --no-full-logits   # a fetched model's preset

`--no-full-logits` leaves the first part out and states the size its logits would have (Gemma 3's 262k-token
vocabulary makes them about 10 GB for 200 prompts: the point of scoring at the answer positions only).

Each part runs in a fresh process, one after the other (never side by side: two torch processes on 2 cores slow each
other), so its peak resident memory (ru_maxrss) is its own:

    full logits   one forward pass over every test prompt keeping every position's logits (what the evaluation did
                  before: LevelModule.evaluate's path, all prompts in one chunk); memory only
    study         the whole study as `lottery` runs it: load, dense evaluation, scores, every grid point, layer
                  removals, census; its wall time split into the grid's evaluations and the rest

The forward pass the grid is held to is the dense evaluation's own time (one batched pass over the test prompts).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PART = r"""
import json, resource, sys, time, torch
sys.path.insert(0, {tests!r})
from conftest import compose_config
from lottery.cli import prepare_job
overrides = {overrides!r}
start = time.perf_counter()
setup, _, _ = prepare_job(compose_config(overrides))
loaded = time.perf_counter() - start
out = {{"part": {part!r}, "load_seconds": loaded}}
dm = setup.datamodule
if {part!r} == "full logits":
    from lottery.structured.pretrained import use_all_cores
    use_all_cores(torch.device("cpu"), None)
    net = setup.pretrained().eval()
    t = time.perf_counter()
    with torch.no_grad():
        logits = net(dm.x_test)
    out |= {{"forward_seconds": time.perf_counter() - t, "logits_gb": logits.numel() * 4 / 2**30}}
else:
    from lottery.structured import grid
    from lottery.structured.pretrained import measure, settings_of
    times = []
    evaluate = grid.Probe.evaluate
    def timed(self, prompts, removed=None):
        t = time.perf_counter()
        r = evaluate(self, prompts, removed)
        times.append((len(prompts), time.perf_counter() - t))
        return r
    grid.Probe.evaluate = timed
    t = time.perf_counter()
    results, run = measure(setup, settings_of(setup))
    n_test = len(dm.x_test)
    test_times = [s for n, s in times if n == n_test]
    out |= {{
        "study_seconds": time.perf_counter() - t,
        "evaluations": len(test_times),
        "evaluation_seconds": sum(test_times),
        "dense_forward_seconds": test_times[0],
        "scoring_prompt_evaluations": len(times) - len(test_times),
        "batch_size": run["batch_size"],
        "threads": run["threads"],
        "dense_acc": results["dense"]["acc"],
        "full_logits_gb": dm.x_test.numel() * dm.num_classes * 4 / 2**30,  # every position's float32 logits
    }}
out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print("RESULT " + json.dumps(out))
"""


def run_part(part: str, overrides: list[str]) -> dict:
    code = PART.format(tests=str(ROOT / "tests"), overrides=overrides, part=part)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{part} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default=str(ROOT.parent / "shared/models/smollm2-135m-instruct-gguf"))
    parser.add_argument("--gguf", default="SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--task", default="capitals")
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--preset", help="a fetched model's preset (model=NAME) instead of --model-path/--gguf")
    parser.add_argument("--no-full-logits", action="store_true", help="skip the part that keeps every logit")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("extra", nargs="*", help="more lottery overrides")
    args = parser.parse_args()
    model = [f"model={args.preset}"] if args.preset else ["model=hf", f"model.path={args.model_path}"]
    overrides = [
        *model,
        *([f"model.gguf_file={args.gguf}"] if args.gguf and not args.preset else []),
        "data=icl_text",
        f"data.task={args.task}",
        "data.shots=[4]",
        f"data.num_test={args.test}",
        "pruning.strategy=structured",
        "structured.procedure=no_retrain",
        "logger=none",
        f"root={ROOT / 'outputs' / 'benchmarks'}",
        *args.extra,
    ]
    results = {"overrides": overrides, "date": time.strftime("%Y-%m-%d"), "parts": []}
    for part in ("study",) if args.no_full_logits else ("full logits", "study"):
        results["parts"].append(run_part(part, overrides))
        print(json.dumps(results["parts"][-1]), flush=True)
    study = results["parts"][-1]
    if args.no_full_logits:
        full = f"not run; its logits would be {study['full_logits_gb']:.2f} GB"
    else:
        part = results["parts"][0]
        full = f"{part['peak_rss_gb']:.2f} GB ({part['logits_gb']:.2f} GB of logits)"
    limit = 1.3 * study["evaluations"] * study["dense_forward_seconds"]
    print(
        f"peak memory: study {study['peak_rss_gb']:.2f} GB, one forward keeping every logit {full}\n"
        f"grid: {study['evaluations']} evaluations in {study['evaluation_seconds']:.1f} s; 1.3 x evaluations x one "
        f"forward ({study['dense_forward_seconds']:.2f} s) = {limit:.1f} s "
        f"({'met' if study['evaluation_seconds'] <= limit else 'missed'}); whole study {study['study_seconds']:.1f} s"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
