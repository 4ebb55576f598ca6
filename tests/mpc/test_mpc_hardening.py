"""Issue #13: fresh coins and keys per attempt, bound inputs, exact views; each test names
the mutant it kills (docs/MPC.md §9, "Security tests and the mutants they kill")."""

import itertools
import os
import re
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import stats

from privateyes_jax.federated import engine
from privateyes_jax.federated.aggregators import weighted_mean
from privateyes_jax.mpc import adversary as adversary_lib
from privateyes_jax.mpc import aggregator as aggregator_lib
from privateyes_jax.mpc import coin as coin_lib
from privateyes_jax.mpc import consistency
from privateyes_jax.mpc import ring
from privateyes_jax.mpc import security_suite
from privateyes_jax.mpc import spdz2k
from privateyes_jax.privacy import dp as dp_lib

SPEC = ring.RingSpec()
MAX_WEIGHT = 16.0
DOCS = os.path.join(os.path.dirname(__file__), '..', '..', 'docs', 'MPC.md')


def _inputs(seed=5, num_clients=3, num_params=4):
  updates = jax.random.normal(jax.random.key(seed), (num_clients, num_params)) * 0.2
  return updates, jnp.array([16.0, 4.0, 9.0, 5.0, 2.0][:num_clients])


def _make(spec=SPEC, **kwargs):
  return aggregator_lib.SecureAggregator(spec=spec, num_servers=3, max_weight=MAX_WEIGHT,
                                         num_params=4, **kwargs)


def _cancel(guess, server=1, magnitude=12345):
  return adversary_lib.AdversarySpec(kind='cancel_chi', server=server, magnitude=magnitude,
                                     guess=tuple(int(g) for g in guess))


def _observed_chi(state, key, round_idx, updates, weights, spec=SPEC):
  observer = _make(spec, coalition=(0,), record_view=True)
  return tuple(observer.apply(state, updates, weights, key, round_idx)[1]
               .view['check_coefficients'][:2])


def test_abort_then_resume_forgery_is_detected_with_chi_of_any_earlier_attempt():
  """Issue #13 item 1. Kills: χ ≡ 1; χ a function of (seed, round); χ reused after abort."""
  updates, weights = _inputs()
  key = jax.random.key(2)
  spoiler = _make(adversary=adversary_lib.AdversarySpec('add_error', server=2),
                  coalition=(0,), record_view=True)
  state = spoiler.init(jax.random.key(1))
  checkpoint = state  # What the engine restores: the attempt counter is applied on top.
  earlier = []
  for attempt in range(3):
    state, aborted = spoiler.apply(state, updates, weights, key, 4)
    assert not aborted.ok and int(state.attempt) == attempt + 1
    earlier.append(tuple(aborted.view['check_coefficients'][:2]))
  resumed = checkpoint
  for _ in range(3):
    resumed = spoiler.retire_attempt(resumed)
  jax.tree.map(np.testing.assert_array_equal, resumed, state)
  for guess in earlier:
    _, result = _make(adversary=_cancel(guess)).apply(resumed, updates, weights, key, 4)
    assert not result.ok and result.failure.startswith('MAC check failed'), guess


def test_cancelling_errors_for_a_dry_run_chi_are_detected():
  """χ from a dry run of the same attempt (same state, key, round). Kills: χ ≡ 1, χ from
  (seed, round) or any stored value: a χ fixed before y' is guessed exactly."""
  updates, weights = _inputs()
  agg = _make()
  state = agg.init(jax.random.key(1))
  for trial in range(4):
    key = jax.random.key(10 + trial)
    guess = _observed_chi(state, key, 0, updates, weights)
    _, result = _make(adversary=_cancel(guess)).apply(state, updates, weights, key, 0)
    assert not result.ok, (trial, guess)


def test_escape_rate_at_s4_matches_the_ideal_check():
  """At s=4 a cancelling forgery escapes about 2.6% of the time (fresh χ); with a constant
  or predictable χ, 100%. Binomial test against the ideal check's rate."""
  spec = ring.RingSpec(k=32, f=16, s=4)
  trials = 60
  escapes = security_suite.measure_escapes('cancel_chi', spec, trials, seed=3)
  rate = security_suite.ideal_escape_rate('cancel_chi', spec)
  assert stats.binomtest(escapes, trials, rate).pvalue > 1e-3, (escapes, trials, rate)


