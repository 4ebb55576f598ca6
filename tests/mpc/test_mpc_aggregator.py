"""SecureAggregator: weighted mean, dropout, submissions, errors, state, stats."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from privateyes_jax.federated.aggregators import AggregateResult, weighted_mean
from privateyes_jax.mpc import adversary as adversary_lib
from privateyes_jax.mpc import aggregator as aggregator_lib
from privateyes_jax.mpc import costs
from privateyes_jax.mpc import ring

SPEC = ring.RingSpec()
MAX_WEIGHT = 32.0
NUM_CLIENTS, NUM_PARAMS = 3, 4  # As in the other tests: shared compilations.


def _make(mode, num_servers=3, **kwargs):
  # Two of the three clients submit in most tests: the cohort floor is tested apart.
  kwargs.setdefault('min_clients', 2)
  return aggregator_lib.SecureAggregator(spec=SPEC, num_servers=num_servers,
                                         max_weight=MAX_WEIGHT, mode=mode, **kwargs)


def _inputs(seed=0):
  updates = jax.random.normal(jax.random.key(seed), (NUM_CLIENTS, NUM_PARAMS)) * 0.3
  weights = jnp.array([32.0, 0.0, 3.0])  # Client 1 dropped out.
  return updates, weights


@pytest.mark.parametrize('mode', aggregator_lib.MODES)
@pytest.mark.parametrize('num_servers', [2, 5])
def test_weighted_mean_within_fixed_point_tolerance(mode, num_servers):
  agg = _make(mode, num_servers)
  updates, weights = _inputs()
  state, result = agg.apply(agg.init(jax.random.key(1)), updates, weights,
                            jax.random.key(2), 0)
  assert isinstance(result, AggregateResult) and result.ok and result.failure == ''
  expected, total = weighted_mean(updates, weights)
  assert result.mean_update.dtype == jnp.float32
  assert result.mean_update.shape == (NUM_PARAMS,)
  # Each encoded element is off by ≤ 2^-(f+1); the division amplifies by 1/Σw̃.
  weight_sum = float(total) / MAX_WEIGHT
  largest = float(jnp.abs(expected).max())
  tolerance = NUM_CLIENTS * 2.0**-(SPEC.f + 1) * (1 + largest) / weight_sum + 1e-6
  np.testing.assert_allclose(result.mean_update, expected, atol=tolerance)
  np.testing.assert_allclose(result.total_weight, total,
                             atol=NUM_CLIENTS * 2.0**-SPEC.f * MAX_WEIGHT)
  stats = result.stats
  assert all(isinstance(v, float) for v in stats.values())
  assert stats['mpc/num_submitted'] == 2.0
  for name in ('client_upload_bytes', 'server_send_bytes', 'interaction_rounds',
               'sharing_s', 'aggregation_s', 'checking_s'):
    assert 'mpc/' + name in stats
  assert stats['mpc/plain_fl_upload_bytes'] == 4.0 * NUM_PARAMS


@pytest.mark.parametrize('mode', aggregator_lib.MODES)
def test_a_cohort_below_min_clients_opens_nothing(mode):
  updates, weights = _inputs()  # Two clients submit.
  agg = _make(mode, min_clients=3)
  state = agg.init(jax.random.key(1))
  new_state, result = agg.apply(state, updates, weights, jax.random.key(2), 0)
  assert not result.ok
  assert result.failure.startswith(aggregator_lib.COHORT_TOO_SMALL)
  assert 'min_clients=3' in result.failure and '\n' not in result.failure
  np.testing.assert_array_equal(result.mean_update, np.zeros(NUM_PARAMS))
  assert 'mpc/aggregation_s' not in result.stats  # Nothing was opened.
  jax.tree.map(np.testing.assert_array_equal, new_state, state)
  # Everybody dropped out: refused too, never an all-zero mean with ok=True.
  _, result = _make(mode, min_clients=1).apply(state, updates, jnp.zeros(NUM_CLIENTS),
                                               jax.random.key(2), 0)
  assert not result.ok and result.failure.startswith(aggregator_lib.COHORT_TOO_SMALL)
  # The step-by-step servers refuse the same cohort.
  key = jax.random.key(2)
  prep = agg.preprocess(state, key, NUM_CLIENTS, NUM_PARAMS + 1)
  submission = agg.package_client_inputs(prep, updates, weights, key, 0)
  _, result, _ = agg.aggregate(state, prep, submission, key, 0, NUM_PARAMS)
  assert result.failure.startswith(aggregator_lib.COHORT_TOO_SMALL)
  assert aggregator_lib.SecureAggregator(max_weight=1.0).min_clients == 3
  with pytest.raises(ValueError, match='min_clients'):
    aggregator_lib.SecureAggregator(max_weight=1.0, min_clients=0)


def test_apply_is_deterministic_given_its_arguments():
  agg = _make('privateyes', coalition=(0,), record_view=True)
  updates, weights = _inputs()
  state = agg.init(jax.random.key(1))
  _, first = agg.apply(state, updates, weights, jax.random.key(2), 3)
  _, second = agg.apply(state, updates, weights, jax.random.key(2), 3)
  _, other = agg.apply(state, updates, weights, jax.random.key(3), 3)
  np.testing.assert_array_equal(first.mean_update, second.mean_update)
  np.testing.assert_array_equal(first.view['coalition_input_estimate'],
                                second.view['coalition_input_estimate'])
  submitted = np.asarray(weights) > 0
  assert (first.view['coalition_input_estimate'][submitted]
          != other.view['coalition_input_estimate'][submitted]).mean() > 0.9


@pytest.mark.parametrize('mode', aggregator_lib.MODES)
def test_submission_for_the_wrong_round_is_rejected(mode):
  agg = _make(mode)
  updates, weights = _inputs()
  state = agg.init(jax.random.key(1))
  key = jax.random.key(2)
  prep = agg.preprocess(state, key, NUM_CLIENTS, NUM_PARAMS + 1)
  stale = agg.package_client_inputs(prep, updates, weights, key, round_idx=4)
  with pytest.raises(aggregator_lib.SubmissionError,
                     match=r'client\(s\) \[0, 2\].*\(4, 0\), \(4, 0\).*round 5'):
    agg.aggregate(state, prep, stale, key, round_idx=5, num_params=NUM_PARAMS)
  # A submission for an earlier attempt at the same round (replayed after an abort).
  retired = agg.retire_attempt(state)
  with pytest.raises(aggregator_lib.SubmissionError, match=r'round 4, attempt 1'):
    agg.aggregate(retired, prep, stale, key, round_idx=4, num_params=NUM_PARAMS)
  # The same submission in its own round and attempt is accepted.
  _, result, _ = agg.aggregate(state, prep, stale, key, round_idx=4,
                               num_params=NUM_PARAMS)
  assert result.ok


def test_submission_of_the_wrong_shape_is_rejected():
  agg = _make('privateyes')
  updates, weights = _inputs()
  state = agg.init(jax.random.key(1))
  key = jax.random.key(2)
  prep = agg.preprocess(state, key, NUM_CLIENTS, NUM_PARAMS + 1)
  submission = agg.package_client_inputs(prep, updates, weights, key, 0)
  with pytest.raises(aggregator_lib.SubmissionError, match='shape'):
    agg.aggregate(state, prep, submission, key, 0, num_params=NUM_PARAMS - 1)
  truncated = submission._replace(payload=submission.payload[:, :-1])
  with pytest.raises(aggregator_lib.SubmissionError, match=r'\(3, 4\).*expected'):
    aggregator_lib.validate_submission(truncated, 0, NUM_CLIENTS, NUM_PARAMS + 1)


def test_overflowing_update_names_client_and_element():
  agg = _make('privateyes', num_servers=2)
  updates, weights = _inputs()
  bound = ring.max_abs_value(SPEC, NUM_CLIENTS)
  updates = updates.at[2, 3].set(10 * bound * MAX_WEIGHT)
  with pytest.raises(ring.RingOverflowError, match=r'index \(2, 3\)'):
    agg.apply(agg.init(jax.random.key(0)), updates, weights, jax.random.key(1), 0)
  with pytest.raises(ring.RingOverflowError, match=r'index \(0, 1\).*NaN'):
    agg.apply(agg.init(jax.random.key(0)), updates.at[0, 1].set(jnp.nan),
              weights, jax.random.key(1), 0)


@pytest.mark.parametrize('bad', [-1.0, MAX_WEIGHT + 1, np.nan])
def test_weights_outside_the_public_bound_are_rejected(bad):
  agg = _make('privateyes_semi_honest')
  updates, weights = _inputs()
  with pytest.raises(ValueError, match=r'client\(s\) \[2\]'):
    agg.apply(agg.init(jax.random.key(0)), updates, weights.at[2].set(bad),
              jax.random.key(1), 0)


def test_constructor_validation():
  with pytest.raises(ValueError, match='at least 2'):
    aggregator_lib.SecureAggregator(spec=SPEC, num_servers=1, max_weight=1.0)
  with pytest.raises(ValueError, match='mode'):
    aggregator_lib.SecureAggregator(spec=SPEC, num_servers=2, max_weight=1.0,
                                    mode='plain')
  with pytest.raises(ValueError, match='max_weight'):
    aggregator_lib.SecureAggregator(spec=SPEC, num_servers=2, max_weight=0.0)


def test_state_survives_a_checkpoint_round_trip_without_x64():
  agg = _make('privateyes')
  state = agg.init(jax.random.key(1))
  assert all(leaf.dtype in (jnp.uint32, jnp.bool_)
             for leaf in jax.tree_util.tree_leaves(state))
  restored = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)), state)
  updates, weights = _inputs()
  _, before = agg.apply(state, updates, weights, jax.random.key(2), 0)
  _, after = agg.apply(restored, updates, weights, jax.random.key(2), 0)
  assert after.ok
  np.testing.assert_array_equal(before.mean_update, after.mean_update)


def test_replay_state_keeps_the_previous_round():
  agg = _make('privateyes', num_params=NUM_PARAMS,
              adversary=adversary_lib.AdversarySpec(kind='replay_client', server=1,
                                                    client=2))
  state = agg.init(jax.random.key(1))
  assert state.replay_value_share.shape == (NUM_PARAMS + 1, 2)
  assert not bool(state.has_previous)
  updates, weights = _inputs()
  state, first = agg.apply(state, updates, weights, jax.random.key(2), 0)
  assert first.ok and bool(state.has_previous)
  _, second = agg.apply(state, updates, weights, jax.random.key(3), 1)
  assert not second.ok


def test_from_config_reads_mpc_fields():
  config = {'k': 32, 'f': 12, 's': 32, 'num_servers': 4,
            'mode': 'privateyes_semi_honest', 'coalition': [0, 2],
            'record_view': True,
            'adversary': {'kind': 'add_error', 'server': 1, 'magnitude': 7}}
  agg = aggregator_lib.SecureAggregator.from_config(config, max_weight=320.0)
  assert agg.spec == ring.RingSpec(32, 12, 32) and agg.num_servers == 4
  assert agg.coalition == (0, 2) and agg.record_view and agg.name == config['mode']
  assert agg.adversary.kind == 'add_error' and agg.adversary.magnitude == 7


def test_round_costs_formulas():
  spec = ring.RingSpec()
  plain = costs.plain_fl_costs(1000)
  assert plain.client_upload_bytes == 4000 and plain.interaction_rounds == 1
  semi = costs.semi_honest_costs(spec, 3, 10, 1001)
  assert semi.client_upload_bytes == 3 * 1001 * 4
  assert semi.server_send_bytes == 2 * 1001 * 4 and semi.interaction_rounds == 2
  seeded = costs.semi_honest_costs(spec, 3, 10, 1001, seed_compressed=True)
  assert seeded.client_upload_bytes == 1001 * 4 + 2 * costs.SEED_BYTES
  mal = costs.privateyes_costs(spec, 3, 10, 1001)
  assert mal.client_upload_bytes == 3 * 1001 * 4
  # The dealer's 16-byte seed of r_c, not every server's share of it (#15 gap): no
  # masks from the servers to the clients, and one online round fewer.
  assert mal.client_download_bytes == costs.SEED_BYTES
  assert mal.server_send_bytes == (2 * 32 + 2 * 1001 * 8
                                   + 2 * (32 + 16 + 16) + 2 * (32 + 8 + 16))
  assert mal.interaction_rounds == 5
  offline = costs.estimate_offline_phase(costs.num_preprocessed_masks(10, 1001))
  assert offline['offline_masks'] == 10 * 1001
  assert offline['offline_estimate_s'] == pytest.approx(10 * 1001 / 3000.0)
  generic = costs.estimate_generic_mpc_training(1e6, 1000, 2)
  assert generic['generic_mpc_triples'] == 6e9
