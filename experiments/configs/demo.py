r"""The demo's centralized run (./run.sh): sized to finish in about a minute on 2 CPU cores.

  python -m experiments.train --config=experiments/configs/demo.py --workdir=runs/demo/centralized
"""

from experiments.configs import default


def get_config(arg: str | None = None):
  c = default.get_config(arg)
  c.method = 'centralized'
  c.train.steps = 500
  c.train.eval_every = 100
  return c
