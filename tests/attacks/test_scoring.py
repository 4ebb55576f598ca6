"""Per-person scores and their statistics: chance is chance, shared views have no count.

Each test names the mutant of privateyes_jax/attacks/scoring.py it kills.
"""

import numpy as np
import pytest
from scipy import stats

from privateyes_jax.attacks import pipeline
from privateyes_jax.attacks import scoring


def _null_rows(rng, n, seeds, feds, shared, k=8, m=16):
  """Per-person rows of a view that carries nothing: every image's logits are noise."""
  rows = []
  for f in range(feds):
    for s in range(seeds):
      null = rng.normal(size=(m, n))
      shared_images = rng.normal(size=(k, n))
      images = [shared_images if shared else rng.normal(size=(k, n)) for _ in range(n)]
      scores = scoring.person_scores(images, null, np.arange(n))
      for i in range(n):
        # Rows carry an argmax outcome even for a shared view (as a registered row
        # might): the summary must still refuse to count it.
        rows.append({'person': f'p{i:02d}', 'attack_seed': s, 'federation': f,
                     'rank': scores['rank'][i], 'auc_vs_null': scores['auc_vs_null'][i],
                     'reidentified': bool(scores['rank'][i] == 1)})
  return rows


def test_ties_never_favour_the_true_identity():
  """Mutant killed: rank = 1 + #(scores above) (ties count for the true person)."""
  np.testing.assert_array_equal(scoring.rank_of_true(np.zeros((5, 5)), np.arange(5)), [3.0] * 5)
  np.testing.assert_array_equal(
      scoring.rank_of_true([[3.0, 1.0, 2.0], [3.0, 1.0, 2.0]], [0, 1]), [1.0, 3.0])
  assert scoring.auc([1.0, 1.0], [1.0]) == 0.5 and scoring.auc([2.0], [1.0, 0.0]) == 1.0


def test_null_view_scores_at_chance_per_client():
  """Mutants killed: 0-based ranks; AUC of the true class against the other classes of
  the same images (biased when one class is an attractor); a one-sided interval."""
  rng = np.random.default_rng(0)
  n = 6
  rows = _null_rows(rng, n, seeds=4, feds=5, shared=False)
  summary = scoring.summarize_row(rows, n, shared=False)
  assert summary['rank']['units'] == n * 5
  assert abs(summary['rank']['mean'] - (n + 1) / 2) < 0.4
  assert abs(summary['auc_vs_null']['mean'] - 0.5) < 0.05
  assert summary['rank']['low'] < (n + 1) / 2 < summary['rank']['high']
  reid = summary['reidentified']
  assert reid['trials'] == len(rows) and reid['chance'] == pytest.approx(1 / n)
  assert reid['low'] < 1 / n < reid['high'] < 1.0 and reid['p_value'] > 0.01


def test_shared_view_never_gets_a_count_and_its_rank_is_fixed():
  """Mutant killed: argmax count on a shared view (the bug of issue #14: 1/15 by
  construction); rank units per person for a shared view (15 'independent' units that
  all come from one reconstruction)."""
  rng = np.random.default_rng(1)
  n = 5
  rows = _null_rows(rng, n, seeds=3, feds=2, shared=True)
  # One reconstruction for everybody: the true ranks are a permutation of 1..n.
  for s in range(3):
    ranks = sorted(r['rank'] for r in rows if r['attack_seed'] == s and r['federation'] == 0)
    assert ranks == list(range(1, n + 1))
  summary = scoring.summarize_row(rows, n, shared=True)
  assert summary['reidentified'] is None
  assert summary['rank']['by_construction'] and summary['rank']['mean'] == (n + 1) / 2
  assert summary['auc_vs_null']['units'] == 6  # (seed, federation) pairs, not people.
  table = pipeline.format_table({'privateyes_output_model': summary})
  assert 'shared view: no count' in table and f'/{n}' not in table
  assert 'by construction' in table


def test_binomial_and_t_summaries_match_scipy():
  """Mutant killed: Wilson or normal intervals mislabelled as Clopper–Pearson; a
  two-sided p-value where a one-sided test is documented."""
  s = scoring.binomial_summary(0, 15, 1 / 15)
  assert s['low'] == 0.0 and s['high'] == pytest.approx(0.2180, abs=1e-4)  # Exact (CP) bound.
  assert s['p_value'] == 1.0 and s['expected'] == pytest.approx(1.0)
  s = scoring.binomial_summary(15, 15, 1 / 15)
  assert s['p_value'] == pytest.approx((1 / 15) ** 15) and s['low'] > 0.78
  units = [0.6, 0.7, 0.8, 0.65]
  m = scoring.mean_summary(units, 0.5, 'greater')
  low, high = stats.t.interval(0.95, 3, loc=np.mean(units), scale=stats.sem(units))
  assert (m['low'], m['high']) == pytest.approx((low, high))
  assert m['p_value'] == pytest.approx(stats.ttest_1samp(units, 0.5, alternative='greater').pvalue)
  one = scoring.mean_summary([0.7], 0.5, 'greater')
  assert one['mean'] == 0.7 and np.isnan(one['low']) and np.isnan(one['p_value'])


def test_intervals_stay_within_the_scores_range():
  """Two units of AUC 0 and 1: the t interval (-5.9, 6.9) is clipped to [0, 1]."""
  s = scoring.mean_summary([0.0, 1.0], 0.5, 'greater', (0.0, 1.0))
  assert (s['low'], s['high'], s['mean']) == (0.0, 1.0, 0.5)
  assert scoring.mean_summary([0.0, 1.0], 0.5, 'greater')['low'] < -5
