r"""DualView attack configs: ``attack.py:demo`` (default, CPU minutes), ``:full`` (GPU), ``:tiny``.

  python -m experiments.attack --config=experiments/configs/attack.py:full \
      --run=runs/demo/fedavg --run=runs/demo/privateyes --workdir=runs/demo/attack

Fields are documented in privateyes_jax/attacks/pipeline.py (`default_config`), the
prior's in gan_prior.py and the inversion's in dualview.py; override any of them
with ``--config.attack.steps=100`` and the like.
"""

from privateyes_jax.attacks import pipeline


def get_config(arg: str | None = None):
  return pipeline.default_config(arg or 'demo')
