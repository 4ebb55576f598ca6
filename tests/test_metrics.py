"""Pitch/yaw <-> vector conventions and the angular error metric."""

import jax.numpy as jnp
import numpy as np
import pytest

from privateyes_jax import metrics


def test_round_trip_pitchyaw_vector():
  rng = np.random.default_rng(0)
  py = np.stack([rng.uniform(-1.4, 1.4, 500), rng.uniform(-3.0, 3.0, 500)], -1)
  vec = metrics.pitchyaw_to_vector(py)
  np.testing.assert_allclose(np.linalg.norm(vec, axis=-1), 1.0, atol=1e-12)
  np.testing.assert_allclose(metrics.vector_to_pitchyaw(vec), py, atol=1e-10)
  # Non-unit vectors give the same angles.
  np.testing.assert_allclose(metrics.vector_to_pitchyaw(3.5 * vec), py, atol=1e-10)


def test_mpii_sign_convention():
  # Looking straight at the camera is (0, 0) and points along -z.
  np.testing.assert_allclose(metrics.pitchyaw_to_vector(np.zeros(2)), [0, 0, -1], atol=1e-12)
  # Positive pitch looks up (image y points down, so y < 0).
  assert metrics.pitchyaw_to_vector(np.array([0.3, 0.0]))[1] < 0
  # Positive yaw looks towards -x.
  assert metrics.pitchyaw_to_vector(np.array([0.0, 0.3]))[0] < 0


@pytest.mark.parametrize('xp', [np, jnp])
def test_angular_error_known_values(xp):
  a = xp.asarray(np.array([[0.0, 0.0], [0.0, 0.0], [0.2, -0.1], [0.0, 0.0]], np.float32))
  b = xp.asarray(np.array([[0.0, np.pi / 2], [0.1, 0.0], [0.2, -0.1], [0.0, np.pi]],
                          np.float32))
  err = np.asarray(metrics.angular_error_deg(a, b))
  np.testing.assert_allclose(err, [90.0, np.degrees(0.1), 0.0, 180.0], atol=2e-2)
  assert np.all(np.isfinite(err))  # Clipping keeps arccos finite at +-1.


def test_label_error_dispatch():
  a, b = np.zeros((2, 2), np.float32), np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
  np.testing.assert_allclose(metrics.label_error(a, b, 'screen'), [5.0, 0.0])
  with pytest.raises(ValueError, match='Unknown label kind'):
    metrics.label_error(a, b, 'pixels')
