r"""Secure aggregation vs the plain weighted mean (and optionally whole rounds), one run.

  python -m experiments.bench.secure_aggregation --clients=15,256 --params=3402076
  python -m experiments.bench.secure_aggregation --clients=15 --params=1800000 --round \
      --padding=VALID

For every client count C and parameter count P it times, after a warm-up call
(compile) and on the same random updates:

* ``plain``: the jitted weighted mean of FedAvg (``federated.aggregators``);
* ``semi``: ``SecureAggregator(mode='privateyes_semi_honest').apply``;
* ``privateyes``: ``SecureAggregator(mode='privateyes').apply`` (SPDZ2k with
  the MAC check, including the simulated dealer),
* ``privateyes_dp`` (``--modes=...,privateyes_dp``): the same with client-level DP,
  every server drawing and inputting its discrete Gaussian noise (docs/MPC.md §5b),
* ``privateyes_validity`` (``--modes=privateyes,privateyes_validity``): the same with the
  norm-bound validity check inside the MPC (docs/VALIDITY_DESIGN.md, clip 1.0), also
  printing the bytes the check adds per client and round,

and prints the secure/plain ratios, the aggregator's memory plan and XLA's memory
analysis of the fused chunk program. ``--round`` adds whole training rounds:
FedAvg = local training of C clients (client_parallel executor, GazeNet conv
(20, 50), hidden 500, ``--local_steps`` SGD steps of ``--batch`` on synthetic
people) + plain mean; PrivatEyes = the same + the privateyes aggregation; and
their ratio. Needs only jax, numpy, optax, flax and privateyes_jax.
"""

import argparse
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

from privateyes_jax.federated import aggregators
from privateyes_jax.mpc import aggregator as mpc_aggregator
from privateyes_jax.mpc import fused
from privateyes_jax.mpc import validity as validity_lib
from privateyes_jax.privacy import dp as dp_lib

MODES = {'semi': 'privateyes_semi_honest', 'privateyes': 'privateyes',
         'privateyes_dp': 'privateyes', 'privateyes_validity': 'privateyes'}


def _dp_settings(name, num_clients):
  if not name.endswith('_dp'):
    return None
  return dp_lib.DPSettings(clip_norm=1.0, noise_multiplier=1.0, delta=1e-5, accountant='rdp',
                           sampling_rate=1.0, num_clients=num_clients, rounds=1)


def _time(fn, repeats):
  """Min and median seconds of ``fn()`` (which must block) after one warm-up."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times), float(np.median(times))


def _chunk_program_memory(agg, updates, weights):
  """XLA's memory analysis of the fused chunk program (temp bytes), or None."""
  num_clients, num_params = updates.shape
  chunk = agg.chunk_size(num_clients, num_params)
  with jax.enable_x64(True):
    seeds = mpc_aggregator.round_seeds(jax.random.key(0), 0, num_clients,
                                          agg.num_servers, agg.mode)
    acc, stats = fused.init_accumulators(agg.mode, agg.spec, agg.num_servers,
                                         num_params + 1, num_clients)
    try:
      compiled = fused.accumulate.lower(
          acc, stats, updates, jnp.int32(0), weights, seeds,
          jnp.float32(agg.max_weight), jnp.int32(0), mode=agg.mode,
          spec=agg.spec, num_servers=agg.num_servers, prg=agg.prg, chunk=chunk,
          num_clients=num_clients).compile()
      analysis = compiled.memory_analysis()
      return None if analysis is None else int(analysis.temp_size_in_bytes)
    except Exception:  # pylint: disable=broad-except
      return None


def _peak_bytes():
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get('peak_bytes_in_use')


