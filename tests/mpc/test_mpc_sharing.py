"""Tests for privateyes_jax.mpc.sharing: correctness, linearity, secrecy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from privateyes_jax.mpc import ring
from privateyes_jax.mpc import sharing
from privateyes_jax.mpc import spdz2k

PROPERTY = settings(max_examples=25, deadline=None, derandomize=True)
NUM_SAMPLES = 4096
ALPHA = 1e-4  # Per statistical test; all keys are fixed, so no flakiness.


@functools.partial(jax.jit, static_argnames=('num_servers', 'bits'))
def _share(key, x, num_servers, bits):
  return sharing.share(key, x, num_servers, bits)


@PROPERTY
@given(num_servers=st.integers(2, 5), bits=st.sampled_from([8, 64]),
       shape=st.just((2, 4)), seed=st.integers(0, 2**31))
def test_reconstruct_inverts_share(num_servers, bits, shape, seed):
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 2**bits, size=shape, dtype=np.uint64)
  with jax.enable_x64(True):
    shares = _share(jax.random.key(seed), jnp.asarray(x), num_servers, bits)
    assert shares.shape == (num_servers,) + shape
    assert int(shares.max()) < 2**bits
    np.testing.assert_array_equal(sharing.reconstruct(shares, bits), x)


@pytest.mark.parametrize('num_servers', [0, 1])
def test_fewer_than_two_servers_rejected(num_servers):
  with jax.enable_x64(True), pytest.raises(ValueError, match='at least 2'):
    sharing.share(jax.random.key(0), jnp.zeros(3, jnp.uint64), num_servers)


def _ints(v) -> np.ndarray:
  """Exact Python integers, so reference arithmetic cannot overflow."""
  return np.array(np.asarray(v).tolist(), dtype=object)


def test_local_linear_operations():
  bits = 40
  with jax.enable_x64(True):
    a, b = jnp.array([5, 2**39], jnp.uint64), jnp.array([7, 2**39 + 3], jnp.uint64)
    sa = _share(jax.random.key(1), a, 3, bits)
    sb = _share(jax.random.key(2), b, 3, bits)
    c = jnp.array([11, 2**40 - 1], jnp.uint64)
    total = sharing.reconstruct(sharing.add(sa, sb, bits), bits)
    plus = sharing.reconstruct(sharing.add_public(sa, c, bits), bits)
    times = sharing.reconstruct(sharing.mul_public(sa, jnp.uint64(3), bits), bits)
  np.testing.assert_array_equal(_ints(total), (_ints(a) + _ints(b)) % 2**bits)
  np.testing.assert_array_equal(_ints(plus), (_ints(a) + _ints(c)) % 2**bits)
  np.testing.assert_array_equal(_ints(times), (_ints(a) * 3) % 2**bits)


def _top_low_bins(values: np.ndarray, bits: int, nbits: int = 4):
  values = values.astype(np.uint64)
  top = (values >> np.uint64(bits - nbits)).astype(np.int64)
  low = (values & np.uint64(2**nbits - 1)).astype(np.int64)
  return top, low


def _assert_uniform(values: np.ndarray, bits: int, what: str):
  for name, binned in zip(('top', 'low'), _top_low_bins(values, bits)):
    counts = np.bincount(binned, minlength=16)
    p = stats.chisquare(counts).pvalue
    assert p > ALPHA, f'{what}: {name} bits not uniform (p={p:.2e})'


def _assert_same_distribution(a: np.ndarray, b: np.ndarray, bits: int, what: str):
  p_ks = stats.ks_2samp(a.astype(np.float64) / 2.0**bits,
                        b.astype(np.float64) / 2.0**bits).pvalue
  assert p_ks > ALPHA, f'{what}: KS says distributions differ (p={p_ks:.2e})'
  for name, (ba, bb) in zip(('top', 'low'), zip(_top_low_bins(a, bits),
                                                  _top_low_bins(b, bits))):
    table = np.stack([np.bincount(ba, minlength=16), np.bincount(bb, minlength=16)])
    p = stats.chi2_contingency(table).pvalue
    assert p > ALPHA, f'{what}: {name} bits depend on the secret (p={p:.2e})'


def _coalition_shares(shares: np.ndarray, honest: int) -> np.ndarray:
  """The S-1 shares a coalition without server ``honest`` holds: [S-1, N]."""
  return np.delete(shares, honest, axis=0)


SECRETS = (0, 2**31 + 12345)  # Very different secrets in Z_2^32.


@pytest.mark.parametrize('num_servers', [2, 3])
def test_semi_honest_any_s_minus_1_shares_uniform_and_secret_independent(
    num_servers):
  spec = ring.RingSpec()
  views = []
  with jax.enable_x64(True):
    for i, secret in enumerate(SECRETS):
      x = jnp.full((NUM_SAMPLES,), secret, jnp.uint64)
      views.append(np.asarray(_share(jax.random.key(100 + i), x, num_servers,
                                     spec.k)))
  for honest in range(num_servers):
    for s_idx, shares in enumerate(views):
      for row in _coalition_shares(shares, honest):
        _assert_uniform(row, spec.k, f'semi-honest S={num_servers} '
                        f'honest={honest} secret#{s_idx}')
    a = _coalition_shares(views[0], honest)
    b = _coalition_shares(views[1], honest)
    for row_a, row_b in zip(a, b):
      _assert_same_distribution(row_a, row_b, spec.k, f'semi-honest honest={honest}')
    # Shares of one coalition are independent of each other: their sum is
    # uniform too (it would reveal x if the honest share were missing).
    _assert_same_distribution(a.sum(0, dtype=np.uint64) % 2**spec.k,
                              b.sum(0, dtype=np.uint64) % 2**spec.k, spec.k,
                              'semi-honest coalition sum')


@functools.partial(jax.jit, static_argnames=('num_servers', 'spec'))
def _privateyes_input(key, x, num_servers, spec):
  """The coalition-visible parts of the SPDZ2k client input protocol."""
  key_mac, key_mask = jax.random.split(key)
  alpha = spdz2k.dealer_mac_key_shares(key_mac, num_servers, spec)
  mask = spdz2k.dealer_input_masks(key_mask, alpha, x.shape, spec)
  r_client = spdz2k.mask_mod_2k(mask.value, spec)  # The dealer's message to the client.
  epsilon = spdz2k.client_masked_input(x, r_client, spec)
  inputs = spdz2k.input_from_masked(mask, epsilon, alpha, spec)
  return inputs.value, inputs.mac, epsilon


@pytest.mark.parametrize('num_servers', [2, 3])
def test_privateyes_input_shares_uniform_and_secret_independent(num_servers):
  spec = ring.RingSpec()
  views = []
  with jax.enable_x64(True):
    for i, secret in enumerate(SECRETS):
      x = jnp.full((NUM_SAMPLES,), secret, jnp.uint64)
      views.append([np.asarray(v) for v in
                    _privateyes_input(jax.random.key(200 + i), x, num_servers,
                                      spec)])
  for honest in range(num_servers):
    for part, bits in ((0, spec.ring_bits), (1, spec.ring_bits)):
      name = ('value', 'MAC')[part]
      a = _coalition_shares(views[0][part], honest)
      b = _coalition_shares(views[1][part], honest)
      for row_a, row_b in zip(a, b):
        _assert_uniform(row_a, bits, f'privateyes {name} share honest={honest}')
        _assert_same_distribution(row_a, row_b, bits,
                                  f'privateyes {name} share honest={honest}')
  # The broadcast ε = x - r mod 2^k is seen by every server.
  _assert_uniform(views[0][2], spec.k, 'epsilon')
  _assert_same_distribution(views[0][2], views[1][2], spec.k, 'epsilon')


def test_secrecy_checks_detect_a_leaky_sharing():
  """Negative control: the statistics above do catch shares that leak x."""
  rng = np.random.default_rng(0)
  noise = rng.integers(0, 2**20, NUM_SAMPLES, dtype=np.uint64)  # Low bits only.
  leaky = [(noise + np.uint64(secret)) % np.uint64(2**32) for secret in SECRETS]
  with pytest.raises(AssertionError):
    _assert_uniform(leaky[1], 32, 'leaky')
  with pytest.raises(AssertionError):
    _assert_same_distribution(leaky[0], leaky[1], 32, 'leaky')
