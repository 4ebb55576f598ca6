"""Full-face gaze models: a small ResNet with spatial weights, and a screen-target head.

`FaceGazeNet` follows the full-face models used on MPIIFaceGaze in the literature:
Zhang et al. (CVPRW 2017, "It's Written All Over Your Face") apply learned spatial
weights (1x1 convolutions ending in one non-negative map) to the last feature maps
and regress gaze from the weighted maps; the widely reproduced ResNet-14 variant
(hysts/pytorch_mpiigaze) uses ResNet-18's stem and three stages of two basic blocks
(64, 128, 256 channels: 14x14 maps for 224x224 faces). Ours is that network with two
changes for federated training:

* **GroupNorm instead of BatchNorm.** BatchNorm keeps running statistics, mutable
  state outside ``params`` that every client would have to carry, average and secure
  along with the weights, and its batch statistics leak and suffer under non-IID
  clients (Hsieh et al., ICML 2020). GroupNorm has only parameters, so
  ``apply({'params': p}, ...)`` stays a pure function, like `GazeNet`.
* **Two heads.** ``head='gaze'`` is the linear (pitch, yaw) output;
  ``head='screen'`` is the 2-D screen-target head for GazeCapture (iTracker's
  fully-connected 128 -> 2 regression, Krafka et al. CVPR 2016), predicting (x, y)
  in the label unit (cm from the camera).

The call signature is `GazeNet`'s: ``(images uint8 [B, H, W, C], head_pose [B, 2]) ->
[B, 2]``; the head pose is ignored unless ``use_head_pose`` (full-face models see the
head in the image). Any image size works: the output layer is sized at ``init``.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from privateyes_jax.models.gaze import scale_images

HEADS = ('gaze', 'screen')


def _group_norm(features: int, groups: int) -> nn.GroupNorm:
  # The largest group count <= `groups` that divides the channels.
  return nn.GroupNorm(num_groups=math.gcd(features, groups))


class ResidualBlock(nn.Module):
  """A basic ResNet block: two 3x3 convolutions, GroupNorm, identity or 1x1 shortcut."""
  features: int
  strides: int = 1
  norm_groups: int = 8

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(self.features, (3, 3), (self.strides, self.strides), padding=1,
                use_bias=False)(x)
    y = nn.relu(_group_norm(self.features, self.norm_groups)(y))
    y = nn.Conv(self.features, (3, 3), padding=1, use_bias=False)(y)
    y = _group_norm(self.features, self.norm_groups)(y)
    if x.shape != y.shape:
      x = nn.Conv(self.features, (1, 1), (self.strides, self.strides), use_bias=False)(x)
      x = _group_norm(self.features, self.norm_groups)(x)
    return nn.relu(x + y)


class SpatialWeights(nn.Module):
  """Zhang et al. (2017): three 1x1 convolutions -> one ReLU map that scales every channel."""
  hidden: int

  @nn.compact
  def __call__(self, features):
    w = nn.relu(nn.Conv(self.hidden, (1, 1))(features))
    w = nn.relu(nn.Conv(self.hidden, (1, 1))(w))
    w = nn.relu(nn.Conv(1, (1, 1))(w))  # [B, h, w, 1]
    return features * w


class FaceGazeNet(nn.Module):
  """Face image (and optionally head pose) -> (pitch, yaw) or a 2-D screen target."""
  stem_features: int = 64
  stage_features: Sequence[int] = (64, 128, 256)
  blocks_per_stage: Sequence[int] = (2, 2, 2)
  norm_groups: int = 8
  spatial_weights: bool = True
  head: str = 'gaze'
  head_hidden: int = 128
  use_head_pose: bool = False

  @nn.compact
  def __call__(self, images, head_pose):
    if self.head not in HEADS:
      raise ValueError(f'FaceGazeNet.head must be one of {HEADS}, got {self.head!r}.')
    x = scale_images(images)
    x = nn.Conv(self.stem_features, (7, 7), (2, 2), padding=3, use_bias=False)(x)
    x = nn.relu(_group_norm(self.stem_features, self.norm_groups)(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
    for stage, (features, blocks) in enumerate(zip(self.stage_features, self.blocks_per_stage)):
      for block in range(blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = ResidualBlock(features, strides, self.norm_groups)(x)
    if self.spatial_weights:
      x = SpatialWeights(self.stage_features[-1])(x)
    x = x.reshape(x.shape[:-3] + (-1,))  # Keep where things are: the weights are spatial.
    if self.use_head_pose:
      x = jnp.concatenate([x, head_pose.astype(jnp.float32)], axis=-1)
    if self.head == 'screen':
      x = nn.relu(nn.Dense(self.head_hidden, name='screen_hidden')(x))
      return nn.Dense(2, name='screen_target')(x)
    return nn.Dense(2, name='gaze')(x)


def build_face_model(model_config) -> FaceGazeNet:
  """`FaceGazeNet` from ``config.model`` (``name='resnet_face'``); every field is optional.

  Fields: ``stem_features`` (64), ``stage_features`` ((64, 128, 256)),
  ``blocks_per_stage`` ((2, 2, 2)), ``norm_groups`` (8), ``spatial_weights`` (True),
  ``head`` ('gaze' or 'screen'), ``head_hidden`` (128), ``use_head_pose`` (False).
  """
  stages = tuple(model_config.get('stage_features', (64, 128, 256)))
  blocks = tuple(model_config.get('blocks_per_stage', (2,) * len(stages)))
  if len(stages) != len(blocks) or not stages or min(stages + blocks) < 1:
    raise ValueError(f'model.stage_features {stages} and model.blocks_per_stage {blocks} must '
                     'be non-empty, positive and of equal length.')
  head = model_config.get('head', 'gaze')
  if head not in HEADS:
    raise ValueError(f'model.head must be one of {HEADS}, got {head!r}.')
  return FaceGazeNet(
      stem_features=int(model_config.get('stem_features', 64)),
      stage_features=stages,
      blocks_per_stage=blocks,
      norm_groups=int(model_config.get('norm_groups', 8)),
      spatial_weights=bool(model_config.get('spatial_weights', True)),
      head=head,
      head_hidden=int(model_config.get('head_hidden', 128)),
      use_head_pose=bool(model_config.get('use_head_pose', False)),
  )
