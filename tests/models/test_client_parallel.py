"""Client-parallel GazeNet equals vmap of the flax model, forward and gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from privateyes_jax import training
from privateyes_jax.models import client_parallel
from privateyes_jax.models import gaze

SMALL = dict(conv_features=(4, 8))  # With hidden=16 in `_setup`.


def _setup(num_clients=3, batch=4, image_hw=(36, 60), conv_features=(4, 8), hidden=16,
           padding='SAME', images=None, seed=0):
  """A GazeNet, per-client params ``[C, ...]`` and a batch ``[C, B, ...]``."""
  model = gaze.GazeNet(conv_features=conv_features, hidden=hidden, padding=padding)
  rng = np.random.default_rng(seed)
  if images is None:
    images = rng.integers(0, 256, (num_clients, batch) + image_hw + (1,), dtype=np.uint8)
  head_pose = rng.normal(size=(num_clients, batch, 2)).astype(np.float32)
  # Random kernels scaled by fan-in and non-zero biases, drawn with numpy: as
  # good a test as flax's initialisers and much faster than compiling them.
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), images[0], head_pose[0])['params']
  params = jax.tree.map(
      lambda s: (rng.normal(size=(num_clients,) + s.shape)
                 * (0.1 if len(s.shape) == 1 else np.prod(s.shape[:-1]) ** -0.5)
                 ).astype(np.float32), shapes)
  batch = {'images': images, 'head_pose': head_pose,
           'labels': rng.normal(size=(num_clients, batch, 2)).astype(np.float32),
           'mask': np.ones((num_clients, batch), np.float32)}
  return model, params, batch


def _vmap_apply(model, params, batch):
  return jax.jit(jax.vmap(lambda p, x, h: model.apply({'params': p}, x, h)))(
      params, batch['images'], batch['head_pose'])


def _vmap_grads(model, params, batch):
  """Per-client gradients of `training.loss_fn`, client by client via vmap."""
  return jax.jit(jax.vmap(jax.grad(lambda p, b: training.loss_fn(model.apply, p, b))))(
      params, batch)


def _rel_err(a, b):
  return float(jnp.linalg.norm(a - b) / jnp.maximum(jnp.linalg.norm(b), 1e-30))


@pytest.mark.parametrize('conv_features,hidden,padding,patch_impl,jit,image_hw', [
    ((4, 8), 16, 'SAME', 'slices', True, (36, 60)),
    ((4, 8), 16, 'SAME', 'slices', False, (16, 24)),
    ((4, 8), 16, 'VALID', 'slices', True, (16, 24)),
    ((4, 8), 16, 'SAME', 'conv', True, (16, 24)),
    ((4, 8), 16, 'VALID', 'conv', False, (16, 24)),
    ((20, 50), 500, 'SAME', 'slices', True, (36, 60)),  # The ~3.4M-parameter model.
])
def test_forward_matches_vmap_of_flax(conv_features, hidden, padding, patch_impl, jit, image_hw):
  model, params, batch = _setup(num_clients=2, batch=3, image_hw=image_hw,
                                conv_features=conv_features, hidden=hidden, padding=padding)
  apply = lambda p, x, h: client_parallel.gazenet_apply_clients(
      p, x, h, conv_features=conv_features, padding=padding, patch_impl=patch_impl)
  apply = jax.jit(apply) if jit else apply
  out = apply(params, batch['images'], batch['head_pose'])
  assert out.shape == (2, 3, 2) and out.dtype == jnp.float32
  chex.assert_trees_all_close(out, _vmap_apply(model, params, batch), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize('padding,patch_impl,image_hw', [
    ('SAME', 'slices', (16, 24)),
    ('VALID', 'slices', (16, 24)),
    ('SAME', 'conv', (16, 24)),
    ('SAME', 'slices', (15, 25)),  # Odd sizes: pooling drops the last row/column.
])
def test_grads_match_vmap_of_grad(padding, patch_impl, image_hw):
  model, params, batch = _setup(padding=padding, image_hw=image_hw)
  grads = jax.jit(jax.grad(lambda p: client_parallel.client_losses(
      p, batch, padding=padding, patch_impl=patch_impl, **SMALL).sum()))(params)
  chex.assert_trees_all_close(grads, _vmap_grads(model, params, batch), atol=1e-6, rtol=1e-5)


def test_grads_match_flax_with_pooling_ties():
  # Flat image regions give exactly equal convolution outputs inside pooling
  # windows; flax routes the gradient to the first maximum, and so must we (an
  # even split among the ties would give different per-position gradients).
  rng = np.random.default_rng(1)
  images = np.full((2, 3, 16, 24, 1), 200, np.uint8)
  images[:, :, 4:10, 6:16] = rng.integers(0, 256, (2, 3, 6, 10, 1))
  model, params, batch = _setup(num_clients=2, batch=3, images=images)
  grads = jax.jit(jax.grad(lambda p: client_parallel.client_losses(p, batch, **SMALL).sum()))(
      params)
  chex.assert_trees_all_close(grads, _vmap_grads(model, params, batch), atol=1e-6, rtol=1e-5)


def test_client_losses_match_training_loss_fn():
  model, params, batch = _setup(image_hw=(16, 24))
  mask = np.ones((3, 4), np.float32)
  mask[0, 2:] = 0.0  # Padded samples.
  mask[2] = 0.0  # A client without data this step.
  batch['mask'] = mask
  losses = jax.jit(lambda p, b: client_parallel.client_losses(p, b, **SMALL))(params, batch)
  expected = jax.jit(jax.vmap(lambda p, b: training.loss_fn(model.apply, p, b)))(params, batch)
  assert losses.shape == (3,)
  chex.assert_trees_all_close(losses, expected, atol=1e-6, rtol=1e-5)


def test_bfloat16_compute_close_to_float32():
  # bfloat16 activations round pixels and activations to 8 significant bits and
  # can flip which element of a pooling window is the maximum, so per-tensor
  # gradients move by up to ~10% (relative L2) on random images while pointing
  # the same way (cosine > 0.99); the forward pass stays within ~0.5% (relative L2).
  model, params, batch = _setup(num_clients=2, batch=8, image_hw=(24, 40),
                                conv_features=(8, 16), hidden=32)
  del model
  kw = dict(conv_features=(8, 16))
  apply = jax.jit(lambda p, dtype: client_parallel.gazenet_apply_clients(
      p, batch['images'], batch['head_pose'], compute_dtype=dtype, **kw), static_argnums=1)
  out32, out16 = apply(params, jnp.float32), apply(params, jnp.bfloat16)
  assert out16.dtype == jnp.float32
  assert _rel_err(out16, out32) < 1e-2
  grad = jax.jit(jax.grad(lambda p, dtype: client_parallel.client_losses(
      p, batch, compute_dtype=dtype, **kw).sum()), static_argnums=1)
  g32, g16 = grad(params, jnp.float32), grad(params, jnp.bfloat16)
  for leaf16, leaf32 in zip(jax.tree.leaves(g16), jax.tree.leaves(g32)):
    assert leaf16.dtype == jnp.float32
    assert _rel_err(leaf16, leaf32) < 0.2
    cosine = jnp.vdot(leaf16, leaf32) / (jnp.linalg.norm(leaf16) * jnp.linalg.norm(leaf32))
    assert cosine > 0.98


@pytest.mark.parametrize('kwargs,match', [
    (dict(padding='CIRCULAR'), 'padding'),
    (dict(patch_impl='fft'), 'patch_impl'),
    (dict(conv_features=(4, 8, 16)), 'Expected GazeNet params'),
    (dict(conv_features=(4, 9)), 'Conv_1 kernel'),
])
def test_rejects_unsupported_configs(kwargs, match):
  _, params, batch = _setup(num_clients=2, batch=1, image_hw=(16, 24))
  kwargs = {'conv_features': (4, 8), **kwargs}
  with pytest.raises(ValueError, match=match):
    client_parallel.gazenet_apply_clients(params, batch['images'], batch['head_pose'], **kwargs)