def test_a_rushing_coin_server_is_caught_by_the_commitment(monkeypatch):
  """Kills: the coin commitment removed (and shows what it protects)."""
  updates, weights = _inputs()
  aimed = (123456789, 987654321)
  rush = adversary_lib.AdversarySpec('rush_coin', server=1, magnitude=1 << 20, guess=aimed)
  agg = _make(adversary=rush)
  state = agg.init(jax.random.key(1))
  _, result = agg.apply(state, updates, weights, jax.random.key(2), 0)
  assert not result.ok and result.failure.startswith('coin commitment mismatch: server(s) [1]')
  # Without the commitment the rushing server fixes χ and its forgery passes.
  monkeypatch.setattr(coin_lib, 'unopened', lambda *args: [])
  _, forged = agg.apply(state, updates, weights, jax.random.key(2), 0)
  assert forged.ok
  expected, _ = weighted_mean(updates, weights)
  assert np.abs(np.asarray(forged.mean_update) - np.asarray(expected)).max() > 1.0


def test_an_abort_retires_the_mac_key_and_the_dealer_material():
  """Kills: α reused after an abort; the attempt not mixed into the dealer's seeds."""
  updates, weights = _inputs()
  key = jax.random.key(2)
  cheat = _make(adversary=adversary_lib.AdversarySpec('add_error', server=0),
                coalition=(0,), record_view=True)
  state = cheat.init(jax.random.key(1))
  retired, result = cheat.apply(state, updates, weights, key, 0)
  assert not result.ok and int(retired.attempt) == 1
  with jax.enable_x64(True):
    old, new = (np.asarray(ring.from_words(s.mac_key_shares)) for s in (state, retired))
    seeds = [np.asarray(aggregator_lib.round_seeds(key, s.attempt, 3, 3, 'privateyes'))
             for s in (state, retired)]
  assert np.all(old != new)  # Every server's α_i is new.
  assert np.all(seeds[0] != seeds[1])
  # The honest output does not depend on the attempt: bit for bit the same mean.
  honest = _make(coalition=(0,), record_view=True)
  _, first = honest.apply(state, updates, weights, key, 0)
  _, second = honest.apply(retired, updates, weights, key, 0)
  np.testing.assert_array_equal(first.mean_update, second.mean_update)
  assert second.view['attempt'] == 1
  assert np.any(first.view['coalition_input_estimate'] != second.view['coalition_input_estimate'])


def test_a_replay_into_the_next_attempt_is_caught():
  """Kills: the attempt not mixed into the dealer's seeds (the replay would be honest)."""
  updates, weights = _inputs()
  key = jax.random.key(2)
  agg = _make(adversary=adversary_lib.AdversarySpec('replay_client', server=2, client=1))
  state, first = agg.apply(agg.init(jax.random.key(1)), updates, weights, key, 0)
  assert first.ok
  _, replayed = agg.apply(agg.retire_attempt(state), updates, weights, key, 0)
  assert not replayed.ok


def test_coin_toss_is_a_commit_reveal_xor_of_fresh_contributions():
  toss = coin_lib.toss(4)
  np.testing.assert_array_equal(toss.joint, np.bitwise_xor.reduce(toss.contributions))
  assert toss.ok and len(toss.commitments) == 4
  assert not np.array_equal(coin_lib.toss(4).joint, toss.joint)  # OS entropy.
  seeded = [coin_lib.toss(3, np.random.default_rng(0)).joint for _ in range(2)]
  np.testing.assert_array_equal(*seeded)


def test_a_retagged_submission_aborts_on_the_opened_total_weight():
  """Issue #13 item 4: round 4's ε re-tagged for round 5 passes the MAC check (ε is
  public) but opens garbage; the output check refuses it instead of a silent zero mean."""
  updates, weights = _inputs()
  agg = _make()
  state = agg.init(jax.random.key(1))
  prep4 = agg.preprocess(state, jax.random.key(4), 3, 5)
  old = agg.package_client_inputs(prep4, updates, weights, jax.random.key(4), 4)
  retagged = old._replace(round_tag=jnp.where(old.submitted, 5, -1).astype(jnp.int32))
  prep5 = agg.preprocess(state, jax.random.key(5), 3, 5)
  _, result, _ = agg.aggregate(state, prep5, retagged, jax.random.key(5), 5, 4)
  assert not result.ok and result.failure.startswith(aggregator_lib.OUTPUT_OUT_OF_RANGE)
  np.testing.assert_array_equal(result.mean_update, np.zeros(4))


