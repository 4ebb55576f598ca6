"""Tests for privateyes_jax.mpc.spdz2k: exactness, MAC invariants, opening, check."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st
from scipy import stats

from privateyes_jax.mpc import ring
from privateyes_jax.mpc import sharing
from privateyes_jax.mpc import spdz2k

PROPERTY = settings(max_examples=25, deadline=None, derandomize=True)


def _ints(v) -> np.ndarray:
  return np.array(np.asarray(v).tolist(), dtype=object)


@functools.partial(jax.jit, static_argnames=('num_servers', 'spec'))
def _privateyes_sum(key, x_ring, submitted, num_servers, spec):
  """Dealer, client input, local sum, opening and check values of one round."""
  keys = jax.random.split(key, 5)
  alpha = spdz2k.dealer_mac_key_shares(keys[0], num_servers, spec)
  masks = spdz2k.dealer_input_masks(keys[1], alpha, x_ring.shape, spec)
  r_client = spdz2k.mask_mod_2k(masks.value, spec)  # The dealer's message to the client.
  epsilon = spdz2k.client_masked_input(x_ring, r_client, spec)
  inputs = spdz2k.input_from_masked(masks, epsilon, alpha, spec)
  total = spdz2k.sum_over_clients(inputs, submitted, spec)
  opened, masked = spdz2k.open_value(total.value, spec), total
  chi = spdz2k.check_coefficients(spdz2k.joint_coin_key(
      spdz2k.coin_toss_contributions(keys[3], num_servers)),
                                  opened.shape, spec)
  z = spdz2k.mac_check_values(masked.mac, opened, chi, alpha, spec)
  return opened, masked, z, spdz2k.dealer_mac_key(alpha, spec)


@functools.partial(jax.jit, static_argnames=('num_servers', 'spec'))
def _both_modes_sum(key, x_ring, submitted, num_servers, spec):
  """One compiled program per example: SPDZ2k and semi-honest sums."""
  privateyes = _privateyes_sum.__wrapped__(key, x_ring, submitted, num_servers, spec)
  shares = sharing.share(jax.random.fold_in(key, 1), x_ring, num_servers, spec.k)
  semi = sharing.reconstruct(sharing.sum_over_clients(shares, submitted, spec.k),
                             spec.k)
  return privateyes, semi


# Compilation dominates this test on CPU, so the structure is drawn from a small
# space (repeats hit the jit cache) and the inputs from a large one. Client and
# element counts vary through padding: padded clients never submit and padded
# elements are ignored, so one compiled program serves every count.
MAX_CLIENTS, MAX_ELEMENTS = 4, 3


@PROPERTY
@given(num_servers=st.integers(2, 5), ks=st.sampled_from([(32, 32), (8, 56)]),
       num_clients=st.integers(1, MAX_CLIENTS),
       num_elements=st.integers(1, MAX_ELEMENTS), seed=st.integers(0, 2**31))
def test_opened_sum_is_the_plaintext_ring_sum_bit_for_bit(
    num_servers, ks, num_clients, num_elements, seed):
  k, s = ks
  spec = ring.RingSpec(k=k, f=min(4, k - 2), s=s)
  rng = np.random.default_rng(seed)
  bound = ring.max_abs_value(spec, num_clients)
  x = rng.uniform(-bound, bound, (MAX_CLIENTS, MAX_ELEMENTS)).astype(np.float32)
  x[:, num_elements:] = 0.0
  submitted = (rng.random(MAX_CLIENTS) < 0.7) & (np.arange(MAX_CLIENTS) < num_clients)
  ring.check_range(x, spec, num_clients)
  with jax.enable_x64(True):
    x_ring = ring.encode(x, spec)
    (opened, masked, z, alpha), semi = _both_modes_sum(
        jax.random.key(seed), x_ring, jnp.asarray(submitted), num_servers, spec)
  expected = _ints(x_ring)[submitted].sum(axis=0) % 2**k
  np.testing.assert_array_equal((_ints(opened) % 2**k)[:num_elements],
                                expected[:num_elements])
  np.testing.assert_array_equal(_ints(semi)[:num_elements], expected[:num_elements])
  # The opened [[y']] is authenticated: Σ_i m_i = α·y' mod 2^(k+s) ...
  np.testing.assert_array_equal(_ints(masked.mac).sum(axis=0) % 2**(k + s),
                                (int(alpha) * _ints(opened)) % 2**(k + s))
  # ... so the honest check values cancel.
  assert sum(_ints(z)) % 2**(k + s) == 0


def test_top_bits_of_the_opened_sum_are_uniform_without_an_opening_mask():
  """Σ of C copies of -1 ≡ 2^k - 1 carries C-1 into bit k of the plain integer sum; the
  opened sum of [[r_c]] + ε_c carries Σ r_c's uniform top bits instead. This is why the
  protocol opens without SPDZ2k's [[2^k r']] (docs/MPC.md §3, step 7)."""
  spec = ring.RingSpec()
  num_clients, num_elements = 3, 4096
  with jax.enable_x64(True):
    x_ring = jnp.full((num_clients, num_elements), 2**spec.k - 1, jnp.uint64)
    submitted = jnp.ones(num_clients, bool)
    opened, _, _, _ = _privateyes_sum(jax.random.key(3), x_ring, submitted, 3, spec)
    top = np.asarray(opened >> jnp.uint64(spec.k))
    plain = _ints(x_ring).sum(axis=0) % 2**spec.ring_bits
  assert set(int(v) >> spec.k for v in plain) == {num_clients - 1}
  np.testing.assert_array_equal(_ints(opened) % 2**spec.k, plain % 2**spec.k)
  counts = np.bincount((top >> np.uint64(spec.s - 4)).astype(np.int64),
                       minlength=16)
  assert stats.chisquare(counts).pvalue > 1e-4


def test_linear_operations_keep_macs_valid():
  spec = ring.RingSpec(k=24, f=8, s=40)
  mod = 2**spec.ring_bits
  with jax.enable_x64(True):
    alpha_shares = spdz2k.dealer_mac_key_shares(jax.random.key(0), 4, spec)
    alpha = int(spdz2k.dealer_mac_key(alpha_shares, spec))
    assert int(alpha_shares.max()) < 2**spec.s
    a_val = jnp.array([3, 2**23, 17], jnp.uint64)
    b_val = jnp.array([2**63, 5, 99], jnp.uint64) & jnp.uint64(mod - 1)
    a = spdz2k.dealer_authenticate(jax.random.key(1), a_val, alpha_shares, spec)
    b = spdz2k.dealer_authenticate(jax.random.key(2), b_val, alpha_shares, spec)
    c = jnp.array([7, 2**50, 1], jnp.uint64)
    results = {
        'add': (spdz2k.add(a, b, spec), _ints(a_val) + _ints(b_val)),
        'add_public': (spdz2k.add_public(a, c, alpha_shares, spec),
                       _ints(a_val) + _ints(c)),
        'mul_public': (spdz2k.mul_public(a, jnp.uint64(12345), spec),
                       _ints(a_val) * 12345),
    }
    for name, (shares, plain) in results.items():
      value = _ints(sharing.reconstruct(shares.value, spec.ring_bits))
      mac = _ints(sharing.reconstruct(shares.mac, spec.ring_bits))
      np.testing.assert_array_equal(value, plain % mod, err_msg=name)
      np.testing.assert_array_equal(mac, (alpha * plain) % mod, err_msg=name)


def test_commit_then_reveal_detects_both_kinds_of_cheating():
  spec = ring.RingSpec()
  mod = 2**spec.ring_bits
  z = np.array([5, mod - 12, 7], np.uint64)  # Honest: Σ z = 0 mod 2^64.
  with jax.enable_x64(True):
    nonces = np.asarray(spdz2k.commitment_nonces(jax.random.key(0), 3))
  commitments = spdz2k.commit_check_values(z, nonces)
  assert all(len(c) == 32 for c in commitments)
  assert spdz2k.verify_check_values(commitments, z, nonces, spec).ok

  changed = z.copy()
  changed[1] = np.uint64(int(z[1]) + 1)
  after = spdz2k.verify_check_values(commitments, changed, nonces, spec)
  assert (after.ok, after.failed_check) == (False, 'commitment')
  assert '[1]' in after.failure

  recommitted = spdz2k.commit_check_values(changed, nonces)
  before = spdz2k.verify_check_values(recommitted, changed, nonces, spec)
  assert (before.ok, before.failed_check) == (False, 'mac')

  other_nonce = nonces.copy()
  other_nonce[2, 0] ^= np.uint64(1)
  assert not spdz2k.verify_check_values(commitments, z, other_nonce, spec).ok


def test_check_coefficients_live_in_z_2_s_and_depend_on_the_coin():
  spec = ring.RingSpec(k=32, f=16, s=20)
  with jax.enable_x64(True):
    chi_a = spdz2k.check_coefficients(spdz2k.joint_coin_key(
        spdz2k.coin_toss_contributions(jax.random.key(0), 3)),
                                      (1000,), spec)
    chi_b = spdz2k.check_coefficients(spdz2k.joint_coin_key(
        spdz2k.coin_toss_contributions(jax.random.key(1), 3)),
                                      (1000,), spec)
    chi_a, chi_b = np.asarray(chi_a), np.asarray(chi_b)
  assert int(chi_a.max()) < 2**spec.s and int(chi_a.max()) > 2**(spec.s - 2)
  assert np.mean(chi_a == chi_b) < 0.01
