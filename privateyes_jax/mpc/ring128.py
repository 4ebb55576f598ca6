"""Z_2^128 as four 32-bit limbs in uint64 lanes: the validity check's ring.

An element is a uint64 array ``[..., 4]``, little endian, each limb < 2^32 when
*normalised*. Adding up to 2^31 normalised elements limb-wise cannot overflow a
lane, so sums are taken limb-wise and normalised once; a product is the schoolbook
product of the limbs mod 2^128 (every 32x32-bit partial product is exact in 64 bits).
All functions are jittable and need ``jax.enable_x64(True)`` (uint64 lanes), like
the rest of the MPC code. docs/VALIDITY_DESIGN.md says why 64 bits are not enough.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from privateyes_jax.mpc import ring

LIMBS = 4
BITS = 128
_M32 = (1 << 32) - 1


def normalize(a: jax.Array) -> jax.Array:
  """Propagates the carries of limbs < 2^63 and reduces mod 2^128."""
  ring.require_x64('ring128.normalize')
  m32 = jnp.uint64(_M32)
  limbs, carry = [], jnp.zeros(a.shape[:-1], jnp.uint64)
  for i in range(LIMBS):
    v = a[..., i] + carry
    limbs.append(v & m32)
    carry = v >> jnp.uint64(32)
  return jnp.stack(limbs, axis=-1)


def add(a, b):
  return normalize(a + b)


def neg(a):
  """−a mod 2^128 (two's complement: invert the limbs, add one)."""
  m32 = jnp.uint64(_M32)
  inverted = (~a) & m32
  return normalize(inverted.at[..., 0].add(jnp.uint64(1)))


def sub(a, b):
  return add(a, neg(b))


def mul(a, b):
  """a·b mod 2^128 for normalised limbs (broadcasting)."""
  a, b = jnp.broadcast_arrays(a, b)
  m32 = jnp.uint64(_M32)
  acc = [jnp.zeros(a.shape[:-1], jnp.uint64) for _ in range(LIMBS)]
  for i in range(LIMBS):
    for j in range(LIMBS - i):
      p = a[..., i] * b[..., j]  # < 2^64: exact.
      acc[i + j] = acc[i + j] + (p & m32)
      if i + j + 1 < LIMBS:
        acc[i + j + 1] = acc[i + j + 1] + (p >> jnp.uint64(32))
  return normalize(jnp.stack(acc, axis=-1))


def mul_small(a, g):
  """a·g mod 2^128 for g < 2^32 given as plain uint64 (broadcasting): 4 products, not 10."""
  a, g = jnp.broadcast_arrays(a, jnp.asarray(g, jnp.uint64)[..., None])
  g = g[..., 0]
  m32 = jnp.uint64(_M32)
  products = [a[..., i] * g for i in range(LIMBS)]  # < 2^64: exact.
  acc = [products[0] & m32]
  for i in range(1, LIMBS):
    acc.append((products[i] & m32) + (products[i - 1] >> jnp.uint64(32)))
  return normalize(jnp.stack(acc, axis=-1))


def shift_left(a, bits: int):
  """a·2^bits mod 2^128 for normalised limbs and a static shift (no carries needed)."""
  q, r = divmod(bits, 32)
  m32 = jnp.uint64(_M32)
  zero = jnp.zeros(a.shape[:-1], jnp.uint64)
  limbs = []
  for i in range(LIMBS):
    j = i - q
    if j < 0:
      limbs.append(zero)
      continue
    value = (a[..., j] << jnp.uint64(r)) & m32
    if r and j >= 1:
      value = value | (a[..., j - 1] >> jnp.uint64(32 - r))
    limbs.append(value)
  return jnp.stack(limbs, axis=-1)


def sum_axis(a, axis: int):
  """Σ over ``axis`` (a data axis, not the limb axis) of < 2^31 normalised elements."""
  return normalize(jnp.sum(a, axis=axis, dtype=jnp.uint64))


def mod_bits(a, bits: int):
  """a mod 2^bits for bits a multiple of 32."""
  if bits % 32 or not 0 < bits <= BITS:
    raise ValueError(f'mod_bits: bits={bits} must be a multiple of 32 in (0, 128].')
  return a.at[..., bits // 32:].set(jnp.uint64(0))


def is_zero_mod(a, bits: int) -> jax.Array:
  """a ≡ 0 mod 2^bits (bits a multiple of 32), over the leading axes."""
  return jnp.all(mod_bits(a, bits) == 0, axis=-1)


def from_int64(x: jax.Array) -> jax.Array:
  """Signed int64 values → their residues mod 2^128 (sign-extended)."""
  x = jnp.asarray(x, jnp.int64)
  m32 = jnp.int64(_M32)
  # Arithmetic shifts on the signed value: the limbs of its two's complement.
  limbs = [x & m32, (x >> 32) & m32, (x >> 63) & m32, (x >> 63) & m32]
  return jnp.stack(limbs, axis=-1).astype(jnp.uint64)


def from_uint64(u: jax.Array) -> jax.Array:
  """Unsigned 64-bit values → limbs."""
  u = jnp.asarray(u, jnp.uint64)
  zero = jnp.zeros_like(u)
  return jnp.stack([u & jnp.uint64(_M32), u >> jnp.uint64(32), zero, zero], axis=-1)


def low64(a: jax.Array) -> jax.Array:
  """a mod 2^64 as one uint64 word (the aggregation ring's share words)."""
  return a[..., 0] | (a[..., 1] << jnp.uint64(32))


def random(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Uniform elements of Z_2^128, ``shape + (4,)``."""
  return jax.random.bits(key, tuple(shape) + (LIMBS,), jnp.uint32).astype(jnp.uint64)


def constant(value: int, shape: tuple[int, ...] = ()) -> jax.Array:
  """A Python int (any sign) mod 2^128 as limbs, broadcast to ``shape``."""
  v = int(value) % (1 << BITS)
  limbs = jnp.asarray([(v >> (32 * i)) & _M32 for i in range(LIMBS)], jnp.uint64)
  return jnp.broadcast_to(limbs, tuple(shape) + (LIMBS,))


def to_ints(a) -> np.ndarray:
  """Host: limbs → object array of Python ints in [0, 2^128)."""
  a = np.asarray(jax.device_get(a), dtype=np.uint64)
  out = np.zeros(a.shape[:-1], dtype=object)
  for i in range(LIMBS):
    out = out + a[..., i].astype(object) * (1 << (32 * i))
  return out


def from_ints(values) -> jax.Array:
  """Host: Python ints (any sign) → limbs ``[..., 4]`` (tests and constants)."""
  arr = np.asarray(values, dtype=object)
  flat = [int(v) % (1 << BITS) for v in arr.reshape(-1)]
  limbs = np.array([[(v >> (32 * i)) & _M32 for i in range(LIMBS)] for v in flat],
                   dtype=np.uint64).reshape(arr.shape + (LIMBS,))
  return jnp.asarray(limbs)
