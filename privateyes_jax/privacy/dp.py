"""Client-level differential privacy of a federated run (DP-FedAvg with Poisson sampling).

The mechanism of one round (McMahan, Ramage, Talwar, Zhang, ICLR 2018), as the engine
runs it when ``config.aggregator.dp.enabled``:

1. **Sampling.** Each client joins the round independently with probability
   q = (clients per round) / (clients), from a generator that is a pure function of
   (seed, round), so a resumed run repeats it. The executor's shapes stay fixed: the
   sampled clients are padded to a fixed `capacity` with unsampled ones whose weight
   is zero (they submit nothing).
2. **Clipping.** Each sampled client's update Δ_c is scaled to L2 norm at most C
   (``clip_norm``), on the client, before it is shared.
3. **Uniform weights.** Every sampled client has weight 1 (w̃_c = 1 in the MPC): a
   client's sample count would otherwise change the sensitivity.
4. **Noise.** PrivatEyes: every server adds its own discrete Gaussian noise of std
   z·C (in the ring's units, see `mpc_noise_std`) inside the MPC, before anything is
   opened (docs/MPC.md §5b). Plain FL: the one trusted server adds a continuous
   Gaussian of std z·C (central DP, the baseline).
5. **Fixed denominator.** The mean is (Σ_c Δ_c + noise) / (q·N): dividing by the
   realised cohort size would release it, and the accountant's guarantee covers the
   noisy sum only.

The add/remove-one-client sensitivity of the sum is C, so each round is the
Poisson-subsampled Gaussian mechanism with noise multiplier z, composed over the
rounds; `accounting` (dp-accounting) gives ε at δ.

Two adversaries, two numbers (both recorded):

* ``epsilon``: whoever sees the released models (or the opened sums) but not who was
  sampled: amplification by sampling applies.
* ``epsilon_vs_servers``: the servers see which clients submitted in every round, so
  sampling hides nothing from them: the Gaussian mechanism composed over the rounds
  in which the client took part (the most of any client so far).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats


def _accounting():
  # dp-accounting is imported when DP is used, not by every training import.
  from privateyes_jax.privacy import accounting  # pylint: disable=g-import-not-at-top
  return accounting

# Chance that a round's Poisson sample exceeds the executor's fixed capacity (the round
# then runs with a larger, freshly compiled shape: correct, only slower). Every slot costs
# local training and MPC work whether or not it is sampled: at N = 200, q = 0.08 a tail of
# 1e-9 padded 16 expected clients to 44 slots (2.75x the work), 1e-3 pads to 29.
CAPACITY_TAIL = 1e-3


@dataclasses.dataclass(frozen=True)
class DPSettings:
  """Public parameters of client-level DP for one run.

  Attributes:
    clip_norm: C, the L2 bound of one client's update.
    noise_multiplier: z; the honest server's (or the central server's) noise std is z·C.
      0: the same clipping, sampling and denominator without noise (ε = ∞), the
      curve's no-privacy point.
    delta: δ of the reported (ε, δ).
    accountant: one of ``accounting.ACCOUNTANTS``.
    sampling_rate: q, each client's chance to join a round.
    num_clients: N, clients in the federation.
    rounds: T, rounds of the run (the accountant composes all of them).
    target_epsilon: the ε that z was calibrated for (0: z was given).
  """
  clip_norm: float
  noise_multiplier: float
  delta: float
  accountant: str
  sampling_rate: float
  num_clients: int
  rounds: int
  target_epsilon: float = 0.0

  @property
  def expected_clients(self) -> float:
    """q·N, the public denominator of the mean."""
    return self.sampling_rate * self.num_clients

  @property
  def noise_std(self) -> float:
    """z·C in the update's units (each server's, and plain FL's central noise)."""
    return self.noise_multiplier * self.clip_norm

  @classmethod
  def from_config(cls, dp_config: Any, *, num_clients: int, clients_per_round: int,
                  rounds: int) -> 'DPSettings | None':
    """``config.aggregator.dp`` → settings, or None when DP is off.

    Raises:
      ValueError: one line naming the bad field.
    """
    if dp_config is None or not bool(dp_config.get('enabled', False)):
      return None
    clip = float(dp_config.get('clip_norm', 1.0))
    if not (math.isfinite(clip) and clip > 0):
      raise ValueError(f'aggregator.dp.clip_norm={clip} must be a finite number > 0.')
    delta = float(dp_config.get('delta', 1e-5))
    if not 0 < delta < 1.0 / num_clients:
      raise ValueError(
          f'aggregator.dp.delta={delta} must be in (0, 1/{num_clients}): a δ of 1/N or more '
          'allows the mechanism to publish one client\'s data outright.')
    accounting = _accounting()
    name = str(dp_config.get('accountant', 'rdp'))
    if name not in accounting.ACCOUNTANTS:
      raise ValueError(f'aggregator.dp.accountant={name!r} is not one of '
                       f'{accounting.ACCOUNTANTS}.')
    q = clients_per_round / num_clients
    target = float(dp_config.get('target_epsilon', 0.0) or 0.0)
    if target < 0 or not math.isfinite(target):
      raise ValueError(f'aggregator.dp.target_epsilon={target} must be >= 0 (0: use '
                       'aggregator.dp.noise_multiplier).')
    if target > 0:
      z = accounting.calibrate_noise_multiplier(target, q, rounds, delta, name)
    else:
      z = float(dp_config.get('noise_multiplier', 1.0))
      if not (math.isfinite(z) and z >= 0):
        raise ValueError(f'aggregator.dp.noise_multiplier={z} must be a finite number >= 0 '
                         '(0: clipping and sampling without noise, ε = ∞; or set '
                         'aggregator.dp.target_epsilon).')
    return cls(clip_norm=clip, noise_multiplier=float(z), delta=delta, accountant=name,
               sampling_rate=q, num_clients=num_clients, rounds=rounds,
               target_epsilon=target)

  def summary(self) -> dict[str, Any]:
    return {'clip_norm': self.clip_norm, 'noise_multiplier': self.noise_multiplier,
            'delta': self.delta, 'accountant': self.accountant,
            'sampling_rate': self.sampling_rate, 'expected_clients': self.expected_clients,
            'target_epsilon': self.target_epsilon or None}


