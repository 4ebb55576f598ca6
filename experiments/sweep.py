r"""Runs a hyperparameter sweep as batched programs (the library does the work:
privateyes_jax.sweeps).

  python -m experiments.sweep --config=experiments/configs/sweep.py:tiny --workdir=/tmp/sweep \
      --config.sweep.grid='optimizer.learning_rate=0.02,0.05;seed=0,1'

Prints the results table (also in <workdir>/results.md), ranked by the validation
people's error (``data.num_val_people`` >= 1) with the test error beside it, and writes
the run chosen on validation error to <workdir>/best_config.py. Re-running the same command resumes an
interrupted sweep and reuses finished runs.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common
from privateyes_jax.sweeps import sweep

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Sweep config file (experiments/configs/sweep.py[:BASE[,tiny]]).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'The sweep directory (runs, results).')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Start afresh: delete the sweep\'s runs in --workdir instead of '
    'reusing finished ones (and refusing runs of another config).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  result = sweep.run_sweep(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value)
  print(result['table'])
  if result['best_run'] is None:
    return 1  # Every run failed: the table says why; nothing to recommend.
  print(f'Best: {result["best_run"]} ({result["best_reason"]}).')
  print(f'Its config: {_WORKDIR.value}/best_config.py')
  return 0


def entry_point():
  common.run(main)


if __name__ == '__main__':
  entry_point()
