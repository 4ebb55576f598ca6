r"""Round time and samples/s of each client executor, side by side in one run.

  python -m experiments.bench.executors --clients=15,64,256 --local_steps=5 --batch=32

Every executor trains the same sampled clients from the same global GazeNet for
``local_steps`` SGD steps of ``batch`` samples each; the first round of each
(executor, client count) compiles and is not timed. Ratios are against the
sequential loop measured in the same run. Needs only jax, flax, optax and numpy.
"""

import argparse
import time
import types

import jax
import numpy as np
import optax

from privateyes_jax.data import synthetic
from privateyes_jax.federated import client_data
from privateyes_jax.federated import executors
from privateyes_jax.models import gaze


def time_rounds(executor, params, store, ids, idx, mask, repeats):
  out = executor.run(params, store, ids, idx, mask)  # Compile + warm up.
  jax.block_until_ready(out.updates)
  t0 = time.perf_counter()
  for _ in range(repeats):
    out = executor.run(params, store, ids, idx, mask)
  jax.block_until_ready(out.updates)
  return (time.perf_counter() - t0) / repeats, out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--clients', default='15,64', help='Comma-separated client counts.')
  parser.add_argument('--executors', default='sequential,vmap,sharded,client_parallel')
  parser.add_argument('--local_steps', type=int, default=5)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--samples_per_client', type=int, default=64)
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--conv_features', default='20,50')
  parser.add_argument('--hidden', type=int, default=500)
  parser.add_argument('--padding', default='VALID')
  parser.add_argument('--compute_dtype', default='float32')
  parser.add_argument('--lr', type=float, default=0.001, help='Client SGD learning rate.')
  parser.add_argument('--precision', default='highest',
                      help='jax_default_matmul_precision (GPU default would be TF32).')
  args = parser.parse_args()
  jax.config.update('jax_default_matmul_precision', args.precision)
  counts = [int(c) for c in args.clients.split(',')]
  kinds = [k for k in args.executors.split(',') if k != 'sharded' or len(jax.devices()) > 1]
  dev = jax.devices()[0]
  conv_features = tuple(int(x) for x in args.conv_features.split(','))
  print(f'backend={jax.default_backend()} device={dev.device_kind} x{len(jax.devices())} '
        f'jax={jax.__version__} model=GazeNet{conv_features} hidden={args.hidden} '
        f'padding={args.padding} local_steps={args.local_steps} batch={args.batch}')
  model = gaze.GazeNet(conv_features=conv_features, hidden=args.hidden, padding=args.padding)
  model_config = types.SimpleNamespace(name='gazenet', conv_features=conv_features,
                                       padding=args.padding)
  people = [synthetic.sample_person(0, i, args.samples_per_client) for i in range(max(counts))]
  store = client_data.make_store(people)
  params = model.init(jax.random.PRNGKey(0), people[0].images[:1],
                      people[0].head_pose[:1])['params']
  local = executors.make_local_train(model.apply, optax.sgd(args.lr))
  clients = executors.make_clients_train(model_config, optax.sgd(args.lr),
                                         compute_dtype=jax.numpy.dtype(args.compute_dtype))
  print(f'{"clients":>7} {"executor":>10} {"round (s)":>10} {"samples/s":>10} {"vs seq":>7}')
  for c in counts:
    ids = np.arange(c)
    idx, mask = client_data.round_indices(0, 0, ids, store.num_samples, args.local_steps,
                                          args.batch)
    samples = c * args.local_steps * args.batch
    base, ref = None, None
    for kind in kinds:
      seconds, out = time_rounds(executors.Executor(local, kind, clients_train=clients), params, store, ids, idx,
                                 mask, args.repeats)
      if ref is None:
        ref = out
      else:
        err = (np.linalg.norm(np.asarray(out.updates) - np.asarray(ref.updates), axis=1)
               / np.maximum(np.linalg.norm(np.asarray(ref.updates), axis=1), 1e-12))
        assert err.max() < 1e-2, f'{kind} disagrees with {kinds[0]}: relative error {err.max()}'
      base = base or seconds
      print(f'{c:>7} {kind:>10} {seconds:>10.3f} {samples / seconds:>10.0f} '
            f'{base / seconds:>6.2f}x', flush=True)


if __name__ == '__main__':
  main()
