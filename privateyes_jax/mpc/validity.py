"""Norm-bound validity check inside the MPC (issue #15; docs/VALIDITY_DESIGN.md).

The servers check, without reconstructing it, that every client's input x_c (the
encoded scaled update w̃_c·Δ_c, P integers, and its weight w_c) satisfies

  Σ_j x_cj² ≤ B = ⌈(C·2^f + √P/2)²⌉ over the integers, and 0 ≤ w_c ≤ 2^f,

and exclude, by name, every client that fails. What is revealed: one bit per client.

How (VALIDITY_DESIGN §3), in the check ring Z_2^128 (`ring128`; values correct mod
2^96, MAC key bits s = 32, the same α as the aggregation ring):

* DEALER, per client and attempt: authenticated uniform masks [[r_j]] (the input
  masks of this client, 128 bits), [[R]] = [[Σ_j r_j²]], authenticated *exact* random
  bits [[ρ_jl]] (ℓ per element, ℓ_w for the weight and for 2^f − w, L for the slack)
  and τ + 2 zero-test masks. The client receives r mod 2^96 and the bits ρ from the
  dealer (as a seed), never from a server.
* Client: ε_j = x_j − r_j mod 2^96 (its masked input, as in the aggregation), the
  XOR-masked bits c_jl = bit_l(x_j + 2^(ℓ−1)) ⊕ ρ_jl, the weight's bits and those of
  2^f − w, and the bits of the slack σ = B − Σ x_j² (an honest client checks σ ≥ 0).
* Servers, locally: [[x̃_j]] = [[r_j]] + ε_j; the bit-derived [[x̂_j]] = Σ_l 2^l [[c ⊕ ρ]]
  − 2^(ℓ−1), exact in [−2^(ℓ−1), 2^(ℓ−1)); [[T]] = [[R]] + 2Σ ε_j [[r_j]] + Σ ε_j²
  (= Σ x̃_j², the input mask is the square's mask); [[σ]] from the slack bits.
* After a coin γ (drawn once every input is fixed), they open the zero tests
    D_t = Σ_j γ_tj (x̃_j − x̂_j) + 2^96 [[t_t]]  (t < τ; pass iff ≡ 0 mod 2^96),
    D_T = T + σ − B + 2^64 [[t_T]],             (pass iff ≡ 0 mod 2^64),
    D_w = ŵ + ŵ' − 2^f + 2^64 [[t_w]]           (pass iff ≡ 0 mod 2^64),
  and run a batched MAC check (own coin χ, commit, reveal) on every opened D in
  Z_2^128. A failed MAC check aborts the round: a malicious server that tampers with
  any value of the check makes the round fail loudly, never an honest client.
* The aggregation uses [[x̃_j]] mod 2^64, i.e. exactly what was checked: the
  included clients' shares are summed and the round goes on as without the check
  (OPEN → COIN → MAC CHECK → OUTPUT).

Soundness (VALIDITY_DESIGN §4): a client passes the τ consistency tests with x̃ ≢ x̂
mod 2^64 with probability ≤ 2^(−32τ); given consistency, D_T ≡ 0 mod 2^64 forces
T + σ = B over the integers, so T ≤ B. The element bits also bound every element, so
Σ x² cannot wrap (the attacks of VALIDITY_DESIGN §1).

Layout: clients one at a time, elements in blocks of ``element_chunk`` (every value
derives from the dealer's per-client key and the block index, so pass 1, the
clients' messages, and pass 2, the servers' computation, regenerate the same masks).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from privateyes_jax.mpc import coin as coin_lib
from privateyes_jax.mpc import prg as prg_lib
from privateyes_jax.mpc import ring
from privateyes_jax.mpc import ring128 as r128

CHECK_VALUE_BITS = 96  # k_c: opened check values are correct modulo 2^96.
EXACT_BITS = 64  # The consistency test decides agreement modulo 2^64.
S_BITS = 32
_SCALARS = 1 << 30  # The dealer's per-client scalar material: block index past any real one.


class NotValid(ValueError):
  """An honest client's own check refused its input (a bug or a bad clip)."""


