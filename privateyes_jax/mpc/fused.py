"""The round's array programs: per-client shares, fused chunked sums, opening and check.

``SecureAggregator.apply`` never materialises ``[servers, clients, elements]``.
Clients are processed in chunks of ``chunk`` rows; for each chunk ONE fused XLA
program goes from the float updates to the servers' share sums:

  scale (w_c / w_max) → range statistics → fixed-point encode → DEALER masks and
  client shares from per-(client, server) seeds (``prg``) → ε = x − r mod 2^k →
  [[x]] = [[r]] + ε → sum over the chunk's clients, added to the accumulators.

Everything up to the opening is linear, so adding chunk sums is exact: the
opened sum and every server's shares of it are bit for bit those of the
unchunked computation, and a client's shares depend only on its seeds (its
global index), never on the chunk size.

What is accumulated (all arithmetic mod 2^(k+s) for privateyes, 2^k otherwise):

* privateyes (client c's mask is r_c = PRG(seed_c,S-1)[lane 0], a seed only the
  DEALER holds; for i < S-1 server i's value share is r_ci = PRG(seed_ci)[lane 0]
  and its MAC share m_ci = PRG(seed_ci)[lane 1]; server S-1 gets
  r_c,S-1 = r_c − Σ_{i<S-1} r_ci and m_c,S-1 = α r_c − Σ_{i<S-1} m_ci in full):
  R_i = Σ_c r_ci (S), Mr_i = Σ_c m_ci (S-1), Eps = Σ_c ε_c (1). Then the servers'
  shares of Σ_c x_c are V_i = R_i + [i = 0] Eps and M_i = Mr_i + α_i Eps for
  i < S-1, M_S-1 = α Σ_i R_i − Σ_i Mr_i + α_S-1 Eps, exactly the sums of the
  per-client shares [[x_c]] = [[r_c]] + ε_c. The OFFLINE (dealer) phase sums the
  masks' shares of the whole cohort from the seeds alone, and hands client c the
  seed s_c,S-1 of its own mask (16 bytes; no server sends the client anything, so
  no server can shift an honest client's input: docs/MPC.md §3 step 2); the ONLINE
  phase needs only r_c mod 2^k per client element, which client c expands from
  that seed (``client_mask``), to form ε_c, and the servers subtract the shares of
  clients that dropped out.
* semi-honest (client c's share for server i < S-1 is PRG(seed_ci)[lane 0], the
  last is x_c − Σ others): A_i = Σ_c s_ci (S-1) and X = Σ_c x_c; V_i = A_i,
  V_S-1 = X − Σ_i A_i.

The functions that build per-client shares explicitly (``input_masks``,
``semi_honest_shares``, ``target_client_shares``) use the same streams; the
explicit three-phase API of the aggregator (tests, small federations) and the
adversaries that act on one client's shares are built on them, and the tests
check both paths bit for bit against each other.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from privateyes_jax.mpc import adversary as adversary_lib
from privateyes_jax.mpc import prg as prg_lib
from privateyes_jax.mpc import ring
from privateyes_jax.mpc import spdz2k

# Roles of the attempt's sub-seeds (prg.child_seed tags).
DEALER, CLIENTS = 0, 1
# χ is public and drawn once per attempt from the joint coin: always the default
# generator, so the check does not depend on the share generator chosen.
PRG_OF_CHECK = 'threefry2x64'
_I0 = np.int32(0)  # Index literal (x64 would make a Python 0 int64).


class RangeStats(NamedTuple):
  """Per-client range statistics of the scaled input x_c = [w̃_c Δ_c, w̃_c]."""
  max_abs: jax.Array  # shape=[clients], dtype=float32; max |x|, inf if non-finite.
  finite: jax.Array  # shape=[clients], dtype=bool.


def num_accumulators(mode: str, num_servers: int) -> int:
  """privateyes: R_0..R_S-1, Mr_0..Mr_S-2, Eps; semi-honest: A_0..A_S-2, X."""
  return 2 * num_servers if mode == 'privateyes' else num_servers


def word_dtype(mode: str, spec: ring.RingSpec):
  """uint32 words when the share ring fits (semi-honest k <= 32), else uint64."""
  bits = spec.ring_bits if mode == 'privateyes' else spec.k
  return jnp.uint32 if bits <= 32 else jnp.uint64


def _mask(u, bits):
  if bits >= 8 * u.dtype.itemsize:
    return u
  return u & u.dtype.type((1 << bits) - 1)


# ---------------------------------------------------------------------------
# Client side: scale, range statistics, encode.
# ---------------------------------------------------------------------------


def scale(updates, weights, max_weight):
  """x_c = [w̃_c Δ_c, w̃_c], w̃_c = w_c / w_max, float32 ``[n, P + 1]`` (as the reference).

  Written as pad + select rather than a concatenate so that XLA:CPU fuses it
  into its consumer instead of writing ``[n, P + 1]`` out.
  """
  w = (weights / max_weight).astype(jnp.float32)[:, None]
  num_params = updates.shape[1]
  column = lax.broadcasted_iota(jnp.int32, (updates.shape[0], num_params + 1), 1)
  return jnp.where(column < num_params, w * jnp.pad(updates, ((0, 0), (0, 1))), w)


def range_stats(updates, weights, max_weight) -> RangeStats:
  """Row-wise max |x_c| (inf where x_c has NaN/inf) and all-finite, from Δ directly.

  One reduction over the updates: with w̃ ≥ 0, rounding is monotone, so
  max_e fl(w̃·|Δ_e|) = fl(w̃ · max_e |Δ_e|), and w̃·Δ_e is non-finite exactly
  where Δ_e is (w̃ ≤ 1; 0·inf = NaN). The element is located only on the error
  path (``host_range_check``): an argmax here would cost more than the rest of
  the check.
  """
  w = (weights / max_weight).astype(jnp.float32)
  # A variadic reduce: XLA:CPU hands a plain max to XNNPACK, which cannot fuse
  # the producer and would write |Δ| out first.
  largest, finite = lax.reduce(
      (jnp.where(jnp.isfinite(updates), jnp.abs(updates), jnp.inf),
       jnp.isfinite(updates)), (jnp.float32(0), True),
      lambda a, b: (jnp.maximum(a[0], b[0]), a[1] & b[1]), (1,))
  max_abs = jnp.where(finite, jnp.maximum(w * largest, w), jnp.inf)
  return RangeStats(max_abs, finite)


def encode(scaled, spec: ring.RingSpec, dtype):
  """``ring.encode`` bit for bit; in 32-bit arithmetic when k <= 32.

  For k <= 32 a value that passes the range check has |x·2^f| < 2^31, and x·2^f
  and its rounding are exact in float32 (scaling by a power of two), so float32
  → int32 gives the same integer as ring.encode's float64 → int64.
  """
  if spec.k <= 32:
    q = jnp.round(scaled.astype(jnp.float32) * jnp.float32(2.0**spec.f))
    u = lax.bitcast_convert_type(q.astype(jnp.int32), jnp.uint32)
    return _mask(u, spec.k).astype(dtype)
  return ring.encode(scaled, spec).astype(dtype)


# ---------------------------------------------------------------------------
# Streams: dealer masks and client shares from per-(client, server) seeds.
# ---------------------------------------------------------------------------


def _mask_words(seeds, counter, num_servers, spec, prg):
  """Dealer: the mask r_c, value shares r_ci (S) and random MAC shares m_ci (S-1) of [[r_c]].

  Args:
    seeds: uint64 ``[n, S, 2]``. For i < S-1, PRG(seed_ci) gives server i's value
      share (lane 0) and MAC share (lane 1); PRG(seed_c,S-1) lane 0 is the mask
      r_c itself (`client_mask`), and server S-1's value share is r_c − Σ others.
    counter: uint32 ``[E]``.

  Returns:
    (S arrays ``[n, E]``, S-1 arrays ``[n, E]``, r_c ``[n, E]``), uint64 in
    Z_2^(k+s). One vectorised block function for all servers keeps the program
    (and compile time) small.
  """
  bits = spec.ring_bits
  lanes = prg_lib.words64(seeds[:, :, None, :], counter, 2, prg)  # [n, S, E] each.
  r = ring.mask_bits(lanes[0][:, num_servers - 1], bits)
  values = [ring.mask_bits(lanes[0][:, i], bits) for i in range(num_servers - 1)]
  values.append(ring.mask_bits(r - _sum(values, 64), bits) if values else r)
  macs = [ring.mask_bits(lanes[1][:, i], bits) for i in range(num_servers - 1)]
  return values, macs, r


def client_mask(seeds, counter, num_servers, spec, prg):
  """Client c's mask r_c mod 2^k, ``[n, E]`` uint64, expanded from the dealer's seed.

  The DEALER sends client c the seed s_c,S-1 of r_c in the offline phase (the
  servers send it nothing: a share they sent would not be authenticated towards
  the client, docs/DECISIONS.md "Masks reach the client from the dealer"); the
  client expands lane 0 of it, exactly the dealer's stream for r_c
  (`_mask_words`), and keeps the low k bits. Lane 1 of that seed is unused. The
  client thus knows its own mask, its own randomness; α and the MAC shares never
  reach it. One PRG block per element: a third
  of the dealer's S blocks per client element. (Using both lanes of half as many
  blocks measured no faster on XLA:CPU: the interleave costs what it saves.)
  """
  lane = prg_lib.words64(seeds[:, num_servers - 1, None, :], counter, 1, prg)[0]
  return ring.mask_bits(lane, spec.k)


def _share_words(seeds, counter, num_servers, spec, prg, dtype):
  """Semi-honest: the S-1 seeded shares s_ci = PRG(seed_ci)[lane 0] of a client's input.

  ``seeds`` uint64 ``[n, S-1, 2]``; returns S-1 arrays ``[n, E]`` of ``dtype``.
  """
  gen = prg_lib.words32 if dtype == jnp.uint32 else prg_lib.words64
  words = gen(seeds[:, :, None, :], counter, 1, prg)[0]  # [n, S-1, E].
  return [_mask(words[:, i], spec.k) for i in range(num_servers - 1)]


def _sum(arrays, bits):
  total = arrays[0]
  for a in arrays[1:]:
    total = total + a
  return _mask(total, bits)


def input_masks(seeds, mac_key_shares, num_elements, spec, prg, *,
                with_client_masks=False):
  """DEALER: [[r_c]] for the clients of ``seeds`` ``[n, S, 2]``: ``[S, n, E]``.

  With ``with_client_masks``, returns (``AuthShares``, r_c mod 2^k ``[n, E]``): the
  second is the dealer's message to each client, bit for bit what the client
  expands from the seed it is sent (`client_mask`).
  """
  num_servers = mac_key_shares.shape[0]
  counter = prg_lib.element_counter(num_elements)
  values, macs, r = _mask_words(seeds, counter, num_servers, spec, prg)
  bits = spec.ring_bits
  alpha = spdz2k.dealer_mac_key(mac_key_shares, spec)
  last_mac = ring.mask_bits(alpha * r - _sum(macs, 64), bits) if macs else (
      ring.mask_bits(alpha * r, bits))
  masks = spdz2k.AuthShares(jnp.stack(values), jnp.stack(macs + [last_mac]))
  if with_client_masks:
    return masks, ring.mask_bits(r, spec.k)
  return masks


def semi_honest_shares(seeds, x, spec, prg):
  """Client side: ``[S, n, E]`` additive shares of x ``[n, E]`` in Z_2^k (uint64)."""
  num_servers = seeds.shape[1] + 1
  counter = prg_lib.element_counter(x.shape[1])
  random = _share_words(seeds, counter, num_servers, spec, prg, jnp.uint64)
  last = ring.mask_bits(x - _sum(random, 64) if random else x, spec.k)
  return jnp.stack(random + [last])


def round_seed_tables(root, num_clients, num_inputs, role):
  """All of a round's DEALER / client seeds from one vectorised Threefry call.

  seed = Threefry-2x64_root(x0, x1) with x0 = the client index and x1 = the role tag
  (high 32 bits) and server index (low 32 bits), so every (role, client, server)
  gets an independent 128-bit seed. ``root`` is the attempt's seed
  (`attempt_root`): nothing here is reused by a later attempt.

  Returns:
    input seeds ``[C, num_inputs, 2]``.
  """
  u = jnp.uint64
  rows = lax.broadcasted_iota(u, (num_clients, num_inputs), 0)
  cols = lax.broadcasted_iota(u, (num_clients, num_inputs), 1)
  w0, w1 = prg_lib.threefry2x64(root[0], root[1], rows, (u(4 * role) << u(32)) | cols)
  return jnp.stack([w0, w1], axis=-1)


_ATTEMPT_TAG = 0x41545450  # 'ATTP': the attempt's sub-seed of a round key.
_MAC_KEY_TAG = 0x4D41434B  # 'MACK': the MAC key of an attempt (dealer seed's child).


def attempt_root(round_key_seed, attempt):
  """The seed of one attempt at a round: Threefry_{round key}(attempt, tag).

  Every random value of the round (dealer masks, client share seeds) derives
  from it, so an attempt retired by an abort shares nothing with
  the next one.
  """
  return prg_lib.child_seed(round_key_seed, jnp.asarray(attempt, jnp.uint64),
                            jnp.uint64(_ATTEMPT_TAG))


def attempt_mac_key_shares(dealer_seed, attempt, num_servers, spec):
  """DEALER: α_i ∈ Z_2^s of ``attempt`` (uint64 ``[S]``), from its own 128-bit seed."""
  child = prg_lib.child_seed(dealer_seed, jnp.asarray(attempt, jnp.uint64),
                             jnp.uint64(_MAC_KEY_TAG))
  words = prg_lib.threefry2x64(child[0], child[1], jnp.arange(num_servers, dtype=jnp.uint64),
                               jnp.uint64(0))[0]
  return ring.mask_bits(words, spec.s)


def check_coefficients(joint_seed, num_elements, spec):
  """Public χ_j ∈ Z_2^s from the joint coin (uint64 ``[2]``, 128 bits)."""
  counter = prg_lib.element_counter(num_elements)
  return ring.mask_bits(prg_lib.words64(joint_seed, counter, 1, PRG_OF_CHECK)[0], spec.s)


# ---------------------------------------------------------------------------
# The fused chunk program.
# ---------------------------------------------------------------------------


def encode_integers(values, spec: ring.RingSpec, dtype):
  """Integer inputs already in the ring's units (int64 ``[n, P]``) → ``[n, P + 1]`` words
  of Z_2^k with a zero weight column: the servers' DP noise (`accumulate`'s ``encoded``)."""
  u = lax.bitcast_convert_type(values.astype(jnp.int64), jnp.uint64)
  return _mask(jnp.pad(u, ((0, 0), (0, 1))), spec.k).astype(dtype)


def _chunk(n, acc, stats, block, block_offset, weights, seeds, max_weight, *,
           mode, spec, num_servers, prg, chunk, num_clients, coalition, phase,
           encoded=False):
  """Chunk n: rows [start, start + chunk), start = min(n·chunk, C − chunk).

  Rows below n·chunk were in chunk n−1 (the last chunk overlaps instead of
  padding); they are recomputed identically but not added again. ``phase``
  (privateyes): 'dealer' sums the cohort's mask shares (data-independent),
  'online' the clients' masked inputs ε_c, 'retract' the dropped clients' mask
  shares, 'all' the submitting clients' masks and inputs at once (see `accumulate`).
  """
  num_elements = block.shape[1] + 1  # The dealer phase gets a [0, P] block.
  n = jnp.asarray(n, jnp.int32)
  block_offset = jnp.asarray(block_offset, jnp.int32)
  start = jnp.minimum(n * chunk, num_clients - chunk).astype(jnp.int32)
  rows = start + jnp.arange(chunk, dtype=jnp.int32)
  w = lax.dynamic_slice(weights, (start,), (chunk,))
  submitted = w > 0
  # The dealer prepares masks for the whole cohort before the round: it cannot know
  # who will drop out. The servers retract the dropped clients' mask shares online.
  cohort = {'dealer': True, 'retract': ~submitted}.get(phase, submitted)
  include = (cohort & (rows >= n * chunk))[:, None]
  dtype = word_dtype(mode, spec)

  if phase in ('online', 'all'):  # The dealer never sees the inputs.
    updates = lax.dynamic_slice(block, (start - block_offset, _I0), (chunk, block.shape[1]))
    if encoded:  # Range-checked by the caller (`noise_headroom`).
      x = encode_integers(updates, spec, dtype)
    else:
      chunk_stats = range_stats(updates, w, max_weight)
      stats = RangeStats(*(lax.dynamic_update_slice(full, part, (start,))
                           for full, part in zip(stats, chunk_stats)))
      x = encode(scale(updates, w, max_weight), spec, dtype)
  row_seeds = lax.dynamic_slice(seeds, (start, _I0, _I0), (chunk,) + seeds.shape[1:])
  counter = prg_lib.element_counter(num_elements)
  zero = dtype(0)
  estimate = None
  if mode == 'privateyes':
    bits = spec.ring_bits
    terms = []
    if phase in ('dealer', 'retract', 'all'):
      values, macs, r = _mask_words(row_seeds, counter, num_servers, spec, prg)
      # 'all' keeps every server's share sum; 'dealer' sums r_c instead of r_c,S-1
      # (`combine_phases` derives it), which the online phase does not need;
      # 'retract' is the dealer's sums over the dropped clients only.
      terms += (values if phase == 'all' else values[:-1] + [r]) + macs
    if phase in ('online', 'all'):
      # The client expands r_c mod 2^k from the seed the dealer sent it.
      r_low = (_mask(r, spec.k) if phase == 'all' else
               client_mask(row_seeds, counter, num_servers, spec, prg))
      epsilon = jnp.where(submitted[:, None], _mask(x - r_low, spec.k), zero)
      terms.append(epsilon)
      if coalition is not None:  # Recorded rounds only.
        if phase == 'online':
          values = _mask_words(row_seeds, counter, num_servers, spec, prg)[0]
        estimate = jnp.where(submitted[:, None],
                             _sum([epsilon] + [values[i] for i in coalition], bits), zero)
  else:
    bits = spec.k
    shares = _share_words(row_seeds, counter, num_servers, spec, prg, dtype)
    terms = shares + [x]
    if coalition is not None:
      full = shares + [_mask(x - _sum(shares, 64), bits)] if shares else [x]
      estimate = jnp.where(submitted[:, None], _sum([full[i] for i in coalition], bits),
                           zero).astype(jnp.uint64)

  # One variadic reduction over the chunk's clients: every term is generated,
  # used and summed inside one fusion (no [chunk, E] array is written).
  operands = tuple(jnp.where(include, t, zero) for t in terms)
  sums = lax.reduce(operands, tuple(zero for _ in operands),
                    lambda xs, ys: tuple(p + q for p, q in zip(xs, ys)), (0,))
  # The first chunk has nothing to add to (acc=None): saves a pass over 2S words.
  acc = tuple(_mask(s if a is None else a + s, bits)
              for a, s in zip(acc or (None,) * len(sums), sums))
  return acc, stats, estimate


_STATIC = ('mode', 'spec', 'num_servers', 'prg', 'chunk', 'num_clients', 'coalition', 'phase',
           'encoded')
PHASES = ('all', 'dealer', 'online', 'retract')


@functools.partial(jax.jit, static_argnames=_STATIC, donate_argnums=(0, 1))
def accumulate(acc, stats, block, block_offset, weights, seeds, max_weight, n, *,
               mode, spec, num_servers, prg, chunk, num_clients, coalition=None,
               phase='all', encoded=False):
  """Chunk n of the clients, added to the accumulators (one fused program).

  privateyes runs in two phases, so that the data-independent DEALER work (the
  offline phase a deployment runs before the round) is timed apart from the
  online phase: ``phase='dealer'`` accumulates R_0..R_S-2, R = Σ_c r_c and
  Mr_0..Mr_S-2 (2S-1 arrays) from the seeds alone, for every client of the round's
  cohort (a dealer cannot know who will drop out); ``phase='online'`` the clients'
  ε_c = x_c − r_c mod 2^k (1 array; one PRG block per element) with the range
  statistics; ``phase='retract'`` (online, only when some client has weight 0) the
  dealer's sums over the dropped clients, which the servers subtract: each holds
  its shares of every [[r_c]]. `combine_phases` gives the accumulators of
  ``phase='all'``, which does all in one pass over the submitting clients (2S
  arrays; semi-honest mode has one phase).

  One call per chunk: XLA:CPU does not fuse the share generation into the
  reduction inside a ``fori_loop`` body (it writes every PRG word to memory, 6x
  the traffic), so the chunk loop stays in Python; a dispatch costs microseconds.

  Args:
    acc: ``num_accumulators`` arrays ``[E]`` (``word_dtype``), donated.
    stats: ``RangeStats`` of all ``[C]`` clients, donated.
    block: float32 ``[B, P]`` holding global rows ``block_offset ..``: the whole
      update matrix (device-resident), or one chunk's rows (host-resident input);
      ``[0, P]`` for ``phase='dealer'`` and ``'retract'``, which read no inputs.
    block_offset: int32, global row of ``block[0]``.
    weights: float32 ``[C]``.
    seeds: uint64 ``[C, S or S-1, 2]`` per-(client, server) seeds.
    max_weight: float32 scalar w_max.
    n: int32 chunk index (traced: one program for every chunk).
    coalition: None, or the coalition whose per-client input estimate to return
      ``[chunk, E]`` uint64 for rows start .. start + chunk: Σ_{i ∈ T} (server
      i's value share of x_c) + ε_c when server 0 is not in the coalition
      (privateyes), i.e. ε_c + Σ_{i ∈ T} r_ci; semi-honest Σ_{i ∈ T} s_ci. Zero
      for clients that did not submit; reduced mod 2^(k+s) (privateyes) or 2^k.
    encoded: ``block`` holds int64 values already in the ring's units, input with
      a zero weight column and no range statistics: the servers' own DP noise,
      input exactly as a client's update (docs/MPC.md §5b).

  Returns:
    (acc, stats, estimate or None).
  """
  if phase not in PHASES or (phase != 'all' and mode != 'privateyes'):
    raise ValueError(f'phase={phase!r}: must be one of {PHASES} ("all" for {mode}).')
  return _chunk(n, acc, stats, block, block_offset, weights, seeds, max_weight,
                mode=mode, spec=spec, num_servers=num_servers, prg=prg, chunk=chunk,
                num_clients=num_clients, coalition=coalition, phase=phase, encoded=encoded)


@functools.partial(jax.jit, static_argnames=('spec', 'num_servers'))
def combine_phases(dealer_acc, online_acc, retract_acc=None, *, spec, num_servers):
  """privateyes accumulators of ``phase='all'`` from the phases' (see `accumulate`).

  The dropped clients' sums (``retract_acc``, if any) are subtracted from the
  cohort's; then R_S-1 = R − Σ_{i<S-1} R_i, so the tuple is R_0..R_S-1,
  Mr_0..Mr_S-2, Eps.
  """
  if retract_acc is not None:
    dealer_acc = tuple(ring.mask_bits(d - r, spec.ring_bits)
                       for d, r in zip(dealer_acc, retract_acc))
  r_sums = list(dealer_acc[:num_servers - 1])
  total = dealer_acc[num_servers - 1]
  macs = list(dealer_acc[num_servers:])
  last = ring.mask_bits(total - _sum(r_sums, 64) if r_sums else total, spec.ring_bits)
  return tuple(r_sums + [last] + macs + [online_acc[0]])


RETRACT_CHUNK = 8  # Rows per retraction program: bounded waste, few dispatches.


def retract_dropped(host_weights: np.ndarray, stats, weights, seeds, max_weight,
                    num_params: int, **static):
  """The cohort's dealer sums restricted to the clients with weight 0 (``phase='retract'``).

  Run online, once the round's submissions are known, over chunks of at most
  `RETRACT_CHUNK` rows that hold a dropped client. ``static``: the round's static
  arguments of `accumulate` (its ``chunk`` is replaced by the small one).

  Returns:
    (accumulators as ``phase='dealer'``'s, or None when nobody dropped out, stats).
  """
  small = min(RETRACT_CHUNK, static['num_clients'])
  static = dict(static, chunk=small, phase='retract')
  no_inputs = jnp.zeros((0, num_params), jnp.float32)
  acc = None
  for n in sorted({int(c) // small for c in np.flatnonzero(host_weights == 0)}):
    acc, stats, _ = accumulate(acc, stats, no_inputs, jnp.int32(0), weights, seeds,
                               max_weight, jnp.int32(n), **static)
  return acc, stats


def chunk_start(n: int, chunk: int, num_clients: int) -> int:
  """First row of chunk n (the last chunk overlaps its predecessor)."""
  return min(n * chunk, num_clients - chunk)


def init_accumulators(mode, spec, num_servers, num_elements, num_clients):
  dtype = word_dtype(mode, spec)
  acc = tuple(jnp.zeros((num_elements,), dtype)
              for _ in range(num_accumulators(mode, num_servers)))
  stats = RangeStats(jnp.zeros((num_clients,), jnp.float32),
                     jnp.ones((num_clients,), jnp.bool_))
  return acc, stats


# ---------------------------------------------------------------------------
# From accumulators to the servers' shares of the sum; adversaries; open; check.
# ---------------------------------------------------------------------------


def sum_shares(acc, mac_key_shares, mode, spec, num_servers):
  """Servers' shares ``[S, E]`` uint64 of Σ_c x_c (and MAC shares, privateyes)."""
  acc = [a.astype(jnp.uint64) for a in acc]
  if mode != 'privateyes':
    bits = spec.k
    random = acc[:num_servers - 1]
    last = ring.mask_bits(acc[-1] - _sum(random, 64) if random else acc[-1], bits)
    return jnp.stack(random + [last]), None
  bits = spec.ring_bits
  r_sums = acc[:num_servers]
  mac_sums = acc[num_servers:2 * num_servers - 1]
  eps = acc[-1]
  alpha = spdz2k.dealer_mac_key(mac_key_shares, spec)
  values = [ring.mask_bits(r_sums[0] + eps, bits)] + r_sums[1:]
  last_mac = alpha * _sum(r_sums, 64) - (_sum(mac_sums, 64) if mac_sums else 0)
  macs = mac_sums + [last_mac]
  macs = [ring.mask_bits(m + mac_key_shares[i] * eps, bits) for i, m in enumerate(macs)]
  return jnp.stack(values), jnp.stack(macs)


def target_client_shares(update_row, weight, seeds_row, mac_key_shares, max_weight,
                         mode, spec, num_servers, prg):
  """One client's input shares ``[S, E]`` (value, MAC or None), as servers hold them.

  privateyes: value_i = r_i + [i = 0] ε, MAC_i = m_i + α_i ε (ε = 0 if the client
  did not submit); semi-honest: the client's shares, zero if it did not submit.
  """
  scaled = scale(update_row[None], weight[None], max_weight)
  submitted = weight > 0
  x = encode(scaled, spec, jnp.uint64)
  if mode == 'privateyes':
    masks = input_masks(seeds_row[None], mac_key_shares, x.shape[1], spec, prg)
    r = ring.mask_bits(jnp.sum(masks.value, axis=0, dtype=jnp.uint64), spec.k)
    epsilon = jnp.where(submitted, ring.mask_bits(x - r, spec.k), jnp.uint64(0))
    inputs = spdz2k.input_from_masked(masks, epsilon, mac_key_shares, spec)
    return inputs.value[:, 0], inputs.mac[:, 0]
  shares = semi_honest_shares(seeds_row[None], x, spec, prg)
  return jnp.where(submitted, shares[:, 0], jnp.uint64(0)), None


class Opened(NamedTuple):
  """Phase OPEN: what is fixed before the coin toss."""
  opened: jax.Array  # [E] uint64: y' (privateyes) or the sum (semi-honest).
  opened_shares: jax.Array | None  # [S, E]: every server's broadcast share
  # (returned only for views: writing it out costs a pass over S·E words).
  mac_shares: jax.Array | None  # [S, E] uint64: MAC shares of y' (privateyes).
  mean: jax.Array  # [P] float32 (only handed out if the check passes).
  total_weight: jax.Array  # () float32.
  weight_sum: jax.Array  # () int64: the opened Σ w̃_c in fixed point (2^f units).


def weighted_mean(opened, max_weight, spec):
  sums = ring.decode(opened, spec, dtype=jnp.float64)
  weight_sum = sums[-1]
  mean = jnp.where(weight_sum > 0, sums[:-1] / jnp.where(weight_sum > 0,
                                                         weight_sum, 1.0), 0.0)
  return mean.astype(jnp.float32), (weight_sum * max_weight).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=('spec',))
def fixed_denominator_mean(opened, denominator, *, spec):
  """DP's mean: the opened (noisy) sums of Δ over the public q·N, float32 ``[P]``."""
  sums = ring.decode(opened, spec, dtype=jnp.float64)
  return (sums[:-1] / denominator).astype(jnp.float32)


def _opened_result(opened, shares, macs, max_weight, spec):
  mean, total = weighted_mean(opened, max_weight, spec)
  low = ring.mask_bits(opened[-1], spec.k).astype(jnp.int64)  # Two's complement.
  weight_fixed = jnp.where(low >= (1 << (spec.k - 1)), low - (1 << spec.k), low)
  return Opened(opened, shares, macs, mean, total, weight_fixed)


def open_authenticated(value, mac, max_weight, *, spec, with_view) -> Opened:
  """Phase OPEN (privateyes): every server broadcasts its value share of y = Σ_c x_c.

  No opening mask [[2^k r']] is added: every [[x_c]] is [[r_c]] + ε_c with r_c
  uniform over all k+s bits and known to nobody, so the top s bits of y are
  already uniform (docs/MPC.md §3, step 7). The MAC shares of y are kept for CHECK.
  """
  opened = ring.mask_bits(jnp.sum(value, axis=0, dtype=jnp.uint64), spec.ring_bits)
  return _opened_result(opened, value if with_view else None, mac, max_weight, spec)


def open_plain(value, max_weight, *, spec, with_view) -> Opened:
  """Phase OPEN, semi-honest: every server broadcasts its share of the sum."""
  opened = ring.mask_bits(jnp.sum(value, axis=0, dtype=jnp.uint64), spec.k)
  return _opened_result(opened, value if with_view else None, None, max_weight, spec)


@functools.partial(jax.jit, static_argnames=('spec', 'with_view'))
def check_values(mac_shares, opened, mac_key_words, joint_seed, *, spec, with_view):
  """Phase CHECK: χ from the joint coin, then every server's z_i (``[S]`` uint64).

  Runs only after the coin toss, which runs only after y' is fixed.
  """
  chi = check_coefficients(joint_seed, opened.shape[0], spec)
  z = spdz2k.mac_check_values(mac_shares, opened, chi, ring.from_words(mac_key_words),
                              spec)
  return z, chi if with_view else None


class TargetRows(NamedTuple):
  """Where the adversary's target client's input lives (adversarial runs only)."""
  updates: jax.Array  # float32 [B, P]: the update matrix or a block holding the row.
  row: jax.Array  # int32: the target's row in ``updates``.
  weights: jax.Array  # float32 [C].
  seeds: jax.Array  # uint64 [C, S or S-1, 2].


@functools.partial(jax.jit, static_argnames=('mode', 'spec', 'num_servers', 'with_view'))
def local_sums_and_open(acc, mac_key_words, max_weight, *, mode, spec, num_servers,
                        with_view) -> Opened:
  """Phases LOCAL SUMS → OPEN of an honest round, one program."""
  privateyes = mode == 'privateyes'
  mac_key_shares = ring.from_words(mac_key_words) if privateyes else None
  value, mac = sum_shares(acc, mac_key_shares, mode, spec, num_servers)
  if not privateyes:
    return open_plain(value, max_weight, spec=spec, with_view=with_view)
  return open_authenticated(value, mac, max_weight, spec=spec, with_view=with_view)


@functools.partial(jax.jit, static_argnames=('mode', 'spec', 'num_servers', 'prg',
                                             'with_view'))
def deviating_sums_and_open(acc, mac_key_words, max_weight, params,
                            target: TargetRows, previous_value_words, previous_mac_words,
                            has_previous, *, mode, spec, num_servers, prg, with_view):
  """`local_sums_and_open` with one malicious server's deviation (adversary.py).

  The deviation is applied at its named point: on the target client's input shares
  (``drop_client`` / ``replay_client``, recomputed from its seeds with
  ``target_client_shares``) or on the server's shares of the sum before opening
  (the other kinds). Returns (Opened, (value words [E, 2], MAC words [E, 2])): the
  malicious server's shares of the target for the replay state.
  """
  privateyes = mode == 'privateyes'
  bits = spec.ring_bits if privateyes else spec.k
  mac_key_shares = ring.from_words(mac_key_words) if privateyes else None
  value, mac = sum_shares(acc, mac_key_shares, mode, spec, num_servers)
  client = params.client
  t_value, t_mac = target_client_shares(
      lax.dynamic_index_in_dim(target.updates, target.row, keepdims=False),
      target.weights[client], target.seeds[client], mac_key_shares, max_weight,
      mode, spec, num_servers, prg)
  value, mac = adversary_lib.corrupt_client_sums(
      params, value, mac, t_value, t_mac, target.weights[client] > 0,
      ring.from_words(previous_value_words),
      ring.from_words(previous_mac_words) if privateyes else None, has_previous, bits)
  value, mac = adversary_lib.corrupt_sum_shares(params, value, mac, bits, spec.k)
  own = lambda a: ring.to_words(lax.dynamic_index_in_dim(a, params.server, keepdims=False))
  replay = (own(t_value), own(t_mac if t_mac is not None else t_value))
  if not privateyes:
    return open_plain(value, max_weight, spec=spec, with_view=with_view), replay
  return open_authenticated(value, mac, max_weight, spec=spec,
                            with_view=with_view), replay


def host_range_check(stats: RangeStats, row_fn, spec: ring.RingSpec, num_terms: int,
                     what: str) -> float:
  """Raises ``ring.RingOverflowError`` as ``ring.check_range`` on the full array would.

  Only the ``[C]`` statistics cross to the host. On failure the offending client
  is the first with a non-finite entry, else the one with the largest |x|, and
  ``row_fn(client)`` (its scaled row ``[E]``) locates the element with
  ``ring.check_range``'s own rule, so the message names (client, element).
  """
  max_abs, finite = (np.asarray(a) for a in jax.device_get(tuple(stats)))
  if max_abs.size == 0:
    return 0.0
  bound = ring.max_abs_value(spec, num_terms)
  if finite.all() and float(max_abs.max()) <= bound:
    return float(max_abs.max())
  client = int(np.flatnonzero(~finite)[0]) if not finite.all() else int(np.argmax(max_abs))
  row = jnp.asarray(row_fn(client))
  all_finite, idx, value = jax.device_get(ring._range_stats(row))  # pylint: disable=protected-access
  return ring.raise_if_out_of_range(bool(finite.all()) and bool(all_finite),
                                    (client, int(idx)), float(value), spec,
                                    num_terms, what)
