r"""FedAvgM (Hsu et al., 2019): server SGD with momentum on the pseudo-gradient.

  python -m experiments.train --config=experiments/configs/fedavgm.py --workdir=/tmp/fedavgm
"""

from experiments.configs import fedavg


def get_config(arg: str | None = None):
  c = fedavg.get_config(arg)
  c.fl.server_optimizer = 'fedavgm'
  c.fl.server_lr = 1.0
  c.fl.server_momentum = 0.9
  return c
