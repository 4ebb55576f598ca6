r"""A learning-rate x seed sweep as one program vs the same runs one after another.

  python -m experiments.bench.sweep                      # 64 runs = 16 lr x 4 seeds
  python -m experiments.bench.sweep --preset=tiny --num_runs=8 --seeds=2 --rounds=3

Both sides train the same configs (FedAvg, or PrivatEyes with ``--aggregator``;
client SGD, the learning rates ``logspace(lr_min, lr_max, num_runs / seeds)`` x seeds
``0..seeds-1``), evaluate once at the end and checkpoint once at the end:

* **sweep**: ``privateyes_jax.sweeps.sweep.run_sweep`` (R runs x C clients as one
  client-parallel program, ``--max_runs_per_program`` runs per program);
* **sequential**: ``runner.train_and_evaluate`` of each run's config, as a user
  would run them with ``experiments.train`` (executor ``auto``). With
  ``--sequential_runs=m`` < ``num_runs`` only every (num_runs/m)-th run is trained
  and the sequential time is extrapolated (mean per run x num_runs).

Printed: end-to-end wall time (data, compilation, training, evaluation, checkpoints)
and steady-state training time (the rounds after each program's first, i.e. without
compilation), samples/s, the sweep/sequential ratios, and the largest difference
between the two sides' per-run results (final params and held-out error).
"""

import argparse
import json
import os
import platform
import shutil
import tempfile
import time

import jax
import numpy as np

from experiments.configs import sweep as sweep_configs
from privateyes_jax import runner
from privateyes_jax import workdir as workdir_lib
from privateyes_jax.federated import engine
from privateyes_jax.mpc import ring
from privateyes_jax.sweeps import sweep


def _rows(path: str) -> list[dict]:
  with open(os.path.join(path, workdir_lib.METRICS_FILE)) as f:
    return [json.loads(line) for line in f if line.strip()]


def _steady_seconds(rows: list[dict]) -> float:
  """Seconds of the rounds after the first (which compiles) of one run or group."""
  return float(sum(r['round_seconds'] for r in rows if r['round'] > 1))