@dataclasses.dataclass(frozen=True)
class ValiditySettings:
  """``aggregator.validity``: the servers check ‖w̃Δ‖ ≤ clip_norm inside the MPC.

  Attributes:
    clip_norm: C, on the scaled update w̃_c·Δ_c (honest clients clip to it).
    tau: consistency repetitions; soundness 2^(−32·tau) per client and round.
    slack_bits: L, bits of the slack B − T (B < 2^L).
    element_chunk: elements per server program (memory, not results).
  """
  clip_norm: float
  tau: int = 2
  slack_bits: int = 63
  element_chunk: int = 1 << 14

  def __post_init__(self):
    if not (np.isfinite(self.clip_norm) and self.clip_norm > 0):
      raise ValueError(f'aggregator.validity.clip_norm={self.clip_norm} must be a positive '
                       'finite norm bound.')
    if not isinstance(self.tau, int) or self.tau < 1:
      raise ValueError(f'aggregator.validity.tau={self.tau!r} must be an int >= 1.')
    if not 1 <= self.slack_bits <= 63:
      raise ValueError(f'aggregator.validity.slack_bits={self.slack_bits} must be in [1, 63].')
    if not isinstance(self.element_chunk, int) or self.element_chunk < 1:
      raise ValueError(f'aggregator.validity.element_chunk={self.element_chunk!r} must be an '
                       'int >= 1.')

  @classmethod
  def from_config(cls, cfg: Any) -> 'ValiditySettings | None':
    """``config.aggregator.validity`` (dict or ConfigDict) → settings, or None when off."""
    if cfg is None:
      return None
    get = (lambda k, d: cfg.get(k, d)) if hasattr(cfg, 'get') else (
        lambda k, d: getattr(cfg, k, d))
    if not get('enabled', False):
      return None
    return cls(clip_norm=float(get('clip_norm', 0.0)), tau=int(get('tau', 2)),
               slack_bits=int(get('slack_bits', 63)),
               element_chunk=int(get('element_chunk', 1 << 14)))

  def params(self, num_params: int, spec: ring.RingSpec) -> 'CheckParams':
    return CheckParams.build(num_params, spec, self)


