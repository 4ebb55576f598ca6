"""Malicious clients and the plain-FL norm bound (issue #15's poisoning experiment).

A malicious client may send any update. The two crafted updates here are the classic
untargeted ones: **boost** (its own update times a factor, as a model-replacement
attacker scales its update by about the number of clients, Bagdasaryan et al.,
AISTATS 2020) and **sign_flip** (times minus the factor). Under PrivatEyes the MAC
check is blind to both: it authenticates what a client input, not whether the input
is a plausible update.

The defence measured against them is a **norm bound**: the server excludes, by name,
every client whose update has L2 norm above ``aggregator.norm_bound``. Plain FL's
server sees the updates and checks them in the clear. PrivatEyes' servers must check
without seeing the update, inside the MPC: docs/VALIDITY_DESIGN.md designs that check
and it is not built yet, so the engine refuses ``norm_bound`` with ``privateyes``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ('none', 'boost', 'sign_flip')


@dataclasses.dataclass(frozen=True)
class MaliciousClients:
  """Which clients cheat and how (federation indices, public only to the experiment)."""
  kind: str
  clients: tuple[int, ...]
  factor: float

  @classmethod
  def from_config(cls, cfg: Any, num_clients: int) -> 'MaliciousClients | None':
    """``config.fl.malicious`` → the attackers, or None when nobody cheats.

    Raises:
      ValueError: one line naming the bad field.
    """
    if cfg is None or cfg.get('kind', 'none') == 'none':
      return None
    kind = cfg.kind
    if kind not in KINDS:
      raise ValueError(f'fl.malicious.kind={kind!r} is not one of {KINDS}.')
    clients = tuple(int(c) for c in cfg.get('clients', ()))
    if not clients:
      raise ValueError(f'fl.malicious.kind={kind!r} needs fl.malicious.clients (indices).')
    bad = [c for c in clients if not 0 <= c < num_clients]
    if bad or len(set(clients)) != len(clients):
      raise ValueError(f'fl.malicious.clients={clients} must be distinct indices in '
                       f'[0, {num_clients}).')
    factor = float(cfg.get('factor', 10.0))
    if not (math.isfinite(factor) and factor > 0):
      raise ValueError(f'fl.malicious.factor={factor} must be a finite number > 0.')
    return cls(kind=kind, clients=clients, factor=factor)

  @property
  def label(self) -> str:
    return f'{self.kind}x{self.factor:g}({len(self.clients)})'

  def apply(self, updates: jax.Array, client_ids: np.ndarray) -> jax.Array:
    """The round's updates with the sampled attackers' rows replaced by crafted ones."""
    rows = np.isin(np.asarray(client_ids), self.clients)
    if not rows.any():
      return updates
    scale = self.factor if self.kind == 'boost' else -self.factor
    return _scale_rows(updates, jnp.asarray(np.where(rows, scale, 1.0), jnp.float32))


@jax.jit
def _scale_rows(updates, scale):
  return updates * scale[:, None]


@jax.jit
def update_norms(updates: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.sum(jnp.square(updates), axis=1))


def exclude_above(norms: np.ndarray, weights: jax.Array, bound: float
                  ) -> tuple[jax.Array, np.ndarray]:
  """Plain FL's norm bound: (weights with every client whose update norm (``norms``,
  `update_norms`) is above ``bound`` set to 0, the excluded submitting rows)."""
  excluded = np.flatnonzero((norms > bound) & (np.asarray(weights) > 0))
  if excluded.size == 0:
    return weights, excluded
  return jnp.asarray(np.where(norms > bound, 0.0, np.asarray(weights)), jnp.float32), excluded
