"""Server side of federated learning: client sampling and server optimizers.

Adaptive federated optimization (Reddi et al., "Adaptive Federated Optimization",
ICLR 2021): the server treats the negated weighted-mean individual update
``-Δ̄`` as a pseudo-gradient and applies an optax optimizer to it:

* ``fedavg``:  SGD with server learning rate η_s (η_s = 1 recovers McMahan et al.'s FedAvg);
* ``fedavgm``: SGD with momentum β (Hsu et al., 2019);
* ``fedadam``: Adam with adaptivity τ as its ε;
* ``fedyogi``: Yogi with adaptivity τ as its ε.
"""

from __future__ import annotations

import numpy as np
import optax

SERVER_OPTIMIZERS = ('fedavg', 'fedavgm', 'fedadam', 'fedyogi')
# The numeric fields of ``config.fl`` that parameterise the server optimizers.
SERVER_HYPERPARAMS = ('server_lr', 'server_momentum', 'server_b1', 'server_b2', 'server_tau')


def make_server_optimizer(cfg, inject_hyperparams: bool = False) -> optax.GradientTransformation:
  """The optax server optimizer of ``config.fl`` (``server_optimizer``, ``server_lr``, ...).

  ``fl.server_schedule='cosine'`` decays the server learning rate to 10% over
  ``fl.rounds`` (the optimizer's step count is the round, restored on resume).

  With ``inject_hyperparams`` the optimizer is wrapped in ``optax.inject_hyperparams``
  so that ``server_lr``, ``server_momentum`` and ``server_tau`` are array leaves of its
  state (`training.set_hyperparams`): sweeps vmap one server step over runs with
  different values. Its ``inner_state`` has the structure of the plain optimizer's
  state, and its updates are bit-identical. ``server_b1``/``server_b2`` stay static:
  Adam and Yogi compute ``1 - b`` in float64 from a Python float but in float32 from
  an array, which moves updates by an ulp.
  """
  name, lr = cfg.server_optimizer, cfg.server_lr
  if not lr > 0:
    raise ValueError(f'fl.server_lr must be > 0, got {lr}.')
  if name not in SERVER_OPTIMIZERS:
    raise ValueError(f'Unknown fl.server_optimizer {name!r}; available: '
                     f'{", ".join(SERVER_OPTIMIZERS)}.')
  from privateyes_jax import training  # pylint: disable=g-import-not-at-top
  schedule, rounds = cfg.get('server_schedule', 'constant'), cfg.rounds
  training.learning_rate(lr, schedule, rounds)  # Validates the schedule's name.

  def factory(server_lr, server_momentum, server_b1, server_b2, server_tau):
    lr = training.learning_rate(server_lr, schedule, rounds)  # Its count is the round.
    if name == 'fedavg':
      return optax.sgd(lr)
    if name == 'fedavgm':
      return optax.sgd(lr, momentum=server_momentum)
    if name == 'fedadam':
      return optax.adam(lr, b1=server_b1, b2=server_b2, eps=server_tau)
    return optax.yogi(lr, b1=server_b1, b2=server_b2, eps=server_tau)

  hyperparams = {key: float(cfg[key]) for key in SERVER_HYPERPARAMS}
  if inject_hyperparams:
    return optax.inject_hyperparams(factory, static_args=('server_b1', 'server_b2'))(
        **hyperparams)
  return factory(**hyperparams)


def clients_per_round(cfg, num_clients: int) -> int:
  """How many clients a round samples, from ``fl.clients_per_round`` or ``fl.client_fraction``.

  ``clients_per_round > 0`` is a count; otherwise ``client_fraction`` in (0, 1] of the
  federation (rounded, at least one client must result).
  """
  count, fraction = cfg.clients_per_round, cfg.client_fraction
  if count > 0:
    if count > num_clients:
      raise ValueError(f'fl.clients_per_round={count} exceeds the {num_clients} clients.')
    return count
  if count < 0:
    raise ValueError(f'fl.clients_per_round must be >= 0 (0: use client_fraction), got {count}.')
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f'fl.client_fraction must be in (0, 1], got {fraction}.')
  k = int(round(fraction * num_clients))
  if k < 1:
    raise ValueError(f'fl.client_fraction={fraction} of {num_clients} clients samples zero '
                     'clients per round; raise it or set fl.clients_per_round.')
  return k


def sample_clients(seed: int, round_idx: int, num_clients: int, k: int) -> np.ndarray:
  """The sorted client indices of round ``round_idx``: a pure function of (seed, round)."""
  if k == num_clients:
    return np.arange(num_clients)
  rng = np.random.default_rng([seed, 3, round_idx])
  return np.sort(rng.choice(num_clients, size=k, replace=False))
