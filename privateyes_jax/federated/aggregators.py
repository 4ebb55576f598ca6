"""One aggregation interface for plain federated averaging and every MPC mode.

An aggregator turns the clients' individual updates into the weighted mean update
that the server optimizer consumes. Plain FL (`MeanAggregator`) computes it in the
clear; PrivatEyes (`privateyes_jax.mpc.aggregator`) secret-shares the updates over a
server axis and opens only the sum. A run switches between them with one config
field (`config.aggregator.name`), in the spirit of fedjax's aggregators and
jax_privacy's noise addition.

Contract (all implementations):

* ``init(key) -> state``: any pytree (e.g. a shared MAC key, the previous round's
  shares for replay adversaries). It is saved in checkpoints, so it must be a pytree
  of arrays.
* ``apply(state, updates, weights, key, round_idx) -> (state, AggregateResult)``
  with ``updates`` ``[clients, params]`` float32 (flattened individual updates) and
  ``weights`` ``[clients]`` float32 (samples used; 0 for a client that submitted
  nothing). Returns the weighted mean ``Σ w_c Δ_c / Σ w_c`` as ``[params]``.
  ``AggregateResult.ok`` False means the round must be aborted (e.g. a failed MAC
  check); the runner then raises and leaves the global model untouched.
* ``apply`` may run host-side protocol steps (commitments) but must be deterministic
  given its arguments, so a resumed run repeats it exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp


class AggregateResult(NamedTuple):
  mean_update: jax.Array  # shape=[params], dtype=float32.
  total_weight: jax.Array  # shape=(), dtype=float32; the public count Σ w_c.
  ok: bool  # False: abort the round (e.g. MAC check failed).
  failure: str  # Empty when ok; otherwise which check failed and why.
  view: Any  # What the observing party saw this round (None if not recorded).
  stats: dict[str, float]  # Costs and timings for metrics.jsonl.
  excluded: tuple[int, ...] = ()  # Clients (indices into the round's rows) that a
  # validity check excluded by name (aggregator.validity); their input is not in the sum.


class Aggregator(Protocol):
  name: str

  def init(self, key: jax.Array) -> Any:
    ...

  def apply(self, state: Any, updates: jax.Array, weights: jax.Array,
            key: jax.Array, round_idx: int, *,
            record_view: bool = True) -> tuple[Any, AggregateResult]:
    """``record_view=False``: this round's view is not wanted (None), even if the
    aggregator records views."""
    ...


@jax.jit
def weighted_mean(updates: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Σ_c w_c Δ_c / Σ_c w_c over the client axis; ``updates`` is ``[clients, params]``."""
  total = jnp.sum(weights)
  # Full float32: the default matmul precision is TF32 on GPUs, which would round
  # the model update to 10 mantissa bits.
  mean = jnp.einsum('c,cp->p', weights, updates,
                    precision=jax.lax.Precision.HIGHEST) / jnp.maximum(total, 1e-12)
  return mean, total


@jax.jit
def noisy_mean(updates: jax.Array, weights: jax.Array, key: jax.Array, std: jax.Array,
               denominator: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Central DP: (Σ_{w_c > 0} Δ_c + N(0, std²)) / denominator, and the count Σ [w_c > 0]."""
  member = (weights > 0).astype(jnp.float32)
  total = jnp.einsum('c,cp->p', member, updates, precision=jax.lax.Precision.HIGHEST)
  noise = std * jax.random.normal(key, total.shape, jnp.float32)
  return (total + noise) / denominator, jnp.sum(member)


@dataclasses.dataclass(frozen=True)
class MeanAggregator:
  """Plain FL: the server sees every individual update and averages in the clear.

  With ``record_view`` the individual updates themselves are the server's view
  (exactly what DualView attacks under plain FL). With ``dp``
  (``privacy.dp.DPSettings``) it is central DP-FedAvg, the baseline of PrivatEyes'
  noise in the MPC: the trusted server adds N(0, (z·C)²) to the sum of the clipped
  updates and divides by the public q·N (the engine clips and samples).
  """
  record_view: bool = False
  name: str = 'mean'
  dp: Any = None

  def init(self, key: jax.Array) -> Any:
    del key  # Unused.
    return ()

  def apply(self, state, updates, weights, key, round_idx, *, record_view=True):
    del round_idx  # Unused.
    if self.dp is not None:
      mean, total = noisy_mean(updates, weights, key, jnp.float32(self.dp.noise_std),
                               jnp.float32(self.dp.expected_clients))
    else:
      mean, total = weighted_mean(updates, weights)
    view = None
    if self.record_view and record_view:
      view = {'individual_updates': updates}
      if self.dp is not None:
        # DP pads the Poisson sample with unsampled clients (weight 0): the server
        # receives nothing from them, so their rows are zero and the view says who
        # submitted (as the MPC's view does).
        submitted = weights > 0
        view = {'individual_updates': jnp.where(submitted[:, None], updates, 0.0),
                'submitted': submitted}
    return state, AggregateResult(mean, total, True, '', view, {})


AggregatorFactory = Callable[..., Aggregator]
