r"""PrivatEyes: FedAvg whose aggregation runs as actively secure 3-server MPC (SPDZ2k-style).

  python -m experiments.train --config=experiments/configs/privateyes.py --workdir=/tmp/pe

``--config.aggregator.name=privateyes_semi_honest`` drops the MACs (semi-honest
servers); ``--config.fl.server_optimizer=fedadam`` etc. combine it with adaptive FL;
``--config.aggregator.adversary.kind=add_error`` makes server 0 cheat (the round aborts).
"""

from experiments.configs import fedavg


def get_config(arg: str | None = None):
  c = fedavg.get_config(arg)
  c.aggregator.name = 'privateyes'
  return c
