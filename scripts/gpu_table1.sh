#!/usr/bin/env bash
# The real-sample Table 1 run on one GPU in under 10 minutes (see scripts/gpu_table1.py).
# Needs the carried subset at .gpu/pcam (python scripts/gpu_table1.py prepare --dest .gpu/pcam) and $OUT.
# Usage: OUT=... bash scripts/gpu_table1.sh [GAN minutes, default 3.5]
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/gpu-table1}
MIN=${1:-3.5}
T0=$SECONDS
mkdir -p "$WORK"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY scripts/gpu_table1.py run --stage gan --data .gpu/pcam --work "$WORK" --minutes "$MIN" --tick-kimg 20 2>&1
echo "== GAN stage ended at $((SECONDS - T0)) s"
# One process per candidate snapshot (final, half-way) and one for the two larger CNNs, side by side.
T1="timeout 250 env OMP_NUM_THREADS=4 $PY scripts/gpu_table1.py run --stage table1 --data .gpu/pcam --work $WORK"
$T1 --at 1.0 > "$WORK/table1-final.txt" 2>&1 &
$T1 --at 0.5 > "$WORK/table1-half.txt" 2>&1 &
$T1 --at 1.0 --tag cnn --classifiers resnet50_cbam densenet169 > "$WORK/table1-cnn.txt" 2>&1 &
wait
cat "$WORK"/table1-*.txt
echo "== Table 1 stage ended at $((SECONDS - T0)) s"
LEFT=$((560 - (SECONDS - T0)))
if [ "$LEFT" -gt 40 ]; then
  timeout $((LEFT - 20)) $PY benchmarks/bench_train.py --presets small paper --device cuda --bf16 --tf32 --steps 20 --warmup 3 \
    2>&1 | tee "$WORK/bench_train.txt"
fi
$PY scripts/gpu_table1.py pack --work "$WORK" --out "$OUT"
echo "== done at $((SECONDS - T0)) s"
