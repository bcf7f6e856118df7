#!/usr/bin/env bash
# Issue 11 on one GPU in about 5 minutes: graphed == eager (tests/test_step.py, CUDA tests only), then the step
# benchmark of the `paper` and `small` presets, bf16 + TF32, eager against fused D against CUDA graph.
# Usage (device machine, repository root): OUT=... bash benchmarks/gpu_step.sh   (PRESETS="paper small" to change)
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu-step}; mkdir -p "$OUT"
T0=$SECONDS
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  echo "== graphed == eager (CUDA tests of tests/test_step.py)"
  timeout 150 $PY -m pytest -q -p no:cacheprovider tests/test_step.py -k cuda -rs 2>&1 | tail -25
  echo "== tests ended at $((SECONDS - T0)) s"
  for preset in ${PRESETS:-paper small}; do
    timeout 150 $PY benchmarks/bench_train.py --presets "$preset" --device cuda --bf16 --tf32 --steps 20 --warmup 4 \
      --modes eager fused graphed 2>&1
    echo "== $preset ended at $((SECONDS - T0)) s"
  done
} 2>&1 | tee "$OUT/gpu_step.txt"
echo "== done at $((SECONDS - T0)) s"
