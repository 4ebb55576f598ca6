r"""One FedAvg round and one PrivatEyes round with many clients (default 10,000), chunked.

  python -m experiments.bench.scale --num_clients=10000 --executor=client_parallel \
      --aggregator=mean,privateyes --memory_budget_mb=4096

Every client holds tiny data (``--samples_per_client`` eye patches; the patches of
``--distinct_people`` rendered synthetic people are dealt round-robin, so rendering
stays cheap) in the device-resident client store, and trains a small GazeNet
(``--conv_features``, ``--hidden``) for ``--local_steps`` SGD steps of ``--batch``.
The round's memory plan (privateyes_jax/federated/memory.py) picks the training and
MPC chunks that fit ``--memory_budget_mb`` unless ``--client_chunk`` is given; the
bench prints the plan, each round's time (training, aggregation), the measured peak
memory per client (GPU: ``peak_bytes_in_use``; CPU: the process's peak RSS) and the
machine. The chunk program is compiled on one chunk before the rounds; the MPC
programs compile inside the first PrivatEyes round (reported separately when
``--repeats`` > 1).
"""

from __future__ import annotations

import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app
from absl import flags
from jax.flatten_util import ravel_pytree

from privateyes_jax.data import base
from privateyes_jax.data import synthetic
from privateyes_jax.federated import aggregators
from privateyes_jax.federated import client_data
from privateyes_jax.federated import executors
from privateyes_jax.federated import memory
from privateyes_jax.models import gaze
from privateyes_jax.mpc import aggregator as mpc_aggregator

_NUM_CLIENTS = flags.DEFINE_integer('num_clients', 10_000, 'Clients trained in the round.')
_EXECUTOR = flags.DEFINE_enum('executor', 'auto', list(executors.EXECUTORS), 'fl.executor.')
_AGGREGATOR = flags.DEFINE_list('aggregator', ['mean', 'privateyes'],
                                'Rounds to run: mean (FedAvg) and/or privateyes.')
_CLIENT_CHUNK = flags.DEFINE_integer(
    'client_chunk', 0, 'Training clients per chunk; 0: the memory plan picks.')
_MPC_CHUNK = flags.DEFINE_integer('mpc_client_chunk', 0,
                                  'MPC clients per chunk; 0: the memory plan picks.')
_BUDGET_MB = flags.DEFINE_integer('memory_budget_mb', 4096,
                                  'Device memory the round may use (plans the chunks).')
_SAMPLES = flags.DEFINE_integer('samples_per_client', 8, 'Eye patches per client.')
_DISTINCT = flags.DEFINE_integer('distinct_people', 256,
                                 'Rendered synthetic people, dealt round-robin to clients.')
_LOCAL_STEPS = flags.DEFINE_integer('local_steps', 2, 'Client SGD steps per round.')
_BATCH = flags.DEFINE_integer('batch', 4, 'Client batch size.')
_CONV = flags.DEFINE_list('conv_features', ['4', '8'], 'GazeNet conv features.')
_HIDDEN = flags.DEFINE_integer('hidden', 32, 'GazeNet hidden units.')
_PADDING = flags.DEFINE_enum('padding', 'VALID', ['VALID', 'SAME'], 'GazeNet padding.')
_LR = flags.DEFINE_float('lr', 0.01, 'Client SGD learning rate.')
_REPEATS = flags.DEFINE_integer('repeats', 1, 'Rounds per aggregator (the first compiles MPC).')


def make_clients(num_clients: int, samples: int, distinct: int) -> list[base.PersonData]:
  """``num_clients`` clients of ``samples`` patches each, from ``distinct`` rendered people."""
  rendered = [synthetic.sample_person(0, i, samples) for i in range(min(distinct, num_clients))]
  return [base.PersonData(person=f'c{c:05d}', images=p.images, labels=p.labels,
                          head_pose=p.head_pose, sample_id=p.sample_id)
          for c, p in ((c, rendered[c % len(rendered)]) for c in range(num_clients))]


def _peak_bytes() -> tuple[int, str]:
  peak = memory.peak_device_bytes()
  if peak is not None:
    return peak, 'device peak_bytes_in_use'
  return memory.peak_rss_bytes(), 'process peak RSS (CPU backend)'


def _block(tree):
  return jax.block_until_ready(tree)


