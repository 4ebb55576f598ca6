"""PrivatEyes secure aggregation behind the interface of federated/aggregators.py.

Two modes (``mode``):

* ``privateyes``: maliciously secure SPDZ2k aggregation with a dishonest
  majority (any S-1 servers may collude; any deviation aborts the round).
* ``privateyes_semi_honest``: plain additive sharing over Z_2^k, no MACs — what
  the paper's setting costs without active security.

One round (``apply``), all parties simulated in one program, servers as the
leading array axis ``[servers, clients, elements]``:

1. DEALER (simulated offline phase, ``preprocess``): authenticated input masks
   [[r_c]] for every client element and opening masks [[2^k r']].
2. Clients (``package_client_inputs``): scale, range-check, encode, then
   privateyes: receive r_c mod 2^k, broadcast ε_c = x_c - r_c with a round tag;
   semi-honest: send one additive share to each server with a round tag.
3. Servers (``aggregate``): validate tags and shapes, [[x_c]] = [[r_c]] + ε_c,
   add locally over clients, open the masked sum, run the batched MAC check
   with commit-then-reveal of every check value; abort on any failure.

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

import jax
import jax.numpy as jnp
import numpy as np

from privateyes_jax.federated.aggregators import AggregateResult
from privateyes_jax.mpc import adversary as adversary_lib
from privateyes_jax.mpc import costs
from privateyes_jax.mpc import ring
from privateyes_jax.mpc import sharing
from privateyes_jax.mpc import spdz2k

MODES = ('privateyes', 'privateyes_semi_honest')

# fold_in tags that split the round key into independent per-role keys.
_DEALER, _CLIENTS, _CHECK = 0, 1, 2


class SubmissionError(ValueError):
  """A client submission for the wrong round or of the wrong shape."""


class ClientSubmission(NamedTuple):
  """What the clients send to the servers in one round."""
  round_tag: jax.Array  # shape=[clients], dtype=int32; round packaged for; -1: none.
  payload: jax.Array  # privateyes: ε [clients, elements] uint64 in Z_2^k;
  # semi-honest: shares [servers, clients, elements] uint64 in Z_2^k.
  submitted: jax.Array  # shape=[clients], dtype=bool; public: who sent an input.


class Preprocessing(NamedTuple):
  """DEALER output for one privateyes round (simulated offline phase)."""
  input_masks: spdz2k.AuthShares  # [[r]]: [servers, clients, elements] uint64.
  opening_masks: spdz2k.AuthShares  # [[2^k r']]: [servers, elements] uint64.


class SecureAggregatorState(NamedTuple):
  """Aggregator state; ring elements as uint32 (low, high) words (see ring.py)."""
  mac_key_shares: jax.Array  # shape=[servers, 2] ([1, 2] dummy semi-honest), uint32.
  replay_value_share: jax.Array  # shape=[elements, 2] or [1, 2] dummy, uint32; the
  # replaying server's previous value share of its target client.
  replay_mac_share: jax.Array  # shape=[elements, 2] or [1, 2] dummy, uint32.
  has_previous: jax.Array  # shape=(), dtype=bool; a previous round exists.


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
  w = (weights / max_weight).astype(jnp.float32)
  scaled = jnp.concatenate([w[:, None] * individual_updates, w[:, None]], axis=1)
  return scaled, weights > 0


@functools.partial(jax.jit, static_argnames=('num_servers', 'spec'))
def _dealer_key_generation(key, num_servers, spec):
  return ring.to_words(spdz2k.dealer_mac_key_shares(key, num_servers, spec))


@functools.partial(jax.jit, static_argnames=('shape', 'spec'))
def _dealer_round(key, mac_key_words, shape, spec):
  mac_key_shares = ring.from_words(mac_key_words)
  input_key, opening_key = jax.random.split(key)
  return Preprocessing(
      spdz2k.dealer_input_masks(input_key, mac_key_shares, shape, spec),
      spdz2k.dealer_opening_masks(opening_key, mac_key_shares, shape[1:], spec))


@functools.partial(jax.jit, static_argnames=('spec',))
def _clients_privateyes(scaled, submitted, mask_value_shares, round_idx, spec):
  # Each client c only ever sees row c of r mod 2^k (sent by the servers).
  r_client = spdz2k.open_mask_to_client(mask_value_shares, spec)
  epsilon = spdz2k.client_masked_input(ring.encode(scaled, spec), r_client, spec)
  epsilon = jnp.where(submitted[:, None], epsilon, jnp.uint64(0))
  tag = jnp.where(submitted, round_idx, -1).astype(jnp.int32)
  return ClientSubmission(tag, epsilon, submitted)


@functools.partial(jax.jit, static_argnames=('num_servers', 'spec'))
def _clients_semi_honest(key, scaled, submitted, round_idx, num_servers, spec):
  x = ring.encode(scaled, spec)
  # Client c shares with its own key, so its S-1 random shares are seeds.
  client_keys = jax.vmap(lambda c: jax.random.fold_in(key, c))(
      jnp.arange(x.shape[0]))
  shares = jax.vmap(lambda k, xc: sharing.share(k, xc, num_servers, spec.k),
                    out_axes=1)(client_keys, x)
  shares = jnp.where(submitted[None, :, None], shares, jnp.uint64(0))
  tag = jnp.where(submitted, round_idx, -1).astype(jnp.int32)
  return ClientSubmission(tag, shares, submitted)


@functools.partial(jax.jit, static_argnames=('spec', 'adversarial', 'keep_inputs'))
def _servers_privateyes(prep, epsilon, submitted, mac_key_words, params,
                        previous_value_words, previous_mac_words, has_previous,
                        spec, adversarial, keep_inputs):
  mac_key_shares = ring.from_words(mac_key_words)
  inputs = spdz2k.input_from_masked(prep.input_masks, epsilon, mac_key_shares, spec)
  value, mac = inputs.value, inputs.mac
  include = jnp.broadcast_to(submitted[None, :], value.shape[:2])
  if adversarial:  # Static: honest runs compile without any adversary code.
    value, mac, include = adversary_lib.corrupt_client_shares(
        params, value, mac, include, ring.from_words(previous_value_words),
        ring.from_words(previous_mac_words), has_previous)
  total = spdz2k.sum_over_clients(spdz2k.AuthShares(value, mac), include, spec)
  if adversarial:
    total = spdz2k.AuthShares(*adversary_lib.corrupt_sum_shares(
        params, total.value, total.mac, spec.ring_bits))
  opened, masked = spdz2k.masked_open(total, prep.opening_masks, spec)
  # Returning [[x]] ([servers, clients, elements], twice) forces XLA to write it
  # out; only views and the replay adversary need it.
  return opened, masked, inputs if keep_inputs else None


@functools.partial(jax.jit, static_argnames=('spec', 'adversarial'))
def _servers_semi_honest(shares, submitted, params, previous_value_words,
                         has_previous, spec, adversarial):
  value = shares
  include = jnp.broadcast_to(submitted[None, :], shares.shape[:2])
  if adversarial:
    value, _, include = adversary_lib.corrupt_client_shares(
        params, value, None, include, ring.from_words(previous_value_words), None,
        has_previous)
  value_sum = sharing.sum_over_clients(value, include, spec.k)
  if adversarial:
    value_sum, _ = adversary_lib.corrupt_sum_shares(params, value_sum, None, spec.k)
  return sharing.reconstruct(value_sum, spec.k), value_sum


@functools.partial(jax.jit, static_argnames=('spec',))
def _check_values(key, masked_mac, opened, mac_key_words, spec):
  num_servers = masked_mac.shape[0]
  coin_key, nonce_key = jax.random.split(key)
  chi = spdz2k.check_coefficients(
      spdz2k.joint_coin_key(spdz2k.coin_toss_contributions(coin_key, num_servers)),
      opened.shape, spec)
  z = spdz2k.mac_check_values(masked_mac, opened, chi,
                              ring.from_words(mac_key_words), spec)
  return z, chi, spdz2k.commitment_nonces(nonce_key, num_servers)


@functools.partial(jax.jit, static_argnames=('spec',))
def _weighted_mean(opened, max_weight, spec):
  sums = ring.decode(opened, spec, dtype=jnp.float64)
  weight_sum = sums[-1]
  mean = jnp.where(weight_sum > 0, sums[:-1] / jnp.where(weight_sum > 0,
                                                         weight_sum, 1.0), 0.0)
  return mean.astype(jnp.float32), (weight_sum * max_weight).astype(jnp.float32)


@jax.jit
def _take_replay_shares(value, mac, server, client):
  return ring.to_words(value[server, client]), ring.to_words(mac[server, client])


def _timed(fn, *args, **kwargs):
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args, **kwargs))
  return out, time.perf_counter() - start


# ---------------------------------------------------------------------------
# Client-side packaging and server-side validation.
# ---------------------------------------------------------------------------


def validate_submission(submission: ClientSubmission, round_idx: int,
                        num_clients: int, num_elements: int,
                        num_servers: int | None = None) -> None:
  """Server side: rejects submissions of the wrong shape or for another round.

  Args:
    submission: what arrived.
    round_idx: the round the servers are in.
    num_clients: C.
    num_elements: E = params + 1.
    num_servers: S for semi-honest payloads ``[S, C, E]``; None for ε ``[C, E]``.

  Raises:
    SubmissionError: naming the clients and the rounds or shapes involved.
  """
  expected = ((num_clients, num_elements) if num_servers is None
              else (num_servers, num_clients, num_elements))
  if tuple(submission.payload.shape) != expected:
    raise SubmissionError(
        f'client payload has shape {tuple(submission.payload.shape)}, expected '
        f'{expected} ([servers,] clients, params + 1) in round {round_idx}.')
  for name in ('round_tag', 'submitted'):
    shape = tuple(getattr(submission, name).shape)
    if shape != (num_clients,):
      raise SubmissionError(f'submission.{name} has shape {shape}, expected '
                            f'({num_clients},).')
  tags = np.asarray(jax.device_get(submission.round_tag))
  submitted = np.asarray(jax.device_get(submission.submitted))
  stale = np.flatnonzero(submitted & (tags != round_idx))
  if stale.size:
    raise SubmissionError(
        f'client(s) {stale.tolist()} sent inputs tagged for round(s) '
        f'{tags[stale].tolist()} but the servers are in round {round_idx}: stale '
        'or replayed submissions are rejected.')


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
  """
  max_weight: float  # No default: it must come from the public config.
  spec: ring.RingSpec = ring.RingSpec()
  num_servers: int = 3
  mode: str = 'privateyes'
  adversary: adversary_lib.AdversarySpec = adversary_lib.AdversarySpec()
  coalition: tuple[int, ...] = ()
  record_view: bool = False
  num_params: int | None = None

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

  @property
  def name(self) -> str:
    return self.mode

  @classmethod
  def from_config(cls, config: Any, *, max_weight: float,
                  num_params: int | None = None) -> 'SecureAggregator':
    """Builds from ``config.mpc``-style fields (ConfigDict, dict or object).

    Fields: k, f, s, num_servers, mode, coalition, record_view,
    adversary.{kind, server, client, magnitude, element, before_commit}.
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
        before_commit=bool(_config_get(adv, 'before_commit', False)))
    spec = ring.RingSpec(k=int(_config_get(config, 'k', 32)),
                         f=int(_config_get(config, 'f', 16)),
                         s=int(_config_get(config, 's', 32)))
    return cls(spec=spec, num_servers=int(_config_get(config, 'num_servers', 3)),
               max_weight=float(max_weight),
               mode=_config_get(config, 'mode', 'privateyes'),
               adversary=adversary,
               coalition=tuple(_config_get(config, 'coalition', ()) or ()),
               record_view=bool(_config_get(config, 'record_view', False)),
               num_params=num_params)

  # --- init ----------------------------------------------------------------

  def init(self, key: jax.Array) -> SecureAggregatorState:
    """DEALER key generation: the MAC key shares α_i (privateyes only)."""
    with jax.enable_x64(True):
      if self.mode == 'privateyes':
        mac_key_words = _dealer_key_generation(key, self.num_servers, self.spec)
      else:
        mac_key_words = jnp.zeros((1, 2), jnp.uint32)  # Unused dummy (no MACs).
      # Unused leaves are (1, 2) dummies, not empty: Orbax cannot save zero-size arrays.
      replay_elements = (self.num_params + 1
                         if self.adversary.needs_previous_shares else 1)
      empty = jnp.zeros((replay_elements, 2), jnp.uint32)
      return SecureAggregatorState(mac_key_words, empty, empty,
                                   jnp.zeros((), jnp.bool_))

  # --- one round -----------------------------------------------------------

  def preprocess(self, state: SecureAggregatorState, key: jax.Array,
                 num_clients: int, num_elements: int) -> Preprocessing | None:
    """DEALER: this round's authenticated masks (None in semi-honest mode)."""
    if self.mode != 'privateyes':
      return None
    with jax.enable_x64(True):
      return _dealer_round(jax.random.fold_in(key, _DEALER), state.mac_key_shares,
                           (num_clients, num_elements), self.spec)

  def package_client_inputs(self, prep: Preprocessing | None,
                            individual_updates: jax.Array, weights: jax.Array,
                            key: jax.Array, round_idx: int) -> ClientSubmission:
    """Clients: scale by w_c / w_max, range-check, encode, mask or share, tag.

    Args:
      prep: this round's preprocessing (privateyes) or None.
      individual_updates: float32 ``[clients, params]``.
      weights: float32 ``[clients]``; 0 = the client submits nothing.
      key: the round key (clients use their own fold of it).
      round_idx: the round the clients package for (the tag).

    Raises:
      ValueError: bad shapes or weights; RingOverflowError naming client and
        element whose scaled value cannot be summed without wrapping.
    """
    individual_updates = jnp.asarray(individual_updates, jnp.float32)
    weights = jnp.asarray(weights, jnp.float32)
    if individual_updates.ndim != 2 or weights.shape != individual_updates.shape[:1]:
      raise ValueError(
          f'expected updates [clients, params] and weights [clients]; got '
          f'{individual_updates.shape} and {weights.shape}.')
    host_weights = np.asarray(jax.device_get(weights))
    bad = np.flatnonzero(~np.isfinite(host_weights) | (host_weights < 0)
                         | (host_weights > self.max_weight))
    if bad.size:
      raise ValueError(
          f'client weight(s) {host_weights[bad].tolist()} of client(s) '
          f'{bad.tolist()} are outside [0, max_weight={self.max_weight}]; '
          'max_weight must be a public upper bound.')
    num_clients = individual_updates.shape[0]
    scaled, submitted = scale_individual_updates(
        individual_updates, weights, jnp.float32(self.max_weight))
    # Rows of non-submitting clients are all zero (w̃ = 0), so they pass.
    ring.check_range(scaled, self.spec, num_terms=max(num_clients, 1),
                     what='client input [client, element] (w_c/w_max · Δ_c, '
                     'then w_c/w_max)')
    with jax.enable_x64(True):
      if self.mode == 'privateyes':
        return _clients_privateyes(scaled, submitted, prep.input_masks.value,
                                   jnp.int32(round_idx), self.spec)
      return _clients_semi_honest(jax.random.fold_in(key, _CLIENTS), scaled,
                                  submitted, jnp.int32(round_idx),
                                  self.num_servers, self.spec)

  def aggregate(self, state: SecureAggregatorState, prep: Preprocessing | None,
                submission: ClientSubmission, key: jax.Array, round_idx: int,
                num_params: int) -> tuple[SecureAggregatorState, AggregateResult,
                                          dict[str, float]]:
    """Servers: validate, input, sum, open, check. Returns (state, result, timings)."""
    num_clients = submission.submitted.shape[0]
    num_elements = num_params + 1
    adversary = self.adversary
    if adversary.kind in adversary_lib.CLIENT_KINDS and not (
        0 <= adversary.client < num_clients):
      raise ValueError(f'adversary.client={adversary.client} is not a client in '
                       f'[0, {num_clients}).')
    if adversary.kind in adversary_lib.SUM_KINDS and adversary.element >= num_elements:
      raise ValueError(f'adversary.element={adversary.element} is not an element '
                       f'in [-1, {num_elements}).')
    if adversary.needs_previous_shares and num_params != self.num_params:
      raise ValueError(f'replay_client adversary was built for num_params='
                       f'{self.num_params}, got {num_params}.')
    privateyes = self.mode == 'privateyes'
    validate_submission(submission, round_idx, num_clients, num_elements,
                        None if privateyes else self.num_servers)
    timings = {}
    with jax.enable_x64(True):
      params = adversary.params()
      previous_value, previous_mac = state.replay_value_share, state.replay_mac_share
      if previous_value.shape[0] != num_elements:
        # Not a replay adversary: a dummy of the right shape keeps one program
        # for every adversary kind.
        previous_value = previous_mac = jnp.zeros((num_elements, 2), jnp.uint32)
      if privateyes:
        (opened, masked, inputs), timings['aggregation_s'] = _timed(
            _servers_privateyes, prep, submission.payload, submission.submitted,
            state.mac_key_shares, params, previous_value, previous_mac,
            state.has_previous, spec=self.spec, adversarial=adversary.active,
            keep_inputs=self.record_view or adversary.needs_previous_shares)
        start = time.perf_counter()
        check, z, chi = self._mac_check(state, masked, opened, key)
        timings['checking_s'] = time.perf_counter() - start
        opened_shares = masked.value
        input_values, input_macs = (None, None) if inputs is None else inputs
      else:
        (opened, opened_shares), timings['aggregation_s'] = _timed(
            _servers_semi_honest, submission.payload, submission.submitted,
            params, previous_value, state.has_previous, spec=self.spec,
            adversarial=adversary.active)
        check = spdz2k.MacCheckResult(True, '', '', 0)
        timings['checking_s'] = 0.0
        z = chi = None
        input_values, input_macs = submission.payload, None

      if check.ok:
        mean, total = _weighted_mean(opened, jnp.float32(self.max_weight),
                                     spec=self.spec)
      else:
        # Never hand out an unverified output: the round aborts.
        mean = jnp.zeros((num_params,), jnp.float32)
        total = jnp.zeros((), jnp.float32)

      new_state = state
      if adversary.needs_previous_shares:
        macs = input_macs if input_macs is not None else input_values
        value_words, mac_words = _take_replay_shares(
            input_values, macs, jnp.int32(adversary.server), jnp.int32(adversary.client))
        new_state = state._replace(replay_value_share=value_words,
                                   replay_mac_share=mac_words,
                                   has_previous=jnp.ones((), jnp.bool_))

      view = None
      if self.record_view:
        view = adversary_lib.coalition_view(
            self.coalition,
            input_value_shares=input_values,
            input_mac_shares=input_macs,
            mac_key_shares=(ring.from_words(state.mac_key_shares) if privateyes
                            else None),
            masked_inputs=submission.payload if privateyes else None,
            opened_sum_shares=opened_shares,
            opened_sum=opened,
            submitted=submission.submitted,
            check_values=z,
            check_coefficients=chi,
            output_mean=mean,
            round=round_idx)

    result = AggregateResult(mean, total, bool(check.ok), check.failure, view, {})
    return new_state, result, timings

  def _mac_check(self, state, masked, opened, key):
    """Commit-then-reveal of the check values; only S scalars reach the host."""
    z, chi, nonces = _check_values(jax.random.fold_in(key, _CHECK), masked.mac,
                                   opened, state.mac_key_shares, spec=self.spec)
    z_host = np.asarray(jax.device_get(z), np.uint64)
    nonces_host = np.asarray(jax.device_get(nonces), np.uint64)
    committed = adversary_lib.corrupt_check_value(self.adversary, z_host,
                                                  self.spec, 'commit')
    commitments = spdz2k.commit_check_values(committed, nonces_host)
    revealed = adversary_lib.corrupt_check_value(self.adversary, committed,
                                                 self.spec, 'reveal')
    check = spdz2k.verify_check_values(commitments, revealed, nonces_host,
                                       self.spec)
    return check, revealed, chi

  def apply(self, state: SecureAggregatorState, updates: jax.Array,
            weights: jax.Array, key: jax.Array,
            round_idx: int) -> tuple[SecureAggregatorState, AggregateResult]:
    """One aggregation round: Σ w_c Δ_c / Σ w_c via MPC (see the module docstring).

    Args:
      state: from ``init`` or the previous ``apply``.
      updates: float32 ``[clients, params]`` individual updates Δ_c.
      weights: float32 ``[clients]`` samples used (0: no submission).
      key: this round's key (fold of the root seed); everything random in the
        round derives from it, so a resumed run repeats the round exactly.
      round_idx: the round number (clients tag their inputs with it).

    Returns:
      (state, AggregateResult) with ``ok`` False and ``failure`` set when a
      check failed; ``stats`` holds bytes, rounds and seconds as floats.
    """
    updates = jnp.asarray(updates, jnp.float32)
    if updates.ndim != 2:
      raise ValueError(f'updates must be [clients, params], got {updates.shape}.')
    num_clients, num_params = updates.shape
    num_elements = num_params + 1
    prep, preprocessing_s = _timed(self.preprocess, state, key, num_clients,
                                   num_elements)
    submission, sharing_s = _timed(self.package_client_inputs, prep, updates,
                                   weights, key, round_idx)
    state, result, timings = self.aggregate(state, prep, submission, key,
                                            round_idx, num_params)
    num_submitted = int(np.sum(np.asarray(jax.device_get(submission.submitted))))
    stats = costs.round_costs(self.mode, self.spec, self.num_servers,
                              num_submitted, num_elements).as_stats()
    stats.update({
        'mpc/num_submitted': float(num_submitted),
        'mpc/preprocessing_s': float(preprocessing_s),
        'mpc/sharing_s': float(sharing_s),
        'mpc/aggregation_s': float(timings['aggregation_s']),
        'mpc/checking_s': float(timings['checking_s']),
        'mpc/aborted': float(not result.ok),
    })
    if self.mode == 'privateyes':
      offline = costs.estimate_offline_phase(
          costs.num_preprocessed_masks(num_submitted, num_elements))
      stats.update({'mpc/' + k: v for k, v in offline.items()})
    return state, result._replace(stats=stats)

