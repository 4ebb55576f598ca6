"""Randomized active-security suite: every deviation aborts, no honest run does.

Each trial draws S ∈ [2, num_servers_max], a deviation kind, the malicious
server, its target client and element, and a random error magnitude (half small,
half uniform over Z_2^(k+s) with a nonzero low part, since errors that vanish mod
2^k are out of SPDZ2k's promise: see ``adversary``). It runs the real
``SecureAggregator`` on random individual updates. ``replay_client`` trials run
two rounds: the first (nothing to replay yet) must pass, the second must abort.
Used by tests/mpc (a few dozen trials) and experiments/mpc_stress.py (10,000).
"""

from __future__ import annotations

import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from privateyes_jax.mpc import adversary as adversary_lib
from privateyes_jax.mpc import aggregator as aggregator_lib
from privateyes_jax.mpc import ring

MAX_WEIGHT = 16.0


@dataclasses.dataclass
class SuiteReport:
  """Counts per adversary kind ('none' = honest runs)."""
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


def random_adversary(rng: np.random.Generator, kind: str, num_servers: int,
                     num_clients: int, num_elements: int,
                     spec: ring.RingSpec) -> adversary_lib.AdversarySpec:
  """Draws the parameters of one deviation of ``kind``."""
  value_mask = (1 << spec.k) - 1
  if rng.random() < 0.5:
    magnitude = int(rng.integers(1, 1 << 16))
  else:
    magnitude = int(rng.integers(0, 1 << 63)) * 2 + int(rng.integers(0, 2))
    magnitude %= 1 << spec.ring_bits
  if magnitude & value_mask == 0:
    magnitude |= 1 << int(rng.integers(0, spec.k))
  return adversary_lib.AdversarySpec(
      kind=kind,
      server=int(rng.integers(0, num_servers)),
      client=int(rng.integers(0, num_clients)),
      magnitude=magnitude,
      element=int(rng.integers(-1, num_elements)),
      before_commit=bool(rng.integers(0, 2)))


def run_trial(rng: np.random.Generator, kind: str, num_servers: int,
              num_clients: int, num_params: int, spec: ring.RingSpec,
              key: jax.Array) -> tuple[bool, str]:
  """Runs one trial; returns (as_expected, description of what went wrong)."""
  adversary = random_adversary(rng, kind, num_servers, num_clients,
                               num_params + 1, spec)
  agg = aggregator_lib.SecureAggregator(
      spec=spec, num_servers=num_servers, max_weight=MAX_WEIGHT,
      adversary=adversary, num_params=num_params)
  state = agg.init(jax.random.fold_in(key, 0))
  rounds = 2 if adversary.needs_previous_shares else 1
  for round_idx in range(rounds):
    round_key = jax.random.fold_in(key, round_idx + 1)
    updates = jnp.asarray(rng.normal(0.0, 0.1, (num_clients, num_params)),
                          jnp.float32)
    weights = rng.integers(0, int(MAX_WEIGHT) + 1, num_clients).astype(np.float32)
    # The target must submit: dropping or replaying nobody is no deviation.
    weights[adversary.client] = float(rng.integers(1, int(MAX_WEIGHT) + 1))
    state, result = agg.apply(state, updates, jnp.asarray(weights), round_key,
                              round_idx)
    must_abort = adversary.active and round_idx == rounds - 1
    if result.ok == must_abort:
      what = ('undetected' if must_abort else 'aborted honest round')
      return False, (f'{what}: {adversary} S={num_servers} round={round_idx} '
                     f'failure={result.failure!r}')
  return True, ''


def run_suite(num_trials: int, seed: int, num_servers_max: int = 5,
              num_clients: int = 4, num_params: int = 8,
              spec: ring.RingSpec = ring.RingSpec(),
              honest_fraction: float = 0.125) -> SuiteReport:
  """Runs ``num_trials`` random trials (a fraction of them honest)."""
  if num_servers_max < 2:
    raise ValueError(f'num_servers_max={num_servers_max} must be at least 2.')
  rng = np.random.default_rng(seed)
  root = jax.random.key(seed)
  active_kinds = [k for k in adversary_lib.KINDS if k != 'none']
  report = SuiteReport()
  for trial in range(num_trials):
    kind = ('none' if rng.random() < honest_fraction
            else active_kinds[trial % len(active_kinds)])
    num_servers = int(rng.integers(2, num_servers_max + 1))
    as_expected, failure = run_trial(rng, kind, num_servers, num_clients,
                                     num_params, spec,
                                     jax.random.fold_in(root, trial))
    report.trials[kind] += 1
    if kind != 'none':
      report.detected[kind] += int(as_expected)
    if not as_expected:
      report.failed[kind] += 1
      report.failures.append(failure)
  return report
