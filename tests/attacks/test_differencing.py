"""Round differencing under client subsampling and a Sybil coalition (issue #14 b, c)."""

import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from privateyes_jax import runner
from privateyes_jax.attacks import differencing
from privateyes_jax.attacks import pipeline
from privateyes_jax.mpc import aggregator as mpc_aggregator
from tests.federated.test_engine import fl_config

P = 7
CLIENTS = ('a', 'b', 'c', 'd')


def _updates_and_weights(seed=0):
  rng = np.random.default_rng(seed)
  updates = {c: rng.normal(size=P) for c in CLIENTS}
  weights = {c: w for c, w in zip(CLIENTS, (1.0, 0.5, 0.25, 0.75))}  # w̃ = w / w_max.
  return updates, weights


def _round(number, cohort, updates, weights, theta=None):
  s = sum(weights[c] * updates[c] for c in cohort)
  w = sum(weights[c] for c in cohort)
  theta = np.zeros(P) if theta is None else theta
  return differencing.OpenedRound(number, tuple(cohort), theta, s, w)


def test_pairs_recover_the_added_clients_update_exactly():
  """Kills: dividing the difference of opened sums by the count difference (1) or
  not at all, or differencing the means Σ w̃Δ / Σ w̃: with unequal weights each gives
  w̃_t·Δ_t or a mixture, not Δ_t."""
  updates, weights = _updates_and_weights()
  rounds = [_round(1, 'abc', updates, weights), _round(2, 'ab', updates, weights),
            _round(3, 'bc', updates, weights), _round(4, 'bd', updates, weights)]
  out = differencing.differencing_targets(rounds)
  assert out.usable_pairs == 2 and sorted(out.pairs) == [(1, 2, 'c'), (1, 3, 'a')]
  assert sorted(out.targets) == ['a', 'c']  # b and d are never isolated by one pair.
  for t, est in out.targets.items():
    np.testing.assert_allclose(est.update, updates[t], rtol=1e-6, atol=1e-6)
    assert est.weight == pytest.approx(weights[t]) and est.drift == 0.0 and est.exact
    assert est.rounds == (1, 2 if t == 'c' else 3)


def test_least_squares_isolates_everyone_under_a_fixed_cohort_size():
  """The engine samples a fixed k: cohorts differ by swaps, never by one added client.
  Kills: a pairs-only attack (nothing isolated) and a wrong sign of the combination."""
  updates, weights = _updates_and_weights(1)
  cohorts = ['abc', 'abd', 'acd', 'bcd', 'abc']
  rounds = [_round(i + 1, c, updates, weights) for i, c in enumerate(cohorts)]
  assert differencing.differencing_targets(rounds, 'pairs').targets == {}
  out = differencing.differencing_targets(rounds, 'lstsq')
  assert out.usable_pairs == 0 and sorted(out.targets) == list(CLIENTS)
  for t, est in out.targets.items():
    np.testing.assert_allclose(est.update, updates[t], rtol=1e-5, atol=1e-5)
  # Three rounds of three cohorts out of four people cannot isolate anyone.
  assert differencing.differencing_targets(rounds[:3], 'lstsq').targets == {}


def test_drift_of_the_global_model_is_reported():
  updates, weights = _updates_and_weights()
  r1 = _round(1, 'abc', updates, weights, theta=np.ones(P))
  r2 = _round(2, 'ab', updates, weights, theta=np.zeros(P))
  est = differencing.differencing_targets([r1, r2]).targets['c']
  assert est.drift == pytest.approx(np.sqrt(P))
  np.testing.assert_array_equal(est.global_params, np.ones(P))  # θ of the round with c.


def test_sybils_recover_the_target_exactly_through_the_real_mpc():
  """Kills: recovering from the opened mean without the opened total weight
  (Δ_t·w̃_t/W instead of Δ_t), or forgetting the Sybils' own known inputs."""
  rng = np.random.default_rng(0)
  target = (0.01 * rng.normal(size=50)).astype(np.float32)
  agg = mpc_aggregator.SecureAggregator(max_weight=16.0, num_servers=3)
  key = jax.random.PRNGKey(0)
  zeros = differencing.sybil_round(agg, target, 12.0, num_sybils=3, key=key)
  known = differencing.sybil_round(agg, target, 12.0, num_sybils=3, key=key,
                                   sybil_updates=0.02 * rng.normal(size=(3, 50)))
  for r in (zeros, known):
    assert r['opened_ok'] and r['cosine'] > 0.9999
    assert r['max_abs_error'] < 1e-4  # Fixed point: 2^-16 per element, / w̃_t = 0.75.
    assert r['recovered_weight'] == pytest.approx(12.0, abs=1e-3)


@pytest.fixture(scope='module')
def fixed_model_run(tmp_path_factory):
  """PrivatEyes, 2 of 4 clients per round, every round recorded, the global model held
  fixed (server lr 1e-30) and full-batch local SGD: every client's update is the same
  in every round, so differencing is exact up to the fixed-point encoding."""
  wd = str(tmp_path_factory.mktemp('differencing') / 'privateyes')
  runner.train_and_evaluate(fl_config(**{
      'record_views': 'all', 'aggregator.name': 'privateyes', 'fl.rounds': 6,
      # Two submitters per round: below the default minimum cohort (3) on purpose, so
      # that cohorts overlap enough on 4 clients to isolate each of them.
      'fl.clients_per_round': 2, 'aggregator.min_clients': 2, 'fl.server_lr': 1e-30, 'fl.local_steps': 1,
      'batch_size': 64}), wd)
  return wd


