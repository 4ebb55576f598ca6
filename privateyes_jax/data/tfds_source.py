"""TFDS plumbing shared by every dataset builder: one feature spec, one reader.

Every builder (synthetic identities here; MPIIGaze, MPIIFaceGaze, GazeCapture and
others in `privateyes_jax.data.builders`) writes one example per sample with the
same features, as array_record files, and `read_gaze_dataset` turns any of them
back into the per-person `GazeDataset` through `as_data_source()` (random access;
TensorFlow is not needed, only tensorflow-datasets and importlib_resources).

TFDS prepares a dataset in an ``incomplete.*`` directory and renames it when done,
so a failed or interrupted build never leaves files that a later run would read.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from privateyes_jax.data import base
from privateyes_jax.data import synthetic


def _tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # GPU images often lack TFDS; in-memory data still works.
    raise ImportError(
        'tensorflow-datasets is needed for data.source="tfds" and the public datasets '
        '(pip install tensorflow-datasets importlib_resources).') from e
  return tfds


def gaze_features(image_shape: tuple[int, int, int]):
  """The feature spec every gaze builder writes (raw tensors: no TensorFlow codecs)."""
  tfds = _tfds()
  return tfds.features.FeaturesDict({
      'person': tfds.features.Text(),
      'image': tfds.features.Tensor(shape=image_shape, dtype=np.uint8),
      'label': tfds.features.Tensor(shape=(2,), dtype=np.float32),
      'head_pose': tfds.features.Tensor(shape=(2,), dtype=np.float32),
      'sample_id': tfds.features.Text(),
      # Position in the person's source order (list, CSV or file order): array_record
      # files are stored in hashed-key order, so readers sort by this, not by sample_id.
      'index': tfds.features.Tensor(shape=(), dtype=np.int64),
  })


def read_gaze_dataset(builder, split: str, name: str, label_kind: str,
                      lazy_images: bool = False, chunk: int = 4096) -> base.GazeDataset:
  """Reads a prepared builder's split into a per-person `GazeDataset`.

  Samples are grouped by person (people sorted by name) and, within a person,
  ordered by their position in the source (the ``index`` feature), so a person's
  first k samples are the first k of the source.

  ``lazy_images``: each person's images stay in the array_record files (a
  `RecordImages`, read on demand); one pass over the split, ``chunk`` records at a
  time, keeps only labels, head pose, sample ids and record numbers in memory. The
  same samples in the same order as the eager read.

  Raises:
    DatasetError: one line, if ``split`` was not prepared (a format leaves out splits
      without samples, e.g. a GazeCapture subset without validation recordings) or is
      unreadable.
  """
  available = list(builder.info.splits.keys())
  if split not in available:
    raise base.DatasetError(
        f'{builder.name} has no {split!r} split in {builder.data_dir}: none of the prepared '
        f'people is in it (prepared splits: {", ".join(available) or "none"}).')
  try:
    source = builder.as_data_source(split=split)
  except Exception as e:  # pylint: disable=broad-except
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]  # User errors: one line.
    raise base.DatasetError(f'Cannot read split {split!r} of {builder.name} from '
                            f'{builder.data_dir}: {first_line}') from e
  n = len(source)
  if n == 0:
    raise base.DatasetError(f'{builder.name} split {split!r} in {builder.data_dir} is empty.')
  if lazy_images:
    return _read_lazy(builder, source, name, label_kind, chunk)
  records = source.__getitems__(list(range(n)))
  by_person = collections.defaultdict(list)
  for r in records:
    by_person[r['person'].decode() if isinstance(r['person'], bytes) else r['person']].append(r)
  people = []
  for person in sorted(by_person):
    rs = sorted(by_person[person], key=lambda r: int(r['index']))
    people.append(base.PersonData(
        person=person,
        images=np.stack([r['image'] for r in rs]).astype(np.uint8),
        labels=np.stack([r['label'] for r in rs]).astype(np.float32),
        head_pose=np.stack([r['head_pose'] for r in rs]).astype(np.float32),
        sample_id=np.array([_decode(r['sample_id']) for r in rs]),
    ))
  return base.GazeDataset(name=name, people=tuple(people), label_kind=label_kind)


def _decode(x):
  return x.decode() if isinstance(x, bytes) else x


def _read_lazy(builder, source, name: str, label_kind: str, chunk: int) -> base.GazeDataset:
  """`read_gaze_dataset` with every person's images left on disk (`RecordImages`)."""
  image_shape = tuple(builder.info.features['image'].shape)
  by_person = collections.defaultdict(list)
  for start in range(0, len(source), chunk):
    ids = list(range(start, min(start + chunk, len(source))))
    for i, r in zip(ids, source.__getitems__(ids)):  # Images dropped chunk by chunk.
      by_person[_decode(r['person'])].append(
          (int(r['index']), i, np.asarray(r['label'], np.float32),
           np.asarray(r['head_pose'], np.float32), _decode(r['sample_id'])))
  people = []
  for person in sorted(by_person):
    rs = sorted(by_person[person], key=lambda r: r[0])
    people.append(base.PersonData(
        person=person,
        images=RecordImages(source, np.array([r[1] for r in rs], np.int64), image_shape,
                            name=person),
        labels=np.stack([r[2] for r in rs]).astype(np.float32),
        head_pose=np.stack([r[3] for r in rs]).astype(np.float32),
        sample_id=np.array([r[4] for r in rs]),
    ))
  return base.GazeDataset(name=name, people=tuple(people), label_kind=label_kind)


