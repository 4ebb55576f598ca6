"""A lab's own study: one folder per person with images and a CSV of labels.

``data.manual_dir`` holds one folder per person (the folder name is the person's
name; hidden folders are ignored). Each person folder holds the images (PNG, JPEG,
BMP or anything Pillow reads, any size) and ``labels.csv`` (``data.labels_file``)
with a header row and one row per image:

  ``image``                  the image's path relative to the person folder (required)
  ``pitch``, ``yaw``         gaze in radians, MPII convention (pitch > 0 looks up,
                             yaw > 0 looks towards the image's left), or
  ``x``, ``y``               a 2-D screen target in any unit (the error is reported in it)
  ``head_pitch``, ``head_yaw``  optional head pose in radians, same convention

Images are converted to ``data.image_size`` (default 36x60) and ``data.channels``
(default 1, grayscale; 3 for RGB), the input of the configured model. A study uses
either gaze or screen labels for everybody: ``data.label_kind`` is ``'gaze'``
(default) or ``'screen'``.
See docs/DATASETS.md ("Your own study").
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os

import numpy as np

from privateyes_jax.data.builders import common

DatasetError = common.DatasetError

LABEL_COLUMNS = {'gaze': ('pitch', 'yaw'), 'screen': ('x', 'y')}
HEAD_COLUMNS = ('head_pitch', 'head_yaw')
DEFAULT_LABELS_FILE = 'labels.csv'


@dataclasses.dataclass(frozen=True)
class PersonPlan:
  person: str
  person_dir: str
  labels_path: str
  images: tuple[str, ...]
  labels: np.ndarray  # [N, 2]
  head_pose: np.ndarray  # [N, 2]


def _float(value: str, path: str, line: int, column: str) -> float:
  try:
    return float(value)
  except (TypeError, ValueError) as e:
    raise DatasetError(f'{path}:{line}: column {column!r} must be a number, got {value!r}.') from e


def read_labels(path: str, label_kind: str) -> tuple[list[str], np.ndarray, np.ndarray]:
  """Parses one person's CSV: ``(image paths, labels [N, 2], head pose [N, 2])``.

  The label columns must be those of ``label_kind`` (the label kind of the dataset
  is fixed before reading, so that every person of a study uses the same kind).
  """
  try:
    with open(path, newline='', encoding='utf-8-sig') as f:  # Excel writes a BOM.
      rows = list(csv.reader(f))
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise DatasetError(f'{path}: cannot read the CSV ({e}).') from e
  if not rows:
    raise DatasetError(f'{path}: empty; expected a header row such as "image,pitch,yaw".')
  header = [h.strip().lower() for h in rows[0]]
  kinds = [k for k, cols in LABEL_COLUMNS.items() if all(c in header for c in cols)]
  if 'image' not in header or len(kinds) != 1:
    raise DatasetError(f'{path}: header {rows[0]} must have "image" and either "pitch,yaw" '
                       '(gaze, radians) or "x,y" (screen target).')
  kind = kinds[0]
  if kind != label_kind:
    raise DatasetError(f'{path}: has {kind} labels ({", ".join(LABEL_COLUMNS[kind])}) but '
                       f'data.label_kind is {label_kind!r}; set data.label_kind={kind!r}.')
  has_head = [c in header for c in HEAD_COLUMNS]
  if any(has_head) and not all(has_head):
    raise DatasetError(f'{path}: give both head_pitch and head_yaw, or neither.')
  col = {name: header.index(name) for name in header}
  images, labels, heads, lines = [], [], [], []
  for line, row in enumerate(rows[1:], start=2):
    if not any(cell.strip() for cell in row):
      continue
    if len(row) != len(header):
      raise DatasetError(f'{path}:{line}: {len(row)} values for {len(header)} columns.')
    lines.append(f'line {line}')
    images.append(row[col['image']].strip())
    labels.append([_float(row[col[c]], path, line, c) for c in LABEL_COLUMNS[kind]])
    heads.append([_float(row[col[c]], path, line, c) for c in HEAD_COLUMNS] if all(has_head)
                 else [0.0, 0.0])
  if not images:
    raise DatasetError(f'{path}: no samples.')
  duplicates = sorted(name for name, n in collections.Counter(images).items() if n > 1)
  if duplicates:
    raise DatasetError(f'{path}: image {duplicates[0]!r} is listed more than once.')
  labels = np.array(labels, np.float64)
  labels = (common.check_gaze(labels, path, lines) if kind == 'gaze'
            else common.check_screen(labels, path, sample_names=lines))
  return images, labels, common.check_head_pose(np.array(heads, np.float64), path, lines)


def plan(manual_dir: str, params: common.BuildParams) -> dict[str, list[PersonPlan]]:
  labels_file = params.option('labels_file')
  label_kind = params.option('label_kind')
  found = [d for d in os.listdir(manual_dir)
           if not d.startswith('.') and os.path.isdir(os.path.join(manual_dir, d))]
  people = common.select_people(found, params, None, manual_dir)
  plans = []
  for person in people:
    person_dir = os.path.join(manual_dir, person)
    labels_path = os.path.join(person_dir, labels_file)
    if not os.path.isfile(labels_path):
      raise DatasetError(f'{labels_path}: labels file not found (every person folder needs one).')
    images, labels, heads = read_labels(labels_path, label_kind)
    common.check_count(len(images), params, labels_path, person)
    for image in images:
      if not os.path.isfile(os.path.join(person_dir, image)):
        raise DatasetError(f'{os.path.join(person_dir, image)}: image not found (listed in '
                           f'{labels_path}).')
    plans.append(PersonPlan(person, person_dir, labels_path, tuple(images), labels, heads))
  return {'train': plans}


def generate(plans: list[PersonPlan], params: common.BuildParams):
  for plan in plans:
    for index, image_name in enumerate(plan.images):
      image = common.read_image(os.path.join(plan.person_dir, image_name),
                                params.image_value_range)
      yield f'{plan.person}/{index:06d}', common.example(
          plan.person, common.resize_image(image, params.image_shape), plan.labels[index],
          plan.head_pose[index], image_name, index)


def own_study_format(label_kind: str) -> common.DatasetFormat:
  """The own-study format with ``'gaze'`` or ``'screen'`` labels (``data.label_kind``)."""
  if label_kind not in LABEL_COLUMNS:
    raise ValueError(f'data.label_kind must be "gaze" or "screen", got {label_kind!r}.')
  return common.DatasetFormat(
      name='own_study',
      label_kind=label_kind,
      description='A lab\'s own study: per-person folders of images and labels.csv.',
      instructions=('a folder with one sub-folder per person, each holding the images and '
                    'labels.csv (columns image, pitch, yaw or x, y, optionally head_pitch, '
                    'head_yaw); see docs/DATASETS.md.'),
      citation='',
      default_image_shape=(36, 60, 1),
      default_samples_per_person=0,
      splits=('train',),
      default_read_splits=('train',),
      plan=plan,
      generate=generate,
      options=lambda c: {'labels_file': c.get('labels_file', '') or DEFAULT_LABELS_FILE,
                         'label_kind': label_kind},
  )