def test_differencing_a_recorded_privateyes_run(fixed_model_run):
  """End to end on a real run's opened sums; the truth is the client's honest update."""
  rounds = differencing.opened_rounds(fixed_model_run)
  assert len(rounds) == 6 and all(len(r.cohort) == 2 and r.exact for r in rounds)
  out = differencing.differencing_targets(rounds, 'lstsq')
  assert out.targets, [r.cohort for r in rounds]
  recorded = pipeline.load_round(fixed_model_run)
  people = differencing._federation_people(recorded)  # pylint: disable=protected-access
  names = [p.person for p in people]
  for t, est in out.targets.items():
    truth, weight = differencing.honest_update(recorded.config, recorded.apply_fn,
                                               differencing.unravel_like(est.global_params,
                                                                         recorded.global_params),
                                               people, names.index(t), est.rounds[0] - 1)
    assert weight == 64 and est.weight == pytest.approx(1.0, abs=1e-4)
    assert est.drift < 1e-20  # Server lr 1e-30.
    np.testing.assert_allclose(est.update, truth, atol=2e-4)
  _, inputs = differencing.attack_inputs(fixed_model_run, 'lstsq')
  assert sorted(inputs) == sorted(out.targets)
  for name, target in inputs.items():
    assert target['person'].person == name
    np.testing.assert_array_equal(ravel_pytree(target['update'])[0], out.targets[name].update)
  # Sybils on the last recorded round: every client's update, recovered exactly.
  sybil = differencing.sybil_targets(recorded, jax.random.PRNGKey(3), max_people=1)
  assert sybil[0]['cosine'] > 0.9999 and sybil[0]['max_abs_error'] < 1e-3
  flat = ravel_pytree(sybil[0]['update'])[0]
  assert flat.shape == ravel_pytree(recorded.global_params)[0].shape


def test_windowed_least_squares_prefers_the_least_drift():
  """Kills: a window search that keeps the first isolating window instead of the one
  whose global models are closest."""
  updates, weights = _updates_and_weights(2)
  cohorts = ['abc', 'abd', 'acd', 'bcd'] * 2
  thetas = [np.full(P, 10.0 * i) for i in range(4)] + [np.full(P, 100.0)] * 4
  rounds = [_round(i + 1, c, updates, weights, theta=th)
            for i, (c, th) in enumerate(zip(cohorts, thetas))]
  out = differencing.differencing_targets(rounds, 'lstsq', window=4)
  assert sorted(out.targets) == list(CLIENTS)
  for t, est in out.targets.items():
    assert est.drift == 0.0 and est.rounds == (5, 6, 7, 8), (t, est.rounds)
    np.testing.assert_allclose(est.update, updates[t], rtol=1e-5, atol=1e-5)


def test_a_dp_coalition_subtracts_its_own_noise_from_the_opened_sum():
  """With DP the opened sum carries every server's noise; the coalition drew its own and
  subtracts it (what it can do), so only the honest server's noise is left, in both the
  differencing rows and the pipeline's view of the aggregate."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from privateyes_jax.mpc import ring  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict({'aggregator': {'k': 32, 'f': 16, 's': 32},
                                      'fl': {'clients_per_round': 4, 'client_fraction': 1.0}})
  rng = np.random.default_rng(0)
  total = rng.normal(size=6)  # Σ Δ_c over the cohort.
  own, honest = rng.normal(size=6) * 3, rng.normal(size=6) * 3
  with jax.enable_x64(True):
    opened = np.asarray(ring.encode(jnp.asarray(np.append(total + own + honest, 4.0)),
                                    ring.RingSpec(k=32, f=16, s=32)))
  view = {'client_names': np.array(['a', 'b', 'c', 'd']), 'global_params': np.zeros(6),
          'round': np.int64(3), 'view/opened_sum': opened,
          'view/coalition_noise': own.astype(np.float32)}
  r = differencing.opened_round_from_view(view, config)
  np.testing.assert_allclose(r.weighted_sum, total + honest, atol=1e-4)
  assert r.weight_sum == 4.0
  mean = pipeline._coalition_aggregate(view, config, num_clients=8)  # pylint: disable=protected-access
  np.testing.assert_allclose(mean, (total + honest) / 4, atol=1e-4)  # Over q·N = 4.
  # A cohort given as a fraction: the engine rounds q·N to a whole cohort k (0.3 x 8 → 2)
  # and divides by k; so must the coalition (mutant: a second formula, 2.4 here).
  config.fl.clients_per_round, config.fl.client_fraction = 0, 0.3
  mean = pipeline._coalition_aggregate(view, config, num_clients=8)  # pylint: disable=protected-access
  np.testing.assert_allclose(mean, (total + honest) / 2, atol=1e-4)
  without = differencing.opened_round_from_view(
      {k: v for k, v in view.items() if k != 'view/coalition_noise'}, config)
  np.testing.assert_allclose(without.weighted_sum, total + own + honest, atol=1e-4)
  view['view/coalition_noise'] = own[:5].astype(np.float32)
  with pytest.raises(ValueError, match='coalition_noise has shape'):
    differencing.opened_round_from_view(view, config)
