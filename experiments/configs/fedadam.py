r"""FedAdam (Reddi et al., ICLR 2021): server Adam on the pseudo-gradient.

  python -m experiments.train --config=experiments/configs/fedadam.py --workdir=/tmp/fedadam
"""

from experiments.configs import fedavg


def get_config(arg: str | None = None):
  c = fedavg.get_config(arg)
  c.fl.server_optimizer = 'fedadam'
  c.fl.server_lr = 1e-2
  c.fl.server_tau = 1e-3
  return c
