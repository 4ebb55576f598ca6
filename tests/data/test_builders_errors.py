"""Bad input is refused with a DatasetError naming the file; a failed build leaves nothing.

Covered per format: missing person folders or files, a wrong sample count, truncated
MATLAB v5 / v7.3 / HDF5 files, labels out of range, unreadable images; and the
guarantee that a build that fails half-way leaves no files a later run would read.
"""

import json
import os
import re
import shutil

import h5py
import pytest

import fixtures_datasets as fx
from privateyes_jax import data as data_lib
from privateyes_jax.data import builders
from privateyes_jax.data.builders import common

DatasetError = data_lib.DatasetError
MPII_PEOPLE = ('p00', 'p01', 'p02')


def _load(name, manual_dir, tmp_path, **fields):
  return data_lib.load_dataset(fx.data_config(name, manual_dir, tmp_path / 'tfds', **fields))


def _truncate(path, keep=0.5):
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    f.truncate(int(size * keep))


def _raises(path, *more):
  """pytest.raises(DatasetError) whose message names ``path`` (and ``more`` patterns)."""
  return pytest.raises(DatasetError, match=re.escape(str(path)) + ''.join(f'.*{m}' for m in more))


@pytest.fixture
def mpiigaze(tmp_path):
  root = tmp_path / 'MPIIGaze'
  fx.write_mpiigaze(root)
  return root


def test_mpiigaze_missing_person_folder(mpiigaze, tmp_path):
  shutil.rmtree(mpiigaze / 'Data' / 'Normalized' / 'p01')
  with _raises(mpiigaze / 'Data' / 'Normalized' / 'p01', 'missing'):
    _load('mpiigaze', mpiigaze, tmp_path, people=MPII_PEOPLE, expected_samples_per_person=8)


def test_mpiigaze_default_expects_all_fifteen_people(mpiigaze, tmp_path):
  with pytest.raises(DatasetError, match='no data for person p03 .and 11 more'):
    _load('mpiigaze', mpiigaze, tmp_path, expected_samples_per_person=8)


def test_mpiigaze_wrong_sample_count(mpiigaze, tmp_path):
  list_path = mpiigaze / 'Evaluation Subset' / 'sample list for eye image' / 'p00.txt'
  with _raises(list_path, 'person p00 has 8 samples, expected 3000'):
    _load('mpiigaze', mpiigaze, tmp_path, people=MPII_PEOPLE)  # The default: 3000 each.


def test_mpiigaze_listed_sample_not_in_day_file(mpiigaze, tmp_path):
  list_path = mpiigaze / 'Evaluation Subset' / 'sample list for eye image' / 'p00.txt'
  list_path.write_text(list_path.read_text().replace('day02/0001.jpg', 'day02/0099.jpg'))
  with _raises(mpiigaze / 'Data' / 'Normalized' / 'p00' / 'day02.mat', "0099.jpg"):
    _load('mpiigaze', mpiigaze, tmp_path, people=MPII_PEOPLE, expected_samples_per_person=8)


def test_mpiigaze_malformed_list_line(mpiigaze, tmp_path):
  list_path = mpiigaze / 'Evaluation Subset' / 'sample list for eye image' / 'p01.txt'
  list_path.write_text(list_path.read_text() + 'day01/0001.jpg both\n')
  with _raises(f'{list_path}:9', 'left.right'):
    _load('mpiigaze', mpiigaze, tmp_path, people=MPII_PEOPLE, expected_samples_per_person=0)


def test_mpiigaze_truncated_mat(mpiigaze, tmp_path):
  mat = mpiigaze / 'Data' / 'Normalized' / 'p01' / 'day01.mat'
  _truncate(mat)
  with _raises(mat, 'truncated'):
    _load('mpiigaze', mpiigaze, tmp_path, people=MPII_PEOPLE, expected_samples_per_person=8)


def test_mpiigaze_gaze_pointing_away(tmp_path):
  root = tmp_path / 'MPIIGaze'
  fx.write_mpiigaze(root, people=('p00',), day_sizes=(2,))
  mat_path = root / 'Data' / 'Normalized' / 'p00' / 'day01.mat'
  from scipy import io as scipy_io  # pylint: disable=g-import-not-at-top
  mat = scipy_io.loadmat(mat_path)
  mat['data']['left'][0, 0]['gaze'][0, 0][0] = [0.1, 0.1, 1.0]  # z > 0: away from the camera.
  scipy_io.savemat(mat_path, {'data': mat['data'], 'filenames': mat['filenames']})
  with _raises(mat_path, 'towards the camera'):
    _load('mpiigaze', root, tmp_path, people=('p00',), expected_samples_per_person=2)


