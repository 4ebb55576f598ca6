r"""The poisoning experiment (issue #15): malicious clients against FedAvg and PrivatEyes.

  python -m experiments.poisoning --workdir=runs/poisoning \
      [--config=experiments/configs/poisoning.py:demo]

Presets: ``demo`` (the demo's people and recipe, fewer rounds: about 10 minutes on 2 CPU
cores; without the in-MPC validity runs, which cost minutes per round at 1.8M
parameters on the CPU), ``small`` (the demo's people, a 35k-parameter GazeNet, every
row including PrivatEyes with the validity check) and ``tiny`` (the test's wiring).
"""

import ml_collections

from experiments.configs import default
from experiments.configs import demo as demo_configs


def get_config(arg: str | None = None):
  preset = arg or 'demo'
  if preset not in ('demo', 'small', 'tiny'):
    raise ValueError(f'Unknown poisoning preset {preset!r}; available: demo, small, tiny.')
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.kinds = ('boost', 'sign_flip')
  # Two of the 15 federation clients cheat; boosting by about the number of clients is
  # model replacement's scale (Bagdasaryan et al. 2020).
  c.attackers = (0, 1)
  c.factor = 15.0
  # The norm bound is chosen on shadow people (another identity seed, never the reported
  # people): bound_margin times the largest honest update norm of a clean shadow run.
  c.shadow_data_seed = 1000
  c.bound_margin = 1.5
  c.rounds = 30
  # PrivatEyes with the validity check inside the MPC (aggregator.validity, clip_norm =
  # the same bound): its rows need the check's per-client work (docs/BENCHMARKS.md).
  c.validity_runs = preset != 'demo'
  # Training seeds (model init, batches, MPC randomness); the people and attackers stay.
  c.seeds = (0, 1, 2) if preset == 'small' else (0,)
  c.base = demo_configs.get_config('fedavg')
  c.base.record_views = ''
  c.base.fl.rounds = c.rounds
  c.base.fl.eval_every = 10
  c.base.fl.checkpoint_every = 10
  if preset == 'small':
    c.base.model.conv_features = (4, 8)
    c.base.model.hidden = 32
  if preset == 'tiny':
    c.base = default.get_config('tiny')
    c.base.method = 'federated'
    c.base.optimizer.name = 'sgd'
    c.base.optimizer.learning_rate = 0.05
    c.kinds = ('boost',)
    c.attackers = (0,)
    c.factor = 50.0
    c.base.fl.rounds = c.rounds = 2
  return c
