r"""The demo job behind ``./run.sh``: every method on the synthetic identities, one table.

  python -m experiments.demo --workdir=runs/demo

Each method trains into its own sub-workdir (``runs/demo/<method>``), so re-running
resumes or reuses finished runs. ``--overwrite`` starts everything afresh.
"""

import importlib
import os
import time

from absl import flags
from absl import logging

from experiments import common
from privateyes_jax import runner

_WORKDIR = flags.DEFINE_string('workdir', 'runs/demo', 'Where the demo runs are written.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Start every demo run afresh.')

# (run name, config module) in the order they run.
DEMO_RUNS = (
    ('centralized', 'experiments.configs.demo'),
)


def format_table(rows: list[tuple[str, dict]]) -> str:
  """The demo's results table: held-out error per method, next to the mean predictor."""
  lines = [f'{"method":<14} {"held-out error (deg)":>21} {"mean predictor (deg)":>21} '
           f'{"train people":>12} {"test people":>11} {"time (s)":>9}']
  for name, s in rows:
    lines.append(f'{name:<14} {s["test_error"]:>21.2f} {s["baseline_mean_predictor_error"]:>21.2f} '
                 f'{s["num_people_train"]:>12d} {s["num_people_test"]:>11d} '
                 f'{s["wall_time_s"]:>9.1f}')
  return '\n'.join(lines)


def main(argv):
  del argv  # Unused.
  t0 = time.perf_counter()
  rows = []
  for name, module in DEMO_RUNS:
    config = importlib.import_module(module).get_config()
    workdir = os.path.join(_WORKDIR.value, name)
    logging.info('Demo: training %s into %s', name, workdir)
    rows.append((name, runner.train_and_evaluate(config, workdir, overwrite=_OVERWRITE.value)))
  print()
  print('PrivatEyes-JAX demo: synthetic identities, held-out people')
  print(format_table(rows))
  print(f'\nRuns, metrics and checkpoints are in {os.path.abspath(_WORKDIR.value)}/'
        f' (total {time.perf_counter() - t0:.0f} s).')


def entry_point():
  common.run(main)


if __name__ == '__main__':
  entry_point()
