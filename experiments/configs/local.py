r"""Local-only: every person trains their own model on their own data, no aggregation.

  python -m experiments.train --config=experiments/configs/local.py --workdir=/tmp/local

Same client optimizer and local-step budget per round as fedavg.py; the held-out
error is averaged over the people's models.
"""

from experiments.configs import fedavg


def get_config(arg: str | None = None):
  c = fedavg.get_config(arg)
  c.method = 'local'
  return c
