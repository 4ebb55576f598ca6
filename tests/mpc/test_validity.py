"""The norm-bound validity check inside the MPC (privateyes_jax/mpc/validity.py;
docs/VALIDITY_DESIGN.md §1, §3–§5).

Every test uses one CheckParams (P = 20, element blocks of 8: three blocks, the last
one padded), so each jitted function compiles once for the whole file. A round is
`_round`: the dealer's key per client, the clients' messages, the coin γ, the
servers' zero tests, the opening and the batched MAC check.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from privateyes_jax.mpc import ring
from privateyes_jax.mpc import ring128 as r128
from privateyes_jax.mpc import spdz2k
from privateyes_jax.mpc import validity as V

S = 3
P = 20
SETTINGS = V.ValiditySettings(clip_norm=1.0, element_chunk=8)
PARAMS = SETTINGS.params(P, ring.RingSpec())
B = PARAMS.bound
F = PARAMS.f
TAU = PARAMS.tau
HALF = 1 << (PARAMS.ell - 1)  # elements' bit range [−HALF, HALF)
SLACK_MOD = 1 << PARAMS.slack_bits
ONE = 1 << F  # weight 1.0


@pytest.fixture(autouse=True)
def _x64():
  with jax.enable_x64(True):
    yield


ALPHA_KEY_SHARES = np.random.default_rng(123).integers(0, 2**32, size=S, dtype=np.uint64)
with jax.enable_x64(True):
  ALPHA_SHARES, ALPHA = V.alpha_limbs(jnp.asarray(ALPHA_KEY_SHARES))
ALPHA_INT = int(r128.to_ints(ALPHA))


def _sq(x):
  return sum(int(v) ** 2 for v in np.asarray(x).reshape(-1))


def _key(c):
  return jax.random.fold_in(jax.random.PRNGKey(7), c)


def _claim(x, w=ONE, x_arith=None, w_arith=None, w_bits=None, cw_bits=None, slack=None):
  """A hand-made claim: consistent by default, any field overridden (a malicious client)."""
  x = np.asarray(x, np.int64)
  w_bits = w if w_bits is None else w_bits
  return V.ClientInput(
      x_arith=x if x_arith is None else np.asarray(x_arith, np.int64),
      w_arith=w if w_arith is None else w_arith, x_bits=x, w_bits=w_bits,
      cw_bits=(ONE - w_bits) % (1 << PARAMS.ell_w) if cw_bits is None else cw_bits,
      slack=(B - _sq(x)) % SLACK_MOD if slack is None else slack)


class _Round:
  """What one round gave: the result, every client's ClientCheck, γ."""

  def __init__(self, res, checks, gamma):
    self.res, self.checks, self.gamma = res, checks, gamma


def _round(claims, *, messages=None, gamma=None, tamper=None, edit_tests=None,
           corrupt_z=None, seed=0):
  """One validity round over ``claims`` (one client each).

  messages: replaces client c's message (a client that sends what it likes);
  gamma: replaces the coin's coefficients (to pick the worst case);
  tamper: {client: V.Tamper} — a malicious server inside server_check;
  edit_tests: a function on the stacked zero-test shares [S, C, τ+2, 4] (a server
  changing its shares where V.Tamper has no slot).
  """
  messages = dict(messages or {})
  rng = np.random.default_rng(seed)
  msgs = [messages.get(c) or V.client_message(_key(c), claim, PARAMS)
          for c, claim in enumerate(claims)]
  if gamma is None:  # the joint coin, tossed after every message is fixed
    gamma = V.gamma_coefficients(rng.integers(0, 2**64, size=2, dtype=np.uint64),
                                 len(claims), PARAMS)
  checks = [V.server_check(_key(c), m, gamma[c], ALPHA_SHARES, ALPHA, PARAMS, S,
                           (tamper or {}).get(c, V.Tamper.none()))
            for c, m in enumerate(msgs)]
  tests = V.Auth(jnp.stack([k.tests.value for k in checks], 1),
                 jnp.stack([k.tests.mac for k in checks], 1))
  if edit_tests is not None:
    tests = tests._replace(value=edit_tests(tests.value))
  res = V.open_and_check(tests, ALPHA_SHARES, S, rng, corrupt_z=corrupt_z)
  return _Round(res, checks, np.asarray(gamma))


