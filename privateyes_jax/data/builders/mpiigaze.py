"""MPIIGaze (Zhang et al., CVPR 2015 / TPAMI 2019): normalised 36x60 eye images.

On disk (the released ``MPIIGaze.tar.gz``, extracted; ``data.manual_dir`` is its root)::

  Data/Normalized/pXX/dayYY.mat          one MATLAB v5 file per person and day
  Evaluation Subset/sample list for eye image/pXX.txt

Each ``dayYY.mat`` holds ``filenames`` (a cell array of image names such as
``'0001.jpg'``) and a struct ``data`` with ``data.left`` and ``data.right``, each with
``image`` ``[N, 36, 60]`` uint8 (the normalised grayscale eye),
``gaze`` ``[N, 3]`` (unit gaze direction in the normalised camera) and ``pose``
``[N, 3]`` (head rotation as a Rodrigues vector). A day with one sample stores the
arrays without the leading axis.

The evaluation subset lists 3000 samples per person, one per line, e.g.
``day08/0069.jpg left``: 1500 left and 1500 right eyes. Right eyes are mirrored
horizontally so that every sample looks like a left eye, which negates the yaw of
the gaze and of the head pose (the protocol of the MPIIGaze papers; the same as
hysts/pytorch_mpiigaze's ``tools/preprocess_mpiigaze.py``).

Labels: gaze ``(pitch, yaw) = (arcsin(-y), arctan2(-x, -z))`` of the gaze vector;
head pose from the rotation's z axis (`common.head_rotations_to_pitchyaw`).
"""

from __future__ import annotations

import collections
import dataclasses
import os

import numpy as np

from privateyes_jax.data.builders import common

DatasetError = common.DatasetError

NORMALIZED_DIR = os.path.join('Data', 'Normalized')
EVALUATION_LIST_DIR = os.path.join('Evaluation Subset', 'sample list for eye image')
EYE_HEIGHT, EYE_WIDTH = 36, 60
SIDES = ('left', 'right')


@dataclasses.dataclass(frozen=True)
class ListEntry:
  line: int  # 1-based line number in the list file.
  day: str  # 'day08'
  filename: str  # '0069.jpg'
  side: str  # 'left' or 'right'

  @property
  def sample_id(self) -> str:
    return f'{self.day}/{self.filename} {self.side}'


@dataclasses.dataclass(frozen=True)
class PersonPlan:
  person: str
  list_path: str
  person_dir: str
  entries: tuple[ListEntry, ...]


def parse_evaluation_list(path: str) -> list[ListEntry]:
  """Parses ``pXX.txt`` of the evaluation subset (``dayYY/NNNN.jpg left|right`` per line)."""
  entries = []
  try:
    with open(path) as f:
      lines = f.read().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise DatasetError(f'{path}: cannot read the evaluation list ({e}).') from e
  for number, raw in enumerate(lines, start=1):
    text = raw.strip()
    if not text:
      continue
    parts = text.split()
    if len(parts) != 2 or parts[1] not in SIDES or parts[0].count('/') != 1:
      raise DatasetError(f'{path}:{number}: expected "dayYY/NNNN.jpg left|right", got {raw!r}.')
    day, filename = parts[0].split('/')
    entries.append(ListEntry(number, day, filename, parts[1]))
  return entries


def plan(manual_dir: str, params: common.BuildParams) -> dict[str, list[PersonPlan]]:
  list_dir = os.path.join(manual_dir, EVALUATION_LIST_DIR)
  normalized_dir = os.path.join(manual_dir, NORMALIZED_DIR)
  for path in (list_dir, normalized_dir):
    if not os.path.isdir(path):
      raise DatasetError(f'{path}: folder not found; data.manual_dir must be the MPIIGaze '
                         'root holding "Data/Normalized" and "Evaluation Subset".')
  listed = [f[:-4] for f in os.listdir(list_dir) if f.endswith('.txt')]
  people = common.select_people(listed, params, common.MPII_PEOPLE, list_dir)
  plans = []
  for person in people:
    list_path = os.path.join(list_dir, f'{person}.txt')
    person_dir = os.path.join(normalized_dir, person)
    if not os.path.isdir(person_dir):
      raise DatasetError(f'{person_dir}: person folder missing (listed in {list_path}).')
    entries = parse_evaluation_list(list_path)
    common.check_count(len(entries), params, list_path, person)
    for entry in entries:
      mat_path = os.path.join(person_dir, f'{entry.day}.mat')
      if not os.path.isfile(mat_path):
        raise DatasetError(f'{mat_path}: file not found (needed by {list_path}:{entry.line}).')
    plans.append(PersonPlan(person, list_path, person_dir, tuple(entries)))
  return {'train': plans}


