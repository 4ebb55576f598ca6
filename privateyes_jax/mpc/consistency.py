"""Consistent models: every client checks that all servers sent it the same global model.

Secure aggregation hides individual updates only if every client trains from the
same model. A malicious server that sends a crafted model to some clients can make
their updates vanish (e.g. a model whose ReLUs are all dead on their data), so
that the opened aggregate is one target's update alone: Pasquini, Francati,
Ateniese, *Eluding Secure Aggregation via Model Inconsistency*, CCS 2022. Their
countermeasure, simulated here: with S servers, each client receives the model
(or its SHA-256 digest) from every server and refuses the round on any mismatch.

Detection holds whenever at least one server is honest: the honest server sends
the true model, so any client that gets a crafted one sees two digests. If every
server is malicious and sends the same crafted model, nothing is detected (and
secure aggregation promises nothing without an honest server anyway).
"""

from __future__ import annotations

import hashlib
from typing import Callable, NamedTuple, Sequence

import numpy as np


def model_digest(model: np.ndarray) -> bytes:
  """SHA-256 of a flat float32 model (little-endian bytes)."""
  return hashlib.sha256(np.ascontiguousarray(model, '<f4').tobytes()).digest()


def perturb(model: np.ndarray) -> np.ndarray:
  """A default crafted model: the global model with its first parameter moved."""
  crafted = np.array(model, np.float32, copy=True)
  crafted.reshape(-1)[0] += 1.0
  return crafted


class Distribution(NamedTuple):
  """What the clients received and what their check says."""
  models: list[np.ndarray]  # [C] the model each client would train from (server 0's).
  digests: list[list[bytes]]  # [C][S] digest of what server i sent client c.
  refusing: list[int]  # Clients that saw two different digests.
  ok: bool
  failure: str


def distribute(global_model: np.ndarray, num_clients: int, num_servers: int, *,
               malicious: Sequence[int] = (), target: int = 0,
               craft: Callable[[np.ndarray], np.ndarray] = perturb,
               check: bool = True) -> Distribution:
  """Every server sends the model to every client; malicious servers send ``craft``.

  Args:
    global_model: flat float32 ``[P]``, the model honest servers send.
    num_clients: C.
    num_servers: S.
    malicious: servers that deviate; each sends ``craft(global_model)`` to every
      client except ``target`` (whose update the aggregate then isolates).
    target: the client to isolate.
    craft: the crafted model (computed once; honest digests once).
    check: False shows what happens without the clients' comparison.

  Returns:
    ``Distribution``; ``ok`` is False when some client refused.
  """
  honest_digest = model_digest(global_model)
  crafted = craft(global_model) if malicious else None
  crafted_digest = model_digest(crafted) if malicious else None
  models, digests, refusing = [], [], []
  for c in range(num_clients):
    fooled = [i in malicious and c != target for i in range(num_servers)]
    digests.append([crafted_digest if f else honest_digest for f in fooled])
    models.append(crafted if fooled[0] else global_model)
    if check and len(set(digests[-1])) > 1:
      refusing.append(c)
  failure = ''
  if refusing:
    failure = (f'model inconsistency: client(s) {refusing} received different global '
               'models from different servers and refused the round; round aborted.')
  return Distribution(models, digests, refusing, not refusing, failure)
