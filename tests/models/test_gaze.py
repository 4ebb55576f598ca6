"""The gaze model's interface and size."""

import jax
import ml_collections
import numpy as np
import pytest

from privateyes_jax.models import gaze


def _cfg(**kw):
  c = ml_collections.ConfigDict(dict(name='gazenet', conv_features=(20, 50), hidden=500,
                                     padding='SAME'))
  c.update(kw)
  return c


def test_gazenet_shapes_and_size():
  model = gaze.build_model(_cfg())
  images = np.zeros((3, 36, 60, 1), np.uint8)
  head = np.zeros((3, 2), np.float32)
  params = model.init(jax.random.PRNGKey(0), images, head)['params']
  n = sum(x.size for x in jax.tree.leaves(params))
  assert 3.3e6 < n < 3.5e6, n  # The ~3.4M-parameter model of DESIGN.md §7.
  out = model.apply({'params': params}, images, head)
  assert out.shape == (3, 2)


def test_head_pose_is_used():
  model = gaze.build_model(_cfg(conv_features=(4, 8), hidden=16))
  images = np.random.default_rng(0).integers(0, 255, (2, 36, 60, 1), dtype=np.uint8)
  params = model.init(jax.random.PRNGKey(0), images, np.zeros((2, 2), np.float32))['params']
  a = model.apply({'params': params}, images, np.zeros((2, 2), np.float32))
  b = model.apply({'params': params}, images, np.full((2, 2), 0.3, np.float32))
  assert not np.allclose(a, b)


def test_unknown_model():
  with pytest.raises(ValueError, match='Unknown model'):
    gaze.build_model(_cfg(name='resnet1000'))
