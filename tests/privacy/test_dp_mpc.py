"""Client-level DP on the production path: the servers' noise inside the MPC, the
central-DP baseline, clipping, sampling and the recorded (ε, δ).

Mutants these tests kill are listed in docs/MPC.md §9.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from privateyes_jax import runner
from privateyes_jax.federated import aggregators
from privateyes_jax.mpc import aggregator as aggregator_lib
from privateyes_jax.mpc import ring
from privateyes_jax.privacy import accounting
from privateyes_jax.privacy import discrete_gaussian
from privateyes_jax.privacy import dp as dp_lib
from tests.federated.test_engine import fl_config

# Small integer noise: C·2^f = 1 and √P/2 = 32 give σ = z·33 ≈ 3.3 ring units.
NUM_PARAMS = 4096
SPEC = ring.RingSpec()
CLIP = 2.0**-SPEC.f
Z = 0.1
MAX_WEIGHT = 8.0


def _settings(num_clients=4, z=Z, clip=CLIP):
  return dp_lib.DPSettings(clip_norm=clip, noise_multiplier=z, delta=1e-5, accountant='rdp',
                           sampling_rate=1.0, num_clients=num_clients, rounds=1)


def _opened_noise(agg, rounds, num_clients=4):
  """(opened sum's noise, coalition's own noise), int64 ``[rounds·P]`` each, with zero
  client updates, read from the coalition's recorded view."""
  state = agg.init(jax.random.key(0))
  updates = jnp.zeros((num_clients, NUM_PARAMS), jnp.float32)
  weights = jnp.full((num_clients,), MAX_WEIGHT, jnp.float32)
  opened, own = [], []
  for r in range(rounds):
    state, result = agg.apply(state, updates, weights, jax.random.key(100 + r), r)
    assert result.ok, result.failure
    with jax.enable_x64(True):
      total = np.asarray(ring.decode(jnp.asarray(result.view['opened_sum']), SPEC,
                                     dtype=jnp.float64))
    opened.append(np.rint(total[:-1] * 2**SPEC.f).astype(np.int64))
    own.append(np.rint(result.view['coalition_noise'] * 2**SPEC.f).astype(np.int64))
  return np.concatenate(opened), np.concatenate(own)


def _chi_square_p(samples, pmf_fn):
  """p-value of a chi-square goodness of fit, bins with expectation < 5 merged."""
  values, counts = np.unique(samples, return_counts=True)
  support = np.arange(values.min() - 3, values.max() + 4)
  expected = pmf_fn(support) * samples.size
  observed = np.zeros(support.size)
  observed[np.searchsorted(support, values)] = counts
  bins_o, bins_e, acc_o, acc_e = [], [], 0.0, 0.0
  for o, e in zip(observed, expected):
    acc_o, acc_e = acc_o + o, acc_e + e
    if acc_e >= 5:
      bins_o.append(acc_o), bins_e.append(acc_e)
      acc_o = acc_e = 0.0
  bins_o[-1] += acc_o
  bins_e[-1] += acc_e + (samples.size - expected.sum())  # Tails beyond the support.
  return scipy.stats.chisquare(bins_o, bins_e).pvalue


@pytest.fixture(scope='module')
def noise_draws():
  agg = aggregator_lib.SecureAggregator(max_weight=MAX_WEIGHT, num_servers=3,
                                        coalition=(0, 1), record_view=True, min_clients=1,
                                        dp=_settings())
  return agg.noise_std(NUM_PARAMS), *_opened_noise(agg, rounds=5)


def test_opened_noise_is_the_sum_of_three_discrete_gaussians(noise_draws):
  sigma, opened, _ = noise_draws
  assert sigma == pytest.approx(Z * (1 + np.sqrt(NUM_PARAMS) / 2))
  p = _chi_square_p(opened, lambda v: discrete_gaussian.sum_pmf(v, sigma, 3))
  assert p > 1e-4, p
  # A float Gaussian rounded is another distribution: at this σ the test still sees the
  # right variance, so the fit must be to the exact PMF, not only the moments.
  assert np.var(opened) == pytest.approx(3 * discrete_gaussian.variance(sigma), rel=0.05)


