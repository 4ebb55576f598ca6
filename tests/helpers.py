"""Helpers shared by the test modules: tiny configs with dotted overrides, saved params,
and a synthetic screen-target study in millimetres.

The study on disk, in the own_study layout (docs/BENCHMARKS.md, issue #17)::

  python -c "from tests import helpers; helpers.write_screen_study('/tmp/study', helpers.make_screen_study(10, 400))"
"""

import os

import numpy as np

from experiments.configs import default
from privateyes_jax import workdir as workdir_lib
from privateyes_jax.data import base


def tiny_config(**overrides):
  """``default.py:tiny`` with ``{'a.b': value}`` overrides (use ``**{'fl.rounds': 2}``)."""
  config = default.get_config('tiny')
  for key, value in overrides.items():
    target = config
    *path, last = key.split('.')
    for p in path:
      target = target[p]
    assert last in target, f'tiny_config: no config field {key!r}'  # Catch typos in tests.
    target[last] = value
  return config


def final_params(workdir):
  """The params (or local-only client params) of the latest checkpoint in ``workdir``."""
  wd = workdir_lib.Workdir(str(workdir))
  latest = wd.latest_step()
  assert latest is not None, f'no checkpoint in {workdir}'
  state = wd._manager.restore(latest)  # pylint: disable=protected-access
  wd.close()
  return state.get('params', state.get('client_params'))


# A synthetic screen-target study (issue #17): eye patches whose pupil shows where on a
# screen a person looks, targets in millimetres (x in [-260, 260], y in [20, 340]).
SCREEN_HEIGHT, SCREEN_WIDTH = 36, 60


def _render_screen_eyes(rng, targets: np.ndarray, person: dict) -> np.ndarray:
  n = len(targets)
  yy, xx = np.mgrid[0:SCREEN_HEIGHT, 0:SCREEN_WIDTH].astype(np.float32)
  cx = SCREEN_WIDTH / 2 + person['dx'] + targets[:, 0] / 260.0 * 15.0
  cy = SCREEN_HEIGHT / 2 + person['dy'] + (targets[:, 1] - 180.0) / 160.0 * 7.0
  d2 = (xx[None] - cx[:, None, None]) ** 2 + (yy[None] - cy[:, None, None]) ** 2
  sclera = (((xx - SCREEN_WIDTH / 2 - person['dx']) / 26.0) ** 2
            + ((yy - SCREEN_HEIGHT / 2 - person['dy']) / 12.0) ** 2) < 1.0
  image = np.full((n, SCREEN_HEIGHT, SCREEN_WIDTH), person['skin'], np.float32)
  image = np.where(sclera[None], 225.0, image)
  image = np.where(d2 < person['iris'] ** 2, person['iris_level'], image)
  image = np.where(d2 < (0.45 * person['iris']) ** 2, 20.0, image)
  image += rng.normal(0.0, 6.0, image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)[..., None]


def make_screen_study(num_people: int = 8, samples_per_person: int = 96,
               seed: int = 0) -> base.GazeDataset:
  """A ``GazeDataset`` of screen targets in mm (``label_kind='screen'``)."""
  people = []
  for i in range(num_people):
    rng = np.random.default_rng([seed, i])
    person = dict(dx=rng.uniform(-3, 3), dy=rng.uniform(-2, 2), skin=rng.uniform(110, 190),
                  iris=rng.uniform(5.0, 7.0), iris_level=rng.uniform(50, 110))
    center = np.array([rng.uniform(-120, 120), rng.uniform(120, 240)])
    targets = center + rng.normal(0, 1, (samples_per_person, 2)) * np.array([110.0, 70.0])
    targets = np.clip(targets, [-260, 20], [260, 340]).astype(np.float32)
    people.append(base.PersonData(
        person=f'p{i:02d}', images=_render_screen_eyes(rng, targets, person), labels=targets,
        head_pose=np.zeros((samples_per_person, 2), np.float32),
        sample_id=np.array([f'img_{j:04d}.png' for j in range(samples_per_person)])))
  return base.GazeDataset('screen_study', tuple(people), label_kind='screen')


def write_screen_study(root: str, dataset: base.GazeDataset) -> None:
  """The dataset in the own_study layout (docs/DATASETS.md): PNGs and ``labels.csv``."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for p in dataset.people:
    directory = os.path.join(root, p.person)
    os.makedirs(directory, exist_ok=True)
    rows = ['image,x,y']
    for name, image, label in zip(p.sample_id, p.images, p.labels):
      Image.fromarray(image[..., 0]).save(os.path.join(directory, str(name)))
      rows.append(f'{name},{label[0]:.2f},{label[1]:.2f}')
    with open(os.path.join(directory, 'labels.csv'), 'w') as f:
      f.write('\n'.join(rows) + '\n')
