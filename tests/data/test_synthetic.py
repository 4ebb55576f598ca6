"""The synthetic identities: deterministic, learnable gaze, distinguishable people."""

import dataclasses

import ml_collections
import numpy as np
import pytest

from privateyes_jax import data as data_lib
from privateyes_jax.data import synthetic
from privateyes_jax.models import identity


def test_deterministic_per_seed():
  a = synthetic.make_dataset(3, 20, seed=5)
  b = synthetic.make_dataset(3, 20, seed=5)
  c = synthetic.make_dataset(3, 20, seed=6)
  for pa, pb, pc in zip(a.people, b.people, c.people):
    np.testing.assert_array_equal(pa.images, pb.images)
    np.testing.assert_array_equal(pa.labels, pb.labels)
    np.testing.assert_array_equal(pa.head_pose, pb.head_pose)
    assert not np.array_equal(pa.images, pc.images)


def test_person_independent_of_federation_size():
  small = synthetic.make_dataset(2, 10, seed=1)
  large = synthetic.make_dataset(5, 10, seed=1)
  np.testing.assert_array_equal(small.people[1].images, large.people[1].images)
  aux = synthetic.make_dataset(1, 10, seed=1, first_person=4)
  np.testing.assert_array_equal(aux.people[0].images, large.people[4].images)


def test_shapes_and_ranges():
  ds = synthetic.make_dataset(4, 50)
  assert ds.image_shape == (36, 60, 1) and ds.label_kind == 'gaze'
  for p in ds.people:
    assert p.images.dtype == np.uint8 and p.labels.dtype == np.float32
    assert np.all(np.abs(p.labels) < 0.9) and np.all(np.abs(p.head_pose) < 0.6)
    assert p.images.std() > 10  # Not blank.


def test_people_have_distinct_gaze_distributions():
  ds = synthetic.make_dataset(15, 200)
  means = np.array([p.labels.mean(0) for p in ds.people])
  # People look at different screen regions: mean gazes spread over several degrees.
  assert np.degrees(means.std(0)).min() > 3.0


def test_gaze_moves_the_iris():
  """Same person and head pose, gaze left vs right: the dark iris moves across the image."""
  idn = synthetic.make_identity(0, 0)
  rng = np.random.default_rng(0)
  head = np.zeros((2, 2))
  imgs = synthetic.render(idn, np.array([[0.0, 0.4], [0.0, -0.4]]), head, rng)
  darkest_col = [np.argmin(img.sum(0)) for img in imgs]
  # Positive yaw (MPII) looks towards -x: the iris is left of the negative-yaw iris.
  assert darkest_col[0] < darkest_col[1] - 5


def test_people_are_distinguishable():
  """A small classifier tells the 15 people apart on held-out samples (>= 90%)."""
  ds = synthetic.make_dataset(15, 160)
  split = 120
  train_x = np.concatenate([p.images[:split] for p in ds.people])
  train_y = np.concatenate([np.full(split, i) for i in range(15)])
  test_x = np.concatenate([p.images[split:] for p in ds.people])
  test_y = np.concatenate([np.full(160 - split, i) for i in range(15)])
  model, params = identity.train_classifier(train_x, train_y, 15, steps=150,
                                            features=(8, 16, 32))
  accuracy = (identity.predict_logits(model, params, test_x).argmax(-1) == test_y).mean()
  assert accuracy >= 0.9, accuracy


def _data_config(**kw):
  c = ml_collections.ConfigDict(dict(name='synthetic', source='memory', data_dir='', seed=0,
                                     num_people=5, samples_per_person=12, protocol='holdout',
                                     num_test_people=2, fold=0))
  c.update(kw)
  return c


def test_tfds_builder_matches_in_memory(tmp_path):
  memory = data_lib.load_dataset(_data_config())
  via_tfds = data_lib.load_dataset(_data_config(source='tfds', data_dir=str(tmp_path)))
  assert memory.person_names == via_tfds.person_names
  for a, b in zip(memory.people, via_tfds.people):
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.head_pose, b.head_pose)
    np.testing.assert_array_equal(a.sample_id.astype(int), b.sample_id.astype(int))
  # A second load reads the prepared files instead of rebuilding.
  again = data_lib.load_dataset(_data_config(source='tfds', data_dir=str(tmp_path)))
  np.testing.assert_array_equal(again.people[0].images, memory.people[0].images)


