"""Randomized active-security suite: every deviation aborts, no honest run does.

Each trial draws S ∈ [2, num_servers_max], a scenario, the malicious server, its
target client and element, and a random error magnitude (half small, half uniform
over Z_2^(k+s) with a nonzero low part), and runs the real ``SecureAggregator`` on
random individual updates. Scenarios are the adversary kinds (``adversary.KINDS``)
but the inert ones (``adversary.INERT_KINDS``: the protocol gives them no channel, the
round is the honest one; tests/mpc/test_mpc_hardening.py checks that bit for bit) and
the validity check's (``adversary.VALIDITY_KINDS``, which need ``aggregator.validity``;
tests/mpc/test_mpc_validity_round.py runs them) plus attacks that need more than one call:

* ``replay_client``: round 0 (nothing to replay yet) must pass, round 1 abort;
* ``replay_attempt``: the same, but the replay is into the NEXT ATTEMPT of the same
  round (after ``retire_attempt``), with the same inputs: caught only if the new
  attempt's masks differ;
* ``cancel_chi``: errors that cancel across elements 0 and 1 for a χ guessed by a
  DRY RUN of the same attempt (same state, key and round, honest, view recorded):
  any χ that is a function of public or stored data is guessed exactly;
* ``cancel_chi_retired``: the same with the χ of an earlier attempt that aborted
  (the abort-then-resume forgery of issue #13);
* ``guess_mac``: the MAC adjusted by a uniformly guessed α;
* ``rush_coin``: a rushing server that fixes the joint coin (and the matching
  cancelling error);
* ``inconsistent_model``: 1 to S-1 servers send a crafted model to all clients
  but one (``consistency.distribute``); some client must refuse.

``measure_escapes`` runs one scenario many times at a small s and compares the
escape rate with the ideal check's (``ideal_escape_rate``) by a binomial test;
``experiments/mpc_stress.py`` reports both. Used by tests/mpc (a few dozen trials).
"""

from __future__ import annotations

import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from privateyes_jax.mpc import adversary as adversary_lib
from privateyes_jax.mpc import aggregator as aggregator_lib
from privateyes_jax.mpc import consistency
from privateyes_jax.mpc import ring

MAX_WEIGHT = 16.0
MULTI_CALL = ('replay_attempt', 'cancel_chi_retired')
SCENARIOS = tuple(k for k in adversary_lib.KINDS
                  if k not in adversary_lib.INERT_KINDS + adversary_lib.VALIDITY_KINDS
                  ) + MULTI_CALL
ACTIVE = tuple(k for k in SCENARIOS if k != 'none')
# The scenarios whose escape rate at small s is measured (``measure_escapes``).
MEASURED = ('add_error', 'high_error', 'guess_mac', 'cancel_chi', 'cancel_chi_retired')


@dataclasses.dataclass
class SuiteReport:
  """Counts per scenario ('none' = honest runs)."""
  trials: dict[str, int] = dataclasses.field(
      default_factory=lambda: collections.Counter())
  detected: dict[str, int] = dataclasses.field(
      default_factory=lambda: collections.Counter())
  failed: dict[str, int] = dataclasses.field(  # Undetected, or honest aborted.
      default_factory=lambda: collections.Counter())
  failures: list[str] = dataclasses.field(default_factory=list)

  @property
  def ok(self) -> bool:
    """No attack went undetected and no honest run aborted."""
    return not self.failures


def _magnitude(rng: np.random.Generator, spec: ring.RingSpec) -> int:
  value_mask = (1 << spec.k) - 1
  if rng.random() < 0.5:
    magnitude = int(rng.integers(1, 1 << 16))
  else:
    magnitude = int(rng.integers(0, 1 << 63)) * 2 + int(rng.integers(0, 2))
    magnitude %= 1 << spec.ring_bits
  if magnitude & value_mask == 0:
    magnitude |= 1 << int(rng.integers(0, spec.k))
  return magnitude


def random_adversary(rng: np.random.Generator, scenario: str, num_servers: int,
                     num_clients: int, num_elements: int, spec: ring.RingSpec,
                     magnitude: int | None = None,
                     single_element: bool = False) -> adversary_lib.AdversarySpec:
  """Draws the parameters of one deviation of ``scenario`` (guesses filled later)."""
  kind = {'replay_attempt': 'replay_client',
          'cancel_chi_retired': 'cancel_chi'}.get(scenario, scenario)
  guess = {'cancel_chi': (1, 1), 'guess_mac': (int(rng.integers(0, 1 << spec.s)),),
           'rush_coin': tuple(int(g) for g in rng.integers(0, 2**63, 2))}.get(kind, ())
  return adversary_lib.AdversarySpec(
      kind=kind,
      server=int(rng.integers(0, num_servers)),
      client=int(rng.integers(0, num_clients)),
      magnitude=_magnitude(rng, spec) if magnitude is None else magnitude,
      # A measured error sits on a parameter, not on the weight column, which the
      # output check (0 < Σw̃ ≤ n) would also catch: the rate is the MAC check's.
      element=int(rng.integers(0, num_elements - 1) if single_element
                  else rng.integers(-1, num_elements)),
      before_commit=bool(rng.integers(0, 2)),
      guess=guess)


