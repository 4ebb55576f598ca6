"""The widely used preprocessed HDF5 files of MPIIGaze and MPIIFaceGaze.

Written by hysts/pytorch_mpiigaze's ``tools/preprocess_mpiigaze.py`` and
``tools/preprocess_mpiifacegaze.py`` (and copies of them) from the official releases;
``data.manual_dir`` is the folder holding the file (``data.h5_file`` names it if it
is not the default).

``MPIIGaze.h5``: one group per person ``p00`` ... ``p14`` with datasets ``image``
``[3000, 36, 60]`` uint8, ``pose`` ``[3000, 2]`` and ``gaze`` ``[3000, 2]`` float32
(pitch, yaw) radians, the evaluation subset with right eyes already mirrored (image
flipped, yaw of gaze and pose negated).

``MPIIFaceGaze.h5``: per person ``pXX/image/NNNN`` (``[448, 448, 3]`` uint8, BGR
channel order, as OpenCV-based code keeps it), ``pXX/pose/NNNN`` and
``pXX/gaze/NNNN`` (``[2]`` pitch, yaw radians) for ``NNNN`` = 0000 ... 2999, copied
from the normalised release's ``Data.label`` rows 1-4.
"""

from __future__ import annotations

import dataclasses
import os

from privateyes_jax.data.builders import common

DatasetError = common.DatasetError

EYE_SHAPE = (36, 60)
FACE_SIZE = 224


@dataclasses.dataclass(frozen=True)
class H5PersonPlan:
  person: str
  path: str
  keys: tuple[str, ...]  # Per-sample dataset names (face file); empty for the eye file.


def _h5_path(manual_dir: str, params: common.BuildParams) -> str:
  return os.path.join(manual_dir, params.option('h5_file'))


def _people(f, path: str, params: common.BuildParams) -> list[str]:
  found = [k for k in f.keys() if k.startswith('p')]
  return common.select_people(found, params, common.MPII_PEOPLE, path)


def plan_eye(manual_dir: str, params: common.BuildParams) -> dict[str, list[H5PersonPlan]]:
  path = _h5_path(manual_dir, params)
  plans = []
  with common.open_hdf5(path) as f:
    for person in _people(f, path, params):
      sizes = {}
      for key, shape in (('image', EYE_SHAPE), ('pose', (2,)), ('gaze', (2,))):
        name = f'{person}/{key}'
        if name not in f:
          raise DatasetError(f'{path}: no dataset {name!r}.')
        if tuple(f[name].shape[1:]) != shape:
          raise DatasetError(f'{path}: {name} has shape {f[name].shape}, expected '
                             f'[samples, {", ".join(map(str, shape))}].')
        sizes[key] = f[name].shape[0]
      if len(set(sizes.values())) != 1:
        raise DatasetError(f'{path}: {person} has different sample counts {sizes}.')
      common.check_count(sizes['image'], params, path, person)
      plans.append(H5PersonPlan(person, path, ()))
  return {'train': plans}


def generate_eye(plans: list[H5PersonPlan], params: common.BuildParams):
  for plan in plans:
    with common.open_hdf5(plan.path) as f:
      where = f'{plan.path} ({plan.person})'
      images = common.to_uint8(common.read_hdf5(f, f'{plan.person}/image', plan.path), where,
                               params.image_value_range, stacked=True)
      gaze = common.check_gaze(common.read_hdf5(f, f'{plan.person}/gaze', plan.path),
                               f'{where}/gaze')
      head = common.check_head_pose(common.read_hdf5(f, f'{plan.person}/pose', plan.path),
                                    f'{where}/pose')
    for i, image in enumerate(images):
      yield f'{plan.person}/{i:05d}', common.example(
          plan.person, common.resize_image(image, params.image_shape), gaze[i], head[i],
          f'{i:04d}', i)


def plan_face(manual_dir: str, params: common.BuildParams) -> dict[str, list[H5PersonPlan]]:
  path = _h5_path(manual_dir, params)
  plans = []
  with common.open_hdf5(path) as f:
    for person in _people(f, path, params):
      keys = {}
      for group in ('image', 'pose', 'gaze'):
        name = f'{person}/{group}'
        if name not in f:
          raise DatasetError(f'{path}: no group {name!r}.')
        keys[group] = sorted(f[name].keys())
      if not keys['image'] == keys['pose'] == keys['gaze']:
        images = set(keys['image'])
        differing = sorted((images ^ set(keys['pose'])) | (images ^ set(keys['gaze'])))
        raise DatasetError(f'{path}: {person} image/pose/gaze hold different samples '
                           f'(e.g. {differing[:3]}).')
      common.check_count(len(keys['image']), params, path, person)
      plans.append(H5PersonPlan(person, path, tuple(keys['image'])))
  return {'train': plans}


def generate_face(plans: list[H5PersonPlan], params: common.BuildParams):
  for plan in plans:
    with common.open_hdf5(plan.path) as f:
      for index, key in enumerate(plan.keys):
        where = f'{plan.path} ({plan.person}/*/{key})'
        face = common.read_hdf5(f, f'{plan.person}/image/{key}', plan.path)
        if face.ndim != 3 or face.shape[-1] != 3:
          raise DatasetError(f'{where}: image has shape {face.shape}, expected [H, W, 3].')
        face = common.to_uint8(face, where, params.image_value_range)[..., ::-1]  # BGR -> RGB.
        gaze = common.check_gaze(
            common.read_hdf5(f, f'{plan.person}/gaze/{key}', plan.path).reshape(1, 2), where)
        head = common.check_head_pose(
            common.read_hdf5(f, f'{plan.person}/pose/{key}', plan.path).reshape(1, 2), where)
        yield f'{plan.person}/{key}', common.example(
            plan.person, common.resize_image(face, params.image_shape), gaze[0], head[0], key,
            index)


_HYSTS = ('Preprocessed as in hysts/pytorch_mpiigaze (tools/preprocess_*.py); see '
          'docs/DATASETS.md.')

MPIIGAZE_H5 = common.DatasetFormat(
    name='mpiigaze_h5',
    label_kind='gaze',
    description='MPIIGaze evaluation subset from the preprocessed MPIIGaze.h5. ' + _HYSTS,
    instructions='a folder holding MPIIGaze.h5 (groups p00..p14 with image, pose, gaze).',
    citation='',
    default_image_shape=EYE_SHAPE + (1,),
    default_samples_per_person=common.MPII_SAMPLES_PER_PERSON,
    splits=('train',),
    default_read_splits=('train',),
    plan=plan_eye,
    generate=generate_eye,
    options=lambda c: {'h5_file': c.get('h5_file', '') or 'MPIIGaze.h5'},
)

MPIIFACEGAZE_H5 = common.DatasetFormat(
    name='mpiifacegaze_h5',
    label_kind='gaze',
    description='MPIIFaceGaze faces from the preprocessed MPIIFaceGaze.h5. ' + _HYSTS,
    instructions='a folder holding MPIIFaceGaze.h5 (pXX/image/NNNN, pXX/pose/NNNN, pXX/gaze/NNNN).',
    citation='',
    default_image_shape=(FACE_SIZE, FACE_SIZE, 3),
    default_samples_per_person=common.MPII_SAMPLES_PER_PERSON,
    splits=('train',),
    default_read_splits=('train',),
    plan=plan_face,
    generate=generate_face,
    options=lambda c: {'h5_file': c.get('h5_file', '') or 'MPIIFaceGaze.h5'},
)
