#!/usr/bin/env bash
# The reviewer's rows (a)-(c) of the privacy table on the demo's people (issue #14;
# docs/BENCHMARKS.md, "The reviewer's rows (a)-(c)"): FedAvg and PrivatEyes with half the
# clients per round (round differencing needs cohorts that differ), PrivatEyes recording
# every round, then DualView with the three rows, and round differencing over all rounds.
#   experiments/scripts/attack_rows.sh [OUT_DIR]      (about 40 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${1:-runs/attack_rows}
PY=${PYTHON:-.venv/bin/python}
COMMON="--config.fl.rounds=20 --config.fl.client_fraction=0.5"
$PY -m experiments.train --config=experiments/configs/demo.py:fedavg --workdir=$R/fedavg $COMMON
$PY -m experiments.train --config=experiments/configs/demo.py:privateyes --workdir=$R/privateyes \
  $COMMON --config.record_views=all
$PY -m experiments.attack --run=$R/fedavg --run=$R/privateyes --workdir=$R/attack \
  --config.extra_rows="('gradient_inversion','round_differencing','sybil')" --config.attack_seeds=2
# differencing_window=0: all 20 rounds (4 rounds of 7 of 15 clients isolate nobody).
$PY -m experiments.attack --run=$R/fedavg --run=$R/privateyes --workdir=$R/attack_diff \
  --config.extra_rows="('round_differencing',)" --config.differencing_window=0 \
  --config.membership_inference=False