def test_a_client_writing_its_own_out_of_range_weight_is_refused():
  """A malicious client sets its weight column to −3 by writing ε itself."""
  updates, weights = _inputs()
  agg = _make()
  state = agg.init(jax.random.key(1))
  key = jax.random.key(4)
  prep = agg.preprocess(state, key, 3, 5)
  sub = agg.package_client_inputs(prep, updates, weights, key, 0)
  with jax.enable_x64(True):
    shift = ring.encode(jnp.asarray([-3.0 - 16.0 / MAX_WEIGHT]), SPEC)[0]
    payload = sub.payload.at[0, -1].set(ring.mask_bits(sub.payload[0, -1] + shift, SPEC.k))
  _, result, _ = agg.aggregate(state, prep, sub._replace(payload=payload), key, 0, 4)
  assert not result.ok and result.failure.startswith(aggregator_lib.OUTPUT_OUT_OF_RANGE)


def _doc_view_fields(dp=False):
  """The table's fields; rows marked "DP runs only" only when ``dp``."""
  text = open(DOCS).read()
  table = text.split('<!-- view-fields -->')[1].split('<!-- /view-fields -->')[0]
  return {m.group(1) for m in re.finditer(r'^\| `([^`]+)`.*$', table, re.M)
          if dp or 'DP runs only' not in m.group(0)}


@pytest.mark.parametrize('dp', [False, True])
def test_a_recorded_view_holds_exactly_the_fields_of_the_docs_table(tmp_path, dp):
  """Kills: a view with anything beyond the coalition's messages (e.g. the weights w_c,
  an honest server's α_i)."""
  updates, weights = _inputs()
  settings = dp_lib.DPSettings(clip_norm=1.0, noise_multiplier=1.0, delta=1e-5,
                               accountant='rdp', sampling_rate=1.0, num_clients=3, rounds=1)
  agg = _make(coalition=(0, 2), record_view=True, server_rng=np.random.default_rng(0),
              min_clients=3, dp=settings if dp else None)
  state = agg.init(jax.random.key(1))
  _, result = agg.apply(state, updates, weights, jax.random.key(2), 0)
  config = ml_collections.ConfigDict({'aggregator': {'name': 'privateyes'}, 'seed': 0})
  workdir = types.SimpleNamespace(path=str(tmp_path))
  engine._record_view(workdir, 0, config, ['a', 'b', 'c'], np.arange(3),  # pylint: disable=protected-access
                      {'w': jnp.zeros(2)}, {'w': jnp.ones(2)}, weights, result.view)
  recorded = np.load(os.path.join(tmp_path, 'views', 'round_00001.npz'))
  assert set(recorded.files) == _doc_view_fields(dp)
  assert 'weights' not in recorded.files
  assert recorded['view/mac_key_shares'].shape == (2,)  # The coalition's α_i only.
  with jax.enable_x64(True):
    alpha = np.asarray(ring.from_words(state.mac_key_shares))
  np.testing.assert_array_equal(recorded['view/mac_key_shares'], alpha[[0, 2]])


# ---------------------------------------------------------------------------
# Secrecy and exactness on the path training uses (chunked, fused, Threefry).
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('num_servers', [2, 3])
def test_fused_path_opens_the_exact_fixed_point_sum(num_servers):
  rng = np.random.default_rng(num_servers)
  num_clients, num_params = 7, 5
  updates = jnp.asarray(rng.normal(0, 0.3, (num_clients, num_params)), jnp.float32)
  weights = rng.integers(1, 17, num_clients).astype(np.float32)
  weights[[1, 4]] = 0.0  # Dropouts.
  agg = aggregator_lib.SecureAggregator(spec=SPEC, num_servers=num_servers,
                                        max_weight=MAX_WEIGHT,
                                        coalition=(0, 2) if num_servers > 2 else (0,),
                                        record_view=True, client_chunk=3)
  _, result = agg.apply(agg.init(jax.random.key(1)), updates, jnp.asarray(weights),
                        jax.random.key(2), 0)
  assert result.ok
  # An independent fixed-point sum in Python integers.
  scaled = np.concatenate([np.asarray(updates) * (weights / MAX_WEIGHT)[:, None],
                           (weights / MAX_WEIGHT)[:, None]], axis=1).astype(np.float32)
  encoded = np.round(scaled.astype(np.float64) * 2**SPEC.f).astype(np.int64)
  expected = [int(v) % 2**SPEC.k for v in encoded[weights > 0].sum(axis=0)]
  opened = [int(v) % 2**SPEC.k for v in result.view['opened_sum']]
  assert opened == expected


