"""DualView evaluation (DESIGN.md §5.4): re-identification, pixel similarity, gaze leakage, plots.

The re-identification oracle is an `IdentityNet` trained on the federation
people's private data, with a held-out split of each person's samples to measure
its own accuracy. A weak oracle would make "0/15 re-identified" meaningless, so
`check_usable` refuses (ValueError) to report re-identification from a classifier
whose held-out accuracy is below ``min_accuracy``.

Per person and threat model (`evaluate_people`): the true person's rank among
the federation and, for per-client views only, re-identified (rank 1) and top-5,
from the calibrated mean log-probability of the person's K reconstructions; the
AUC of the true person's per-image scores against a null view's reconstructions
(`scoring`); PSNR and SSIM of each reconstruction against its **best-matching**
real image of that person (the reconstructions are not paired with particular real
images), averaged over the K reconstructions; the error between the recovered and
the true mean label (degrees for gaze, the labels' unit for screen targets); the KL
divergence between KDEs of the true and the recovered label samples; and the same
two for a matched no-leakage guess (the attack's own distribution moved to a
public centre).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from privateyes_jax import metrics
from privateyes_jax.data import base
from privateyes_jax.models import identity

DEFAULT_MIN_ACCURACY = 0.8


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
    """``[N, classes]`` logits of uint8 ``[N, H, W, C]`` images (the run's image shape)."""
    return identity.predict_logits(self.model, self.params, np.asarray(images))


class ClassifierTooWeak(ValueError):
  """The evaluation identity classifier cannot score re-identification."""


def check_usable(classifier: EvaluationClassifier,
                 min_accuracy: float = DEFAULT_MIN_ACCURACY) -> None:
  """Raises ClassifierTooWeak if the oracle is too weak for re-identification counts to
  mean anything."""
  if not classifier.accuracy >= min_accuracy:
    raise ClassifierTooWeak(
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
                    classifier: EvaluationClassifier, *, null_images: np.ndarray,
                    shared: bool = False, class_ids: Sequence[int] | None = None,
                    num_real: int = 100, min_accuracy: float = DEFAULT_MIN_ACCURACY,
                    background: np.ndarray | None = None, label_kind: str = 'gaze',
                    baseline_centre: np.ndarray | None = None) -> list[dict]:
  """Per-person DualView metrics for one threat model, one attack seed, one federation.

  Args:
    attacks: per attacked person, `dualview.attack_person`'s result (``images``
      uint8 ``[K, H, W, C]`` in the run's image shape (36x60x1 eye patches by
      default), ``gaze`` ``[M, 2]``: view 2's samples in the run's
      label space); the same result for every person under a shared view.
    people: the attacked people's real data, in the same order.
    classifier: the oracle; refused if below ``min_accuracy``.
    null_images: uint8 reconstructions from null views (noise in place of the
      model change, same attack budget); ``auc_vs_null`` compares against them.
    shared: the view is the same for every person: no ``reidentified`` key
      (an argmax over one reconstruction names one person for everybody).
    class_ids: each person's class in the classifier (default: by name).
    num_real: real images per person (evenly spaced) for the best-match PSNR/SSIM.
    background: uint8 images without identity (random samples of the attack's
      prior); scores are calibrated against them (`scoring.calibrated_image_scores`).
    label_kind: ``'gaze'`` (pitch/yaw radians; errors in degrees) or ``'screen'``
      (screen targets; errors in the labels' unit).
    baseline_centre: ``[2]`` the no-leakage guess's centre (e.g. the public
      auxiliary people's mean label). The matched baseline is the attack's own
      view-2 samples moved to this centre: the same family and spread, no
      information about the person. None: no baseline columns.

  Returns:
    One dict per person: ``person``, ``rank`` (1-based among the classifier's
    people; chance (n+1)/2), ``auc_vs_null``, ``predicted``, ``reidentified`` and
    ``top5`` (per-client views only), ``psnr``, ``ssim``, ``label_error``,
    ``gaze_kl`` and, with ``baseline_centre``, ``baseline_label_error`` and ``baseline_kl``.
  """
  from privateyes_jax.attacks import scoring  # pylint: disable=g-import-not-at-top
  check_usable(classifier, min_accuracy)
  if len(attacks) != len(people):
    raise ValueError(f'{len(attacks)} attack results for {len(people)} people.')
  if class_ids is None:
    names = list(classifier.person_names)
    missing = [p.person for p in people if p.person not in names]
    if missing:
      raise ValueError(f'People {missing} are not classes of the evaluation classifier.')
    class_ids = [names.index(p.person) for p in people]
  bg = None if background is None else classifier.logits(np.asarray(background))
  cache: dict[int, np.ndarray] = {}  # A shared view's images are scored once.

  def image_scores(images):
    if id(images) not in cache:
      cache[id(images)] = scoring.calibrated_image_scores(classifier.logits(images), bg)
    return cache[id(images)]

  scores = scoring.person_scores([image_scores(a['images']) for a in attacks],
                                 scoring.calibrated_image_scores(
                                     classifier.logits(np.asarray(null_images)), bg),
                                 class_ids)
  rows = []
  for i, (a, p) in enumerate(zip(attacks, people)):
    real = p.images[np.linspace(0, p.num_samples - 1, min(num_real, p.num_samples)).astype(int)]
    psnr, ssim = best_match_similarity(np.asarray(a['images']), real)
    row = {'person': p.person, 'rank': float(scores['rank'][i]),
           'auc_vs_null': float(scores['auc_vs_null'][i]),
           'predicted': classifier.person_names[int(scores['predicted'][i])],
           'psnr': psnr, 'ssim': ssim,
           'label_error': metrics.recovered_label_error(a['gaze'], p.labels, label_kind),
           'gaze_kl': metrics.gaze_kde_kl(p.labels, a['gaze'])}
    if not shared:
      row['reidentified'] = bool(scores['rank'][i] == 1)
      row['top5'] = bool(scores['rank'][i] <= 5)
    if baseline_centre is not None:
      guess = baseline_samples(a['gaze'], baseline_centre, label_kind)
      row['baseline_label_error'] = metrics.recovered_label_error(guess, p.labels, label_kind)
      row['baseline_kl'] = metrics.gaze_kde_kl(p.labels, guess)
    rows.append(row)
  return rows


def baseline_samples(samples: np.ndarray, centre: np.ndarray, label_kind: str) -> np.ndarray:
  """The matched no-leakage guess: ``samples`` ``[M, 2]`` moved so that their centre is ``centre``."""
  samples = np.asarray(samples, np.float64)
  moved = samples - metrics.mean_label(samples, label_kind) + np.asarray(centre, np.float64)
  if label_kind == 'gaze':  # Nudge to the exact mean direction (the shift is in angles).
    moved = moved - metrics.mean_label(moved, label_kind) + np.asarray(centre, np.float64)
  return moved.astype(np.float32)


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict:
  """Means over people of one seed's rows (the pooled statistics are `scoring.summarize_row`)."""
  if not rows:
    raise ValueError('No per-person rows to summarize.')
  keys = [k for k in rows[0] if isinstance(rows[0][k], (bool, int, float))]
  return {k: float(np.mean([r[k] for r in rows])) for k in keys} | {'num_people': len(rows)}


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
  reconstructions per threat model (``reconstructions[threat][person]`` uint8 ``[K, H, W, C]``;
  grayscale or RGB)."""
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
        image = tiles[j][0]
        if image.shape[-1] == 1:
          ax.imshow(image[..., 0], cmap='gray', vmin=0, vmax=255)
        else:  # RGB faces.
          ax.imshow(image)
        if i == 0:  # 'privateyes_output_model' -> two short lines, not overlapping.
          ax.set_title(tiles[j][1].replace('_', ' ').replace(' ', '\n', 1), fontsize=6)
    axes[i][0].text(-4, p.images.shape[1] / 2, p.person, fontsize=7, ha='right', va='center')
  fig.tight_layout(pad=0.2)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_gaze(path: str, people: Sequence[base.PersonData],
              recovered: Mapping[str, Sequence[np.ndarray]], columns: int = 5,
              label_kind: str = 'gaze', unit: str = 'deg') -> None:
  """PNG of per-person scatter plots: true vs each threat model's recovered labels
  (gaze in degrees, screen targets in the run's unit)."""
  plt = _pyplot()
  rows = (len(people) + columns - 1) // columns
  fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.2 * rows), squeeze=False)
  markers = ['x', '+', '^', 's']
  show = np.degrees if label_kind == 'gaze' else np.asarray
  for i, p in enumerate(people):
    ax = axes[i // columns][i % columns]
    true = show(p.labels)
    ax.scatter(true[:, 1], true[:, 0], s=2, alpha=0.3, c='gray', label='true')
    for j, t in enumerate(recovered):
      g = show(np.asarray(recovered[t][i]))
      ax.scatter(g[:, 1], g[:, 0], s=14, marker=markers[j % len(markers)], label=t)
    ax.set_title(p.person, fontsize=8)
    ax.tick_params(labelsize=6)
  for k in range(len(people), rows * columns):
    axes[k // columns][k % columns].axis('off')
  axes[0][0].legend(fontsize=6)
  names = ('yaw', 'pitch') if label_kind == 'gaze' else ('label 1', 'label 0')
  fig.supxlabel(f'{names[0]} ({unit})', fontsize=8)
  fig.supylabel(f'{names[1]} ({unit})', fontsize=8)
  fig.tight_layout(pad=0.3)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_person_scores(path: str, out: Mapping[str, Any]) -> None:
  """PNG: per threat model, every person's AUC vs the null view and rank (mean over attack
  seeds, one point per person and federation), with chance lines."""
  plt = _pyplot()
  rows = out['threat_models']
  n = out['num_people']
  fig, axes = plt.subplots(1, 2, figsize=(10, 0.5 * len(rows) + 1.6), squeeze=False)
  for col, (key, chance, label) in enumerate((('auc_vs_null', 0.5, 'AUC vs null view'),
                                              ('rank', (n + 1) / 2, 'rank of the true person'))):
    ax = axes[0][col]
    for y, name in enumerate(rows):
      units: dict[tuple, list[float]] = {}
      for r in out['per_person'][name]:
        if r.get(key) is not None:
          units.setdefault((r['person'], r['federation']), []).append(r[key])
      values = [float(np.mean(v)) for v in units.values()]
      jitter = np.linspace(-0.2, 0.2, len(values)) if values else []
      ax.scatter(values, y + np.asarray(jitter), s=10, alpha=0.7)
      summary = rows[name].get(key)
      low = (summary or {}).get('low')
      if low is not None and np.isfinite(low):  # None: NaN read back from JSON.
        ax.plot([summary['low'], summary['high']], [y + 0.35] * 2, color='black', lw=2)
    ax.axvline(chance, color='gray', ls='--', lw=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f'{k}{" (shared)" if rows[k].get("shared") else ""}' for k in rows]
                       if col == 0 else [''] * len(rows), fontsize=7)
    ax.set_xlabel(label + f' (chance {chance:g}; bar: 95% CI)', fontsize=8)
    if key == 'rank':
      ax.set_xlim(0.5, n + 0.5)
    else:
      ax.set_xlim(-0.02, 1.02)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
