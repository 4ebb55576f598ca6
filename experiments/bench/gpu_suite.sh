#!/usr/bin/env bash
# The prepared GPU benchmark run: every GPU figure of docs/BENCHMARKS.md in one call.
#   bash experiments/bench/gpu_suite.sh            (writes logs to $OUT or /tmp/gpu_suite)
# Needs only jax, flax, optax, numpy (no TFDS, no ml_collections).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/gpu_suite}"
mkdir -p "$OUT"
cd "$(dirname "$0")/../.."
nvidia-smi -L 2>&1 | tee "$OUT/device.txt"
python3 -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tee -a "$OUT/device.txt"
t0=$(date +%s)
echo "== client-parallel engine vs sequential loop (issue 7) =="
timeout 240 python3 -m experiments.bench.client_parallel --clients=15,64,256 --local_steps=10 \
  --batch=32 2>&1 | tee "$OUT/client_parallel.txt"
echo "== executors through the engine's Executor (issue 3) =="
timeout 150 python3 -m experiments.bench.executors --clients=15,64,256 --local_steps=5 --batch=32 \
  --padding=SAME --executors=sequential,vmap,client_parallel --repeats=1 \
  --samples_per_client=64 2>&1 | tee "$OUT/executors.txt"
echo "== secure aggregation vs plain sum, PrivatEyes vs FedAvg round (issues 4, 7) =="
timeout 180 python3 -m experiments.bench.secure_aggregation --clients=15,256 --round 2>&1 \
  | tee "$OUT/secure_aggregation.txt"
echo "total $(( $(date +%s) - t0 )) s"
