"""NVGaze in the layouts NVIDIA's own code writes: footage folders and createH5 files."""

import zipfile

import numpy as np
import pytest

import fixtures_datasets as fx
from privateyes_jax import data as data_lib
from privateyes_jax.data import builders

DatasetError = data_lib.DatasetError


def _config(manual_dir, tmp_path, **fields):
  fields = {'image_size': (12, 16), 'channels': 1, **fx.NVGAZE_DECLARED, **fields}
  return fx.data_config('nvgaze', manual_dir, tmp_path / 'tfds', **fields)


def _check(person, truth):
  assert person.sample_id.tolist() == [r.sample_id for r in truth]  # Row order, L then R.
  for i, r in enumerate(truth):
    np.testing.assert_array_equal(person.images[i], r.image, err_msg=r.sample_id)
    np.testing.assert_allclose(person.labels[i], r.label, atol=1e-6)
  np.testing.assert_array_equal(person.head_pose, 0)


def test_footage_folders_and_h5(tmp_path):
  root = tmp_path / 'nvgaze'
  truth = fx.write_nvgaze_footage(root)
  truth['subject_03'] = fx.write_nvgaze_h5(root / 'subject_03.h5')
  dataset = data_lib.load_dataset(_config(root, tmp_path))
  assert dataset.label_kind == 'gaze' and dataset.image_shape == (12, 16, 1)
  assert dataset.person_names == sorted(truth)
  for person in dataset.people:
    _check(person, truth[person.person])  # The second footage person is 16-bit.
  # The sign case: x = -11.46 deg, y = +5.73 deg with yaw = -x, pitch = +y.
  np.testing.assert_allclose(dataset.people[0].labels[0], [0.1, 0.2], atol=1e-6)
  text = builders.prepare_and_describe(_config(root, tmp_path))
  assert '3 people, 22 samples' in text, text


def test_declared_signs_are_applied_and_one_eye_can_be_chosen(tmp_path):
  root = tmp_path / 'nvgaze'
  truth = fx.write_nvgaze_footage(root, people=('a',), n=2)
  flipped = data_lib.load_dataset(_config(root, tmp_path, nvgaze_yaw='+float_gaze_x_degree',
                                          nvgaze_images=('image_R_0',)))
  person = flipped.people[0]
  assert person.sample_id.tolist() == [r.sample_id for r in truth['a'][1::2]]
  np.testing.assert_allclose(person.labels[0], [0.1, -0.2], atol=1e-6)


@pytest.mark.parametrize('fields, message', [
    ({'nvgaze_yaw': ''}, 'set data.nvgaze_yaw to the signed gaze column'),
    ({'nvgaze_pitch': 'float_gaze_y_degree'}, 'needs an explicit sign'),
    ({'nvgaze_pitch': '+float_gaze_y'}, 'end with its unit'),
    ({'nvgaze_pitch': '+float_gaze_z_degree'}, "no column 'float_gaze_z_degree'"),
    ({'nvgaze_images': ('image_L_1',)}, "no image column 'image_L_1'.*image_L_0, image_R_0"),
])
def test_bad_settings(tmp_path, fields, message):
  root = tmp_path / 'nvgaze'
  fx.write_nvgaze_footage(root, people=('a',), n=1)
  with pytest.raises(DatasetError, match=message) as e:
    data_lib.load_dataset(_config(root, tmp_path, **fields))
  assert '\n' not in str(e.value)


def test_bad_files(tmp_path):
  root = tmp_path / 'nvgaze'
  fx.write_nvgaze_footage(root, people=('a',), n=2)
  archive = root / 'a' / 'footage_00.zip'
  with zipfile.ZipFile(archive, 'w') as z:  # Rewritten: no right eyes, damaged left eyes.
    z.writestr('0000_L.png', b'not a png')
    z.writestr('0001_L.png', b'not a png')
  with pytest.raises(DatasetError, match=f"{archive}: no image '0000_R.png'.*csv:2"):
    data_lib.load_dataset(_config(root, tmp_path))
  with pytest.raises(DatasetError, match='0000_L.png.*cannot read the image'):
    data_lib.load_dataset(_config(root, tmp_path, nvgaze_images='image_L_0'))
  (root / 'a' / 'footage_description.csv').write_text(
      'archive,image_L_0,float_gaze_x_degree,float_gaze_y_degree\nfootage_00.zip,0000_L.png,'
      '120.0,0.0\n')
  with pytest.raises(DatasetError, match=r'gaze of line 2 is \[0.0, -2.09.*Degrees instead'):
    data_lib.load_dataset(_config(root, tmp_path))


def test_merged_h5_without_image_names(tmp_path):
  """mergeH5Files.py's layout: float32 labels, images [N, 1, 1, 1, H, W], no name datasets."""
  import h5py  # pylint: disable=g-import-not-at-top
  root = tmp_path / 'nvgaze'
  root.mkdir()
  images = np.arange(2 * 12 * 16, dtype=np.uint8).reshape(2, 1, 1, 1, 12, 16)
  with h5py.File(root / 'merged.h5', 'w') as f:
    f.create_dataset('images', data=images)
    f.create_dataset('float_gaze_x_degree', data=np.array([-10.0, 5.0], np.float32))
    f.create_dataset('float_gaze_y_degree', data=np.array([2.0, -3.0], np.float32))
  person = data_lib.load_dataset(_config(root, tmp_path)).people[0]
  assert person.sample_id.tolist() == ['000000/images_e0_v0', '000001/images_e0_v0']
  np.testing.assert_allclose(person.labels, np.radians([[2.0, 10.0], [-3.0, -5.0]]), atol=1e-6)
  np.testing.assert_array_equal(person.images[1, ..., 0], images[1, 0, 0, 0])


def test_footage_without_image_columns(tmp_path):
  root = tmp_path / 'nvgaze'
  (root / 'a').mkdir(parents=True)
  (root / 'a' / 'footage_description.csv').write_text(
      'archive,image_0,float_gaze_x_degree,float_gaze_y_degree\nf.zip,0.png,1.0,2.0\n')
  with pytest.raises(DatasetError, match='no image column .expected titles such as image_L_0'):
    data_lib.load_dataset(_config(root, tmp_path))
