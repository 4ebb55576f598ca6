"""Gradient inversion without a prior (issue #14 a) recovers a single image from its update."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from privateyes_jax import metrics
from privateyes_jax.attacks import gradient_inversion
from privateyes_jax.data import synthetic
from privateyes_jax.models import gaze

SHAPE = (12, 20, 1)  # Synthetic eyes block-averaged 3x3: a CPU-seconds problem.


def _small_eyes(person, n):
  images = synthetic.make_dataset(person + 1, n, seed=0).people[person]
  x = images.images[:n].astype(np.float32).reshape(n, 12, 3, 20, 3, 1).mean(axis=(2, 4))
  return np.round(x).astype(np.uint8), images.labels[:n], images.head_pose[:n]


@pytest.fixture(scope='module')
def setting():
  model = gaze.GazeNet(conv_features=(4, 8), hidden=32, padding='SAME')
  people = [_small_eyes(p, 1) for p in (0, 1)]
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + SHAPE), jnp.zeros((1, 2)))['params']

  def client_update(x, y, hp):  # One local SGD step on one image: the individual update.
    loss = lambda p: jnp.mean(jnp.sum(jnp.abs(
        model.apply({'params': p}, jnp.asarray(x, jnp.float32), hp) - y), -1))
    return jax.tree.map(lambda g: -0.05 * g, jax.grad(loss)(params))

  config = gradient_inversion.default_config('tiny')
  config.restarts = 1  # CPU time; the margin below held with 1 and 2 restarts.
  inversion = gradient_inversion.make_inversion(model.apply, config, SHAPE)
  results = [gradient_inversion.attack_person(jax.random.PRNGKey(1), model.apply, params,
                                              client_update(*p), config, SHAPE, p[2],
                                              inversion=inversion) for p in people]
  return model, params, people, results


def test_single_image_is_recovered_from_its_update(setting):
  """Kills: a matching term that ignores the observed update (``match = 0 * cos(...)``,
  shown failing: own == swapped PSNR): then the reconstruction from person 0's update
  is no closer to person 0's image than the one from person 1's update.

  Not a mutant: matching ``−Δ`` instead of ``Δ`` (``1 + cos``) passes, because with
  jointly optimised labels an L1 update's sign flips with the residuals' signs; the
  attack is symmetric in it.
  """
  _, _, people, results = setting
  own = [float(metrics.psnr(r['images'], p[0])[0]) for r, p in zip(results, people)]
  swapped = [float(metrics.psnr(results[1 - i]['images'], people[i][0])[0]) for i in (0, 1)]
  rnd = np.random.default_rng(0).integers(0, 256, people[0][0].shape).astype(np.uint8)
  noise = [float(metrics.psnr(rnd, p[0])[0]) for p in people]
  print('PSNR own', own, 'from the other update', swapped, 'random image', noise)
  assert min(o - s for o, s in zip(own, swapped)) > 2.0, (own, swapped)
  assert min(o - n for o, n in zip(own, noise)) > 5.0, (own, noise)
  for r in results:
    assert r['images'].dtype == np.uint8 and r['images'].shape == (1,) + SHAPE
    assert r['gaze'].shape == (1, 2) and np.all(np.isfinite(r['gaze']))
    assert r['match'] < 0.5 and r['loss'] == min(r['restart_losses'])


def test_zero_update_is_refused(setting):
  model, params, _, _ = setting
  zero = jax.tree.map(jnp.zeros_like, params)
  with pytest.raises(ValueError, match='zero'):
    gradient_inversion.invert(jax.random.PRNGKey(0), model.apply, params, zero,
                              gradient_inversion.default_config('tiny'), SHAPE)


def test_total_variation():
  flat = jnp.full((1, 4, 4, 1), 0.3)
  assert float(gradient_inversion.total_variation(flat)) == 0.0
  stripes = jnp.tile(jnp.array([0.0, 1.0]), 8).reshape(1, 4, 4, 1)
  assert float(gradient_inversion.total_variation(stripes)) == pytest.approx(1.0)
