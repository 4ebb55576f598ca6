"""PrivatEyes secure aggregation behind the interface of federated/aggregators.py.

Two modes (``mode``):

* ``privateyes``: maliciously secure SPDZ2k aggregation with a dishonest
  majority (any S-1 servers may collude; any deviation aborts the round).
* ``privateyes_semi_honest``: plain additive sharing over Z_2^k, no MACs — what
  the paper's setting costs without active security.

One round (an *attempt* at it), all parties simulated in one process, as phases:

0. MODEL BROADCAST (``distribute_model``, before training): every client compares
   the model digests of all servers (``consistency``).
1. DEALER (simulated offline phase): authenticated input masks [[r_c]] for every
   client element, each server's shares the expansion of a per-(client, server)
   seed of this attempt; the MAC key of this attempt (``state``); and to each
   client the seed of its own mask r_c (no server sends a client anything, so no
   server can shift an honest client's input: docs/MPC.md §3 step 2).
2. INPUT: clients scale, range-check, encode, then privateyes: expand r_c mod 2^k
   from the dealer's seed, broadcast ε_c = x_c - r_c tagged (round, attempt);
   semi-honest: send one
   additive share to each server (S-1 of them as PRG seeds). Fewer than
   ``min_clients`` submitting: nothing is opened.
3. LOCAL SUMS and OPEN: [[x_c]] = [[r_c]] + ε_c, added locally over clients; every
   server broadcasts its share of the sum.
4. COIN (after the opening): a commit-then-reveal coin toss of every server's own
   randomness (``coin``) gives the check coefficients χ.
5. CHECK: the batched MAC check with commit-then-reveal of every check value.
6. OUTPUT: the opened total weight must be in (0, n_submitted]; the mean.
Any failure after the opening aborts the round and retires the attempt
(``retire_attempt``: a new MAC key and new dealer material next time).

With ``validity`` (docs/MPC.md §5c) the clients also input their update's bits and
slack, and between INPUT and LOCAL SUMS a coin γ, the opened zero tests and their own
MAC check decide who is excluded by name (``_apply_validity``).

``apply`` runs steps 1-3 chunk by chunk of ``client_chunk`` clients, one fused
XLA program per chunk from float updates to the servers' share sums
(``fused``); it never materialises ``[servers, clients, elements]``, so memory is
bounded whatever the number of clients. ``preprocess`` /
``package_client_inputs`` / ``aggregate`` are the same protocol step by step
with every message materialised (tests, small federations); both give the same
opened sum, shares and check values bit for bit.

Weighted averaging (decision). The weighted mean needs Σ_c w_c Δ_c and Σ_c w_c,
but a client's sample count w_c is private too (it says how much data a person
has), and the servers must not divide shares. So each client secret-shares
w̃_c·Δ_c together with w̃_c as one extra element, where w̃_c = w_c / w_max and
w_max is a PUBLIC bound from the config (``max_weight`` = local steps × batch
size; never max(weights), which is derived from private data). Only the two sums
are opened, and the division Σ w̃_c Δ_c / Σ w̃_c = Σ w_c Δ_c / Σ w_c happens on
public values. Scaling by w̃_c ≤ 1 also keeps values small for the range check.
A client with weight 0 submits nothing and is not in the sum (dropout); the
count of submitting clients is public.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Mapping, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from privateyes_jax.federated.aggregators import AggregateResult
from privateyes_jax.mpc import adversary as adversary_lib
from privateyes_jax.mpc import coin as coin_lib
from privateyes_jax.mpc import consistency
from privateyes_jax.mpc import costs
from privateyes_jax.mpc import fused
from privateyes_jax.mpc import prg as prg_lib
from privateyes_jax.mpc import ring
from privateyes_jax.mpc import sharing
from privateyes_jax.mpc import spdz2k
from privateyes_jax.mpc import validity as validity_lib
from privateyes_jax.privacy import discrete_gaussian
from privateyes_jax.privacy import dp as dp_lib

MODES = ('privateyes', 'privateyes_semi_honest')


# Fewest submitting clients a round opens (docs/MPC.md §5a): with 2, each of the
# two learns the other's update from the output; 3 is the smallest cohort in
# which no single client can subtract itself to get another's exact update.
DEFAULT_MIN_CLIENTS = 3

# Auto chunk size: per-chunk working set ≤ this many bytes (see ``chunk_size``).
DEFAULT_CHUNK_MEMORY_BYTES = 1 << 30

_RANGE_WHAT = 'client input [client, element] (w_c/w_max · Δ_c, then w_c/w_max)'


class SubmissionError(ValueError):
  """A client submission for the wrong round or attempt, or of the wrong shape."""


COHORT_TOO_SMALL = 'cohort too small'  # AggregateResult.failure prefix (nothing opened).
OUTPUT_OUT_OF_RANGE = 'opened total weight out of range'  # Failure prefix.

# Key derivation tags of the servers' DP noise (docs/MPC.md §5b).
_NOISE_SAMPLING = 0x44504E53  # Each server's own noise draw: per round and server.
_NOISE_INPUT = 0x44504E49  # The dealer's masks of the noise inputs: per attempt too.
_VALIDITY_DEALER = 0x56414C44  # The dealer's validity material: per attempt and client.
# Deviations the validity-checked round does not model (they act on the fused path's
# per-client shares); the sum, coin, check and tamper_* kinds are wired in.
_NOT_WITH_VALIDITY = ('drop_client', 'replay_client', 'wrong_mask_to_client')
# Largest chance, per round, that some noise element leaves the ring's headroom.
NOISE_HEADROOM_FAILURE = 1e-12


class ClientSubmission(NamedTuple):
  """What the clients send to the servers in one round."""
  round_tag: jax.Array  # shape=[clients], dtype=int32; round packaged for; -1: none.
  payload: jax.Array  # privateyes: ε [clients, elements] uint64 in Z_2^k;
  # semi-honest: shares [servers, clients, elements] uint64 in Z_2^k.
  submitted: jax.Array  # shape=[clients], dtype=bool; public: who sent an input.
  attempt_tag: jax.Array | None = None  # shape=[clients], int32; attempt packaged
  # for (None: attempt 0).


class Preprocessing(NamedTuple):
  """DEALER output for one privateyes round (simulated offline phase).

  Two messages: the servers' shares of the masks, and each client's own mask. A
  deployment sends client c the 16-byte seed s_c,S-1 of r_c (``round_seeds``,
  column S-1) and the client expands it (``fused.client_mask``); the simulation
  hands over the expansion. The servers never send a client its mask: a share
  from a server is not authenticated towards the client (docs/MPC.md §3 step 2).
  """
  input_masks: spdz2k.AuthShares  # [[r]]: [servers, clients, elements] uint64.
  client_masks: jax.Array  # r mod 2^k: [clients, elements] uint64; row c goes to
  # client c alone.


class SecureAggregatorState(NamedTuple):
  """Aggregator state; ring elements as uint32 (low, high) words (see ring.py)."""
  mac_key_shares: jax.Array  # shape=[servers, 2] ([1, 2] dummy semi-honest), uint32.
  replay_value_share: jax.Array  # shape=[elements, 2] or [1, 2] dummy, uint32; the
  # replaying server's previous value share of its target client.
  replay_mac_share: jax.Array  # shape=[elements, 2] or [1, 2] dummy, uint32.
  has_previous: jax.Array  # shape=(), dtype=bool; a previous round exists.
  dealer_seed: jax.Array  # shape=[2, 2], dtype=uint32; the DEALER's 128-bit seed
  # (words of two uint64): the MAC key of every attempt derives from it.
  attempt: jax.Array  # shape=(), dtype=uint32; attempts retired by an abort so far.
  # Mixed into the MAC key, the dealer's masks and the tags; advanced on abort.


# ---------------------------------------------------------------------------
# Jitted phases (module level, so every aggregator instance shares the cache).
# ---------------------------------------------------------------------------


@jax.jit
def scale_individual_updates(individual_updates: jax.Array, weights: jax.Array,
                             max_weight: jax.Array):
  """Client side: x_c = [w̃_c · Δ_c, w̃_c] with w̃_c = w_c / w_max.

  Args:
    individual_updates: float32 ``[clients, params]``.
    weights: float32 ``[clients]``.
    max_weight: float32 scalar, the public bound w_max.

  Returns:
    (float32 ``[clients, params + 1]``, bool ``[clients]`` submitted).
  """
  return fused.scale(individual_updates, weights, max_weight), weights > 0


@functools.partial(jax.jit, static_argnames=('num_servers', 'spec'))
def _dealer_key_generation(dealer_seed_words, attempt, num_servers, spec):
  """DEALER: the MAC key shares α_i of ``attempt`` as words ``[S, 2]``."""
  return ring.to_words(fused.attempt_mac_key_shares(
      ring.from_words(dealer_seed_words), attempt, num_servers, spec))


@functools.partial(jax.jit, static_argnames=('num_clients', 'num_servers', 'mode'))
def round_seeds(key, attempt, num_clients, num_servers, mode):
  """Per-(client, server) seeds ``[C, S or S-1, 2]`` of one attempt at the round
  (``fused.attempt_root``).

  privateyes: the DEALER's seeds of [[r_c]]: for servers i < S-1 the seed of their
  value and MAC shares (what a seed-compressed dealer sends server i); column
  S-1 is the seed of r_c itself: the dealer sends it to client c alone (never to a
  server; server S-1 gets its shares in full, `costs.dealer_send_bytes`), and the
  client expands its mask from it. Semi-honest: client c's seeds
  of its S-1 random shares (what the client sends instead of those shares).
  All are Threefry sub-seeds of the attempt's seed (``prg.child_seed``).
  """
  num_inputs = num_servers if mode == 'privateyes' else num_servers - 1
  role = fused.DEALER if mode == 'privateyes' else fused.CLIENTS
  root = fused.attempt_root(prg_lib.key_seed(key), attempt)
  return fused.round_seed_tables(root, num_clients, num_inputs, role)


@functools.partial(jax.jit, static_argnames=('num_elements', 'spec', 'prg'))
def _dealer_round(input_seeds, mac_key_words, num_elements, spec, prg):
  mac_key_shares = ring.from_words(mac_key_words)
  return Preprocessing(*fused.input_masks(input_seeds, mac_key_shares, num_elements, spec,
                                          prg, with_client_masks=True))


def _tags(submitted, round_idx, attempt):
  none = jnp.int32(-1)
  return (jnp.where(submitted, round_idx, none).astype(jnp.int32),
          jnp.where(submitted, attempt, none).astype(jnp.int32))


@functools.partial(jax.jit, static_argnames=('spec',))
def _clients_privateyes(scaled, submitted, client_masks, round_idx, attempt, spec):
  # Client c uses row c of the dealer's message (r_c mod 2^k) and nothing a server sent.
  epsilon = spdz2k.client_masked_input(ring.encode(scaled, spec), client_masks, spec)
  epsilon = jnp.where(submitted[:, None], epsilon, jnp.uint64(0))
  round_tag, attempt_tag = _tags(submitted, round_idx, attempt)
  return ClientSubmission(round_tag, epsilon, submitted, attempt_tag)


@functools.partial(jax.jit, static_argnames=('spec', 'prg'))
def _clients_semi_honest(seeds, scaled, submitted, round_idx, attempt, spec, prg):
  shares = fused.semi_honest_shares(seeds, ring.encode(scaled, spec), spec, prg)
  shares = jnp.where(submitted[None, :, None], shares, jnp.uint64(0))
  round_tag, attempt_tag = _tags(submitted, round_idx, attempt)
  return ClientSubmission(round_tag, shares, submitted, attempt_tag)


def _estimate_from_shares(value, epsilon, submitted, coalition, bits):
  """Σ_{i ∈ T} value_i (+ ε when server 0 ∉ T), zero for absent clients."""
  total = jnp.sum(value[jnp.asarray(coalition)], axis=0, dtype=jnp.uint64)
  if epsilon is not None and 0 not in coalition:
    total = total + epsilon
  return jnp.where(submitted[:, None], ring.mask_bits(total, bits), jnp.uint64(0))


@functools.partial(jax.jit, static_argnames=('mode', 'spec', 'adversarial',
                                             'coalition'))
def _servers_step_by_step(input_masks, payload, submitted, mac_key_words, max_weight, params,
                          previous_value_words, previous_mac_words, has_previous, mode,
                          spec, adversarial, coalition):
  """Servers on materialised per-client shares: INPUT → LOCAL SUMS → OPEN.

  ``input_masks`` is the servers' part of the dealer's message (``prep.input_masks``);
  the clients' masks (``prep.client_masks``) never reach a server.
  """
  privateyes = mode == 'privateyes'
  bits = spec.ring_bits if privateyes else spec.k
  mac_key_shares = ring.from_words(mac_key_words) if privateyes else None
  if privateyes:
    inputs = spdz2k.input_from_masked(input_masks, payload, mac_key_shares, spec)
    value, mac = inputs.value, inputs.mac
  else:
    value, mac = payload, None
  include = jnp.broadcast_to(submitted[None, :], value.shape[:2])
  honest_value, honest_mac = value, mac
  if adversarial:
    value, mac, include = adversary_lib.corrupt_client_shares(
        params, value, mac, include, ring.from_words(previous_value_words),
        None if mac is None else ring.from_words(previous_mac_words), has_previous)
  value_sum = sharing.sum_over_clients(value, include, bits)
  mac_sum = None if mac is None else sharing.sum_over_clients(mac, include, bits)
  if adversarial:
    value_sum, mac_sum = adversary_lib.corrupt_sum_shares(params, value_sum, mac_sum,
                                                          bits, spec.k)
  if privateyes:
    out = fused.open_authenticated(value_sum, mac_sum, max_weight, spec=spec,
                                   with_view=True)
  else:
    out = fused.open_plain(value_sum, max_weight, spec=spec, with_view=True)
  estimate = None
  if coalition is not None:
    estimate = _estimate_from_shares(honest_value, payload if privateyes else None,
                                     submitted, coalition, bits)
  return out, honest_value, honest_mac, estimate


@jax.jit
def _replay_words(value, mac, server):
  return ring.to_words(value[server]), ring.to_words(mac[server])


def _timed(fn, *args, **kwargs):
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args, **kwargs))
  return out, time.perf_counter() - start


# ---------------------------------------------------------------------------
# Client-side packaging and server-side validation.
# ---------------------------------------------------------------------------


def validate_submission(submission: ClientSubmission, round_idx: int,
                        num_clients: int, num_elements: int,
                        num_servers: int | None = None, attempt: int = 0) -> None:
  """Server side: rejects submissions of the wrong shape or for another round or attempt.

  Args:
    submission: what arrived.
    round_idx: the round the servers are in.
    num_clients: C.
    num_elements: E = params + 1.
    num_servers: S for semi-honest payloads ``[S, C, E]``; None for ε ``[C, E]``.
    attempt: the servers' attempt at this round (``state.attempt``).

  Raises:
    SubmissionError: naming the clients and the rounds, attempts or shapes involved.
  """
  expected = ((num_clients, num_elements) if num_servers is None
              else (num_servers, num_clients, num_elements))
  if tuple(submission.payload.shape) != expected:
    raise SubmissionError(
        f'client payload has shape {tuple(submission.payload.shape)}, expected '
        f'{expected} ([servers,] clients, params + 1) in round {round_idx}.')
  for name in ('round_tag', 'submitted', 'attempt_tag'):
    value = getattr(submission, name)
    if value is None:
      continue
    shape = tuple(value.shape)
    if shape != (num_clients,):
      raise SubmissionError(f'submission.{name} has shape {shape}, expected '
                            f'({num_clients},).')
  tags = np.asarray(jax.device_get(submission.round_tag))
  submitted = np.asarray(jax.device_get(submission.submitted))
  attempts = (np.zeros_like(tags) if submission.attempt_tag is None
              else np.asarray(jax.device_get(submission.attempt_tag)))
  stale = np.flatnonzero(submitted & ((tags != round_idx) | (attempts != attempt)))
  if stale.size:
    raise SubmissionError(
        f'client(s) {stale.tolist()} sent inputs tagged for (round, attempt) '
        f'{list(zip(tags[stale].tolist(), attempts[stale].tolist()))} but the servers '
        f'are in round {round_idx}, attempt {attempt}: stale or replayed submissions '
        'are rejected.')


def _config_get(config: Any, name: str, default: Any) -> Any:
  if config is None:
    return default
  if isinstance(config, Mapping):
    return config.get(name, default)
  return getattr(config, name, default)


# ---------------------------------------------------------------------------
# The aggregator.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class SecureAggregator:
  """PrivatEyes secure aggregation (SPDZ2k or semi-honest additive sharing).

  Keyword-only. Example:

    agg = SecureAggregator(max_weight=local_steps * batch_size, num_servers=3)
    state = agg.init(key)
    state, result = agg.apply(state, updates, weights, round_key, round_idx)

  Attributes:
    max_weight: public bound w_max on a client's weight (local steps × batch).
    spec: ring parameters (k, f, s).
    num_servers: S ≥ 2.
    mode: 'privateyes' or 'privateyes_semi_honest'.
    adversary: one actively malicious server's deviation (default honest).
    coalition: passive coalition (≤ S-1 servers) whose view is recorded.
    record_view: return ``coalition_view`` in ``AggregateResult.view``.
    num_params: required only by the ``replay_client`` adversary (its state
      keeps last round's shares, so the shape must be known at ``init``).
    client_chunk: clients per fused chunk program in ``apply``; 0 picks the
      largest chunk whose working set fits ``chunk_memory_bytes``
      (``chunk_size``). Results do not depend on it.
    chunk_memory_bytes: the auto chunk's memory budget.
    prg: share generator, one of ``prg.PRGS`` (both Threefry, see prg.py).
    min_clients: a round with fewer submitting clients opens nothing and fails
      with ``COHORT_TOO_SMALL`` (docs/MPC.md §5a).
    server_rng: the servers' own randomness (coin contributions, commitment
      nonces): None = OS entropy (``secrets``); a ``numpy.random.Generator`` only
      in tests that compare two code paths bit for bit.
    validity: the norm-bound validity check inside the MPC (``validity.ValiditySettings``,
      docs/VALIDITY_DESIGN.md): honest clients clip w̃Δ to its clip_norm; the servers
      check every client's input against the bound without opening it and exclude
      the failing clients by name (``AggregateResult.excluded``).
    dp: client-level DP (``privacy.dp.DPSettings``): every server inputs its own
      discrete Gaussian noise of std ``dp_lib.mpc_noise_std`` into the sum before
      it is opened, and the mean divides by the public q·N (docs/MPC.md §5b).
      The clients' clipping, sampling and uniform weights are the engine's.
  """
  max_weight: float  # No default: it must come from the public config.
  spec: ring.RingSpec = ring.RingSpec()
  num_servers: int = 3
  mode: str = 'privateyes'
  adversary: adversary_lib.AdversarySpec = adversary_lib.AdversarySpec()
  coalition: tuple[int, ...] = ()
  record_view: bool = False
  num_params: int | None = None
  client_chunk: int = 0
  chunk_memory_bytes: int = DEFAULT_CHUNK_MEMORY_BYTES
  prg: str = 'threefry2x64'
  min_clients: int = DEFAULT_MIN_CLIENTS
  server_rng: Any = dataclasses.field(default=None, compare=False)
  dp: dp_lib.DPSettings | None = None
  validity: validity_lib.ValiditySettings | None = None

  def __post_init__(self):
    sharing.check_num_servers(self.num_servers)
    if self.mode not in MODES:
      raise ValueError(f'mode={self.mode!r} is not one of {MODES}.')
    if not (np.isfinite(self.max_weight) and self.max_weight > 0):
      raise ValueError(f'max_weight={self.max_weight} must be a positive public '
                       'bound (e.g. local_steps * batch_size).')
    self.adversary.validate(self.num_servers, self.spec, self.mode)
    object.__setattr__(self, 'coalition', adversary_lib.validate_coalition(
        self.coalition, self.num_servers))
    if self.adversary.needs_previous_shares and self.num_params is None:
      raise ValueError('the replay_client adversary keeps last round\'s shares in '
                       'the state; pass num_params.')
    if not isinstance(self.client_chunk, int) or self.client_chunk < 0:
      raise ValueError(f'client_chunk={self.client_chunk!r} must be an int >= 0 '
                       '(0: automatic).')
    if self.chunk_memory_bytes <= 0:
      raise ValueError(f'chunk_memory_bytes={self.chunk_memory_bytes} must be > 0.')
    prg_lib.check_prg(self.prg)
    if not isinstance(self.min_clients, int) or self.min_clients < 1:
      raise ValueError(f'min_clients={self.min_clients!r} must be an int >= 1.')
    if self.validity is not None:
      if self.mode != 'privateyes':
        raise ValueError(f'aggregator.validity needs mode privateyes (MACs), not {self.mode!r}.')
      if self.dp is not None:
        raise ValueError('aggregator.validity with aggregator.dp is not built yet: the '
                         'servers\' noise inputs are not range-checked; use one of them.')
      if self.record_view:
        raise ValueError('record_view with aggregator.validity: the coalition view of a '
                         'checked round is not recorded yet; set record_views to \'\'.')
      if self.adversary.kind in _NOT_WITH_VALIDITY:
        raise ValueError(f'adversary kind {self.adversary.kind!r} is not wired into the '
                         'validity-checked round; choose a sum, coin, check or '
                         'tamper_* kind.')
    elif self.adversary.kind in adversary_lib.VALIDITY_KINDS:
      raise ValueError(f'adversary kind {self.adversary.kind!r} tampers with the validity '
                       'check: set aggregator.validity.')

  @property
  def name(self) -> str:
    return self.mode

  @classmethod
  def from_config(cls, config: Any, *, max_weight: float,
                  num_params: int | None = None) -> 'SecureAggregator':
    """Builds from ``config.mpc``-style fields (ConfigDict, dict or object).

    Fields: k, f, s, num_servers, mode, coalition, record_view, client_chunk,
    prg, min_clients, adversary.{kind, server, client, magnitude, element,
    before_commit, guess}.
    ``max_weight`` (local steps × batch size) and ``num_params`` come from the
    rest of the config.
    """
    adv = _config_get(config, 'adversary', None)
    adversary = adversary_lib.AdversarySpec(
        kind=_config_get(adv, 'kind', 'none'),
        server=int(_config_get(adv, 'server', 0)),
        client=int(_config_get(adv, 'client', 0)),
        magnitude=int(_config_get(adv, 'magnitude', 1)),
        element=int(_config_get(adv, 'element', -1)),
        before_commit=bool(_config_get(adv, 'before_commit', False)),
        guess=tuple(int(g) for g in (_config_get(adv, 'guess', ()) or ())))
    spec = ring.RingSpec(k=int(_config_get(config, 'k', 32)),
                         f=int(_config_get(config, 'f', 16)),
                         s=int(_config_get(config, 's', 32)))
    return cls(spec=spec, num_servers=int(_config_get(config, 'num_servers', 3)),
               max_weight=float(max_weight),
               mode=_config_get(config, 'mode', 'privateyes'),
               adversary=adversary,
               coalition=tuple(_config_get(config, 'coalition', ()) or ()),
               record_view=bool(_config_get(config, 'record_view', False)),
               num_params=num_params,
               client_chunk=int(_config_get(config, 'client_chunk', 0) or 0),
               prg=str(_config_get(config, 'prg', 'threefry2x64')),
               min_clients=int(_config_get(config, 'min_clients', DEFAULT_MIN_CLIENTS)),
               dp=_config_get(config, 'dp', None),
               validity=_config_get(config, 'validity', None))

  # --- memory plan -----------------------------------------------------------

  def chunk_size(self, num_clients: int, num_params: int) -> int:
    """Clients per chunk: ``client_chunk``, or the auto memory plan.

    Per client in a chunk the fused program needs at most
    ``bytes_per_client(num_params)`` = E·(4 + 8) bytes: its float32 row (if XLA
    copies the slice) and one uint64 word per element in flight; the PRG words,
    encodings and shares live in registers inside the fusion (XLA's memory
    analysis of the CPU program confirms a temporary footprint independent of
    the chunk size; see docs/MPC.md). Fixed per round: the accumulators,
    ``num_accumulators × E`` words, plus [C]-sized seeds and statistics. The
    auto chunk is the largest with chunk × bytes_per_client ≤
    ``chunk_memory_bytes``, balanced so that the chunks are about equal (the last
    chunk overlaps the previous one instead of being padded).
    """
    if num_clients < 1:
      return 1
    if self.client_chunk:
      return min(self.client_chunk, num_clients)
    cap = max(1, self.chunk_memory_bytes // self.bytes_per_client(num_params))
    num_chunks = -(-num_clients // cap)
    return -(-num_clients // num_chunks)

  @staticmethod
  def bytes_per_client(num_params: int) -> int:
    return (num_params + 1) * (4 + 8)

  def memory_plan(self, num_clients: int, num_params: int) -> dict[str, int]:
    """The bytes ``apply`` allocates besides the caller's updates (for reports)."""
    num_elements = num_params + 1
    chunk = self.chunk_size(num_clients, num_params)
    word = np.dtype(fused.word_dtype(self.mode, self.spec)).itemsize
    accumulators = fused.num_accumulators(self.mode, self.num_servers)
    if self.mode == 'privateyes':
      accumulators *= 2  # The dealer's 2S-1 sums and the online one, then the combined 2S.
    return {
        'client_chunk': chunk,
        'num_chunks': -(-num_clients // chunk),
        'bytes_per_client_in_chunk': self.bytes_per_client(num_params),
        'chunk_working_set_bytes': chunk * self.bytes_per_client(num_params),
        'accumulator_bytes': accumulators * num_elements * word,
        'per_round_fixed_bytes': num_clients * (self.num_servers * 16 + 9)
                                 + 3 * self.num_servers * num_elements * 8,
        'view_host_bytes': num_clients * num_elements * 8 if self.record_view else 0,
    }

  # --- init ----------------------------------------------------------------

  def init(self, key: jax.Array) -> SecureAggregatorState:
    """DEALER key generation: its 128-bit seed and the MAC key shares α_i of attempt 0."""
    with jax.enable_x64(True):
      dealer_seed = ring.to_words(prg_lib.key_seed(key))
      attempt = jnp.zeros((), jnp.uint32)
      if self.mode == 'privateyes':
        mac_key_words = _dealer_key_generation(dealer_seed, attempt, self.num_servers,
                                               self.spec)
      else:
        mac_key_words = jnp.zeros((1, 2), jnp.uint32)  # Unused dummy (no MACs).
      # Unused leaves are (1, 2) dummies, not empty: Orbax cannot save zero-size arrays.
      replay_elements = (self.num_params + 1
                         if self.adversary.needs_previous_shares else 1)
      empty = jnp.zeros((replay_elements, 2), jnp.uint32)
      return SecureAggregatorState(mac_key_words, empty, empty,
                                   jnp.zeros((), jnp.bool_), dealer_seed, attempt)

  def retire_attempt(self, state: SecureAggregatorState) -> SecureAggregatorState:
    """An abort retires the attempt: the next one gets a new MAC key and new masks.

    The attempt counter is mixed into the MAC key (``fused.attempt_mac_key_shares``)
    and into every seed of the round (``fused.attempt_root``); the coins are fresh
    OS entropy anyway. Called by ``apply`` on every failure after the opening; the
    engine checkpoints the returned state (federated/engine.py).
    """
    with jax.enable_x64(True):
      attempt = jnp.asarray(state.attempt, jnp.uint32) + jnp.uint32(1)
      mac_key_words = state.mac_key_shares
      if self.mode == 'privateyes':
        mac_key_words = _dealer_key_generation(state.dealer_seed, attempt,
                                               self.num_servers, self.spec)
      return state._replace(mac_key_shares=mac_key_words, attempt=attempt)

  def distribute_model(self, global_model: np.ndarray, num_clients: int, *,
                       craft=consistency.perturb,
                       check: bool = True) -> consistency.Distribution:
    """Phase MODEL BROADCAST (before the clients train): consistent models.

    Every server sends the global model to every client; each client compares the
    SHA-256 digests of all servers' models and refuses on a mismatch
    (``consistency.distribute``). The ``inconsistent_model`` adversary's server
    sends ``craft(model)`` to every client but its target.
    """
    adversary = self.adversary
    malicious = (adversary.server,) if adversary.kind == 'inconsistent_model' else ()
    return consistency.distribute(np.asarray(global_model, np.float32), num_clients,
                                  self.num_servers, malicious=malicious,
                                  target=adversary.client, craft=craft, check=check)

  # --- shared checks -----------------------------------------------------------

  def _check_weights(self, weights: jax.Array, num_clients: int) -> np.ndarray:
    if weights.shape != (num_clients,):
      raise ValueError(f'expected updates [clients, params] and weights [clients]; '
                       f'got {num_clients} clients and weights {weights.shape}.')
    host_weights = np.asarray(jax.device_get(weights))
    bad = np.flatnonzero(~np.isfinite(host_weights) | (host_weights < 0)
                         | (host_weights > self.max_weight))
    if bad.size:
      raise ValueError(
          f'client weight(s) {host_weights[bad].tolist()} of client(s) '
          f'{bad.tolist()} are outside [0, max_weight={self.max_weight}]; '
          'max_weight must be a public upper bound.')
    return host_weights

  def _check_adversary(self, num_clients: int, num_params: int) -> None:
    adversary = self.adversary
    num_elements = num_params + 1
    if adversary.kind in adversary_lib.CLIENT_KINDS and not (
        0 <= adversary.client < num_clients):
      raise ValueError(f'adversary.client={adversary.client} is not a client in '
                       f'[0, {num_clients}).')
    if adversary.kind in adversary_lib.ELEMENT_KINDS and adversary.element >= num_elements:
      raise ValueError(f'adversary.element={adversary.element} is not an element '
                       f'in [-1, {num_elements}).')
    if adversary.needs_previous_shares and num_params != self.num_params:
      raise ValueError(f'replay_client adversary was built for num_params='
                       f'{self.num_params}, got {num_params}.')

  def _previous_words(self, state, num_elements):
    previous_value, previous_mac = state.replay_value_share, state.replay_mac_share
    if previous_value.shape[0] != num_elements:
      # Not a replay adversary: a dummy of the right shape keeps one program
      # for every adversary kind.
      previous_value = previous_mac = jnp.zeros((num_elements, 2), jnp.uint32)
    return previous_value, previous_mac

  def _adversary_params(self, num_elements: int):
    """The deviation's traced parameters (rush_coin: the χ of the seed it aims at)."""
    adversary = self.adversary
    guess = None
    if adversary.kind == 'rush_coin':
      chi = fused.check_coefficients(jnp.asarray(adversary.guess, jnp.uint64),
                                     num_elements, self.spec)
      guess = tuple(int(g) for g in np.asarray(jax.device_get(chi))[:2])
    return adversary.params(guess)

  def _coin_and_check(self, state, out: fused.Opened, with_view: bool):
    """Phases COIN → CHECK, after OPEN fixed y' (privateyes).

    COIN: each server draws a 128-bit contribution from its own randomness, commits,
    then all reveal; the joint seed is their XOR (``coin.toss``). CHECK: χ from the
    joint seed, each server's z_i on the device (only S scalars reach the host),
    committed with a fresh 128-bit nonce, then revealed and verified.

    Returns:
      (MacCheckResult, public record of the phases for the view).
    """
    # Deviations at named points of these phases (None / identity when honest).
    cheat = self.adversary if self.adversary.deviates_in_aggregation else None
    reveal_coin = cheat and adversary_lib.rushing_coin(cheat, cheat.guess)
    check_value_at = ((lambda z, stage: adversary_lib.corrupt_check_value(
        cheat, z, self.spec, stage)) if cheat else (lambda z, stage: z))

    coins = coin_lib.toss(self.num_servers, self.server_rng, reveal_coin)
    public = {'coin_contributions': coins.contributions, 'check_values': None,
              'check_coefficients': None}
    if not coins.ok:
      return spdz2k.MacCheckResult(False, 'coin', coins.failure, 0), public
    z, chi = fused.check_values(out.mac_shares, out.opened, state.mac_key_shares,
                                jnp.asarray(coins.joint), spec=self.spec,
                                with_view=with_view)
    nonces = coin_lib.check_nonces(self.server_rng, self.num_servers)
    committed = check_value_at(np.asarray(jax.device_get(z), np.uint64), 'commit')
    commitments = spdz2k.commit_check_values(committed, nonces)
    revealed = check_value_at(committed, 'reveal')
    public.update(check_values=revealed, check_coefficients=chi)
    return spdz2k.verify_check_values(commitments, revealed, nonces, self.spec), public

  def _output_check(self, out: fused.Opened, num_submitted: int):
    """Phase OUTPUT: the opened Σ w̃_c must be in (0, n_submitted] (fixed point).

    Each honest client's w̃_c is in [0, 1]; anything else means some client's
    weight column was out of range (a malicious client writing its own ε), and a
    zero or negative total would give no mean at all. Never silently zero.
    """
    weight_fixed = int(jax.device_get(out.weight_sum))
    bound = num_submitted << self.spec.f
    if 0 < weight_fixed <= bound:
      return spdz2k.MacCheckResult(True, '', '', 0)
    return spdz2k.MacCheckResult(
        False, 'output',
        f'{OUTPUT_OUT_OF_RANGE}: the opened Σ w_c/w_max is {weight_fixed / 2**self.spec.f:.6g}, '
        f'outside (0, {num_submitted}] for {num_submitted} submitting client(s); some '
        'client\'s weight column is out of [0, 1]; round aborted, nothing handed out.', 0)

  def _finish(self, state, out: fused.Opened, estimate, submitted, num_submitted,
              num_params, round_idx, with_view, timings, noise=None):
    """COIN → CHECK → OUTPUT; an abort retires the attempt. Returns (state, result)."""
    start_time = time.perf_counter()
    public = {}
    check = spdz2k.MacCheckResult(True, '', '', 0)
    if self.mode == 'privateyes':
      check, public = self._coin_and_check(state, out, with_view)
    if check.ok:
      check = self._output_check(out, num_submitted)
    timings['checking_s'] = time.perf_counter() - start_time
    if check.ok and self.dp is not None:
      # DP: the noisy sum over the public q·N, never over the realised cohort.
      mean = fused.fixed_denominator_mean(out.opened, self.dp.expected_clients,
                                          spec=self.spec)
      total = out.total_weight
    elif check.ok:
      mean, total = out.mean, out.total_weight
    else:
      # Never hand out an unverified output: the round aborts.
      mean = jnp.zeros((num_params,), jnp.float32)
      total = jnp.zeros((), jnp.float32)
    view = None
    if with_view:
      privateyes = self.mode == 'privateyes'
      view = adversary_lib.coalition_view(
          self.coalition,
          coalition_input_estimate=estimate,
          opened_sum_shares=out.opened_shares,
          opened_sum=out.opened,
          mac_key_shares=ring.from_words(state.mac_key_shares) if privateyes else None,
          submitted=submitted,
          output_mean=mean,
          round=round_idx,
          attempt=int(state.attempt),
          **public)
      if noise is not None:
        # The coalition knows its own noise draws (and may subtract them).
        own = jnp.sum(noise[jnp.asarray(self.coalition, jnp.int32)], axis=0)
        view['coalition_noise'] = np.asarray(jax.device_get(own), np.float64).astype(
            np.float32) / np.float32(2.0**self.spec.f)
    new_state = state if check.ok else self.retire_attempt(state)
    return new_state, AggregateResult(mean, total, bool(check.ok), check.failure, view, {})

  def _cohort_too_small(self, num_submitted: int, round_idx: int, num_params: int):
    """Phase INPUT refuses a cohort below ``min_clients``: nothing is opened."""
    if num_submitted >= self.min_clients:
      return None
    del round_idx  # The caller names the round (1-based, as users count them).
    failure = (f'{COHORT_TOO_SMALL}: {num_submitted} client(s) submitted, fewer than '
               f'aggregator.min_clients={self.min_clients}; '
               'nothing was opened.')
    return AggregateResult(jnp.zeros((num_params,), jnp.float32),
                           jnp.zeros((), jnp.float32), False, failure, None,
                           {'mpc/num_submitted': float(num_submitted), 'mpc/aborted': 1.0})

  def _stats(self, num_submitted, num_clients, num_params, timings):
    num_elements = num_params + 1
    stats = costs.round_costs(self.mode, self.spec, self.num_servers,
                              num_submitted, num_elements,
                              seed_compressed=True).as_stats()
    if self.mode == 'privateyes_semi_honest':
      stats['mpc/client_upload_bytes_uncompressed'] = float(costs.semi_honest_costs(
          self.spec, self.num_servers, num_submitted, num_elements).client_upload_bytes)
    if self.adds_noise:
      # DP (§5b): each server broadcasts its masked noise η_i (P values of Z_2^k) to
      # the others; the dealer adds S input masks to its material.
      stats['mpc/dp_noise_std'] = self.noise_std(num_params) / 2.0**self.spec.f
      stats['mpc/dp_noise_broadcast_bytes'] = float(
          self.num_servers * (self.num_servers - 1) * num_params * self.spec.value_bytes)
    stats.update({
        'mpc/num_submitted': float(num_submitted),
        'mpc/client_chunk': float(self.chunk_size(num_clients, num_params)),
        'mpc/aborted': float(timings.pop('aborted')),
        **{f'mpc/{k}': float(v) for k, v in timings.items()},
    })
    if self.mode == 'privateyes':
      # The dealer prepares masks for the whole cohort: it cannot know who drops out.
      offline = costs.estimate_offline_phase(
          costs.num_preprocessed_masks(num_clients, num_elements))
      stats.update({'mpc/' + k: v for k, v in offline.items()})
      stats['mpc/dealer_send_bytes'] = float(costs.dealer_send_bytes(
          self.spec, self.num_servers, num_clients, num_elements))
    return stats

  # --- client-level DP: the servers' noise (docs/MPC.md §5b) --------------------

  def noise_std(self, num_params: int) -> float:
    """Each server's discrete Gaussian std in the ring's units (0 without DP)."""
    return dp_lib.mpc_noise_std(self.dp, num_params, self.spec.f) if self.dp else 0.0

  @property
  def adds_noise(self) -> bool:
    return self.dp is not None and self.dp.noise_multiplier > 0

  def server_noise(self, key: jax.Array, num_params: int) -> np.ndarray:
    """Every server's own noise of this round, int64 ``[S, P]`` in units of 2^-f.

    Server i draws N_i ~ N_Z(0, σ²) exactly (`discrete_gaussian`). In a deployment
    it uses its own secret randomness; the simulation derives it from the round key
    and i (``apply`` must be repeatable). It does not depend on the attempt: a
    server that forces an abort after the opening gets the same noisy sum again, not
    a second sample (docs/MPC.md §5b).
    """
    with jax.enable_x64(True):
      return np.asarray(jax.device_get(self._server_noise_on_device(key, num_params)))

  def _server_noise_on_device(self, key: jax.Array, num_params: int) -> jax.Array:
    """`server_noise` as an int64 device array (inside ``jax.enable_x64(True)`` only)."""
    sigma = self.noise_std(num_params)
    base = jax.random.fold_in(key, _NOISE_SAMPLING)
    return jnp.stack([discrete_gaussian.sample(jax.random.fold_in(base, i), sigma,
                                               (num_params,))
                      for i in range(self.num_servers)])

  def _noise_bound(self, num_terms: int) -> int:
    """Largest |noise element| (ring units) that the range argument allows."""
    return int(ring.max_abs_value(self.spec, num_terms) * 2**self.spec.f)

  def check_noise_headroom(self, num_clients: int, num_params: int) -> None:
    """Refuses a ring too small for the noise: some element of the S·P draws would
    leave the headroom with probability above `NOISE_HEADROOM_FAILURE`.

    The discrete Gaussian is sub-Gaussian with parameter σ (Canonne, Kamath,
    Steinke 2020), so P(|N| ≥ t) ≤ 2·exp(−t²/2σ²), union-bounded over S·P draws.
    """
    if not self.adds_noise:
      return
    sigma = self.noise_std(num_params)
    bound = self._noise_bound(num_clients + self.num_servers)
    tail = 2.0 * self.num_servers * num_params * np.exp(-bound**2 / (2 * sigma**2))
    if tail > NOISE_HEADROOM_FAILURE:
      raise ring.RingOverflowError(
          f'DP noise of std {sigma / 2**self.spec.f:.4g} (aggregator.dp: noise_multiplier '
          f'{self.dp.noise_multiplier:.4g} x clip_norm {self.dp.clip_norm:.4g}) does not fit '
          f'RingSpec(k={self.spec.k}, f={self.spec.f}) for {num_clients} clients: a sum '
          f'element may wrap with probability {tail:.2g} per round; lower aggregator.f '
          'or aggregator.dp.clip_norm.')

  def _input_server_noise(self, acc, key, state, num_params, static, max_weight):
    """Every server inputs its noise as an authenticated input (like a client's,
    with the dealer's mask known to that server) and it joins the local sums.

    Returns:
      (accumulators, the noise ``[S, P]`` int64 on the device).
    """
    noise = self._server_noise_on_device(key, num_params)  # Stays on the device.
    largest = int(jnp.max(jnp.abs(noise))) if noise.size else 0
    if largest > self._noise_bound(static['num_clients'] + self.num_servers):
      raise ring.RingOverflowError(  # Chance ≤ NOISE_HEADROOM_FAILURE (checked above).
          f'a DP noise element ({largest} units of 2^-{self.spec.f}) exceeds the ring\'s '
          'headroom; the round is refused before anything is opened.')
    num_servers = self.num_servers
    seeds = round_seeds(jax.random.fold_in(key, _NOISE_INPUT), state.attempt, num_servers,
                        num_servers, self.mode)
    stats = fused.RangeStats(jnp.zeros((num_servers,), jnp.float32),
                             jnp.ones((num_servers,), jnp.bool_))
    noise_acc, _, _ = fused.accumulate(
        None, stats, noise, jnp.int32(0),
        jnp.full((num_servers,), max_weight, jnp.float32), seeds, max_weight, jnp.int32(0),
        phase='all', encoded=True, **dict(static, chunk=num_servers, num_clients=num_servers))
    bits = self.spec.ring_bits if self.mode == 'privateyes' else self.spec.k
    acc = tuple(ring.mask_bits(a.astype(jnp.uint64) + b.astype(jnp.uint64), bits).astype(a.dtype)
                for a, b in zip(acc, noise_acc))
    return acc, noise

  # --- the round with the validity check (docs/VALIDITY_DESIGN.md) ---------------

  def _validity_tamper(self, client: int) -> validity_lib.Tamper:
    """The malicious server's deviation on ``client``'s check values (or none)."""
    adversary = self.adversary
    if adversary.kind not in adversary_lib.VALIDITY_KINDS or adversary.client != client:
      return validity_lib.Tamper.none()
    where = 1 if adversary.kind == 'tamper_zero_test' else 2
    return validity_lib.Tamper(jnp.int32(where), jnp.int32(adversary.server),
                               jnp.int32(adversary.element),
                               validity_lib.r128.constant(adversary.magnitude))

  def _apply_validity(self, state, updates, weights, host_weights, key, round_idx,
                      unchecked):
    """One attempt with the norm-bound check: INPUT (masked arithmetic and bit inputs)
    → COIN γ → ZERO TESTS opened, MAC-checked in Z_2^128 → EXCLUDE the failing clients
    by name → LOCAL SUMS of the others → OPEN → COIN → CHECK → OUTPUT.

    Clients go one at a time and elements in blocks (``validity.element_chunk``);
    the check's material derives from the dealer's key of (round, attempt, client).
    """
    settings = self.validity
    num_clients, num_params = updates.shape
    num_elements = num_params + 1
    p = settings.params(num_params, self.spec)
    members = [int(c) for c in np.flatnonzero(host_weights > 0)]
    p.check_clients(len(members), self.spec.k)
    cheats = (np.zeros(num_clients, bool) if unchecked is None
              else np.asarray(unchecked, bool))
    timings = {}
    start_time = time.perf_counter()
    scaled = np.asarray(jax.device_get(scale_individual_updates(
        jnp.asarray(updates), weights, jnp.float32(self.max_weight))[0]))
    alpha_shares, alpha = validity_lib.alpha_limbs(ring.from_words(state.mac_key_shares))
    dealer = jax.random.fold_in(jax.random.fold_in(key, _VALIDITY_DEALER),
                                jnp.uint32(state.attempt))
    client_keys = {c: jax.random.fold_in(dealer, c) for c in members}
    # INPUT: every message is fixed before any coin exists.
    messages = {}
    for c in members:
      if not cheats[c] and not np.all(np.isfinite(scaled[c])):
        bad = int(np.flatnonzero(~np.isfinite(scaled[c]))[0])
        raise ring.RingOverflowError(
            f'client {c}: element {bad} of its update is {scaled[c][bad]}; an honest client '
            'refuses to input it (nothing was sent or opened).')
      x, w = validity_lib.encode_claims(scaled[c], not cheats[c], p, settings)
      claim = (validity_lib.best_effort_input(x, w, p) if cheats[c]
               else validity_lib.honest_input(x, w, p))
      messages[c] = validity_lib.client_message(client_keys[c], claim, p)
    timings['sharing_s'] = time.perf_counter() - start_time

    # A message of the wrong shape is the client's fault and public (every server receives
    # the same broadcast): its sender is excluded by name before any server computes on
    # it, and the others go on. Nothing of it enters a sum or a zero test.
    malformed = []
    for c in members:
      problem = validity_lib.message_problem(messages[c], p)
      if problem:
        logging.warning('Validity check: client %d excluded: %s', c, problem)
        malformed.append(c)
    submitted = len(members)  # What the round's costs count: every message was sent.
    members = [c for c in members if c not in malformed]

    start_time = time.perf_counter()
    failure = ''
    gamma_coin = coin_lib.toss(self.num_servers, self.server_rng)
    if not gamma_coin.ok:
      failure = 'validity check: ' + gamma_coin.failure
    elif members:
      gamma = validity_lib.gamma_coefficients(gamma_coin.joint, len(members), p)

      def server_rows(c, i):
        return validity_lib.server_check(client_keys[c], messages[c], gamma[i], alpha_shares,
                                         alpha, p, self.num_servers,
                                         self._validity_tamper(c))

      value_sum = mac_sum = None
      tests_value, tests_mac = [], []
      for i, c in enumerate(members):
        rows = server_rows(c, i)
        value_sum = rows.agg_value if value_sum is None else value_sum + rows.agg_value
        mac_sum = rows.agg_mac if mac_sum is None else mac_sum + rows.agg_mac
        tests_value.append(rows.tests.value)
        tests_mac.append(rows.tests.mac)
      tests = validity_lib.Auth(jnp.stack(tests_value, axis=1), jnp.stack(tests_mac, axis=1))
      checked = validity_lib.open_and_check(tests, alpha_shares, self.num_servers,
                                            self.server_rng)
      if not checked.ok:
        failure = checked.failure
    if failure:  # Nobody is excluded by a round that aborts.
      timings['validity_s'] = time.perf_counter() - start_time
      result = AggregateResult(jnp.zeros((num_params,), jnp.float32),
                               jnp.zeros((), jnp.float32), False, failure, None, {})
      return self.retire_attempt(state), result, timings, submitted, 0, p
    failed = (tuple(c for c, ok in zip(members, checked.passed) if not ok) if members
              else ())
    for i, c in enumerate(members):
      if c in failed:  # Rare (malicious clients only): recompute and subtract.
        rows = server_rows(c, i)
        value_sum, mac_sum = value_sum - rows.agg_value, mac_sum - rows.agg_mac
    excluded = tuple(sorted(malformed + list(failed)))
    timings['validity_s'] = time.perf_counter() - start_time
    included = len(members) - len(failed)
    if included < self.min_clients:
      failure = (f'{COHORT_TOO_SMALL}: {included} client(s) passed the validity check '
                 f'(excluded {list(excluded)}), fewer than aggregator.min_clients='
                 f'{self.min_clients}; nothing was opened.')
      result = AggregateResult(jnp.zeros((num_params,), jnp.float32),
                               jnp.zeros((), jnp.float32), False, failure, None, {},
                               excluded)
      # The zero tests of this attempt were opened: its material is not used again.
      return self.retire_attempt(state), result, timings, submitted, included, p

    # LOCAL SUMS are done (the included clients' [[x̃]] mod 2^64); OPEN, then the
    # aggregation ring's COIN → CHECK → OUTPUT exactly as without the check.
    start_time = time.perf_counter()
    if self.adversary.kind in adversary_lib.SUM_KINDS + (
        'high_error', 'cancel_chi', 'guess_mac', 'rush_coin'):
      value_sum, mac_sum = adversary_lib.corrupt_sum_shares(
          self._adversary_params(num_elements), value_sum, mac_sum, self.spec.ring_bits,
          self.spec.k)
    out = jax.block_until_ready(fused.open_authenticated(
        value_sum, mac_sum, jnp.float32(self.max_weight), spec=self.spec, with_view=False))
    timings['aggregation_s'] = time.perf_counter() - start_time
    new_state, result = self._finish(state, out, None, weights > 0, included, num_params,
                                     round_idx, False, timings)
    return new_state, result._replace(excluded=excluded), timings, submitted, included, p

  # --- one round, chunked and fused (what training uses) -----------------------

  def apply(self, state: SecureAggregatorState, updates: jax.Array | np.ndarray,
            weights: jax.Array, key: jax.Array, round_idx: int, *,
            record_view: bool = True, unchecked: np.ndarray | None = None
            ) -> tuple[SecureAggregatorState, AggregateResult]:
    """One aggregation round: Σ w_c Δ_c / Σ w_c via MPC (see the module docstring).

    Args:
      state: from ``init`` or the previous ``apply``.
      updates: float32 ``[clients, params]`` individual updates Δ_c; a device
        array, or a NumPy array in host memory (then only one chunk of it is on
        the device at a time, for very large federations).
      weights: float32 ``[clients]`` samples used (0: no submission).
      key: this round's key (fold of the root seed); everything random in the
        round derives from it, so a resumed run repeats the round exactly.
      round_idx: the round number (clients tag their inputs with it).
      unchecked: bool ``[clients]``, simulation of malicious clients: these skip the
        client-side range check (§2), so whatever they send enters the ring as is,
        wrapping mod 2^k; the honest clients' checks still refuse the round.
      record_view: False skips the coalition's view in a round nobody records
        (it costs a regeneration of every share and a [C, E] copy to the host).

    Returns:
      (state, AggregateResult) with ``ok`` False and ``failure`` set when a
      check failed; ``stats`` holds bytes, rounds and seconds as floats.

    Raises:
      ValueError: bad shapes or weights; RingOverflowError naming client and
        element of a scaled value that could wrap when summed (raised after the
        fused pass computed the statistics, before anything is opened).
    """
    with_view = self.record_view and record_view
    on_host = isinstance(updates, np.ndarray)
    updates = (np.asarray(updates, np.float32) if on_host
               else jnp.asarray(updates, jnp.float32))
    if updates.ndim != 2:
      raise ValueError(f'updates must be [clients, params], got {updates.shape}.')
    num_clients, num_params = updates.shape
    num_elements = num_params + 1
    weights = jnp.asarray(weights, jnp.float32)
    host_weights = self._check_weights(weights, num_clients)
    self._check_adversary(num_clients, num_params)
    num_submitted = int(np.sum(host_weights > 0))
    refused = self._cohort_too_small(num_submitted, round_idx, num_params)
    if refused is not None:
      return state, refused
    if self.adds_noise:
      self.check_noise_headroom(num_clients, num_params)
    if self.validity is not None:
      with jax.enable_x64(True):
        new_state, result, timings, num_submitted, included, params = self._apply_validity(
            state, updates, weights, host_weights, key, round_idx, unchecked)
      timings['aborted'] = not result.ok
      stats = self._stats(num_submitted, num_clients, num_params, timings)
      stats.update(validity_lib.round_costs(params, self.num_servers, num_submitted))
      stats['mpc/validity_excluded'] = float(len(result.excluded))
      stats['mpc/num_included'] = float(included)
      return new_state, result._replace(stats=stats)
    chunk = self.chunk_size(num_clients, num_params)
    num_chunks = -(-num_clients // chunk)
    adversary = self.adversary
    timings = {}
    noise = None
    with jax.enable_x64(True):
      max_weight = jnp.float32(self.max_weight)
      input_seeds, timings['preprocessing_s'] = _timed(
          round_seeds, key, state.attempt, num_clients, self.num_servers, self.mode)

      _, stats = fused.init_accumulators(self.mode, self.spec, self.num_servers,
                                         num_elements, num_clients)
      static = dict(mode=self.mode, spec=self.spec, num_servers=self.num_servers,
                    prg=self.prg, chunk=chunk, num_clients=num_clients)
      privateyes = self.mode == 'privateyes'
      dealer_acc = None
      if privateyes:
        # DEALER (offline, simulated): the sums of the input masks' shares, from the
        # seeds alone (a deployment produces them before the round). Timed apart, as
        # preprocessing.
        start_time = time.perf_counter()
        no_inputs = jnp.zeros((0, num_params), jnp.float32)
        for n in range(num_chunks):
          dealer_acc, stats, _ = fused.accumulate(
              dealer_acc, stats, no_inputs, jnp.int32(0), weights, input_seeds, max_weight,
              jnp.int32(n), phase='dealer', **static)
        jax.block_until_ready(dealer_acc)
        timings['preprocessing_s'] += time.perf_counter() - start_time

      # INPUT and LOCAL SUMS: the clients' masked inputs (privateyes) or shares
      # (semi-honest) and the servers' local sums, chunk by chunk.
      start_time = time.perf_counter()
      acc = None  # The first chunk's sums become the accumulators.
      estimate = (np.zeros((num_clients, num_elements), np.uint64)
                  if with_view else None)
      for n in range(num_chunks):
        start = fused.chunk_start(n, chunk, num_clients)
        block, offset = ((jnp.asarray(updates[start:start + chunk]), start)
                         if on_host else (updates, 0))
        acc, stats, part = fused.accumulate(
            acc, stats, block, jnp.int32(offset), weights, input_seeds, max_weight,
            jnp.int32(n), coalition=self.coalition if with_view else None,
            phase='online' if privateyes else 'all', **static)
        if part is not None:
          # Rows overlapping the previous chunk are recomputed identically.
          estimate[start:start + chunk] = np.asarray(jax.device_get(part))
      if privateyes:
        # Dropouts become known only now: the servers subtract their shares of the
        # dropped clients' masks, in small chunks (work in proportion to the dropouts).
        retract_acc, stats = fused.retract_dropped(
            host_weights, stats, weights, input_seeds, max_weight, num_params, **static)
        acc = fused.combine_phases(dealer_acc, acc, retract_acc, spec=self.spec,
                                   num_servers=self.num_servers)
      num_terms = max(num_clients, 1)
      if self.adds_noise:
        # DP: every server's own noise joins the sum before anything is opened.
        acc, noise = self._input_server_noise(acc, key, state, num_params, static,
                                              max_weight)
        num_terms = num_clients + self.num_servers
      if unchecked is not None:  # Malicious clients run no client-side check.
        skip = jnp.asarray(np.asarray(unchecked, bool))
        stats = fused.RangeStats(jnp.where(skip, 0.0, stats.max_abs),
                                 jnp.where(skip, True, stats.finite))
      # Nothing is opened before every scaled value is known to be in range.
      fused.host_range_check(
          stats, lambda c: scale_individual_updates(
              jnp.asarray(updates[c:c + 1]), weights[c:c + 1], max_weight)[0][0],
          self.spec, num_terms, _RANGE_WHAT)
      timings['sharing_s'] = time.perf_counter() - start_time

      # OPEN: the servers' sums (with the malicious server's deviation, if any) and
      # the opening, one program; y is fixed before any coin exists.
      start_time = time.perf_counter()
      new_state = state
      if not adversary.deviates_in_aggregation:
        out = jax.block_until_ready(fused.local_sums_and_open(
            acc, state.mac_key_shares, max_weight, mode=self.mode, spec=self.spec,
            num_servers=self.num_servers, with_view=with_view))
      else:
        previous_value, previous_mac = self._previous_words(state, num_elements)
        t = adversary.client
        rows, row = ((jnp.asarray(updates[t:t + 1]), 0) if on_host else (updates, t))
        target = fused.TargetRows(rows, jnp.int32(row), weights, input_seeds)
        out, replay = jax.block_until_ready(fused.deviating_sums_and_open(
            acc, state.mac_key_shares, max_weight,
            self._adversary_params(num_elements), target, previous_value, previous_mac,
            state.has_previous, mode=self.mode, spec=self.spec,
            num_servers=self.num_servers, prg=self.prg, with_view=with_view))
        if adversary.needs_previous_shares:
          new_state = state._replace(replay_value_share=replay[0],
                                     replay_mac_share=replay[1],
                                     has_previous=jnp.ones((), jnp.bool_))
      timings['aggregation_s'] = time.perf_counter() - start_time

      # COIN → CHECK → OUTPUT.
      new_state, result = self._finish(new_state, out, estimate, weights > 0,
                                       num_submitted, num_params, round_idx, with_view,
                                       timings, noise)
    timings['aborted'] = not result.ok
    return new_state, result._replace(
        stats=self._stats(num_submitted, num_clients, num_params, timings))

  # --- the same round step by step, every message materialised -----------------

  def preprocess(self, state: SecureAggregatorState, key: jax.Array,
                 num_clients: int, num_elements: int) -> Preprocessing | None:
    """DEALER: this attempt's authenticated masks ``[S, C, E]`` for the servers and
    each client's own mask ``[C, E]`` (``Preprocessing``; None semi-honest)."""
    if self.mode != 'privateyes':
      return None
    with jax.enable_x64(True):
      input_seeds = round_seeds(key, state.attempt, num_clients, self.num_servers,
                                self.mode)
      return _dealer_round(input_seeds, state.mac_key_shares, num_elements, self.spec,
                           self.prg)

  def package_client_inputs(self, prep: Preprocessing | None,
                            individual_updates: jax.Array, weights: jax.Array,
                            key: jax.Array, round_idx: int,
                            attempt: int = 0) -> ClientSubmission:
    """Clients: scale by w_c / w_max, range-check, encode, mask or share, tag.

    privateyes: client c masks with r_c mod 2^k from the DEALER (``prep.client_masks``),
    the only message it receives before it inputs. No server sends it a share of
    its mask, so a malicious server has no channel to shift an honest client's
    input (adversary kind ``wrong_mask_to_client``: such a message is never read).

    Args:
      prep: this round's preprocessing (privateyes) or None.
      individual_updates: float32 ``[clients, params]``.
      weights: float32 ``[clients]``; 0 = the client submits nothing.
      key: the round key (clients use their own fold of it).
      round_idx: the round the clients package for (the tag).
      attempt: the attempt they package for (the servers announce it).

    Raises:
      ValueError: bad shapes or weights; RingOverflowError naming client and
        element whose scaled value cannot be summed without wrapping.
    """
    individual_updates = jnp.asarray(individual_updates, jnp.float32)
    weights = jnp.asarray(weights, jnp.float32)
    if individual_updates.ndim != 2:
      raise ValueError(f'expected updates [clients, params] and weights [clients]; '
                       f'got {individual_updates.shape} and {weights.shape}.')
    num_clients = individual_updates.shape[0]
    self._check_weights(weights, num_clients)
    scaled, submitted = scale_individual_updates(
        individual_updates, weights, jnp.float32(self.max_weight))
    # Rows of non-submitting clients are all zero (w̃ = 0), so they pass.
    ring.check_range(scaled, self.spec, num_terms=max(num_clients, 1),
                     what=_RANGE_WHAT)
    with jax.enable_x64(True):
      if self.mode == 'privateyes':
        return _clients_privateyes(scaled, submitted, prep.client_masks,
                                   jnp.int32(round_idx), jnp.int32(attempt), self.spec)
      seeds = round_seeds(key, jnp.uint32(attempt), num_clients, self.num_servers,
                          self.mode)
      return _clients_semi_honest(seeds, scaled, submitted, jnp.int32(round_idx),
                                  jnp.int32(attempt), self.spec, self.prg)

  def aggregate(self, state: SecureAggregatorState, prep: Preprocessing | None,
                submission: ClientSubmission, key: jax.Array, round_idx: int,
                num_params: int) -> tuple[SecureAggregatorState, AggregateResult,
                                          dict[str, float]]:
    """Servers: validate, input, sum, open, coin, check, output.

    Returns (state, result, timings).
    """
    del key  # Everything random was dealt (prep) or is the servers' own (coins).
    if self.dp is not None:
      raise ValueError('aggregator.dp runs on the fused path (SecureAggregator.apply), which '
                       'training uses; the step-by-step path adds no noise.')
    num_clients = submission.submitted.shape[0]
    num_elements = num_params + 1
    self._check_adversary(num_clients, num_params)
    privateyes = self.mode == 'privateyes'
    validate_submission(submission, round_idx, num_clients, num_elements,
                        None if privateyes else self.num_servers, int(state.attempt))
    num_submitted = int(np.sum(np.asarray(jax.device_get(submission.submitted))))
    refused = self._cohort_too_small(num_submitted, round_idx, num_params)
    if refused is not None:
      return state, refused, {}
    adversary = self.adversary
    timings = {}
    with jax.enable_x64(True):
      previous_value, previous_mac = self._previous_words(state, num_elements)
      start = time.perf_counter()
      out, values, macs, estimate = jax.block_until_ready(_servers_step_by_step(
          None if prep is None else prep.input_masks, submission.payload,
          submission.submitted, state.mac_key_shares,
          jnp.float32(self.max_weight), self._adversary_params(num_elements),
          previous_value, previous_mac, state.has_previous, mode=self.mode,
          spec=self.spec, adversarial=adversary.deviates_in_aggregation,
          coalition=self.coalition if self.record_view else None))
      timings['aggregation_s'] = time.perf_counter() - start
      new_state = state
      if adversary.needs_previous_shares:
        value_words, mac_words = _replay_words(
            values[:, adversary.client], (macs if macs is not None else values)[
                :, adversary.client], jnp.int32(adversary.server))
        new_state = state._replace(replay_value_share=value_words,
                                   replay_mac_share=mac_words,
                                   has_previous=jnp.ones((), jnp.bool_))
      new_state, result = self._finish(
          new_state, out, None if estimate is None else np.asarray(estimate),
          submission.submitted, num_submitted, num_params, round_idx, self.record_view,
          timings)
    return new_state, result, timings
