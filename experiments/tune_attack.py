r"""Tunes DualView's settings on a shadow federation of people who are not targets.

  python -m experiments.tune_attack --workdir=runs/demo/tuning \
      [--config=experiments/configs/tune_attack.py:demo] [--training=demo] \
      [--target=runs/demo/fedavg]

Trains the demo's FedAvg recipe (``--training=demo``; ``tiny`` for tests) on
synthetic people of another identity seed (``--config.shadow_data_seed``), attacks
its recorded last round with each candidate of ``config.grid`` and writes the
chosen settings, every candidate's shadow scores and the shadow people to
``<workdir>/tuning.json`` (privateyes_jax/attacks/tuning.py). ``--target`` runs are
read only to refuse shadow people that are targets. Apply the choice with the
printed ``--config.*`` overrides of ``experiments.attack``.
"""

import os

from absl import flags
from ml_collections import config_flags

from experiments import common
from privateyes_jax.attacks import tuning

_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(os.path.dirname(__file__), 'configs', 'tune_attack.py'),
    'Tuning config (experiments/configs/tune_attack.py[:demo|tiny]).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Shadow run, candidate attacks, tuning.json.')
_TRAINING = flags.DEFINE_enum('training', 'demo', ['demo', 'tiny'],
                              'The target runs\' training recipe (demo FedAvg, or tiny).')
_TARGETS = flags.DEFINE_multi_string('target', [], 'Target runs (read only for overlap).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Retrain the shadow run, redo candidates.')
flags.mark_flags_as_required(['workdir'])


def training_config(name: str):
  if name == 'demo':
    from experiments.configs import demo  # pylint: disable=g-import-not-at-top
    return demo.get_config('fedavg')
  from experiments.configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config('tiny')
  config.method = 'federated'
  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.05
  return config


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'Unexpected arguments: {argv[1:]}')
  record = tuning.tune(_CONFIG.value, training_config(_TRAINING.value), _WORKDIR.value,
                       target_runs=_TARGETS.value, overwrite=_OVERWRITE.value)
  print(f'Shadow people (data seed {record["shadow"]["data_seed"]}): '
        f'{", ".join(record["shadow"]["people"])}')
  for c in record['candidates']:
    print(f'  {c["field"]}={c["value"]!r}: mean rank {c["mean_rank"]:.2f}, AUC vs null '
          f'{c["auc_vs_null"]:.2f}, re-identified {c["reidentified_rate"]:.2f}, label err '
          f'{c["label_error"]:.2f}')
  print('Chosen on shadow people only: ' + ' '.join(record['overrides']))
  print(f'Written to {os.path.abspath(os.path.join(_WORKDIR.value, tuning.TUNING_FILE))}')


def entry_point():
  common.run(main)


if __name__ == '__main__':
  entry_point()
