"""Counter-mode Threefry streams: every share the simulation draws is PRG(seed)[element].

Why not ``jax.random.bits``. The secure aggregation draws (2S-1) 64-bit words per
client element per round (privateyes) -- 5 × 15 × 1.8M words for the CPU demo, 5 ×
256 × 3.4M on a GPU -- so the generator is the dominant cost. Measured on the
2-core AMD EPYC CPU (jax 0.10.2), 15 × 1.8M uint64 words summed over clients:

=============================================================  =========
generator                                                      time
=============================================================  =========
``jax.random.bits`` (threefry2x32, either partitionable mode)  460-520 ms
``jax.random.bits`` with ``impl='rbg'`` / ``'unsafe_rbg'``     190-220 ms
``lax.rng_bit_generator`` RNG_PHILOX / RNG_THREE_FRY (1 call)  110-230 ms
Threefry-2x32-20 written as elementwise jnp (this module)       68 ms
=============================================================  =========

and inside the fused privateyes chunk program (``fused.accumulate``, 15 × 1.8M)
Threefry-2x64-20 takes 521 ms vs 921 ms for Threefry-2x32-20 on this CPU
(AVX-512 has 64-bit lanes and rotates; one 2x64 block yields both of a server's
words); semi-honest 365 vs 404 ms. ``rbg``/``unsafe_rbg`` keys are also unusable for per-seed streams: vmapping ``lax.rng_bit_generator`` over
keys uses only the first key (jax ``_rng_bit_generator_batching_rule``), so a
share could not be the expansion of *its own* seed. DESIGN.md §7 found rbg no
faster than threefry on an H200 either.

So this module implements the two Threefry variants of Random123 (Salmon, Moraes,
Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011) directly as
jnp integer ops, which XLA fuses into the consumer (no random array is written
to memory):

* ``threefry2x64`` (default): Threefry-2x64 with 20 rounds; checked against
  Random123's known-answer vectors (tests/mpc/test_mpc_fused.py).
* ``threefry2x32``: Threefry-2x32 with 20 rounds, the function behind JAX's
  default PRNG (checked bit for bit against ``jax.extend.random.threefry_2x32``).

A stream is keyed by a 128-bit seed (two uint64 words) and indexed by
(element, lane): word ``lane`` of element ``e`` is one output word of the block
cipher applied to the counter (e, lane // 2) (2x64) or (e, lane) (2x32). Seeds are
derived from the round key the same way, Threefry-2x64 used as a pseudorandom
function of (role, client, server) (``key_seed``, ``child_seed``,
``seed_table``): a few words per client, and no ``jax.random`` in the round's
programs (its graphs took most of their compile time).

Security note: Threefry is a counter-based generator built from the Threefish
block cipher with the full 20 rounds; it passes BigCrush and is what JAX itself
uses, which is adequate for a *simulation* of the protocol. It is not a vetted cryptographic PRG: a deployment expands seeds with
AES-CTR (as MP-SPDZ does) or ChaCha. There is deliberately no faster,
non-Threefry option (no rbg/unsafe_rbg).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

PRGS = ('threefry2x64', 'threefry2x32')

_PARITY64 = 0x1BD11BDAA9FC1A22
_PARITY32 = 0x1BD11BDA
_ROT64 = (16, 42, 12, 31, 16, 32, 24, 21)  # Random123 R_64x2.
_ROT32 = (13, 15, 26, 6, 17, 29, 16, 24)  # Random123 R_32x2.


def check_prg(prg: str) -> None:
  if prg not in PRGS:
    raise ValueError(f'prg={prg!r} is not one of {PRGS}.')


def _rotl(x, r: int, width: int):
  dtype = x.dtype.type
  return (x << dtype(r)) | (x >> dtype(width - r))


def _threefry2(dtype, parity: int, rotations, width: int, key0, key1, x0, x1, rounds: int):
  """Random123's Threefry-2xW block function; W = ``width`` bits of ``dtype`` words."""
  u = dtype
  key0, key1 = jnp.asarray(key0, u), jnp.asarray(key1, u)
  x0, x1 = jnp.asarray(x0, u), jnp.asarray(x1, u)
  ks = (key0, key1, key0 ^ key1 ^ u(parity))
  x0 = x0 + ks[0]
  x1 = x1 + ks[1]
  for r in range(rounds):
    x0 = x0 + x1
    x1 = _rotl(x1, rotations[r % 8], width) ^ x0
    if r % 4 == 3:  # Key injection every 4 rounds.
      s = (r + 1) // 4
      x0 = x0 + ks[s % 3]
      x1 = x1 + ks[(s + 1) % 3] + u(s)
  return x0, x1


def threefry2x64(key0, key1, x0, x1, rounds: int = 20):
  """Random123 Threefry-2x64 block function on uint64 arrays (broadcasting)."""
  return _threefry2(jnp.uint64, _PARITY64, _ROT64, 64, key0, key1, x0, x1, rounds)


def threefry2x32(key0, key1, x0, x1, rounds: int = 20):
  """Random123 Threefry-2x32 block function on uint32 arrays (JAX's PRNG core)."""
  return _threefry2(jnp.uint32, _PARITY32, _ROT32, 32, key0, key1, x0, x1, rounds)