def read_day(mat_path: str) -> tuple[dict[str, int], dict[str, dict[str, np.ndarray]]]:
  """One ``dayYY.mat``: ``({filename: row}, {side: {'image', 'gaze', 'pose'}})``."""
  mat = common.load_mat_v5(mat_path)
  if 'filenames' not in mat or 'data' not in mat:
    raise DatasetError(f'{mat_path}: expected variables "filenames" and "data", found '
                       f'{sorted(k for k in mat if not k.startswith("__"))}.')
  filenames = [str(f) for f in np.atleast_1d(mat['filenames']).ravel()]
  n = len(filenames)
  sides = {}
  for side in SIDES:
    eye = getattr(mat['data'], side, None)
    arrays = {}
    for field, shape in (('image', (EYE_HEIGHT, EYE_WIDTH)), ('gaze', (3,)), ('pose', (3,))):
      value = getattr(eye, field, None) if eye is not None else None
      if value is None:
        raise DatasetError(f'{mat_path}: data.{side}.{field} is missing.')
      value = np.asarray(value)
      if value.size != n * int(np.prod(shape)):
        raise DatasetError(f'{mat_path}: data.{side}.{field} has shape {value.shape}, expected '
                           f'{(n,) + shape} for {n} filenames.')
      arrays[field] = value.reshape((n,) + shape)
    sides[side] = arrays
  return {f: i for i, f in enumerate(filenames)}, sides


def generate(plans: list[PersonPlan], params: common.BuildParams):
  for person_plan in plans:
    by_day = collections.defaultdict(list)
    for index, entry in enumerate(person_plan.entries):
      by_day[entry.day].append((index, entry))
    for day in sorted(by_day):  # One day's file in memory at a time.
      mat_path = os.path.join(person_plan.person_dir, f'{day}.mat')
      rows, sides = read_day(mat_path)
      for index, entry in by_day[day]:
        if entry.filename not in rows:
          raise DatasetError(f'{mat_path}: no sample {entry.filename!r} (listed in '
                             f'{person_plan.list_path}:{entry.line}).')
        row = rows[entry.filename]
        eye = sides[entry.side]
        where = f'{mat_path} (data.{entry.side}, {entry.filename})'
        image = common.to_uint8(eye['image'][row], where, params.image_value_range)
        gaze = common.gaze_vectors_to_pitchyaw(eye['gaze'][row:row + 1], where)
        head = common.head_rotations_to_pitchyaw(
            common.rotation_vectors_to_matrices(eye['pose'][row:row + 1]), where)
        if entry.side == 'right':  # Mirror right eyes to look like left eyes.
          image = image[:, ::-1]
          gaze, head = common.mirror_pitchyaw(gaze), common.mirror_pitchyaw(head)
        yield f'{person_plan.person}/{index:05d}', common.example(
            person_plan.person, common.resize_image(image, params.image_shape), gaze[0],
            head[0], entry.sample_id, index)


MPIIGAZE = common.DatasetFormat(
    name='mpiigaze',
    label_kind='gaze',
    description='MPIIGaze normalised eye images, evaluation subset (right eyes mirrored).',
    instructions=('the extracted MPIIGaze archive: a folder holding "Data/Normalized/pXX/'
                  'dayYY.mat" and "Evaluation Subset/sample list for eye image/pXX.txt".'),
    citation=('@article{zhang19_pami, author={Zhang, Xucong and Sugano, Yusuke and Fritz, '
              'Mario and Bulling, Andreas}, title={MPIIGaze: Real-World Dataset and Deep '
              'Appearance-Based Gaze Estimation}, journal={IEEE TPAMI}, volume={41}, number={1}, '
              'pages={162--175}, year={2019}}'),
    default_image_shape=(EYE_HEIGHT, EYE_WIDTH, 1),
    default_samples_per_person=common.MPII_SAMPLES_PER_PERSON,
    splits=('train',),
    default_read_splits=('train',),
    plan=plan,
    generate=generate,
)