class CheckParams(NamedTuple):
  """The public parameters of one check (hashable: static for jit)."""
  num_params: int  # P
  f: int
  bound: int  # B
  ell: int  # bits per element
  ell_w: int  # bits of the weight and of 2^f − w
  tau: int
  slack_bits: int
  block: int  # elements per block
  num_blocks: int

  @classmethod
  def build(cls, num_params, spec, settings):
    if spec.ring_bits != 64 or spec.s != S_BITS:
      raise ValueError(f'the validity check needs the 64-bit share ring with s={S_BITS} '
                       f'(got k={spec.k}, s={spec.s}).')
    c_int = settings.clip_norm * 2.0**spec.f
    bound = math.ceil((c_int + math.sqrt(num_params) / 2.0)**2)
    ell = math.ceil(math.log2(math.isqrt(bound) + 2)) + 1
    if ell > spec.k - 1:
      raise ValueError(f'aggregator.validity.clip_norm={settings.clip_norm}: elements of '
                       f'{ell} bits do not fit the value ring (k={spec.k}); lower it or f.')
    if num_params * 4**(ell - 1) >= 2**63 or bound >= 2**settings.slack_bits:
      raise ValueError(f'aggregator.validity: P·4^(ℓ−1) = {num_params}·4^{ell - 1} or '
                       f'B = {bound} does not fit 63 bits (VALIDITY_DESIGN §9, C2).')
    block = min(settings.element_chunk, num_params)
    return cls(num_params, spec.f, bound, ell, spec.f + 1, settings.tau,
               settings.slack_bits, block, -(-num_params // block))

  def check_clients(self, num_clients: int, k: int) -> None:
    """(C1): the included clients' range-proven elements sum without wrapping mod 2^k."""
    if num_clients * 2**(self.ell - 1) >= 2**(k - 1):
      raise ValueError(f'aggregator.validity: {num_clients} clients x 2^{self.ell - 1} '
                       f'may wrap the value ring (k={k}); lower clip_norm or f.')


class Auth(NamedTuple):
  """Authenticated shares in Z_2^128, server axis first: value, MAC ``[S, ..., 4]``."""
  value: jax.Array
  mac: jax.Array


def _auth_add(a: Auth, b: Auth) -> Auth:
  return Auth(r128.add(a.value, b.value), r128.add(a.mac, b.mac))


def _auth_sub(a: Auth, b: Auth) -> Auth:
  return Auth(r128.sub(a.value, b.value), r128.sub(a.mac, b.mac))


def _auth_mul(a: Auth, c) -> Auth:
  """[[a]]·c for public limbs c (broadcast against a's data axes)."""
  return Auth(r128.mul(a.value, c[None]), r128.mul(a.mac, c[None]))


def _auth_sum(a: Auth, axis: int) -> Auth:
  """Σ over a data axis (counted without the server axis)."""
  return Auth(r128.sum_axis(a.value, axis + 1), r128.sum_axis(a.mac, axis + 1))


def _add_public(a: Auth, c, alpha_shares) -> Auth:
  """[[a]] + c: server 0 adds c to its value share, server i adds α_i·c to its MAC."""
  c = jnp.broadcast_to(c, a.value.shape[1:])
  first = (jnp.arange(a.value.shape[0]) == 0).reshape((-1,) + (1,) * (a.value.ndim - 1))
  value = r128.add(a.value, jnp.where(first, c[None], jnp.uint64(0)))
  alpha = alpha_shares.reshape((-1,) + (1,) * (a.mac.ndim - 2) + (r128.LIMBS,))
  return Auth(value, r128.add(a.mac, r128.mul_small(c[None], alpha[..., 0])))


def _share(key, x, num_servers):
  """Additive shares of x: S−1 uniform, the last the difference."""
  parts = r128.random(key, (num_servers - 1,) + x.shape[:-1])
  last = r128.sub(x, r128.sum_axis(parts, 0))
  return jnp.concatenate([parts, last[None]], axis=0)


def _authenticate(key, x, alpha, num_servers) -> Auth:
  """DEALER: [[x]] under the integer key α (limbs)."""
  k_value, k_mac = jax.random.split(key)
  return Auth(_share(k_value, x, num_servers), _share(k_mac, r128.mul(x, alpha), num_servers))


def _authenticate_bits(key, bits, alpha, num_servers) -> Auth:
  """DEALER: [[ρ]] for exact bits ρ (uint8): α·ρ is α or 0, no product."""
  k_value, k_mac = jax.random.split(key)
  x = r128.from_uint64(bits.astype(jnp.uint64))
  mac = jnp.where(bits[..., None] == 1, jnp.broadcast_to(alpha, x.shape), jnp.uint64(0))
  return Auth(_share(k_value, x, num_servers), _share(k_mac, mac, num_servers))


def _bits_of(values, width):
  """uint8 ``[..., width]``: the low ``width`` bits of non-negative int64 values."""
  shifts = jnp.arange(width, dtype=jnp.int64)
  return ((values[..., None] >> shifts) & 1).astype(jnp.uint8)


def _from_bits(c, rho: Auth, alpha_shares, offset) -> Auth:
  """[[Σ_l 2^l (c_l ⊕ ρ_l) − offset]] for public bits c ``[n, w]`` and bits [[ρ]].

  c ⊕ ρ = c + (1 − 2c)·ρ for bits, so the sum is Σ_l 2^l c_l (public) plus, per share,
  A − 2·A_c with A = Σ_l 2^l ρ_l and A_c = Σ_{l: c_l = 1} 2^l ρ_l: shifts and one
  normalisation per sum, no products.
  """
  width = c.shape[-1]

  def signed_sum(shares):  # [S, n, w, 4] → [S, n, 4]
    shifted = [r128.shift_left(shares[..., l, :], l) for l in range(width)]
    total = r128.normalize(sum(shifted[1:], shifted[0]))
    chosen = r128.normalize(sum((jnp.where(c[None, :, l, None] == 1, x, jnp.uint64(0))
                                 for l, x in enumerate(shifted)), jnp.zeros_like(total)))
    return r128.sub(total, r128.add(chosen, chosen))

  value = Auth(signed_sum(rho.value), signed_sum(rho.mac))
  powers = jnp.left_shift(jnp.int64(1), jnp.arange(width, dtype=jnp.int64))
  public = jnp.sum(c.astype(jnp.int64) * powers, axis=-1) - offset
  return _add_public(value, r128.from_int64(public), alpha_shares)


# ---------------------------------------------------------------------------
# DEALER material (simulated offline phase), regenerated from the client's key.
# ---------------------------------------------------------------------------


class _Block(NamedTuple):
  r: jax.Array  # [B, 4] the masks (the client receives r mod 2^96)
  rho: jax.Array  # [B, ℓ] uint8 exact bits (the client receives them)


def _block_secrets(key_c, b, p: CheckParams) -> _Block:
  k = jax.random.fold_in(key_c, b)
  k_r, k_rho = jax.random.split(jax.random.fold_in(k, 0))
  rho = jax.random.bernoulli(k_rho, 0.5, (p.block, p.ell)).astype(jnp.uint8)
  return _Block(r128.random(k_r, (p.block,)), rho)


def _block_shares(key_c, b, secrets: _Block, real, alpha, num_servers):
  """DEALER: [[r]], [[ρ]] and [[Σ_{j real} r_j²]] of one block."""
  k = jax.random.fold_in(jax.random.fold_in(key_c, b), 1)
  k_r, k_rho, k_sq = jax.random.split(k, 3)
  sq = r128.sum_axis(jnp.where(real[:, None], r128.mul(secrets.r, secrets.r), 0), 0)
  return (_authenticate(k_r, secrets.r, alpha, num_servers),
          _authenticate_bits(k_rho, secrets.rho, alpha, num_servers),
          _authenticate(k_sq, sq, alpha, num_servers))


class _Scalars(NamedTuple):
  r_w: jax.Array  # [1, 4] the weight element's mask
  rho_w: jax.Array  # [1, ℓ_w] bits of w
  rho_cw: jax.Array  # [1, ℓ_w] bits of 2^f − w
  rho_s: jax.Array  # [1, L] bits of the slack


def _scalar_secrets(key_c, p: CheckParams) -> _Scalars:
  k = jax.random.fold_in(jax.random.fold_in(key_c, _SCALARS), 0)
  k_r, k_w, k_cw, k_s = jax.random.split(k, 4)
  bern = lambda key, n: jax.random.bernoulli(key, 0.5, (1, n)).astype(jnp.uint8)
  return _Scalars(r128.random(k_r, (1,)), bern(k_w, p.ell_w), bern(k_cw, p.ell_w),
                  bern(k_s, p.slack_bits))


def _scalar_shares(key_c, secrets: _Scalars, alpha, num_servers, num_tests):
  k = jax.random.fold_in(jax.random.fold_in(key_c, _SCALARS), 1)
  keys = jax.random.split(k, 6)
  bits = lambda key, x: _authenticate_bits(key, x, alpha, num_servers)
  auth = lambda key, x: _authenticate(key, x, alpha, num_servers)
  masks = r128.random(keys[5], (num_tests,))
  return (auth(keys[0], secrets.r_w), bits(keys[1], secrets.rho_w),
          bits(keys[2], secrets.rho_cw), bits(keys[3], secrets.rho_s),
          auth(keys[4], masks))


# ---------------------------------------------------------------------------
# Clients (pass 1): the messages, fixed before any coin exists.
# ---------------------------------------------------------------------------


class ClientInput(NamedTuple):
  """What a client claims, before masking (int64; a malicious client picks any).

  x_arith ``[P]`` and w_arith: its arithmetic input (taken mod 2^96);
  x_bits ``[P]`` in [−2^(ℓ−1), 2^(ℓ−1)); w_bits, cw_bits in [0, 2^ℓ_w); slack in
  [0, 2^L): all the bit encoding can express (``client_input`` refuses others).
  """
  x_arith: np.ndarray
  w_arith: int
  x_bits: np.ndarray
  w_bits: int
  cw_bits: int
  slack: int


class ClientMessage(NamedTuple):
  epsilon: jax.Array  # [blocks·B, 4] uint64 limbs, x̃ − r mod 2^96
  bits: jax.Array  # [blocks·B, ℓ] uint8
  eps_w: jax.Array  # [1, 4]
  bits_w: jax.Array  # [1, ℓ_w]
  bits_cw: jax.Array  # [1, ℓ_w]
  bits_s: jax.Array  # [1, L]


def honest_input(x: np.ndarray, w: int, p: CheckParams) -> ClientInput:
  """An honest client's claim for its encoded input x (int64 ``[P]``), weight w.

  Raises NotValid if x is above the bound (the client's own check; never happens
  after `encode_claims` clipped it, VALIDITY_DESIGN §5).
  """
  x = np.asarray(x, np.int64)
  half = 1 << (p.ell - 1)
  # Elements below 2^(ℓ−1) keep Σx² below P·4^(ℓ−1) < 2^63 (CheckParams, C2): exact in
  # int64, no Python integers per element.
  inside = bool(np.all(np.abs(x) < half))
  t = int(np.sum(x * x)) if inside else p.bound + 1
  if not inside or t > p.bound or not 0 <= w <= (1 << p.f):
    raise NotValid(f'client input above the bound: an element of 2^{p.ell - 1} or more, '
                   f'Σx² > B = {p.bound}, or weight {w} outside [0, 2^{p.f}].')
  return ClientInput(x, int(w), x, int(w), (1 << p.f) - int(w), p.bound - t)


def best_effort_input(x: np.ndarray, w: int, p: CheckParams) -> ClientInput:
  """A malicious client's message for an update it did not clip: its true values
  in the arithmetic input, the nearest expressible values in the bits, and the slack
  its sum would need (mod 2^L). Whatever it claims, the check rejects a too-long x."""
  x = np.asarray(x, np.int64)
  half = 1 << (p.ell - 1)
  t = int(np.sum(x.astype(object) ** 2)) if x.size else 0
  return ClientInput(x, int(w), np.clip(x, -half, half - 1), int(w),
                     (1 << p.f) - int(w), (p.bound - t) % (1 << p.slack_bits))


@functools.partial(jax.jit, static_argnames=('p',))
def _client_block(key_c, b, x_arith, x_bits, p: CheckParams):
  s = _block_secrets(key_c, b, p)
  eps = r128.mod_bits(r128.sub(r128.from_int64(x_arith), s.r), CHECK_VALUE_BITS)
  bits = _bits_of(x_bits + (1 << (p.ell - 1)), p.ell) ^ s.rho
  return eps, bits


@functools.partial(jax.jit, static_argnames=('p',))
def _client_scalars(key_c, w_arith, w_bits, cw_bits, slack, p: CheckParams):
  s = _scalar_secrets(key_c, p)
  eps_w = r128.mod_bits(r128.sub(r128.from_int64(w_arith[None]), s.r_w), CHECK_VALUE_BITS)
  return (eps_w, _bits_of(w_bits[None], p.ell_w) ^ s.rho_w,
          _bits_of(cw_bits[None], p.ell_w) ^ s.rho_cw,
          _bits_of(slack[None], p.slack_bits) ^ s.rho_s)


def client_message(key_c, claim: ClientInput, p: CheckParams) -> ClientMessage:
  """Client side: masks its claim with what the dealer sent it (r mod 2^96, ρ)."""
  half = 1 << (p.ell - 1)
  x_bits = np.asarray(claim.x_bits, np.int64)
  if x_bits.shape != (p.num_params,) or np.asarray(claim.x_arith).shape != (p.num_params,):
    raise ValueError(f'client input of shape {x_bits.shape}, expected ({p.num_params},).')
  if np.any(x_bits < -half) or np.any(x_bits >= half):
    raise ValueError(f'x_bits outside [−2^{p.ell - 1}, 2^{p.ell - 1}): the bit input cannot '
                     'express it.')
  for name, v, width in (('w_bits', claim.w_bits, p.ell_w), ('cw_bits', claim.cw_bits, p.ell_w),
                         ('slack', claim.slack, p.slack_bits)):
    if not 0 <= int(v) < (1 << width):
      raise ValueError(f'{name}={v} does not fit {width} bits.')
  pad = p.num_blocks * p.block - p.num_params
  x_arith = np.pad(np.asarray(claim.x_arith, np.int64), (0, pad))
  x_bits = np.pad(x_bits, (0, pad))
  eps, bits = [], []
  for b in range(p.num_blocks):
    sl = slice(b * p.block, (b + 1) * p.block)
    e, c = _client_block(key_c, jnp.int32(b), jnp.asarray(x_arith[sl]),
                         jnp.asarray(x_bits[sl]), p)
    eps.append(e)
    bits.append(c)
  scalars = _client_scalars(key_c, jnp.int64(claim.w_arith), jnp.int64(claim.w_bits),
                            jnp.int64(claim.cw_bits), jnp.int64(claim.slack), p)
  return ClientMessage(jnp.concatenate(eps), jnp.concatenate(bits), *scalars)


# ---------------------------------------------------------------------------
# Servers (pass 2): local computation, zero tests, aggregation shares.
# ---------------------------------------------------------------------------


class Tamper(NamedTuple):
  """A malicious server's deviation on the check's values (traced)."""
  where: jax.Array  # int32: 0 none, 1 its share of an opened zero test, 2 of a bit ρ
  server: jax.Array  # int32
  index: jax.Array  # int32: zero-test index (1) or element (2), within the client
  delta: jax.Array  # uint64 [4] limbs added to its value share

  @classmethod
  def none(cls):
    return cls(jnp.int32(0), jnp.int32(0), jnp.int32(0), jnp.zeros((4,), jnp.uint64))


@functools.partial(jax.jit, static_argnames=('p', 'num_servers'))
def _server_block(key_c, b, eps, bits, gamma, alpha_shares, alpha, tamper: Tamper, *,
                  p: CheckParams, num_servers: int):
  """One block of one client: aggregation shares, Σγ(x̃ − x̂) and the T terms."""
  secrets = _block_secrets(key_c, b, p)
  index = b * p.block + jnp.arange(p.block)
  real = index < p.num_params
  r_auth, rho_auth, sq_auth = _block_shares(key_c, b, secrets, real, alpha, num_servers)
  # A malicious server adds delta to its value share of bit 0 of one element.
  hit = ((tamper.where == 2) & (jnp.arange(num_servers)[:, None, None] == tamper.server)
         & (index[None, :, None] == tamper.index) & (jnp.arange(p.ell) == 0)[None, None, :])
  rho_auth = rho_auth._replace(value=jnp.where(
      hit[..., None], r128.add(rho_auth.value, tamper.delta), rho_auth.value))
  x_tilde = _add_public(r_auth, eps, alpha_shares)
  x_hat = _from_bits(bits, rho_auth, alpha_shares, 1 << (p.ell - 1))
  diff = _auth_sub(x_tilde, x_hat)
  keep = real[None, :, None]
  diff = Auth(jnp.where(keep, diff.value, 0), jnp.where(keep, diff.mac, 0))
  d_parts = Auth(*(jnp.stack([r128.sum_axis(r128.mul_small(a, gamma[t][None]), 1)
                              for t in range(p.tau)], axis=1) for a in diff))
  # T = R + 2 Σ ε_j r_j + Σ ε_j² (this block's terms).
  eps_real = jnp.where(real[:, None], eps, 0)
  t_auth = _auth_add(sq_auth, _auth_sum(_auth_mul(r_auth, r128.mul(eps_real, r128.constant(2))),
                                        0))
  t_public = r128.sum_axis(r128.mul(eps_real, eps_real), 0)
  agg_value = jnp.where(real[None], r128.low64(x_tilde.value), 0)
  agg_mac = jnp.where(real[None], r128.low64(x_tilde.mac), 0)
  return agg_value, agg_mac, d_parts, t_auth, t_public


@functools.partial(jax.jit, static_argnames=('p', 'num_servers'))
def _server_scalars(key_c, msg_scalars, gamma_w, d_parts, t_auth, t_public, alpha_shares,
                    alpha, tamper: Tamper, *, p: CheckParams, num_servers: int):
  """The weight element and the zero tests of one client (shares ``[S, τ+2, 4]``)."""
  eps_w, bits_w, bits_cw, bits_s = msg_scalars
  secrets = _scalar_secrets(key_c, p)
  r_w, rho_w, rho_cw, rho_s, masks = _scalar_shares(key_c, secrets, alpha, num_servers,
                                                    p.tau + 2)
  a = alpha_shares
  w_tilde = _add_public(r_w, eps_w, a)  # [S, 1, 4]
  w_hat = _from_bits(bits_w, rho_w, a, 0)
  cw_hat = _from_bits(bits_cw, rho_cw, a, 0)
  sigma = _from_bits(bits_s, rho_s, a, 0)
  diff_w = _auth_sub(w_tilde, w_hat)
  g_w = r128.from_uint64(gamma_w)  # [τ, 4]
  d_cons = _auth_add(d_parts, Auth(r128.mul(diff_w.value, g_w[None]),
                                   r128.mul(diff_w.mac, g_w[None])))  # [S, τ, 4]
  t_total = _add_public(t_auth, t_public, a)  # [S, 4]
  d_norm = _add_public(_auth_add(t_total, Auth(sigma.value[:, 0], sigma.mac[:, 0])),
                       r128.constant(-p.bound), a)
  d_weight = _add_public(_auth_add(w_hat, cw_hat), r128.constant(-(1 << p.f)), a)
  d_weight = Auth(d_weight.value[:, 0], d_weight.mac[:, 0])
  tests = Auth(*(jnp.concatenate([c, n[:, None], w[:, None]], axis=1)
                 for c, n, w in zip(d_cons, d_norm, d_weight)))
  shifts = r128.from_ints([1 << CHECK_VALUE_BITS] * p.tau + [1 << EXACT_BITS] * 2)
  tests = _auth_add(tests, _auth_mul(masks, shifts))
  hit = ((tamper.where == 1) & (jnp.arange(num_servers)[:, None] == tamper.server)
         & (jnp.arange(p.tau + 2)[None, :] == tamper.index))
  tests = tests._replace(value=jnp.where(hit[..., None], r128.add(tests.value, tamper.delta),
                                         tests.value))
  agg = (r128.low64(w_tilde.value)[:, 0], r128.low64(w_tilde.mac)[:, 0])
  return tests, agg


def passes(opened: np.ndarray, tau: int) -> np.ndarray:
  """Opened zero tests ``[C, τ+2, 4]`` → bool ``[C]``: the published bits."""
  opened = jnp.asarray(opened)
  consistent = jnp.all(r128.is_zero_mod(opened[:, :tau], CHECK_VALUE_BITS), axis=1)
  exact = jnp.all(r128.is_zero_mod(opened[:, tau:], EXACT_BITS), axis=1)
  return np.asarray(consistent & exact)


class ClientCheck(NamedTuple):
  """One client's share of the round: its aggregation shares and its zero tests."""
  agg_value: jax.Array  # uint64 [S, E] (mod 2^64, the aggregation ring)
  agg_mac: jax.Array  # uint64 [S, E]
  tests: Auth  # [S, τ+2, 4]


def coin_words(joint_seed: np.ndarray, count: int) -> jax.Array:
  """``count`` public coefficients in Z_2^32 (uint64) from a joint coin (128-bit seed)."""
  seed = jnp.asarray(np.asarray(joint_seed, np.uint64))
  words = prg_lib.words64(seed, jnp.arange(count, dtype=jnp.uint32), 1)[0]
  return ring.mask_bits(words, S_BITS)


def gamma_coefficients(joint_seed: np.ndarray, num_clients: int, p: CheckParams):
  """γ for every client, repetition and element (last column: the weight), from the
  joint coin tossed after every client's message is fixed: uint64 ``[C, τ, blocks·B + 1]``."""
  width = p.num_blocks * p.block + 1
  return coin_words(joint_seed, num_clients * p.tau * width).reshape(num_clients, p.tau, width)


def read_message(msg: ClientMessage) -> ClientMessage:
  """What the servers read from a client's message: every ε as three 32-bit words
  (mod 2^96) and every c as one bit, as the wire format would carry them.

  The message is the client's to write; the ranges of x̂, ŵ and σ hold by
  construction only for c ∈ {0, 1}. A "bit" c_l = 2^k where the client knows
  ρ_l = 0 adds 2^(l+k) to σ, so σ ≥ 2^63 and D_T ≡ 0 mod 2^64 no longer forces
  T ≤ B (a client with Σx² ≈ 4B passed); limbs ≥ 2^32 break ring128's exactness.
  """
  m32 = jnp.uint64((1 << 32) - 1)
  words = lambda e: r128.mod_bits(jnp.asarray(e, jnp.uint64) & m32, CHECK_VALUE_BITS)
  bit = lambda c: (jnp.asarray(c) & 1).astype(jnp.uint8)
  return ClientMessage(words(msg.epsilon), bit(msg.bits), words(msg.eps_w), bit(msg.bits_w),
                       bit(msg.bits_cw), bit(msg.bits_s))


def message_shapes(p: CheckParams) -> dict[str, tuple[int, ...]]:
  """The shape of every field of a well-formed message (blocks padded)."""
  width = p.num_blocks * p.block
  return {'epsilon': (width, 4), 'bits': (width, p.ell), 'eps_w': (1, 4),
          'bits_w': (1, p.ell_w), 'bits_cw': (1, p.ell_w), 'bits_s': (1, p.slack_bits)}


def message_problem(msg, p: CheckParams) -> str:
  """What is wrong with a client's message on its face (a field missing or of the
  wrong shape), in one line; '' when it is well formed. Its values need no check: the
  servers read them as bits and 32-bit words (`read_message`)."""
  for name, shape in message_shapes(p).items():
    if not hasattr(msg, name):
      return f'its message has no field {name}'
    got = tuple(np.shape(getattr(msg, name)))
    if got != shape:
      return f'its message\'s {name} has shape {got}, expected {shape}'
  return ''


def check_message(msg: ClientMessage, p: CheckParams) -> None:
  """Refuses a malformed message in one line, before any server computes on it."""
  problem = message_problem(msg, p)
  if problem:
    raise ValueError(f'validity check: a client message is refused before any server used '
                     f'it: {problem}.')


def server_check(key_c, msg: ClientMessage, gamma_c, alpha_shares, alpha, p: CheckParams,
                 num_servers: int, tamper: Tamper) -> ClientCheck:
  """Servers on one client's message: aggregation shares and zero-test shares."""
  check_message(msg, p)
  msg = read_message(msg)
  values, macs = [], []
  d_parts, t_auth, t_public = None, None, None
  for b in range(p.num_blocks):
    sl = slice(b * p.block, (b + 1) * p.block)
    v, m, d, t, tp = _server_block(key_c, jnp.int32(b), msg.epsilon[sl], msg.bits[sl],
                                   gamma_c[:, sl], alpha_shares, alpha, tamper, p=p,
                                   num_servers=num_servers)
    values.append(v)
    macs.append(m)
    d_parts = d if d_parts is None else _auth_add(d_parts, d)
    t_auth = t if t_auth is None else _auth_add(t_auth, t)
    t_public = tp if t_public is None else r128.add(t_public, tp)
  tests, (w_value, w_mac) = _server_scalars(
      key_c, (msg.eps_w, msg.bits_w, msg.bits_cw, msg.bits_s), gamma_c[:, -1], d_parts,
      t_auth, t_public, alpha_shares, alpha, tamper, p=p, num_servers=num_servers)
  value = jnp.concatenate(values, axis=1)[:, :p.num_params]
  mac = jnp.concatenate(macs, axis=1)[:, :p.num_params]
  return ClientCheck(jnp.concatenate([value, w_value[:, None]], axis=1),
                     jnp.concatenate([mac, w_mac[:, None]], axis=1), tests)


# ---------------------------------------------------------------------------
# The batched MAC check on the opened zero tests (Z_2^128).
# ---------------------------------------------------------------------------


@jax.jit
def _check_values(mac_shares, opened, alpha_shares, chi):
  """z_i = Σ_m χ_m mac_i(D_m) − α_i Σ_m χ_m D_m mod 2^128, ``[S, 4]``."""
  c = r128.from_uint64(chi)  # [M, 4]
  y = r128.sum_axis(r128.mul(c, opened), 0)
  m = r128.sum_axis(r128.mul(c[None], mac_shares), 1)
  return r128.sub(m, r128.mul(alpha_shares, y[None]))


class CheckResult(NamedTuple):
  ok: bool
  failure: str
  opened: np.ndarray  # [C, τ+2, 4] uint64 limbs, what everyone saw
  passed: np.ndarray  # bool [C]


def open_and_check(tests: Auth, alpha_shares, num_servers: int, rng=None,
                   corrupt_z=None) -> CheckResult:
  """Open every client's zero tests, then the batched MAC check with its own coin.

  Args:
    tests: [[D]] ``[S, C, τ+2, 4]``.
    rng: the servers' randomness (None: OS entropy; tests inject a generator).
    corrupt_z: a malicious server's change of the z it reveals (``[S, 4]`` → ``[S, 4]``).
  """
  opened = r128.sum_axis(tests.value, 0)  # Everyone broadcasts its shares.
  num_clients, num_tests = opened.shape[:2]
  coins = coin_lib.toss(num_servers, rng)
  if not coins.ok:
    return CheckResult(False, coins.failure, np.asarray(opened), np.zeros(num_clients, bool))
  chi = coin_words(coins.joint, num_clients * num_tests)
  z = _check_values(tests.mac.reshape(num_servers, -1, 4), opened.reshape(-1, 4),
                    alpha_shares, chi)
  z = np.asarray(jax.device_get(z), np.uint64)
  nonces = coin_lib.check_nonces(rng, num_servers)
  commitments = [coin_lib.commit_words(z[i], nonces[i]) for i in range(num_servers)]
  revealed = z if corrupt_z is None else np.asarray(corrupt_z(z.copy()), np.uint64)
  bad = coin_lib.unopened(revealed, nonces, commitments)
  if bad:
    return CheckResult(False, f'validity check: server(s) {bad} revealed a check value that '
                       'does not open its commitment; round aborted.', np.asarray(opened),
                       np.zeros(num_clients, bool))
  total = int(np.sum(r128.to_ints(revealed)) % (1 << r128.BITS))
  if total != 0:
    return CheckResult(False, 'validity check: the MAC check on the opened zero tests failed '
                       '(a server changed a value of the check); round aborted, no client '
                       'excluded.', np.asarray(opened), np.zeros(num_clients, bool))
  return CheckResult(True, '', np.asarray(opened), passes(opened, num_tests - 2))


def alpha_limbs(mac_key_shares):
  """The aggregation ring's α_i (uint64 ``[S]``, < 2^s) as check-ring limbs, and α = Σ α_i."""
  shares = r128.from_uint64(jnp.asarray(mac_key_shares, jnp.uint64))
  return shares, r128.sum_axis(shares, 0)


def encode_claims(scaled: np.ndarray, clip: bool, p: CheckParams, settings: ValiditySettings):
  """Client side: the scaled row [w̃Δ, w̃] → (x int64 ``[P]``, w), clipped if honest.

  An honest client clips w̃Δ to C·(1 − 2^−20) (float rounding must not push it past
  C) before encoding; VALIDITY_DESIGN §5 shows that then Σx² ≤ B.
  """
  row = np.asarray(scaled, np.float64)
  update, weight = row[:-1], row[-1]
  if clip:
    norm = float(np.linalg.norm(update))
    limit = settings.clip_norm * (1.0 - 2.0**-20)
    if norm > limit:
      update = update * (limit / norm)
  scale = 2.0**p.f
  x = np.round(update * scale)
  # A malicious client's huge values saturate at what its int64 arithmetic can hold.
  x = np.clip(x, -2.0**62, 2.0**62).astype(np.int64)
  return x, int(np.round(weight * scale))


# ---------------------------------------------------------------------------
# Costs (bytes per round; VALIDITY_DESIGN §7 with the rounds as implemented).
# ---------------------------------------------------------------------------

EXTRA_ROUNDS = 6  # γ commit, γ reveal, zero tests open (+ χ' commit), χ' reveal, z' commit, z' reveal.
_LIMB_BYTES = 16  # One element of Z_2^128.
_DIGEST, _SEED = 32, 16


def round_costs(p: CheckParams, num_servers: int, num_submitted: int) -> dict[str, float]:
  """What the check adds to one round, as ``mpc/validity_*`` statistics.

  Client upload (to each server): ε at 96 bits (12 B) per element instead of 4 B, plus
  the XOR-masked bits (P·ℓ + 2ℓ_w + L bits). Each server broadcasts its shares of every
  client's τ + 2 zero tests (16 B each) and runs two more coin tosses and one more
  check-value commitment. The dealer sends each server but the last a 16-byte seed per
  client, and the last its value and MAC shares in full of every authenticated value
  (masks, bits, R and the zero-test masks), 2 x 16 B each; the client gets one seed.
  """
  num_elements = p.num_params + 1
  bits = p.num_params * p.ell + 2 * p.ell_w + p.slack_bits
  upload = num_servers * (num_elements * 12 + -(-bits // 8))
  without = num_servers * num_elements * 4
  coin = _DIGEST + 2 * _SEED  # Commit, then reveal the contribution and its nonce.
  broadcast = (num_submitted * (p.tau + 2) * _LIMB_BYTES + 2 * coin
               + _DIGEST + _LIMB_BYTES + _SEED)
  authenticated = num_elements + bits + 1 + p.tau + 2
  dealer = num_submitted * ((num_servers - 1) * _SEED + 2 * authenticated * _LIMB_BYTES + _SEED)
  return {
      'mpc/client_upload_bytes': float(upload),
      'mpc/validity_extra_client_upload_bytes': float(upload - without),
      'mpc/validity_server_broadcast_bytes': float(broadcast),
      'mpc/validity_dealer_send_bytes': float(dealer),
      'mpc/validity_extra_rounds': float(EXTRA_ROUNDS),
      'mpc/validity_bits_per_element': float(p.ell),
  }
