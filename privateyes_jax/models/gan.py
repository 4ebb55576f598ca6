"""DualView's image prior: a DCGAN-style generator and a WGAN-GP critic (DESIGN.md §5.1).

The generator maps a latent code ``z`` (and optionally auxiliary knowledge about the
target, a blurred image ``cond``, as in GMI's "auxiliary" setting) to a normalised
36x60 grayscale eye patch. The critic scores how real an image looks; it has no
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

IMAGE_SHAPE = (36, 60, 1)


def to_model_images(images01):
  """``[B, 36, 60, 1]`` floats in [0, 1] -> floats in [0, 255] (the uint8 scale), differentiable."""
  return images01 * 255.0


def to_uint8(images01):
  """``[B, 36, 60, 1]`` floats in [0, 1] -> uint8 (rounded, clipped)."""
  return jnp.clip(jnp.round(images01 * 255.0), 0, 255).astype(jnp.uint8)


def from_uint8(images):
  """uint8 ``[B, 36, 60, 1]`` -> float32 in [0, 1]."""
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
  """DCGAN-style generator: ``z [B, latent_dim]`` (+ ``cond [B, 36, 60, 1]``) -> ``[B, 36, 60, 1]`` in [0, 1].

  A dense projection to a 9x15 feature map, then two 2x upsampling stages
  (9x15 -> 18x30 -> 36x60) and a 3x3 output convolution with a sigmoid. Each
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
    features: channels of the 9x15 map and of the two upsampled maps
      (18x30 -> 36x60 use ``features[0]``, ``features[1]``).
    latent_dim: size of ``z``; checked at call time.
    norm: ``'none'`` or ``'layer'``.
  """
  features: Sequence[int] = (16, 8)
  latent_dim: int = 64
  norm: str = 'none'

  @nn.compact
  def __call__(self, z, cond=None):
    if z.shape[-1] != self.latent_dim:
      raise ValueError(f'Generator expects z[..., {self.latent_dim}], got {z.shape}.')
    h, w = IMAGE_SHAPE[0] // 4, IMAGE_SHAPE[1] // 4
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
    x = nn.Conv(IMAGE_SHAPE[-1], (3, 3))(x)
    return nn.sigmoid(x)


class Critic(nn.Module):
  """WGAN-GP critic: ``[B, 36, 60, 1]`` images in [0, 1] (+ ``cond``) -> ``[B]`` scores.

  Downsampling stages (pixel unshuffle then a 3x3 convolution, equivalent to a
  strided 4x4-ish convolution but cheap to differentiate twice on XLA:CPU, which
  the gradient penalty needs) with leaky ReLUs and a linear score; no batch
  normalisation (the gradient penalty is per sample).

  Attributes:
    features: channels after each 2x downsampling (36x60 -> 18x30 -> 9x15); a
      third entry adds a stride-1 3x3 convolution at 9x15.
  """
  features: Sequence[int] = (16, 32)

  @nn.compact
  def __call__(self, images, cond=None):
    x = images * 2.0 - 1.0  # Centre the input; [0, 1] is the generator's range.
    if cond is not None:
      x = jnp.concatenate([x, cond * 2.0 - 1.0], axis=-1)
    for i, f in enumerate(self.features):
      if i < 2:
        x = space_to_depth(x)
      x = nn.leaky_relu(nn.Conv(f, (3, 3))(x), 0.2)
    x = x.reshape(x.shape[:-3] + (-1,))
    return nn.Dense(1)(x)[..., 0]


def build(gan_config) -> tuple[Generator, Critic]:
  """The generator and critic of ``gan_config``.

  Fields used: ``latent_dim``, ``g_features``, ``g_norm``, ``d_features``.
  """
  return (Generator(features=tuple(gan_config.g_features), latent_dim=gan_config.latent_dim,
                    norm=gan_config.get('g_norm', 'none')),
          Critic(features=tuple(gan_config.d_features)))