def test_a_coalition_that_subtracts_its_noise_still_faces_the_promised_noise(noise_draws):
  """Mutants: σ/√S per server (residual too narrow), shared noise keys (residual equals
  the coalition's own draw), the last server adding none (residual zero)."""
  sigma, opened, own = noise_draws
  residual = opened - own
  p = _chi_square_p(residual, lambda v: discrete_gaussian.pmf(v, sigma))
  assert p > 1e-4, p
  assert np.var(residual) >= 0.95 * discrete_gaussian.variance(sigma)
  # The honest server's noise is independent of what the coalition knows.
  assert abs(np.corrcoef(residual, own)[0, 1]) < 0.05


def test_noise_is_fixed_per_round_and_fresh_across_rounds():
  agg = aggregator_lib.SecureAggregator(max_weight=MAX_WEIGHT, dp=_settings(z=3.0))
  key = jax.random.key(7)  # σ = 3 · (1 + √64/2) = 15 units.
  a, b = agg.server_noise(key, 64), agg.server_noise(key, 64)
  np.testing.assert_array_equal(a, b)  # A retried attempt reopens the same noisy sum.
  assert (a != agg.server_noise(jax.random.key(8), 64)).mean() > 0.5
  assert (a[0] != a[1]).mean() > 0.5  # Servers draw independently.


@pytest.mark.parametrize('mode', aggregator_lib.MODES)
def test_dp_mean_divides_the_noisy_sum_by_the_expected_cohort(mode):
  settings = dp_lib.DPSettings(clip_norm=1.0, noise_multiplier=1e-3, delta=1e-5,
                               accountant='rdp', sampling_rate=0.5, num_clients=8, rounds=1)
  agg = aggregator_lib.SecureAggregator(max_weight=MAX_WEIGHT, dp=settings, min_clients=1,
                                        mode=mode)
  updates = np.zeros((8, 16), np.float32)
  updates[:, 3] = 0.25
  weights = np.where(np.arange(8) < 3, MAX_WEIGHT, 0.0).astype(np.float32)  # 3 of 8 sampled.
  _, result = agg.apply(agg.init(jax.random.key(0)), updates, weights, jax.random.key(1), 0)
  assert result.ok
  # (3 · 0.25 + noise of std 1e-3 · 3) / (q·N = 4).
  assert float(result.mean_update[3]) == pytest.approx(0.75 / 4, abs=1e-2)
  assert float(result.total_weight) == pytest.approx(3 * MAX_WEIGHT)
  assert result.stats['mpc/dp_noise_broadcast_bytes'] == 3 * 2 * 16 * 4
  assert np.std(np.asarray(result.mean_update)[4:]) > 0  # The noise is there.


def test_central_dp_baseline_adds_gaussian_noise_of_std_z_c():
  settings = dp_lib.DPSettings(clip_norm=2.0, noise_multiplier=1.5, delta=1e-5,
                               accountant='rdp', sampling_rate=0.5, num_clients=8, rounds=1)
  agg = aggregators.MeanAggregator(dp=settings)
  updates = jnp.zeros((8, 20000), jnp.float32)
  weights = jnp.ones((8,), jnp.float32)
  _, result = agg.apply((), updates, weights, jax.random.key(3), 0)
  noise = np.asarray(result.mean_update) * settings.expected_clients
  assert np.std(noise) == pytest.approx(3.0, rel=0.03)
  assert abs(np.mean(noise)) < 0.1


def test_too_little_headroom_for_the_noise_is_refused_before_training():
  agg = aggregator_lib.SecureAggregator(max_weight=MAX_WEIGHT, spec=ring.RingSpec(f=26),
                                        dp=_settings(clip=1.0, z=1.0))
  with pytest.raises(ring.RingOverflowError, match='lower aggregator.f'):
    agg.check_noise_headroom(64, 1000)


