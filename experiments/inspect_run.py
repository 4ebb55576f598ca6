r"""Looks into runs without changing them (the library does the work: privateyes_jax.inspection).

The command is the first positional argument; the flags say what to look at:

  python -m experiments.inspect_run list --workdir=runs/demo
  python -m experiments.inspect_run show --workdir=runs/demo/fedavg
  python -m experiments.inspect_run params --workdir=runs/demo/fedavg [--step=N]
  python -m experiments.inspect_run evaluate --workdir=runs/demo/fedavg [--step=N] \
      [--data.num_people=30 | --config=experiments/configs/paper.py:mpiigaze,fedavg \
       --config.data.manual_dir=/data/MPIIGaze] [--people=all]
  python -m experiments.inspect_run diff --workdir=runs/demo/fedavg --step=1 \
      [--other=runs/demo/privateyes] [--other_step=N]
  python -m experiments.inspect_run export --workdir=runs/demo/fedavg [--step=N] \
      --out=/tmp/fedavg.npz

* ``list``: every run at or under --workdir (a directory holding config.json; fold_XX/
  sub-runs included) with its method, dataset, saved steps (rounds for federated runs),
  last metrics row, whether it finished (summary.json) and the rounds recorded in views/.
* ``show``: the run's config and its metrics table.
* ``params``: the parameter tree of a saved step (default the latest): shapes, dtypes,
  L2 norms and the parameter count.
* ``evaluate``: the saved model's per-person and mean error on the run's held-out people,
  the same number as the run's logged test_error for that step; --data.* overrides or the
  data section of --config evaluate it on another (prepared) dataset.
* ``diff``: per-tensor L2 norms of the difference of two saved steps (--other defaults to
  --workdir, --other_step to the latest step of --other), absolute and relative.
* ``export``: a saved step's parameters to an .npz file with '/'-joined keys.

Everything is read-only and safe on a run that is still training (see
privateyes_jax/inspection.py). Bad input (not a workdir, a step that was not saved, an
unreadable checkpoint, an unknown data field) is one ERROR line and exit status 1.
"""

import logging as std_logging
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import common
from experiments.configs import default
from privateyes_jax import inspection

COMMANDS = ('list', 'show', 'params', 'evaluate', 'diff', 'export')

_WORKDIR = flags.DEFINE_string('workdir', None, 'A run\'s workdir, or (list) a folder of runs.')
_STEP = flags.DEFINE_integer('step', None, 'Saved step / round; default the latest.')
_OTHER = flags.DEFINE_string('other', None, 'diff: the second run; default --workdir.')
_OTHER_STEP = flags.DEFINE_integer('other_step', None,
                                   'diff: step of --other; default its latest.')
_OUT = flags.DEFINE_string('out', None, 'export: the .npz file to write.')
_PEOPLE = flags.DEFINE_enum('people', 'test', ['test', 'val', 'all'],
                            'evaluate: the test people of the data config, its validation '
                            'people (data.num_val_people), or all.')
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'evaluate: a config file whose data section names the dataset.',
    lock_config=True)
flags.mark_flag_as_required('workdir')


def _define_data_flag() -> None:
  """``--data.x=y``: typed overrides of the data config, checked against default.py.

  A config-dict flag reads its overrides from ``sys.argv`` when it is defined, so an
  unknown field fails here, before ``common.run`` parses flags; it gets the same
  one-line message as an unknown ``--config.x`` field.
  """
  try:
    config_flags.DEFINE_config_dict(
        'data', default.get_config().data,
        'evaluate: --data.x=y overrides of the run\'s (or --config\'s) data config.',
        lock_config=True)
  except (AttributeError, KeyError) as e:
    msg = str(e).strip('"\'').replace("\\'", "'").replace('\\n', ' ')
    sys.stderr.write(f'FATAL Unknown config field in a --data override: {msg}\n')
    sys.exit(2)


class _QuietReadOnly(std_logging.Filter):
  """Drops orbax's warnings that a read-only checkpoint manager is read-only."""

  def filter(self, record):
    return not ('/orbax/' in record.pathname and
                'read only' in record.getMessage().lower().replace('_', ' '))


def main(argv):
  logging.get_absl_handler().addFilter(_QuietReadOnly())
  command = argv[1] if len(argv) > 1 else None
  if command not in COMMANDS or len(argv) > 2:
    raise ValueError(f'Usage: inspect_run COMMAND --workdir=DIR [flags]; COMMAND is one of '
                     f'{", ".join(COMMANDS)}, got {" ".join(argv[1:]) or "nothing"}.')
  path = _WORKDIR.value
  if command == 'list':
    print(inspection.format_runs(inspection.list_runs(path), path))
  elif command == 'show':
    print(inspection.format_show(path))
  elif command == 'params':
    step, key, params = inspection.restore_params(path, _STEP.value)
    print(inspection.format_params(path, step, key, params))
  elif command == 'evaluate':
    base = _CONFIG.value.data if _CONFIG.value is not None else None
    overrides = (config_flags.get_override_values(flags.FLAGS['data'])
                 if 'data' in flags.FLAGS else {})
    print(inspection.format_evaluation(inspection.evaluate(
        path, _STEP.value, data_config=base, data_overrides=overrides,
        people=_PEOPLE.value)))
  elif command == 'diff':
    other = _OTHER.value or path
    step, other_step, rows = inspection.diff(path, _STEP.value, other, _OTHER_STEP.value)
    print(inspection.format_diff(path, step, other, other_step, rows))
  elif command == 'export':
    if not _OUT.value:
      raise ValueError('export needs --out=FILE.npz.')
    step, keys = inspection.export(path, _OUT.value, _STEP.value)
    print(f'Wrote {len(keys)} arrays of {path} step {step} to {_OUT.value}.')


def entry_point():
  _define_data_flag()
  common.run(main)


if __name__ == '__main__':
  entry_point()
