"""Tests for privateyes_jax.mpc.ring: spec validation, codec, range checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from privateyes_jax.mpc import ring

PROPERTY = settings(max_examples=25, deadline=None, derandomize=True)


@pytest.mark.parametrize('kwargs, field', [
    (dict(k=40, f=16, s=32), 'k + RingSpec.s'),
    (dict(k=32, f=32, s=32), 'RingSpec.f'),
    (dict(k=32, f=1, s=32), 'RingSpec.f'),
    (dict(k=32, f=16, s=0), 'RingSpec.s'),
    (dict(k=2, f=1, s=1), 'RingSpec.k'),
])
def test_spec_validation_names_field(kwargs, field):
  with pytest.raises(ValueError, match=field.replace('+', r'\+')):
    ring.RingSpec(**kwargs)


def test_default_spec_fills_one_word():
  spec = ring.RingSpec()
  assert (spec.k, spec.f, spec.s, spec.ring_bits) == (32, 16, 32, 64)
  assert (spec.value_bytes, spec.share_bytes) == (4, 8)


def test_ring_functions_require_scoped_x64():
  with pytest.raises(RuntimeError, match='enable_x64'):
    ring.encode(jnp.zeros(3), ring.RingSpec())


@PROPERTY
@given(k=st.integers(8, 40), f_frac=st.floats(0.1, 0.9), seed=st.integers(0, 2**31))
def test_decode_encode_within_half_ulp(k, f_frac, seed):
  f = min(max(2, int(f_frac * k)), k - 2)
  spec = ring.RingSpec(k=k, f=f, s=64 - k)
  bound = ring.max_abs_value(spec, 1)
  x = np.random.default_rng(seed).uniform(-bound, bound, 64).astype(np.float32)
  with jax.enable_x64(True):
    u = ring.encode(x, spec)
    assert u.dtype == jnp.uint64 and int(u.max()) < 2**k
    back = np.asarray(ring.decode(u, spec, dtype=jnp.float64))
    assert ring.decode(u, spec).dtype == jnp.float32
  np.testing.assert_array_less(np.abs(back - x.astype(np.float64)),
                               2.0**-f / 2 + 1e-12)


def test_decode_ignores_upper_s_bits():
  spec = ring.RingSpec(k=16, f=4, s=8)
  with jax.enable_x64(True):
    u = ring.encode(jnp.array([-1.5, 2.25]), spec)
    garbage = u + (jnp.uint64(0xAB) << jnp.uint64(16))
    np.testing.assert_array_equal(ring.decode(garbage, spec), [-1.5, 2.25])


def test_range_check_raises_before_sum_wraps():
  spec = ring.RingSpec(k=16, f=8, s=16)  # 7 integer bits: sums stay in (-128, 128).
  num_terms = 4
  bound = ring.max_abs_value(spec, num_terms)
  ok = np.full((num_terms, 3), bound, np.float32)
  ring.check_range(ok, spec, num_terms)  # At the bound: must not raise ...
  with jax.enable_x64(True):  # ... and the sum of num_terms such values is exact.
    total = jnp.sum(ring.encode(ok, spec), axis=0, dtype=jnp.uint64)
    decoded = np.asarray(ring.decode(total, spec, dtype=jnp.float64))
  np.testing.assert_allclose(decoded, num_terms * ok[0].astype(np.float64),
                             atol=num_terms * 2.0**-spec.f)
  too_big = ok.copy()
  too_big[2, 1] = 40.0  # 4 · 40 = 160 > 127: this sum would wrap.
  with pytest.raises(ring.RingOverflowError, match=r'index \(2, 1\).*bound'):
    ring.check_range(too_big, spec, num_terms)
  with jax.enable_x64(True):  # Show that unchecked encoding would indeed wrap.
    wrapped = ring.decode(jnp.sum(ring.encode(jnp.full(4, 40.0), spec),
                                  dtype=jnp.uint64), spec)
  assert float(wrapped) < 0


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_range_check_rejects_non_finite(bad):
  x = np.zeros((2, 3), np.float32)
  x[1, 2] = bad
  with pytest.raises(ring.RingOverflowError, match=r'index \(1, 2\).*NaN or inf'):
    ring.check_range(x, ring.RingSpec(), 2)


def test_max_abs_value_and_default_fractional_bits():
  spec = ring.RingSpec()
  assert ring.max_abs_value(spec, 256) == pytest.approx(128.0, rel=1e-3)
  f = ring.default_fractional_bits(32, max_clients=256, value_bound=1.0)
  assert ring.max_abs_value(ring.RingSpec(32, f, 32), 256) >= 1.0
  assert ring.max_abs_value(ring.RingSpec(32, f + 1, 32), 256) < 1.0
  with pytest.raises(ring.RingOverflowError):
    ring.default_fractional_bits(8, max_clients=10**6, value_bound=100.0)


def test_words_round_trip_outside_x64():
  with jax.enable_x64(True):
    u = jnp.array([0, 1, 2**63 + 5, 2**64 - 1], jnp.uint64)
    words = ring.to_words(u)
  assert words.dtype == jnp.uint32
  restored = jnp.asarray(np.asarray(words))  # As after a checkpoint restore.
  with jax.enable_x64(True):
    np.testing.assert_array_equal(np.asarray(ring.from_words(restored)),
                                  np.asarray(u))
