"""The full-face model: ResNet-14-sized by default, pure params, both heads, trainable."""

import jax
import ml_collections
import numpy as np
import optax
import pytest

from privateyes_jax import training
from privateyes_jax.models import face

TINY = dict(name='resnet_face', stem_features=4, stage_features=(4, 8), blocks_per_stage=(1, 1),
            norm_groups=2, head_hidden=8)


def _model(**fields):
  return face.build_face_model(ml_collections.ConfigDict(dict(TINY, **fields)))


def _inputs(shape=(8, 32, 32, 3), seed=0):
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, shape, dtype=np.uint8),
          rng.uniform(-0.3, 0.3, (shape[0], 2)).astype(np.float32))


def _num_params(params):
  return sum(x.size for x in jax.tree.leaves(params))


@pytest.fixture(scope='module')
def tiny():
  """The tiny model and its parameters for 32x32 RGB faces (compiled once per module)."""
  model = _model()
  images, head = _inputs()
  return model, model.init(jax.random.PRNGKey(0), images, head)['params']


def test_default_is_resnet14_sized():
  """224x224 faces -> 14x14x256 spatially weighted maps -> (pitch, yaw); ~3M parameters."""
  model = face.build_face_model(ml_collections.ConfigDict({'name': 'resnet_face'}))
  images, head = _inputs((2, 224, 224, 3))
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), images, head)['params']
  assert 2.8e6 < _num_params(shapes) < 3.2e6, _num_params(shapes)
  assert shapes['gaze']['kernel'].shape == (14 * 14 * 256, 2)
  assert 'SpatialWeights_0' in shapes
  assert jax.eval_shape(model.apply, {'params': shapes}, images, head).shape == (2, 2)


def test_forward_is_pure_and_ignores_head_pose(tiny):
  model, params = tiny
  images, head = _inputs()
  # Params only: no batch statistics or other mutable state (GroupNorm, not BatchNorm).
  assert set(model.init(jax.random.PRNGKey(0), images[:1], head[:1])) == {'params'}
  out = model.apply({'params': params}, images, head)
  assert out.shape == (8, 2) and np.all(np.isfinite(out))
  np.testing.assert_array_equal(out, model.apply({'params': params}, images, head + 0.5))


def test_head_pose_when_asked():
  model = _model(use_head_pose=True)
  images, head = _inputs((2, 36, 60, 1))  # Any size and channel count.
  params = model.init(jax.random.PRNGKey(0), images, head)['params']
  a = model.apply({'params': params}, images, head)
  b = model.apply({'params': params}, images, head + 0.5)
  assert a.shape == (2, 2) and not np.allclose(a, b)


def test_screen_head_and_options():
  images, head = _inputs()
  model = _model(head='screen')
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), images, head)['params']
  assert 'screen_hidden' in params and 'screen_target' in params and 'gaze' not in params
  assert params['screen_hidden']['kernel'].shape[1] == 8
  assert jax.eval_shape(model.apply, {'params': params}, images, head).shape == (8, 2)
  model = _model(spatial_weights=False)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), images, head)['params']
  assert 'SpatialWeights_0' not in params


def test_learns_with_the_shared_training_step(tiny):
  model, params = tiny
  images, head = _inputs()
  labels = np.random.default_rng(1).uniform(-0.3, 0.3, (8, 2)).astype(np.float32)
  batch = {'images': images, 'head_pose': head, 'labels': labels, 'mask': np.ones(8, np.float32)}
  optimizer = optax.adam(3e-3)
  update = jax.jit(training.make_update_fn(model.apply, optimizer))
  opt_state = optimizer.init(params)
  losses = []
  for _ in range(30):
    params, opt_state, loss = update(params, opt_state, batch)
    losses.append(float(loss))
  assert losses[-1] < 0.5 * losses[0], losses


def test_bad_configs():
  with pytest.raises(ValueError, match='model.head'):
    _model(head='pixels')
  with pytest.raises(ValueError, match='equal length'):
    _model(blocks_per_stage=(1,))
