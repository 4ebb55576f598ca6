r"""How easy a dataset's people are to tell apart from coarse layout (issue #14).

  python -m experiments.identity_difficulty --config=experiments/configs/demo.py \
      [--people=train] [--max_people=10] [--config.data.difficulty=easy]

Any run config works (its ``config.data`` is loaded as a run would load it: synthetic,
own_study, mpiigaze, the HDF5 files, ...). Prints the split-half nearest-centroid
accuracy on brightness-normalised 4x4 block means, per image and from the mean of 8
images, with 95% intervals and chance (privateyes_jax/data/identity_difficulty.py).
"""

from absl import flags
from ml_collections import config_flags

from experiments import common
from privateyes_jax.data import identity_difficulty

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'A run config whose data to measure (experiments/configs/*.py[:preset]).',
    lock_config=True)
_PEOPLE = flags.DEFINE_enum('people', 'all', identity_difficulty.PEOPLE,
                            'all: every person of the dataset; train / test: the run\'s '
                            'federation or held-out people.')
_MAX_PEOPLE = flags.DEFINE_integer('max_people', 0, 'Keep only the first this many people '
                                   '(0: all).')
_SPLIT = flags.DEFINE_enum('split', 'random', ('random', 'ordered'),
                           'How each person\'s images are halved: a seeded permutation, or '
                           'first half vs second half in the dataset\'s order.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the random split and the bootstrap.')
flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'Unexpected arguments: {argv[1:]}')
  data = _CONFIG.value.data
  result = identity_difficulty.measure(data, people=_PEOPLE.value, max_people=_MAX_PEOPLE.value,
                                       split=_SPLIT.value, seed=_SEED.value)
  name = data.name + (f' ({data.get("difficulty") or "easy"})' if data.name == 'synthetic' else '')
  print(result.describe(name))


def entry_point():
  common.run(main)


if __name__ == '__main__':
  entry_point()
