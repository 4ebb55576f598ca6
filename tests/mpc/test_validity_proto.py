"""Tiny tests of the validity-check prototype (docs/VALIDITY_DESIGN.md)."""

import math

import jax
import numpy as np
import pytest

from privateyes_jax.mpc import validity_proto as vp

S = 3
PARAMS = vp.Params(num_params=16, clip=1.0)


def _run(rng, x_arith, x_bits, slack, tamper=None):
  dealer = vp.deal(rng, PARAMS, S)
  msg = vp.client_input(x_arith, x_bits, slack, dealer, PARAMS)
  gamma, chi = vp.coins(rng, PARAMS, PARAMS.tau + 1)  # γ after the input is fixed
  opened = vp.zero_tests(msg, dealer, PARAMS, gamma, tamper=tamper)
  return vp.passes(opened, PARAMS), vp.mac_check(opened, dealer, chi), opened, dealer


def _sq(x):
  return sum(int(v) * int(v) for v in x)


@pytest.fixture(autouse=True)
def _x64():
  with jax.enable_x64(True):
    yield


def test_parameters():
  assert PARAMS.ell == 18  # C·2^f = 2^16 needs 17 magnitude bits plus the sign
  assert PARAMS.bound == math.ceil((2**16 + 2)**2)


@pytest.mark.parametrize('seed', [0, 1])
def test_honest_clipped_client_passes_and_aggregates_what_was_checked(seed):
  rng = np.random.default_rng(seed)
  update = rng.normal(size=PARAMS.num_params)
  update *= PARAMS.clip / np.linalg.norm(update)  # clipped exactly to C: the worst case
  if seed == 1:
    update = np.zeros(PARAMS.num_params)
    update[3] = -PARAMS.clip  # all the norm in one element
  x = vp.encode(update, PARAMS)
  assert _sq(x) <= PARAMS.bound
  dealer = vp.deal(rng, PARAMS, S)
  msg = vp.honest_input(x, dealer, PARAMS)
  gamma, chi = vp.coins(rng, PARAMS, PARAMS.tau + 1)
  opened = vp.zero_tests(msg, dealer, PARAMS, gamma)
  assert vp.passes(opened, PARAMS)
  assert vp.mac_check(opened, dealer, chi)
  # The aggregation ring's shares are the reduction mod 2^64 of the checked input.
  value, mac = vp.reduce_to_aggregation_ring(opened.x_agg)
  total = value.sum(axis=0, dtype=np.uint64)  # wraps mod 2^64
  assert [int(v) % 2**32 for v in total] == [int(v) % 2**32 for v in x]
  assert all(int(m) == (dealer.alpha * int(t)) % 2**64
             for m, t in zip(mac.sum(axis=0, dtype=np.uint64), total))


def test_client_slightly_above_the_bound_fails_whatever_slack_it_claims():
  rng = np.random.default_rng(2)
  v = rng.normal(size=PARAMS.num_params)
  x = vp.encode(v / np.linalg.norm(v) * math.sqrt(PARAMS.bound) * (1 + 1e-4) / 2**PARAMS.f,
                PARAMS)
  t = _sq(x)
  assert PARAMS.bound < t < PARAMS.bound * 1.001
  for slack in [PARAMS.bound - t, 0, 2**63 - 1, t - PARAMS.bound]:
    ok, mac_ok, _, _ = _run(rng, x, x, slack)
    assert not ok and mac_ok  # rejected by name; no server cheated
  one = [0] * PARAMS.num_params
  one[0] = math.isqrt(PARAMS.bound) + 1  # a single element just above √B
  ok, _, _, _ = _run(rng, one, one, PARAMS.bound - _sq(one))
  assert not ok


def _attacks():
  p = PARAMS.num_params
  top = [2**31, 0] + [0] * (p - 2)  # x_j = −2^31 in Z_2^32: x_j² ≡ 0 mod 2^32 and 2^64
  ones = [2**16] * p  # every element 1.0: ‖x‖ = 4 > C, yet Σx² ≡ 0 mod 2^32
  pair = [2**31, 2**31] + [0] * (p - 2)  # cancels under ±1 projections mod 2^32
  four = [2**31] * 4 + [0] * (p - 4)  # Σx² = 2^64 ≡ 0 even mod 2^64: needs the γ tests
  return {'top_bit': top, 'two_to_the_16': ones, 'cancelling_pair': pair,
          'four_top_bits': four}


@pytest.mark.parametrize('name', ['top_bit', 'two_to_the_16', 'cancelling_pair',
                                  'four_top_bits'])
def test_wraparound_attacks_fail(name):
  attack = _attacks()[name]
  # A naive check (Σ x² mod 2^32, or a ±1 projection) is fooled:
  assert vp.naive_sum_of_squares_mod(attack, 32) <= PARAMS.bound
  if name == 'four_top_bits':  # ... even in a 64-bit ring
    assert vp.naive_sum_of_squares_mod(attack, 64) == 0
  rng = np.random.default_rng(3)
  zeros = [0] * PARAMS.num_params
  strategies = [(attack, zeros, PARAMS.bound)]  # small bits, big ε
  fits = all(0 <= a + 2**(PARAMS.ell - 1) < 2**PARAMS.ell for a in attack)
  if fits:  # the bits can express it: be consistent and lie about the slack instead
    strategies += [(attack, attack, (PARAMS.bound - _sq(attack)) % 2**63)]
  else:
    with pytest.raises(ValueError, match='ℓ bits'):
      vp.client_input(attack, attack, 0, vp.deal(rng, PARAMS, S), PARAMS)
  for x_arith, x_bits, slack in strategies:
    ok, mac_ok, _, _ = _run(rng, x_arith, x_bits, slack)
    assert not ok and mac_ok


def test_differences_that_vanish_mod_2_to_the_64_are_harmless():
  # The zero tests decide agreement mod 2^64 (2^-32 per γ); a difference 2^95 passes
  # exactly when every γ_0 is even, and then the aggregate still gets the checked x.
  rng = np.random.default_rng(4)
  x = vp.encode(np.full(PARAMS.num_params, 0.2), PARAMS)
  high = [int(v) + (2**95 if j == 0 else 0) for j, v in enumerate(x)]
  dealer = vp.deal(rng, PARAMS, S)
  msg = vp.client_input(high, x, PARAMS.bound - _sq(x), dealer, PARAMS)
  gamma, chi = vp.coins(rng, PARAMS, PARAMS.tau + 1)
  for parity in (0, 1):
    gamma[:, 0] = (gamma[:, 0] & ~np.uint64(1)) | np.uint64(parity)
    opened = vp.zero_tests(msg, dealer, PARAMS, gamma)
    assert vp.passes(opened, PARAMS) == (parity == 0)
    assert vp.mac_check(opened, dealer, chi)
  value, _ = vp.reduce_to_aggregation_ring(opened.x_agg)
  total = value.sum(axis=0, dtype=np.uint64)
  assert [int(v) % 2**32 for v in total] == [int(v) % 2**32 for v in x]


@pytest.mark.parametrize('test, delta', [(2, 1), (0, 2**95), (1, 7 * 2**40)])
def test_tampered_zero_test_aborts_instead_of_rejecting_an_honest_client(test, delta):
  rng = np.random.default_rng(5)
  x = vp.encode(np.full(PARAMS.num_params, 0.1), PARAMS)
  ok, mac_ok, _, _ = _run(rng, x, x, PARAMS.bound - _sq(x), tamper=(1, test, delta))
  assert not ok  # the honest client would look rejected ...
  assert not mac_ok  # ... but the MAC check fails, so the round aborts
