"""DualView scores per person, and their intervals and tests against chance (issue #14).

Two kinds of view are scored differently:

* a **per-client view** (plain FL's individual updates, the PrivatEyes coalition's
  shares of each update): every person has their own reconstructions ``x_i``, so
  "person i is re-identified" (their class ranks first on ``x_i``) is a Bernoulli
  trial with chance ``1/n``;
* a **shared view** (the opened output model, generic MPC's final model, anything
  identical for every client): one reconstruction ``x`` is scored against every
  person. An argmax over it names the same person for everyone, so a count of
  "re-identified" people is ``1`` (or the ``top-k`` count ``k``) by construction
  and is never reported. The true class's rank within the federation is a
  permutation of ``1..n`` over the people, so its mean is exactly ``(n+1)/2``.

What measures leakage for both kinds is ``auc_vs_null``: per person ``i``, the
probability that a reconstruction from the view scores higher for class ``i``
than a reconstruction from a **null view** (noise in place of the model change,
attacked with the same budget, prior and model), i.e. a Mann–Whitney AUC of the
classifier's calibrated per-image scores. Chance is 0.5 for both kinds of view.

Statistics (`binomial_summary`, `mean_summary`), over repetitions (attack seeds ×
federations):

* counts (per-client views): the re-identified fraction pooled over every (person,
  attack seed, federation) trial, a Clopper–Pearson 95% interval and a one-sided
  binomial test against ``1/n`` (``scipy.stats.binomtest``). Attack seeds repeat
  the same people, so these trials are not fully independent; the interval is
  slightly optimistic, which the rank/AUC intervals below are not.
* rank and AUC: a Student-t 95% interval and a one-sided one-sample t-test
  against chance over **independent units**: for a per-client view a unit is a
  (person, federation) pair averaged over attack seeds; for a shared view every
  person's score comes from the same reconstruction, so a unit is an (attack
  seed, federation) pair averaged over people.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from privateyes_jax import metrics

CONFIDENCE = 0.95


# One calibration for every scorer (the evaluation's counts and these ranks).
calibrated_image_scores = metrics.calibrated_image_scores


def rank_of_true(person_scores, true_ids) -> np.ndarray:
  """1-based rank of each person's true class by score ``[N, classes]``; ties share the mid-rank.

  Mid-ranks make a view that carries nothing (all scores equal) score ``(n+1)/2``,
  not 1: ties never count for the true identity.
  """
  score = np.asarray(person_scores, np.float64)
  true_ids = np.asarray(true_ids)
  true = score[np.arange(len(true_ids)), true_ids][:, None]
  above = np.sum(score > true, axis=-1)
  ties = np.sum(score == true, axis=-1) - 1  # Other classes tied with the true one.
  return 1.0 + above + 0.5 * ties


def auc(positive, negative) -> float:
  """Mann–Whitney AUC: P(positive > negative) + ½ P(tie); 0.5 is chance."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  positive = np.asarray(positive, np.float64).ravel()
  negative = np.asarray(negative, np.float64).ravel()
  if not len(positive) or not len(negative):
    raise ValueError('AUC needs at least one positive and one negative score.')
  u = stats.mannwhitneyu(positive, negative, alternative='two-sided').statistic
  return float(u / (len(positive) * len(negative)))


def person_scores(image_scores: Sequence[np.ndarray], null_scores: np.ndarray,
                  true_ids: Sequence[int]) -> dict:
  """Rank and AUC-vs-null of every attacked person.

  Args:
    image_scores: per person ``[K_i, classes]`` calibrated scores of their
      reconstructions (the same array for every person under a shared view).
    null_scores: ``[M, classes]`` calibrated scores of reconstructions from null
      views (noise in place of the model change).
    true_ids: each person's class.

  Returns:
    ``{'rank': [N] 1-based, 'auc_vs_null': [N], 'predicted': [N] class}``.
  """
  true_ids = np.asarray(true_ids)
  mean = np.stack([np.asarray(s, np.float64).mean(axis=0) for s in image_scores])
  null_scores = np.asarray(null_scores, np.float64)
  return {'rank': rank_of_true(mean, true_ids),
          'auc_vs_null': np.array([auc(np.asarray(s)[:, c], null_scores[:, c])
                                   for s, c in zip(image_scores, true_ids)]),
          'predicted': mean.argmax(axis=-1)}


