"""The per-person dataset interface that every data source is served through.

Federated gaze estimation is organised by person: each person is one client. A
`GazeDataset` is therefore a tuple of `PersonData`, one per person, each holding
that person's images and labels as host NumPy arrays. The synthetic renderer, the
TFDS builders of the public datasets and a lab's own study all end up here, so the
training code never needs to know where the data came from.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

LABEL_KINDS = ('gaze', 'screen')


class DatasetError(ValueError):
  """A dataset is missing, malformed or inconsistent; the message names the problem."""


@dataclasses.dataclass(frozen=True)
class PersonData:
  """All samples of one person.

  Attributes:
    person: the person's name in the dataset (e.g. ``'p00'``).
    images: ``[samples, height, width, channels]`` uint8.
    labels: ``[samples, 2]`` float32: (pitch, yaw) radians for gaze datasets, or a
      2-D on-screen target for screen datasets.
    head_pose: ``[samples, 2]`` float32 (pitch, yaw) radians; zeros if unknown.
    sample_id: ``[samples]`` the dataset's own sample identifiers (str or int).
  """
  person: str
  images: np.ndarray
  labels: np.ndarray
  head_pose: np.ndarray
  sample_id: np.ndarray

  def __post_init__(self):
    n = len(self.images)
    if self.images.ndim != 4 or self.images.dtype != np.uint8:
      raise DatasetError(
          f'Person {self.person}: images must be uint8 [N, H, W, C], got '
          f'{self.images.dtype} {self.images.shape}.')
    for field in ('labels', 'head_pose'):
      arr = getattr(self, field)
      if arr.shape != (n, 2):
        raise DatasetError(
            f'Person {self.person}: {field} must have shape ({n}, 2), got {arr.shape}.')
      if not np.all(np.isfinite(arr)):
        raise DatasetError(f'Person {self.person}: {field} contains NaN or inf.')
    if len(self.sample_id) != n:
      raise DatasetError(
          f'Person {self.person}: {len(self.sample_id)} sample ids for {n} images.')

  @property
  def num_samples(self) -> int:
    return len(self.images)


@dataclasses.dataclass(frozen=True)
class GazeDataset:
  """A dataset as a tuple of people. ``label_kind`` is ``'gaze'`` or ``'screen'``."""
  name: str
  people: tuple[PersonData, ...]
  label_kind: str = 'gaze'

  def __post_init__(self):
    if self.label_kind not in LABEL_KINDS:
      raise DatasetError(f'label_kind must be one of {LABEL_KINDS}, got {self.label_kind!r}.')
    if not self.people:
      raise DatasetError(f'Dataset {self.name!r} has no people.')
    shapes = {p.images.shape[1:] for p in self.people}
    if len(shapes) != 1:
      raise DatasetError(f'Dataset {self.name!r}: people have different image shapes {shapes}.')
    names = [p.person for p in self.people]
    if len(set(names)) != len(names):
      raise DatasetError(f'Dataset {self.name!r}: duplicate person names.')

  @property
  def image_shape(self) -> tuple[int, ...]:
    return self.people[0].images.shape[1:]

  @property
  def person_names(self) -> list[str]:
    return [p.person for p in self.people]

  def select(self, indices: Sequence[int]) -> 'GazeDataset':
    return dataclasses.replace(self, people=tuple(self.people[i] for i in indices))


def pool(people: Sequence[PersonData]) -> dict[str, np.ndarray]:
  """Concatenates people into one pool (the centralized baseline's training set).

  Returns a dict with ``images``, ``labels``, ``head_pose`` and ``person_index``
  (position of the sample's person in ``people``).
  """
  return {
      'images': np.concatenate([p.images for p in people]),
      'labels': np.concatenate([p.labels for p in people]).astype(np.float32),
      'head_pose': np.concatenate([p.head_pose for p in people]).astype(np.float32),
      'person_index': np.concatenate(
          [np.full(p.num_samples, i, np.int32) for i, p in enumerate(people)]),
  }