def test_mpiifacegaze_truncated_v73(tmp_path):
  root = tmp_path / 'norm'
  fx.write_mpiifacegaze_normalized(root)
  _truncate(root / 'p02.mat')
  with _raises(root / 'p02.mat'):
    _load('mpiifacegaze', root, tmp_path, people=MPII_PEOPLE, expected_samples_per_person=5,
          image_size=16)


def test_mpiifacegaze_wrong_count_and_missing_person(tmp_path):
  root = tmp_path / 'norm'
  fx.write_mpiifacegaze_normalized(root)
  with _raises(root / 'p00.mat', 'person p00 has 5 samples, expected 4'):
    _load('mpiifacegaze', root, tmp_path, people=MPII_PEOPLE, expected_samples_per_person=4)
  with _raises(root, 'no data for person p07'):
    _load('mpiifacegaze', root, tmp_path, people=('p00', 'p07'), expected_samples_per_person=5)


def test_mpiifacegaze_raw_missing_image_and_bad_line(tmp_path):
  root = tmp_path / 'raw'
  fx.write_mpiifacegaze_raw(root)
  os.remove(root / 'p01' / 'day01' / '0002.jpg')
  with _raises(root / 'p01' / 'day01' / '0002.jpg', 'not found', 'p01.txt:2'):
    _load('mpiifacegaze_raw', root, tmp_path, people=('p00', 'p01'),
          expected_samples_per_person=3)
  annotations = root / 'p00' / 'p00.txt'
  annotations.write_text(annotations.read_text() + 'day01/0009.jpg 1 2 3\n')
  with _raises(f'{annotations}:4', 'expected 28 fields'):
    _load('mpiifacegaze_raw', root, tmp_path, people=('p00',), expected_samples_per_person=4)


def test_preprocessed_h5_truncated_and_degrees(tmp_path):
  path = tmp_path / 'h5' / 'MPIIGaze.h5'
  fx.write_mpiigaze_h5(str(path))
  with h5py.File(path, 'r+') as f:
    f['p01/gaze'][2] = [10.0, 25.0]  # Degrees where radians belong.
  with _raises(path, 'p01', 'gaze of sample 2 is .10.0, 25.0.', 'Degrees instead of radians'):
    _load('mpiigaze_h5', path.parent, tmp_path, people=MPII_PEOPLE,
          expected_samples_per_person=6)
  _truncate(path, keep=0.3)
  with _raises(path):
    _load('mpiigaze_h5', path.parent, tmp_path / 'b', people=MPII_PEOPLE,
          expected_samples_per_person=6)


def test_face_h5_mismatched_groups(tmp_path):
  path = tmp_path / 'h5' / 'MPIIFaceGaze.h5'
  fx.write_mpiifacegaze_h5(str(path))
  with h5py.File(path, 'r+') as f:
    del f['p01/pose/0003']
  with _raises(path, 'p01 image/pose/gaze hold different samples', '0003'):
    _load('mpiifacegaze_h5', path.parent, tmp_path, people=MPII_PEOPLE,
          expected_samples_per_person=4, image_size=16)


def test_gazecapture_bad_inputs(tmp_path):
  root = tmp_path / 'gc'
  fx.write_gazecapture(root)
  frame = root / '00003' / 'frames' / '00002.jpg'
  frame.write_bytes(b'not a jpeg at all')
  with _raises(frame, 'cannot read the image'):
    _load('gazecapture', root, tmp_path, image_size=16)
  dots = root / '00002' / 'dotInfo.json'
  record = json.loads(dots.read_text())
  record['XCam'][3] = 250.0  # 2.5 m from the camera: not a screen position in cm.
  dots.write_text(json.dumps(record))
  with _raises(dots, 'out of range'):
    _load('gazecapture', root, tmp_path / 'b', image_size=16)
  record['XCam'] = record['XCam'][:-1]  # One entry short.
  dots.write_text(json.dumps(record))
  with _raises(dots, "'XCam' has 4 entries, expected one per frame"):
    _load('gazecapture', root, tmp_path / 'c', image_size=16)
  os.remove(root / '00005' / 'info.json')
  with _raises(root / '00005' / 'info.json', 'not found'):
    _load('gazecapture', root, tmp_path / 'd', image_size=16, people=('00005',))
  with _raises(root, 'no data for person 00042'):
    _load('gazecapture', root, tmp_path / 'e', image_size=16, people=('00002', '00042'))


