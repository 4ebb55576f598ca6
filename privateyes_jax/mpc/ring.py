"""Fixed-point codec for Z_2^k embedded in the SPDZ2k share ring Z_2^(k+s).

SPDZ2k (Cramer, Damgård, Escudero, Scholl, Xing, CRYPTO 2018) computes on values
in Z_2^k but keeps shares and MACs in the larger ring Z_2^(k+s), so that a MAC key
α ∈ Z_2^s catches an additive error with probability about 1 - 2^-s even though
Z_2^k has zero divisors. A real update value x is encoded as the two's complement
fixed-point integer round(x · 2^f) mod 2^k and lifted into [0, 2^k) ⊂ Z_2^(k+s).

64-bit decision. Ring elements are ``uint64`` arrays under a *scoped*
``with jax.enable_x64(True):`` rather than under a global ``jax_enable_x64``:

* k + s ≤ 64 makes one machine word per element. Unsigned 64-bit multiplication and
  addition wrap modulo 2^64 natively in XLA, so Z_2^64 arithmetic is exact with no
  bignum emulation; for k + s < 64 we mask with 2^(k+s) - 1 after every operation.
* Turning x64 on globally would silently change the dtype of every float and int
  array in the rest of the system (models, optimizers, data) to 64 bits, doubling
  memory and slowing training. The scope confines 64-bit types to the MPC code:
  the rest of the system hands in float32 and gets float32 back.
* Consequence: every function here (and in ``sharing``/``spdz2k``) must be traced
  and called inside ``jax.enable_x64(True)``; they check this and fail fast.
  Never carry a uint64 jax array out of the scope into code that might
  ``device_put`` it again with x64 off (it would be truncated to uint32): states
  store ring elements as uint32 word pairs (``to_words``/``from_words``) and views
  as NumPy uint64 arrays.

Range. The integer part has k-1-f bits (one bit is the sign). A sum of n encoded
values is exact only if it does not leave [-2^(k-1), 2^(k-1)); ``check_range``
enforces a per-value bound such that even n values of the maximal magnitude sum
inside that range, so nothing ever wraps silently.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


class RingOverflowError(ValueError):
  """A value (or the sum of values) does not fit the fixed-point ring."""


def require_x64(what: str) -> None:
  """Fails fast when a ring function is used outside ``jax.enable_x64(True)``."""
  if not jax.config.jax_enable_x64:
    raise RuntimeError(
        f'{what} works on uint64 ring elements and must run inside '
        '`with jax.enable_x64(True):` (see privateyes_jax/mpc/ring.py).')


@dataclasses.dataclass(frozen=True)
class RingSpec:
  """Ring parameters of SPDZ2k: values in Z_2^k, shares and MACs in Z_2^(k+s).

  Attributes:
    k: bits of a value (two's complement), including the sign bit.
    f: fractional bits of the fixed-point encoding (precision 2^-f).
    s: statistical security bits; the MAC key lives in Z_2^s and a cheating
      server survives the MAC check with probability about 2^-s · (s + 1)
      (SPDZ2k, Thm. 1 in spirit; the log factor comes from zero divisors).
  """
  k: int = 32
  f: int = 16
  s: int = 32

  def __post_init__(self):
    for name in ('k', 'f', 's'):
      if not isinstance(getattr(self, name), int):
        raise ValueError(f'RingSpec.{name} must be an int, got '
                         f'{getattr(self, name)!r}.')
    if self.k < 3:
      raise ValueError(f'RingSpec.k={self.k} must be at least 3.')
    if not 2 <= self.f < self.k:
      raise ValueError(f'RingSpec.f={self.f} must satisfy 2 <= f < k={self.k}.')
    if self.s < 1:
      raise ValueError(f'RingSpec.s={self.s} must be at least 1.')
    if self.k + self.s > 64:
      raise ValueError(
          f'RingSpec.k + RingSpec.s = {self.k} + {self.s} = {self.k + self.s} '
          'exceeds 64: shares are uint64 words.')

  @property
  def ring_bits(self) -> int:
    """Bits of the share ring Z_2^(k+s)."""
    return self.k + self.s

  @property
  def integer_bits(self) -> int:
    """Bits left for the integer part: k - 1 - f (one bit is the sign)."""
    return self.k - 1 - self.f

  @property
  def value_bytes(self) -> int:
    """Bytes to send one element of Z_2^k."""
    return -(-self.k // 8)

  @property
  def share_bytes(self) -> int:
    """Bytes to send one element of Z_2^(k+s)."""
    return -(-self.ring_bits // 8)


def mask_bits(u: jax.Array, bits: int) -> jax.Array:
  """Reduces uint64 ``u`` modulo 2^bits (a no-op for bits == 64: natural wrap)."""
  if bits >= 64:
    return u
  return u & jnp.uint64((1 << bits) - 1)


def max_abs_value(spec: RingSpec, num_terms: int) -> float:
  """Largest |x| such that ``num_terms`` encoded values of that size sum exactly.

  Encoding rounds x·2^f to the nearest integer (error ≤ 1/2), so n values of
  magnitude m sum to at most n·(m·2^f + 1/2) in absolute value, which must stay
  ≤ 2^(k-1) - 1, i.e. inside k-1-f integer bits after the sign.

  Args:
    spec: the ring.
    num_terms: how many values are summed (e.g. the number of clients).

  Returns:
    The bound m (a Python float); ``check_range`` accepts |x| ≤ m.
  """
  if num_terms < 1:
    raise ValueError(f'num_terms={num_terms} must be at least 1.')
  bound = ((2.0**(spec.k - 1) - 1.0) / num_terms - 0.5) / 2.0**spec.f
  if bound <= 0:
    raise RingOverflowError(
        f'RingSpec(k={spec.k}, f={spec.f}) cannot hold a sum of {num_terms} '
        'terms at all; increase k or decrease f.')
  return bound


def default_fractional_bits(k: int, max_clients: int, value_bound: float) -> int:
  """The largest f such that ``max_clients`` values with |x| ≤ value_bound sum.

  Use it to pick ``mpc.f`` from the run's public bounds: the most precision that
  still leaves enough integer bits for the largest federation the run uses.

  Args:
    k: value bits.
    max_clients: the largest number of clients summed in one round.
    value_bound: public bound on |w_c/w_max · Δ_c| (and 1 for the weight element).

  Returns:
    f with 2 ≤ f < k.

  Raises:
    RingOverflowError: if even f = 2 cannot hold the sum.
  """
  for f in range(k - 1, 1, -1):
    try:
      if max_abs_value(RingSpec(k=k, f=f, s=max(1, 64 - k)), max_clients) >= value_bound:
        return f
    except RingOverflowError:
      continue
  raise RingOverflowError(
      f'k={k} cannot hold the sum of {max_clients} values of magnitude '
      f'{value_bound} with f >= 2 fractional bits; increase k.')


@jax.jit
def _range_stats(x: jax.Array):
  flat = jnp.abs(x.reshape(-1).astype(jnp.float32))
  finite = jnp.isfinite(flat)
  # Non-finite entries win the argmax so that the error names them.
  key = jnp.where(finite, flat, jnp.inf)
  idx = jnp.argmax(key)
  return jnp.all(finite), idx, flat[idx]


def check_range(x: jax.Array, spec: RingSpec, num_terms: int,
                what: str = 'value') -> float:
  """Raises before encoding if |x| could wrap the ring when ``num_terms`` are summed.

  Only three scalars cross to the host (all-finite flag, argmax, max |x|).

  Args:
    x: float array of any shape (e.g. ``[clients, params]``).
    spec: the ring.
    num_terms: number of such values that will be summed.
    what: how to name the array in the error (e.g. 'scaled individual update').

  Returns:
    The max |x| (for logging).

  Raises:
    RingOverflowError: naming the offending value, its index and the bound; also
      for NaN or inf entries.
  """
  x = jnp.asarray(x)
  if x.size == 0:
    return 0.0
  all_finite, idx, value = jax.device_get(_range_stats(x))
  index = tuple(int(i) for i in np.unravel_index(int(idx), x.shape))
  return raise_if_out_of_range(bool(all_finite), index, float(value), spec,
                               num_terms, what)


def raise_if_out_of_range(all_finite: bool, index: tuple[int, ...], value: float,
                          spec: RingSpec, num_terms: int, what: str) -> float:
  """The error of ``check_range`` from precomputed statistics (see there).

  Args:
    all_finite: no NaN or inf anywhere.
    index: where the first non-finite entry is, else where max |x| is.
    value: |x| at ``index``.
    spec: the ring.
    num_terms: number of values that will be summed.
    what: how to name the array in the error.

  Returns:
    ``value`` when in range.
  """
  bound = max_abs_value(spec, num_terms)
  if not all_finite:
    raise RingOverflowError(
        f'{what} at index {index} is {value} (NaN or inf); refusing to '
        'encode a non-finite value into the ring.')
  if value > bound:
    raise RingOverflowError(
        f'{what}: max |value| = {value:.6g} at index {index} exceeds the '
        f'bound {bound:.6g} for summing {num_terms} terms in RingSpec(k={spec.k}, '
        f'f={spec.f}) ({spec.integer_bits} integer bits); rescale the inputs, '
        'lower f, or raise k.')
  return value


def encode(x: jax.Array, spec: RingSpec) -> jax.Array:
  """Fixed-point encodes reals into Z_2^k, lifted to [0, 2^k) ⊂ Z_2^(k+s).

  Rounds x·2^f to the nearest integer (ties to even) and takes it modulo 2^k in
  two's complement. Does not range-check: call ``check_range`` first (the
  aggregator always does), otherwise large values wrap.

  Args:
    x: float array, any shape.
    spec: the ring.

  Returns:
    uint64 array of the same shape with entries < 2^k.
  """
  require_x64('ring.encode')
  scaled = jnp.round(jnp.asarray(x, jnp.float64) * (2.0**spec.f))
  return mask_bits(scaled.astype(jnp.int64).astype(jnp.uint64), spec.k)


def decode(u: jax.Array, spec: RingSpec, dtype=jnp.float32) -> jax.Array:
  """Reads the low k bits of ring elements as signed fixed-point numbers.

  Args:
    u: uint64 array, any shape (upper s bits are ignored, as SPDZ2k prescribes).
    spec: the ring.
    dtype: float32 for the rest of the system; float64 for exact intermediate
      arithmetic on sums (a k=32 sum has more significant bits than float32).

  Returns:
    float array of the same shape.
  """
  require_x64('ring.decode')
  low = mask_bits(jnp.asarray(u, jnp.uint64), spec.k).astype(jnp.int64)
  signed = jnp.where(low >= (1 << (spec.k - 1)), low - (1 << spec.k), low)
  return (signed.astype(jnp.float64) / (2.0**spec.f)).astype(dtype)


def to_words(u: jax.Array) -> jax.Array:
  """Splits uint64 into uint32 (low, high) words: ``[..., 2]``.

  States that leave the x64 scope (checkpoints, restores with x64 off) keep ring
  elements this way so that nothing truncates them to 32 bits.
  """
  require_x64('ring.to_words')
  u = jnp.asarray(u, jnp.uint64)
  return jnp.stack([(u & jnp.uint64(0xFFFFFFFF)).astype(jnp.uint32),
                    (u >> jnp.uint64(32)).astype(jnp.uint32)], axis=-1)


def from_words(w: jax.Array) -> jax.Array:
  """Inverse of ``to_words``: ``[..., 2]`` uint32 -> ``[...]`` uint64."""
  require_x64('ring.from_words')
  w = jnp.asarray(w, jnp.uint32)
  return (w[..., 0].astype(jnp.uint64)
          | (w[..., 1].astype(jnp.uint64) << jnp.uint64(32)))
