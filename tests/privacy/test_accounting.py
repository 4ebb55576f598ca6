"""Tests for privateyes_jax.privacy.accounting against direct dp_accounting computations."""

import math

import dp_accounting
import pytest
from dp_accounting import pld as dp_pld
from dp_accounting import rdp as dp_rdp

from privateyes_jax.privacy import accounting

ADD_REMOVE = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
SETTINGS = [(1.1, 0.01, 100, 1e-5), (0.9, 0.05, 30, 1e-6)]


def _direct_epsilon(z, q, rounds, delta, kind):
  """The mechanism written out with dp_accounting, independently of the module."""
  event = dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds)
  if kind == 'rdp':
    acc = dp_rdp.RdpAccountant(neighboring_relation=ADD_REMOVE)
  else:
    acc = dp_pld.PLDAccountant(neighboring_relation=ADD_REMOVE,
                               value_discretization_interval=1e-3)
  return acc.compose(event).get_epsilon(delta)


@pytest.mark.parametrize('z, q, rounds, delta', SETTINGS)
def test_epsilon_matches_direct_rdp(z, q, rounds, delta):
  assert accounting.epsilon(z, q, rounds, delta, 'rdp') == pytest.approx(
      _direct_epsilon(z, q, rounds, delta, 'rdp'), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize('z, q, rounds, delta', SETTINGS)
def test_epsilon_matches_direct_pld(z, q, rounds, delta):
  pld_eps = accounting.epsilon(z, q, rounds, delta, 'pld')
  assert pld_eps == pytest.approx(_direct_epsilon(z, q, rounds, delta, 'pld'), rel=1e-9)
  # Both are upper bounds; PLD is the tighter one.
  assert 0 < pld_eps < accounting.epsilon(z, q, rounds, delta, 'rdp')


@pytest.mark.parametrize('kind, rel', [('rdp', 1e-12), ('pld', 1e-6)])
def test_epsilons_non_decreasing_and_ends_at_epsilon(kind, rel):
  z, q, rounds, delta = SETTINGS[0]
  curve = accounting.epsilons(z, q, rounds, delta, kind)
  assert len(curve) == rounds
  assert all(b >= a for a, b in zip(curve, curve[1:]))
  assert curve[-1] == pytest.approx(accounting.epsilon(z, q, rounds, delta, kind), rel=rel)
  assert curve[9] == pytest.approx(accounting.epsilon(z, q, 10, delta, kind), rel=rel)


def test_epsilons_without_sampling_pld_matches_epsilon():
  curve = accounting.epsilons(2.0, 1.0, 5, 1e-5, 'pld')
  assert curve == [accounting.epsilon(2.0, 1.0, t, 1e-5, 'pld') for t in range(1, 6)]


@pytest.mark.parametrize('kind', accounting.ACCOUNTANTS)
def test_calibrated_noise_meets_target_tightly(kind):
  target, q, rounds, delta = 1.0, 0.01, 100, 1e-5
  z = accounting.calibrate_noise_multiplier(target, q, rounds, delta, kind)
  eps = accounting.epsilon(z, q, rounds, delta, kind)
  assert eps <= target
  assert eps > 0.99 * target
  # Slightly less noise breaks the target: z is (nearly) the smallest feasible value.
  assert accounting.epsilon(0.99 * z, q, rounds, delta, kind) > target


def test_abadi_mnist_setting_is_about_three():
  # Abadi et al. 2016 / the TF Privacy MNIST tutorial: z = 1.1, batch 256 of 60000,
  # 60 epochs, δ = 1e-5, reported as ε ≈ 3.0 with the older RDP-to-DP conversion. The
  # improved conversion in dp-accounting 0.6 gives 2.60.
  steps = 60 * 60000 // 256
  eps = accounting.epsilon(1.1, 256 / 60000, steps, 1e-5, 'rdp')
  assert 2.3 < eps < 3.2


@pytest.mark.parametrize('kind', accounting.ACCOUNTANTS)
def test_amplification_by_sampling_matters(kind):
  # Mutant: forgetting the sampling (q = 1) must give a strictly larger ε, so a test
  # that mixed the two up would fail.
  z, q, rounds, delta = SETTINGS[0]
  sampled = accounting.epsilon(z, q, rounds, delta, kind)
  unsampled = accounting.epsilon(z, 1.0, rounds, delta, kind)
  assert unsampled > 10 * sampled


@pytest.mark.parametrize('kind', accounting.ACCOUNTANTS)
def test_epsilon_without_sampling_is_q_one(kind):
  z, _, rounds, delta = SETTINGS[0]
  assert accounting.epsilon_without_sampling(z, rounds, delta, kind) == accounting.epsilon(
      z, 1.0, rounds, delta, kind)
  # q = 1 is the plain Gaussian; dp_accounting's Poisson event at q = 1 agrees with it.
  assert accounting.epsilon_without_sampling(z, rounds, delta, kind) == pytest.approx(
      _direct_epsilon(z, 1.0, rounds, delta, kind), rel=1e-3)


def test_edge_cases():
  assert accounting.epsilon(1.1, 0.01, 0, 1e-5) == 0.0
  assert accounting.epsilon(math.inf, 0.01, 10, 1e-5, 'pld') == 0.0
  assert accounting.epsilon(0.0, 0.01, 10, 1e-5) == math.inf
  assert accounting.epsilons(1.1, 0.01, 0, 1e-5) == []
  assert accounting.epsilons(0.0, 0.01, 2, 1e-5) == [math.inf, math.inf]
  assert accounting.calibrate_noise_multiplier(1.0, 0.01, 0, 1e-5) == 0.0


@pytest.mark.parametrize('call, name', [
    (lambda: accounting.epsilon(1.0, 0.0, 10, 1e-5), 'sampling_rate'),
    (lambda: accounting.epsilon(1.0, 1.5, 10, 1e-5), 'sampling_rate'),
    (lambda: accounting.epsilon(1.0, 0.1, 10, 0.0), 'delta'),
    (lambda: accounting.epsilon(1.0, 0.1, 10, 1.0), 'delta'),
    (lambda: accounting.epsilon(1.0, 0.1, -1, 1e-5), 'rounds'),
    (lambda: accounting.epsilon(1.0, 0.1, 2.5, 1e-5), 'rounds'),
    (lambda: accounting.epsilon(-1.0, 0.1, 10, 1e-5), 'noise_multiplier'),
    (lambda: accounting.epsilon(1.0, 0.1, 10, 1e-5, 'moments'), 'accountant'),
    (lambda: accounting.epsilons(1.0, 0.1, 10, 1e-5, 'moments'), 'accountant'),
    (lambda: accounting.epsilon_without_sampling(1.0, 10, 2.0), 'delta'),
    (lambda: accounting.calibrate_noise_multiplier(0.0, 0.1, 10, 1e-5), 'target_epsilon'),
    (lambda: accounting.calibrate_noise_multiplier(-1.0, 0.1, 10, 1e-5), 'target_epsilon'),
    (lambda: accounting.calibrate_noise_multiplier(1.0, 0.1, 10, 1e-5, 'x'), 'accountant'),
])
def test_bad_arguments_raise_one_line_errors(call, name):
  with pytest.raises(ValueError, match=name) as info:
    call()
  assert '\n' not in str(info.value)
