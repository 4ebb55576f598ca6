"""PROTOTYPE (not on the production path): the norm-bound validity check's arithmetic.

docs/VALIDITY_DESIGN.md is the design; this module shows its core arithmetic on tiny
inputs, with a simulated dealer and host-side coins:

* the 128-bit check ring Z_2^128 (value bits k_c = 96, s = 32), elements as four
  32-bit limbs in uint64 lanes (``[..., 4]``, little endian), so sums of up to 2^32
  terms are exact limb-wise and multiplication is a schoolbook product mod 2^128;
* the client's dual input: ε_j = x_j − r_j mod 2^96 and the XOR-masked bits
  c_jl = bit_l(x_j + 2^(ℓ−1)) ⊕ ρ_jl, plus the bits of the slack B − Σ x_j²;
* the local computation of [[x̃]] = [[r]] + ε, the exact bit-derived [[x̂]], the
  client-aided square sum [[T]] = [[R]] + 2Σ ε_j [[r_j]] + Σ ε_j², and the zero tests
  D_t = Σ γ_j (x̃_j − x̂_j) + 2^96 t_t, D_0 = T + σ − B + 2^64 t_0;
* a batched MAC check (same key α as the aggregation ring) over the opened D's.

Everything runs under ``with jax.enable_x64(True):`` (uint64 lanes). Randomness of the
dealer and of the coins comes from an injected ``numpy.random.Generator`` (tests).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from privateyes_jax.mpc import ring

LIMBS = 4
M32 = (1 << 32) - 1
CHECK_VALUE_BITS = 96  # k_c: opened check values are correct modulo 2^96.
S_BITS = 32  # MAC key bits (the aggregation ring's s).
EXACT_BITS = 64  # the consistency test decides agreement modulo 2^64.


# ----------------------------------------------------------------------------
# Z_2^128 as four 32-bit limbs.
# ----------------------------------------------------------------------------


def from_ints(values, shape=None) -> jnp.ndarray:
  """Python ints (any sign, reduced mod 2^128) -> uint64 limbs ``[..., 4]``."""
  flat = [int(v) % (1 << 128) for v in np.asarray(values, dtype=object).reshape(-1)]
  limbs = np.array([[(v >> (32 * i)) & M32 for i in range(LIMBS)] for v in flat],
                   dtype=np.uint64).reshape(-1, LIMBS)
  out_shape = np.shape(values) if shape is None else shape
  return jnp.asarray(limbs.reshape(tuple(out_shape) + (LIMBS,)))


def to_ints(a) -> np.ndarray:
  """uint64 limbs ``[..., 4]`` (normalised) -> object array of Python ints."""
  a = np.asarray(a, dtype=np.uint64)
  out = np.zeros(a.shape[:-1], dtype=object)
  for i in range(LIMBS):
    out = out + a[..., i].astype(object) * (1 << (32 * i))
  return out


def normalize(a: jnp.ndarray) -> jnp.ndarray:
  """Propagates carries of limbs < 2^64 and reduces mod 2^128."""
  ring.require_x64('validity_proto.normalize')
  limbs, carry = [], jnp.zeros(a.shape[:-1], jnp.uint64)
  for i in range(LIMBS):
    v = a[..., i] + carry  # a[..., i] < 2^63 in every use below, carry < 2^32.
    limbs.append(v & jnp.uint64(M32))
    carry = v >> jnp.uint64(32)
  return jnp.stack(limbs, axis=-1)


def add(a, b):
  return normalize(a + b)


def neg(a):
  return normalize(jnp.concatenate(
      [((~a[..., :1]) & jnp.uint64(M32)) + jnp.uint64(1), (~a[..., 1:]) & jnp.uint64(M32)],
      axis=-1))


def sub(a, b):
  return add(a, neg(b))


def mul(a, b):
  """a·b mod 2^128 for normalised limbs (broadcasting)."""
  a, b = jnp.broadcast_arrays(a, b)
  acc = [jnp.zeros(a.shape[:-1], jnp.uint64) for _ in range(LIMBS)]
  for i in range(LIMBS):
    for j in range(LIMBS - i):
      p = a[..., i] * b[..., j]  # < 2^64, exact.
      acc[i + j] = acc[i + j] + (p & jnp.uint64(M32))
      if i + j + 1 < LIMBS:
        acc[i + j + 1] = acc[i + j + 1] + (p >> jnp.uint64(32))
  return normalize(jnp.stack(acc, axis=-1))


def sum_axis(a, axis):
  """Σ over ``axis`` (not the limb axis) of fewer than 2^31 normalised elements."""
  return normalize(jnp.sum(a, axis=axis, dtype=jnp.uint64))


def mod_bits(a, bits):
  """a mod 2^bits, bits a multiple of 32."""
  keep = bits // 32
  return a.at[..., keep:].set(jnp.uint64(0))


# ----------------------------------------------------------------------------
# Authenticated shares in Z_2^128 (server axis first).
# ----------------------------------------------------------------------------


class Auth(NamedTuple):
  value: jnp.ndarray  # [S, ..., 4]
  mac: jnp.ndarray  # [S, ..., 4]


def _random_limbs(rng, shape):
  return jnp.asarray(rng.integers(0, 1 << 32, size=tuple(shape) + (LIMBS,), dtype=np.uint64))


def share(rng, x, num_servers):
  """Additive shares of limbs x: [S, ..., 4]."""
  parts = [_random_limbs(rng, x.shape[:-1]) for _ in range(num_servers - 1)]
  last = x
  for p in parts:
    last = sub(last, p)
  return jnp.stack(parts + [last])


def authenticate(rng, x, alpha, num_servers):
  """DEALER: [[x]] under the integer key α (Python int)."""
  return Auth(share(rng, x, num_servers), share(rng, mul(x, from_ints(alpha, ())), num_servers))


def _expand(public, shares):
  return jnp.broadcast_to(public, shares.shape[1:])


def add_auth(a: Auth, b: Auth) -> Auth:
  return Auth(add(a.value, b.value), add(a.mac, b.mac))


def sub_auth(a: Auth, b: Auth) -> Auth:
  return Auth(sub(a.value, b.value), sub(a.mac, b.mac))


def add_public(a: Auth, c, alpha_shares) -> Auth:
  """[[a]] + c: server 0 adds c to its value, server i adds α_i·c to its MAC."""
  c = _expand(c, a.value)
  value = a.value.at[0].set(add(a.value[0], c))
  alpha = alpha_shares.reshape((-1,) + (1,) * (a.mac.ndim - 2) + (LIMBS,))
  return Auth(value, add(a.mac, mul(alpha, c[None])))


def mul_public(a: Auth, c) -> Auth:
  return Auth(mul(a.value, c[None]), mul(a.mac, c[None]))


def sum_auth(a: Auth, axis: int) -> Auth:
  """Σ over a data axis (axis counts without the server axis)."""
  return Auth(sum_axis(a.value, axis + 1), sum_axis(a.mac, axis + 1))


def open_value(a: Auth) -> jnp.ndarray:
  return sum_axis(a.value, 0)


# ----------------------------------------------------------------------------
# Parameters, dealer, client, servers.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Params:
  num_params: int  # P
  clip: float  # C, on the scaled update w̃·Δ
  f: int = 16
  k: int = 32
  tau: int = 2  # consistency repetitions: soundness 2^-(32·tau)
  slack_bits: int = 63  # L_T

  @property
  def bound(self) -> int:
    """B_int: integer bound on Σ x_j², (C·2^f + √P/2)² rounded up."""
    return math.ceil((self.clip * 2.0**self.f + math.sqrt(self.num_params) / 2.0)**2)

  @property
  def ell(self) -> int:
    """Bits per element: |x_j| ≤ √B_int < 2^(ℓ−1)."""
    return math.ceil(math.log2(math.isqrt(self.bound) + 2)) + 1

  def __post_init__(self):
    if self.ell > self.k:
      raise ValueError(f'ℓ={self.ell} exceeds k={self.k}.')
    if self.num_params * 4**(self.ell - 1) >= 2**63 or self.bound >= 2**63:
      raise ValueError('P·4^(ℓ−1) and B must be < 2^63 (docs/VALIDITY_DESIGN.md §9).')


class Dealer(NamedTuple):
  alpha_shares: jnp.ndarray  # [S, 4], α_i < 2^32
  alpha: int  # DEALER only
  r: Auth  # [S, P, 4], r uniform in Z_2^128
  r_sq_sum: Auth  # [S, 4], Σ r_j²
  rho: Auth  # [S, P, ℓ, 4], exact bits
  rho_slack: Auth  # [S, L_T, 4], exact bits
  zero_masks: Auth  # [S, τ+1, 4], uniform


def deal(rng: np.random.Generator, params: Params, num_servers: int) -> Dealer:
  """DEALER: one client's material for one attempt (docs/VALIDITY_DESIGN.md §3)."""
  alpha_int = [int(v) for v in rng.integers(0, 1 << S_BITS, size=num_servers, dtype=np.uint64)]
  alpha = sum(alpha_int)  # lifted without reduction mod 2^s, as ring/spdz2k do
  p, ell = params.num_params, params.ell
  r = _random_limbs(rng, (p,))
  r_sq_sum = sum_axis(mul(r, r), 0)
  rho = from_ints(rng.integers(0, 2, size=(p, ell)).astype(object))
  rho_slack = from_ints(rng.integers(0, 2, size=(params.slack_bits,)).astype(object))
  masks = _random_limbs(rng, (params.tau + 1,))
  auth = lambda x: authenticate(rng, x, alpha, num_servers)
  return Dealer(from_ints(alpha_int), alpha, auth(r), auth(r_sq_sum), auth(rho),
                auth(rho_slack), auth(masks))


