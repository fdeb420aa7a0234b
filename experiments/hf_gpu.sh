#!/usr/bin/env bash
# GPU check of the pretrained path (prepared; not yet run on a GPU): the SmolLM2-135M no-retrain grid in bf16 on one
# GPU with 200 test prompts, printing prompts/s of a forward pass and peak GPU memory, then the CPU float32 dense
# accuracy beside it for agreement. Needs ../shared/models/ beside the repository. Meant to take under 5 minutes.
#   bash experiments/hf_gpu.sh [output folder]
set -uo pipefail
out=${1:-outputs/hf_gpu}
model=(model=hf model.path=../shared/models/smollm2-135m-instruct-gguf model.gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf)
python3 - "$out" "${model[@]}" <<'PY'
import json, sys, time, torch
sys.path.insert(0, "tests")
from conftest import compose_config
from lottery.cli import prepare_job
from lottery.structured.pretrained import measure, settings_of
from lottery.structured.probe import Probe, Prompts
out, model = sys.argv[1], sys.argv[2:]
overrides = [*model, "model.dtype=bfloat16", "trainer=gpu", "data=icl_text", "data.task=capitals", "data.shots=[4]",
             "data.num_test=200", "pruning.strategy=structured", "structured.procedure=no_retrain",
             "structured.grid_units=[heads,mlp_blocks,layers]", "logger=none", f"root={out}"]
setup, _, _ = prepare_job(compose_config(overrides))
dm = setup.datamodule
net = setup.pretrained().cuda()
test = Prompts.of(dm.task, dm.x_test, dm.y_test)
probe = Probe(net, dm.task, torch.device("cuda"), 200)
probe.evaluate(test); torch.cuda.synchronize()
t = time.perf_counter()
for _ in range(5):
    dense = probe.evaluate(test)
torch.cuda.synchronize()
print(f"bf16 forward: {5 * len(test) / (time.perf_counter() - t):.0f} prompts/s, dense acc {dense['acc']:.3f}")
torch.cuda.reset_peak_memory_stats()
t = time.perf_counter()
results, run = measure(setup, settings_of(setup))
print(f"grid: {time.perf_counter() - t:.1f} s, peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
print(json.dumps({k: results["removable"][k] for k in results["removable"]}, indent=1))
PY
