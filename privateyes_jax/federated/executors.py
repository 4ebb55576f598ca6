"""Local training of one client, and the executors that run many clients.

`make_local_train` builds the pure function one client runs: from the global
params, ``local_steps`` optimizer steps on its own batches (gathered on the device
from the arrays the store gives for the round, `ClientStore.round_inputs`: the whole
padded store, or the streamed store's round batches), returning its individual
update ``Δ = θ_local − θ`` flattened to ``[params]``, its mean loss and the number of
samples it used.

Executors run that function for all sampled clients and return
``updates [C, params]``, ``losses [C]`` and ``weights [C]``. They give the same
results and differ only in how the client axis is mapped onto the hardware:

* ``sequential``: one jitted call per client (the reference; fastest on CPU).
* ``vmap``: all clients of a chunk in one jitted, vmapped program.
* ``sharded``: like ``vmap`` with the client axis split over a device mesh: every
  device of every process after `privateyes_jax.distributed.initialize`. The
  client store is replicated on every device; params are replicated.
* ``client_parallel``: GazeNet only; every layer of all clients of a chunk as one
  batched GEMM over the client axis (`models/client_parallel.py`), instead of the
  grouped convolutions that ``vmap`` produces.
* ``auto``: picked per backend and model from measurement (docs/BENCHMARKS.md).

Chunks of ``client_chunk`` clients bound the memory; the last chunk is padded
with masked-out clients so every chunk reuses one compiled program.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from privateyes_jax import training
from privateyes_jax.federated import client_data

EXECUTORS = ('auto', 'sequential', 'vmap', 'sharded', 'client_parallel')


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


def make_clients_train(model_config, client_optimizer: optax.GradientTransformation,
                       unroll: int | bool = True, compute_dtype=jnp.float32):
  """Local training of a chunk of clients with an explicit client axis (GazeNet only).

  ``clients_train(params, arrays, client_ids [C], indices [C,T,B], mask [C,T,B],
  per_client_params, hyperparams=None) -> (Δ [C, P], losses [C], weights [C])``,
  numerically the same as vmapping `make_local_train`, but each layer is one batched
  GEMM over clients.

  ``hyperparams`` (``{name: [C]}``, for an optimizer built with
  ``inject_hyperparams``, see `training.set_hyperparams`) gives every client its own
  learning rate, momentum, ...: how a sweep trains many runs' clients in one program.
  """
  from privateyes_jax.models import client_parallel  # pylint: disable=g-import-not-at-top
  if model_config.name != 'gazenet':
    raise ValueError(f'The client_parallel executor supports model.name="gazenet", not '
                     f'{model_config.name!r}; use fl.executor="vmap".')
  model_kwargs = dict(conv_features=tuple(model_config.conv_features),
                      padding=model_config.padding, compute_dtype=compute_dtype)

  def loss_and_grad(p, batch):
    losses, vjp = jax.vjp(lambda q: client_data_losses(q, batch), p)
    return losses, vjp(jnp.ones_like(losses))[0]

  def client_data_losses(p, batch):
    return client_parallel.client_losses(p, batch, **model_kwargs)

  gather = jax.vmap(client_data.gather_batches, in_axes=(None, 0, 0, 0))

  def clients_train(params, arrays, client_ids, indices, mask, per_client_params,
                    hyperparams=None):
    # float32 means float32: on GPUs the default matmul precision is TF32, which moved
    # client updates by ~26% (relative) from the float32 reference after 5 SGD steps
    # (docs/BENCHMARKS.md); bfloat16 is an explicit choice via compute_dtype.
    if compute_dtype == jnp.float32:
      with jax.default_matmul_precision('float32'):
        return _clients_train(params, arrays, client_ids, indices, mask, per_client_params,
                              hyperparams)
    return _clients_train(params, arrays, client_ids, indices, mask, per_client_params,
                          hyperparams)

  def _clients_train(params, arrays, client_ids, indices, mask, per_client_params,
                     hyperparams):
    c = client_ids.shape[0]
    stacked = params if per_client_params else jax.tree.map(
        lambda x: jnp.broadcast_to(x, (c,) + x.shape), params)

    def body(carry, step_inputs):
      p, s = carry
      idx, m = step_inputs  # [C, B] each.
      losses, grads = loss_and_grad(p, gather(arrays, client_ids, idx, m))
      updates, new_s = jax.vmap(client_optimizer.update)(grads, s, p)
      new_p = optax.apply_updates(p, updates)
      has_data = m.sum(-1) > 0  # A client without data this step keeps its state.
      keep = lambda new, old: jax.tree.map(
          lambda n, o: jnp.where(has_data.reshape((c,) + (1,) * (n.ndim - 1)), n, o), new, old)
      return (keep(new_p, p), keep(new_s, s)), losses

    opt_state = jax.vmap(client_optimizer.init)(stacked)
    if hyperparams is not None:
      opt_state = training.set_hyperparams(opt_state, hyperparams)
    carry = (stacked, opt_state)
    steps_first = lambda x: jnp.swapaxes(x, 0, 1)
    (local, _), losses = jax.lax.scan(body, carry, (steps_first(indices), steps_first(mask)),
                                      unroll=unroll)
    delta = jax.tree.map(jnp.subtract, local, stacked)
    updates = jax.vmap(lambda d: ravel_pytree(d)[0])(delta)
    steps_with_data = (mask.sum(-1) > 0).astype(jnp.float32)  # [C, T]
    mean_loss = (jnp.sum(losses.T * steps_with_data, axis=1)
                 / jnp.maximum(steps_with_data.sum(1), 1.0))
    return updates, mean_loss, mask.sum((1, 2))

  return clients_train


def default_executor(backend: str | None = None, model_name: str = 'gazenet') -> str:
  """The measured fastest executor per backend and model (see docs/BENCHMARKS.md).

  With several processes (privateyes_jax/distributed.py) it is ``sharded``: the
  other executors would train every client on every host.
  """
  backend = backend or jax.default_backend()
  if jax.process_count() > 1:
    return 'sharded'
  if model_name == 'gazenet':
    return 'client_parallel'
  return 'sequential' if backend == 'cpu' else 'vmap'


@dataclasses.dataclass
class Executor:
  """Runs ``local_train`` for the sampled clients; see the module docstring."""
  local_train: Callable
  kind: str = 'auto'
  client_chunk: int = 0  # 0: all sampled clients in one chunk.
  clients_train: Callable | None = None  # For 'client_parallel' (make_clients_train).
  model_name: str = 'gazenet'

  def __post_init__(self):
    if self.kind not in EXECUTORS:
      raise ValueError(f'Unknown executor {self.kind!r}; available: {", ".join(EXECUTORS)}.')
    if self.client_chunk < 0:
      raise ValueError(f'client_chunk must be >= 0, got {self.client_chunk}.')
    if self.kind == 'auto':
      self.resolved = default_executor(model_name=self.model_name)
      if self.resolved == 'client_parallel' and self.clients_train is None:
        self.resolved = default_executor(model_name='')
    else:
      self.resolved = self.kind
    if self.resolved == 'client_parallel' and self.clients_train is None:
      raise ValueError('fl.executor="client_parallel" needs a GazeNet model.')
    self._compiled: dict[Any, Callable] = {}

  # ------------------------------------------------------------------ helpers
  def _vmapped(self, per_client_params: bool, mesh: Mesh | None):
    key = (per_client_params, mesh is not None)
    if self.resolved == 'client_parallel':
      if key not in self._compiled:
        self._compiled[key] = jax.jit(functools.partial(
            self.clients_train, per_client_params=per_client_params))
      return self._compiled[key]
    if key not in self._compiled:
      fn = jax.vmap(self.local_train, in_axes=(0 if per_client_params else None, None, 0, 0, 0))
      if mesh is None:
        self._compiled[key] = jax.jit(fn)
      else:
        shard = NamedSharding(mesh, PartitionSpec('clients'))
        repl = NamedSharding(mesh, PartitionSpec())
        # Several processes: the outputs are gathered (replicated) inside the program, so
        # every process holds the round's updates for its (replicated) aggregation.
        out = repl if jax.process_count() > 1 else shard
        self._compiled[key] = jax.jit(
            fn, in_shardings=(shard if per_client_params else repl, repl, shard, shard, shard),
            out_shardings=(out, out, out))
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
      store: the clients' data (`client_data.ClientStore` or `StreamedStore`).
      client_ids: ``[C]`` indices into ``store``.
      indices, mask: ``[C, steps, B]`` from `client_data.round_indices`.
    """
    c = len(client_ids)
    # The one place the executor reads data: the padded store's whole arrays with the
    # round's ids and indices, or the streamed store's round batches with local ones.
    arrays, client_ids, indices = store.round_inputs(client_ids, indices)
    if self.resolved == 'sequential':
      fn = self._single()
      outs = []
      for i in range(c):
        p = jax.tree.map(lambda x: x[i], params) if per_client_params else params
        outs.append(fn(p, arrays, np.int32(client_ids[i]), indices[i], mask[i]))
      return LocalResults(*(jnp.stack(x) for x in zip(*outs)))

    if self.resolved == 'sharded':
      return self._run_sharded(params, arrays, client_ids, indices, mask, per_client_params)
    mesh = None
    chunk = self.client_chunk or c
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

  # ------------------------------------------------------------------ sharded
  def mesh(self) -> Mesh:
    """The 1-D ``clients`` mesh of the sharded executor: every device of every process."""
    if getattr(self, '_mesh', None) is None:
      self._mesh = Mesh(np.array(jax.devices()), ('clients',))
    return self._mesh

  def _replicated_store(self, arrays: dict[str, jax.Array], sharding: NamedSharding):
    """The store's arrays replicated on every mesh device, placed once per array.

    Every process builds the same store (the data are a pure function of the
    config), so each only places its own copy on its own devices; nothing crosses
    hosts. Kept for later rounds: the jit would otherwise copy the padded store to
    every device in every call (a streamed store's round batches are new each round).
    """
    cached = getattr(self, '_placed_store', None)
    if cached is None or cached[0] is not arrays['images']:
      self._placed_store = None  # Free the previous store's replicas first.
      placed = {k: global_array(v, sharding) for k, v in arrays.items()}
      cached = self._placed_store = (arrays['images'], placed)
    return cached[1]

  def _run_sharded(self, params, arrays, client_ids, indices, mask, per_client_params):
    """``run`` with the client axis split over `mesh` (one or several processes).

    Chunks are padded to a multiple of the mesh size. The global params are
    replicated; the round's index arrays are known to every process (pure functions
    of ``(seed, round)``), so each process fills only its own devices' shards. With
    several processes the outputs come back replicated and are returned as this
    process's local copy.
    """
    mesh = self.mesh()
    shard = NamedSharding(mesh, PartitionSpec('clients'))
    repl = NamedSharding(mesh, PartitionSpec())
    arrays = self._replicated_store(arrays, repl)
    c = len(client_ids)
    chunk = self.client_chunk or c
    chunk = -(-chunk // mesh.size) * mesh.size  # Round up to a multiple of the mesh size.
    fn = self._vmapped(per_client_params, mesh)
    host = lambda x: np.asarray(jax.device_get(x))
    p = None if per_client_params else jax.tree.map(lambda x: global_array(x, repl), params)
    stacked = jax.tree.map(host, params) if per_client_params else None
    outs = []
    for start in range(0, c, chunk):
      stop = min(start + chunk, c)
      pad = lambda x: global_array(client_data.pad_to(np.asarray(x)[start:stop], chunk), shard)
      if per_client_params:
        p = jax.tree.map(pad, stacked)
      out = fn(p, arrays, pad(np.asarray(client_ids, np.int32)), pad(indices), pad(mask))
      outs.append(jax.tree.map(lambda x: local_copy(x)[:stop - start], out))
    if len(outs) == 1:
      return LocalResults(*outs[0])
    return LocalResults(*(jnp.concatenate(x) for x in zip(*outs)))


def global_array(x, sharding: NamedSharding) -> jax.Array:
  """``x`` (the same value in every process) as a global array with ``sharding``.

  One process: a ``device_put``. Several: each process builds only the shards of
  its own devices from its host copy (``jax.make_array_from_callback``), without
  the cross-process equality check that ``device_put`` of a host value runs.
  """
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  value = np.asarray(jax.device_get(x))
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def local_copy(x: jax.Array) -> jax.Array:
  """A fully replicated global array as this process's ordinary single-device array."""
  if x.is_fully_addressable:
    return x
  return x.addressable_data(0)


def describe(executor: Executor) -> str:
  return executor.resolved if executor.kind != 'auto' else f'auto->{executor.resolved}'

