"""Gaze estimators.

`GazeNet` is the LeNet-style eye model of MPIIGaze (Zhang et al., CVPR 2015):
two 5x5 convolution + max-pool stages, a 500-unit hidden layer, the head pose
concatenated before the output layer, and a linear (pitch, yaw) output. With
'SAME' padding on a 36x60 patch it has ~3.4M parameters, the model the timings in
DESIGN.md §7 refer to.

Models take uint8 images and do the scaling themselves, so batches stay uint8 on
the host and on the way to the device (4x less traffic than float32).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


def scale_images(images):
  """uint8 [0, 255] -> float32 roughly zero-mean, unit-range."""
  return images.astype(jnp.float32) * (1.0 / 127.5) - 1.0


class GazeNet(nn.Module):
  """LeNet-style eye gaze model: (eye patch, head pose) -> (pitch, yaw)."""
  conv_features: Sequence[int] = (20, 50)
  hidden: int = 500
  padding: str = 'SAME'

  @nn.compact
  def __call__(self, images, head_pose):
    x = scale_images(images)
    for features in self.conv_features:
      x = nn.Conv(features, (5, 5), padding=self.padding)(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[:-3] + (-1,))
    x = nn.relu(nn.Dense(self.hidden)(x))
    x = jnp.concatenate([x, head_pose.astype(jnp.float32)], axis=-1)
    return nn.Dense(2)(x)


def build_model(model_config) -> nn.Module:
  """The gaze model named by ``config.model.name``."""
  name = model_config.name
  if name == 'gazenet':
    return GazeNet(conv_features=tuple(model_config.conv_features),
                   hidden=model_config.hidden, padding=model_config.padding)
  if name == 'resnet_face':
    from privateyes_jax.models import face  # pylint: disable=g-import-not-at-top
    return face.build_face_model(model_config)
  raise ValueError(f'Unknown model {name!r}; available: "gazenet", "resnet_face".')