class ClientMessage(NamedTuple):
  epsilon: jnp.ndarray  # [P, 4], x̃ − r mod 2^96
  bits: np.ndarray  # [P, ℓ] uint8, c = bit(x̂ + 2^(ℓ−1)) ⊕ ρ
  slack_bits: np.ndarray  # [L_T] uint8


def client_view(dealer: Dealer):
  """What the servers send the client (round 1): r mod 2^96 and the ρ bits."""
  r = to_ints(mod_bits(open_value(dealer.r), CHECK_VALUE_BITS))
  rho = (to_ints(open_value(dealer.rho)) & 1).astype(np.uint8)
  rho_slack = (to_ints(open_value(dealer.rho_slack)) & 1).astype(np.uint8)
  return r, rho, rho_slack


def encode(update, params: Params) -> np.ndarray:
  """round(x·2^f) as Python ints (object array), as ring.encode before the mod."""
  return np.array([int(v) for v in np.round(np.asarray(update, np.float64) * 2.0**params.f)],
                  dtype=object)


def _bits(values, width):
  return np.array([[(int(v) >> l) & 1 for l in range(width)] for v in values], np.uint8)


def client_input(x_arith, x_bits, slack, dealer: Dealer, params: Params) -> ClientMessage:
  """Client side (round 2). An honest client passes x_arith = x_bits = x and
  slack = B − Σ x². A malicious client may pass anything: x_arith (Python ints, taken
  mod 2^96), x_bits (must fit ℓ bits as x + 2^(ℓ−1) ∈ [0, 2^ℓ): that is all the bit
  encoding can express), slack (taken mod 2^L_T)."""
  r, rho, rho_slack = client_view(dealer)
  eps = [(int(a) - int(rj)) % (1 << CHECK_VALUE_BITS) for a, rj in zip(x_arith, r)]
  off = 1 << (params.ell - 1)
  u = [int(v) + off for v in x_bits]
  if any(not 0 <= v < (1 << params.ell) for v in u):
    raise ValueError('x_bits does not fit ℓ bits: the bit input cannot express it.')
  bits = _bits(u, params.ell) ^ rho
  sl = _bits([int(slack) % (1 << params.slack_bits)], params.slack_bits)[0] ^ rho_slack
  return ClientMessage(from_ints(np.array(eps, dtype=object)), bits, sl)


