"""DualView's generator and critic: shapes, ranges, conditioning, pixel (un)shuffle."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from privateyes_jax.models import gan


def _cfg(**kw):
  c = ml_collections.ConfigDict(dict(latent_dim=8, g_features=(8, 4), g_norm='none',
                                     d_features=(4, 8)))
  c.update(kw)
  return c


def test_pixel_shuffle_round_trip():
  x = jnp.arange(2 * 6 * 10 * 8, dtype=jnp.float32).reshape(2, 6, 10, 8)
  up = gan.depth_to_space(x)
  assert up.shape == (2, 12, 20, 2)
  np.testing.assert_array_equal(gan.space_to_depth(up), x)
  # Each output pixel block comes from one input pixel's channels.
  np.testing.assert_array_equal(up[0, :2, :2, 0].ravel(), x[0, 0, 0, ::2])


@pytest.mark.parametrize('norm,conditional', [('none', False), ('layer', True)])
def test_generator_and_critic_shapes(norm, conditional):
  g, d = gan.build(_cfg(g_norm=norm))
  z = jax.random.normal(jax.random.PRNGKey(0), (3, 8))
  cond = jnp.full((3,) + gan.IMAGE_SHAPE, 0.5) if conditional else None
  gp = g.init(jax.random.PRNGKey(1), z, cond)['params']
  images = g.apply({'params': gp}, z, cond)
  assert images.shape == (3,) + gan.IMAGE_SHAPE and images.dtype == jnp.float32
  assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0  # Sigmoid range.
  dp = d.init(jax.random.PRNGKey(2), images, cond)['params']
  scores = d.apply({'params': dp}, images, cond)
  assert scores.shape == (3,)
  # No batch statistics: a sample's output does not depend on its batch mates.
  np.testing.assert_allclose(g.apply({'params': gp}, z[:1], None if cond is None else cond[:1]),
                             images[:1], atol=1e-6)


def test_uint8_conversions():
  x = jnp.array([0.0, 0.5, 1.0, 1.2]).reshape(1, 1, 4, 1)
  np.testing.assert_array_equal(gan.to_uint8(x).ravel(), [0, 128, 255, 255])
  np.testing.assert_allclose(gan.to_model_images(x).ravel(), [0.0, 127.5, 255.0, 306.0])
  np.testing.assert_allclose(gan.from_uint8(jnp.array([0, 255], jnp.uint8)), [0.0, 1.0])


def test_bad_latent_and_norm():
  g, _ = gan.build(_cfg())
  with pytest.raises(ValueError, match='expects z'):
    g.init(jax.random.PRNGKey(0), jnp.zeros((1, 5)))
  g, _ = gan.build(_cfg(g_norm='batch'))
  with pytest.raises(ValueError, match='norm'):
    g.init(jax.random.PRNGKey(0), jnp.zeros((1, 8)))


def test_eye_patch_networks_are_unchanged():
  """The default (36, 60, 1) generator and critic keep their parameter shapes. Mutant
  killed: the image shape plumbed in with another projection or output width (e.g.
  (H/4, W/4) computed from the wrong axes, or channels taken from the cond branch),
  which would move every eye-model prior, checkpoint and demo number."""
  g, d = gan.build(_cfg())
  assert g.image_shape == gan.IMAGE_SHAPE == (36, 60, 1)
  z = jnp.zeros((1, 8))
  shapes = jax.tree.map(lambda a: a.shape, g.init(jax.random.PRNGKey(0), z)['params'])
  assert shapes == {'Dense_0': {'kernel': (8, 9 * 15 * 8), 'bias': (9 * 15 * 8,)},
                    'Conv_0': {'kernel': (3, 3, 8, 32), 'bias': (32,)},
                    'Conv_1': {'kernel': (3, 3, 8, 16), 'bias': (16,)},
                    'Conv_2': {'kernel': (3, 3, 4, 1), 'bias': (1,)}}
  images = jnp.zeros((1, 36, 60, 1))
  shapes = jax.tree.map(lambda a: a.shape, d.init(jax.random.PRNGKey(0), images)['params'])
  assert shapes == {'Conv_0': {'kernel': (3, 3, 4, 4), 'bias': (4,)},
                    'Conv_1': {'kernel': (3, 3, 16, 8), 'bias': (8,)},
                    'Dense_0': {'kernel': (9 * 15 * 8, 1), 'bias': (1,)}}


@pytest.mark.parametrize('conditional', [False, True])
def test_face_shaped_networks(conditional):
  """RGB faces (32x32x3, and 48x64x3): C output channels at the run's size. Mutant killed:
  the generator hard-wired to one channel or to 36x60 (the eye patch)."""
  for shape in ((32, 32, 3), (48, 64, 3)):
    g, d = gan.build(_cfg(), shape)
    z = jax.random.normal(jax.random.PRNGKey(0), (2, 8))
    cond = jnp.full((2,) + shape, 0.5) if conditional else None
    gp = g.init(jax.random.PRNGKey(1), z, cond)['params']
    images = g.apply({'params': gp}, z, cond)
    assert images.shape == (2,) + shape
    assert gp['Dense_0']['kernel'].shape == (8, shape[0] // 4 * shape[1] // 4 * 8)
    dp = d.init(jax.random.PRNGKey(2), images, cond)['params']
    assert d.apply({'params': dp}, images, cond).shape == (2,)
    with pytest.raises(ValueError, match='Critic of'):  # Another shape than the prior's.
      d.apply({'params': dp}, jnp.zeros((2, 36, 60, 1)))


@pytest.mark.parametrize('shape', [(30, 32, 3), (36, 62, 1), (34, 60, 1)])
def test_shape_not_divisible_by_4_is_refused(shape):
  """One line naming the shape and the field to change. Mutant killed: no check (flax
  would build a generator of (H//4*4, W//4*4) images, silently the wrong size)."""
  name = 'x'.join(map(str, shape))
  with pytest.raises(ValueError, match=rf'{name} images: height and width must be multiples of 4'
                                       r'.*prior.data.image_size.*data.image_size'):
    gan.build(_cfg(), shape)
  with pytest.raises(ValueError, match='multiples of 4'):
    gan.Generator(latent_dim=8, image_shape=shape).init(jax.random.PRNGKey(0), jnp.zeros((1, 8)))
