"""DualView's image prior: a DCGAN-style generator and a WGAN-GP critic (DESIGN.md §5.1).

The generator maps a latent code ``z`` (and optionally auxiliary knowledge about the
target, a blurred image ``cond``, as in GMI's "auxiliary" setting) to a normalised
image of the run's image shape ``(H, W, C)`` (36x60x1 eye patches by default; a face
model's RGB faces, e.g. 64x64x3). H and W must be multiples of 4: the generator
upsamples an (H/4, W/4) map twice, and the critic and the conditioning branch
downsample twice (`check_image_shape`). The critic scores how real an image looks; it has no
normalisation layer that mixes samples of a batch, because the WGAN-GP gradient
penalty needs per-sample critic gradients (Gulrajani et al., NeurIPS 2017).

Image convention: the generator outputs **float32 in [0, 1]** (a sigmoid), i.e. the
uint8 pixel value divided by 255. `to_model_images` turns that into the float
``[0, 255]`` range that the project's models (`scale_images`) expect from uint8,
while staying differentiable, and `to_uint8` rounds it for storage and metrics.
The critic takes the same [0, 1] images.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

# The default image shape: 36x60 grayscale eye patches (the eye model's input).
IMAGE_SHAPE = (36, 60, 1)


def check_image_shape(image_shape) -> tuple[int, int, int]:
  """``image_shape`` as a ``(H, W, C)`` tuple of ints, or a one-line ValueError.

  The generator projects to an (H/4, W/4) map and upsamples it twice by 2, and the
  critic and the conditioning branch downsample twice by 2, so H and W must be
  multiples of 4.
  """
  shape = tuple(int(v) for v in image_shape)
  if len(shape) != 3 or min(shape) < 1:
    raise ValueError(f'The prior\'s image shape must be (height, width, channels), got {shape}.')
  if shape[0] % 4 or shape[1] % 4:
    raise ValueError(
        f'The prior cannot model {"x".join(map(str, shape))} images: height and width must be '
        'multiples of 4 (two 2x upsamplings); set prior.data.image_size (and the run\'s '
        'data.image_size) to a multiple of 4.')
  return shape


def to_model_images(images01):
  """``[B, H, W, C]`` floats in [0, 1] -> floats in [0, 255] (the uint8 scale), differentiable."""
  return images01 * 255.0


def to_uint8(images01):
  """``[B, H, W, C]`` floats in [0, 1] -> uint8 (rounded, clipped)."""
  return jnp.clip(jnp.round(images01 * 255.0), 0, 255).astype(jnp.uint8)


def from_uint8(images):
  """uint8 ``[B, H, W, C]`` -> float32 in [0, 1]."""
  return images.astype(jnp.float32) / 255.0


def depth_to_space(x, r: int = 2):
  """``[..., H, W, r*r*C]`` -> ``[..., r*H, r*W, C]`` (pixel shuffle)."""
  *lead, h, w, c = x.shape
  x = x.reshape(*lead, h, w, r, r, c // (r * r))
  x = jnp.swapaxes(x, -4, -3)  # [..., h, r, w, r, C]
  return x.reshape(*lead, h * r, w * r, c // (r * r))


def space_to_depth(x, r: int = 2):
  """``[..., r*H, r*W, C]`` -> ``[..., H, W, r*r*C]`` (pixel unshuffle)."""
  *lead, h, w, c = x.shape
  x = x.reshape(*lead, h // r, r, w // r, r, c)
  x = jnp.swapaxes(x, -4, -3)  # [..., h, w, r, r, C]
  return x.reshape(*lead, h // r, w // r, r * r * c)


class Generator(nn.Module):
  """DCGAN-style generator: ``z [B, latent_dim]`` (+ ``cond [B, H, W, C]``) -> ``[B, H, W, C]`` in [0, 1].

  ``(H, W, C)`` is ``image_shape``, the run's image shape (36x60x1 eye patches by
  default). A dense projection to an (H/4, W/4) feature map (9x15 for eye patches),
  then two 2x upsampling stages (9x15 -> 18x30 -> 36x60) and a 3x3 output
  convolution to C channels with a sigmoid. Each
  upsampling is a 3x3 convolution to 4x the channels followed by a pixel shuffle
  (sub-pixel convolution, Shi et al. 2016) rather than DCGAN's transposed
  convolution: the same function class, but XLA:CPU runs transposed convolutions
  and their gradients about 10x slower, and the inversion backpropagates through
  the generator at every step. DCGAN's BatchNorm is left out so that the
  generator is a pure function of each ``z`` (the inversion optimises every latent
  independently of the others in its batch); ``norm='layer'`` adds a per-sample
  LayerNorm after each stage instead, which steadies wide generators but doubles
  the cost of the generator's backward pass on CPU.

  Attributes:
    features: channels of the (H/4, W/4) map and of the two upsampled maps
      (H/2 x W/2 -> H x W use ``features[0]``, ``features[1]``).
    latent_dim: size of ``z``; checked at call time.
    norm: ``'none'`` or ``'layer'``.
    image_shape: ``(H, W, C)`` of the images drawn; H and W multiples of 4.
  """
  features: Sequence[int] = (16, 8)
  latent_dim: int = 64
  norm: str = 'none'
  image_shape: Sequence[int] = IMAGE_SHAPE

  @nn.compact
  def __call__(self, z, cond=None):
    if z.shape[-1] != self.latent_dim:
      raise ValueError(f'Generator expects z[..., {self.latent_dim}], got {z.shape}.')
    height, width, channels = check_image_shape(self.image_shape)
    if cond is not None and tuple(cond.shape[-3:]) != (height, width, channels):
      raise ValueError(f'Generator of {(height, width, channels)} images got cond {cond.shape}.')
    h, w = height // 4, width // 4
    x = nn.Dense(h * w * self.features[0])(z)
    x = x.reshape(z.shape[:-1] + (h, w, self.features[0]))
    if self.norm not in ('none', 'layer'):
      raise ValueError(f'Generator norm must be "none" or "layer", got {self.norm!r}.')
    normalise = nn.LayerNorm if self.norm == 'layer' else (lambda: (lambda y: y))
    x = nn.relu(normalise()(x))
    if cond is not None:
      # Auxiliary knowledge enters at the coarse scale: a blurred image carries
      # low-frequency appearance (skin tone, eye position), not fine detail.
      c = nn.relu(nn.Conv(16, (3, 3))(space_to_depth(cond)))
      c = nn.relu(nn.Conv(32, (3, 3))(space_to_depth(c)))
      x = jnp.concatenate([x, c], axis=-1)
    for f in self.features:
      x = depth_to_space(nn.Conv(4 * f, (3, 3))(x))
      x = nn.relu(normalise()(x))
    x = nn.Conv(channels, (3, 3))(x)
    return nn.sigmoid(x)


class Critic(nn.Module):
  """WGAN-GP critic: ``[B, H, W, C]`` images in [0, 1] (+ ``cond``) -> ``[B]`` scores.

  ``(H, W, C)`` is ``image_shape`` (36x60x1 eye patches by default); images of
  another shape are refused.

  Downsampling stages (pixel unshuffle then a 3x3 convolution, equivalent to a
  strided 4x4-ish convolution but cheap to differentiate twice on XLA:CPU, which
  the gradient penalty needs) with leaky ReLUs and a linear score; no batch
  normalisation (the gradient penalty is per sample).

  Attributes:
    features: channels after each 2x downsampling (36x60 -> 18x30 -> 9x15 for eye
      patches); a third entry adds a stride-1 3x3 convolution at H/4 x W/4.
    image_shape: ``(H, W, C)`` of the images scored; H and W multiples of 4.
  """
  features: Sequence[int] = (16, 32)
  image_shape: Sequence[int] = IMAGE_SHAPE

  @nn.compact
  def __call__(self, images, cond=None):
    shape = check_image_shape(self.image_shape)
    if tuple(images.shape[-3:]) != shape:
      raise ValueError(f'Critic of {shape} images got {images.shape}.')
    x = images * 2.0 - 1.0  # Centre the input; [0, 1] is the generator's range.
    if cond is not None:
      x = jnp.concatenate([x, cond * 2.0 - 1.0], axis=-1)
    for i, f in enumerate(self.features):
      if i < 2:
        x = space_to_depth(x)
      x = nn.leaky_relu(nn.Conv(f, (3, 3))(x), 0.2)
    x = x.reshape(x.shape[:-3] + (-1,))
    return nn.Dense(1)(x)[..., 0]


def build(gan_config, image_shape=IMAGE_SHAPE) -> tuple[Generator, Critic]:
  """The generator and critic of ``gan_config`` for ``image_shape`` images.

  Fields used: ``latent_dim``, ``g_features``, ``g_norm``, ``d_features``.

  Args:
    gan_config: the prior's config (`gan_prior.default_config`).
    image_shape: ``(H, W, C)``, the prior's data's (and the target run's) image shape;
      36x60x1 eye patches by default.

  Raises:
    ValueError: H or W is not a multiple of 4 (`check_image_shape`).
  """
  shape = check_image_shape(image_shape)
  return (Generator(features=tuple(gan_config.g_features), latent_dim=gan_config.latent_dim,
                    norm=gan_config.get('g_norm', 'none'), image_shape=shape),
          Critic(features=tuple(gan_config.d_features), image_shape=shape))