def _inputs(rng, num_clients, num_params, target):
  updates = jnp.asarray(rng.normal(0.0, 0.1, (num_clients, num_params)), jnp.float32)
  weights = rng.integers(1, int(MAX_WEIGHT) + 1, num_clients).astype(np.float32)
  if num_clients > aggregator_lib.DEFAULT_MIN_CLIENTS and rng.random() < 0.5:
    # One dropout, never the target: dropping or replaying nobody is no deviation.
    weights[(target + 1 + int(rng.integers(0, num_clients - 1))) % num_clients] = 0.0
  return updates, jnp.asarray(weights)


def _observed_chi(agg, state, updates, weights, key, round_idx):
  """The χ an honest run of this attempt opens (a coalition of server 0 records it)."""
  observer = dataclasses.replace(agg, adversary=adversary_lib.AdversarySpec(),
                                 coalition=(0,), record_view=True)
  _, result = observer.apply(state, updates, weights, key, round_idx)
  return tuple(int(c) for c in result.view['check_coefficients'][:2])


def run_trial(rng: np.random.Generator, scenario: str, num_servers: int,
              num_clients: int, num_params: int, spec: ring.RingSpec,
              key: jax.Array, magnitude: int | None = None) -> tuple[bool, str]:
  """Runs one trial; returns (as_expected, description of what went wrong).

  ``magnitude`` fixes the error and puts it on one element (``measure_escapes``).
  """
  adversary = random_adversary(rng, scenario, num_servers, num_clients,
                               num_params + 1, spec, magnitude,
                               single_element=magnitude is not None)
  agg = aggregator_lib.SecureAggregator(
      spec=spec, num_servers=num_servers, max_weight=MAX_WEIGHT,
      adversary=adversary, num_params=num_params)
  state = agg.init(jax.random.fold_in(key, 0))
  round_key = jax.random.fold_in(key, 1)
  updates, weights = _inputs(rng, num_clients, num_params, adversary.client)
  must_abort = scenario != 'none'
  if scenario == 'inconsistent_model':
    malicious = rng.choice(num_servers, int(rng.integers(1, num_servers)), replace=False)
    broadcast = consistency.distribute(
        rng.normal(size=num_params).astype(np.float32), num_clients, num_servers,
        malicious=tuple(int(i) for i in malicious), target=adversary.client)
    if broadcast.ok:
      return False, f'undetected: {scenario} malicious={malicious.tolist()} S={num_servers}'
    return True, ''
  if scenario == 'replay_client':
    state, first = agg.apply(state, updates, weights, round_key, 0)
    if not first.ok:
      return False, f'aborted honest first round: {adversary} failure={first.failure!r}'
    round_key = jax.random.fold_in(key, 2)
    updates, weights = _inputs(rng, num_clients, num_params, adversary.client)
    round_idx = 1
  elif scenario == 'replay_attempt':
    state, first = agg.apply(state, updates, weights, round_key, 0)
    if not first.ok:
      return False, f'aborted honest first attempt: {adversary} failure={first.failure!r}'
    state = agg.retire_attempt(state)  # As after an abort; the inputs stay the same.
    round_idx = 0
  elif scenario == 'cancel_chi':
    # χ of a dry run of this very attempt: any χ fixed by (state, key, round) leaks.
    guess = _observed_chi(agg, state, updates, weights, round_key, 0)
    agg = dataclasses.replace(agg, adversary=dataclasses.replace(adversary, guess=guess))
    round_idx = 0
  elif scenario == 'cancel_chi_retired':
    # Attempt 0 aborts (a plain error); its public χ is the guess for attempt 1.
    spoiler = dataclasses.replace(
        agg, adversary=adversary_lib.AdversarySpec('add_error', server=adversary.server),
        coalition=(0,), record_view=True)
    state, aborted = spoiler.apply(state, updates, weights, round_key, 0)
    if aborted.ok:  # The spoiler escaped (probability ~2^-s): retire by hand.
      state = agg.retire_attempt(state)
    guess = tuple(int(c) for c in aborted.view['check_coefficients'][:2])
    agg = dataclasses.replace(agg, adversary=dataclasses.replace(adversary, guess=guess))
    round_idx = 0
  else:
    round_idx = 0
  state, result = agg.apply(state, updates, weights, round_key, round_idx)
  if result.ok == must_abort:
    what = 'undetected' if must_abort else 'aborted honest round'
    return False, (f'{what}: {scenario} {agg.adversary} S={num_servers} '
                   f'failure={result.failure!r}')
  return True, ''


