r"""Trains and evaluates one experiment (the library does the work: privateyes_jax.runner).

  python -m experiments.train --config=experiments/configs/demo.py --workdir=/tmp/demo \
      --config.train.steps=200

Re-running the same command resumes from the latest checkpoint in --workdir.

Several hosts, one process each, the same command plus (or $PRIVATEYES_COORDINATOR,
$PRIVATEYES_NUM_PROCESSES, $PRIVATEYES_PROCESS_ID):

  --coordinator_address=host0:7777 --num_processes=2 --process_id=0|1 \
      --config.fl.executor=sharded

(privateyes_jax/distributed.py; only process 0 writes the workdir's files).
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common
from privateyes_jax import distributed
from privateyes_jax import runner

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (experiments/configs/*.py[:preset]).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Start afresh: delete the run found in --workdir instead of resuming '
    'it (or refusing it, if its config differs).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'Multi-host: process 0\'s host:port (default: '
    f'${distributed.ENV_COORDINATOR}).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Multi-host: number of processes, one per host (default: '
    f'${distributed.ENV_NUM_PROCESSES} or 1). Only > 1 initialises jax.distributed.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, f'Multi-host: this process\'s index (default: '
    f'${distributed.ENV_PROCESS_ID} or 0); process 0 writes the workdir.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  summary = runner.train_and_evaluate(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value)
  print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict)}, indent=2))


def entry_point():
  common.run(main)


if __name__ == '__main__':
  entry_point()
