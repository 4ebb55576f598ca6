r"""Runs the DualView attack on recorded training runs and prints the privacy table.

  python -m experiments.attack --run=runs/demo/fedavg --run=runs/demo/privateyes \
      --workdir=runs/demo/attack [--config=experiments/configs/attack.py:full]

Each ``--run`` is the workdir of a federated run trained with ``record_views=last``
(or ``all``); every threat model its view allows is attacked (plain FL / adaptive FL
from a ``mean`` run; the PrivatEyes coalition, its output model and generic MPC from
a ``privateyes`` run). ``--workdir`` receives ``summary.json``, ``reconstructions.png``,
``gaze.png``, ``per_person.png`` and the GAN prior's checkpoints; rerunning the same
command reads the finished results back.

Repetitions: every threat model is attacked with ``--config.attack_seeds`` seeds, on
every federation given: pass the runs of several training seeds (e.g. the demo's
``--federations=3`` trains them into ``runs/demo/federations/seed<s>/``) and each row
pools them; ``:full`` requires at least 3 federations (``min_federations``). The
table gives 95% intervals, the chance expectation and one-sided p-values
(privateyes_jax/attacks/scoring.py).
"""

import os

from absl import flags
from ml_collections import config_flags

from experiments import common
from privateyes_jax.attacks import pipeline

_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(os.path.dirname(__file__), 'configs', 'attack.py'),
    'Attack config (experiments/configs/attack.py[:demo|full|tiny]).', lock_config=True)
_RUNS = flags.DEFINE_multi_string('run', None, 'A target run\'s workdir (repeat the flag).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the attack\'s results are written.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False,
                               'Start afresh in --workdir (the prior too), replacing '
                               'this or another attack\'s results.')
flags.mark_flags_as_required(['run', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'Unexpected arguments: {argv[1:]}')
  out = pipeline.run_attack(_CONFIG.value, _RUNS.value, _WORKDIR.value,
                            overwrite=_OVERWRITE.value)
  print()
  pipeline.print_summary(out)
  print(f'\nSummary, reconstructions.png and gaze.png are in {os.path.abspath(_WORKDIR.value)}/')


def entry_point():
  common.run(main)


if __name__ == '__main__':
  entry_point()
