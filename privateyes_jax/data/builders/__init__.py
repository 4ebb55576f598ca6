"""TFDS builders of the public gaze datasets, and the registry `load_dataset` consults.

``DATASETS`` maps a ``config.data.name`` to a function ``(data_config) -> GazeDataset``
that prepares the dataset from the user's ``data.manual_dir`` (once) and reads it
back. Format modules are imported on first use, so this registry imports neither
TFDS nor h5py/scipy/Pillow; see docs/DATASETS.md for each on-disk format.

Config fields read by the builders (all optional except ``manual_dir`` for a first
build): ``data.manual_dir``, ``data.data_dir``, ``data.image_size``,
``data.channels``, ``data.people``, ``data.expected_samples_per_person``,
``data.image_value_range`` (images wider than 8 bits),
``data.splits`` (GazeCapture), ``data.h5_file`` (preprocessed HDF5),
``data.label_kind`` and ``data.labels_file`` (own study),
``data.normalized_distance_mm`` (raw MPIIFaceGaze),
``data.nvgaze_pitch``, ``data.nvgaze_yaw`` (required) and ``data.nvgaze_images`` (NVGaze).
"""

from __future__ import annotations

import importlib


# name -> (module, DatasetFormat attribute); own_study's format depends on data.label_kind.
_FORMATS = {
    'mpiigaze': ('mpiigaze', 'MPIIGAZE'),
    'mpiifacegaze': ('mpiifacegaze', 'MPIIFACEGAZE'),
    'mpiifacegaze_raw': ('mpiifacegaze', 'MPIIFACEGAZE_RAW'),
    'gazecapture': ('gazecapture', 'GAZECAPTURE'),
    'mpiigaze_h5': ('preprocessed_h5', 'MPIIGAZE_H5'),
    'mpiifacegaze_h5': ('preprocessed_h5', 'MPIIFACEGAZE_H5'),
    'nvgaze': ('nvgaze', 'NVGAZE'),
    'own_study': None,
}


def dataset_format(data_config):
  """The `common.DatasetFormat` named by ``data_config.name``."""
  name = data_config.name
  if name not in _FORMATS:
    raise ValueError(f'Unknown dataset {name!r}; available: {", ".join(sorted(_FORMATS))}.')
  if name == 'own_study':
    from privateyes_jax.data.builders import own_study  # pylint: disable=g-import-not-at-top
    return own_study.own_study_format(data_config.get('label_kind', '') or 'gaze')
  module, attribute = _FORMATS[name]
  return getattr(importlib.import_module(f'{__name__}.{module}'), attribute)


def prepare_and_read(data_config, lazy_images: bool = False):
  """Prepares (once) the dataset named by ``data_config.name`` and reads it back.

  ``lazy_images``: the images stay in the prepared files (`tfds_source.RecordImages`).
  """
  from privateyes_jax.data.builders import common  # pylint: disable=g-import-not-at-top
  return common.load(dataset_format(data_config), data_config, lazy_images=lazy_images)


DATASETS = {name: prepare_and_read for name in _FORMATS}


def prepare_and_describe(data_config, overwrite: bool = False) -> str:
  """Prepares the dataset named by ``data_config.name`` and summarises it (data_prep).

  Every written split is read back, so the summary covers exactly what was prepared;
  for datasets with several splits it says which ones training reads and how to hold
  out the official test people.
  """
  # pylint: disable=g-import-not-at-top
  from privateyes_jax.data import base
  from privateyes_jax.data import tfds_source
  from privateyes_jax.data.builders import common
  # pylint: enable=g-import-not-at-top
  fmt = dataset_format(data_config)
  builder = common.prepare(fmt, data_config, overwrite=overwrite)
  people, people_per_split = [], {}
  prepared = list(builder.info.splits.keys())  # Empty splits are not written.
  for split in fmt.splits:
    split_people = ()
    if split in prepared and builder.info.splits[split].num_examples:
      split_people = tfds_source.read_gaze_dataset(builder, split, fmt.name,
                                                   fmt.label_kind).people
    people_per_split[split] = len(split_people)
    people.extend(split_people)
  dataset = base.GazeDataset(name=fmt.name, people=tuple(people), label_kind=fmt.label_kind)
  several = len(fmt.splits) > 1
  lines = [f'prepared in {builder.data_dir}',
           common.describe(dataset, people_per_split if several else None)]
  if several:
    absent = [s for s in fmt.splits if s not in prepared]
    if absent:
      lines.append(f'not prepared (no recording of the chosen people): {", ".join(absent)}')
    read = common.present_splits(fmt, builder, data_config)
    held_out = people_per_split[read[-1]]
    if len(read) > 1:
      lines.append(f'training reads splits {"+".join(read)} (data.splits), people in that '
                   f'order: data.protocol="holdout" with data.num_test_people={held_out} holds '
                   f'out exactly the {read[-1]!r} split.')
    else:
      lines.append(f'training reads split {read[0]} (data.splits); no official split is held '
                   'out, so data.num_test_people people of it are.')
  return '\n'.join(lines)
