"""Issue #17, items 1-3: absent splits, images wider than 8 bits, source order.

Each test names the defect it guards (the mutant it kills):
- GazeCapture subsets: yielding an empty split crashes TFDS ("No examples were yielded").
- 16-bit images: ``convert('RGB')`` saturates them (98% of a 0..65535 ramp at 255).
- source order: sorting by the ``sample_id`` string reorders MPIIGaze and own studies.
"""

import io
import os

import numpy as np
import pytest
from PIL import Image

import fixtures_datasets as fx
from privateyes_jax import data as data_lib
from privateyes_jax.data import builders
from privateyes_jax.data.builders import common

DatasetError = data_lib.DatasetError


def _config(name, manual_dir, tmp_path, **fields):
  return fx.data_config(name, manual_dir, tmp_path / 'tfds', **fields)


# ------------------------------------------------------------ 1. absent splits


def test_gazecapture_subset_without_validation_prepares(tmp_path):
  root = tmp_path / 'gc'
  fx.write_gazecapture(root, frames_per_subject=3)
  # data.people without the validation recording 00005: no validation split is written.
  people = ('00002', '00003', '00010')
  config = _config('gazecapture', root, tmp_path, image_size=8, people=people)
  dataset = data_lib.load_dataset(config)
  assert dataset.person_names == ['00002', '00003', '00010']
  text = builders.prepare_and_describe(config)
  assert 'train 2, validation 0, test 1' in text and 'not prepared' in text, text
  # Asking for the absent split is a one-line user error naming what was prepared.
  with pytest.raises(DatasetError, match='split validation was not prepared.*train\\+test') as e:
    data_lib.load_dataset(_config('gazecapture', root, tmp_path, image_size=8, people=people,
                                  splits='train+validation+test'))
  assert '\n' not in str(e.value)


def test_gazecapture_train_only_subset_reads_what_exists(tmp_path):
  root = tmp_path / 'gc'
  fx.write_gazecapture(root, subjects={'00002': 'train', '00003': 'train'},
                       frames_per_subject=3)
  config = _config('gazecapture', root, tmp_path, image_size=8)
  # Default splits are train+test: test is absent, train is read.
  assert data_lib.load_dataset(config).person_names == ['00002', '00003']
  text = builders.prepare_and_describe(config)
  assert 'not prepared (no recording of the chosen people): validation, test' in text, text
  assert 'training reads split train (data.splits)' in text, text
  with pytest.raises(DatasetError, match="split test was not prepared.*prepared splits: train"):
    data_lib.load_dataset(_config('gazecapture', root, tmp_path, image_size=8, splits='test'))


# ------------------------------------------------- 2. images wider than 8 bits

RAMP = np.linspace(0, 65535, 16 * 64).round().reshape(16, 64).astype(np.uint16)


def _encoded(mode: str) -> bytes:
  """The ramp in Pillow ``mode`` (PNG opens as I;16; TIFF keeps I;16B, I and F)."""
  if mode == 'I;16':
    image = Image.fromarray(RAMP)
  elif mode == 'I;16B':
    image = Image.frombytes('I;16B', (64, 16), RAMP.astype('>u2').tobytes())
  else:
    image = Image.fromarray(RAMP.astype(np.int32 if mode == 'I' else np.float32))
  buffer = io.BytesIO()
  image.save(buffer, format='PNG' if mode == 'I;16' else 'TIFF')
  with Image.open(io.BytesIO(buffer.getvalue())) as check:
    assert check.mode == mode  # The file really is in the mode under test.
  return buffer.getvalue()


def _monotonic_full_range(image):
  rows = image.astype(np.int64).reshape(-1)  # The ramp runs row by row.
  return image.dtype == np.uint8 and rows.min() == 0 and rows.max() == 255 and (
      np.diff(rows) >= 0).all()


