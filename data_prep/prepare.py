r"""Prepares one gaze dataset from the files you downloaded, and prints what was prepared.

One command per dataset (docs/DATASETS.md describes each folder layout):

  python -m data_prep.prepare --dataset=mpiigaze --manual_dir=/data/MPIIGaze
  python -m data_prep.prepare --dataset=mpiifacegaze --manual_dir=/data/MPIIFaceGaze_normalized
  python -m data_prep.prepare --dataset=mpiifacegaze_raw --manual_dir=/data/MPIIFaceGaze
  python -m data_prep.prepare --dataset=gazecapture --manual_dir=/data/GazeCapture
  python -m data_prep.prepare --dataset=mpiigaze_h5 --manual_dir=/data/h5  # holds MPIIGaze.h5
  python -m data_prep.prepare --dataset=mpiifacegaze_h5 --manual_dir=/data/h5
  python -m data_prep.prepare --dataset=own_study --manual_dir=/data/my_study
  python -m data_prep.prepare --dataset=nvgaze --manual_dir=/data/nvgaze \
      --nvgaze_yaw=-float_gaze_x_degree --nvgaze_pitch=+float_gaze_y_degree  # signs: yours

The prepared array_record files go to --data_dir (default $PRIVATEYES_DATA_DIR or
~/tensorflow_datasets); training with the same data settings in its config
(data.name, data.manual_dir, data.image_size, ...) reads them without preparing again.
The summary lists the people, samples per person and label ranges.
"""

import ml_collections
from absl import app
from absl import flags

from experiments import common as experiments_common
from privateyes_jax.data import builders

_DATASET = flags.DEFINE_enum('dataset', None, sorted(builders.DATASETS), 'Dataset to prepare.')
_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, 'Folder holding the downloaded files.')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'Where prepared datasets go (TFDS data_dir).')
_IMAGE_SIZE = flags.DEFINE_list('image_size', [], 'Stored image size "height,width" or "size".')
_CHANNELS = flags.DEFINE_integer('channels', None, '1 (grayscale) or 3 (RGB).')
_PEOPLE = flags.DEFINE_list('people', [], 'People to prepare (default: the dataset\'s own).')
_EXPECTED = flags.DEFINE_integer('expected_samples_per_person', None,
                                 'Refuse people with another count (0: any).')
_LABEL_KIND = flags.DEFINE_enum('label_kind', '', ['', 'gaze', 'screen'], 'Own study labels.')
_LABELS_FILE = flags.DEFINE_string('labels_file', '', 'Own study label file name.')
_H5_FILE = flags.DEFINE_string('h5_file', '', 'Preprocessed HDF5 file name.')
_SPLITS = flags.DEFINE_string('splits', '', 'GazeCapture: the splits training reads, in '
                               'order, e.g. "train+test" (all are prepared).')
_DISTANCE = flags.DEFINE_float('normalized_distance_mm', None,
                               'Raw MPIIFaceGaze: distance of the normalised camera (mm).')
_VALUE_RANGE = flags.DEFINE_list('image_value_range', [], 'Images wider than 8 bits: '
                                  '"low,high" mapped to 0,255 (default: each image\'s range).')
_NVGAZE_PITCH = flags.DEFINE_string('nvgaze_pitch', '', 'NVGaze: signed column giving the '
                                    'MPII pitch, e.g. "+float_gaze_y_degree" (required).')
_NVGAZE_YAW = flags.DEFINE_string('nvgaze_yaw', '', 'NVGaze: signed column giving the MPII '
                                  'yaw, e.g. "-float_gaze_x_degree" (required).')
_NVGAZE_IMAGES = flags.DEFINE_list('nvgaze_images', [], 'NVGaze: image columns to use '
                                   '(default: all, e.g. image_L_0,image_R_0).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Prepare again even if already prepared.')
flags.mark_flags_as_required(['dataset', 'manual_dir'])


def data_config_from_flags() -> ml_collections.ConfigDict:
  """The ``config.data`` fields these flags stand for (only those given)."""
  config = ml_collections.ConfigDict({
      'name': _DATASET.value, 'source': 'tfds', 'manual_dir': _MANUAL_DIR.value,
      'data_dir': _DATA_DIR.value})
  if _IMAGE_SIZE.value:
    config.image_size = tuple(int(v) for v in _IMAGE_SIZE.value)
  optional = {'channels': _CHANNELS.value, 'expected_samples_per_person': _EXPECTED.value,
              'label_kind': _LABEL_KIND.value, 'labels_file': _LABELS_FILE.value,
              'h5_file': _H5_FILE.value, 'people': tuple(_PEOPLE.value),
              'splits': _SPLITS.value, 'normalized_distance_mm': _DISTANCE.value,
              'image_value_range': tuple(float(v) for v in _VALUE_RANGE.value),
              'nvgaze_pitch': _NVGAZE_PITCH.value, 'nvgaze_yaw': _NVGAZE_YAW.value,
              'nvgaze_images': tuple(_NVGAZE_IMAGES.value)}
  for key, value in optional.items():
    if value not in (None, '', ()):
      config[key] = value
  return config


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  print(builders.prepare_and_describe(data_config_from_flags(), overwrite=_OVERWRITE.value))


def entry_point():
  experiments_common.run(main)


if __name__ == '__main__':
  entry_point()
