"""The validity check on the training path: ``SecureAggregator(validity=...).apply``.

docs/MPC.md §5c. One small parameter count for every test (the check's programs compile
once per (P, element_chunk)); the module-level tests of the check's arithmetic are in
test_validity.py.
"""

import jax
import numpy as np
import pytest

from privateyes_jax.mpc import adversary as adversary_lib
from privateyes_jax.mpc import aggregator as agg_lib
from privateyes_jax.mpc import validity as validity_lib
from privateyes_jax.privacy import dp as dp_lib

NUM_CLIENTS, NUM_PARAMS, CLIP, MAX_WEIGHT = 7, 24, 1.0, 8.0
SETTINGS = validity_lib.ValiditySettings(clip_norm=CLIP, element_chunk=16)


def _aggregator(**kw):
  return agg_lib.SecureAggregator(max_weight=MAX_WEIGHT, num_servers=3, validity=SETTINGS,
                                  server_rng=np.random.default_rng(7), **kw)


def _round(agg, updates, weights, unchecked=None, seed=0):
  state = agg.init(jax.random.PRNGKey(seed))
  new_state, result = agg.apply(state, updates, weights, jax.random.PRNGKey(100 + seed), 0,
                                unchecked=unchecked)
  return state, new_state, result


def _clipped_mean(updates, weights, rows):
  """The mean the servers should open: honest rows of w̃Δ clipped to C, then Σ/Σw̃."""
  w = weights[rows] / MAX_WEIGHT
  scaled = updates[rows] * w[:, None]
  norms = np.linalg.norm(scaled, axis=1, keepdims=True)
  limit = CLIP * (1 - 2.0**-20)
  scaled = np.where(norms > limit, scaled * limit / np.maximum(norms, 1e-30), scaled)
  return scaled.sum(0) / w.sum()


@pytest.fixture(scope='module')
def data():
  rng = np.random.default_rng(0)
  updates = rng.normal(size=(NUM_CLIENTS, NUM_PARAMS)).astype(np.float32)
  # Norms from well inside to three times the bound: honest clients clip the long ones.
  updates *= (np.linspace(0.1, 3.0, NUM_CLIENTS) / np.linalg.norm(updates, axis=1))[:, None]
  weights = np.full(NUM_CLIENTS, MAX_WEIGHT, np.float32)
  weights[2], weights[4] = MAX_WEIGHT / 2, 0.0  # a half weight, a dropout
  return updates.astype(np.float32), weights


def test_honest_clients_are_never_excluded_and_get_the_clipped_mean(data):
  # Mutant killed: honest clients not clipped (the long ones would be excluded).
  updates, weights = data
  _, _, result = _round(_aggregator(), updates, weights)
  assert result.ok, result.failure
  assert result.excluded == ()
  members = np.flatnonzero(weights > 0)
  np.testing.assert_allclose(np.asarray(result.mean_update),
                             _clipped_mean(updates, weights, members), atol=2e-4)
  assert result.stats['mpc/validity_excluded'] == 0
  assert result.stats['mpc/num_included'] == len(members)


@pytest.mark.parametrize('factor', [15.0, -15.0, 1.6])
def test_a_client_above_the_bound_is_excluded_by_name_and_not_summed(data, factor):
  # Mutant killed: the excluded clients' shares left in the sum (the mean would move).
  updates, weights = data
  updates = updates.copy()
  cheats = np.zeros(NUM_CLIENTS, bool)
  cheats[[1, 5]] = True
  # Boosted or sign-flipped model replacement, and a norm just 1.6x the bound.
  updates[1] = updates[1] / np.linalg.norm(updates[1]) * CLIP * abs(factor) * np.sign(factor)
  updates[5] = updates[5] / np.linalg.norm(updates[5]) * CLIP * 1.01
  _, _, result = _round(_aggregator(), updates, weights, unchecked=cheats)
  assert result.ok, result.failure
  assert result.excluded == (1, 5)
  rows = np.array([c for c in np.flatnonzero(weights > 0) if c not in (1, 5)])
  np.testing.assert_allclose(np.asarray(result.mean_update),
                             _clipped_mean(updates, weights, rows), atol=2e-4)