def test_clipping_poisson_sampling_and_capacity():
  clipped, norms = dp_lib.clip_updates(jnp.asarray([[3.0, 4.0], [0.3, 0.4]]), 1.0)
  np.testing.assert_allclose(np.asarray(norms), [5.0, 0.5], rtol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(clipped), axis=1), [1.0, 0.5],
                             rtol=1e-6)
  settings = dp_lib.DPSettings(clip_norm=1.0, noise_multiplier=1.0, delta=1e-5,
                               accountant='rdp', sampling_rate=0.1, num_clients=1000, rounds=1)
  sizes = [dp_lib.poisson_sample(0, r, 1000, 0.1).size for r in range(200)]
  assert np.mean(sizes) == pytest.approx(100, rel=0.05)  # Binomial(1000, 0.1).
  slots = dp_lib.capacity(1000, 0.1)
  assert np.mean(np.array(sizes) > slots) < 0.02 and slots < 1000  # Tail 1e-3.
  ids, member = dp_lib.plan_round(0, 3, settings, slots)
  assert ids.size == slots and np.all(np.diff(ids) > 0)
  np.testing.assert_array_equal(ids[member], dp_lib.poisson_sample(0, 3, 1000, 0.1))
  # A sample larger than the slots is never truncated: the round gets a larger shape.
  ids, member = dp_lib.plan_round(0, 3, settings, 10)
  np.testing.assert_array_equal(ids, dp_lib.poisson_sample(0, 3, 1000, 0.1))
  assert member.all()


@pytest.mark.parametrize('field, value, message', [
    ('delta', 0.3, 'aggregator.dp.delta'),
    ('clip_norm', 0.0, 'aggregator.dp.clip_norm'),
    ('accountant', 'moments', 'aggregator.dp.accountant'),
    ('noise_multiplier', -1.0, 'aggregator.dp.noise_multiplier'),
])
def test_bad_dp_config_is_one_line_error(field, value, message):
  config = fl_config(**{'aggregator.dp.enabled': True, f'aggregator.dp.{field}': value})
  with pytest.raises(ValueError, match=message) as info:
    dp_lib.DPSettings.from_config(config.aggregator.dp, num_clients=4, clients_per_round=2,
                                  rounds=3)
  assert '\n' not in str(info.value)


@pytest.mark.parametrize('method', ['local', 'centralized'])
def test_dp_outside_federated_runs_is_refused(method):
  config = fl_config(**{'aggregator.dp.enabled': True, 'method': method})
  with pytest.raises(ValueError, match='silently absent'):
    runner.validate(config)


def _dp_run(tmp_path, name, **overrides):
  config = fl_config(**{'aggregator.dp.enabled': True, 'aggregator.dp.noise_multiplier': 0.8,
                        'aggregator.dp.clip_norm': 0.5, 'record_views': 'last', **overrides})
  workdir = str(tmp_path / name)
  runner.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f if '"round"' in line]
  return config, workdir, summary, [r for r in rows if 'dp/epsilon' in r]


def test_dp_runs_record_epsilon_per_round_and_in_the_summary(tmp_path):
  """PrivatEyes with DP (every client sampled) and central-DP FedAvg (half sampled): ε per
  round equals dp-accounting's own, and the clients' updates in the view are clipped."""
  secure = _dp_run(tmp_path, 'privateyes', **{'aggregator.name': 'privateyes',
                                              'fl.clients_per_round': 4})
  plain = _dp_run(tmp_path, 'fedavg', **{'fl.clients_per_round': 2})
  for config, workdir, summary, rows in (secure, plain):
    dp = summary['dp']
    q, rounds = dp['sampling_rate'], config.fl.rounds
    assert [r['round'] for r in rows] == list(range(1, rounds + 1))
    expected = accounting.epsilons(0.8, q, rounds, 1e-5, 'rdp')
    np.testing.assert_allclose([r['dp/epsilon'] for r in rows], expected, rtol=1e-12)
    assert dp['epsilon'] == pytest.approx(expected[-1], rel=1e-12)
    assert dp['delta'] == 1e-5 and dp['noise_multiplier'] == 0.8
    assert dp['epsilon_vs_servers'] >= dp['epsilon']
    assert '+dp(z=0.8)' in summary['method']
  # Plain FL's view holds the individual updates the server saw: each clipped to C.
  views = os.listdir(os.path.join(plain[1], 'views'))
  with np.load(os.path.join(plain[1], 'views', views[0])) as view:
    norms = np.linalg.norm(view['view/individual_updates'], axis=1)
  assert norms.max() <= 0.5 * (1 + 1e-5)
  # PrivatEyes' coalition knows its own noise draws; its view records them.
  views = os.listdir(os.path.join(secure[1], 'views'))
  with np.load(os.path.join(secure[1], 'views', views[0])) as view:
    assert 'view/coalition_noise' in view.files