def _tamper(where, server, index, delta):
  return V.Tamper(jnp.int32(where), jnp.int32(server), jnp.int32(index), r128.constant(delta))


def _assert_aborted_by_mac_check(res):
  assert not res.ok
  assert 'MAC check' in res.failure and 'aborted' in res.failure, res.failure
  assert not res.passed.any()  # nobody passes, nobody is excluded: the round is void


# ---------------------------------------------------------------------------
# Parameters.
# ---------------------------------------------------------------------------


def test_parameters():
  assert PARAMS.ell == 18  # C·2^f = 2^16 needs 17 magnitude bits plus the sign
  assert B == math.ceil((2**16 + math.sqrt(P) / 2)**2)
  assert math.isqrt(B) < HALF  # every element under the bound is bit-expressible
  assert (PARAMS.block, PARAMS.num_blocks) == (8, 3)  # a padded tail of 4
  # The check ring's α is the aggregation ring's α = Σ α_i mod 2^64 (spdz2k's dealer).
  assert int(spdz2k.dealer_mac_key(jnp.asarray(ALPHA_KEY_SHARES), ring.RingSpec())) == ALPHA_INT
  PARAMS.check_clients(2**13, 32)
  with pytest.raises(ValueError, match='may wrap'):  # (C1)
    PARAMS.check_clients(2**14, 32)
  with pytest.raises(ValueError, match='does not fit 63 bits'):  # B ≥ 2^L
    V.ValiditySettings(clip_norm=1.0, slack_bits=32).params(P, ring.RingSpec())


# ---------------------------------------------------------------------------
# 1. Honest clients are never rejected, and the aggregation gets what was checked.
# ---------------------------------------------------------------------------


def _four_squares(n):
  """Four integers whose squares sum to n (Lagrange), found by a short search."""
  for a in range(math.isqrt(n), -1, -1):
    for b in range(math.isqrt(n - a * a), -1, -1):
      rest = n - a * a - b * b
      for c in range(math.isqrt(rest), max(-1, math.isqrt(rest) - 50), -1):
        d = math.isqrt(rest - c * c)
        if d * d == rest - c * c:
          return [a, b, c, d]
  raise AssertionError(n)