def test_fused_path_coalition_view_is_uniform_and_independent_of_the_inputs():
  """KS tests on the coalition's per-client knowledge, for two very different inputs."""
  num_clients, num_params = 4, 64
  agg = aggregator_lib.SecureAggregator(spec=SPEC, num_servers=3, max_weight=MAX_WEIGHT,
                                        coalition=(0, 1), record_view=True)
  state = agg.init(jax.random.key(1))
  samples = []
  for scale in (0.0, 1.0):
    updates = jnp.full((num_clients, num_params), scale, jnp.float32)
    _, result = agg.apply(state, updates, jnp.full((num_clients,), 16.0),
                          jax.random.key(7), 0)
    low = result.view['coalition_input_estimate'] & np.uint64(2**SPEC.k - 1)
    samples.append(low.reshape(-1).astype(np.float64) / 2**SPEC.k)
  for sample in samples:
    assert stats.kstest(sample, 'uniform').pvalue > 1e-3
  assert stats.ks_2samp(*samples).pvalue > 1e-3
  shares = result.view['opened_sum_shares'][1] & np.uint64(2**SPEC.k - 1)
  assert stats.kstest(shares.astype(np.float64) / 2**SPEC.k, 'uniform').pvalue > 1e-3


# ---------------------------------------------------------------------------
# Consistent models (Pasquini et al., CCS 2022).
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('num_servers', [2, 3])
def test_model_inconsistency_is_detected_whenever_one_server_is_honest(num_servers):
  model = np.linspace(-1, 1, 6).astype(np.float32)
  servers = range(num_servers)
  for size in range(1, num_servers):
    for malicious in itertools.combinations(servers, size):
      broadcast = consistency.distribute(model, 4, num_servers, malicious=malicious,
                                         target=2)
      assert not broadcast.ok and broadcast.refusing == [0, 1, 3], malicious
      assert broadcast.failure.startswith('model inconsistency')
  # No honest server left: the same crafted model from all, nothing to compare.
  assert consistency.distribute(model, 4, num_servers, malicious=tuple(servers),
                                target=2).ok
  # Through the aggregator: the adversary kind of the engine's config.
  agg = _make(adversary=adversary_lib.AdversarySpec('inconsistent_model', server=1,
                                                    client=0))
  assert not agg.distribute_model(model, 3).ok
  assert _make().distribute_model(model, 3).ok


def test_without_the_check_a_crafted_model_isolates_one_client():
  """Pasquini et al.'s attack on a one-layer ReLU model: the crafted model's dead ReLUs
  zero every other client's update, so the securely opened mean is the target's alone."""
  rng = np.random.default_rng(0)
  dim, hidden, num_clients, target = 3, 4, 4, 2
  model = rng.normal(size=dim * hidden + hidden).astype(np.float32)
  model[dim * hidden:] = 3.0  # The true model's ReLUs fire on every input.

  def local_update(flat, x, y):  # One SGD step on 0.5 (Σ relu(W x + b) − y)^2.
    w, b = flat[:dim * hidden].reshape(hidden, dim), flat[dim * hidden:]
    pre = w @ x + b
    error = np.maximum(pre, 0).sum() - y
    grad_pre = error * (pre > 0)
    return -0.1 * np.concatenate([np.outer(grad_pre, x).ravel(), grad_pre])

  def trap(flat):  # Every bias very negative: no ReLU fires on any input.
    crafted = np.array(flat, copy=True)
    crafted[dim * hidden:] = -1e3
    return crafted

  data = [(rng.normal(size=dim).astype(np.float32), 1.0) for _ in range(num_clients)]
  agg = _make(adversary=adversary_lib.AdversarySpec('inconsistent_model', server=0,
                                                    client=target))
  unchecked = agg.distribute_model(model, num_clients, craft=trap, check=False)
  assert unchecked.ok  # Nobody compares: every client trains.
  updates = np.stack([local_update(m, *d) for m, d in zip(unchecked.models, data)])
  weights = jnp.full((num_clients,), 8.0)
  honest_aggregation = _make().apply(_make().init(jax.random.key(0)),
                                     jnp.asarray(updates, jnp.float32), weights,
                                     jax.random.key(1), 0)[1]
  assert honest_aggregation.ok
  np.testing.assert_allclose(np.asarray(honest_aggregation.mean_update) * num_clients,
                             updates[target], atol=1e-4)  # The target's update, exposed.
  assert np.abs(updates[target]).max() > 1e-3
  checked = agg.distribute_model(model, num_clients, craft=trap)
  assert not checked.ok and checked.refusing == [c for c in range(num_clients) if c != target]


