"""DualView evaluation (DESIGN.md §5.4): re-identification, pixel similarity, gaze leakage, plots.

The re-identification oracle is an `IdentityNet` trained on the federation
people's private data, with a held-out split of each person's samples to measure
its own accuracy. A weak oracle would make "0/15 re-identified" meaningless, so
`check_usable` refuses (ValueError) to report re-identification from a classifier
whose held-out accuracy is below ``min_accuracy``.

Per person and threat model: re-identified (top-1) and top-5 from the mean
log-probability of the person's K reconstructions; PSNR and SSIM of each
reconstruction against its **best-matching** real image of that person (the
reconstructions are not paired with particular real images), averaged over the K
reconstructions; the angular error between the recovered and the true mean gaze;
and the KL divergence between KDEs of the true and the recovered gaze samples.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from privateyes_jax import metrics
from privateyes_jax.data import base
from privateyes_jax.models import identity

DEFAULT_MIN_ACCURACY = 0.8
SUMMARY_KEYS = ('reidentified', 'num_people', 'top5', 'psnr', 'ssim', 'gaze_error_deg', 'gaze_kl')


@dataclasses.dataclass(frozen=True)
class EvaluationClassifier:
  """The trained re-identification oracle.

  Attributes:
    model, params: the `IdentityNet` and its parameters.
    person_names: class ``i`` is ``person_names[i]``.
    accuracy: top-1 accuracy on the held-out samples of the same people.
    holdout: per person, the indices of the held-out samples (never trained on).
  """
  model: identity.IdentityNet
  params: Any
  person_names: tuple[str, ...]
  accuracy: float
  holdout: tuple[np.ndarray, ...]

  def logits(self, images: np.ndarray) -> np.ndarray:
    """``[N, classes]`` logits of uint8 ``[N, 36, 60, 1]`` images."""
    return identity.predict_logits(self.model, self.params, np.asarray(images))


def check_usable(classifier: EvaluationClassifier,
                 min_accuracy: float = DEFAULT_MIN_ACCURACY) -> None:
  """Raises ValueError if the oracle is too weak for re-identification counts to mean anything."""
  if not classifier.accuracy >= min_accuracy:
    raise ValueError(
        f'The evaluation identity classifier has held-out accuracy {classifier.accuracy:.3f}, '
        f'below the usable threshold {min_accuracy:.3f}; refusing to report re-identification '
        'from it. Train it longer (steps) or on more samples per person.')


def train_evaluation_classifier(people: Sequence[base.PersonData], *, steps: int = 300,
                                batch_size: int = 64, learning_rate: float = 2e-3,
                                holdout_fraction: float = 0.2, seed: int = 0,
                                features: Sequence[int] = (16, 32, 64),
                                min_accuracy: float | None = DEFAULT_MIN_ACCURACY
                                ) -> EvaluationClassifier:
  """Trains the re-identification oracle on the federation people's private data.

  Args:
    people: the federation's people; class ``i`` is ``people[i]``.
    holdout_fraction: share of each person's samples held out (seeded) to measure
      the classifier's accuracy.
    min_accuracy: refuse (ValueError) below this held-out accuracy; None skips the
      check (for inspecting a weak classifier).
  """
  if not 0.0 < holdout_fraction < 1.0:
    raise ValueError(f'holdout_fraction must be in (0, 1), got {holdout_fraction}.')
  rng = np.random.default_rng([seed, 7])
  train_x, train_y, holdout = [], [], []
  for i, p in enumerate(people):
    n_hold = max(1, int(round(holdout_fraction * p.num_samples)))
    if p.num_samples - n_hold < 1:
      raise ValueError(f'Person {p.person} has too few samples ({p.num_samples}) to hold some out.')
    perm = rng.permutation(p.num_samples)
    holdout.append(np.sort(perm[:n_hold]))
    train_x.append(p.images[perm[n_hold:]])
    train_y.append(np.full(p.num_samples - n_hold, i, np.int32))
  model, params = identity.train_classifier(
      np.concatenate(train_x), np.concatenate(train_y), len(people), steps=steps,
      batch_size=batch_size, learning_rate=learning_rate, seed=seed, features=features)
  hold_x = np.concatenate([p.images[h] for p, h in zip(people, holdout)])
  hold_y = np.concatenate([np.full(len(h), i) for i, h in enumerate(holdout)])
  accuracy = float(np.mean(identity.predict_logits(model, params, hold_x).argmax(-1) == hold_y))
  classifier = EvaluationClassifier(model=model, params=params,
                                    person_names=tuple(p.person for p in people),
                                    accuracy=accuracy, holdout=tuple(holdout))
  if min_accuracy is not None:
    check_usable(classifier, min_accuracy)
  return classifier


def best_match_similarity(reconstructions: np.ndarray, real: np.ndarray) -> tuple[float, float]:
  """Mean over reconstructions of the best PSNR and the best SSIM against ``real`` images.

  Args:
    reconstructions: uint8 ``[K, H, W, C]``.
    real: uint8 ``[N, H, W, C]`` (the person's real images; a few hundred suffice).
  """
  k, n = len(reconstructions), len(real)
  a = np.repeat(reconstructions, n, axis=0)
  b = np.tile(real, (k, 1, 1, 1))
  p = metrics.psnr(a, b).reshape(k, n)
  s = metrics.ssim(a, b).reshape(k, n)
  return float(np.mean(p.max(axis=1))), float(np.mean(s.max(axis=1)))


def evaluate_people(attacks: Sequence[Mapping[str, np.ndarray]], people: Sequence[base.PersonData],
                    classifier: EvaluationClassifier, *, class_ids: Sequence[int] | None = None,
                    num_real: int = 100, min_accuracy: float = DEFAULT_MIN_ACCURACY,
                    background: np.ndarray | None = None) -> list[dict]:
  """Per-person DualView metrics for one threat model.

  Args:
    attacks: per attacked person, `dualview.attack_person`'s result (``images``
      uint8 ``[K, 36, 60, 1]``, ``gaze`` ``[M, 2]``).
    people: the attacked people's real data, in the same order.
    classifier: the oracle; refused if below ``min_accuracy``.
    class_ids: each person's class in the classifier (default: position in
      ``classifier.person_names`` by name).
    num_real: real images per person (evenly spaced) for the best-match PSNR/SSIM.
    background: uint8 images without identity (random samples of the attack's
      prior); the classifier's scores are calibrated against them
      (`metrics.reidentification`), so that chance stays chance.

  Returns:
    One dict per person: ``person``, ``reidentified`` (bool), ``top5`` (bool),
    ``predicted`` (person name), ``psnr``, ``ssim``, ``gaze_error_deg``, ``gaze_kl``.
  """
  check_usable(classifier, min_accuracy)
  if len(attacks) != len(people):
    raise ValueError(f'{len(attacks)} attack results for {len(people)} people.')
  if class_ids is None:
    names = list(classifier.person_names)
    missing = [p.person for p in people if p.person not in names]
    if missing:
      raise ValueError(f'People {missing} are not classes of the evaluation classifier.')
    class_ids = [names.index(p.person) for p in people]
  logits = np.stack([classifier.logits(a['images']) for a in attacks])
  reid = metrics.reidentification(
      logits, np.asarray(class_ids),
      None if background is None else classifier.logits(np.asarray(background)))
  rows = []
  for i, (a, p) in enumerate(zip(attacks, people)):
    real = p.images[np.linspace(0, p.num_samples - 1, min(num_real, p.num_samples)).astype(int)]
    psnr, ssim = best_match_similarity(np.asarray(a['images']), real)
    rows.append({
        'person': p.person,
        'reidentified': bool(reid['rank'][i] == 0),
        'top5': bool(reid['rank'][i] < 5),
        'predicted': classifier.person_names[int(reid['predicted'][i])],
        'psnr': psnr,
        'ssim': ssim,
        'gaze_error_deg': metrics.recovered_gaze_error_deg(a['gaze'], p.labels),
        'gaze_kl': metrics.gaze_kde_kl(p.labels, a['gaze']),
    })
  return rows


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict:
  """The summary row of one threat model: counts and means over people (keys `SUMMARY_KEYS`)."""
  if not rows:
    raise ValueError('No per-person rows to summarize.')
  mean = lambda k: float(np.mean([r[k] for r in rows]))
  return {'reidentified': int(sum(r['reidentified'] for r in rows)), 'num_people': len(rows),
          'top5': int(sum(r['top5'] for r in rows)), 'psnr': mean('psnr'), 'ssim': mean('ssim'),
          'gaze_error_deg': mean('gaze_error_deg'), 'gaze_kl': mean('gaze_kl')}


# ----------------------------------------------------------------------------- plots
def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_reconstructions(path: str, people: Sequence[base.PersonData],
                         reconstructions: Mapping[str, Sequence[np.ndarray]],
                         num_real: int = 3, num_recon: int = 3) -> None:
  """PNG grid: a row per person; ``num_real`` real images, then ``num_recon``
  reconstructions per threat model (``reconstructions[threat][person]`` uint8 ``[K, ...]``)."""
  plt = _pyplot()
  threats = list(reconstructions)
  cols = num_real + num_recon * len(threats)
  fig, axes = plt.subplots(len(people), cols, figsize=(1.2 * cols, 0.8 * len(people) + 0.4),
                           squeeze=False)
  for i, p in enumerate(people):
    tiles = [(p.images[j * p.num_samples // num_real], 'real') for j in range(num_real)]
    for t in threats:
      tiles += [(img, t) for img in np.asarray(reconstructions[t][i])[:num_recon]]
    for j, ax in enumerate(axes[i]):
      ax.axis('off')
      if j < len(tiles):
        ax.imshow(tiles[j][0][..., 0], cmap='gray', vmin=0, vmax=255)
        if i == 0:  # 'privateyes_output_model' -> two short lines, not overlapping.
          ax.set_title(tiles[j][1].replace('_', ' ').replace(' ', '\n', 1), fontsize=6)
    axes[i][0].text(-4, 18, p.person, fontsize=7, ha='right', va='center')
  fig.tight_layout(pad=0.2)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_gaze(path: str, people: Sequence[base.PersonData],
              recovered: Mapping[str, Sequence[np.ndarray]], columns: int = 5) -> None:
  """PNG of per-person scatter plots: true gaze vs each threat model's recovered gaze (degrees)."""
  plt = _pyplot()
  rows = (len(people) + columns - 1) // columns
  fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.2 * rows), squeeze=False)
  markers = ['x', '+', '^', 's']
  for i, p in enumerate(people):
    ax = axes[i // columns][i % columns]
    true = np.degrees(p.labels)
    ax.scatter(true[:, 1], true[:, 0], s=2, alpha=0.3, c='gray', label='true')
    for j, t in enumerate(recovered):
      g = np.degrees(np.asarray(recovered[t][i]))
      ax.scatter(g[:, 1], g[:, 0], s=14, marker=markers[j % len(markers)], label=t)
    ax.set_title(p.person, fontsize=8)
    ax.tick_params(labelsize=6)
  for k in range(len(people), rows * columns):
    axes[k // columns][k % columns].axis('off')
  axes[0][0].legend(fontsize=6)
  fig.supxlabel('yaw (deg)', fontsize=8)
  fig.supylabel('pitch (deg)', fontsize=8)
  fig.tight_layout(pad=0.3)
  fig.savefig(path, dpi=110)
  plt.close(fig)