def _key32(k0, k1):
  """Threefry-2x32 takes a 64-bit key: fold the 128-bit seed (lo ^ hi per word)."""
  fold = lambda k: (k ^ (k >> jnp.uint64(32))).astype(jnp.uint32)
  return fold(k0), fold(k1)


def element_counter(num_elements: int) -> jax.Array:
  """The element index ``[E]`` (uint32: E < 2^32) that streams are indexed by."""
  return lax.iota(jnp.uint32, num_elements)


def words64(seed: jax.Array, counter: jax.Array, num_lanes: int,
            prg: str = 'threefry2x64') -> list[jax.Array]:
  """Lanes 0..num_lanes-1 of a stream as uint64 arrays.

  Args:
    seed: uint64 ``[..., 2]`` (broadcast against ``counter``).
    counter: uint32 element indices, e.g. ``element_counter(E)`` or ``[1, E]``.
    num_lanes: independent words per element.
    prg: one of ``PRGS``.

  Returns:
    ``num_lanes`` uint64 arrays of the broadcast shape of ``seed[..., 0]`` and
    ``counter``.
  """
  check_prg(prg)
  k0, k1 = seed[..., 0], seed[..., 1]
  out = []
  if prg == 'threefry2x64':
    c = counter.astype(jnp.uint64)
    for block in range((num_lanes + 1) // 2):
      out.extend(threefry2x64(k0, k1, c, jnp.uint64(block)))
    return out[:num_lanes]
  key0, key1 = _key32(k0, k1)
  for lane in range(num_lanes):
    a, b = threefry2x32(key0, key1, counter, jnp.uint32(lane))
    out.append((a.astype(jnp.uint64) << jnp.uint64(32)) | b.astype(jnp.uint64))
  return out


def words32(seed: jax.Array, counter: jax.Array, num_lanes: int,
            prg: str = 'threefry2x64') -> list[jax.Array]:
  """The low 32 bits of ``words64`` (for rings of at most 32 bits) as uint32."""
  check_prg(prg)
  if prg == 'threefry2x64':
    return [w.astype(jnp.uint32) for w in words64(seed, counter, num_lanes, prg)]
  key0, key1 = _key32(seed[..., 0], seed[..., 1])
  # words64 puts the block's second word in the low half.
  return [threefry2x32(key0, key1, counter, jnp.uint32(lane))[1]
          for lane in range(num_lanes)]


_WIDEN_TAG = 0x5345454431323862  # 'SEED128b': widens a 64-bit JAX key to two words.


def key_seed(key: jax.Array) -> jax.Array:
  """The 128-bit seed (uint64 ``[2]``, both words used) of a JAX PRNG key.

  A key with 128 or more bits of data (e.g. ``impl='rbg'``) is folded into two
  words by XOR. A default (threefry) JAX key holds only 64 bits: its two words are
  widened with Threefry-2x64 keyed by them, so both seed words depend on the key.
  The seed is then 128 bits wide but carries the key's 64 bits of entropy: in a
  reproducible simulation the dealer's randomness is a function of the config seed
  (docs/MPC.md §1a); the servers' coins use 128 bits of OS entropy each.
  """
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  words = jnp.asarray(key).reshape(-1).astype(jnp.uint64)
  if words.shape[0] % 2:
    words = jnp.concatenate([words, jnp.zeros((1,), jnp.uint64)])
  pairs = words[0::2] | (words[1::2] << jnp.uint64(32))
  if pairs.shape[0] == 1:
    w0, w1 = threefry2x64(pairs[0], jnp.uint64(_WIDEN_TAG), jnp.uint64(0), jnp.uint64(1))
    return jnp.stack([w0, w1])
  xor = lambda a: lax.reduce(a, jnp.uint64(0), lax.bitwise_xor, (0,))
  return jnp.stack([xor(pairs[0::2]), xor(pairs[1::2])])


def child_seed(seed: jax.Array, tag0, tag1=0) -> jax.Array:
  """Seed ``[..., 2]`` of a sub-stream: Threefry-2x64 keyed by ``seed`` at (tag0, tag1)."""
  w0, w1 = threefry2x64(seed[0], seed[1], jnp.asarray(tag0, jnp.uint64),
                        jnp.asarray(tag1, jnp.uint64))
  return jnp.stack([w0, w1], axis=-1)


def seed_table(seed: jax.Array, num_rows: int, num_cols: int) -> jax.Array:
  """Seeds ``[rows, cols, 2]`` uint64: seed[r, c] = child_seed(seed, r, c).

  Threefry is a pseudorandom function of (key, counter), so the table entries are
  independent seeds. Row r is a client's global index, so a client's seeds (and
  shares) do not depend on how the clients are chunked.
  """
  rows = lax.broadcasted_iota(jnp.uint64, (num_rows, num_cols), 0)
  cols = lax.broadcasted_iota(jnp.uint64, (num_rows, num_cols), 1)
  return child_seed(seed, rows, cols)
