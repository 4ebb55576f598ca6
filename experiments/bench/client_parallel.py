r"""Local training of many federated clients: per-client loop vs vmap vs batched GEMMs.

  python -m experiments.bench.client_parallel --clients=15,64,256 --local_steps=10 --batch=32
  python -m experiments.bench.client_parallel --quick  # smoke run, ~1 minute on CPU

One "round" is what a federated round asks of the clients: each of ``C`` clients
starts from the same global GazeNet params and takes ``local_steps`` SGD steps on
its own batches of ``batch`` eye patches, ending with its own params. Every
implementation does exactly that work and is timed from global params + device
resident data to all ``C`` trained param trees being ready:

  loop   one jitted call per client (``lax.scan`` over the local steps of the flax
         model), dispatched client after client; the baseline of issue 7.
  vmap   ``jax.vmap`` over clients of the same per-client function (per-client
         conv kernels become grouped convolutions).
  cp     `client_parallel.gazenet_apply_clients`: one jitted call for all
         clients, convolutions as batched im2col GEMMs over the client axis, in
         each ``--dtype`` and ``--patch_impl``.

The scan over local steps is unrolled on CPU (XLA:CPU runs convolutions in while
loops ~10x slower, DESIGN.md §7) and rolled elsewhere (``--unroll`` overrides).
TFLOP/s counts training as 3x the analytic forward FLOPs (convolutions + dense
layers as GEMMs). The ``vs loop`` column is the relative difference of the
trained clients' updates from the loop's (TF32 or bfloat16 show up here).

Needs only jax, flax and numpy (no TFDS/ml_collections), so it runs on a bare GPU host.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

# The plain `python -m experiments.bench.client_parallel` form puts experiments/ on
# sys.path, not the repository root; add it so the package imports uninstalled.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from privateyes_jax.models import client_parallel  # pylint: disable=g-import-not-at-top
from privateyes_jax.models import gaze  # pylint: disable=g-import-not-at-top

IMAGE_SHAPE = (36, 60, 1)  # MPIIGaze normalised eye patch.


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--clients', default='15,64,256', help='Comma-separated client counts.')
  p.add_argument('--local_steps', type=int, default=10)
  p.add_argument('--batch', type=int, default=32, help='Per-client batch size.')
  p.add_argument('--impls', default='loop,vmap,cp', help='Subset of loop,vmap,cp.')
  p.add_argument('--dtype', default='float32,bfloat16', help='compute_dtype(s) of cp.')
  p.add_argument('--patch_impl', default='slices', help='im2col of cp: slices and/or conv.')
  p.add_argument('--conv_features', default='20,50')
  p.add_argument('--hidden', type=int, default=500)
  p.add_argument('--padding', default='SAME')
  p.add_argument('--lr', type=float, default=1e-3)
  p.add_argument('--repeats', type=int, default=2, help='Timed rounds after the first.')
  p.add_argument('--unroll', default='auto', choices=('auto', 'true', 'false'),
                 help='Unroll the local-step scan (auto: only on CPU).')
  p.add_argument('--quick', action='store_true',
                 help='Smoke run: 2,4 clients, 2 steps, batch 8, small model, 1 repeat.')
  args = p.parse_args(argv)
  if args.quick:
    args.clients, args.local_steps, args.batch, args.repeats = '2,4', 2, 8, 1
    args.conv_features, args.hidden = '4,8', 16
  return args


def _ints(s: str) -> tuple[int, ...]:
  return tuple(int(v) for v in s.split(',') if v)


def forward_flops_per_sample(conv_features, hidden: int, padding: str) -> int:
  """Multiply-adds x2 of one GazeNet forward pass (convs as GEMMs, dense layers)."""
  h, w, cin = IMAGE_SHAPE
  flops = 0
  for cout in conv_features:
    if padding == 'VALID':
      h, w = h - 4, w - 4
    flops += 2 * h * w * 25 * cin * cout
    h, w, cin = h // 2, w // 2, cout
  flat = h * w * cin
  return flops + 2 * flat * hidden + 2 * (hidden + 2) * 2


def make_data(num_clients: int, steps: int, batch: int, seed: int = 0):
  """Per-client batches ``[C, steps, B, ...]``, generated on the device."""
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  lead = (num_clients, steps, batch)
  return {
      'images': jax.random.randint(k1, lead + IMAGE_SHAPE, 0, 256, jnp.int32).astype(jnp.uint8),
      'head_pose': 0.3 * jax.random.normal(k2, lead + (2,)),
      'labels': 0.3 * jax.random.normal(k3, lead + (2,)),
      'mask': jnp.ones(lead, jnp.float32),
  }


def masked_l1(pred, labels, mask):
  """`training.loss_fn` on predictions (not imported: training pulls in more modules)."""
  per_sample = jnp.sum(jnp.abs(pred - labels), axis=-1)
  return jnp.sum(per_sample * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def make_local_train(model, lr: float, unroll):
  """Flax model, one client: ``(params, batches [steps, B, ...]) -> params``."""
  def step(params, batch):
    grads = jax.grad(lambda p: masked_l1(model.apply({'params': p}, batch['images'],
                                                     batch['head_pose']),
                                         batch['labels'], batch['mask']))(params)
    return jax.tree.map(lambda p, g: p - lr * g, params, grads), None

  def local_train(params, batches):
    return jax.lax.scan(step, params, batches, unroll=unroll)[0]
  return local_train


def make_cp_train(num_clients: int, lr: float, unroll, **model_kwargs):
  """All clients at once: ``(global params, batches [steps, C, B, ...]) -> [C] params``."""
  def step(params, batch):
    grads = jax.grad(lambda p: client_parallel.client_losses(p, batch, **model_kwargs).sum())(
        params)
    return jax.tree.map(lambda p, g: p - lr * g, params, grads), None

  def train(global_params, batches):
    params = jax.tree.map(lambda p: jnp.broadcast_to(p, (num_clients,) + p.shape),
                          global_params)
    return jax.lax.scan(step, params, batches, unroll=unroll)[0]
  return jax.jit(train)


def time_rounds(run, repeats: int):
  """(first call incl. compilation, median of ``repeats`` later calls) in seconds, result."""
  t0 = time.perf_counter()
  out = jax.block_until_ready(run())
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = jax.block_until_ready(run())
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times) if times else first, out


def update_rel_diff(global_params, stacked, reference) -> float:
  """Largest over leaves of ``|Δ - Δ_ref| / |Δ_ref|`` of the clients' updates."""
  def rel(g, a, b):
    da, db = a - g, b - g
    return float(jnp.linalg.norm(da - db) / jnp.maximum(jnp.linalg.norm(db), 1e-30))
  return max(jax.tree.leaves(jax.tree.map(rel, global_params, stacked, reference)))