def honest_input(x, dealer: Dealer, params: Params) -> ClientMessage:
  t = sum(int(v) * int(v) for v in x)
  if t > params.bound:
    raise ValueError(f'Σx² = {t} > B = {params.bound}: an honest client would not send this.')
  return client_input(x, x, params.bound - t, dealer, params)


def _from_bits(c: np.ndarray, rho: Auth, alpha_shares) -> Auth:
  """[[Σ_l 2^l (c_l ⊕ ρ_l)]] with c public bits, ρ authenticated bits (last data axis)."""
  c_limbs = from_ints(c.astype(object))
  sign = from_ints((1 - 2 * c.astype(np.int64)).astype(object))  # 1 or −1 mod 2^128
  u = add_public(mul_public(rho, sign), c_limbs, alpha_shares)
  width = c.shape[-1]
  weights = from_ints(np.array([1 << l for l in range(width)], dtype=object))
  return sum_auth(mul_public(u, weights), axis=u.value.ndim - 3)


class Opened(NamedTuple):
  tests: jnp.ndarray  # [τ+1, 4] opened D_1..D_τ, D_0
  shares: Auth  # [S, τ+1, 4], the authenticated D's (for the MAC check)
  x_agg: Auth  # [[x̃]] (for reduction to the aggregation ring)


