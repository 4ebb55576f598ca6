r"""Trains and evaluates one experiment (the library does the work: privateyes_jax.runner).

  python -m experiments.train --config=experiments/configs/demo.py --workdir=/tmp/demo \
      --config.train.steps=200

Re-running the same command resumes from the latest checkpoint in --workdir.
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import common
from privateyes_jax import runner

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (experiments/configs/*.py[:preset]).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Delete a different run found in --workdir instead of refusing.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  summary = runner.train_and_evaluate(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value)
  print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict)}, indent=2))


def entry_point():
  common.run(main)


if __name__ == '__main__':
  entry_point()
