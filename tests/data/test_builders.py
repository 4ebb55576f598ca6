"""Every public-dataset builder reads a tiny fixture in the exact release format back exactly.

For each format: every field (image, label, head pose, person, sample id), the counts,
and the sign conventions, checked against ground truth written in the release's own
representation (3-D vectors, Rodrigues rotations, MATLAB v7.3 layout, JSON, ...).
"""

import os

import numpy as np
import pytest

import fixtures_datasets as fx
from privateyes_jax import data as data_lib
from privateyes_jax import metrics
from privateyes_jax.data import builders
from privateyes_jax.data.builders import normalization

MPII_PEOPLE = ('p00', 'p01', 'p02')


def _load(name, manual_dir, tmp_path, **fields):
  return data_lib.load_dataset(fx.data_config(name, manual_dir, tmp_path / 'tfds', **fields))


def _check_against_truth(dataset, truth, image_atol=0):
  """Every person, sample id, image, label and head pose equals the truth, in source order."""
  assert dataset.person_names == sorted(truth)
  for person in dataset.people:
    records = {r.sample_id: r for r in truth[person.person]}
    # In the source's order (list, file or CSV order), not sorted by sample id.
    assert person.sample_id.tolist() == [r.sample_id for r in truth[person.person]], person.person
    for i, sample_id in enumerate(person.sample_id):
      r = records[sample_id]
      np.testing.assert_allclose(person.images[i], r.image, atol=image_atol,
                                 err_msg=f'{person.person} {sample_id}')
      np.testing.assert_allclose(person.labels[i], r.label, atol=1e-6)
      np.testing.assert_allclose(person.head_pose[i], r.head_pose, atol=1e-6)
    if dataset.label_kind == 'gaze':  # Written in one convention, read back: 0 deg apart.
      # float64: arccos near 1 would turn float32 rounding into ~0.02 deg.
      truth_labels = np.array([records[s].label for s in person.sample_id], np.float64)
      assert metrics.angular_error_deg(person.labels.astype(np.float64),
                                       truth_labels).max() < 1e-3


def test_mpiigaze_normalized_and_evaluation_subset(tmp_path):
  truth = fx.write_mpiigaze(tmp_path / 'MPIIGaze')
  ds = _load('mpiigaze', tmp_path / 'MPIIGaze', tmp_path, people=MPII_PEOPLE,
             expected_samples_per_person=8)
  assert ds.name == 'mpiigaze' and ds.label_kind == 'gaze' and ds.image_shape == (36, 60, 1)
  assert [p.num_samples for p in ds.people] == [8, 8, 8]  # Days of 4, 1 and 3 samples.
  _check_against_truth(ds, truth)
  p00 = ds.people[0]
  index = {s: i for i, s in enumerate(p00.sample_id)}
  # The explicit sign case: a gaze vector towards the image's left and up, a head
  # turned +0.2 rad about the camera's y axis (day01/0001.jpg is a left eye).
  left = index['day01/0001.jpg left']
  assert p00.labels[left, 0] > 0 and p00.labels[left, 1] > 0
  np.testing.assert_allclose(p00.head_pose[left], [0.0, 0.2], atol=1e-6)
  # Right eyes are mirrored: the bright band written on the left is on the right.
  right = index['day01/0002.jpg right']
  assert p00.images[right, :, -6:].min() == 255 and p00.images[left, :, :6].min() == 255


def test_mpiigaze_right_eye_sign_flip(tmp_path):
  """The same raw vectors as a right eye give the mirrored yaws (gaze and head)."""
  root = tmp_path / 'MPIIGaze'
  fx.write_mpiigaze(root, people=('p00',), day_sizes=(1,))
  list_path = root / 'Evaluation Subset' / 'sample list for eye image' / 'p00.txt'
  ds = _load('mpiigaze', root, tmp_path, people=('p00',), expected_samples_per_person=1)
  as_left = ds.people[0]
  list_path.write_text('day01/0001.jpg right\n')
  ds = _load('mpiigaze', root, tmp_path / 'other', people=('p00',),
             expected_samples_per_person=1)
  as_right = ds.people[0]
  # Sample 0 of day01 uses the explicit sign vectors on both sides.
  np.testing.assert_allclose(as_right.labels, as_left.labels * [1, -1], atol=1e-6)
  np.testing.assert_allclose(as_right.head_pose, [[0.0, -0.2]], atol=1e-6)


