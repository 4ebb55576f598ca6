"""Additive secret sharing over Z_2^bits with the server axis as a real array axis.

[x] = (x_0, ..., x_{S-1}) with Σ_i x_i = x mod 2^bits. Shares 0..S-2 are PRG
output (``jax.random.bits`` with dtype uint64, one key per server folded from
the sharing key, so each could be sent as a seed); the last share is
x - Σ others. Any S-1 shares are therefore uniform and independent of x: for
the subsets that omit the last share this is immediate, and for a subset that
omits share j < S-1 the last share is x minus a sum containing the uniform,
unseen x_j.

Semi-honest PrivatEyes uses ``bits = k``; SPDZ2k uses ``bits = k + s`` (see
``spdz2k``). All functions run inside ``jax.enable_x64(True)`` (see ``ring``).
Shapes: shares are ``[servers, ...]``; the leading axis is the ``server_axis``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from privateyes_jax.mpc import ring

SERVER_AXIS = 0


def check_num_servers(num_servers: int) -> None:
  """S ≥ 2: with one server there is nobody to hide the value from."""
  if not isinstance(num_servers, int) or num_servers < 2:
    raise ValueError(
        f'num_servers={num_servers!r}: additive secret sharing needs at least 2 '
        'servers (with 1 server it would see every individual update).')


def random_ring_elements(key: jax.Array, shape: tuple[int, ...],
                         bits: int) -> jax.Array:
  """Uniform elements of Z_2^bits as uint64."""
  ring.require_x64('sharing.random_ring_elements')
  return ring.mask_bits(jax.random.bits(key, shape, dtype=jnp.uint64), bits)


def share_from_randomness(random_shares: jax.Array, x_ring: jax.Array,
                          bits: int = 64) -> jax.Array:
  """Completes S-1 uniform shares with the last one, x - Σ others.

  Args:
    random_shares: uint64 ``[servers - 1, ...]`` uniform in Z_2^bits.
    x_ring: uint64 ``[...]``, entries in Z_2^bits.
    bits: ring bits.

  Returns:
    uint64 ``[servers, ...]`` with Σ over the server axis = x mod 2^bits.
  """
  ring.require_x64('sharing.share_from_randomness')
  x_ring = jnp.asarray(x_ring, jnp.uint64)
  last = ring.mask_bits(x_ring - jnp.sum(random_shares, axis=SERVER_AXIS,
                                         dtype=jnp.uint64), bits)
  return jnp.concatenate([random_shares, last[None]], axis=SERVER_AXIS)


def share(key: jax.Array, x_ring: jax.Array, num_servers: int,
          bits: int = 64) -> jax.Array:
  """Splits ring elements into additive shares.

  Share i < S-1 is PRG(seed_i) with seed_i = fold_in(key, i), so a client can
  send seed_i instead of the share (``costs``' seed compression).

  Args:
    key: PRG key of whoever shares (e.g. one client).
    x_ring: uint64 ``[...]``, entries in Z_2^bits.
    num_servers: S ≥ 2.
    bits: ring bits (k for semi-honest, k + s for SPDZ2k).

  Returns:
    uint64 ``[servers, ...]`` with Σ over the server axis = x mod 2^bits.
  """
  check_num_servers(num_servers)
  ring.require_x64('sharing.share')
  x_ring = jnp.asarray(x_ring, jnp.uint64)
  server_seeds = jax.vmap(lambda i: jax.random.fold_in(key, i))(
      jnp.arange(num_servers - 1))
  random_shares = jax.vmap(
      lambda seed: random_ring_elements(seed, x_ring.shape, bits))(server_seeds)
  return share_from_randomness(random_shares, x_ring, bits)


def reconstruct(shares: jax.Array, bits: int = 64) -> jax.Array:
  """Σ_i shares_i mod 2^bits: ``[servers, ...]`` -> ``[...]``."""
  ring.require_x64('sharing.reconstruct')
  return ring.mask_bits(jnp.sum(shares, axis=SERVER_AXIS, dtype=jnp.uint64), bits)


def sum_over_clients(shares: jax.Array, include: jax.Array,
                     bits: int = 64) -> jax.Array:
  """Each server adds its shares of the included clients' inputs (local).

  Args:
    shares: uint64 ``[servers, clients, ...]``.
    include: bool ``[clients]`` (public: who submitted) or ``[servers, clients]``
      (what each server actually added; differs only under an adversary).
    bits: ring bits.

  Returns:
    uint64 ``[servers, ...]``.
  """
  ring.require_x64('sharing.sum_over_clients')
  include = jnp.broadcast_to(include, shares.shape[:2])
  mask = include.reshape(include.shape + (1,) * (shares.ndim - 2))
  return ring.mask_bits(
      jnp.sum(jnp.where(mask, shares, jnp.uint64(0)), axis=1, dtype=jnp.uint64),
      bits)


def add(a: jax.Array, b: jax.Array, bits: int = 64) -> jax.Array:
  """[a] + [b]: each server adds its own shares (local, no communication)."""
  ring.require_x64('sharing.add')
  return ring.mask_bits(a + b, bits)


def add_public(shares: jax.Array, c: jax.Array, bits: int = 64) -> jax.Array:
  """[x] + c for a public c: only server 0 adds c, so the shares still sum right."""
  ring.require_x64('sharing.add_public')
  c = jnp.asarray(c, jnp.uint64)
  return ring.mask_bits(shares.at[0].add(c), bits)


def mul_public(shares: jax.Array, c: jax.Array, bits: int = 64) -> jax.Array:
  """c · [x] for a public c: every server multiplies its share."""
  ring.require_x64('sharing.mul_public')
  return ring.mask_bits(shares * jnp.asarray(c, jnp.uint64), bits)