def main(argv=None) -> None:
  start = time.perf_counter()
  args = parse_args(argv)
  conv_features = _ints(args.conv_features)
  dev = jax.devices()[0]
  backend = jax.default_backend()
  unroll = {'auto': backend == 'cpu', 'true': True, 'false': False}[args.unroll]
  unroll = True if unroll else 1
  model = gaze.GazeNet(conv_features=conv_features, hidden=args.hidden, padding=args.padding)
  global_params = model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + IMAGE_SHAPE, jnp.uint8),
                             jnp.zeros((1, 2)))['params']
  n_params = sum(x.size for x in jax.tree.leaves(global_params))
  train_flops = 3 * forward_flops_per_sample(conv_features, args.hidden, args.padding)
  impls = args.impls.split(',')
  print(f'jax {jax.__version__}, backend {backend}, device {dev.device_kind} '
        f'({jax.device_count()} devices, using 1); GazeNet{conv_features} hidden {args.hidden} '
        f'{args.padding}: {n_params / 1e6:.2f}M params, {train_flops / 1e6:.1f} MFLOP per '
        f'training sample; {args.local_steps} local steps x batch {args.batch}; '
        f'scan unroll={unroll}; median of {args.repeats} rounds after the first.')
  print(f'{"impl":<22} {"clients":>7} {"first s":>8} {"round s":>8} {"samples/s":>11} '
        f'{"TFLOP/s":>8} {"x loop":>7} {"vs loop":>8}', flush=True)

  local_train = make_local_train(model, args.lr, unroll)
  loop_fn = jax.jit(local_train)
  vmap_fn = jax.jit(jax.vmap(local_train, in_axes=(None, 0)))
  for num_clients in _ints(args.clients):
    data = jax.block_until_ready(make_data(num_clients, args.local_steps, args.batch))
    samples = num_clients * args.local_steps * args.batch
    loop_rate, loop_params = None, None

    def report(name, first, per_round, out):
      nonlocal loop_rate, loop_params
      rate = samples / per_round
      if name == 'loop':
        loop_rate = rate
        loop_params = out
      ratio = f'{rate / loop_rate:7.2f}' if loop_rate else f'{"-":>7}'
      diff = (f'{update_rel_diff(global_params, out, loop_params):8.1e}'
              if loop_params is not None and name != 'loop' else f'{"-":>8}')
      print(f'{name:<22} {num_clients:>7} {first:8.2f} {per_round:8.3f} {rate:11.0f} '
            f'{rate * train_flops / 1e12:8.3f} {ratio} {diff}', flush=True)

    if 'loop' in impls:
      per_client = [jax.tree.map(lambda x, c=c: x[c], data) for c in range(num_clients)]
      jax.block_until_ready(per_client)
      first, per_round, out = time_rounds(
          lambda: [loop_fn(global_params, d) for d in per_client], args.repeats)
      out = jax.tree.map(lambda *xs: jnp.stack(xs), *out)
      del per_client
      report('loop', first, per_round, out)
    if 'vmap' in impls:
      report('vmap', *time_rounds(lambda: vmap_fn(global_params, data), args.repeats))
    if 'cp' in impls:
      steps_first = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), data)  # [steps, C, B, ...]
      for dtype in args.dtype.split(','):
        for patch_impl in args.patch_impl.split(','):
          fn = make_cp_train(num_clients, args.lr, unroll, conv_features=conv_features,
                             padding=args.padding, compute_dtype=jnp.dtype(dtype),
                             patch_impl=patch_impl)
          report(f'cp {dtype} {patch_impl}',
                 *time_rounds(lambda fn=fn: fn(global_params, steps_first), args.repeats))
      del steps_first
    del data, loop_params
  print(f'total {time.perf_counter() - start:.0f} s')


if __name__ == '__main__':
  main()