class RecordImages:
  """One person's images ``[samples, H, W, C]`` uint8, left in the array_record files.

  Stands in for the ``images`` array of a `base.PersonData` (``shape``, ``dtype``,
  ``ndim``, ``len`` and indexing, as NumPy): indexing reads only the asked records,
  so a `privateyes_jax.federated.client_data.StreamedStore` built on these people
  reads each round's batches from disk and nothing else. ``np.asarray`` (`load`)
  reads the person whole (the padded store, evaluation of held-out people).
  """

  def __init__(self, source, record_ids: np.ndarray, image_shape: tuple[int, ...],
               name: str = ''):
    self.source = source
    self.record_ids = np.asarray(record_ids, np.int64)
    self.shape = (len(self.record_ids),) + tuple(image_shape)
    self.name = name

  dtype = np.dtype(np.uint8)
  ndim = 4

  def __len__(self) -> int:
    return self.shape[0]

  def _read(self, ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids, np.int64).reshape(-1)
    if not len(ids):
      return np.zeros((0,) + self.shape[1:], np.uint8)
    records = self.source.__getitems__(ids.tolist())
    return np.stack([r['image'] for r in records]).astype(np.uint8).reshape(
        (len(ids),) + self.shape[1:])

  def __getitem__(self, key):
    if isinstance(key, tuple):  # images[rows, ...]: the rows first, then the rest.
      return self[key[0]][(slice(None),) + key[1:]]
    if isinstance(key, (int, np.integer)):
      return self._read(self.record_ids[[key]])[0]
    ids = self.record_ids[key]  # Slice, integer array or boolean mask, as NumPy.
    return self._read(ids).reshape(ids.shape + self.shape[1:])

  def load(self) -> np.ndarray:
    """The person's images whole, in memory."""
    return self._read(self.record_ids)

  def __array__(self, dtype=None, copy=None):
    del copy
    out = self.load()
    return out if dtype is None else out.astype(dtype)


def in_memory(dataset: base.GazeDataset | None) -> base.GazeDataset | None:
  """``dataset`` with every person's `RecordImages` read into memory (None stays None)."""
  if dataset is None:
    return None
  return dataclasses.replace(dataset, people=tuple(
      dataclasses.replace(p, images=p.images.load()) if isinstance(p.images, RecordImages)
      else p for p in dataset.people))