# ----------------------------------------------------------------------------- statistics
def binomial_summary(successes: int, trials: int, chance: float) -> dict:
  """Fraction, Clopper–Pearson 95% interval and one-sided binomial p-value against ``chance``."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  if trials < 1:
    raise ValueError('A binomial summary needs at least one trial.')
  test = stats.binomtest(int(successes), int(trials), chance, alternative='greater')
  ci = stats.binomtest(int(successes), int(trials), chance).proportion_ci(  # Two-sided.
      confidence_level=CONFIDENCE, method='exact')
  return {'successes': int(successes), 'trials': int(trials), 'rate': successes / trials,
          'low': float(ci.low), 'high': float(ci.high), 'chance': float(chance),
          'expected': float(chance * trials), 'p_value': float(test.pvalue)}


def mean_summary(units: Sequence[float], chance: float, alternative: str,
                 bounds: tuple[float, float] = (-np.inf, np.inf)) -> dict:
  """Mean of independent units, Student-t 95% interval, one-sided t-test p-value against ``chance``.

  ``alternative``: ``'greater'`` (leakage raises the score, e.g. AUC) or ``'less'``
  (leakage lowers it, e.g. rank). One unit gives no interval (NaN bounds and p).
  ``bounds``: the score's range (AUC [0, 1], rank [1, n]); the interval is clipped to
  it (with 2-3 units a t interval can reach past it).
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top
  units = np.asarray(units, np.float64)
  if not len(units):
    raise ValueError('A mean summary needs at least one unit.')
  mean = float(units.mean())
  low = high = p = float('nan')
  if len(units) > 1:
    sem = float(units.std(ddof=1) / np.sqrt(len(units)))
    if sem > 0:
      half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(units) - 1)) * sem
      low, high = max(mean - half, bounds[0]), min(mean + half, bounds[1])
      p = float(stats.ttest_1samp(units, chance, alternative=alternative).pvalue)
    else:
      low = high = mean
      p = 1.0 if (mean <= chance if alternative == 'greater' else mean >= chance) else 0.0
  return {'mean': mean, 'low': low, 'high': high, 'chance': float(chance),
          'p_value': p, 'units': int(len(units))}


def units_of(rows: Sequence[Mapping], key: str, shared: bool) -> list[float]:
  """Independent units of ``key`` (module docstring): per-client views average each
  (person, federation) over attack seeds; shared views each (seed, federation) over people."""
  groups: dict[tuple, list[float]] = {}
  for r in rows:
    if r.get(key) is None:
      continue
    unit = (r['attack_seed'], r['federation']) if shared else (r['person'], r['federation'])
    groups.setdefault(unit, []).append(float(r[key]))
  return [float(np.mean(v)) for _, v in sorted(groups.items())]


def summarize_row(rows: Sequence[Mapping], num_people: int, shared: bool) -> dict:
  """A threat model's summary over all its per-person rows (every seed and federation).

  Per-client views get ``reidentified`` (binomial) and ``rank``/``auc_vs_null`` (t);
  shared views no count (``reidentified`` None) and ``rank`` flagged as fixed by
  construction. Means of the pixel and gaze metrics come along.
  """
  if not rows:
    raise ValueError('No per-person rows to summarize.')
  n = num_people
  out = {'shared': bool(shared), 'num_people': n,
         'repetitions': len({(r['attack_seed'], r['federation']) for r in rows}),
         'federations': len({r['federation'] for r in rows}),
         'attack_seeds': len({r['attack_seed'] for r in rows})}
  if not shared and all('reidentified' in r for r in rows):
    out['reidentified'] = binomial_summary(sum(bool(r['reidentified']) for r in rows), len(rows),
                                           1.0 / n)
  else:
    out['reidentified'] = None
  if all('rank' in r for r in rows):
    out['rank'] = mean_summary(units_of(rows, 'rank', shared), (n + 1) / 2, 'less', (1.0, n))
    out['rank']['by_construction'] = bool(shared)
  if all('auc_vs_null' in r for r in rows):
    out['auc_vs_null'] = mean_summary(units_of(rows, 'auc_vs_null', shared), 0.5, 'greater',
                                      (0.0, 1.0))
  for key in ('psnr', 'ssim', 'label_error', 'gaze_kl', 'baseline_label_error', 'baseline_kl'):
    values = [r[key] for r in rows if r.get(key) is not None]
    if values:
      out[key] = float(np.mean(values))
  return out
