"""Tests for privateyes_jax.privacy.discrete_gaussian: goodness of fit, moments, errors.

The chi-square tests use fixed keys, so they are deterministic; their threshold
(p > 1e-4) is loose enough for the sampler to pass and the rounded-Gaussian mutant is
rejected with p far below it, which is what makes the fit test meaningful.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from privateyes_jax.privacy import discrete_gaussian as dg

DRAWS = 200_000
MIN_EXPECTED = 5.0  # Bins expected to hold fewer draws are merged into their neighbours.


def _draw(seed, sigma, shape):
  with jax.enable_x64(True):
    return np.asarray(dg.sample(jax.random.key(seed), sigma, shape))


def _chi_square_p(draws, probabilities_of, radius):
  """p-value of draws against a PMF on [-radius, radius], tails merged until expected ≥ 5.

  Everything left of the first bin with enough expectation goes into it, everything right
  of the last into that one; the distributions here are unimodal, so the bins in between
  all qualify.
  """
  support = np.arange(-radius, radius + 1)
  expected = len(draws) * probabilities_of(support)
  observed = np.bincount(np.clip(draws, -radius, radius) + radius, minlength=support.size)
  big = np.flatnonzero(expected >= MIN_EXPECTED)
  lo, hi = big[0], big[-1]
  merged_expected = np.concatenate([[expected[:lo + 1].sum()], expected[lo + 1:hi],
                                    [expected[hi:].sum()]])
  merged_observed = np.concatenate([[observed[:lo + 1].sum()], observed[lo + 1:hi],
                                    [observed[hi:].sum()]])
  merged_expected *= len(draws) / merged_expected.sum()  # Tails beyond radius: < 1e-290.
  return stats.chisquare(merged_observed, merged_expected).pvalue


@pytest.mark.parametrize('sigma, seed', [(0.5, 1), (1.7, 2), (4.0, 3)])
def test_samples_fit_the_exact_pmf(sigma, seed):
  draws = _draw(seed, sigma, (DRAWS,))
  assert draws.dtype == np.int64
  p = _chi_square_p(draws, lambda x: dg.pmf(x, sigma), dg.tail_radius(sigma))
  assert p > 1e-4, f'sigma={sigma}: chi-square p={p:.3g}'


def test_rounded_float_gaussian_mutant_is_rejected():
  # The mutant "rounding a float Gaussian": round(N(0, σ²)) has P(0) = 0.68 at σ = 0.5,
  # the discrete Gaussian 0.79. The same test that accepts the sampler must reject it.
  sigma = 0.5
  with jax.enable_x64(True):
    rounded = np.asarray(jnp.round(sigma * jax.random.normal(jax.random.key(1), (DRAWS,),
                                                             jnp.float64)).astype(jnp.int64))
  p = _chi_square_p(rounded, lambda x: dg.pmf(x, sigma), dg.tail_radius(sigma))
  assert p < 1e-12


def test_large_sigma_mean_and_variance():
  sigma = 1000.0
  draws = _draw(4, sigma, (DRAWS,)).astype(np.float64)
  exact = dg.variance(sigma)
  assert abs(draws.mean()) < 5 * math.sqrt(exact / DRAWS)
  # Sample variance of a near-Gaussian: relative standard error sqrt(2 / n) ≈ 0.32%.
  assert abs(draws.var() / exact - 1) < 5 * math.sqrt(2 / DRAWS)


def test_largest_sigma_stays_in_range():
  sigma = dg.MAX_SIGMA
  draws = _draw(5, sigma, (20_000,))
  assert draws.dtype == np.int64
  assert np.abs(draws).max() < 8 * sigma
  assert abs(draws.astype(np.float64).std() / sigma - 1) < 0.05


def test_sum_of_three_draws_matches_sum_pmf():
  sigma, terms = 0.5, 3
  draws = _draw(6, sigma, (DRAWS, terms)).sum(axis=1)
  radius = terms * dg.tail_radius(sigma)
  p = _chi_square_p(draws, lambda x: dg.sum_pmf(x, sigma, terms), radius)
  assert p > 1e-4, f'chi-square p={p:.3g}'
  # At this σ the sum is clearly not N_Z(0, 3σ²) (P(0) = 0.540 against 0.460), so the
  # convolution is needed, and the same test tells the two apart.
  p_single = _chi_square_p(draws, lambda x: dg.pmf(x, math.sqrt(terms) * sigma), radius)
  assert p_single < 1e-12
  support = np.arange(-radius, radius + 1)
  np.testing.assert_allclose(dg.sum_pmf(support, sigma, terms).sum(), 1.0, rtol=1e-12)


def test_pmf_is_normalised_and_variance_below_sigma_squared():
  for sigma in (0.3, 1.0, 2.5, 30.0):
    radius = dg.tail_radius(sigma)
    p = dg.pmf(np.arange(-radius, radius + 1), sigma)
    assert math.fsum(p) == pytest.approx(1.0, rel=1e-13)
    # The theta-function normaliser agrees with the direct sum.
    assert dg._normaliser_theta(sigma) == pytest.approx(dg._normaliser_direct(sigma), rel=1e-13)
  assert dg.variance(0.5) < 0.25 * 0.87  # Far below σ² at small σ ...
  assert 1 - 1e-6 < dg.variance(1.0) < 1.0  # ... just below at σ = 1 ...
  assert dg.variance(2.0**30) == pytest.approx(2.0**60, rel=1e-15)  # ... σ² at large σ.


@pytest.mark.parametrize('sigma', [0, -1.0, float('nan'), float('inf'), 2.0**41, '1', True])
def test_bad_sigma_raises_one_line_error(sigma):
  with jax.enable_x64(True), pytest.raises(ValueError, match='sigma') as info:
    dg.sample(jax.random.key(0), sigma, (3,))
  assert '\n' not in str(info.value)
  with pytest.raises(ValueError, match='sigma'):
    dg.pmf(np.arange(3), sigma)


def test_outside_x64_raises():
  with jax.enable_x64(False), pytest.raises(RuntimeError, match='enable_x64') as info:
    dg.sample(jax.random.key(0), 1.0, (3,))
  assert '\n' not in str(info.value)
