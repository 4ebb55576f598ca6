"""Active security: every deviation aborts the round; honest rounds never do."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from privateyes_jax.federated.aggregators import weighted_mean
from privateyes_jax.mpc import adversary as adversary_lib
from privateyes_jax.mpc import aggregator as aggregator_lib
from privateyes_jax.mpc import ring
from privateyes_jax.mpc import security_suite

SPEC = ring.RingSpec()


def test_randomized_suite_detects_every_attack_and_never_aborts_honest_runs():
  # Same shapes as the other tests in tests/mpc, so compilations are shared.
  report = security_suite.run_suite(num_trials=60, seed=7, num_servers_max=3,
                                    num_clients=3, num_params=4,
                                    honest_fraction=0.1)
  assert report.ok, '\n'.join(report.failures)
  for scenario in security_suite.ACTIVE:
    assert report.trials[scenario] >= 2, scenario
    assert report.detected[scenario] == report.trials[scenario], scenario
  assert report.trials['none'] >= 3


def _semi_honest(adversary, num_params=4):
  return aggregator_lib.SecureAggregator(
      spec=SPEC, num_servers=3, max_weight=8.0, mode='privateyes_semi_honest',
      adversary=adversary, num_params=num_params)


@pytest.mark.parametrize('kind', ['add_error', 'flip_bits'])
def test_semi_honest_mode_silently_accepts_the_same_attacks(kind):
  """Without MACs the round 'succeeds' with a wrong mean: what SPDZ2k buys."""
  updates = jax.random.normal(jax.random.key(0), (3, 4)) * 0.1
  weights = jnp.array([8.0, 4.0, 2.0])
  agg = _semi_honest(adversary_lib.AdversarySpec(kind=kind, server=1, client=0,
                                                 magnitude=3 << 16, element=0))
  _, result = agg.apply(agg.init(jax.random.key(1)), updates, weights,
                        jax.random.key(2), 0)
  assert result.ok
  error = np.abs(np.asarray(result.mean_update)
                 - np.asarray(weighted_mean(updates, weights)[0])).max()
  assert error > 1e-2


def test_semi_honest_output_check_catches_only_a_garbled_weight_sum():
  """A dropped client's share leaves uniform garbage in the opened total weight: the
  output check (0 < Σw̃ ≤ n), not a MAC, refuses it. Errors off the weight go through."""
  updates = jax.random.normal(jax.random.key(0), (3, 4)) * 0.1
  agg = _semi_honest(adversary_lib.AdversarySpec(kind='drop_client', server=1, client=0))
  _, result = agg.apply(agg.init(jax.random.key(1)), updates, jnp.array([8.0, 4.0, 2.0]),
                        jax.random.key(2), 0)
  assert not result.ok
  assert result.failure.startswith(aggregator_lib.OUTPUT_OUT_OF_RANGE)


def test_failed_round_returns_no_output():
  agg = aggregator_lib.SecureAggregator(
      spec=SPEC, num_servers=2, max_weight=8.0,
      adversary=adversary_lib.AdversarySpec(kind='add_error', server=0,
                                            magnitude=1))
  _, result = agg.apply(agg.init(jax.random.key(0)), jnp.ones((3, 4)) * 0.5,
                        jnp.array([8.0, 8.0, 1.0]), jax.random.key(1), 0)
  assert not result.ok and 'MAC check failed' in result.failure
  np.testing.assert_array_equal(result.mean_update, np.zeros(4, np.float32))


@pytest.mark.parametrize('before_commit, failed', [(False, 'commitment mismatch'),
                                                    (True, 'MAC check failed')])
def test_check_value_tampering_caught_by_the_right_check(before_commit, failed):
  agg = aggregator_lib.SecureAggregator(
      spec=SPEC, num_servers=3, max_weight=8.0,
      adversary=adversary_lib.AdversarySpec(kind='corrupt_check_value', server=2,
                                            magnitude=5,
                                            before_commit=before_commit))
  _, result = agg.apply(agg.init(jax.random.key(0)), jnp.zeros((3, 4)),
                        jnp.array([8.0, 8.0, 8.0]), jax.random.key(1), 0)
  assert not result.ok and result.failure.startswith(failed)
  if not before_commit:
    assert '[2]' in result.failure  # A broken commitment identifies the cheater.


@pytest.mark.parametrize('kwargs, mode, message', [
    (dict(kind='nonsense'), 'privateyes', 'not one of'),
    (dict(kind='add_error', server=3), 'privateyes', 'server=3'),
    (dict(kind='add_error', magnitude=1 << 32), 'privateyes', '0 mod 2\\^k'),
    (dict(kind='flip_bits', magnitude=0), 'privateyes', 'magnitude=0'),
    (dict(kind='corrupt_mac'), 'privateyes_semi_honest', 'semi-honest'),
    (dict(kind='corrupt_check_value'), 'privateyes_semi_honest', 'semi-honest'),
])
def test_invalid_adversaries_fail_fast(kwargs, mode, message):
  with pytest.raises(ValueError, match=message):
    aggregator_lib.SecureAggregator(
        spec=SPEC, num_servers=3, max_weight=1.0, mode=mode,
        adversary=adversary_lib.AdversarySpec(**kwargs))


def test_replay_adversary_needs_num_params():
  with pytest.raises(ValueError, match='num_params'):
    aggregator_lib.SecureAggregator(
        spec=SPEC, num_servers=3, max_weight=1.0,
        adversary=adversary_lib.AdversarySpec(kind='replay_client'))


@pytest.mark.parametrize('coalition, message', [
    ((0, 1, 2), 'no honest'), ((0, 0), 'repeats'), ((3,), 'not a server')])
def test_invalid_coalitions_rejected(coalition, message):
  with pytest.raises(ValueError, match=message):
    aggregator_lib.SecureAggregator(spec=SPEC, num_servers=3, max_weight=1.0,
                                    coalition=coalition)


@pytest.mark.parametrize('mode', aggregator_lib.MODES)
def test_coalition_view_holds_only_its_shares_and_public_values(mode):
  agg = aggregator_lib.SecureAggregator(spec=SPEC, num_servers=4, max_weight=8.0,
                                        mode=mode, coalition=(3, 1),
                                        record_view=True, min_clients=2)
  updates = jax.random.normal(jax.random.key(0), (3, 4)) * 0.1
  _, result = agg.apply(agg.init(jax.random.key(1)), updates,
                        jnp.array([8.0, 0.0, 5.0]), jax.random.key(2), 7)
  view = result.view
  assert view['coalition'] == (1, 3) and view['round'] == 7
  estimate = view['coalition_input_estimate']
  assert estimate.shape == (3, 5) and estimate.dtype == np.uint64
  assert 'input_value_shares' not in view and 'input_mac_shares' not in view
  assert view['opened_sum_shares'].shape == (4, 5)
  np.testing.assert_array_equal(view['submitted'], [True, False, True])
  np.testing.assert_array_equal(estimate[1], 0)  # Client 1 sent nothing.
  if mode == 'privateyes':
    assert view['mac_key_shares'].shape == (2,)
    assert view['check_values'].shape == (4,)
    assert view['check_coefficients'].shape == (5,)
  else:
    assert view.get('mac_key_shares') is None and view.get('check_values') is None
  # Everything the coalition holds of the inputs reconstructs nothing: the sum
  # of its value shares (plus ε) is unrelated to the encoded inputs.
  with jax.enable_x64(True):
    decoded = np.asarray(ring.decode(jnp.asarray(estimate[[0, 2]]), SPEC))
  assert np.abs(decoded).max() > 1.0  # Uniform garbage, not ~0.1-sized values.
