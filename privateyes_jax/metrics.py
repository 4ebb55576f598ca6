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


# ----------------------------------------------------------------------------- DualView metrics
# The attack's metrics (DESIGN.md §5.4). dm-pix and SciPy are imported where they are
# used, so that training code importing this module does not need them.


def _images01(images) -> np.ndarray:
  """uint8 images -> float32 in [0, 1]; float images are taken to be in [0, 1] already."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  return images.astype(np.float32)


def psnr(a, b) -> np.ndarray:
  """Peak signal-to-noise ratio in dB of ``[..., H, W, C]`` image pairs (per image).

  uint8 inputs are scaled to [0, 1] (peak 1); identical images give ``inf``.
  """
  import dm_pix  # pylint: disable=g-import-not-at-top
  a, b = _images01(a), _images01(b)
  mse = np.mean((a - b) ** 2, axis=(-3, -2, -1))
  with np.errstate(divide='ignore'):
    # dm_pix.psnr is -10 log10(mse); it returns inf only as a float overflow, so the
    # identical-image case is made exact here.
    return np.where(mse == 0, np.inf, np.asarray(dm_pix.psnr(a, b)))


_JIT_SSIM = None


def ssim(a, b) -> np.ndarray:
  """Structural similarity (Wang et al. 2004; dm_pix defaults: 11x11 Gaussian window,
  sigma 1.5, k1 0.01, k2 0.03) of ``[..., H, W, C]`` image pairs, per image; 1 if identical.

  dm_pix's function, compiled once per shape (eager, its dozens of ops dominated
  the attack's evaluation).
  """
  global _JIT_SSIM
  if _JIT_SSIM is None:
    import jax  # pylint: disable=g-import-not-at-top
    import dm_pix  # pylint: disable=g-import-not-at-top
    _JIT_SSIM = jax.jit(lambda x, y: dm_pix.ssim(x, y, max_val=1.0))
  return np.asarray(_JIT_SSIM(_images01(a), _images01(b)))


_KDE_LOGSUMEXP = None


def _kde_logpdf(kde, points: np.ndarray) -> np.ndarray:
  """``log`` of ``scipy.stats.gaussian_kde`` ``kde``'s density at ``points`` ``[d, M]``.

  The same density as ``kde.logpdf`` (its kernel covariance and weights, float64),
  computed by whitening with the kernel covariance's Cholesky factor and one
  compiled log-sum-exp over the data: SciPy's logpdf took 0.2 s per 100x100 grid of
  1,024 samples, with two to four per evaluated person the bulk of the attack's
  evaluation stage; this takes about a third of that.
  """
  global _KDE_LOGSUMEXP
  import jax  # pylint: disable=g-import-not-at-top
  from scipy import linalg  # pylint: disable=g-import-not-at-top
  if _KDE_LOGSUMEXP is None:
    def logsumexp_kernel(pts, data, log_w):
      sq = jnp.sum((pts[:, None, :] - data[None, :, :]) ** 2, axis=-1)
      return jax.scipy.special.logsumexp(-0.5 * sq + log_w[None, :], axis=1)
    _KDE_LOGSUMEXP = jax.jit(logsumexp_kernel)
  data = np.asarray(kde.dataset, np.float64)  # [d, n]
  chol = linalg.cholesky(np.asarray(kde.covariance, np.float64), lower=True)
  white_data = linalg.solve_triangular(chol, data, lower=True).T  # [n, d]
  white_pts = linalg.solve_triangular(chol, np.asarray(points, np.float64), lower=True).T
  d = data.shape[0]
  log_w = (np.log(np.asarray(kde.weights, np.float64))
           - 0.5 * d * np.log(2 * np.pi) - np.sum(np.log(np.diag(chol))))
  with jax.enable_x64(True):
    return np.asarray(_KDE_LOGSUMEXP(white_pts, white_data, log_w), np.float64)


def gaze_kde_kl(p_samples, q_samples, grid_size: int = 100, bw_method='scott',
                margin: float = 3.0, eps: float = 1e-10) -> float:
  """KL(P || Q) between kernel density estimates of two 2-D gaze sample sets.

  Estimator: each set is fitted with ``scipy.stats.gaussian_kde`` (Gaussian kernels
  with the set's own covariance scaled by ``bw_method``, Scott's rule by default:
  factor ``n^(-1/6)`` in 2-D). Both densities are evaluated on one
  ``grid_size x grid_size`` grid spanning both sets plus ``margin`` kernel standard
  deviations, renormalised to sum to 1 over the grid (in log space, so sets far
  apart do not underflow), and ``KL = sum p log((p + eps) / (q + eps))``. Identical sets give exactly 0; the
  value is in nats and grows as the sets separate.

  Args:
    p_samples: ``[N, 2]`` (e.g. the person's true pitch/yaw, radians).
    q_samples: ``[M, 2]`` (e.g. the recovered gaze samples).

  Raises:
    ValueError: a set has fewer than 3 samples or a singular covariance (the KDE
      is undefined; e.g. all samples identical).
  """
  from scipy import special, stats  # pylint: disable=g-import-not-at-top
  p_samples = np.asarray(p_samples, np.float64)
  q_samples = np.asarray(q_samples, np.float64)
  kdes = []
  for name, s in (('p_samples', p_samples), ('q_samples', q_samples)):
    if s.ndim != 2 or s.shape[1] != 2 or len(s) < 3:
      raise ValueError(f'{name} must be [N >= 3, 2], got {s.shape}.')
    if not np.all(np.isfinite(s)):
      raise ValueError(f'{name} contains NaN or inf.')
    try:
      kdes.append(stats.gaussian_kde(s.T, bw_method=bw_method))
    except np.linalg.LinAlgError as e:
      raise ValueError(f'{name} has a singular covariance ({e}); a KDE is undefined '
                       'for degenerate sample sets.') from e
  both = np.concatenate([p_samples, q_samples])
  pad = margin * max(np.sqrt(np.max(np.diag(k.covariance))) for k in kdes)
  lo, hi = both.min(axis=0) - pad, both.max(axis=0) + pad
  axes = [np.linspace(lo[d], hi[d], grid_size) for d in range(2)]
  grid = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing='ij')])
  # Normalised in log space: far-apart sets would underflow a linear-space sum.
  log_p, log_q = (_kde_logpdf(k, grid) for k in kdes)
  log_p = log_p - special.logsumexp(log_p)
  log_q = log_q - special.logsumexp(log_q)
  p = np.exp(log_p)
  return float(max(np.sum(p * (np.logaddexp(log_p, np.log(eps)) - np.logaddexp(log_q, np.log(eps)))),
                   0.0))


def mean_gaze(pitchyaw) -> np.ndarray:
  """The mean direction ``[2]`` of ``[N, 2]`` pitch/yaw samples (mean unit vector)."""
  return vector_to_pitchyaw(np.mean(pitchyaw_to_vector(np.asarray(pitchyaw, np.float64)), axis=0))


def recovered_gaze_error_deg(recovered, true) -> float:
  """Angular error (degrees) between the mean directions of recovered and true gaze samples."""
  return float(angular_error_deg(mean_gaze(recovered), mean_gaze(true)))


def mean_label(labels, label_kind: str = 'gaze') -> np.ndarray:
  """The centre ``[2]`` of ``[N, 2]`` labels: the mean direction for gaze, the mean point for screen."""
  if label_kind == 'gaze':
    return mean_gaze(labels)
  if label_kind == 'screen':
    return np.mean(np.asarray(labels, np.float64), axis=0)
  raise ValueError(f'Unknown label kind {label_kind!r}; expected "gaze" or "screen".')


def recovered_label_error(recovered, true, label_kind: str = 'gaze') -> float:
  """Error between the centres of recovered and true label samples, in the run's label unit.

  Gaze: the angular error (degrees) of the mean directions; screen targets: the
  Euclidean distance of the mean points (the labels' own unit, e.g. mm).
  """
  a, b = mean_label(recovered, label_kind), mean_label(true, label_kind)
  return float(label_error(np.asarray(a), np.asarray(b), label_kind))


def label_unit(label_kind: str, screen_unit: str = 'label units') -> str:
  """How a label error is printed: ``'deg'`` for gaze, the dataset's unit for screen targets."""
  return 'deg' if label_kind == 'gaze' else screen_unit


def calibrated_image_scores(logits, background_logits=None) -> np.ndarray:
  """Per-image, per-class identity scores ``[..., classes]``.

  ``log_softmax(logits)`` minus, with ``background_logits`` ``[B, classes]``, each
  class's mean log-probability on identity-free images (random prior samples): the
  classifier's attractor classes no longer win by default (`reidentification`).
  """
  from scipy import special  # pylint: disable=g-import-not-at-top
  score = special.log_softmax(np.asarray(logits, np.float64), axis=-1)
  if background_logits is not None:
    background = np.asarray(background_logits, np.float64)
    if background.ndim != 2 or background.shape[1] != score.shape[-1]:
      raise ValueError(f'background_logits must be [B, {score.shape[-1]}], got '
                       f'{background.shape}.')
    score = score - special.log_softmax(background, axis=-1).mean(axis=0)
  return score


def reidentification(classifier_logits, true_ids, background_logits=None) -> dict:
  """Re-identification by an evaluation classifier from each person's reconstructions.

  A person's K reconstructions vote by their mean log-probability per class. With
  ``background_logits`` (the classifier's logits of images that carry no identity,
  e.g. random samples of the attack's GAN prior), each class's score is taken
  relative to its mean log-probability on the background: a classifier trained on
  real images maps off-distribution images to a few "attractor" classes, which
  would otherwise be "re-identified" by chance whatever the attack learnt.

  Args:
    classifier_logits: ``[N_people, K, classes]`` logits of the reconstructions.
    true_ids: ``[N_people]`` the class of each attacked person.
    background_logits: optional ``[B, classes]``.

  Returns:
    ``{'top1': int, 'top5': int, 'num_people': N, 'predicted': [N] int,
    'rank': [N] int}``: counts of people whose true class is first / among the
    first five, the predicted class, and the true class's 0-based rank.
  """
  logits = np.asarray(classifier_logits, np.float64)
  true_ids = np.asarray(true_ids)
  if logits.ndim != 3 or len(true_ids) != logits.shape[0]:
    raise ValueError(f'Expected logits [N, K, classes] and true_ids [N]; got {logits.shape} '
                     f'and {true_ids.shape}.')
  score = calibrated_image_scores(logits, background_logits).mean(axis=1)  # [N, classes]
  true_score = score[np.arange(len(true_ids)), true_ids]
  rank = np.sum(score > true_score[:, None], axis=-1)
  return {'top1': int(np.sum(rank == 0)), 'top5': int(np.sum(rank < 5)),
          'num_people': int(len(true_ids)), 'predicted': score.argmax(axis=-1),
          'rank': rank}
