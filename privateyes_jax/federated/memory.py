"""The device-memory plan of one federated round, and the client chunk that fits a budget.

A round holds, on the busiest device (device 0; see DESIGN.md §3)::

  common    global params (+ server optimizer state), the client store (one
            replica per device for the sharded executor; for the streamed store the
            round's batches and one prefetched round), the round's individual
            updates ``[C, P]`` float32 (twice while the chunks are concatenated)
  training  per chunk: the executor's compiled program, ``fixed + per_client ×
            clients of the chunk on this device`` (activations, per-client params,
            gradients and optimizer state of every client in flight)
  MPC       per chunk: the aggregator's ``memory_plan`` (privateyes only): chunk
            working set, accumulators, per-round seeds

Training and aggregation run one after the other, so the peak is
``common + max(training, MPC)``. The training terms come from XLA's own memory
analysis of the executor's program compiled at two chunk sizes (linear in the
chunk: ``fixed`` and ``per_client``), not from a guess; `plan_round` then picks
the largest chunks (training and MPC) whose peak fits ``budget_bytes``.

The common terms do not shrink with the chunk: with many clients and a large
model the ``[C, P]`` updates dominate (10,000 clients of the 3.4M-parameter
GazeNet would be 136 GB), and the plan says so instead of picking a chunk.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from privateyes_jax.federated import client_data
from privateyes_jax.federated import executors as executors_lib

MIB = 1 << 20


class MemoryPlanError(ValueError):
  """No chunk fits the budget; the message names the term that does not fit."""


@dataclasses.dataclass(frozen=True)
class TrainingCost:
  """Bytes of the executor's chunk program on one device: ``fixed + per_client × n``.

  ``n`` is the number of the chunk's clients on that device (chunk / devices for
  the sharded executor). ``source`` says where the numbers come from:
  ``'xla'`` (compiled memory analysis) or ``'estimate'`` (no analysis available).
  """
  fixed_bytes: int
  per_client_bytes: int
  source: str

  def bytes_for(self, clients_on_device: int) -> int:
    return self.fixed_bytes + self.per_client_bytes * clients_on_device


@dataclasses.dataclass(frozen=True)
class RoundMemoryPlan:
  """Bytes of one round on the busiest device; see the module docstring."""
  executor: str
  num_clients: int
  num_params: int
  num_devices: int  # Devices sharing the client axis (1 unless sharded).
  client_chunk: int  # Training chunk (a multiple of num_devices).
  num_chunks: int
  params_bytes: int
  server_state_bytes: int
  store_bytes: int  # The client store on this device.
  updates_bytes: int  # The round's [C, P] float32 updates (2x with several chunks).
  training: TrainingCost
  training_chunk_bytes: int
  mpc: dict[str, int]  # SecureAggregator.memory_plan; {} for the plain mean.
  mpc_bytes: int
  budget_bytes: int | None

  @property
  def common_bytes(self) -> int:
    return self.params_bytes + self.server_state_bytes + self.store_bytes + self.updates_bytes

  @property
  def peak_bytes(self) -> int:
    return self.common_bytes + max(self.training_chunk_bytes, self.mpc_bytes)

  @property
  def peak_bytes_per_client(self) -> float:
    return self.peak_bytes / max(self.num_clients, 1)

  def as_dict(self) -> dict[str, Any]:
    out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ('training', 'mpc')}
    out.update({'training_fixed_bytes': self.training.fixed_bytes,
                'training_bytes_per_client': self.training.per_client_bytes,
                'training_source': self.training.source,
                'common_bytes': self.common_bytes, 'peak_bytes': self.peak_bytes,
                'peak_bytes_per_client': self.peak_bytes_per_client})
    out.update({f'mpc/{k}': v for k, v in self.mpc.items()})
    return out

  def describe(self) -> str:
    """A few human-readable lines (MiB) for logs and benchmarks."""
    mib = lambda b: f'{b / MIB:,.1f} MiB'
    lines = [
        f'memory plan ({self.executor}, {self.num_clients} clients x {self.num_params:,} '
        f'params, {self.num_devices} device(s); busiest device):',
        f'  params {mib(self.params_bytes)} + server state {mib(self.server_state_bytes)}'
        f' + client store {mib(self.store_bytes)} + round updates {mib(self.updates_bytes)}'
        f' = {mib(self.common_bytes)}',
        f'  training chunk {self.client_chunk} ({self.num_chunks} chunks): '
        f'{mib(self.training.fixed_bytes)} + {self.training.per_client_bytes:,} B/client '
        f'[{self.training.source}] = {mib(self.training_chunk_bytes)}',
    ]
    if self.mpc:
      lines.append(f'  MPC chunk {self.mpc["client_chunk"]} ({self.mpc["num_chunks"]} chunks): '
                   f'{mib(self.mpc_bytes)}')
    budget = f' (budget {mib(self.budget_bytes)})' if self.budget_bytes else ''
    lines.append(f'  peak {mib(self.peak_bytes)}{budget} = '
                 f'{self.peak_bytes_per_client:,.0f} B per client')
    return '\n'.join(lines)


def tree_bytes(tree: Any) -> int:
  """Bytes of every array leaf of ``tree``."""
  return int(sum(np.dtype(x.dtype).itemsize * int(np.prod(np.shape(x)))
                 for x in jax.tree.leaves(tree)))


def store_bytes(store, num_clients: int = 0, local_steps: int = 0,
                batch_size: int = 0) -> int:
  """Device bytes of the store in a round of ``num_clients`` (padded: all of it)."""
  return store.device_bytes(num_clients, local_steps, batch_size)


def _abstract(tree: Any) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def _mesh_size(executor: executors_lib.Executor) -> int:
  return executor.mesh().size if executor.resolved == 'sharded' else 1


def compiled_chunk_bytes(executor: executors_lib.Executor, params: Any,
                         store: client_data.ClientStore, chunk: int, local_steps: int,
                         batch_size: int) -> int | None:
  """Temporary + output bytes per device of the executor's program for ``chunk`` clients.

  Compiles (does not run) the program ``executor`` runs per chunk, with abstract
  inputs, and reads XLA's memory analysis; None when the backend gives none.
  Arguments (params, store, indices) are not included: the plan counts them.
  """
  t, b = local_steps, batch_size
  args_tail = (jax.ShapeDtypeStruct((chunk,), jnp.int32),
               jax.ShapeDtypeStruct((chunk, t, b), jnp.int32),
               jax.ShapeDtypeStruct((chunk, t, b), jnp.float32))
  if executor.resolved == 'sequential':
    fn = executor._single()  # pylint: disable=protected-access
    args_tail = tuple(jax.ShapeDtypeStruct(a.shape[1:], a.dtype) for a in args_tail)
  else:
    mesh = executor.mesh() if executor.resolved == 'sharded' else None
    fn = executor._vmapped(False, mesh)  # pylint: disable=protected-access
  arrays = store.abstract_arrays(chunk, local_steps, batch_size)
  compiled = fn.lower(_abstract(params), arrays, *args_tail).compile()
  try:
    stats = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError):
    stats = None
  if stats is None:
    return None
  return int(stats.temp_size_in_bytes + stats.output_size_in_bytes)


def training_cost(executor: executors_lib.Executor, params: Any,
                  store: client_data.ClientStore, local_steps: int, batch_size: int,
                  probe_clients: tuple[int, int] = (8, 16)) -> TrainingCost:
  """``fixed + per_client × n`` bytes per device of the executor's chunk program.

  Fitted from `compiled_chunk_bytes` at ``probe_clients`` clients per device (two
  compilations of the chunk program). The sequential executor trains one client
  at a time: its cost is one client's program, whatever the chunk. Without a
  memory analysis, an estimate: per client the params, the update, the gradient
  and two optimizer slots (5 P float32), and the gathered batches.
  """
  n_dev = _mesh_size(executor)
  if executor.resolved == 'sequential':
    single = compiled_chunk_bytes(executor, params, store, 1, local_steps, batch_size)
    if single is not None:
      return TrainingCost(single, 0, 'xla')
  else:
    lo, hi = probe_clients
    b_lo = compiled_chunk_bytes(executor, params, store, lo * n_dev, local_steps, batch_size)
    b_hi = compiled_chunk_bytes(executor, params, store, hi * n_dev, local_steps, batch_size)
    if b_lo is not None and b_hi is not None:
      per_client = max(0, -(-(b_hi - b_lo) // (hi - lo)))
      return TrainingCost(max(0, b_lo - per_client * lo), per_client, 'xla')
  sample_bytes = tree_bytes(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[2:], x.dtype),
                                         store.abstract_arrays(1, 1, 1)))
  per_client = 5 * tree_bytes(params) + local_steps * batch_size * sample_bytes
  if executor.resolved == 'sequential':
    return TrainingCost(per_client, 0, 'estimate')
  return TrainingCost(0, per_client, 'estimate')


def _balanced(num_clients: int, cap: int, multiple: int) -> int:
  """The chunk ≤ ``cap`` (a multiple of ``multiple``) that splits the clients most evenly."""
  cap = max(multiple, cap // multiple * multiple)
  num_chunks = -(-num_clients // cap)
  per_chunk = -(-num_clients // num_chunks)
  return -(-per_chunk // multiple) * multiple


def _updates_bytes(num_clients: int, num_params: int, num_chunks: int) -> int:
  one = 4 * num_clients * num_params
  return 2 * one if num_chunks > 1 else one  # Chunk outputs + their concatenation.


def plan_round(executor: executors_lib.Executor, params: Any,
               store: client_data.ClientStore, num_clients: int, local_steps: int,
               batch_size: int, aggregator: Any = None, budget_bytes: int | None = None,
               server_state_bytes: int = 0, client_chunk: int | None = None,
               training: TrainingCost | None = None) -> tuple[RoundMemoryPlan, Any]:
  """The memory plan of one round, with chunks picked to fit ``budget_bytes``.

  Args:
    executor: the round's executor (its ``client_chunk`` is ignored: the plan picks).
    params: the global params pytree (arrays or ShapeDtypeStructs).
    store: the client store.
    num_clients: clients trained this round.
    local_steps, batch_size: the local training of a client.
    aggregator: a ``SecureAggregator`` (its MPC chunk is planned too), or None /
      the plain mean.
    budget_bytes: device memory the round may use; None: no limit (one chunk).
    server_state_bytes: the server optimizer state (e.g. 2 P float32 for FedAdam).
    client_chunk: a training chunk to plan for instead of picking one.
    training: a precomputed `training_cost` (it costs two compilations).

  Returns:
    ``(plan, aggregator)``: the aggregator with the planned ``client_chunk`` (the
    input unchanged for the plain mean).

  Raises:
    MemoryPlanError: the common terms, or a single chunk of the smallest size,
      exceed the budget.
  """
  num_params = int(sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(params)))
  n_dev = _mesh_size(executor)
  training = training or training_cost(executor, params, store, local_steps, batch_size)
  p_bytes = tree_bytes(params)
  # Sharded: every device holds a replica; device 0 also keeps the original store.
  s_bytes = (store_bytes(store, num_clients, local_steps, batch_size)
             * (2 if executor.resolved == 'sharded' else 1))
  full = -(-num_clients // n_dev) * n_dev

  def common(num_chunks: int) -> int:
    return (p_bytes + server_state_bytes + s_bytes
            + _updates_bytes(num_clients, num_params, num_chunks))

  if client_chunk:
    chunk = min(-(-client_chunk // n_dev) * n_dev, full)
  elif budget_bytes is None:
    chunk = full
  else:
    room = budget_bytes - common(2) - training.fixed_bytes
    if budget_bytes - common(1) - training.bytes_for(full // n_dev) >= 0:
      chunk = full  # Everything in one chunk fits (and needs no concatenation).
    elif room < training.per_client_bytes:
      raise MemoryPlanError(
          f'No client chunk fits {budget_bytes / MIB:,.0f} MiB: params, client store and '
          f'the round\'s updates [{num_clients}, {num_params}] need '
          f'{common(2) / MIB:,.0f} MiB and the training program '
          f'{training.fixed_bytes / MIB:,.0f} MiB + '
          f'{training.per_client_bytes / MIB:,.2f} MiB per client. Fewer clients per '
          'round, a smaller model or more devices (executor=sharded) are needed.')
    elif training.per_client_bytes == 0:
      chunk = full
    else:
      per_device = room // training.per_client_bytes
      chunk = _balanced(num_clients, per_device * n_dev, n_dev)
  num_chunks = -(-num_clients // chunk)
  train_bytes = training.bytes_for(chunk // n_dev)

  mpc, mpc_bytes = {}, 0
  if aggregator is not None and hasattr(aggregator, 'memory_plan'):
    if budget_bytes is not None and not aggregator.client_chunk:
      per_mpc_client = aggregator.bytes_per_client(num_params)
      probe = aggregator.memory_plan(num_clients, num_params)
      fixed = probe['accumulator_bytes'] + probe['per_round_fixed_bytes']
      cap = (budget_bytes - common(num_chunks) - fixed) // per_mpc_client
      if cap < 1:
        raise MemoryPlanError(
            f'The MPC aggregation does not fit {budget_bytes / MIB:,.0f} MiB: the round '
            f'needs {(common(num_chunks) + fixed) / MIB:,.0f} MiB before its first chunk.')
      aggregator = dataclasses.replace(aggregator, client_chunk=_balanced(
          num_clients, min(cap, num_clients), 1))
    mpc = aggregator.memory_plan(num_clients, num_params)
    mpc_bytes = (mpc['chunk_working_set_bytes'] + mpc['accumulator_bytes']
                 + mpc['per_round_fixed_bytes'])
  plan = RoundMemoryPlan(
      executor=executor.resolved, num_clients=num_clients, num_params=num_params,
      num_devices=n_dev, client_chunk=chunk, num_chunks=num_chunks, params_bytes=p_bytes,
      server_state_bytes=server_state_bytes, store_bytes=s_bytes,
      updates_bytes=_updates_bytes(num_clients, num_params, num_chunks), training=training,
      training_chunk_bytes=train_bytes, mpc=mpc, mpc_bytes=mpc_bytes,
      budget_bytes=budget_bytes)
  return plan, aggregator


def peak_device_bytes(device: jax.Device | None = None) -> int | None:
  """``peak_bytes_in_use`` of ``device`` (GPU/TPU); None where the backend has no stats (CPU)."""
  device = device or jax.local_devices()[0]
  try:
    stats = device.memory_stats()
  except (NotImplementedError, RuntimeError):
    return None
  if not stats:
    return None
  return stats.get('peak_bytes_in_use')


def peak_rss_bytes() -> int:
  """This process's peak resident set size (bytes): the CPU backend's "device memory"."""
  import resource  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(peak if sys.platform == 'darwin' else peak * 1024)
