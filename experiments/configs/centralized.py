r"""Centralized baseline (all training people pooled): the accuracy reference.

  python -m experiments.train --config=experiments/configs/centralized.py --workdir=/tmp/central
"""

from experiments.configs import default


def get_config(arg: str | None = None):
  c = default.get_config(arg)
  c.method = 'centralized'
  return c
