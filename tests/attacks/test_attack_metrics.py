"""DualView metrics against hand-computed values: PSNR, SSIM, KDE-KL, re-identification."""

import numpy as np
import pytest

from privateyes_jax import metrics


def _images(seed, n=2):
  return np.random.default_rng(seed).integers(0, 256, (n, 36, 60, 1)).astype(np.uint8)


def test_psnr_identical_and_known_value():
  a = _images(0)
  assert np.all(np.isinf(metrics.psnr(a, a)))
  b = np.clip(a.astype(np.int32) + 10, 0, 255).astype(np.uint8)
  mse = np.mean(((a.astype(np.float64) - b) / 255.0) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(metrics.psnr(a, b), -10 * np.log10(mse), rtol=1e-4)
  # A uniform offset of 0.1 in [0, 1] units is 20 dB.
  flat = np.full((1, 36, 60, 1), 0.2, np.float32)
  np.testing.assert_allclose(metrics.psnr(flat, flat + 0.1), 20.0, rtol=1e-4)


def test_ssim_identical_is_one_and_decreases():
  a = _images(1)
  np.testing.assert_allclose(metrics.ssim(a, a), 1.0, atol=1e-5)
  noisy = np.clip(a.astype(np.int32) + np.random.default_rng(2).integers(-40, 40, a.shape),
                  0, 255).astype(np.uint8)
  s_noisy, s_other = metrics.ssim(a, noisy), metrics.ssim(a, _images(3))
  assert np.all(s_noisy < 1.0) and np.all(s_other < s_noisy)


def test_gaze_kde_kl():
  rng = np.random.default_rng(0)
  p = rng.normal([-0.1, 0.05], [0.08, 0.1], size=(300, 2))
  assert metrics.gaze_kde_kl(p, p) == 0.0
  near = metrics.gaze_kde_kl(p, p + [0.02, 0.0])
  far = metrics.gaze_kde_kl(p, p + [0.2, 0.0])
  assert 0.0 < near < far
  # Two Gaussians with equal covariance: KL = 0.5 * Mahalanobis^2; the KDE estimate
  # (bandwidth-inflated covariances) is of that order.
  q = rng.normal([-0.1, 0.05], [0.08, 0.1], size=(300, 2)) + [0.16, 0.0]
  assert 0.5 < metrics.gaze_kde_kl(p, q) < 2.0 * 0.5 * (0.16 / 0.08) ** 2
  with pytest.raises(ValueError, match='singular'):
    metrics.gaze_kde_kl(p, np.zeros((5, 2)))
  with pytest.raises(ValueError, match=r'\[N >= 3, 2\]'):
    metrics.gaze_kde_kl(p, p[:2])


def test_recovered_gaze_error():
  true = np.array([[0.1, 0.2], [0.1, 0.2]])
  assert metrics.recovered_gaze_error_deg(true, true) == pytest.approx(0.0, abs=1e-6)
  shifted = np.array([[0.1 + np.radians(3.0), 0.0]])
  assert metrics.recovered_gaze_error_deg(shifted, [[0.1, 0.0]]) == pytest.approx(3.0, rel=1e-4)
  # The mean direction of yaw +-0.2 at pitch 0 looks straight ahead.
  np.testing.assert_allclose(metrics.mean_gaze(np.array([[0.0, -0.2], [0.0, 0.2]])), [0.0, 0.0],
                             atol=1e-12)


def test_reidentification_counts():
  # Person 0: both reconstructions vote class 0. Person 1: one strong vote for 2,
  # one weak for 1 -> class 2 first, class 1 second. Person 2: class 2 is fifth.
  logits = np.full((3, 2, 6), 0.0)
  logits[0, :, 0] = 5.0
  logits[1, 0, 2], logits[1, 1, 1] = 8.0, 1.0
  logits[2, :, :4] = [4.0, 3.0, 0.0, 2.0]
  logits[2, :, 4] = 1.0
  logits[2, :, 2] = 0.5
  out = metrics.reidentification(logits, np.array([0, 1, 2]))
  assert out['top1'] == 1 and out['num_people'] == 3
  np.testing.assert_array_equal(out['predicted'], [0, 2, 0])
  np.testing.assert_array_equal(out['rank'], [0, 1, 4])
  assert out['top5'] == 3
  with pytest.raises(ValueError, match='logits'):
    metrics.reidentification(logits[0], np.array([0, 1]))


def test_reidentification_calibrated_against_background():
  # The classifier favours class 3 on every off-distribution image (an "attractor").
  # Person 3's identity-free reconstructions would be "re-identified" by that bias;
  # against a background of the same bias they are not, while person 0's
  # reconstructions, which lift class 0 above its background level, still are.
  attractor = np.array([0.0, 0.0, 0.0, 3.0])
  logits = np.stack([np.stack([attractor + [2.0, 0, 0, 0]] * 2), np.stack([attractor] * 2)])
  plain = metrics.reidentification(logits, np.array([0, 3]))
  assert plain['rank'][1] == 0  # Chance hit through the attractor.
  background = np.stack([attractor, attractor + [0.0, 0.1, 0.0, 0.0]])
  calibrated = metrics.reidentification(logits, np.array([0, 3]), background)
  assert calibrated['rank'][0] == 0 and calibrated['rank'][1] > 0
  with pytest.raises(ValueError, match='background_logits'):
    metrics.reidentification(logits, np.array([0, 3]), background[:, :3])


def test_gaze_distribution_is_the_recovered_mean_with_the_aux_spread():
  from privateyes_jax.attacks import dualview  # pylint: disable=g-import-not-at-top
  from privateyes_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  aux = synthetic.make_dataset(6, 200, first_person=100).people
  cov = dualview.within_person_covariance(aux)
  np.testing.assert_allclose(cov, np.mean([np.cov(p.labels.T) for p in aux], axis=0))
  points = np.array([[-0.1, 0.2], [-0.12, 0.25], [-0.08, 0.18]], np.float32)
  samples = dualview.gaze_distribution(points, cov, num_samples=4096, seed=3)
  np.testing.assert_allclose(samples.mean(axis=0), points.mean(axis=0), atol=1e-6)
  np.testing.assert_allclose(np.cov(samples.T), cov, rtol=0.1, atol=1e-4)
  # Closer to a person's true distribution than the bare points when they are off-shape.
  person = aux[0]
  located = dualview.gaze_distribution(np.repeat(person.labels.mean(0, keepdims=True), 8, 0)
                                       + np.linspace(-1e-3, 1e-3, 16).reshape(8, 2),
                                       cov, seed=0)
  assert metrics.gaze_kde_kl(person.labels, located) < metrics.gaze_kde_kl(
      person.labels, person.labels.mean(0) + np.linspace(-1e-3, 1e-3, 16).reshape(8, 2))
  with pytest.raises(ValueError, match='covariance'):
    dualview.gaze_distribution(points, cov[:1])
