#!/usr/bin/env bash
# GPU check of the core on one GPU (about 3 minutes on an H100): the default experiment on the GPU (speed), bf16
# autocast keeps pruned weights exactly zero, and a run killed mid-level and resumed on the GPU equals an
# uninterrupted one bit for bit.
#   bash experiments/gpu_check.sh [output folder]
set -uo pipefail
out=${1:-outputs/gpu_check}
common=(trainer=gpu logger=csv trainer.progress_bar=false levels=3 name=gpu_check)
run() { python3 -m lottery.cli "$@"; }
echo "== default experiment, 4 levels, fp32 =="
run "${common[@]}" root="$out/a" 2>&1 | tail -9
echo "== same config killed at level 1 step 1700, then resumed =="
python3 tests/kill_run.py step 1 1700 "${common[@]}" root="$out/b" > /dev/null 2>&1; echo "killed: exit $?"
run "${common[@]}" root="$out/b" > /dev/null 2>&1
python3 experiments/same_results.py "$out"/a/gpu_check/*/seed_0 "$out"/b/gpu_check/*/seed_0
echo "== bf16-mixed, SGD momentum + weight decay, weight rewinding to 100it =="
run "${common[@]}" root="$out/c" train.precision=bf16-mixed optim=sgd optim.lr=0.05 rewind=weights 2>&1 | tail -9
python3 experiments/same_results.py "$out"/c/gpu_check/*/seed_0 "$out"/c/gpu_check/*/seed_0