@pytest.mark.parametrize('mode', ['I;16', 'I;16B', 'I', 'F'])
def test_wide_images_scaled_by_their_range(mode):
  image = common.decode_image(_encoded(mode), 'ramp')
  assert _monotonic_full_range(image), np.unique(image)
  # Not saturated: every output level is used about equally (the old code put 98% at 255).
  assert np.bincount(image.ravel(), minlength=256).max() <= 2 * image.size / 256


def test_declared_range_is_used_and_enforced():
  twelve_bit = (RAMP >> 4).astype(np.uint16)  # A 12-bit sensor in a 16-bit PNG: 0..4095.
  dim = twelve_bit // 2  # A darker frame of the same camera.
  stored = common.to_uint8(np.stack([twelve_bit, dim]), 'frames', (0, 4095), stacked=True)
  assert stored[0].max() == 255 and stored[1].max() == 127  # Brightness kept across images.
  per_image = common.to_uint8(np.stack([twelve_bit, dim]), 'frames', stacked=True)
  assert per_image[0].max() == per_image[1].max() == 255
  with pytest.raises(DatasetError, match=r'frames: pixel values span \[0, 65535\], outside '
                     r'data.image_value_range \[0, 4095\]'):
    common.to_uint8(RAMP, 'frames', (0, 4095))
  # 8-bit images are never rescaled.
  assert (common.to_uint8(np.full((2, 2), 7, np.uint8), 'x', (0, 4095)) == 7).all()


def test_own_study_16bit_png_end_to_end(tmp_path):
  root = tmp_path / 'study'
  person_dir = root / 'alice'
  os.makedirs(person_dir)
  Image.fromarray(RAMP).save(person_dir / 'ramp.png')  # Pillow mode I;16.
  Image.fromarray((RAMP >> 4).astype(np.uint16)).save(person_dir / 'ramp12.png')
  (person_dir / 'labels.csv').write_text('image,pitch,yaw\nramp.png,0.1,0.2\nramp12.png,0,0\n')
  dataset = data_lib.load_dataset(
      _config('own_study', root, tmp_path, image_size=(16, 64), channels=1))
  images = dataset.people[0].images[..., 0]
  assert _monotonic_full_range(images[0]) and _monotonic_full_range(images[1])
  declared = data_lib.load_dataset(_config('own_study', root, tmp_path, image_size=(16, 64),
                                           channels=1, image_value_range=(0, 65535)))
  assert declared.people[0].images[1].max() == 16  # 4095 of 65535: dim, as recorded.


# ---------------------------------------------------------------- 3. source order


def test_mpiigaze_keeps_list_order(tmp_path):
  root = tmp_path / 'mpii'
  fx.write_mpiigaze(root, people=('p00',), day_sizes=(3, 2, 3))
  list_path = root / 'Evaluation Subset' / 'sample list for eye image' / 'p00.txt'
  lines = list_path.read_text().splitlines()
  order = [lines[i] for i in (5, 0, 7, 2, 6, 1, 4, 3)]  # Days and files interleaved.
  list_path.write_text('\n'.join(order) + '\n')
  dataset = data_lib.load_dataset(_config('mpiigaze', root, tmp_path, people=('p00',),
                                          expected_samples_per_person=0))
  assert dataset.people[0].sample_id.tolist() == order


def test_own_study_keeps_csv_order(tmp_path):
  root = tmp_path / 'study'
  fx.write_own_study(root, people=('alice',), n=6)
  labels = root / 'alice' / 'labels.csv'
  header, *rows = labels.read_text().splitlines()
  rows = rows[::-1]  # CSV order is not file-name order.
  labels.write_text('\n'.join([header] + rows) + '\n')
  dataset = data_lib.load_dataset(_config('own_study', root, tmp_path))
  assert dataset.people[0].sample_id.tolist() == [r.split(',')[0] for r in rows]
  np.testing.assert_allclose(dataset.people[0].labels[0],
                             [float(v) for v in rows[0].split(',')[1:3]], atol=1e-6)
