r"""A hyperparameter sweep: a base experiment config plus ``sweep.grid``.

  python -m experiments.sweep --config=experiments/configs/sweep.py --workdir=/tmp/sweep
  python -m experiments.sweep --config=experiments/configs/sweep.py:fedadam,tiny \
      --workdir=/tmp/sweep --config.sweep.grid='fl.server_lr=0.003,0.01,0.03;seed=0,1'

The argument names the base config (any of experiments/configs/*.py, default
``fedavg``) and optionally its preset (``tiny``). ``sweep.grid`` is the Cartesian
product of ``field=values`` items separated by ``;``; values are a comma list,
``logspace(lo,hi,n)``, ``linspace(lo,hi,n)`` or ``range(n)`` (privateyes_jax/sweeps/spec.py).
Runs differing only in seeds, learning rates, momenta, clipping norms and FedAdam/FedYogi τ
train together as one program; other fields (e.g. ``fl.local_steps=1,5``) split the
sweep into groups trained one after another. ``sweep.py:privateyes`` sweeps PrivatEyes
runs (each run's secure aggregation as its single run's).
"""

import importlib

_BASES = ('fedavg', 'fedavgm', 'fedadam', 'fedyogi', 'privateyes', 'default', 'demo')


def get_config(arg: str | None = None):
  parts = [p for p in (arg or '').split(',') if p]
  base, preset = 'fedavg', None
  for part in parts:
    if part == 'tiny':
      preset = 'tiny'
    elif part in _BASES:
      base = part
    else:
      raise ValueError(f'Unknown sweep argument {part!r}; give a base config '
                       f'({", ".join(_BASES)}) and/or "tiny", e.g. sweep.py:fedadam,tiny.')
  module = importlib.import_module(f'experiments.configs.{base}')
  if base == 'demo':
    c = module.get_config('fedavg')
    if preset:
      from experiments.configs import default  # pylint: disable=g-import-not-at-top
      default.apply_tiny(c)
  else:
    c = module.get_config(preset)
  if base == 'default':
    c.method = 'federated'
    c.optimizer.name = 'sgd'
    c.optimizer.learning_rate = 0.05
  if c.data.num_val_people < 1:
    # Sweeps rank and choose on validation people, never on the test people.
    c.data.num_val_people = 1
  c.sweep = _sweep_section()
  return c


def _sweep_section():
  import ml_collections  # pylint: disable=g-import-not-at-top
  s = ml_collections.ConfigDict()
  # 4 client learning rates x 2 seeds = 8 runs, one compiled program.
  s.grid = 'optimizer.learning_rate=0.01,0.02,0.05,0.1;seed=0,1'
  s.max_runs_per_program = 0  # Runs per compiled program (bounds memory); 0 = all of a group.
  return s