def _honest_rows():
  """30 honest (x, w): random updates (clipped or not) and the worst cases."""
  rng = np.random.default_rng(0)
  rows = []
  for scale in (0.05, 0.3, 1.0, 3.0, 100.0) * 4:  # 20 random, most clipped
    u = rng.normal(size=P) * scale / math.sqrt(P)
    rows.append(V.encode_claims(np.append(u, rng.uniform()), clip=True, p=PARAMS,
                                settings=SETTINGS))
  u = rng.normal(size=P)
  exact_c = np.round(u / np.linalg.norm(u) * ONE).astype(np.int64)  # ‖u‖ = C, no shrink
  at_bound = np.zeros(P, np.int64)
  at_bound[[0, 9, 15, 19]] = _four_squares(B)  # Σx² = B exactly: slack 0
  one_elem = lambda j, v: np.where(np.arange(P) == j, v, 0).astype(np.int64)
  rows += [
      (exact_c, ONE), (at_bound, ONE), (-at_bound, 0),
      (one_elem(3, math.isqrt(B)), ONE // 2), (one_elem(19, -math.isqrt(B)), 1),
      V.encode_claims(np.append(one_elem(8, -1.0), 1.0), clip=True, p=PARAMS,
                      settings=SETTINGS),  # all the norm in one element: −C
      V.encode_claims(np.append(one_elem(16, 1.0), 0.0), clip=True, p=PARAMS,
                      settings=SETTINGS),  # +C
      (np.zeros(P, np.int64), 0), (np.zeros(P, np.int64), ONE), (np.full(P, -1), ONE - 1)]
  assert _sq(at_bound) == B and len(rows) == 30
  return rows


@pytest.fixture(scope='module')
def honest_round():
  with jax.enable_x64(True):
    rows = _honest_rows()
    claims = [V.honest_input(x, w, PARAMS) for x, w in rows]
    return rows, _round(claims, seed=1)


def test_honest_clients_always_pass_and_aggregate_exactly_what_was_checked(honest_round):
  rows, rnd = honest_round
  assert rnd.res.ok, rnd.res.failure
  assert rnd.res.passed.all()
  for (x, w), chk in zip(rows, rnd.checks):
    value = np.asarray(chk.agg_value, np.uint64).sum(axis=0, dtype=np.uint64)  # wraps 2^64
    mac = np.asarray(chk.agg_mac, np.uint64).sum(axis=0, dtype=np.uint64)
    expected = np.append(x, w).astype(np.int64).view(np.uint64)
    # x̃ ≡ x mod 2^96, so the aggregation ring's shares hold x exactly mod 2^64
    # (the value ring needs it mod 2^32) ...
    np.testing.assert_array_equal(value, expected)
    # ... under the same α: Σ mac ≡ α·x mod 2^64.
    assert [int(m) for m in mac] == [ALPHA_INT * int(v) % 2**64 for v in value]


def test_opened_zero_tests_hide_everything_above_the_checked_bits(honest_round):
  # An honest client's D's are 0 in the checked bits, and the dealer's masks
  # (2^96·t_t, 2^64·t_T, 2^64·t_w) make the bits above uniform: the opening reveals
  # the pass bit, nothing else. Kills mutant "zero-test masks omitted" (the norm
  # test then opens 2^97·Σh_j·x_j, the weight test exactly 0).
  _, rnd = honest_round
  opened = rnd.res.opened  # [C, τ+2, 4] limbs
  for t in range(TAU + 2):
    low = 3 if t < TAU else 2  # first limb above the checked bits (96 or 64)
    assert not opened[:, t, :low].any()
    for limb in range(low, 4):
      column = opened[:, t, limb]
      assert len(set(column.tolist())) == len(column), (t, limb, column)


def test_the_dealer_cannot_predict_an_honest_clients_consistency_tests(honest_round):
  # Without the 2^96·t_t masks an honest D_t would be 2^96·Σ_j γ_tj·h_j, h_j the top
  # bits of x̃_j = r_j + ε_j: uniform to the servers, but a function of r (the
  # dealer's) and of x's signs. Kills mutant "the consistency tests' masks omitted",
  # which the test above misses (the norm and weight tests keep theirs).
  rows, rnd = honest_round
  for c in range(5):
    x, w = rows[c]
    msg = V.client_message(_key(c), V.honest_input(x, w, PARAMS), PARAMS)
    r = np.concatenate([np.asarray(V._block_secrets(_key(c), jnp.int32(b), PARAMS).r)
                        for b in range(PARAMS.num_blocks)])[:P]
    r = np.concatenate([r, np.asarray(V._scalar_secrets(_key(c), PARAMS).r_w)])
    eps = np.concatenate([np.asarray(msg.epsilon)[:P], np.asarray(msg.eps_w)])
    x_tilde = (r128.to_ints(r) + r128.to_ints(eps)) % 2**128
    diff = [(int(a) - int(v)) % 2**128 for a, v in zip(x_tilde, np.append(x, w))]
    columns = list(range(P)) + [-1]
    for t in range(TAU):
      unmasked = sum(int(rnd.gamma[c, t, j]) * d for j, d in zip(columns, diff)) % 2**128
      assert unmasked % 2**96 == 0  # honest: only the top bits are left
      assert int(r128.to_ints(rnd.res.opened[c, t])) != unmasked


# ---------------------------------------------------------------------------
# 2. A client above the bound is always rejected (no server cheated: no abort).
# ---------------------------------------------------------------------------


def test_clients_above_the_bound_are_rejected_whatever_they_claim():
  rng = np.random.default_rng(2)
  v = rng.normal(size=P)
  over = np.round(v / np.linalg.norm(v) * math.sqrt(B) * (1 + 1e-4)).astype(np.int64)
  t = _sq(over)
  assert B < t <= 1.001 * B
  just_over = np.zeros(P, np.int64)
  just_over[[1, 8, 12, 18]] = _four_squares(B + 1)  # Σx² = B + 1
  one = np.zeros(P, np.int64)
  one[10] = math.isqrt(B) + 1  # a single element just above √B
  lowest = np.zeros(P, np.int64)
  lowest[17] = -HALF  # the most negative element the bits express
  honest_x, _ = V.encode_claims(np.append(v, 1.0), clip=True, p=PARAMS, settings=SETTINGS)
  bad = [_claim(over, slack=s) for s in ((B - t) % SLACK_MOD, 0, 2**62, B, SLACK_MOD - 1)]
  bad += [_claim(just_over), _claim(just_over, slack=0), _claim(one), _claim(one, slack=0),
          _claim(lowest), _claim(np.full(P, HALF - 1))]
  # Boosted and sign-flipped boosted updates: true values in ε, nearest bits.
  bad += [V.best_effort_input(honest_x * k, ONE, PARAMS) for k in (15, -10, 10**6)]
  # Weights above 1 or negative, with every completion of 2^f − w the bits allow.
  bad += [_claim(honest_x, w=ONE + 1, cw_bits=c) for c in (0, 2**PARAMS.ell_w - 1)]
  bad += [_claim(honest_x, w=ONE, w_arith=ONE + 1),  # weight bits lie
          _claim(honest_x, w=2**PARAMS.ell_w - 1, cw_bits=0),
          _claim(honest_x, w=0, w_arith=-1, cw_bits=ONE),  # negative weight, bits 0
          _claim(honest_x, w=2**PARAMS.ell_w - 1, w_arith=-1, cw_bits=0)]
  # Contrast: a sign flip alone keeps the norm; the bound cannot (and must not) reject it.
  good = [_claim(-honest_x), _claim(honest_x)]
  rnd = _round(bad + good, seed=2)
  assert rnd.res.ok, rnd.res.failure
  np.testing.assert_array_equal(rnd.res.passed, [False] * len(bad) + [True] * len(good))


def test_inputs_the_bits_cannot_express_are_refused_in_one_line():
  x = np.zeros(P, np.int64)
  cases = [(_claim(np.where(np.arange(P) == 4, HALF, 0)), 'x_bits'),
           (_claim(np.where(np.arange(P) == 4, -HALF - 1, 0)), 'x_bits'),
           (_claim(x, w_bits=-1, cw_bits=ONE + 1), 'w_bits'),
           (_claim(x, w_bits=2**PARAMS.ell_w), 'w_bits'),
           (_claim(x, cw_bits=-1), 'cw_bits'),
           (_claim(x, slack=-1), 'slack'),
           (_claim(x, slack=SLACK_MOD), 'slack')]
  for claim, name in cases:
    with pytest.raises(ValueError, match=name) as err:
      V.client_message(_key(0), claim, PARAMS)
    assert '\n' not in str(err.value)


# ---------------------------------------------------------------------------
# 3. The wrap-around attacks of VALIDITY_DESIGN §1.
# ---------------------------------------------------------------------------


def _spread(values):
  return np.asarray(list(values) + [0] * (P - len(values)), np.int64)


ATTACKS = {
    'top_bit': _spread([2**31]),  # x² = 2^62 ≡ 0 mod 2^32
    'two_to_the_16': np.full(P, 2**16, np.int64),  # 1.0 everywhere: ‖x‖ = √20 > C
    'cancelling_pair': _spread([2**31, 2**31]),  # ±1 projections give 0 mod 2^32
    'four_top_bits': _spread([2**31] * 4),  # Σx² = 2^64 ≡ 0 even mod 2^64
}


@pytest.mark.parametrize('name', sorted(ATTACKS))
def test_wraparound_attacks_are_rejected_for_every_client_strategy(name):
  attack = ATTACKS[name]
  t = _sq(attack)
  # The naive check, Σx² in the 32-bit value ring, is fooled ...
  assert t % 2**32 <= B
  if name == 'four_top_bits':  # ... even in a 64-bit ring
    assert t % 2**64 == 0
  zeros = np.zeros(P, np.int64)
  wrapped = (attack + HALF) % (2 * HALF) - HALF  # the value mod 2^ℓ, in range
  strategies = [  # big values only in ε, small bits, slacks that suit either
      _claim(zeros, x_arith=attack, slack=B),
      _claim(zeros, x_arith=-attack, slack=B),
      _claim(zeros, x_arith=attack, slack=(B - t) % SLACK_MOD),
      _claim(wrapped, x_arith=attack, slack=B),
      _claim(wrapped, x_arith=attack, slack=(B - _sq(wrapped)) % SLACK_MOD)]
  if np.all((attack >= -HALF) & (attack < HALF)):
    # The bits can express it: consistent bits, the slack has to lie.
    strategies += [_claim(attack, slack=s) for s in ((B - t) % SLACK_MOD, 0, B)]
  else:
    with pytest.raises(ValueError, match='cannot express'):
      V.client_message(_key(0), _claim(attack), PARAMS)
  rnd = _round(strategies, seed=3)
  assert rnd.res.ok, rnd.res.failure
  assert not rnd.res.passed.any(), rnd.res.passed


# ---------------------------------------------------------------------------
# 4. Differences ≡ 0 mod 2^64 between ε and the bits: "mod 2^64" is tight (§4).
# ---------------------------------------------------------------------------


def test_only_differences_that_vanish_mod_2_to_the_64_can_pass_and_they_are_harmless():
  # x_arith is int64, so x + 2^95 cannot be claimed; the client builds its message
  # itself instead (it may send any ε): ε_0 += δ mod 2^96.
  x, w = V.encode_claims(np.append(np.full(P, 0.2), 0.5), clip=True, p=PARAMS,
                         settings=SETTINGS)
  claim = V.honest_input(x, w, PARAMS)

  def shifted(c, delta):
    msg = V.client_message(_key(c), claim, PARAMS)
    eps0 = r128.mod_bits(r128.add(msg.epsilon[0], r128.constant(delta)), V.CHECK_VALUE_BITS)
    return msg._replace(epsilon=msg.epsilon.at[0].set(eps0))

  # (δ, γ_t0 for both repetitions, passes?)
  cases = [(2**95, 2, True), (2**95, 3, False), (2**95, 2**31 + 1, False),
           (2**64, 0, True), (2**64, 2**31, False), (2**63, 2**31, False)]
  gamma = np.array(V.gamma_coefficients(np.array([9, 9], np.uint64), len(cases), PARAMS))
  for c, (_, g, _) in enumerate(cases):
    gamma[c, :, 0] = g
  rnd = _round([claim] * len(cases), gamma=gamma,
               messages={c: shifted(c, d) for c, (d, _, _) in enumerate(cases)}, seed=4)
  assert rnd.res.ok, rnd.res.failure
  np.testing.assert_array_equal(rnd.res.passed, [ok for _, _, ok in cases])
  # What passes changes nothing in the aggregate (x̃ ≡ x mod 2^64).
  expected = np.append(x, w).astype(np.int64).view(np.uint64)
  for c in np.flatnonzero(rnd.res.passed):
    value = np.asarray(rnd.checks[c].agg_value, np.uint64).sum(axis=0, dtype=np.uint64)
    np.testing.assert_array_equal(value, expected)


# ---------------------------------------------------------------------------
# 5. A server that changes a value of the check aborts the round.
# ---------------------------------------------------------------------------


@pytest.fixture(scope='module')
def three_honest():
  with jax.enable_x64(True):
    rng = np.random.default_rng(5)
    return [V.honest_input(*V.encode_claims(np.append(rng.normal(size=P), 1.0), clip=True,
                                            p=PARAMS, settings=SETTINGS), PARAMS)
            for _ in range(3)]


@pytest.mark.parametrize('delta', [0, 1, 2**95, 7 * 2**40], ids=['0', '1', '2^95', '7x2^40'])
@pytest.mark.parametrize('index', range(TAU + 2))
def test_tampered_zero_test_aborts_the_round(three_honest, index, delta):
  server = index % S
  rnd = _round(three_honest, tamper={1: _tamper(1, server, index, delta)}, seed=6)
  if delta == 0:  # the control: the plumbing alone changes nothing
    assert rnd.res.ok and rnd.res.passed.all()
    return
  _assert_aborted_by_mac_check(rnd.res)
  checked = V.CHECK_VALUE_BITS if index < TAU else V.EXACT_BITS
  # Without the MAC check the honest client would have looked rejected (when the
  # change reaches the checked bits).
  looks_rejected = not V.passes(rnd.res.opened, TAU)[1]
  assert looks_rejected == (delta % 2**checked != 0)


@pytest.mark.parametrize('element', [0, 9, 19])
def test_tampered_bit_share_of_an_honest_client_aborts_instead_of_excluding_it(
    three_honest, element):
  rnd = _round(three_honest, tamper={2: _tamper(2, element % S, element, 1)}, seed=7)
  _assert_aborted_by_mac_check(rnd.res)
  assert not V.passes(rnd.res.opened, TAU)[2]  # it would have been excluded silently


@pytest.mark.parametrize('spread', ['same_client', 'two_clients'])
def test_changes_that_cancel_in_a_plain_sum_still_abort(three_honest, spread):
  # +d on one zero test and −d on another: the MAC check's random χ must not
  # weigh them equally. Kills mutant "χ = 1 for all".
  d = 1 + 2**70
  if spread == 'same_client':  # V.Tamper has one slot: change the shares directly
    def edit(value):
      value = value.at[0, 0, 0].set(r128.add(value[0, 0, 0], r128.constant(d)))
      return value.at[0, 0, TAU].set(r128.add(value[0, 0, TAU], r128.constant(-d)))
    rnd = _round(three_honest, edit_tests=edit, seed=8)
  else:
    rnd = _round(three_honest, tamper={0: _tamper(1, 1, 0, d), 2: _tamper(1, 1, 0, -d)},
                 seed=8)
  _assert_aborted_by_mac_check(rnd.res)


def test_a_server_revealing_another_check_value_than_it_committed_to_aborts(three_honest):
  def corrupt(z):
    z[1, 0] = (z[1, 0] + 1) % 2**32
    return z

  rnd = _round(three_honest, corrupt_z=corrupt, seed=9)
  assert not rnd.res.ok
  assert 'server(s) [1]' in rnd.res.failure and 'commitment' in rnd.res.failure
  assert not rnd.res.passed.any()


# ---------------------------------------------------------------------------
# 6. The servers read a message as bits: a "bit" of 2^k cannot widen a range.
# ---------------------------------------------------------------------------


def test_a_non_bit_digit_in_the_slack_cannot_let_a_long_update_pass():
  # The range of x̂ and σ holds by construction only if every c is 0 or 1. The
  # client knows ρ (from the dealer's seed); where ρ_l = 0, a "bit" c_l = b_l + 2^(63−l)
  # adds 2^63 to σ, and σ = B − T + 2^64 satisfies D_T ≡ 0 mod 2^64 for Σx² ≈ 4B.
  # Kills the missing parse in server_check (before the fix: passed [True]).
  u = np.random.default_rng(11).normal(size=P)
  x = np.round(2 * u / np.linalg.norm(u) * ONE).astype(np.int64)  # ‖x‖ ≈ 2C
  assert _sq(x) > 3 * B
  base = B - _sq(x) + 2**64 - 2**63  # the low 63 bits of the slack it needs
  claim = _claim(x, slack=base)
  msg = V.client_message(_key(0), claim, PARAMS)
  bits_s = np.array(msg.bits_s)
  rho = bits_s[0] ^ ((base >> np.arange(PARAMS.slack_bits)) & 1).astype(np.uint8)
  digit = max(l for l in range(56, PARAMS.slack_bits) if rho[l] == 0)
  bits_s[0, digit] += 2**(63 - digit)
  forged = msg._replace(bits_s=jnp.asarray(bits_s))
  rnd = _round([claim], messages={0: forged}, seed=10)
  assert rnd.res.ok, rnd.res.failure
  assert not rnd.res.passed.any()


def test_a_malformed_message_is_refused_in_one_line_before_any_server_uses_it():
  with jax.enable_x64(True):
    msg = V.client_message(jax.random.PRNGKey(3), V.honest_input(np.zeros(P, np.int64), 0, PARAMS),
                           PARAMS)
    short = msg._replace(bits=msg.bits[:-1])
    with pytest.raises(ValueError, match=r"bits has shape .* expected"):
      V.server_check(jax.random.PRNGKey(3), short, np.zeros((PARAMS.tau, 25), np.uint64),
                     None, None, PARAMS, 3, V.Tamper.none())


def test_an_honest_clients_own_check_refuses_what_the_servers_would_reject():
  # Mutant killed: honest_input never raising (a bug upstream would then surface only as
  # an honest client excluded by the servers).
  big = np.zeros(P, np.int64)
  big[0] = HALF  # one element the bits cannot express
  long = np.zeros(P, np.int64)
  long[:2] = math.isqrt(B // 2) + 1  # Σx² just over B with small elements
  for x, w in ((big, ONE), (long, ONE), (np.zeros(P, np.int64), ONE + 1)):
    with pytest.raises(V.NotValid, match='above the bound'):
      V.honest_input(x, w, PARAMS)
  edge = np.zeros(P, np.int64)
  edge[0] = math.isqrt(B)
  assert V.honest_input(edge, ONE, PARAMS).slack == B - math.isqrt(B)**2
