"""Adversaries against the PrivatEyes servers: one active cheater, one passive coalition.

An *active* (malicious) server deviates in one of the ways below; SPDZ2k's MAC
check must catch every one of them (except with probability ≈ 2^-s), and the
semi-honest mode, which has no MACs, catches none. The deviation is a pure
function of that server's shares, selected by ``AdversarySpec.kind``:

==================== ==========================================================
kind                 what the malicious server does
==================== ==========================================================
none                 follows the protocol.
add_error            adds ``magnitude`` to its value share of the sum before it
                     is opened (one ``element``, or all for element = -1).
flip_bits            XORs its value share of the sum with ``magnitude``.
corrupt_mac          adds ``magnitude`` to its MAC share of the opened sum.
corrupt_check_value  changes its check value z_i by ``magnitude`` after
                     committing (caught by the commitment) or, with
                     ``before_commit``, before committing (caught by Σ z_i ≠ 0).
drop_client          leaves ``client``'s input out of its share of the sum.
replay_client        uses ``client``'s shares from the previous round or attempt
                     (value and MAC) instead of this one's; honest the first time.
high_error           adds ``magnitude``·2^k to its value share of the sum: the
                     output (low k bits) is unchanged, only the check sees it.
cancel_chi           adds δ_0 = g_1·magnitude to element 0 and δ_1 = −g_0·magnitude
                     to element 1, with ``guess`` = (g_0, g_1) a guess of χ_0, χ_1
                     (e.g. the χ of an earlier, aborted attempt): passes exactly
                     when the guess is χ, so only a fresh, unknown χ catches it.
guess_mac            adds ``magnitude`` to its value share of ``element`` and
                     ``guess[0]``·magnitude to its MAC share: passes if the guess
                     is α (mod the relevant bits).
rush_coin            the cancel_chi error for the χ of a joint seed it picks
                     (``guess`` = its two words), then, rushing, reveals its coin
                     contribution after the others' so that the joint seed is
                     that one: caught by the coin's commitment.
inconsistent_model   sends a crafted global model to ``client`` (Pasquini et al.,
                     CCS 2022; ``consistency.py``): caught when the clients
                     compare the model digests of all servers.
wrong_mask_to_client sends ``client`` a mask message: its value share of r_c
                     mod 2^k shifted by ``magnitude`` at ``element`` (-1: all),
                     ``mask_messages``. Had the client summed the servers'
                     shares into its mask (the protocol before the fix of #15),
                     its input would be x_c - magnitude with consistent MACs: the
                     check passes and the output is silently shifted. The client
                     takes its mask from the DEALER instead and reads nothing a
                     server sends before it inputs, so the round is the honest
                     one bit for bit (nothing to detect; ``INERT_KINDS``).
tamper_zero_test     validity check only (``aggregator.validity``): adds
                     ``magnitude`` to its share of zero test ``element`` of
                     ``client`` before the zero tests are opened, to get an
                     honest client excluded: caught by the check's MAC check,
                     the round aborts and nobody is excluded.
tamper_bit_share     validity check only: adds ``magnitude`` to its share of bit 0
                     of element ``element`` of ``client``'s range-proof bits: the
                     client's zero tests fail, and so does the MAC check.
==================== ==========================================================

A *passive* coalition of up to S-1 servers follows the protocol but pools
everything it sees (``coalition_view``), which is what DualView attacks.

``corrupt_client_shares`` acts on materialised per-client shares (the explicit
three-phase API); ``corrupt_client_sums`` applies the same deviation to the
servers' sums with the target client's shares (the chunked ``apply``).

Errors ``magnitude`` that vanish modulo 2^k are rejected: they change neither the
output (the low k bits) nor, reliably, the check — SPDZ2k's guarantee is about
errors that matter modulo 2^k.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from privateyes_jax.mpc import ring

KINDS = ('none', 'add_error', 'flip_bits', 'corrupt_mac', 'corrupt_check_value',
         'drop_client', 'replay_client', 'high_error', 'cancel_chi', 'guess_mac',
         'rush_coin', 'inconsistent_model', 'wrong_mask_to_client', 'tamper_zero_test',
         'tamper_bit_share')
MAC_ONLY_KINDS = ('corrupt_mac', 'corrupt_check_value', 'high_error', 'cancel_chi',
                  'guess_mac', 'rush_coin')  # Need the MAC check.
MASK_KINDS = ('wrong_mask_to_client',)  # Act on the privateyes input masks.
# The validity check's values (``validity.Tamper``); only with aggregator.validity.
VALIDITY_KINDS = ('tamper_zero_test', 'tamper_bit_share')
CLIENT_KINDS = ('drop_client', 'replay_client', 'inconsistent_model', 'wrong_mask_to_client',
                'tamper_zero_test', 'tamper_bit_share')
SUM_KINDS = ('add_error', 'flip_bits', 'corrupt_mac')
ELEMENT_KINDS = SUM_KINDS + ('wrong_mask_to_client',)  # Take one ``element`` (or -1).
# Deviations the protocol offers no channel for: the round is the honest one, there
# is nothing to detect (the randomized suite, which expects aborts, leaves them out).
INERT_KINDS = ('wrong_mask_to_client',)
GUESS_LENGTH = {'cancel_chi': 2, 'guess_mac': 1, 'rush_coin': 2}


@dataclasses.dataclass(frozen=True)
class AdversarySpec:
  """A malicious server's deviation, selected by name plus parameters.

  Attributes:
    kind: one of ``KINDS``.
    server: index of the malicious server.
    client: target client of ``drop_client`` / ``replay_client`` /
      ``inconsistent_model`` / ``wrong_mask_to_client``.
    magnitude: additive error or XOR mask, as an integer in Z_2^(k+s).
    element: element of the opened vector to corrupt; -1 corrupts all.
    before_commit: ``corrupt_check_value`` only: change z_i before committing.
  """
  kind: str = 'none'
  server: int = 0
  client: int = 0
  magnitude: int = 1
  element: int = -1
  before_commit: bool = False
  guess: tuple[int, ...] = ()

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'AdversarySpec.kind={self.kind!r} is not one of {KINDS}.')
    object.__setattr__(self, 'guess', tuple(int(g) % 2**64 for g in self.guess))
    wanted = GUESS_LENGTH.get(self.kind, 0)
    if wanted and len(self.guess) != wanted:
      raise ValueError(f'AdversarySpec.kind={self.kind!r} needs guess of length '
                       f'{wanted}, got {self.guess}.')

  @property
  def active(self) -> bool:
    return self.kind != 'none'

  @property
  def deviates_in_aggregation(self) -> bool:
    """The deviation acts on shares, the opening or the check (not the broadcast, not
    a message the protocol has no place for)."""
    return self.active and self.kind not in ('inconsistent_model',) + INERT_KINDS

  @property
  def needs_previous_shares(self) -> bool:
    return self.kind == 'replay_client'

  def validate(self, num_servers: int, spec: ring.RingSpec, mode: str) -> None:
    """Fails fast on a deviation that cannot be run in this setting."""
    if not self.active:
      return
    if not 0 <= self.server < num_servers:
      raise ValueError(f'AdversarySpec.server={self.server} is not in '
                       f'[0, {num_servers}).')
    if mode == 'privateyes_semi_honest' and self.kind in MAC_ONLY_KINDS:
      raise ValueError(f'Adversary kind {self.kind!r} acts on MACs or check values, '
                       'which the semi-honest mode does not have.')
    if mode == 'privateyes_semi_honest' and self.kind in MASK_KINDS:
      raise ValueError(f'Adversary kind {self.kind!r} acts on input masks, which the '
                       'semi-honest mode does not have (clients share their inputs).')
    if self.kind in ELEMENT_KINDS + ('corrupt_check_value',):
      if not 0 < self.magnitude < 2**64:
        raise ValueError(f'AdversarySpec.magnitude={self.magnitude} must be in '
                         '(0, 2^64).')
      if self.kind in ELEMENT_KINDS and self.magnitude % (1 << spec.k) == 0:
        raise ValueError(
            f'AdversarySpec.magnitude={self.magnitude} is 0 mod 2^k (k={spec.k}): '
            'it would not change the output, and SPDZ2k only guarantees to detect '
            'errors that matter modulo 2^k.')
      if (self.kind == 'corrupt_check_value'
          and self.magnitude % (1 << spec.ring_bits) == 0):
        raise ValueError('corrupt_check_value needs magnitude != 0 mod 2^(k+s).')
    if self.kind in ('high_error', 'cancel_chi', 'guess_mac', 'rush_coin') and (
        self.magnitude % (1 << spec.ring_bits) == 0):
      raise ValueError(f'AdversarySpec.magnitude={self.magnitude} must be nonzero '
                       'mod 2^(k+s).')
    if self.element < -1:
      raise ValueError(f'AdversarySpec.element={self.element} must be >= -1.')
    if self.kind in VALIDITY_KINDS and (self.element < 0 or self.magnitude % 2**128 == 0):
      raise ValueError(f'Adversary kind {self.kind!r} needs element >= 0 (a zero test or an '
                       'element of the client) and magnitude != 0 mod 2^128.')

  def params(self, guess: tuple[int, ...] | None = None) -> 'AdversaryParams':
    """Kind and numbers as traced arrays: one compilation serves every kind.

    ``guess`` replaces ``self.guess`` (rush_coin: the χ of the joint seed it aims at).
    """
    ring.require_x64('AdversarySpec.params')
    guess = tuple(self.guess if guess is None else guess) + (0, 0)
    return AdversaryParams(
        kind=jnp.asarray(KINDS.index(self.kind), jnp.int32),
        server=jnp.asarray(self.server, jnp.int32),
        client=jnp.asarray(self.client, jnp.int32),
        magnitude=jnp.asarray(self.magnitude % 2**64, jnp.uint64),
        element=jnp.asarray(self.element, jnp.int32),
        guess=jnp.asarray([g % 2**64 for g in guess[:2]], jnp.uint64))


class AdversaryParams(NamedTuple):
  kind: jax.Array  # shape=(), dtype=int32; index into KINDS.
  server: jax.Array  # shape=(), dtype=int32.
  client: jax.Array  # shape=(), dtype=int32.
  magnitude: jax.Array  # shape=(), dtype=uint64.
  element: jax.Array  # shape=(), dtype=int32; -1 = every element.
  guess: jax.Array  # shape=[2], dtype=uint64; guessed χ_0, χ_1 or α (see KINDS).


def _is(params: AdversaryParams, kind: str) -> jax.Array:
  return params.kind == KINDS.index(kind)


def _server_rows(num_servers: int, server: jax.Array) -> jax.Array:
  return (jnp.arange(num_servers) == server)[:, None]


def corrupt_client_shares(params: AdversaryParams, value: jax.Array,
                          mac: jax.Array | None, include: jax.Array,
                          previous_value: jax.Array,
                          previous_mac: jax.Array | None,
                          has_previous: jax.Array):
  """``drop_client`` / ``replay_client`` on the server's shares of one client.

  Every other kind leaves the arrays unchanged. The kind is traced, so one
  compiled program serves all kinds.

  Args:
    params: traced parameters.
    value: uint64 ``[servers, clients, elements]`` input value shares.
    mac: same shape MAC shares, or None (semi-honest).
    include: bool ``[servers, clients]``: which client inputs each server adds.
    previous_value: uint64 ``[elements]``: the malicious server's value share of
      ``client`` from the previous round.
    previous_mac: same for the MAC share, or None.
    has_previous: bool scalar; replay is honest until a previous round exists.

  Returns:
    (value, mac, include) as the malicious server uses them.
  """
  num_servers, num_clients = value.shape[:2]
  target = (_server_rows(num_servers, params.server)
            & (jnp.arange(num_clients) == params.client)[None, :])
  dropped = target & _is(params, 'drop_client')
  # Replay: substitute last round's shares and add them even if the client sent
  # nothing this round (a replayed submission).
  replayed = target & _is(params, 'replay_client') & has_previous
  include = (include & ~dropped) | replayed
  value = jnp.where(replayed[..., None], previous_value[None, None, :], value)
  if mac is not None:
    mac = jnp.where(replayed[..., None], previous_mac[None, None, :], mac)
  return value, mac, include


def corrupt_client_sums(params: AdversaryParams, value_sum: jax.Array,
                        mac_sum: jax.Array | None, target_value: jax.Array,
                        target_mac: jax.Array | None, target_submitted: jax.Array,
                        previous_value: jax.Array, previous_mac: jax.Array | None,
                        has_previous: jax.Array, bits: int):
  """``drop_client`` / ``replay_client`` applied to the servers' sums directly.

  The chunked aggregation never holds every client's shares, only their sums, so
  the malicious server's deviation is applied as a correction with the target
  client's shares. Equal bit for bit to ``corrupt_client_shares`` followed by
  the sum over clients (tests/mpc check this).

  Args:
    params: traced parameters.
    value_sum: uint64 ``[servers, elements]`` honest sums.
    mac_sum: same for MAC shares, or None (semi-honest).
    target_value: uint64 ``[servers, elements]``: every server's share of
      ``client``'s input this round.
    target_mac: same for MAC shares, or None.
    target_submitted: bool scalar: the target sent an input this round.
    previous_value: uint64 ``[elements]``: the malicious server's value share of
      ``client`` from the previous round.
    previous_mac: same for the MAC share, or None.
    has_previous: bool scalar.
    bits: ring bits of the shares.

  Returns:
    (value_sum, mac_sum) as the malicious server computes them.
  """
  num_servers = value_sum.shape[0]
  row = _server_rows(num_servers, params.server)
  # Drop: leave the target out. Replay: leave this round's input out (if any) and
  # add last round's shares instead, even if the client sent nothing now.
  remove = row & target_submitted & (_is(params, 'drop_client')
                                     | (_is(params, 'replay_client') & has_previous))
  add = row & _is(params, 'replay_client') & has_previous

  def fix(total, current, previous):
    total = jnp.where(remove, total - current, total)
    total = jnp.where(add, total + previous[None, :], total)
    return ring.mask_bits(total, bits)

  value_sum = fix(value_sum, target_value, previous_value)
  if mac_sum is not None:
    mac_sum = fix(mac_sum, target_mac, previous_mac)
  return value_sum, mac_sum


def corrupt_sum_shares(params: AdversaryParams, value_sum: jax.Array,
                       mac_sum: jax.Array | None, bits: int, k: int):
  """Deviations on the malicious server's shares of the sum, before it is opened.

  ``add_error`` / ``flip_bits`` / ``corrupt_mac`` / ``high_error`` / ``guess_mac``
  at ``element`` (-1: all), ``cancel_chi`` / ``rush_coin`` at elements 0 and 1.

  Args:
    params: traced parameters.
    value_sum: uint64 ``[servers, elements]`` value shares of the sum.
    mac_sum: same shape MAC shares, or None (semi-honest).
    bits: ring bits of the shares.
    k: bits of a value (``high_error`` adds multiples of 2^k).

  Returns:
    (value_sum, mac_sum) after the malicious server's deviation.
  """
  num_servers, num_elements = value_sum.shape
  index = jnp.arange(num_elements)
  elements = (params.element < 0) | (index == params.element)
  row = _server_rows(num_servers, params.server)
  target = row & elements[None, :]
  m = params.magnitude
  error = ring.mask_bits(m, bits)
  add = lambda a, d, where: jnp.where(where, ring.mask_bits(a + d, bits), a)
  value_sum = add(value_sum, error, target & (_is(params, 'add_error')
                                              | _is(params, 'guess_mac')))
  value_sum = jnp.where(target & _is(params, 'flip_bits'), value_sum ^ error, value_sum)
  value_sum = add(value_sum, ring.mask_bits(m << jnp.uint64(k), bits),
                  target & _is(params, 'high_error'))
  # δ_0 = g_1·m, δ_1 = −g_0·m: Σ_j χ_j α δ_j = α m (χ_0 g_1 − χ_1 g_0) = 0 if g = χ.
  cancel = jnp.where(index == 0, params.guess[1] * m,
                     jnp.where(index == 1, jnp.uint64(0) - params.guess[0] * m,
                               jnp.uint64(0)))
  value_sum = add(value_sum, cancel[None, :],
                  row & (_is(params, 'cancel_chi') | _is(params, 'rush_coin')))
  if mac_sum is not None:
    mac_sum = add(mac_sum, error, target & _is(params, 'corrupt_mac'))
    mac_sum = add(mac_sum, params.guess[0] * m, target & _is(params, 'guess_mac'))
  return value_sum, mac_sum


def mask_messages(params: AdversaryParams, mask_value_shares: jax.Array,
                  k: int) -> jax.Array:
  """The servers' shares of r_c mod 2^k as server delivery of masks would send them.

  Before the fix of #15, server i sent client c its value share r_c,i mod 2^k and
  the client summed them into its mask. Nothing authenticates such a share towards
  the client, so ``wrong_mask_to_client`` shifts the malicious server's message to
  ``client`` by ``magnitude`` at ``element`` (-1: all). In the fixed protocol no
  server sends a client anything (the DEALER hands the client its mask,
  ``aggregator.Preprocessing.client_masks``): row ``server`` is what a malicious
  server can still send, unsolicited, and the client never reads it. The tests use
  this to show what the message would have done.

  Args:
    params: traced parameters.
    mask_value_shares: uint64 ``[servers, clients, elements]`` value shares of [[r]].
    k: bits of a value.

  Returns:
    uint64 ``[servers, clients, elements]``: the messages mod 2^k, with the
    malicious server's deviation (every other kind: the honest shares).
  """
  num_servers, num_clients, num_elements = mask_value_shares.shape
  target = (_server_rows(num_servers, params.server)
            & (jnp.arange(num_clients) == params.client)[None, :])[..., None]
  elements = (params.element < 0) | (jnp.arange(num_elements) == params.element)
  shift = target & elements[None, None, :] & _is(params, 'wrong_mask_to_client')
  messages = ring.mask_bits(mask_value_shares, k)
  return jnp.where(shift, ring.mask_bits(messages + params.magnitude, k), messages)


def rushing_coin(adversary: AdversarySpec, aimed_joint: np.ndarray):
  """Phase COIN deviation of ``rush_coin``: reveal last, so the XOR is ``aimed_joint``.

  Returns the reveal function for ``coin.toss`` (None for every other kind).
  """
  if adversary.kind != 'rush_coin':
    return None
  from privateyes_jax.mpc import coin  # pylint: disable=g-import-not-at-top

  def reveal(contributions):
    contributions[adversary.server] = (np.asarray(aimed_joint, np.uint64)
                                       ^ coin.xor_except(contributions, adversary.server))
    return contributions
  return reveal


def corrupt_check_value(adversary: AdversarySpec, z: np.ndarray,
                        spec: ring.RingSpec, stage: str) -> np.ndarray:
  """Host side: the malicious server changes its z_i at ``stage``.

  Args:
    adversary: the spec.
    z: uint64 ``[servers]`` check values.
    spec: the ring.
    stage: 'commit' (value it commits to) or 'reveal' (value it reveals).

  Returns:
    A copy of z, changed at ``adversary.server`` when kind and stage match.
  """
  z = np.array(z, dtype=np.uint64)
  wanted = 'commit' if adversary.before_commit else 'reveal'
  if adversary.kind == 'corrupt_check_value' and stage == wanted:
    mod = 1 << spec.ring_bits
    z[adversary.server] = np.uint64((int(z[adversary.server]) + adversary.magnitude)
                                    % mod)
  return z


def validate_coalition(coalition: Sequence[int], num_servers: int) -> tuple[int, ...]:
  """A passive coalition: distinct server indices, at most S-1 of them."""
  coalition = tuple(int(i) for i in coalition)
  if len(set(coalition)) != len(coalition):
    raise ValueError(f'coalition={coalition} repeats a server.')
  for i in coalition:
    if not 0 <= i < num_servers:
      raise ValueError(f'coalition member {i} is not a server in [0, {num_servers}).')
  if len(coalition) >= num_servers:
    raise ValueError(
        f'coalition={coalition} contains all {num_servers} servers: with no honest '
        'server left, secret sharing hides nothing. Use at most S-1 servers.')
  return tuple(sorted(coalition))


def coalition_view(coalition: tuple[int, ...], *, coalition_input_estimate: np.ndarray,
                   opened_sum_shares: jax.Array, opened_sum: jax.Array,
                   mac_key_shares: jax.Array | None, **public: Any) -> dict[str, Any]:
  """What a passive coalition learns in one round, as NumPy arrays.

  A coalition's shares of client inputs are ``[coalition, clients, elements]``
  (plus as many MAC shares): gigabytes per round, and everything they say about
  an input x_c is x_c minus the honest servers' shares. So the view keeps that
  sum, the coalition's per-client knowledge, exactly.

  Args:
    coalition: sorted server indices (at most S-1).
    coalition_input_estimate: uint64 ``[clients, elements]``: Σ over the
      coalition of its value shares of x_c, plus the public ε_c when server 0
      (who adds ε) is not in it (privateyes); zero for clients that did not
      submit. MAC shares are independent of x_c given the unknown key and are
      not kept.
    opened_sum_shares: uint64 ``[servers, elements]``: every server broadcasts its
      share of the opened sum, so the coalition sees all of them.
    opened_sum: uint64 ``[elements]``.
    mac_key_shares: uint64 ``[servers]`` (None in semi-honest mode); the
      coalition's rows are kept.
    **public: further public values (check values, coefficients, output mean).

  Returns:
    dict of NumPy arrays (uint64 stays uint64 outside the x64 scope).
  """
  rows = np.asarray(coalition, dtype=np.int64)
  get = lambda a: None if a is None else np.asarray(jax.device_get(a))
  view = {
      'coalition': coalition,
      'coalition_input_estimate': np.asarray(coalition_input_estimate, np.uint64),
      'opened_sum_shares': get(opened_sum_shares),
      'opened_sum': get(opened_sum),
  }
  if mac_key_shares is not None:
    view['mac_key_shares'] = get(mac_key_shares)[rows]
  for name, value in public.items():
    view[name] = get(value) if isinstance(value, jax.Array) else value
  return view
