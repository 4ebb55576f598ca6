"""SPDZ2k authenticated shares, client input, opening and batched MAC check (reference).

The chunked round that training runs (``fused``, ``aggregator.apply``) uses these
definitions through its own fused programs; tests compare the two bit for bit.

Protocol: SPDZ2k (Cramer, Damgård, Escudero, Scholl, Xing, "SPDZ2k: Efficient MPC
mod 2^k for Dishonest Majority", CRYPTO 2018) as MP-SPDZ implements it
(``Protocols/Spdz2kShare.h``, ``Protocols/MAC_Check.hpp: MAC_Check_Z2k::Check``).
Every value x ∈ Z_2^k is held as an authenticated sharing [[x]]:

  value shares x_i ∈ Z_2^(k+s),  Σ_i x_i = x (mod 2^(k+s), up to garbage above bit k)
  MAC shares   m_i ∈ Z_2^(k+s),  Σ_i m_i = α·x mod 2^(k+s)
  MAC key      α = Σ_i α_i with α_i ∈ Z_2^s held by server i (nobody knows α).

Linear operations are local and keep the MAC invariant. Shapes are
``[servers, ...]`` (server axis first), for aggregation ``[servers, clients,
elements]``. Everything except the host-side commitments runs under
``jax.enable_x64(True)`` on uint64 arrays (see ``ring``).

The offline phase (preprocessing) is simulated by the functions marked DEALER: a
trusted dealer that knows α. In a deployment these come from SPDZ2k's OT-based
preprocessing, whose cost ``costs.estimate_offline_phase`` estimates.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from privateyes_jax.mpc import ring
from privateyes_jax.mpc import sharing



class AuthShares(NamedTuple):
  """An authenticated sharing [[x]] in Z_2^(k+s)."""
  value: jax.Array  # shape=[servers, ...], dtype=uint64; x_i, Σ_i x_i = x.
  mac: jax.Array  # shape=[servers, ...], dtype=uint64; m_i, Σ_i m_i = α·x.


# --------------------------------------------------------------------------
# DEALER: simulated offline phase (preprocessing). Labelled as such on purpose:
# a real deployment replaces every function in this block by SPDZ2k's
# preprocessing protocol between the servers; nothing else changes.
# --------------------------------------------------------------------------


def dealer_mac_key_shares(key: jax.Array, num_servers: int,
                          spec: ring.RingSpec) -> jax.Array:
  """DEALER: the servers' MAC key shares α_i ∈ Z_2^s.

  Args:
    key: dealer key.
    num_servers: S ≥ 2.
    spec: the ring.

  Returns:
    uint64 ``[servers]``; α = Σ_i α_i mod 2^(k+s) is never materialised outside
    the dealer.
  """
  sharing.check_num_servers(num_servers)
  return sharing.random_ring_elements(key, (num_servers,), spec.s)


def dealer_mac_key(mac_key_shares: jax.Array, spec: ring.RingSpec) -> jax.Array:
  """DEALER only: α = Σ_i α_i mod 2^(k+s) (no server ever computes this)."""
  return sharing.reconstruct(mac_key_shares, spec.ring_bits)


def _dealer_share_pair(pool: jax.Array, x_ring: jax.Array, alpha: jax.Array,
                       spec: ring.RingSpec) -> AuthShares:
  """Value and MAC sharings of x from 2(S-1) uniform pool rows."""
  num_random = pool.shape[0] // 2
  bits = spec.ring_bits
  return AuthShares(
      sharing.share_from_randomness(pool[:num_random], x_ring, bits),
      sharing.share_from_randomness(pool[num_random:],
                                    ring.mask_bits(alpha * x_ring, bits), bits))


def dealer_authenticate(key: jax.Array, x_ring: jax.Array,
                        mac_key_shares: jax.Array,
                        spec: ring.RingSpec) -> AuthShares:
  """DEALER: an authenticated sharing [[x]] of a value the dealer chose.

  Args:
    key: dealer key.
    x_ring: uint64 ``[...]`` in Z_2^(k+s).
    mac_key_shares: uint64 ``[servers]``.
    spec: the ring.

  Returns:
    ``AuthShares`` with ``[servers, ...]`` value and MAC shares.
  """
  num_servers = mac_key_shares.shape[0]
  x_ring = jnp.asarray(x_ring, jnp.uint64)
  # One PRG call for both sharings (the dealer needs no per-server seeds, and
  # every threefry call adds XLA compile time).
  pool = sharing.random_ring_elements(
      key, (2 * (num_servers - 1),) + x_ring.shape, spec.ring_bits)
  return _dealer_share_pair(pool, x_ring, dealer_mac_key(mac_key_shares, spec),
                            spec)


def _dealer_authenticated_random(key, mac_key_shares, shape, spec):
  num_servers = mac_key_shares.shape[0]
  pool = sharing.random_ring_elements(
      key, (2 * num_servers - 1,) + tuple(shape), spec.ring_bits)
  return _dealer_share_pair(pool[1:], pool[0], dealer_mac_key(mac_key_shares, spec),
                            spec)


def dealer_input_masks(key: jax.Array, mac_key_shares: jax.Array,
                       shape: tuple[int, ...], spec: ring.RingSpec) -> AuthShares:
  """DEALER: authenticated uniform masks [[r]], r ∈ Z_2^(k+s), for client input.

  Args:
    key: dealer key for this round.
    mac_key_shares: uint64 ``[servers]``.
    shape: e.g. ``(clients, elements)``: one mask per input element.
    spec: the ring.

  Returns:
    ``AuthShares`` ``[servers, *shape]``.
  """
  return _dealer_authenticated_random(key, mac_key_shares, shape, spec)


# --------------------------------------------------------------------------
# Local linear operations (no communication; keep Σ m_i = α·x).
# --------------------------------------------------------------------------


def add(a: AuthShares, b: AuthShares, spec: ring.RingSpec) -> AuthShares:
  """[[a]] + [[b]]."""
  bits = spec.ring_bits
  return AuthShares(sharing.add(a.value, b.value, bits),
                    sharing.add(a.mac, b.mac, bits))


def add_public(a: AuthShares, c: jax.Array, mac_key_shares: jax.Array,
               spec: ring.RingSpec) -> AuthShares:
  """[[a]] + c for public c: server 0 adds c to its value, every server adds α_i·c.

  Args:
    a: ``[servers, ...]``.
    c: uint64 ``[...]`` (broadcastable to one server's share).
    mac_key_shares: uint64 ``[servers]``.
    spec: the ring.
  """
  bits = spec.ring_bits
  c = jnp.asarray(c, jnp.uint64)
  alpha = mac_key_shares.reshape((-1,) + (1,) * (a.mac.ndim - 1))
  return AuthShares(sharing.add_public(a.value, c, bits),
                    ring.mask_bits(a.mac + alpha * c, bits))


def mul_public(a: AuthShares, c: jax.Array, spec: ring.RingSpec) -> AuthShares:
  """c · [[a]] for public c."""
  bits = spec.ring_bits
  return AuthShares(sharing.mul_public(a.value, c, bits),
                    sharing.mul_public(a.mac, c, bits))


# --------------------------------------------------------------------------
# Client input (masked-input protocol, SPDZ2k Π_Input with an external client).
# --------------------------------------------------------------------------


def mask_mod_2k(mask_value_shares: jax.Array, spec: ring.RingSpec) -> jax.Array:
  """DEALER (and tests): r mod 2^k from the value shares of [[r]].

  This is what the dealer delivers to the client before it inputs (a deployment
  sends the 16-byte seed of r instead, which the client expands; docs/MPC.md §3
  step 2). No server sends the client anything: a server's share is not
  authenticated towards the client, so a malicious server could shift an honest
  client's input through it without breaking any MAC (docs/DECISIONS.md, "Masks
  reach the client from the dealer"). The servers only need ε mod 2^k (the
  protocol is correct modulo 2^k), so r mod 2^k is all the client needs; the rest
  of r, α and the MACs stay away from it.

  Args:
    mask_value_shares: uint64 ``[servers, ...]`` value shares of [[r]].
    spec: the ring.

  Returns:
    uint64 ``[...]``: r mod 2^k.
  """
  return sharing.reconstruct(ring.mask_bits(mask_value_shares, spec.k), spec.k)


def client_masked_input(x_ring: jax.Array, r_client: jax.Array,
                        spec: ring.RingSpec) -> jax.Array:
  """Client side: ε = x - r mod 2^k, broadcast to every server.

  ε is uniform in Z_2^k because r is, so the servers learn nothing from it.
  """
  ring.require_x64('spdz2k.client_masked_input')
  return ring.mask_bits(jnp.asarray(x_ring, jnp.uint64) - r_client, spec.k)


def input_from_masked(mask: AuthShares, epsilon: jax.Array,
                      mac_key_shares: jax.Array, spec: ring.RingSpec) -> AuthShares:
  """Server side: [[x]] = [[r]] + ε (server 0 adds ε; MACs gain α_i·ε).

  Args:
    mask: [[r]] ``[servers, clients, elements]``.
    epsilon: uint64 ``[clients, elements]``, the clients' broadcasts.
    mac_key_shares: uint64 ``[servers]``.
    spec: the ring.

  Returns:
    [[x]] with x ≡ individual input mod 2^k.
  """
  return add_public(mask, epsilon, mac_key_shares, spec)


# --------------------------------------------------------------------------
# Aggregation and opening.
# --------------------------------------------------------------------------


def sum_over_clients(shares: AuthShares, include: jax.Array,
                     spec: ring.RingSpec) -> AuthShares:
  """Each server adds its shares of the submitted clients' inputs (local).

  Args:
    shares: ``[servers, clients, ...]``.
    include: bool ``[clients]`` (public: who sent an input this round) or
      ``[servers, clients]`` (what each server added; differs under an adversary).
    spec: the ring.

  Returns:
    ``[servers, ...]`` shares of Σ_{c included} x_c.
  """
  bits = spec.ring_bits
  return AuthShares(sharing.sum_over_clients(shares.value, include, bits),
                    sharing.sum_over_clients(shares.mac, include, bits))


def open_value(value_shares: jax.Array, spec: ring.RingSpec) -> jax.Array:
  """Every server broadcasts its value share; all add them up (full k+s bits)."""
  return sharing.reconstruct(value_shares, spec.ring_bits)


# --------------------------------------------------------------------------
# Batched MAC check (SPDZ2k Π_MACCheck; MP-SPDZ MAC_Check_Z2k::Check).
# --------------------------------------------------------------------------


def coin_toss_contributions(key: jax.Array, num_servers: int) -> jax.Array:
  """Reference (tests only): seeds for a joint coin, uint64 ``[servers]``.

  The aggregator's coin toss is ``coin.toss``: each server's own OS entropy,
  committed and revealed after the opening; never a function of a JAX key.
  """
  return sharing.random_ring_elements(key, (num_servers,), 64)


def joint_coin_key(contributions: jax.Array) -> jax.Array:
  """Simulated joint coin toss: the key of the public check coefficients.

  In the protocol each server commits to its random seed after the opened
  values are fixed, then all reveal and the joint seed is the XOR (MP-SPDZ
  ``Create_Random_Seed``); one honest server makes it uniform (``coin.toss``).

  Args:
    contributions: uint64 ``[servers]``.
  """
  seed = jax.lax.reduce(contributions, jnp.uint64(0), jax.lax.bitwise_xor, (0,))
  return jax.random.key(seed)


def check_coefficients(key: jax.Array, shape: tuple[int, ...],
                       spec: ring.RingSpec) -> jax.Array:
  """Public random χ_j ∈ Z_2^s, one per opened element."""
  return sharing.random_ring_elements(key, shape, spec.s)


def mac_check_values(mac_shares: jax.Array, opened: jax.Array, chi: jax.Array,
                     mac_key_shares: jax.Array, spec: ring.RingSpec) -> jax.Array:
  """Each server's check value z_i = Σ_j χ_j m_ij − α_i Σ_j χ_j y'_j (mod 2^(k+s)).

  This is MP-SPDZ's ``MAC_Check_Z2k::Check`` for SPDZ2k shares, whose opened
  type is the full Z_2^(k+s) (``Spdz2kShare::open_type = Z2<K+S>``): there the
  extra [[r]] term of the check (which masks the share bits *above* the opened
  part) is identically zero when the full k+s bits are opened; the top s bits of
  an opened sum of input masks [[r_c]] + ε_c are uniform because r_c spans all k+s
  bits (docs/MPC.md §3, step 7). Honest servers give Σ_i z_i =
  α·Σχ_j y'_j − α·Σχ_j y'_j = 0. An additive error δ_j on an opened value
  (or an error on a MAC share) survives only if Σ_j χ_j (α δ_j − Δm_j) ≡ 0
  mod 2^(k+s), probability ≈ 2^-s·(s+1) for δ_j ≢ 0 mod 2^k.

  Args:
    mac_shares: uint64 ``[servers, elements]`` MAC shares of the opened [[y']].
    opened: uint64 ``[elements]``, the opened y'.
    chi: uint64 ``[elements]``, public coefficients in Z_2^s.
    mac_key_shares: uint64 ``[servers]``.
    spec: the ring.

  Returns:
    uint64 ``[servers]``: z_i (committed, then revealed).
  """
  bits = spec.ring_bits
  y = ring.mask_bits(jnp.sum(chi * opened, dtype=jnp.uint64), bits)
  m = ring.mask_bits(jnp.sum(chi[None, :] * mac_shares, axis=1, dtype=jnp.uint64),
                     bits)
  return ring.mask_bits(m - mac_key_shares * y, bits)


def commitment_nonces(key: jax.Array, num_servers: int) -> jax.Array:
  """Each server's commitment randomness: uint64 ``[servers, 2]`` (128 bits)."""
  return sharing.random_ring_elements(key, (num_servers, 2), 64)


def _z_bytes(z: int) -> bytes:
  return int(z).to_bytes(8, 'little')


def _nonce_bytes(nonce: np.ndarray) -> bytes:
  return np.asarray(nonce, np.uint64).astype('<u8').tobytes()


def commit(z: int, nonce: np.ndarray) -> bytes:
  """Hash commitment SHA-256(z ‖ nonce) to a check value (host side)."""
  return hashlib.sha256(_z_bytes(z) + _nonce_bytes(nonce)).digest()


def commit_check_values(z: np.ndarray, nonces: np.ndarray) -> list[bytes]:
  """Every server commits to its z_i: S digests of 32 bytes."""
  return [commit(int(zi), nonces[i]) for i, zi in enumerate(np.asarray(z))]


class MacCheckResult(NamedTuple):
  ok: bool  # True iff every reveal opens its commitment and Σ z_i = 0.
  failed_check: str  # '' | 'commitment' | 'mac'.
  failure: str  # Human-readable reason, empty when ok.
  z_sum: int  # Σ_i z_i mod 2^(k+s) of the revealed values.


def verify_check_values(commitments: Sequence[bytes], revealed_z: np.ndarray,
                        revealed_nonces: np.ndarray,
                        spec: ring.RingSpec) -> MacCheckResult:
  """Checks every reveal against its commitment, then Σ_i z_i = 0 mod 2^(k+s).

  Args:
    commitments: the S digests broadcast before any reveal.
    revealed_z: uint64 ``[servers]`` as revealed.
    revealed_nonces: uint64 ``[servers, 2]`` as revealed.
    spec: the ring.

  Returns:
    ``MacCheckResult``; a commitment mismatch names the server (it is
    identifiable), a MAC failure cannot name one.
  """
  revealed_z = np.asarray(revealed_z, np.uint64)
  bad = [i for i, c in enumerate(commitments)
         if commit(int(revealed_z[i]), revealed_nonces[i]) != c]
  total = sum(int(z) for z in revealed_z) % (1 << spec.ring_bits)
  if bad:
    return MacCheckResult(
        False, 'commitment',
        f'commitment mismatch: server(s) {bad} revealed a check value that does '
        'not open the commitment they broadcast; round aborted.', total)
  if total != 0:
    return MacCheckResult(
        False, 'mac',
        f'MAC check failed: sum of check values is {total} != 0 mod '
        f'2^{spec.ring_bits}; an opened value or a MAC share was altered by some '
        'server; round aborted.', total)
  return MacCheckResult(True, '', '', total)
