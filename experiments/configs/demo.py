r"""The demo's runs (./run.sh), sized for about a minute or two each on 2 CPU cores.

  python -m experiments.train --config=experiments/configs/demo.py:fedavg --workdir=runs/demo/fedavg

The argument picks the method: centralized (default), fedavg, local, privateyes. All
share the data (15 federation people + 3 held out), the model (the original MPIIGaze
LeNet) and, for the federated ones, the round budget.
"""

from experiments.configs import default

METHODS = ('centralized', 'fedavg', 'local', 'privateyes')


def get_config(arg: str | None = None):
  method = arg or 'centralized'
  if method not in METHODS:
    raise ValueError(f'Unknown demo method {method!r}; available: {METHODS}.')
  c = default.get_config()
  # People as hard to tell apart from coarse layout as real eye crops (issue #14):
  # 0.34 nearest-centroid accuracy among the 15 federation people, 'easy' gives 0.84.
  c.data.difficulty = 'realistic'
  c.batch_size = 16
  if method == 'centralized':
    c.method = 'centralized'
    c.train.steps = 500
    c.train.eval_every = 100
    c.optimizer.schedule = 'cosine'
    return c
  c.method = 'local' if method == 'local' else 'federated'
  c.optimizer.name = 'momentum'  # Client optimizer; its state restarts every round.
  c.optimizer.learning_rate = 0.02
  c.optimizer.momentum = 0.9
  c.optimizer.clip_norm = 5.0
  c.fl.rounds = 60
  c.fl.local_steps = 5
  c.fl.eval_every = 10
  c.fl.checkpoint_every = 10
  c.fl.server_optimizer = 'fedavg'
  c.fl.server_lr = 1.0
  c.fl.server_schedule = 'cosine'
  if method == 'local':
    # Each person alone plateaus by round 20 (11.9 deg at 60 rounds, docs/BENCHMARKS.md);
    # evaluating 15 models is the costly part of a local-only round.
    c.fl.rounds = 20
    c.fl.eval_every = 10
  if method == 'privateyes':
    c.aggregator.name = 'privateyes'
  if method in ('fedavg', 'privateyes'):
    c.record_views = 'last'  # The DualView attack reads what the adversary saw.
  return c
