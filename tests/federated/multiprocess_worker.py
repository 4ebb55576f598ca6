r"""One process of a multi-process federated run (launched by test_multiprocess.py).

  JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=2 \
  python -m tests.federated.multiprocess_worker --num_processes=2 --process_id=0 \
      --coordinator=localhost:12345 --workdir=/tmp/run --out=/tmp/out

Runs the tiny federated config with the sharded executor through
`runner.train_and_evaluate` (so the workdir's multi-process gating is exercised),
optionally halting after round 1 and resuming in the same process, and writes
``params_<process>.npz`` (the process's final in-memory global params) and
``info_<process>.json`` (process and device counts) into ``--out``.
With ``--num_processes=1`` it is the single-process reference.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def tiny_federated_config(rounds: int, aggregator: str):
  """The config every process (and the single-process reference) runs."""
  from tests.helpers import tiny_config  # pylint: disable=g-import-not-at-top
  return tiny_config(**{
      'method': 'federated', 'optimizer.name': 'sgd', 'optimizer.learning_rate': 0.05,
      'fl.executor': 'sharded', 'fl.rounds': rounds, 'aggregator.name': aggregator,
      'data.samples_per_person': 24})


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--coordinator', default='')
  parser.add_argument('--num_processes', type=int, default=1)
  parser.add_argument('--process_id', type=int, default=0)
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--out', required=True)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--aggregator', default='mean')
  parser.add_argument('--halt_first', action='store_true',
                      help='Stop after round 1 as if interrupted, then resume.')
  args = parser.parse_args()

  from privateyes_jax import distributed  # pylint: disable=g-import-not-at-top
  group = distributed.initialize(args.coordinator or None, args.num_processes,
                                 args.process_id, initialization_timeout_s=120)

  import jax  # pylint: disable=g-import-not-at-top
  from jax.flatten_util import ravel_pytree  # pylint: disable=g-import-not-at-top
  from privateyes_jax import runner  # pylint: disable=g-import-not-at-top
  from privateyes_jax.federated import engine  # pylint: disable=g-import-not-at-top

  captured = {}
  original_train = engine.train

  def capturing_train(*a, **k):
    result = original_train(*a, **k)
    captured.update(result)
    return result

  engine.train = capturing_train  # runner looks engine.train up at call time.
  config = tiny_federated_config(args.rounds, args.aggregator)
  if args.halt_first:
    halted = runner.train_and_evaluate(config, args.workdir, halt_after=1)
    assert halted.get('halted_at_step') == 1, halted
  summary = runner.train_and_evaluate(config, args.workdir)

  os.makedirs(args.out, exist_ok=True)
  flat = np.asarray(ravel_pytree(jax.device_get(captured['params']))[0])
  pid = jax.process_index()
  np.savez(os.path.join(args.out, f'params_{pid}.npz'), params=flat)
  info = {'process_index': pid, 'process_count': jax.process_count(),
          'device_count': jax.device_count(), 'local_device_count': jax.local_device_count(),
          'executor': summary.get('executor'), 'rounds': summary.get('rounds'),
          'group_process_id': group.process_id, 'is_primary': distributed.is_primary()}
  with open(os.path.join(args.out, f'info_{pid}.json'), 'w') as f:
    json.dump(info, f)
  distributed.barrier('worker_done')  # Nobody tears the runtime down while others work.


if __name__ == '__main__':
  main()