def test_own_study_bad_inputs(tmp_path):
  root = tmp_path / 'study'
  fx.write_own_study(root)
  labels = root / 'bob' / 'labels.csv'
  lines = labels.read_text().splitlines()
  good = list(lines)
  lines[3] = 'img_002.bmp,20.0,-10.0,0.0,0.0'  # Degrees.
  labels.write_text('\n'.join(lines) + '\n')
  with _raises(labels, 'gaze of line 4 is .20.0, -10.0.', 'Degrees instead of radians'):
    _load('own_study', root, tmp_path)
  lines[3] = 'img_002.bmp,abc,0.1,0.0,0.0'
  labels.write_text('\n'.join(lines) + '\n')
  with _raises(f'{labels}:4', "'pitch' must be a number"):
    _load('own_study', root, tmp_path)
  labels.write_text('\n'.join(good) + '\n')
  os.remove(root / 'carol' / 'labels.csv')
  with _raises(root / 'carol' / 'labels.csv', 'not found'):
    _load('own_study', root, tmp_path)
  with _raises(root, 'no data for person dave'):
    _load('own_study', root, tmp_path, people=('alice', 'dave'))
  with _raises(root / 'alice' / 'labels.csv', "has gaze labels", "label_kind='gaze'"):
    _load('own_study', root, tmp_path, people=('alice',), label_kind='screen')


def test_unset_or_missing_manual_dir(tmp_path):
  with pytest.raises(DatasetError, match='set data.manual_dir'):
    _load('mpiigaze', '', tmp_path)
  with _raises(tmp_path / 'nowhere', 'not a directory'):
    _load('mpiigaze', tmp_path / 'nowhere', tmp_path)


def _dataset_files(data_dir):
  """Files of prepared or half-prepared datasets (not TFDS's per-builder .config notes)."""
  found = []
  for root, _, files in os.walk(data_dir):
    found += [os.path.relpath(os.path.join(root, f), data_dir) for f in files]
  return [f for f in found if '/.config/' not in f and not f.startswith('downloads')]


def test_failed_build_leaves_nothing_to_read(tmp_path):
  """An unreadable image found half-way through writing: the error names it, no
  partial dataset remains (not even incomplete.* files), and once fixed, a rebuild
  prepares everything."""
  root = tmp_path / 'study'
  truth = fx.write_own_study(root)
  bad = root / 'carol' / 'img_003.png'  # The last person: earlier people are written.
  good_bytes = bad.read_bytes()
  bad.write_bytes(good_bytes[:len(good_bytes) // 2])  # A truncated PNG.
  config = fx.data_config('own_study', root, tmp_path / 'tfds')
  with _raises(bad, 'cannot read the image'):
    data_lib.load_dataset(config)
  fmt = builders.dataset_format(config)
  assert not common.make_builder(fmt, config).is_prepared()
  assert not _dataset_files(tmp_path / 'tfds')
  bad.write_bytes(good_bytes)
  dataset = data_lib.load_dataset(config)
  assert [p.num_samples for p in dataset.people] == [len(truth[p]) for p in sorted(truth)]
  assert any(f.endswith('dataset_info.json') for f in _dataset_files(tmp_path / 'tfds'))


def test_data_prep_summary(tmp_path):
  root = tmp_path / 'gc'
  fx.write_gazecapture(root)
  config = fx.data_config('gazecapture', root, tmp_path / 'tfds', image_size=16)
  text = builders.prepare_and_describe(config)
  for expected in ('4 people, 16 samples', 'train 2, validation 1, test 1',
                   '00002: 4, 00003: 4, 00005: 4, 00010: 4', 'screen target x [',
                   'data.num_test_people=1'):
    assert expected in text, (expected, text)
  study = tmp_path / 'study'
  fx.write_own_study(study)
  text = builders.prepare_and_describe(fx.data_config('own_study', study, tmp_path / 'tfds'))
  assert '3 people, 15 samples' in text and 'gaze pitch [' in text and 'head pitch [' in text