def zero_tests(msg: ClientMessage, dealer: Dealer, params: Params, gamma: np.ndarray,
               tamper=None) -> Opened:
  """Servers (local + round 4): the authenticated zero tests and their opening.

  Args:
    gamma: uint64 ``[τ, P]`` coin-tossed coefficients in Z_2^32 (after input).
    tamper: optional (server, test, delta): a malicious server adds delta to its
      value share of one zero test before opening.
  """
  a = dealer.alpha_shares
  x_tilde = add_public(dealer.r, msg.epsilon, a)
  offset = from_ints(-(1 << (params.ell - 1)), ())
  x_hat = add_public(_from_bits(msg.bits, dealer.rho, a), offset, a)
  # T = R + 2 Σ ε_j r_j + Σ ε_j² (the input mask is the square mask).
  two_eps = mul(msg.epsilon, from_ints(2, ()))
  t = add_auth(dealer.r_sq_sum, sum_auth(mul_public(dealer.r, two_eps), 0))
  t = add_public(t, sum_axis(mul(msg.epsilon, msg.epsilon), 0), a)
  sigma = _from_bits(msg.slack_bits, dealer.rho_slack, a)
  tests = []
  diff = sub_auth(x_tilde, x_hat)
  for i in range(params.tau):
    g = from_ints(gamma[i].astype(object))
    tests.append(sum_auth(mul_public(diff, g), 0))
  tests.append(add_public(add_auth(t, sigma), from_ints(-params.bound, ()), a))
  d = Auth(jnp.stack([x.value for x in tests], axis=1), jnp.stack([x.mac for x in tests], axis=1))
  # High-bit masks: 2^96 t for the consistency tests, 2^64 t for D_0.
  shifts = from_ints(np.array([1 << CHECK_VALUE_BITS] * params.tau + [1 << EXACT_BITS],
                              dtype=object))
  d = add_auth(d, mul_public(dealer.zero_masks, shifts))
  if tamper is not None:
    server, test, delta = tamper
    d = d._replace(value=d.value.at[server, test].set(
        add(d.value[server, test], from_ints(delta, ()))))
  return Opened(open_value(d), d, x_tilde)


def passes(opened: Opened, params: Params) -> bool:
  """The client passes iff D_t ≡ 0 mod 2^96 (t ≤ τ) and D_0 ≡ 0 mod 2^64."""
  vals = to_ints(opened.tests)
  ok = all(int(v) % (1 << CHECK_VALUE_BITS) == 0 for v in vals[:params.tau])
  return ok and int(vals[params.tau]) % (1 << EXACT_BITS) == 0


def mac_check(opened: Opened, dealer: Dealer, chi: np.ndarray) -> bool:
  """Batched MAC check over the opened zero tests in Z_2^128 (honest servers' z_i).

  z_i = Σ_m χ_m·mac_i(D_m) − α_i·Σ_m χ_m·D_m; passes iff Σ_i z_i ≡ 0 mod 2^128.
  """
  chi = from_ints(chi.astype(object))
  y = sum_axis(mul(chi, opened.tests), 0)
  m = sum_axis(mul(chi[None], opened.shares.mac), 1)  # [S, 4]
  z = sub(m, mul(dealer.alpha_shares, y[None]))
  return int(to_ints(sum_axis(z, 0))) == 0


def reduce_to_aggregation_ring(x: Auth) -> tuple[np.ndarray, np.ndarray]:
  """[[x̃]] mod 2^64: the aggregation ring's (value, MAC) shares as uint64 ``[S, P]``."""
  low = lambda a: (np.asarray(a[..., 0], np.uint64)
                   | (np.asarray(a[..., 1], np.uint64) << np.uint64(32)))
  return low(x.value), low(x.mac)


def naive_sum_of_squares_mod(x, bits: int) -> int:
  """What a naive check computes: Σ x_j² mod 2^bits (fooled by 2-adic elements)."""
  return sum(int(v) % (1 << bits) * (int(v) % (1 << bits)) for v in x) % (1 << bits)


def coins(rng: np.random.Generator, params: Params, num_tests: int):
  """Host stand-ins for the two coin tosses: γ ([τ, P]) and χ ([num_tests])."""
  gamma = rng.integers(0, 1 << S_BITS, size=(params.tau, params.num_params), dtype=np.uint64)
  chi = rng.integers(0, 1 << S_BITS, size=(num_tests,), dtype=np.uint64)
  return gamma, chi