def synthetic_builder(num_people: int, samples_per_person: int, seed: int, data_dir: str,
                      difficulty: str = synthetic.DEFAULT_DIFFICULTY):
  """A TFDS builder of the synthetic identities dataset with these parameters."""
  synthetic.get_difficulty(difficulty)  # Fail fast on an unknown name.
  tfds = _tfds()

  @dataclasses.dataclass
  class SyntheticConfig(tfds.core.BuilderConfig):
    num_people: int = 15
    samples_per_person: int = 600
    seed: int = 0
    difficulty: str = synthetic.DEFAULT_DIFFICULTY

  class SyntheticIdentities(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Procedurally rendered 36x60 eye patches of synthetic people (see data/synthetic.py)."""
    VERSION = tfds.core.Version('1.1.0')  # 1.1.0: the index feature.
    BUILDER_CONFIGS = []

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          description='Synthetic identities: per-person eye appearance and gaze distribution.',
          features=gaze_features((synthetic.HEIGHT, synthetic.WIDTH, 1)))

    def _split_generators(self, dl_manager):
      del dl_manager  # Nothing is downloaded: the data is rendered.
      return {'train': self._generate_examples()}

    def _generate_examples(self):
      cfg = self.builder_config
      for i in range(cfg.num_people):
        p = synthetic.sample_person(cfg.seed, i, cfg.samples_per_person,
                                    difficulty=cfg.difficulty)
        for j in range(p.num_samples):
          yield f'{p.person}/{j}', {
              'person': p.person, 'image': p.images[j], 'label': p.labels[j],
              'head_pose': p.head_pose[j], 'sample_id': str(p.sample_id[j]), 'index': j}

  # 'easy' keeps the name it had before difficulties existed, so prepared copies stay valid.
  suffix = '' if difficulty == 'easy' else f'_{difficulty}'
  config = SyntheticConfig(
      name=f'people{num_people}_samples{samples_per_person}_seed{seed}{suffix}',
      num_people=num_people, samples_per_person=samples_per_person, seed=seed,
      difficulty=difficulty)
  builder = SyntheticIdentities(config=config, data_dir=data_dir, file_format='array_record')
  return builder


class RecordRows:
  """One person's samples in a prepared split, read from its array_record files on demand.

  A row source of `privateyes_jax.federated.client_data.StreamedStore`: ``take``
  reads only the asked records through the TFDS data source (random access), so a
  dataset larger than the host's memory trains without ever being loaded whole.

  Attributes:
    source: the split's ``as_data_source()`` (shared by every person of the split).
    record_ids: ``[samples]`` the person's record numbers in the split, in source order.
  """

  def __init__(self, source, record_ids: np.ndarray):
    self.source = source
    self.record_ids = np.asarray(record_ids, np.int64)

  @property
  def num_samples(self) -> int:
    return len(self.record_ids)

  def take(self, positions: np.ndarray) -> dict[str, np.ndarray]:
    records = self.source.__getitems__(self.record_ids[np.asarray(positions)].tolist())
    return {'images': np.stack([r['image'] for r in records]).astype(np.uint8),
            'labels': np.stack([r['label'] for r in records]).astype(np.float32),
            'head_pose': np.stack([r['head_pose'] for r in records]).astype(np.float32)}


def person_rows(builder, split: str, people=None,
                chunk: int = 4096) -> tuple[list[str], list[RecordRows]]:
  """``(names, rows)``: every person of a prepared split as a `RecordRows` (sorted by name).

  One pass over the split reads each record's person and source position, ``chunk``
  records at a time, so host memory holds the index, not the images. ``people``
  keeps only those person names (in sorted order). The order of samples and people
  is `read_gaze_dataset`'s, so the same indices give the same samples.
  """
  try:
    source = builder.as_data_source(split=split)
  except Exception as e:  # pylint: disable=broad-except
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise base.DatasetError(f'Cannot read split {split!r} of {builder.name} from '
                            f'{builder.data_dir}: {first_line}') from e
  by_person = collections.defaultdict(list)
  for start in range(0, len(source), chunk):
    ids = list(range(start, min(start + chunk, len(source))))
    for i, r in zip(ids, source.__getitems__(ids)):
      by_person[_decode(r['person'])].append((int(r['index']), i))
  wanted = sorted(by_person) if people is None else sorted(set(people) & set(by_person))
  rows = [RecordRows(source, np.array([i for _, i in sorted(by_person[p])], np.int64))
          for p in wanted]
  return wanted, rows
