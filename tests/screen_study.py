"""A synthetic screen-target study: eye patches whose pupil shows where on a screen a
person looks, with targets in millimetres (hundreds of units), like issue #17's lab study.

Each person has their own eye position, pupil size, brightness and screen region; the
target is where they look, ``x`` in [-260, 260] mm (left to right of the camera) and
``y`` in [20, 340] mm below it. A model has to read the pupil position to beat the mean
predictor.

  python -m tests.screen_study /tmp/screen_study 10 400   # writes the own_study layout
"""

from __future__ import annotations

import os
import sys

import numpy as np

from privateyes_jax.data import base

HEIGHT, WIDTH = 36, 60


def _render(rng, targets: np.ndarray, person: dict) -> np.ndarray:
  n = len(targets)
  yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
  cx = WIDTH / 2 + person['dx'] + targets[:, 0] / 260.0 * 15.0
  cy = HEIGHT / 2 + person['dy'] + (targets[:, 1] - 180.0) / 160.0 * 7.0
  d2 = (xx[None] - cx[:, None, None]) ** 2 + (yy[None] - cy[:, None, None]) ** 2
  sclera = (((xx - WIDTH / 2 - person['dx']) / 26.0) ** 2
            + ((yy - HEIGHT / 2 - person['dy']) / 12.0) ** 2) < 1.0
  image = np.full((n, HEIGHT, WIDTH), person['skin'], np.float32)
  image = np.where(sclera[None], 225.0, image)
  image = np.where(d2 < person['iris'] ** 2, person['iris_level'], image)
  image = np.where(d2 < (0.45 * person['iris']) ** 2, 20.0, image)
  image += rng.normal(0.0, 6.0, image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)[..., None]


def make_study(num_people: int = 8, samples_per_person: int = 96,
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
        person=f'p{i:02d}', images=_render(rng, targets, person), labels=targets,
        head_pose=np.zeros((samples_per_person, 2), np.float32),
        sample_id=np.array([f'img_{j:04d}.png' for j in range(samples_per_person)])))
  return base.GazeDataset('screen_study', tuple(people), label_kind='screen')


def write_own_study(root: str, dataset: base.GazeDataset) -> None:
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


if __name__ == '__main__':
  write_own_study(sys.argv[1], make_study(int(sys.argv[2]), int(sys.argv[3])))