def test_protocols():
  ds = data_lib.load_dataset(_data_config())
  train, test = data_lib.split_people(ds, _data_config())
  assert train.person_names == ['p00', 'p01', 'p02'] and test.person_names == ['p03', 'p04']
  train, test = data_lib.split_people(ds, _data_config(protocol='loo', fold=1))
  assert test.person_names == ['p01'] and len(train.people) == 4
  with pytest.raises(ValueError, match='fold'):
    data_lib.split_people(ds, _data_config(protocol='loo', fold=5))
  with pytest.raises(ValueError, match='num_test_people'):
    data_lib.split_people(ds, _data_config(num_test_people=5))
  with pytest.raises(ValueError, match='protocol'):
    data_lib.split_people(ds, _data_config(protocol='random'))


def test_bad_dataset_requests():
  with pytest.raises(data_lib.DatasetError, match='num_people'):
    synthetic.make_dataset(0, 10)
  with pytest.raises(ValueError, match='Unknown dataset'):
    data_lib.load_dataset(_data_config(name='mpiigaze_typo'))
  p = synthetic.make_dataset(1, 4).people[0]
  with pytest.raises(data_lib.DatasetError, match='NaN'):
    dataclasses.replace(p, labels=np.full((4, 2), np.nan, np.float32))
  with pytest.raises(data_lib.DatasetError, match='shape'):
    dataclasses.replace(p, head_pose=np.zeros((3, 2), np.float32))


def test_easy_is_the_default_and_unknown_difficulties_are_refused():
  easy = synthetic.make_dataset(2, 6, seed=3, difficulty='easy')
  default = synthetic.make_dataset(2, 6, seed=3)
  for a, b in zip(easy.people, default.people):
    np.testing.assert_array_equal(a.images, b.images)
  with pytest.raises(data_lib.DatasetError, match='difficulty'):
    synthetic.make_dataset(2, 6, difficulty='hard')
  with pytest.raises(data_lib.DatasetError, match='difficulty'):
    data_lib.load_dataset(_data_config(difficulty='hard'))


def test_realistic_people_keep_their_traits_less_pronounced():
  """The same draws make person i under both settings; 'realistic' shrinks them."""
  spread = synthetic.DIFFICULTIES['realistic'].identity_spread
  for i in range(3):
    easy = synthetic.make_identity(7, i, 'easy')
    real = synthetic.make_identity(7, i, 'realistic')
    for name, lo, hi in synthetic._APPEARANCE:  # pylint: disable=protected-access
      mid = 0.5 * (lo + hi)
      assert getattr(real, name) == pytest.approx(mid + spread * (getattr(easy, name) - mid))
    # Behaviour (where the person looks, how they hold their head) is not shrunk.
    np.testing.assert_array_equal(real.gaze_mean, easy.gaze_mean)
    np.testing.assert_array_equal(real.head_mean, easy.head_mean)


def test_realistic_people_are_as_hard_to_tell_apart_as_real_eyes():
  """Issue #14: 10 people score 0.30-0.45 on the nearest-centroid statistic (real lab
  eye crops: 0.375); 'easy' people are far easier. Kills a renderer that drops the
  within-person variation or the shrinkage (either alone scores above 0.45)."""
  from privateyes_jax.data import identity_difficulty  # pylint: disable=g-import-not-at-top
  # Seed 1001 is one of the calibration seeds (docs/DECISIONS.md), not the demo's.
  realistic = identity_difficulty.nearest_centroid(
      synthetic.make_dataset(10, 200, seed=1001, difficulty='realistic'))
  easy = identity_difficulty.nearest_centroid(synthetic.make_dataset(10, 200, seed=1001))
  assert 0.30 <= realistic.accuracy <= 0.45, realistic.describe()
  assert easy.accuracy > 0.75, easy.describe()
  assert realistic.interval[0] > realistic.chance  # Still people, not noise.


def test_realistic_through_configs_and_tfds(tmp_path):
  memory = data_lib.load_dataset(_data_config(difficulty='realistic', num_people=2))
  direct = synthetic.make_dataset(2, 12, seed=0, difficulty='realistic')
  np.testing.assert_array_equal(memory.people[1].images, direct.people[1].images)
  assert not np.array_equal(memory.people[1].images,
                            synthetic.make_dataset(2, 12, seed=0).people[1].images)
  via_tfds = data_lib.load_dataset(_data_config(difficulty='realistic', num_people=2,
                                                source='tfds', data_dir=str(tmp_path)))
  np.testing.assert_array_equal(via_tfds.people[1].images, direct.people[1].images)
  # An 'easy' build of the same people is another prepared dataset, not this one.
  easy = data_lib.load_dataset(_data_config(num_people=2, source='tfds', data_dir=str(tmp_path)))
  assert not np.array_equal(easy.people[1].images, direct.people[1].images)
  # Auxiliary people past the federation's, through the config.
  aux = data_lib.load_dataset(_data_config(num_people=1, first_person=1, difficulty='realistic'))
  assert aux.person_names == ['p01']
  np.testing.assert_array_equal(aux.people[0].images, direct.people[1].images)