def test_the_engine_resumes_an_aborted_round_at_a_new_attempt(tmp_path):
  """The engine records the retired attempt next to the checkpoints and applies it to
  the restored state: a resumed run never repeats an aborted attempt's α or masks."""
  updates, weights = _inputs()
  cheat = _make(adversary=adversary_lib.AdversarySpec('add_error', server=1))
  checkpoint = cheat.init(jax.random.key(1))
  retired, result = cheat.apply(checkpoint, updates, weights, jax.random.key(2), 0)
  assert not result.ok
  workdir = types.SimpleNamespace(path=str(tmp_path))
  engine._record_retired_attempts(workdir, retired)  # pylint: disable=protected-access
  resumed = engine._resume_retired_attempts(workdir, _make(), checkpoint)  # pylint: disable=protected-access
  jax.tree.map(np.testing.assert_array_equal, resumed, retired)
  fresh = types.SimpleNamespace(path=str(tmp_path / 'none'))
  assert engine._resume_retired_attempts(fresh, _make(), checkpoint) is checkpoint  # pylint: disable=protected-access


def _both_paths(agg, state, updates, weights, key):
  """One round on `apply` and on preprocess / package_client_inputs / aggregate."""
  num_clients, num_params = updates.shape
  _, fused_result = agg.apply(state, updates, weights, key, 0)
  prep = agg.preprocess(state, key, num_clients, num_params + 1)
  submission = agg.package_client_inputs(prep, updates, weights, key, 0)
  _, step_result, _ = agg.aggregate(state, prep, submission, key, 0, num_params)
  return prep, fused_result, step_result


def test_a_server_has_no_channel_to_shift_an_honest_clients_mask():
  """#15 gap: the client's mask comes from the dealer, never from the servers. Kills: the
  client sums the servers' (possibly shifted) shares of its mask, as before the fix (the
  round then passes with the output shifted: seen failing on the step-by-step path)."""
  updates, weights = _inputs()
  key = jax.random.key(2)
  shift = 3 << SPEC.f  # 3.0 on client 1's first parameter: a large, silent bias.
  cheat = _make(adversary=adversary_lib.AdversarySpec(
      'wrong_mask_to_client', server=2, client=1, magnitude=shift, element=0))
  state = cheat.init(jax.random.key(1))
  prep, fused_cheat, step_cheat = _both_paths(cheat, state, updates, weights, key)
  _, fused_honest, step_honest = _both_paths(_make(), state, updates, weights, key)
  # The malicious server's message is real: summed with the others it is r_c + shift.
  with jax.enable_x64(True):
    messages = adversary_lib.mask_messages(cheat.adversary.params(), prep.input_masks.value,
                                           SPEC.k)
    summed = np.asarray(spdz2k.mask_mod_2k(messages, SPEC))
  expected = np.asarray(prep.client_masks).copy()
  expected[1, 0] = (int(expected[1, 0]) + shift) % 2**SPEC.k
  np.testing.assert_array_equal(summed, expected)
  # The client never reads it: both paths give the honest round bit for bit.
  for name, cheated, honest in (('apply', fused_cheat, fused_honest),
                                ('step by step', step_cheat, step_honest)):
    assert cheated.ok and honest.ok, (name, cheated.failure)
    np.testing.assert_array_equal(cheated.mean_update, honest.mean_update, err_msg=name)
    np.testing.assert_array_equal(cheated.total_weight, honest.total_weight, err_msg=name)
  np.testing.assert_array_equal(step_honest.mean_update, fused_honest.mean_update)


def test_a_mask_message_adversary_is_checked_like_the_others():
  with pytest.raises(ValueError, match='semi-honest mode does not have'):
    aggregator_lib.SecureAggregator(
        spec=SPEC, num_servers=3, max_weight=MAX_WEIGHT, mode='privateyes_semi_honest',
        adversary=adversary_lib.AdversarySpec('wrong_mask_to_client'))
  with pytest.raises(ValueError, match='0 mod 2\\^k'):
    _make(adversary=adversary_lib.AdversarySpec('wrong_mask_to_client', magnitude=1 << SPEC.k))
  agg = _make(adversary=adversary_lib.AdversarySpec('wrong_mask_to_client', client=3))
  with pytest.raises(ValueError, match='adversary.client=3'):
    agg.apply(agg.init(jax.random.key(0)), *_inputs(), jax.random.key(1), 0)