def run_suite(num_trials: int, seed: int, num_servers_max: int = 5,
              num_clients: int = 4, num_params: int = 8,
              spec: ring.RingSpec = ring.RingSpec(),
              honest_fraction: float = 0.125,
              scenarios: tuple[str, ...] = ACTIVE) -> SuiteReport:
  """Runs ``num_trials`` random trials (a fraction of them honest)."""
  if num_servers_max < 2:
    raise ValueError(f'num_servers_max={num_servers_max} must be at least 2.')
  rng = np.random.default_rng(seed)
  root = jax.random.key(seed)
  report = SuiteReport()
  for trial in range(num_trials):
    scenario = ('none' if rng.random() < honest_fraction
                else scenarios[trial % len(scenarios)])
    num_servers = int(rng.integers(2, num_servers_max + 1))
    as_expected, failure = run_trial(rng, scenario, num_servers, num_clients,
                                     num_params, spec, jax.random.fold_in(root, trial))
    report.trials[scenario] += 1
    if scenario != 'none':
      report.detected[scenario] += int(as_expected)
    if not as_expected:
      report.failed[scenario] += 1
      report.failures.append(failure)
  return report


# ---------------------------------------------------------------------------
# Escape rates at small s against the ideal check.
# ---------------------------------------------------------------------------


def fixed_magnitude(scenario: str, rng: np.random.Generator, spec: ring.RingSpec) -> int:
  """The error each measured scenario uses (``ideal_escape_rate`` models the same)."""
  if scenario == 'add_error':
    return 1 << (spec.k - 1)  # The sign bit: the hardest single error to catch.
  return int(rng.integers(0, 1 << 62)) * 2 + 1  # Odd.


def ideal_escape_rate(scenario: str, spec: ring.RingSpec, num_servers: int = 3,
                      samples: int = 1 << 20, seed: int = 0) -> float:
  """P[the check passes] for uniform, independent χ_j ∈ Z_2^s and MAC key (Monte Carlo).

  The ideal check: a deviation (δ on opened values, Δm on MAC shares) passes iff
  Σ_j χ_j (α δ_j − Δm_j) ≡ 0 mod 2^(k+s). As in SPDZ2k and MP-SPDZ, α = Σ_i α_i
  over S uniform shares α_i ∈ Z_2^s, lifted to Z_2^(k+s) without reduction mod 2^s.
  Errors as ``fixed_magnitude``; guesses (of α or χ) are independent of the true
  ones, as they are when χ is fresh.
  """
  rng = np.random.default_rng(seed)
  mod = np.uint64((1 << spec.ring_bits) - 1) if spec.ring_bits < 64 else np.uint64(2**64 - 1)
  draw = lambda: rng.integers(0, 1 << spec.s, samples, dtype=np.uint64)
  alpha = sum(draw() for _ in range(num_servers))
  chi0, chi1 = draw(), draw()
  odd = rng.integers(0, 1 << 62, samples, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
  with np.errstate(over='ignore'):
    if scenario == 'add_error':
      total = chi0 * alpha * np.uint64(1 << (spec.k - 1))
    elif scenario == 'high_error':
      total = chi0 * alpha * (odd << np.uint64(spec.k))
    elif scenario == 'guess_mac':
      total = chi0 * (alpha * odd - draw() * odd)
    elif scenario in ('cancel_chi', 'cancel_chi_retired'):
      g0, g1 = draw(), draw()
      total = alpha * odd * (chi0 * g1 - chi1 * g0)
    else:
      raise ValueError(f'no ideal escape rate for {scenario!r}.')
  return float(np.mean((total & mod) == 0))


def measure_escapes(scenario: str, spec: ring.RingSpec, trials: int, seed: int,
                    num_servers: int = 3, num_clients: int = 4,
                    num_params: int = 3) -> int:
  """Runs ``trials`` attacks of ``scenario``; returns how many escaped the check."""
  rng = np.random.default_rng(seed)
  root = jax.random.key(seed)
  escapes = 0
  for trial in range(trials):
    as_expected, _ = run_trial(rng, scenario, num_servers, num_clients, num_params, spec,
                               jax.random.fold_in(root, trial),
                               magnitude=fixed_magnitude(scenario, rng, spec))
    escapes += int(not as_expected)
  return escapes


def binomial_p_value(escapes: int, trials: int, rate: float) -> float:
  """Two-sided binomial test of the observed escapes against ``rate``."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  return float(stats.binomtest(escapes, trials, rate).pvalue)
