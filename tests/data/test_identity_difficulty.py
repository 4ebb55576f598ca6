"""The nearest-centroid identity statistic: features, the rule, intervals, any data config."""

import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

import fixtures_datasets as fx
from privateyes_jax.data import base
from privateyes_jax.data import identity_difficulty as idd


def _person(name, images):
  n = len(images)
  return base.PersonData(person=name, images=images.astype(np.uint8),
                         labels=np.zeros((n, 2), np.float32),
                         head_pose=np.zeros((n, 2), np.float32), sample_id=np.arange(n))


def test_block_features_are_normalised_block_means():
  img = np.zeros((1, 8, 12, 1))
  img[0, :2, :3] = 100.0  # Exactly the top-left block of a 4x4 grid of 2x3 blocks.
  f = idd.block_features(img)
  expected = np.zeros(16)
  expected[0] = 100.0
  expected = (expected - expected.mean()) / expected.std()
  np.testing.assert_allclose(f[0], expected)
  # Brightness and contrast (gain and offset) do not change the features.
  np.testing.assert_allclose(idd.block_features(0.5 * img + 40), f, atol=1e-12)
  # A flat image has no layout: zeros, not NaN.
  np.testing.assert_array_equal(idd.block_features(np.full((2, 36, 60, 1), 7.0)), 0.0)
  # Sizes the grid does not divide still give 16 blocks; colour is averaged to grey.
  assert idd.block_features(np.ones((3, 37, 61, 3))).shape == (3, 16)
  with pytest.raises(ValueError, match='smaller'):
    idd.block_features(np.ones((1, 3, 60, 1)))


def test_wilson_interval():
  lo, hi = idd.wilson_interval(50, 100)
  assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
  assert idd.wilson_interval(0, 10)[0] == 0.0


def test_distinct_layouts_are_recognised_and_identical_people_are_at_chance():
  rng = np.random.default_rng(0)
  people = []
  for i in range(4):  # Person i: a bright block at grid cell i, under noise.
    imgs = rng.integers(0, 30, (40, 36, 60, 1)).astype(float)
    imgs[:, :9, 15 * i:15 * (i + 1)] += 200
    people.append(_person(f'p{i}', imgs))
  r = idd.nearest_centroid(people)
  assert r.accuracy == 1.0 and r.mean8_accuracy == 1.0 and r.chance == 0.25
  assert r.num_test_images == 80 and r.num_groups == 8
  assert r.interval[0] > 0.9 and r.interval[1] == pytest.approx(1.0)
  assert '4 people' in r.describe() and 'chance 0.250' in r.describe()
  # Everybody drawn from one distribution: nothing to tell apart.
  same = [_person(f'q{i}', rng.integers(0, 255, (200, 12, 16, 1))) for i in range(5)]
  r = idd.nearest_centroid(same)
  assert r.interval[0] < r.chance < r.interval[1], r.describe()
  assert r.accuracy < 0.35


def test_split_and_refusals():
  rng = np.random.default_rng(1)
  # Each person's first half is dark-left, second half dark-right: an ordered split
  # never sees the second layout in the templates, a random split does.
  people = []
  for i in range(3):
    imgs = rng.integers(100, 120, (20, 8, 8, 1)).astype(float)
    imgs[:10, :, :4 if i else 2] = 0
    imgs[10:, i * 2:(i + 1) * 2 + 2, 4:] = 0
    people.append(_person(f'p{i}', imgs))
  assert idd.nearest_centroid(people, split='ordered').accuracy < idd.nearest_centroid(
      people, split='random').accuracy
  with pytest.raises(ValueError, match='at least 2 people'):
    idd.nearest_centroid(people[:1])
  with pytest.raises(ValueError, match='split'):
    idd.nearest_centroid(people, split='halves')
  with pytest.raises(ValueError, match='needs >= 2'):
    idd.nearest_centroid([people[0], _person('x', np.zeros((1, 8, 8, 1)))])


def test_measure_loads_a_run_data_config():
  data = ml_collections.ConfigDict(dict(
      name='synthetic', source='memory', seed=0, num_people=5, samples_per_person=16,
      protocol='holdout', num_test_people=2, fold=0, difficulty='easy'))
  assert idd.measure(data).num_people == 5
  assert idd.measure(data, people='train').num_people == 3
  assert idd.measure(data, people='test').num_people == 2
  assert idd.measure(data, max_people=4).num_people == 4
  with pytest.raises(ValueError, match='people must be'):
    idd.measure(data, people='some')


def _command(*args):
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return subprocess.run([sys.executable, '-m', 'experiments.identity_difficulty',
                         '--config=experiments/configs/default.py:tiny', *args], cwd=root,
                        env=dict(os.environ, PYTHONPATH=root), capture_output=True, text=True,
                        timeout=300)


def test_command_on_an_own_study(tmp_path):
  """The command measures any dataset a run can load, here a prepared own study."""
  fx.write_own_study(str(tmp_path / 'raw'), people=('alice', 'bob', 'carol'), n=6)
  out = _command('--config.data.name=own_study', '--config.data.source=tfds',
                 f'--config.data.manual_dir={tmp_path / "raw"}',
                 f'--config.data.data_dir={tmp_path / "tfds"}')
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'own_study: 3 people, nearest-centroid accuracy' in out.stdout
  assert 'over 9 images' in out.stdout and 'chance 0.333' in out.stdout
  bad = _command('--config.data.difficulty=hard')
  assert bad.returncode == 1 and 'Unknown synthetic difficulty' in bad.stderr
  assert 'Traceback' not in bad.stderr
