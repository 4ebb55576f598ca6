"""How easy a dataset's people are to tell apart from coarse image layout (issue #14, item 3).

The statistic: per image, a 4x4 grid of block means (16 numbers), brightness-normalised
(minus their mean, divided by their standard deviation), so that only the coarse layout
of dark and bright regions remains. Each person's images are split in half; the
centroid of each person's first half is their template, and every image of the other
half is assigned to the nearest template (Euclidean). The per-image accuracy is then
compared with chance, ``1 / num_people``. The same rule applied to the mean feature of
8 images of the held-out half shows how quickly averaging reveals who is who.

It is a deliberately weak rule: it measures how much identity the *coarse* image
layout carries, which is what a blurred or low-resolution reconstruction can reveal.
For reference (the review of issue #14): real multi-view lab eye crops score 0.375
among 10 people (chance 0.10); the synthetic renderer's ``'easy'`` people scored 0.84
among 15.

>>> ds = synthetic.make_dataset(10, 200, seed=1)  # doctest: +SKIP
>>> identity_difficulty.nearest_centroid(ds).accuracy  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from privateyes_jax.data import base

GRID = (4, 4)
GROUP_SIZE = 8  # Images averaged for the "mean of 8" accuracy.


def block_features(images: np.ndarray, grid: tuple[int, int] = GRID) -> np.ndarray:
  """``[N, H, W, C]`` images -> ``[N, gh * gw]`` brightness-normalised block means.

  Channels are averaged to grey. Block edges are ``round(linspace(0, H, gh + 1))``, so
  sizes that the grid does not divide still give ``gh * gw`` blocks covering the image.
  Each image's block means are centred and divided by their standard deviation (a flat
  image maps to zeros).
  """
  x = np.asarray(images, np.float64)
  if x.ndim == 4:
    x = x.mean(-1)
  if x.ndim != 3:
    raise ValueError(f'images must be [N, H, W] or [N, H, W, C], got shape {images.shape}.')
  gh, gw = grid
  h, w = x.shape[1:]
  if h < gh or w < gw:
    raise ValueError(f'Images of {h}x{w} are smaller than the {gh}x{gw} grid.')
  rows = np.round(np.linspace(0, h, gh + 1)).astype(int)
  cols = np.round(np.linspace(0, w, gw + 1)).astype(int)
  feats = np.stack([x[:, rows[i]:rows[i + 1], cols[j]:cols[j + 1]].mean(axis=(1, 2))
                    for i in range(gh) for j in range(gw)], axis=1)
  feats = feats - feats.mean(1, keepdims=True)
  std = feats.std(1, keepdims=True)
  return feats / np.where(std > 1e-12, std, 1.0)


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
  """95% Wilson score interval of a binomial proportion."""
  if trials == 0:
    return (0.0, 1.0)
  p = successes / trials
  denom = 1 + z**2 / trials
  centre = (p + z**2 / (2 * trials)) / denom
  half = z * math.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2)) / denom
  return (max(0.0, centre - half), min(1.0, centre + half))


@dataclasses.dataclass(frozen=True)
class Difficulty:
  """The nearest-centroid statistic of one dataset.

  Attributes:
    num_people: people compared (chance is ``1 / num_people``).
    num_test_images: held-out images classified (the second halves).
    accuracy: fraction of held-out single images assigned to their own person.
    interval: 95% Wilson interval of ``accuracy`` over images. Images of one person
      are not independent, so ``person_interval`` is the more honest of the two.
    person_interval: 95% bootstrap interval (over people) of the mean per-person
      accuracy.
    per_person: ``[num_people]`` accuracy per person.
    mean8_accuracy: the same rule on means of ``GROUP_SIZE`` held-out images
      (``nan`` when no person has that many held-out images).
    num_groups: how many such means were classified.
  """
  num_people: int
  num_test_images: int
  accuracy: float
  interval: tuple[float, float]
  person_interval: tuple[float, float]
  per_person: np.ndarray
  mean8_accuracy: float
  num_groups: int

  @property
  def chance(self) -> float:
    return 1.0 / self.num_people

  def describe(self, name: str = '') -> str:
    head = f'{name}: ' if name else ''
    mean8 = ('n/a' if math.isnan(self.mean8_accuracy)
             else f'{self.mean8_accuracy:.3f} ({self.num_groups} means)')
    return (f'{head}{self.num_people} people, nearest-centroid accuracy '
            f'{self.accuracy:.3f} (95% CI {self.interval[0]:.3f}-{self.interval[1]:.3f} over '
            f'{self.num_test_images} images; {self.person_interval[0]:.3f}-'
            f'{self.person_interval[1]:.3f} over people), chance {self.chance:.3f}; '
            f'mean of {GROUP_SIZE} images: {mean8}')


def nearest_centroid(people, split: str = 'random', seed: int = 0,
                     grid: tuple[int, int] = GRID, bootstrap: int = 2000) -> Difficulty:
  """The split-half nearest-centroid statistic of ``people`` (see the module docstring).

  Args:
    people: a `base.GazeDataset` or a sequence of `base.PersonData`.
    split: ``'random'`` (a seeded permutation of each person's images, halved) or
      ``'ordered'`` (first half vs second half in the dataset's order, e.g. earlier
      vs later sessions: harder on real data recorded over days).
    seed: the split's and the bootstrap's seed.
    grid: block grid (rows, columns).
    bootstrap: resamples of people for ``person_interval``.

  Raises:
    ValueError: fewer than 2 people, or a person with fewer than 2 images.
  """
  people = list(people.people if isinstance(people, base.GazeDataset) else people)
  if len(people) < 2:
    raise ValueError(f'Telling people apart needs at least 2 people, got {len(people)}.')
  if split not in ('random', 'ordered'):
    raise ValueError(f'split must be "random" or "ordered", got {split!r}.')
  rng = np.random.default_rng(seed)
  centroids, tests = [], []
  for p in people:
    n = p.num_samples
    if n < 2:
      raise ValueError(f'Person {p.person} has {n} image(s); the split-half rule needs >= 2.')
    order = rng.permutation(n) if split == 'random' else np.arange(n)
    feats = block_features(p.images[order], grid)
    half = n // 2
    centroids.append(feats[:half].mean(0))
    tests.append(feats[half:])
  centroids = np.stack(centroids)

  def assign(x):  # [M, 16] -> nearest person index.
    d = ((x[:, None, :] - centroids[None]) ** 2).sum(-1)
    return d.argmin(1)

  per_person = np.array([np.mean(assign(t) == i) for i, t in enumerate(tests)])
  correct = int(sum(np.sum(assign(t) == i) for i, t in enumerate(tests)))
  total = int(sum(len(t) for t in tests))
  group_hits, groups = 0, 0
  for i, t in enumerate(tests):
    g = len(t) // GROUP_SIZE
    if g:
      means = t[:g * GROUP_SIZE].reshape(g, GROUP_SIZE, -1).mean(1)
      group_hits += int(np.sum(assign(means) == i))
      groups += g
  boot = per_person[rng.integers(0, len(people), (bootstrap, len(people)))].mean(1)
  return Difficulty(
      num_people=len(people), num_test_images=total, accuracy=correct / total,
      interval=wilson_interval(correct, total),
      person_interval=(float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))),
      per_person=per_person,
      mean8_accuracy=group_hits / groups if groups else float('nan'), num_groups=groups)


PEOPLE = ('all', 'train', 'test')


def measure(data_config, people: str = 'all', max_people: int = 0, split: str = 'random',
            seed: int = 0) -> Difficulty:
  """`nearest_centroid` on the dataset a run's ``data_config`` loads.

  Args:
    data_config: a run's ``config.data`` (any dataset `privateyes_jax.data` loads).
    people: ``'all'`` the dataset's people; ``'train'`` / ``'test'`` the run's training
      (federation) or held-out people under ``data_config.protocol``.
    max_people: keep only the first this many of them (0: all).
    split, seed: see `nearest_centroid`.
  """
  from privateyes_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  if people not in PEOPLE:
    raise ValueError(f'people must be one of {PEOPLE}, got {people!r}.')
  dataset = data_lib.load_dataset(data_config)
  if people != 'all':
    train, test = data_lib.split_people(dataset, data_config)
    dataset = train if people == 'train' else test
  if max_people:
    dataset = dataset.select(range(min(max_people, len(dataset.people))))
  return nearest_centroid(dataset, split=split, seed=seed)
