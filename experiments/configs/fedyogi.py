r"""FedYogi (Reddi et al., ICLR 2021): server Yogi on the pseudo-gradient.

  python -m experiments.train --config=experiments/configs/fedyogi.py --workdir=/tmp/fedyogi
"""

from experiments.configs import fedavg


def get_config(arg: str | None = None):
  c = fedavg.get_config(arg)
  c.fl.server_optimizer = 'fedyogi'
  c.fl.server_lr = 1e-2
  c.fl.server_tau = 1e-3
  return c