def _final_params(path: str):
  """The params of the latest checkpoint, or None (a run rejected in its first round)."""
  wd = workdir_lib.Workdir(path)
  step = wd.latest_step()
  state = None if step is None else wd._manager.restore(step)  # pylint: disable=protected-access
  wd.close()
  return None if state is None else state['params']


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--num_runs', type=int, default=64)
  parser.add_argument('--seeds', type=int, default=4)
  parser.add_argument('--lr_min', type=float, default=0.005)
  parser.add_argument('--lr_max', type=float, default=0.1)
  parser.add_argument('--preset', default='', help='"tiny" for the CPU test preset.')
  parser.add_argument('--clip_norm', type=float, default=5.0)
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--local_steps', type=int, default=5)
  parser.add_argument('--max_runs_per_program', type=int, default=16)
  parser.add_argument('--sequential_runs', type=int, default=0,
                      help='How many runs to train one by one (0: all); the rest extrapolated.')
  parser.add_argument('--precision', default='highest',
                      help='jax_default_matmul_precision for both sides (GPUs default to TF32).')
  parser.add_argument('--aggregator', default='mean',
                      help='aggregator.name of every run: mean, privateyes, privateyes_semi_honest.')
  parser.add_argument('--workdir', default='', help='Where to write (default: a temp dir).')
  args = parser.parse_args()
  jax.config.update('jax_default_matmul_precision', args.precision)
  if args.num_runs % args.seeds:
    parser.error('--num_runs must be a multiple of --seeds.')
  num_lrs = args.num_runs // args.seeds

  config = sweep_configs.get_config('fedavg' + (f',{args.preset}' if args.preset else ''))
  config.fl.rounds = args.rounds
  config.fl.local_steps = args.local_steps
  config.fl.eval_every = args.rounds
  config.fl.checkpoint_every = args.rounds
  config.sweep.grid = (f'optimizer.learning_rate=logspace({args.lr_min},{args.lr_max},{num_lrs});'
                       f'seed=range({args.seeds})')
  config.sweep.max_runs_per_program = args.max_runs_per_program
  config.optimizer.clip_norm = args.clip_norm  # As the demo: keeps large rates finite.
  config.aggregator.name = args.aggregator
  runs = sweep.prepare(config)
  base = runs[0].config
  dev = jax.devices()[0]
  print(f'backend={jax.default_backend()} device={dev.device_kind} x{len(jax.devices())} '
        f'jax={jax.__version__} cpus={os.cpu_count()} host={platform.machine()} '
        f'precision={args.precision}')
  print(f'{len(runs)} runs ({num_lrs} lr x {args.seeds} seeds), GazeNet'
        f'{tuple(base.model.conv_features)} hidden={base.model.hidden} '
        f'padding={base.model.padding}, {base.data.num_people - base.data.num_test_people} '
        f'clients x {base.fl.local_steps} steps x batch {base.batch_size}, {base.fl.rounds} '
        f'rounds, {args.max_runs_per_program or len(runs)} runs per program, aggregator '
        f'{args.aggregator}', flush=True)

  root = args.workdir or tempfile.mkdtemp(prefix='bench_sweep_')
  sweep_dir = os.path.join(root, 'sweep')
  seq_dir = os.path.join(root, 'sequential')
  shutil.rmtree(sweep_dir, ignore_errors=True)
  shutil.rmtree(seq_dir, ignore_errors=True)

  t0 = time.perf_counter()
  result = sweep.run_sweep(config, sweep_dir)
  sweep_wall = time.perf_counter() - t0
  group_rows = {}
  for run in runs:
    with open(os.path.join(sweep_dir, 'runs', run.name, 'summary.json')) as f:
      swept = json.load(f)
    k, group = swept['clients_per_round'], swept['sweep']['group']
    if group not in group_rows:
      group_rows[group] = _rows(os.path.join(sweep_dir, 'runs', run.name))
  sweep_steady = sum(_steady_seconds(rows) for rows in group_rows.values())
  print(f'sweep: {sweep_wall:.1f} s end to end, {sweep_steady:.2f} s steady state '
        f'({len(group_rows)} programs)', flush=True)

  m = args.sequential_runs or len(runs)
  chosen = [runs[i] for i in np.linspace(0, len(runs) - 1, m).round().astype(int)]
  seq_wall, seq_steady, max_param_diff, max_err_diff = 0.0, 0.0, 0.0, 0.0
  mismatched = []
  for run in chosen:
    path = os.path.join(seq_dir, run.name)
    t = time.perf_counter()
    try:
      summary = runner.train_and_evaluate(run.config, path)
    except (engine.RoundRejected, engine.RoundAborted, ring.RingOverflowError):
      # Diverged (or, PrivatEyes, out of range / aborted): the sweep must agree.
      summary = {'test_error': None}
    seq_wall += time.perf_counter() - t
    seq_steady += _steady_seconds(_rows(path))
    with open(os.path.join(sweep_dir, 'runs', run.name, 'summary.json')) as f:
      swept = json.load(f)
    if (swept['test_error'] is None) != (summary['test_error'] is None):
      mismatched.append(run.name)
    elif swept['test_error'] is not None:
      max_err_diff = max(max_err_diff, abs(swept['test_error'] - summary['test_error']))
    a = jax.tree.leaves(_final_params(path))
    b = jax.tree.leaves(_final_params(os.path.join(sweep_dir, 'runs', run.name)))
    if len(a) != len(b):
      mismatched.append(run.name)
    elif a:
      max_param_diff = max(max_param_diff, max(
          float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b)))
  scale = len(runs) / m
  note = '' if m == len(runs) else f' (extrapolated from {m} runs x {scale:.3g})'
  seq_wall *= scale
  seq_steady *= scale
  print(f'sequential: {seq_wall:.1f} s end to end, {seq_steady:.2f} s steady state{note}')
  samples = len(runs) * base.fl.rounds * k * base.fl.local_steps * base.batch_size
  steady_samples = samples * (base.fl.rounds - 1) / base.fl.rounds
  print(f'{"":>12} {"wall (s)":>10} {"samples/s":>10} {"steady (s)":>11} {"samples/s":>10}')
  for label, wall, steady in (('sequential', seq_wall, seq_steady),
                              ('sweep', sweep_wall, sweep_steady)):
    rate = steady_samples / steady if steady > 0 else float('nan')
    print(f'{label:>12} {wall:>10.1f} {samples / wall:>10.0f} {steady:>11.2f} {rate:>10.0f}')
  print(f'ratio (sequential / sweep): end to end {seq_wall / sweep_wall:.2f}x, steady state '
        f'{seq_steady / sweep_steady:.2f}x' if sweep_steady > 0 else 'ratio: rounds < 2')
  print(f'identical results: max |params diff| {max_param_diff:.3g}, max |held-out error diff| '
        f'{max_err_diff:.3g} deg over {m} runs; diverged in one side only: '
        f'{", ".join(mismatched) or "none"}')
  print(f'best: {result["best_run"]}; outputs in {root}')
  if not args.workdir:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
  main()