def test_mpiifacegaze_normalized_v73(tmp_path):
  truth = fx.write_mpiifacegaze_normalized(tmp_path / 'norm')
  with open(tmp_path / 'norm' / 'p00.mat', 'rb') as f:
    assert f.read(10) == b'MATLAB 7.3'  # The fixture is a genuine v7.3 file.
  ds = _load('mpiifacegaze', tmp_path / 'norm', tmp_path, people=MPII_PEOPLE,
             expected_samples_per_person=5, image_size=16)
  assert ds.image_shape == (16, 16, 3)
  _check_against_truth(ds, truth)  # Upright, RGB: the MATLAB/Caffe steps are undone.
  small = _load('mpiifacegaze', tmp_path / 'norm', tmp_path, people=MPII_PEOPLE,
                expected_samples_per_person=5, image_size=8)
  corner = small.people[0].images[:, 0, 0].astype(int)  # The red square is still top-left.
  assert np.all(corner[:, 0] > 200) and np.all(corner[:, 1:] < 120)


def _centroid(weights):
  v, u = np.mgrid[0:weights.shape[0], 0:weights.shape[1]]
  total = weights.sum()
  assert total > 0
  return np.array([(u * weights).sum() / total, (v * weights).sum() / total])


def _pitchyaw(vector):
  x, y, z = vector / np.linalg.norm(vector)
  return np.array([np.arcsin(-y), np.arctan2(-x, -z)])


def _angle(a, b):
  return np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))


def test_mpiifacegaze_raw_normalisation(tmp_path):
  samples = fx.write_mpiifacegaze_raw(tmp_path / 'raw')
  size = 32
  ds = _load('mpiifacegaze_raw', tmp_path / 'raw', tmp_path, people=('p00', 'p01'),
             expected_samples_per_person=3, image_size=size)
  assert ds.image_shape == (size, size, 3)
  focal = normalization.FOCAL_AT_REFERENCE * size / normalization.REFERENCE_SIZE
  for person in ds.people:
    for i, sample in enumerate(samples[person.person]):
      assert person.sample_id[i] == sample.path
      image = person.images[i].astype(float)
      # The face centre lands at the image centre, even behind p01's distorting lens.
      white = np.clip(image.min(-1) - 60, 0, None)
      np.testing.assert_allclose(_centroid(white), [size / 2, size / 2], atol=0.6)
      # 30 mm along the head's x axis appears to the right, on the same row: the
      # normalisation cancels head roll and does not mirror.
      red = np.clip(image[..., 0] - image[..., 1] - 40, 0, None)
      red_at = _centroid(red)
      assert abs(red_at[1] - size / 2) < 0.8 and red_at[0] > size / 2 + 2
      if person.person == 'p00':  # On the optical axis, head rolled only.
        assert abs(red_at[0] - (size / 2 + focal * 30 / 600)) < 0.8
        # The normalised gaze is the gaze in head coordinates; the head pose is zero.
        np.testing.assert_allclose(person.labels[i], _pitchyaw(sample.gaze_in_head), atol=1e-5)
        np.testing.assert_allclose(person.head_pose[i], [0.0, 0.0], atol=1e-5)
      # Rotations preserve angles: gaze vs. the line of sight to the camera, and gaze
      # vs. the facing direction, are the same before and after normalisation.
      gaze = sample.gaze_target - sample.face_center
      gaze_n = fx.gaze_vector(*person.labels[i])
      facing_n = fx.gaze_vector(*person.head_pose[i])
      assert abs(_angle(gaze_n, [0, 0, -1]) - _angle(gaze, -sample.face_center)) < 1e-5
      assert abs(_angle(gaze_n, facing_n) - _angle(gaze, -sample.head_rotation[:, 2])) < 1e-5


def test_gazecapture_official_split_and_fields(tmp_path):
  truth = fx.write_gazecapture(tmp_path / 'gc')
  ds = _load('gazecapture', tmp_path / 'gc', tmp_path, image_size=(22, 20))
  assert ds.label_kind == 'screen' and ds.image_shape == (22, 20, 3)
  # Default: train subjects, then test subjects (validation left out), so holdout
  # with num_test_people = number of test subjects is the official protocol.
  assert ds.person_names == ['00002', '00003', '00010']
  for person in ds.people:
    # Frame 1 has no left-eye detection and is left out.
    assert person.sample_id.tolist() == ['00000', '00002', '00003', '00004']
    np.testing.assert_array_equal(person.head_pose, 0)
    records = {r.sample_id: r for r in truth[person.person]}
    for i, sample_id in enumerate(person.sample_id):
      np.testing.assert_allclose(person.labels[i], records[sample_id].label, atol=1e-6)
      np.testing.assert_allclose(person.images[i], records[sample_id].image, atol=12)
    last = person.images[-1]  # The face box leaves the frame: zero padding there.
    assert np.all(last[18:] == 0) and np.all(last[:, 12:] == 0) and last[:18, :12].min() > 20
    assert metrics.label_error(person.labels, person.labels, 'screen').max() == 0
  everyone = _load('gazecapture', tmp_path / 'gc', tmp_path, image_size=(22, 20),
                   splits='train+validation+test')
  assert everyone.person_names == ['00002', '00003', '00005', '00010']