def bench_aggregation(args, num_clients, num_params, prg, client_chunk, max_weight):
  key = jax.random.key(num_clients)
  updates = jax.random.normal(key, (num_clients, num_params), jnp.float32) * 1e-3
  weights = jnp.full((num_clients,), max_weight, jnp.float32).at[0].set(max_weight / 2)
  jax.block_until_ready((updates, weights))
  plain = lambda: jax.block_until_ready(aggregators.weighted_mean(updates, weights))
  rows = {'plain': _time(plain, args.repeats)}
  reference = np.asarray(plain()[0])
  for name in args.modes.split(','):
    agg = mpc_aggregator.SecureAggregator(
        mode=MODES[name], num_servers=args.servers, max_weight=max_weight,
        client_chunk=client_chunk, prg=prg, dp=_dp_settings(name, num_clients),
        validity=(validity_lib.ValiditySettings(clip_norm=1.0)
                  if name.endswith('_validity') else None))
    state = agg.init(jax.random.key(1))
    round_key = jax.random.key(2)

    def secure(agg=agg, state=state, round_key=round_key):
      _, result = agg.apply(state, updates, weights, round_key, 0)
      jax.block_until_ready(result.mean_update)
      return result

    rows[name] = _time(secure, args.repeats)
    # The online phase: the round minus the simulated dealer (mpc/preprocessing_s).
    online = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      result = secure()
      # The validity check regenerates its dealer material inside the servers' pass, so
      # its "online" time includes it (an upper bound).
      online.append(time.perf_counter() - start - result.stats.get('mpc/preprocessing_s', 0.0))
    rows[name + '_online'] = min(online)
    assert result.ok, result.failure
    # DP's mean is the noisy sum over q·N: its error is the noise, not exactness.
    error = float(np.abs(np.asarray(result.mean_update) - reference).max())
    plan = agg.memory_plan(num_clients, num_params)
    temp = (_chunk_program_memory(agg, updates, weights)
            if args.memory and name == 'privateyes' else None)
    rows[name + '_info'] = (
        f'chunk={plan["client_chunk"]}x{plan["num_chunks"]} '
        f'plan={plan["chunk_working_set_bytes"] / 2**20:.0f}MiB/chunk '
        f'({plan["bytes_per_client_in_chunk"] / num_params:.0f} B/client/param) '
        f'acc={plan["accumulator_bytes"] / 2**20:.0f}MiB '
        + (f'xla_temp={temp / 2**20:.0f}MiB ' if temp is not None else '')
        + f'max|err|={error:.1e}')
    if name.endswith('_validity'):
      st = result.stats
      rows[name + '_info'] += (
          f' upload/client={st["mpc/client_upload_bytes"] / 2**20:.2f}MiB '
          f'(+{st["mpc/validity_extra_client_upload_bytes"] / 2**20:.2f}) '
          f'server_bcast=+{st["mpc/validity_server_broadcast_bytes"]:.0f}B '
          f'dealer=+{st["mpc/validity_dealer_send_bytes"] / 2**20:.1f}MiB '
          f'rounds=+{st["mpc/validity_extra_rounds"]:.0f} excluded={st["mpc/validity_excluded"]:.0f}')
  base = rows['plain'][0]
  print(f'{num_clients:>7} {num_params:>9} {prg:>13} {"plain":>10} '
        f'{rows["plain"][0] * 1e3:>9.2f} {rows["plain"][1] * 1e3:>9.2f} {"1.00x":>8}',
        flush=True)
  for name in args.modes.split(','):
    best, median = rows[name]
    online = rows[name + '_online']
    print(f'{num_clients:>7} {num_params:>9} {prg:>13} {name:>10} {best * 1e3:>9.2f} '
          f'{median * 1e3:>9.2f} {best / base:>7.1f}x  online (without the dealer) '
          f'{online * 1e3:.2f} ms = {online / base:.1f}x  {rows[name + "_info"]}',
          flush=True)
  del updates


