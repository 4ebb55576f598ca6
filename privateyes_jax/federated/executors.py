"""Local training of one client, and the executors that run many clients.

`make_local_train` builds the pure function one client runs: from the global
params, ``local_steps`` optimizer steps on its own batches (gathered from the
device-resident `ClientStore`), returning its individual update
``Δ = θ_local − θ`` flattened to ``[params]``, its mean loss and the number of
samples it used.

Executors run that function for all sampled clients and return
``updates [C, params]``, ``losses [C]`` and ``weights [C]``. They give the same
results and differ only in how the client axis is mapped onto the hardware:

* ``sequential``: one jitted call per client (the reference; fastest on CPU).
* ``vmap``: all clients of a chunk in one jitted, vmapped program.
* ``sharded``: like ``vmap`` with the client axis split over a device mesh.
* ``auto``: picked per backend from measurement (docs/BENCHMARKS.md).

Chunks of ``client_chunk`` clients bound the memory; the last chunk is padded
with masked-out clients so every chunk reuses one compiled program.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from privateyes_jax import training
from privateyes_jax.federated import client_data

EXECUTORS = ('auto', 'sequential', 'vmap', 'sharded')


class LocalResults(NamedTuple):
  updates: jax.Array  # shape=[clients, params], dtype=float32: individual updates Δ_c.
  losses: jax.Array  # shape=[clients], dtype=float32: mean local training loss.
  weights: jax.Array  # shape=[clients], dtype=float32: samples used (0 = no input).


def make_local_train(apply_fn: Callable, client_optimizer: optax.GradientTransformation,
                     unroll: int | bool = True):
  """``local_train(params, arrays, client_id, indices [T,B], mask [T,B]) -> (Δ [P], loss, n)``.

  ``unroll=True`` unrolls the local steps: XLA:CPU runs convolutions inside a
  while loop ~10x slower than unrolled (DESIGN.md §7).
  """
  update = training.make_update_fn(apply_fn, client_optimizer)

  def local_train(params, arrays, client_id, indices, mask):
    def body(carry, step_inputs):
      p, s = carry
      idx, m = step_inputs
      batch = client_data.gather_batches(arrays, client_id, idx, m)
      p, s, loss = update(p, s, batch)
      return (p, s), loss

    carry = (params, client_optimizer.init(params))
    (local_params, _), losses = jax.lax.scan(body, carry, (indices, mask), unroll=unroll)
    delta = jax.tree.map(jnp.subtract, local_params, params)
    steps_with_data = (mask.sum(-1) > 0).astype(jnp.float32)
    mean_loss = jnp.sum(losses * steps_with_data) / jnp.maximum(steps_with_data.sum(), 1.0)
    return ravel_pytree(delta)[0], mean_loss, mask.sum()

  return local_train


def default_executor(backend: str | None = None) -> str:
  """The measured fastest executor per backend (see docs/BENCHMARKS.md)."""
  backend = backend or jax.default_backend()
  return 'sequential' if backend == 'cpu' else 'vmap'


@dataclasses.dataclass
class Executor:
  """Runs ``local_train`` for the sampled clients; see the module docstring."""
  local_train: Callable
  kind: str = 'auto'
  client_chunk: int = 0  # 0: all sampled clients in one chunk.

  def __post_init__(self):
    if self.kind not in EXECUTORS:
      raise ValueError(f'Unknown executor {self.kind!r}; available: {", ".join(EXECUTORS)}.')
    if self.client_chunk < 0:
      raise ValueError(f'client_chunk must be >= 0, got {self.client_chunk}.')
    self.resolved = default_executor() if self.kind == 'auto' else self.kind
    self._compiled: dict[Any, Callable] = {}

  # ------------------------------------------------------------------ helpers
  def _vmapped(self, per_client_params: bool, mesh: Mesh | None):
    key = (per_client_params, mesh is not None)
    if key not in self._compiled:
      fn = jax.vmap(self.local_train, in_axes=(0 if per_client_params else None, None, 0, 0, 0))
      if mesh is None:
        self._compiled[key] = jax.jit(fn)
      else:
        shard = NamedSharding(mesh, PartitionSpec('clients'))
        repl = NamedSharding(mesh, PartitionSpec())
        self._compiled[key] = jax.jit(
            fn, in_shardings=(shard if per_client_params else repl, repl, shard, shard, shard),
            out_shardings=(shard, shard, shard))
    return self._compiled[key]

  def _single(self):
    if 'single' not in self._compiled:
      self._compiled['single'] = jax.jit(self.local_train)
    return self._compiled['single']

  # ------------------------------------------------------------------ running
  def run(self, params, store: client_data.ClientStore, client_ids: np.ndarray,
          indices: np.ndarray, mask: np.ndarray, per_client_params: bool = False) -> LocalResults:
    """Trains the clients ``client_ids`` from ``params`` (or their own stacked params).

    Args:
      params: the global params pytree, or with ``per_client_params`` a pytree whose
        leaves have a leading ``[len(client_ids)]`` axis (local-only training).
      store: the clients' device-resident data.
      client_ids: ``[C]`` indices into ``store``.
      indices, mask: ``[C, steps, B]`` from `client_data.round_indices`.
    """
    arrays = store.arrays()
    c = len(client_ids)
    if self.resolved == 'sequential':
      fn = self._single()
      outs = []
      for i in range(c):
        p = jax.tree.map(lambda x: x[i], params) if per_client_params else params
        outs.append(fn(p, arrays, np.int32(client_ids[i]), indices[i], mask[i]))
      return LocalResults(*(jnp.stack(x) for x in zip(*outs)))

    mesh = None
    multiple = 1
    if self.resolved == 'sharded':
      mesh = Mesh(np.array(jax.devices()), ('clients',))
      multiple = mesh.size
    chunk = self.client_chunk or c
    chunk = -(-chunk // multiple) * multiple  # Round up to a multiple of the mesh size.
    fn = self._vmapped(per_client_params, mesh)
    outs = []
    for start in range(0, c, chunk):
      stop = min(start + chunk, c)
      pad = lambda x: client_data.pad_to(np.asarray(x)[start:stop], chunk)
      p = params
      if per_client_params:
        p = jax.tree.map(lambda x: jnp.asarray(client_data.pad_to(np.asarray(x)[start:stop],
                                                                   chunk)), params)
      out = fn(p, arrays, pad(client_ids).astype(np.int32), pad(indices), pad(mask))
      outs.append(jax.tree.map(lambda x: x[:stop - start], out))
    if len(outs) == 1:
      return LocalResults(*outs[0])
    return LocalResults(*(jnp.concatenate(x) for x in zip(*outs)))


def describe(executor: Executor) -> str:
  return executor.resolved if executor.kind != 'auto' else f'auto->{executor.resolved}'

