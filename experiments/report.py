r"""Writes the Markdown report (accuracy, cost, privacy tables and figures) for workdirs.

  python -m experiments.report --workdir=runs/demo [--workdir=runs/other] --out=runs/demo/report

Each ``--workdir`` is a run, a DualView attack directory, or a directory of them
(e.g. ``runs/demo``). See privateyes_jax/report.py for what the report holds and
when runs are refused as incomparable.
"""

from absl import flags

from experiments import common
from privateyes_jax import report

_WORKDIRS = flags.DEFINE_multi_string('workdir', None, 'Runs or directories of runs (repeat).')
_OUT = flags.DEFINE_string('out', None, 'Where report.md and figures/ are written.')
flags.mark_flags_as_required(['workdir', 'out'])


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'Unexpected arguments: {argv[1:]}')
  print(f'Report: {report.build_report(_WORKDIRS.value, _OUT.value)}')


def entry_point():
  common.run(main)


if __name__ == '__main__':
  entry_point()
