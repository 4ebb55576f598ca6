"""Per-person gaze datasets: loading from a config and the evaluation protocols."""

from __future__ import annotations

import os

import numpy as np

from privateyes_jax.data.base import DatasetError, GazeDataset, PersonData, pool

PROTOCOLS = ('holdout', 'loo')


def default_data_dir() -> str:
  return os.environ.get('PRIVATEYES_DATA_DIR',
                        os.path.join(os.path.expanduser('~'), 'tensorflow_datasets'))


def reads_prepared_files(data_config) -> bool:
  """Whether ``data_config`` reads prepared array_record files (so images can stay there)."""
  if data_config.name == 'synthetic':
    return data_config.get('source', 'memory') == 'tfds'
  return True  # Every public dataset and own_study is a TFDS builder.


_RENDERED: dict[str, GazeDataset] = {}
_RENDERED_KEEP = 2


def _rendered(data_config) -> GazeDataset:
  """Synthetic people rendered in memory, kept for the next load of the same config.

  A demo renders the same people for each of its four runs, the attack and membership
  inference (about 4 s each on 2 cores); the last two configs' datasets are kept. Their
  arrays are read-only, so a caller that changed one in place would fail loudly rather
  than change what the next caller loads.
  """
  import json  # pylint: disable=g-import-not-at-top
  from privateyes_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  items = data_config.to_dict() if hasattr(data_config, 'to_dict') else dict(data_config)
  key = json.dumps(items, sort_keys=True, default=str)
  if key not in _RENDERED:
    dataset = synthetic.from_config(data_config)
    for p in dataset.people:
      for array in (p.images, p.labels, p.head_pose, p.sample_id):
        if isinstance(array, np.ndarray):
          array.flags.writeable = False
    while len(_RENDERED) >= _RENDERED_KEEP:
      _RENDERED.pop(next(iter(_RENDERED)))
    _RENDERED[key] = dataset
  return _RENDERED[key]


def load_dataset(data_config, lazy_images: bool = False) -> GazeDataset:
  """The dataset named by ``data_config.name`` from ``data_config.source``.

  ``source='memory'`` renders the synthetic identities in memory; ``source='tfds'``
  prepares (once) and reads the TFDS builder, the path every public dataset takes.
  ``lazy_images`` (prepared files only, see `reads_prepared_files`): every person's
  images stay in the array_record files (`tfds_source.RecordImages`, read on
  demand); labels, head pose and sample ids are in memory.
  """
  from privateyes_jax.data import synthetic, tfds_source  # pylint: disable=g-import-not-at-top
  name, source = data_config.name, data_config.get('source', 'memory')
  if name == 'synthetic':
    if source == 'memory':
      return _rendered(data_config)
    if source == 'tfds':
      if data_config.get('first_person', 0):
        raise ValueError('data.first_person is only supported with data.source="memory".')
      builder = tfds_source.synthetic_builder(
          data_config.num_people, data_config.samples_per_person, data_config.seed,
          data_config.get('data_dir') or default_data_dir(),
          difficulty=data_config.get('difficulty', '') or synthetic.DEFAULT_DIFFICULTY)
      builder.download_and_prepare()
      return tfds_source.read_gaze_dataset(builder, 'train', 'synthetic', 'gaze',
                                           lazy_images=lazy_images)
    raise ValueError(f'data.source must be "memory" or "tfds", got {source!r}.')
  from privateyes_jax.data import builders  # pylint: disable=g-import-not-at-top
  if name in builders.DATASETS:
    return builders.DATASETS[name](data_config, lazy_images=lazy_images)
  raise ValueError(f'Unknown dataset {name!r}; available: '
                   f'{", ".join(["synthetic", *sorted(builders.DATASETS)])}.')


def split_people(dataset: GazeDataset, data_config) -> tuple[GazeDataset, GazeDataset]:
  """(train people, test people) under ``data_config.protocol`` (see `split_people_val`).

  The validation people, if any, are in neither.
  """
  train, _, test = split_people_val(dataset, data_config)
  return train, test


def split_people_val(dataset: GazeDataset,
                     data_config) -> tuple[GazeDataset, GazeDataset, GazeDataset]:
  """(train, validation, test) people under ``data_config.protocol``; disjoint.

  The validation people are None when there are none (``num_val_people=0``).

  * ``holdout``: the last ``num_test_people`` people are the test people and the
    ``num_val_people`` before them the validation people.
  * ``loo``: leave-one-person-out; person ``fold`` is the test person and the
    ``num_val_people`` people after it (cyclically) the validation people.

  ``num_val_people`` defaults to 0 (no validation people; single runs keep every
  non-test person for training). Sweeps need >= 1: they choose on validation
  error, never on test error.
  """
  n = len(dataset.people)
  protocol = data_config.protocol
  v = int(data_config.get('num_val_people', 0))
  if v < 0:
    raise ValueError(f'data.num_val_people must be >= 0, got {v}.')
  if protocol == 'holdout':
    k = data_config.num_test_people
    if not 1 <= k < n:
      raise ValueError(f'data.num_test_people must be in [1, {n - 1}] for {n} people, got {k}.')
    test = list(range(n - k, n))
    val = list(range(n - k - v, n - k))
  elif protocol == 'loo':
    fold = data_config.fold
    if not 0 <= fold < n:
      raise ValueError(f'data.fold must be in [0, {n - 1}] for {n} people, got {fold}.')
    test = [fold]
    val = [(fold + 1 + i) % n for i in range(v)]
  else:
    raise ValueError(f'data.protocol must be one of {PROTOCOLS}, got {protocol!r}.')
  if n - len(test) - v < 1:
    raise ValueError(f'data.num_val_people={v} leaves no training person: {n} people, '
                     f'{len(test)} test.')
  train = [i for i in range(n) if i not in test and i not in val]
  return dataset.select(train), dataset.select(val) if val else None, dataset.select(test)
