r"""Shadow-people tuning of DualView: ``tune_attack.py:demo`` (default) or ``:tiny`` (tests).

  python -m experiments.tune_attack --workdir=runs/demo/tuning \
      --config=experiments/configs/tune_attack.py:demo

Fields are documented in privateyes_jax/attacks/tuning.py (`default_config`).
"""

from privateyes_jax.attacks import tuning


def get_config(arg: str | None = None):
  return tuning.default_config(arg or 'demo')
