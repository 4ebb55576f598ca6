r"""Default experiment config: the centralized GazeNet baseline on synthetic identities.

Every other config imports this one and changes a few fields. Run with

  python -m experiments.train --config=experiments/configs/default.py --workdir=/tmp/run

and override any field with ``--config.x=y`` (e.g. ``--config.train.steps=100``).
The optional argument selects a preset: ``default.py:tiny`` shrinks everything
for CPU tests.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = 'centralized'
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = 'synthetic'
  c.data.source = 'memory'  # 'memory' renders in RAM; 'tfds' prepares/reads array_record.
  c.data.data_dir = ''  # TFDS data_dir; '' = $PRIVATEYES_DATA_DIR or ~/tensorflow_datasets.
  c.data.seed = 0  # Seed of the synthetic people (separate from the training seed).
  c.data.num_people = 18  # 15 federation people + 3 held-out test people.
  c.data.samples_per_person = 600
  c.data.protocol = 'holdout'  # 'holdout' (last num_test_people) or 'loo' (person `fold`).
  c.data.num_test_people = 3
  c.data.fold = 0

  c.model = ml_collections.ConfigDict()
  c.model.name = 'gazenet'
  c.model.conv_features = (20, 50)
  c.model.hidden = 500
  c.model.padding = 'SAME'

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 1e-3
  c.optimizer.momentum = 0.9  # Used by name='momentum'.
  c.batch_size = 32

  c.train = ml_collections.ConfigDict()
  c.train.steps = 600
  c.train.eval_every = 100
  c.train.log_every = 20
  c.checkpoint_keep = 2

  if arg == 'tiny':
    apply_tiny(c)
  elif arg:
    raise ValueError(f'Unknown preset {arg!r}; available: tiny.')
  return c


def apply_tiny(c: ml_collections.ConfigDict) -> None:
  """A seconds-long CPU preset for tests: few people, few samples, a narrow model."""
  c.data.num_people = 6
  c.data.num_test_people = 2
  c.data.samples_per_person = 64
  c.model.conv_features = (4, 8)
  c.model.hidden = 32
  c.batch_size = 8
  c.train.steps = 12
  c.train.eval_every = 4
  c.train.log_every = 2