# ---------------------------------------------------------------------------
# Sampling, clipping.
# ---------------------------------------------------------------------------


def capacity(num_clients: int, sampling_rate: float) -> int:
  """Executor slots per round: the Binomial(N, q) quantile at 1 − `CAPACITY_TAIL`."""
  if sampling_rate >= 1.0:
    return num_clients
  return int(min(num_clients, scipy.stats.binom.isf(CAPACITY_TAIL, num_clients,
                                                    sampling_rate) + 1))


def poisson_sample(seed: int, round_idx: int, num_clients: int,
                   sampling_rate: float) -> np.ndarray:
  """The clients of round ``round_idx``: each with probability q, independently.

  A pure function of (seed, round), like `server.sample_clients`.
  """
  rng = np.random.default_rng([seed, 5, round_idx])
  return np.flatnonzero(rng.random(num_clients) < sampling_rate)


def plan_round(seed: int, round_idx: int, settings: DPSettings,
               slots: int) -> tuple[np.ndarray, np.ndarray]:
  """(client ids ``[max(slots, sampled)]`` sorted, sampled mask): the sampled clients
  padded with unsampled ones (weight zero: they submit nothing)."""
  n = settings.num_clients
  sampled = poisson_sample(seed, round_idx, n, settings.sampling_rate)
  pad = max(slots - sampled.size, 0)
  others = np.setdiff1d(np.arange(n), sampled)[:pad]
  ids = np.concatenate([sampled, others])
  order = np.argsort(ids, kind='stable')
  member = np.concatenate([np.ones(sampled.size, bool), np.zeros(others.size, bool)])
  return ids[order], member[order]


