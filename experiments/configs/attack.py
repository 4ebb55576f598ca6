r"""DualView attack configs: ``attack.py:demo`` (default, CPU minutes), ``:full`` (GPU), ``:tiny``.

  python -m experiments.attack --config=experiments/configs/attack.py:full \
      --run=runs/demo/fedavg --run=runs/demo/privateyes --workdir=runs/demo/attack

Fields are documented in privateyes_jax/attacks/pipeline.py (`default_config`), the
prior's in gan_prior.py and the inversion's in dualview.py; override any of them
with ``--config.attack.steps=100`` and the like.

The prior's images are ``prior.data``, a data config like a run's (default: 60 synthetic
people from index 100, rendered like the target's). To train it on other people of your
own study (never the run's training or held-out people: refused), or another dataset:

  python -m experiments.attack --run=runs/study/fedavg --workdir=runs/study/attack \
      --config.prior.data.name=own_study --config.prior.data.source=tfds \
      --config.prior.data.manual_dir=/data/study --config.prior.data.label_kind=screen \
      --config.prior.data.people="('p08', 'p09')"

(``name=mpiigaze_h5 --config.prior.data.manual_dir=/data/h5`` for the MPIIGaze HDF5 file, and so
on; docs/DATASETS.md lists the datasets and their fields.)
"""

from privateyes_jax.attacks import pipeline


def get_config(arg: str | None = None):
  return pipeline.default_config(arg or 'demo')