def main(argv):
  del argv
  num_clients = _NUM_CLIENTS.value
  conv = tuple(int(x) for x in _CONV.value)
  dev = jax.devices()[0]
  print(f'machine: {platform.node()} backend={jax.default_backend()} '
        f'device={dev.device_kind} x{jax.device_count()} ({jax.process_count()} process(es)) '
        f'jax={jax.__version__}')
  t0 = time.perf_counter()
  people = make_clients(num_clients, _SAMPLES.value, _DISTINCT.value)
  store = client_data.make_store(people)
  del people
  model = gaze.GazeNet(conv_features=conv, hidden=_HIDDEN.value, padding=_PADDING.value)
  first = jnp.asarray(store.images[0, :1])
  params = model.init(jax.random.PRNGKey(0), first, jnp.asarray(store.head_pose[0, :1]))['params']
  num_params = sum(x.size for x in jax.tree.leaves(params))
  print(f'clients: {num_clients} x {_SAMPLES.value} samples ({_DISTINCT.value} distinct '
        f'people), store {memory.store_bytes(store) / memory.MIB:,.1f} MiB, built in '
        f'{time.perf_counter() - t0:.1f} s; GazeNet{conv} hidden {_HIDDEN.value} '
        f'{_PADDING.value}: {num_params:,} params; {_LOCAL_STEPS.value} local steps x '
        f'batch {_BATCH.value}')

  client_opt = optax.sgd(_LR.value)
  local = executors.make_local_train(model.apply, client_opt)
  model_config = type('ModelConfig', (), dict(name='gazenet', conv_features=conv,
                                              padding=_PADDING.value))
  clients_train = executors.make_clients_train(model_config, client_opt)
  probe = executors.Executor(local, _EXECUTOR.value, clients_train=clients_train)
  budget = _BUDGET_MB.value * memory.MIB
  t = time.perf_counter()
  training = memory.training_cost(probe, params, store, _LOCAL_STEPS.value, _BATCH.value)
  print(f'training cost from XLA memory analysis: {time.perf_counter() - t:.1f} s')

  ids = np.arange(num_clients)
  t = time.perf_counter()
  idx, mask = client_data.round_indices(0, 0, ids, store.num_samples, _LOCAL_STEPS.value,
                                        _BATCH.value)
  indices_s = time.perf_counter() - t
  _, unravel = ravel_pytree(params)
  server_opt = optax.sgd(1.0)  # FedAvg: θ' = θ + mean Δ.
  server_step = jax.jit(lambda p, s, mean: optax.apply_updates(
      p, server_opt.update(unravel(-mean), s, p)[0]))

  executor = None
  for name in _AGGREGATOR.value:
    if name == 'mean':
      agg = aggregators.MeanAggregator()
    elif name == 'privateyes':
      agg = mpc_aggregator.SecureAggregator(
          max_weight=float(_LOCAL_STEPS.value * _BATCH.value), mode='privateyes',
          client_chunk=_MPC_CHUNK.value)
    else:
      raise app.UsageError(f'--aggregator: mean or privateyes, not {name!r}.')
    plan, agg = memory.plan_round(
        probe, params, store, num_clients, _LOCAL_STEPS.value, _BATCH.value, aggregator=agg,
        budget_bytes=budget, client_chunk=_CLIENT_CHUNK.value or None, training=training)
    print(f'\n== {"FedAvg" if name == "mean" else "PrivatEyes"} round: '
          f'executor {executors.describe(probe)}, aggregator {agg.name}')
    print(plan.describe())
    if executor is None or executor.client_chunk != plan.client_chunk:
      executor = executors.Executor(local, _EXECUTOR.value, plan.client_chunk,
                                    clients_train=clients_train)
      t = time.perf_counter()  # Compile the chunk program on one chunk.
      _block(executor.run(params, store, ids[:plan.client_chunk], idx[:plan.client_chunk],
                          mask[:plan.client_chunk]).updates)
      print(f'compile + one chunk: {time.perf_counter() - t:.1f} s')
    state = agg.init(jax.random.PRNGKey(1))
    for r in range(_REPEATS.value):
      t = time.perf_counter()
      local_results = executor.run(params, store, ids, idx, mask)
      _block(local_results.updates)
      train_s = time.perf_counter() - t
      t = time.perf_counter()
      _, result = agg.apply(state, local_results.updates, local_results.weights,
                            jax.random.PRNGKey(2), r)
      assert result.ok, result.failure
      new_params = _block(server_step(params, server_opt.init(params), result.mean_update))
      agg_s = time.perf_counter() - t
      del local_results
      peak, what = _peak_bytes()
      samples = num_clients * _LOCAL_STEPS.value * _BATCH.value
      print(f'round {r + 1}: {train_s + agg_s + indices_s:.1f} s = indices {indices_s:.1f} + '
            f'training {train_s:.1f} ({samples / train_s:,.0f} samples/s) + aggregation and '
            f'server step {agg_s:.1f}')
      print(f'  measured {what}: {peak / memory.MIB:,.0f} MiB = {peak / num_clients:,.0f} B '
            f'per client (plan: {plan.peak_bytes / memory.MIB:,.0f} MiB, '
            f'{plan.peak_bytes_per_client:,.0f} B per client)')
      if name == 'privateyes':
        print(f'  mpc: sharing {result.stats["mpc/sharing_s"]:.1f} s, aggregation '
              f'{result.stats["mpc/aggregation_s"]:.1f} s, chunk '
              f'{int(result.stats["mpc/client_chunk"])}')
    del new_params


if __name__ == '__main__':
  app.run(main)