def bench_round(args, num_clients, max_weight):
  """FedAvg round vs PrivatEyes round on the same clients and model."""
  from privateyes_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  from privateyes_jax.federated import client_data  # pylint: disable=g-import-not-at-top
  from privateyes_jax.federated import executors  # pylint: disable=g-import-not-at-top
  from privateyes_jax.models import gaze  # pylint: disable=g-import-not-at-top
  conv = (20, 50)
  model = gaze.GazeNet(conv_features=conv, hidden=500, padding=args.padding)
  model_config = types.SimpleNamespace(name='gazenet', conv_features=conv,
                                       padding=args.padding)
  people = [synthetic.sample_person(0, i, args.samples_per_client)
            for i in range(num_clients)]
  store = client_data.make_store(people)
  params = model.init(jax.random.PRNGKey(0), people[0].images[:1],
                      people[0].head_pose[:1])['params']
  num_params = sum(x.size for x in jax.tree.leaves(params))
  clients = executors.make_clients_train(model_config, optax.sgd(0.01))
  executor = executors.Executor(executors.make_local_train(model.apply, optax.sgd(0.01)),
                                'client_parallel', clients_train=clients)
  ids = np.arange(num_clients)
  idx, mask = client_data.round_indices(0, 0, ids, store.num_samples, args.local_steps,
                                        args.batch)
  agg = mpc_aggregator.SecureAggregator(
      mode='privateyes', num_servers=args.servers, max_weight=max_weight,
      client_chunk=int(args.client_chunk.split(',')[0]), prg=args.prg.split(',')[0])
  state = agg.init(jax.random.key(1))

  local = executor.run(params, store, ids, idx, mask)
  updates, weights = jax.block_until_ready((local.updates, local.weights))

  def fedavg():
    local = executor.run(params, store, ids, idx, mask)
    return jax.block_until_ready(aggregators.weighted_mean(local.updates, local.weights))

  dealer = {}  # Seconds of the simulated dealer in the last call (offline phase).

  def privateyes():
    local = executor.run(params, store, ids, idx, mask)
    _, result = agg.apply(state, local.updates, local.weights, jax.random.key(2), 0)
    assert result.ok, result.failure
    dealer['privateyes'] = result.stats['mpc/preprocessing_s']
    return jax.block_until_ready(result.mean_update)

  def aggregation_only():
    _, result = agg.apply(state, updates, weights, jax.random.key(2), 0)
    dealer['aggregation_only'] = result.stats['mpc/preprocessing_s']
    return jax.block_until_ready(result.mean_update)

  def plain_only():
    return jax.block_until_ready(aggregators.weighted_mean(updates, weights))

  # Interleaved, so that load changes on a shared machine hit both alike.
  for fn in (fedavg, privateyes, aggregation_only, plain_only):
    fn()
  times = {fn.__name__: [] for fn in (fedavg, privateyes, aggregation_only, plain_only)}
  online = {'privateyes': [], 'aggregation_only': []}
  for _ in range(args.round_repeats):
    for fn in (fedavg, privateyes, aggregation_only, plain_only):
      start = time.perf_counter()
      fn()
      times[fn.__name__].append(time.perf_counter() - start)
      if fn.__name__ in online:
        online[fn.__name__].append(times[fn.__name__][-1] - dealer[fn.__name__])
  best = {k: min(v) for k, v in times.items()}
  best_online = {k: min(v) for k, v in online.items()}
  derived = (best['fedavg'] - best['plain_only'] + best['aggregation_only']) / best['fedavg']
  print(f'round  clients={num_clients} params={num_params} padding={args.padding} '
        f'local_steps={args.local_steps} batch={args.batch} (min of {args.round_repeats}, '
        f'interleaved): fedavg {best["fedavg"]:.3f} s, privateyes {best["privateyes"]:.3f} s, '
        f'ratio {best["privateyes"] / best["fedavg"]:.3f}x; secure aggregation alone '
        f'{best["aggregation_only"] * 1e3:.1f} ms vs plain mean '
        f'{best["plain_only"] * 1e3:.2f} ms -> (fedavg - plain + secure) / fedavg = '
        f'{derived:.3f}x', flush=True)
  print(f'online phase (without the simulated dealer, which a deployment runs before the '
        f'round): privateyes round {best_online["privateyes"]:.3f} s, ratio '
        f'{best_online["privateyes"] / best["fedavg"]:.3f}x; secure aggregation '
        f'{best_online["aggregation_only"] * 1e3:.1f} ms = '
        f'{best_online["aggregation_only"] / best["plain_only"]:.1f}x the plain mean',
        flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--clients', default='15,256', help='Comma-separated client counts.')
  parser.add_argument('--params', default='3402076',
                      help='Comma-separated parameter counts (3402076: GazeNet SAME, '
                      '1800000 ~ VALID).')
  parser.add_argument('--modes', default='semi,privateyes')
  parser.add_argument('--servers', type=int, default=3)
  parser.add_argument('--prg', default='threefry2x64',
                      help='Comma-separated share generators (mpc/prg.py PRGS).')
  parser.add_argument('--client_chunk', default='0',
                      help='Comma-separated clients per chunk (0: automatic plan).')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--memory', type=int, default=1,
                      help='1: print XLA memory analysis of the privateyes chunk program.')
  parser.add_argument('--round', action='store_true', help='Also time whole rounds.')
  parser.add_argument('--round_repeats', type=int, default=3)
  parser.add_argument('--padding', default='SAME', help='GazeNet padding for --round.')
  parser.add_argument('--local_steps', type=int, default=10)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--samples_per_client', type=int, default=64)
  args = parser.parse_args()
  start = time.perf_counter()
  dev = jax.devices()[0]
  print(f'backend={jax.default_backend()} device={dev.device_kind} x{len(jax.devices())} '
        f'jax={jax.__version__} servers={args.servers}')
  max_weight = float(args.local_steps * args.batch)
  print(f'{"clients":>7} {"params":>9} {"prg":>13} {"method":>10} {"min ms":>9} '
        f'{"median ms":>9} {"vs plain":>8}')
  for num_clients in (int(c) for c in args.clients.split(',')):
    for num_params in (int(p) for p in args.params.split(',')):
      for prg in args.prg.split(','):
        for chunk in (int(c) for c in args.client_chunk.split(',')):
          bench_aggregation(args, num_clients, num_params, prg, chunk, max_weight)
  peak = _peak_bytes()
  if peak is not None:
    print(f'device peak memory: {peak / 2**30:.2f} GiB')
  if args.round:
    for num_clients in (int(c) for c in args.clients.split(',')):
      bench_round(args, num_clients, max_weight)
  print(f'total {time.perf_counter() - start:.1f} s')


if __name__ == '__main__':
  main()
