#!/usr/bin/env bash
# DualView on an own study with screen targets in mm, with a prior of the study's other
# people (issue #14; README "Attack your own study", docs/BENCHMARKS.md): a fixture study of
# 20 people, FedAvg and PrivatEyes on 10 of them (8 clients + 2 held out), the prior on the
# other 10.   experiments/scripts/own_study_attack.sh [OUT_DIR]   (about 8 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
S=${1:-runs/own_study_attack}
PY=${PYTHON:-.venv/bin/python}
$PY -c "from tests import helpers; helpers.write_screen_study('$S/study', helpers.make_screen_study(20, 400))"
RUN_PEOPLE="('p00','p01','p02','p03','p04','p05','p06','p07','p08','p09')"
PRIOR_PEOPLE="('p10','p11','p12','p13','p14','p15','p16','p17','p18','p19')"
D="--config.data.name=own_study --config.data.source=tfds --config.data.manual_dir=$S/study \
   --config.data.data_dir=$S/tfds --config.data.label_kind=screen --config.data.num_test_people=2"
for M in fedavg privateyes; do
  $PY -m experiments.train --config=experiments/configs/$M.py $D --config.data.people="$RUN_PEOPLE" \
    --config.record_views=last --workdir=$S/runs/$M
done
$PY -m experiments.attack --run=$S/runs/fedavg --run=$S/runs/privateyes --workdir=$S/runs/attack \
  --config.prior.data.name=own_study --config.prior.data.source=tfds \
  --config.prior.data.manual_dir=$S/study --config.prior.data.data_dir=$S/tfds \
  --config.prior.data.label_kind=screen --config.prior.data.people="$PRIOR_PEOPLE"