@pytest.mark.parametrize('kind,element', [('tamper_zero_test', 0), ('tamper_zero_test', 2),
                                          ('tamper_zero_test', 3), ('tamper_bit_share', 5)])
def test_a_server_tampering_with_the_check_aborts_and_excludes_nobody(data, kind, element):
  # Mutant killed: a failed check of the zero tests not acted on (the honest client 0
  # would be excluded silently instead of the round aborting).
  updates, weights = data
  spec = adversary_lib.AdversarySpec(kind=kind, server=1, client=0, element=element,
                                     magnitude=1)
  state, new_state, result = _round(_aggregator(adversary=spec), updates, weights)
  assert not result.ok
  assert 'MAC check on the opened zero tests failed' in result.failure
  assert result.excluded == ()
  assert int(new_state.attempt) == int(state.attempt) + 1  # The attempt is retired.
  assert not np.any(np.asarray(result.mean_update))


def test_an_honest_client_with_a_nan_update_refuses_to_input(data):
  updates, weights = data
  updates = updates.copy()
  updates[3, 7] = np.nan
  with pytest.raises(ValueError, match='client 3: element 7'):
    _round(_aggregator(), updates, weights)


@pytest.mark.parametrize('field', ['bits', 'epsilon'])
def test_a_client_sending_a_malformed_message_is_excluded_by_name(data, monkeypatch, field):
  # Mutant killed: a malformed message stops the whole round (ValueError from the
  # servers' check) instead of excluding its sender; or its sender left in the sum.
  updates, weights = data
  honest = validity_lib.client_message
  calls = []

  def client_message(key_c, claim, p):
    msg = honest(key_c, claim, p)
    calls.append(len(calls))
    if len(calls) == 4:  # The fourth submitting client: client 3 (client 4 dropped out).
      msg = msg._replace(**{field: getattr(msg, field)[:-1]})
    return msg

  monkeypatch.setattr(validity_lib, 'client_message', client_message)
  _, _, result = _round(_aggregator(), updates, weights)
  assert result.ok, result.failure
  assert result.excluded == (3,)
  assert result.stats['mpc/num_included'] == 5
  rows = np.array([c for c in np.flatnonzero(weights > 0) if c != 3])
  np.testing.assert_allclose(np.asarray(result.mean_update),
                             _clipped_mean(updates, weights, rows), atol=2e-4)


def test_the_aggregation_check_still_catches_a_server_after_the_validity_check(data):
  updates, weights = data
  spec = adversary_lib.AdversarySpec(kind='add_error', server=2, element=3, magnitude=5)
  _, _, result = _round(_aggregator(adversary=spec), updates, weights)
  assert not result.ok and result.failure.startswith('MAC check failed')


def test_validity_settings_are_refused_where_they_would_do_nothing():
  dp = dp_lib.DPSettings(clip_norm=1.0, noise_multiplier=1.0, delta=1e-5, accountant='rdp',
                         sampling_rate=1.0, num_clients=4, rounds=1)
  cases = [dict(mode='privateyes_semi_honest'), dict(dp=dp), dict(record_view=True),
           dict(adversary=adversary_lib.AdversarySpec(kind='drop_client'))]
  for kw in cases:
    with pytest.raises(ValueError, match='validity'):
      _aggregator(**kw)
  with pytest.raises(ValueError, match='set aggregator.validity'):
    agg_lib.SecureAggregator(max_weight=1.0, adversary=adversary_lib.AdversarySpec(
        kind='tamper_zero_test', element=0))
  with pytest.raises(ValueError, match='clip_norm'):
    validity_lib.ValiditySettings(clip_norm=0.0)
  assert validity_lib.ValiditySettings.from_config({'enabled': False}) is None
