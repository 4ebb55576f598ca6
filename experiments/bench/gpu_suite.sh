#!/usr/bin/env bash
# The prepared GPU benchmark run: every GPU figure of docs/BENCHMARKS.md, by part.
#   bash experiments/bench/gpu_suite.sh [PART...]   (default: engine mpc scale sweep)
# Logs go to $OUT (or /tmp/gpu_suite). Parts and their time limits (about 12 minutes in all,
# so split them over two calls when the device budget is tight):
#   engine  client-parallel engine vs the sequential loop at 15/256/1,024 clients (issue 7)
#   mpc     secure aggregation vs plain sum, PrivatEyes vs FedAvg round (issues 4, 7)
#   scale   one FedAvg and one PrivatEyes round with 10,000 clients (issue 7)
#   sweep   64 learning-rate x seed configurations as one sweep vs one after another (issue 8)
# engine/mpc/scale need only jax, flax, optax, orbax, absl, numpy. sweep also needs
# ml_collections: if it is missing and .whl/ holds wheels (see the device README), they are
# installed into /tmp/site first.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/gpu_suite}"
mkdir -p "$OUT"
cd "$(dirname "$0")/../.."
PARTS=("$@")
[ ${#PARTS[@]} -eq 0 ] && PARTS=(engine mpc scale sweep)
nvidia-smi -L 2>&1 | tee "$OUT/device.txt"
python3 -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tee -a "$OUT/device.txt"
t0=$(date +%s)
for part in "${PARTS[@]}"; do
  case "$part" in
    engine)
      echo "== client-parallel engine vs sequential loop (issue 7) =="
      timeout 240 python3 -m experiments.bench.client_parallel --clients=15,256,1024 \
        --local_steps=10 --batch=32 2>&1 | tee "$OUT/client_parallel.txt" ;;
    mpc)
      echo "== secure aggregation vs plain sum, PrivatEyes vs FedAvg round (issues 4, 7) =="
      timeout 180 python3 -m experiments.bench.secure_aggregation --clients=15,256 --round 2>&1 \
        | tee "$OUT/secure_aggregation.txt"
      # The 32-bit generator: on a GPU 64-bit integer ops are emulated (see BENCHMARKS.md).
      timeout 90 python3 -m experiments.bench.secure_aggregation --clients=256 \
        --modes=privateyes --prg=threefry2x32 2>&1 | tee "$OUT/secure_aggregation_2x32.txt" ;;
    scale)
      echo "== 10,000 clients in one round (issue 7) =="
      timeout 150 python3 -m experiments.bench.scale --num_clients=10000 \
        --aggregator=mean,privateyes --memory_budget_mb=40000 --repeats=2 2>&1 \
        | tee "$OUT/scale.txt" ;;
    sweep)
      if ! python3 -c "import ml_collections" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
          --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
      fi
      echo "== 64-configuration sweep vs one run after another (issue 8) =="
      timeout 240 python3 -m experiments.bench.sweep --num_runs=64 --seeds=4 --rounds=5 \
        --max_runs_per_program=16 --sequential_runs=8 2>&1 | tee "$OUT/sweep.txt" ;;
    *) echo "unknown part $part (engine, mpc, scale, sweep)" >&2; exit 2 ;;
  esac
done
echo "total $(( $(date +%s) - t0 )) s"