def test_preprocessed_mpiigaze_h5(tmp_path):
  truth = fx.write_mpiigaze_h5(str(tmp_path / 'h5' / 'MPIIGaze.h5'))
  ds = _load('mpiigaze_h5', tmp_path / 'h5', tmp_path, people=MPII_PEOPLE,
             expected_samples_per_person=6)
  assert ds.image_shape == (36, 60, 1)
  _check_against_truth(ds, truth)


def test_preprocessed_mpiifacegaze_h5(tmp_path):
  truth = fx.write_mpiifacegaze_h5(str(tmp_path / 'h5' / 'MPIIFaceGaze.h5'))
  ds = _load('mpiifacegaze_h5', tmp_path / 'h5', tmp_path, people=MPII_PEOPLE,
             expected_samples_per_person=4, image_size=16)
  _check_against_truth(ds, truth)  # BGR on disk, RGB read back.


def test_own_study_gaze(tmp_path):
  truth = fx.write_own_study(tmp_path / 'study')
  ds = _load('own_study', tmp_path / 'study', tmp_path)
  assert ds.label_kind == 'gaze' and ds.image_shape == (36, 60, 1)
  _check_against_truth(ds, truth, image_atol=2)  # PNG, JPEG and BMP of two sizes.


def test_own_study_screen_and_rgb(tmp_path):
  truth = fx.write_own_study(tmp_path / 'study', screen=True)
  ds = _load('own_study', tmp_path / 'study', tmp_path, label_kind='screen',
             image_size=(24, 40), channels=3)
  assert ds.label_kind == 'screen' and ds.image_shape == (24, 40, 3)
  for person in ds.people:
    labels = {r.sample_id: r.label for r in truth[person.person]}
    np.testing.assert_allclose(person.labels, [labels[s] for s in person.sample_id], atol=1e-3)
    np.testing.assert_array_equal(person.head_pose, 0)


def test_prepared_once_and_settings_separate(tmp_path):
  """A second load reads the prepared files (the archive may be gone); other settings
  (image size, people) are prepared separately instead of reusing stale files."""
  root = tmp_path / 'h5'
  fx.write_mpiigaze_h5(str(root / 'MPIIGaze.h5'))
  first = _load('mpiigaze_h5', root, tmp_path, people=MPII_PEOPLE,
                expected_samples_per_person=6)
  os.remove(root / 'MPIIGaze.h5')
  again = _load('mpiigaze_h5', root, tmp_path, people=MPII_PEOPLE,
                expected_samples_per_person=6)
  np.testing.assert_array_equal(first.people[1].images, again.people[1].images)
  with pytest.raises(data_lib.DatasetError, match='MPIIGaze.h5'):
    _load('mpiigaze_h5', root, tmp_path, people=MPII_PEOPLE, expected_samples_per_person=6,
          image_size=(18, 30))


def test_registry_names():
  assert set(builders.DATASETS) == {'mpiigaze', 'mpiifacegaze', 'mpiifacegaze_raw',
                                    'gazecapture', 'mpiigaze_h5', 'mpiifacegaze_h5',
                                    'own_study', 'nvgaze'}


def test_neutral_config_values_mean_defaults(tmp_path):
  """A config may carry every data field: empty values select the format's defaults."""
  from privateyes_jax.data.builders import common  # pylint: disable=g-import-not-at-top
  minimal = fx.data_config('mpiigaze', tmp_path, tmp_path)
  neutral = fx.data_config('mpiigaze', tmp_path, tmp_path, image_size=(), channels=0, people=(),
                           expected_samples_per_person=-1, splits='', h5_file='',
                           label_kind='', labels_file='', normalized_distance_mm=0.0)
  fmt = builders.dataset_format(minimal)
  assert common.build_params(fmt, neutral) == common.build_params(fmt, minimal)
  params = common.build_params(fmt, minimal)
  assert params.image_shape == (36, 60, 1) and params.expected_samples_per_person == 3000
  square = common.build_params(fmt, fx.data_config('mpiigaze', tmp_path, tmp_path,
                                                   image_size=24, channels=3))
  assert square.image_shape == (24, 24, 3)


def test_overwrite_prepares_again(tmp_path):
  """Without overwrite the prepared files are reused; with it, changed sources are re-read."""
  root = tmp_path / 'study'
  fx.write_own_study(root)
  config = fx.data_config('own_study', root, tmp_path / 'tfds')
  assert '15 samples' in builders.prepare_and_describe(config)
  labels = root / 'alice' / 'labels.csv'
  labels.write_text(labels.read_text() + 'img_000_again.png,0.1,0.1,0.0,0.0\n')
  (root / 'alice' / 'img_000_again.png').write_bytes((root / 'alice' / 'img_000.png').read_bytes())
  assert '15 samples' in builders.prepare_and_describe(config)
  assert '16 samples' in builders.prepare_and_describe(config, overwrite=True)