@functools.partial(jax.jit, static_argnames=('clip_norm',))
def clip_updates(updates: jax.Array, clip_norm: float) -> tuple[jax.Array, jax.Array]:
  """Each row scaled to L2 norm at most ``clip_norm``: (clipped ``[C, P]``, norms ``[C]``)."""
  norms = jnp.sqrt(jnp.sum(jnp.square(updates.astype(jnp.float32)), axis=1))
  scale = jnp.minimum(1.0, clip_norm / jnp.maximum(norms, 1e-30))
  return updates * scale[:, None], norms


def round_weights(member: np.ndarray, max_weight: float) -> jax.Array:
  """Uniform weights: w_max for a sampled client (w̃ = 1 in the MPC), 0 otherwise."""
  return jnp.asarray(np.where(member, max_weight, 0.0), jnp.float32)


# ---------------------------------------------------------------------------
# Noise.
# ---------------------------------------------------------------------------


def mpc_noise_std(settings: DPSettings, num_params: int, fractional_bits: int) -> float:
  """Each server's discrete Gaussian std in the ring's integer units (2^-f).

  A clipped update encoded as round(Δ·2^f) has L2 norm at most C·2^f + √P/2 (each
  element rounds by at most 1/2), so the integer sum's sensitivity is that bound and
  σ = z·(C·2^f + √P/2) keeps the accountant's noise multiplier z exact.
  """
  sensitivity = settings.clip_norm * 2.0**fractional_bits + math.sqrt(num_params) / 2
  return settings.noise_multiplier * sensitivity


@functools.partial(jax.jit, static_argnames=('num_params',))
def central_noise(key: jax.Array, std: jax.Array, num_params: int) -> jax.Array:
  """Plain FL's central-DP noise: N(0, std²) float32 ``[P]``."""
  return std * jax.random.normal(key, (num_params,), jnp.float32)


# ---------------------------------------------------------------------------
# The ledger: ε per round.
# ---------------------------------------------------------------------------


class Ledger:
  """ε after every round for both adversaries (see the module docstring).

  ``epsilons[t]`` is ε after t + 1 rounds (models' observers); participation counts
  replay the sampling, so a resumed run reports the same numbers.
  """

  def __init__(self, settings: DPSettings, seed: int):
    self.settings = settings
    s = settings
    self.epsilons = _accounting().epsilons(s.noise_multiplier, s.sampling_rate, s.rounds,
                                        s.delta, s.accountant)
    self._seed = seed
    self._participation = np.zeros(s.num_clients, np.int64)
    self._rounds_counted = 0
    self._vs_servers: dict[int, float] = {0: 0.0}

  def _count_until(self, rounds: int) -> None:
    s = self.settings
    for r in range(self._rounds_counted, rounds):
      self._participation[poisson_sample(self._seed, r, s.num_clients, s.sampling_rate)] += 1
    self._rounds_counted = max(self._rounds_counted, rounds)

  def epsilon_vs_servers(self, rounds: int) -> float:
    """ε of the client that took part most often in rounds 1..``rounds``, without
    amplification by sampling."""
    self._count_until(rounds)
    most = int(self._participation.max()) if rounds else 0
    if most not in self._vs_servers:
      s = self.settings
      self._vs_servers[most] = _accounting().epsilon_without_sampling(
          s.noise_multiplier, most, s.delta, s.accountant)
    return self._vs_servers[most]

  def row(self, rounds_done: int) -> dict[str, float]:
    """metrics.jsonl fields after ``rounds_done`` rounds."""
    return {'dp/epsilon': float(self.epsilons[rounds_done - 1]),
            'dp/epsilon_vs_servers': float(self.epsilon_vs_servers(rounds_done)),
            'dp/delta': self.settings.delta}

  def summary(self, rounds_done: int) -> dict[str, Any]:
    """summary.json's ``dp`` section after ``rounds_done`` rounds."""
    return {**self.settings.summary(), **{k.split('/')[1]: v for k, v in
                                           self.row(rounds_done).items()}}
