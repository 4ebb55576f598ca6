"""Gaze metrics: pitch/yaw <-> unit vectors (MPII convention) and angular error.

Convention (MPIIGaze, Zhang et al. 2015/2017; normalised camera space, camera looks
along +z, image x right, image y down). A gaze direction points from the eye
towards the target, i.e. mostly towards the camera (z < 0):

    x = -cos(pitch) * sin(yaw)
    y = -sin(pitch)
    z = -cos(pitch) * cos(yaw)

so ``pitch = arcsin(-y)`` (positive: looking up) and ``yaw = arctan2(-x, -z)``
(positive: towards the camera's -x, i.e. the left of the image).
Angular error is ``arccos`` of the clipped cosine between two unit vectors, in degrees.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def pitchyaw_to_vector(pitchyaw):
  """``[..., 2]`` (pitch, yaw) radians -> ``[..., 3]`` unit gaze vectors."""
  xp = jnp if not isinstance(pitchyaw, np.ndarray) else np
  pitch, yaw = pitchyaw[..., 0], pitchyaw[..., 1]
  return xp.stack([
      -xp.cos(pitch) * xp.sin(yaw),
      -xp.sin(pitch),
      -xp.cos(pitch) * xp.cos(yaw),
  ], axis=-1)


def vector_to_pitchyaw(vector):
  """``[..., 3]`` gaze vectors (any norm > 0) -> ``[..., 2]`` (pitch, yaw) radians."""
  xp = jnp if not isinstance(vector, np.ndarray) else np
  v = vector / xp.linalg.norm(vector, axis=-1, keepdims=True)
  pitch = xp.arcsin(xp.clip(-v[..., 1], -1.0, 1.0))
  yaw = xp.arctan2(-v[..., 0], -v[..., 2])
  return xp.stack([pitch, yaw], axis=-1)


def angular_error_deg(pred_pitchyaw, true_pitchyaw):
  """Per-sample angular error in degrees between two ``[..., 2]`` pitch/yaw arrays."""
  xp = jnp if not (isinstance(pred_pitchyaw, np.ndarray)
                   and isinstance(true_pitchyaw, np.ndarray)) else np
  a = pitchyaw_to_vector(pred_pitchyaw)
  b = pitchyaw_to_vector(true_pitchyaw)
  cos = xp.sum(a * b, axis=-1)  # Both are unit vectors by construction.
  return xp.degrees(xp.arccos(xp.clip(cos, -1.0, 1.0)))


def euclidean_error(pred, true):
  """Per-sample Euclidean distance, for 2-D screen targets (e.g. cm on GazeCapture)."""
  xp = jnp if not (isinstance(pred, np.ndarray) and isinstance(true, np.ndarray)) else np
  return xp.sqrt(xp.sum((pred - true) ** 2, axis=-1))


def label_error(pred, true, label_kind: str):
  """The task's error metric: degrees for gaze (pitch, yaw), distance for screen targets."""
  if label_kind == 'gaze':
    return angular_error_deg(pred, true)
  if label_kind == 'screen':
    return euclidean_error(pred, true)
  raise ValueError(f'Unknown label kind {label_kind!r}; expected "gaze" or "screen".')
