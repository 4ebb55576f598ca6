"""MPIIFaceGaze (Zhang et al., CVPRW 2017): full-face images of the 15 MPIIGaze people.

Two releases are supported.

**Normalised** (``MPIIFaceGaze_normalized.zip``; ``data.manual_dir`` holds
``p00.mat`` ... ``p14.mat``). Each file is MATLAB v7.3 (HDF5) with a struct
``Data``: ``Data.data``, the 3000 normalised 448x448 face images, and ``Data.label``,
one column per sample whose first four rows are the gaze (pitch, yaw) and the head
pose (pitch, yaw) in radians (the rest are facial landmarks, unused). Read through
HDF5 (row-major), ``Data/data`` has shape ``[3000, 3, 448, 448]`` and ``Data/label``
``[3000, >= 4]``. The authors prepared the images for Caffe in MATLAB with
``img(:,:,[3 2 1])`` (RGB -> BGR), ``flip(img, 2)`` and ``imrotate(img, 90)``; the
flip followed by the 90-degree rotation is a transpose, which MATLAB's column-major
storage undoes, so ``transpose(0, 2, 3, 1)`` of the HDF5 array gives upright BGR
images (as in hysts/pytorch_mpiigaze's ``tools/preprocess_mpiifacegaze.py``); we
reverse the channels to RGB.

**Raw** (``MPIIFaceGaze.zip``; ``data.manual_dir`` holds ``pXX/``): per person
``pXX/pXX.txt`` (one line per sample: image path, 2-D screen target in pixels,
six 2-D landmarks, head rotation vector and translation, face centre ``fc`` and
gaze target ``gt`` in camera coordinates (mm), and the eye used by the MPIIGaze
evaluation subset), ``pXX/Calibration/Camera.mat`` (``cameraMatrix``,
``distCoeffs``) and the photos ``pXX/dayYY/NNNN.jpg``. We normalise each face
ourselves (`normalization`): gaze ``gt - fc`` rotated into the normalised camera,
head pose the normalised head rotation.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from privateyes_jax.data.builders import common
from privateyes_jax.data.builders import normalization

DatasetError = common.DatasetError

FACE_SIZE = 224  # Default stored size: the ResNet input used for MPIIFaceGaze in the literature.
# Samples converted per HDF5 read: bounds memory to ~60 MB of 448x448 faces.
CHUNK = 100
ANNOTATION_FIELDS = 28

CITATION = ('@inproceedings{zhang17_cvprw, author={Zhang, Xucong and Sugano, Yusuke and '
            'Fritz, Mario and Bulling, Andreas}, title={It\'s Written All Over Your Face: '
            'Full-Face Appearance-Based Gaze Estimation}, booktitle={CVPR Workshops}, '
            'pages={51--60}, year={2017}}')


def _people_files(directory: str, suffix: str) -> list[str]:
  return [f[:-len(suffix)] for f in os.listdir(directory)
          if f.endswith(suffix) and f.startswith('p')]


# --------------------------------------------------------------------- normalised


@dataclasses.dataclass(frozen=True)
class MatPlan:
  person: str
  path: str
  num_samples: int


def plan_normalized(manual_dir: str, params: common.BuildParams) -> dict[str, list[MatPlan]]:
  found = _people_files(manual_dir, '.mat')
  people = common.select_people(found, params, common.MPII_PEOPLE, manual_dir)
  plans = []
  for person in people:
    path = os.path.join(manual_dir, f'{person}.mat')
    with common.open_hdf5(path) as f:
      for key in ('Data/data', 'Data/label'):
        if key not in f:
          raise DatasetError(f'{path}: no {key!r}; expected the MPIIFaceGaze normalised '
                             'MATLAB v7.3 file (struct Data with fields data and label).')
      images, labels = f['Data/data'], f['Data/label']
      if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise DatasetError(f'{path}: Data/data has shape {images.shape}, expected '
                           '[samples, 3, size, size].')
      if labels.ndim != 2 or labels.shape[0] != images.shape[0] or labels.shape[1] < 4:
        raise DatasetError(f'{path}: Data/label has shape {labels.shape}, expected '
                           f'[{images.shape[0]}, >= 4] (gaze pitch, yaw, head pitch, yaw, ...).')
      common.check_count(images.shape[0], params, path, person)
      plans.append(MatPlan(person, path, images.shape[0]))
  return {'train': plans}


def generate_normalized(plans: list[MatPlan], params: common.BuildParams):
  for mat in plans:
    with common.open_hdf5(mat.path) as f:
      labels = common.read_hdf5(f, 'Data/label', mat.path)[:, :4]
      gaze = common.check_gaze(labels[:, :2], f'{mat.path} (Data/label rows 1-2, gaze)')
      head = common.check_head_pose(labels[:, 2:4], f'{mat.path} (Data/label rows 3-4, head)')
      for start in range(0, mat.num_samples, CHUNK):
        stop = min(start + CHUNK, mat.num_samples)
        chunk = common.read_hdf5(f, 'Data/data', mat.path, np.s_[start:stop])
        # [n, C, H, W] BGR -> [n, H, W, C] RGB (see the module docstring).
        faces = common.to_uint8(chunk, f'{mat.path} (Data/data)', params.image_value_range,
                                stacked=True).transpose(0, 2, 3, 1)[..., ::-1]
        for i, face in enumerate(faces, start=start):
          yield f'{mat.person}/{i:05d}', common.example(
              mat.person, common.resize_image(face, params.image_shape), gaze[i], head[i],
              f'{i:04d}', i)


MPIIFACEGAZE = common.DatasetFormat(
    name='mpiifacegaze',
    label_kind='gaze',
    description='MPIIFaceGaze normalised 448x448 faces (MATLAB v7.3), resized.',
    instructions=('the extracted MPIIFaceGaze_normalized.zip: a folder holding p00.mat ... '
                  'p14.mat (MATLAB v7.3).'),
    citation=CITATION,
    default_image_shape=(FACE_SIZE, FACE_SIZE, 3),
    default_samples_per_person=common.MPII_SAMPLES_PER_PERSON,
    splits=('train',),
    default_read_splits=('train',),
    plan=plan_normalized,
    generate=generate_normalized,
)


# -------------------------------------------------------------------------- raw


@dataclasses.dataclass(frozen=True)
class Annotation:
  line: int
  image_path: str  # 'day01/0005.jpg', relative to the person folder.
  head_rotation_vector: np.ndarray  # [3]
  face_center: np.ndarray  # [3] mm, camera coordinates.
  gaze_target: np.ndarray  # [3] mm, camera coordinates.


@dataclasses.dataclass(frozen=True)
class RawPersonPlan:
  person: str
  person_dir: str
  annotation_path: str
  camera_matrix: np.ndarray
  dist_coeffs: np.ndarray
  annotations: tuple[Annotation, ...]


def parse_annotations(path: str) -> list[Annotation]:
  """Parses ``pXX.txt`` of the raw release (28 space-separated fields per line)."""
  try:
    with open(path) as f:
      lines = f.read().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise DatasetError(f'{path}: cannot read the annotation file ({e}).') from e
  annotations = []
  for number, raw in enumerate(lines, start=1):
    fields = raw.split()
    if not fields:
      continue
    if len(fields) != ANNOTATION_FIELDS:
      raise DatasetError(f'{path}:{number}: expected {ANNOTATION_FIELDS} fields (image path, '
                         '2 screen, 12 landmark, 6 head pose, 3 face centre, 3 gaze target, '
                         f'evaluation eye), got {len(fields)}.')
    try:
      values = np.array([float(v) for v in fields[1:27]])
    except ValueError as e:
      raise DatasetError(f'{path}:{number}: non-numeric annotation ({e}).') from e
    if not np.all(np.isfinite(values)):
      raise DatasetError(f'{path}:{number}: annotation contains NaN or inf.')
    # Columns (1-based, as in the dataset readme): 16-18 rotation, 19-21 translation,
    # 22-24 face centre, 25-27 gaze target.
    annotations.append(Annotation(number, fields[0], values[14:17], values[20:23],
                                  values[23:26]))
  return annotations


def read_camera(path: str) -> tuple[np.ndarray, np.ndarray]:
  mat = common.load_mat_v5(path)
  if 'cameraMatrix' not in mat or 'distCoeffs' not in mat:
    raise DatasetError(f'{path}: expected variables cameraMatrix and distCoeffs.')
  camera = np.asarray(mat['cameraMatrix'], np.float64)
  dist = np.asarray(mat['distCoeffs'], np.float64).ravel()
  if camera.shape != (3, 3) or not np.all(np.isfinite(camera)) or camera[0, 0] <= 0:
    raise DatasetError(f'{path}: cameraMatrix must be a finite 3x3 intrinsic matrix, got '
                       f'{camera.tolist()}.')
  if dist.size not in (4, 5, 8, 12, 14) or not np.all(np.isfinite(dist)):
    raise DatasetError(f'{path}: distCoeffs must hold 4, 5, 8, 12 or 14 finite values, got '
                       f'{dist.tolist()}.')
  return camera, dist


def plan_raw(manual_dir: str, params: common.BuildParams) -> dict[str, list[RawPersonPlan]]:
  found = [d for d in os.listdir(manual_dir)
           if d.startswith('p') and os.path.isdir(os.path.join(manual_dir, d))]
  people = common.select_people(found, params, common.MPII_PEOPLE, manual_dir)
  plans = []
  for person in people:
    person_dir = os.path.join(manual_dir, person)
    annotation_path = os.path.join(person_dir, f'{person}.txt')
    if not os.path.isfile(annotation_path):
      raise DatasetError(f'{annotation_path}: annotation file not found.')
    camera, dist = read_camera(os.path.join(person_dir, 'Calibration', 'Camera.mat'))
    annotations = parse_annotations(annotation_path)
    common.check_count(len(annotations), params, annotation_path, person)
    for a in annotations:
      image_path = os.path.join(person_dir, a.image_path)
      if not os.path.isfile(image_path):
        raise DatasetError(f'{image_path}: image not found (listed in '
                           f'{annotation_path}:{a.line}).')
    plans.append(RawPersonPlan(person, person_dir, annotation_path, camera, dist,
                               tuple(annotations)))
  return {'train': plans}


def generate_raw(plans: list[RawPersonPlan], params: common.BuildParams):
  height, width, _ = params.image_shape
  distance = float(params.option('normalized_distance_mm', normalization.DISTANCE_MM))
  for plan in plans:
    for index, a in enumerate(plan.annotations):
      where = f'{plan.annotation_path}:{a.line}'
      head_rotation = common.rotation_vectors_to_matrices(a.head_rotation_vector[None])[0]
      if not np.linalg.norm(a.face_center) > 0:
        raise DatasetError(f'{where}: face centre {a.face_center.tolist()} is at the camera.')
      view = normalization.normalizing_view(a.face_center, head_rotation, plan.camera_matrix,
                                            (height, width), distance=distance)
      gaze = common.gaze_vectors_to_pitchyaw(
          (view.rotation @ (a.gaze_target - a.face_center))[None], where)
      head = common.head_rotations_to_pitchyaw((view.rotation @ head_rotation)[None], where)
      photo = common.read_image(os.path.join(plan.person_dir, a.image_path),
                                params.image_value_range)
      face = normalization.warp_image(photo, view, plan.camera_matrix, plan.dist_coeffs,
                                      (height, width))
      yield f'{plan.person}/{index:05d}', common.example(
          plan.person, common.resize_image(face, params.image_shape), gaze[0], head[0],
          a.image_path, index)


MPIIFACEGAZE_RAW = common.DatasetFormat(
    name='mpiifacegaze_raw',
    label_kind='gaze',
    description='MPIIFaceGaze raw photos, normalised here (Zhang et al. ETRA 2018).',
    instructions=('the extracted MPIIFaceGaze.zip: a folder holding pXX/pXX.txt, '
                  'pXX/Calibration/Camera.mat and pXX/dayYY/NNNN.jpg.'),
    citation=CITATION,
    default_image_shape=(FACE_SIZE, FACE_SIZE, 3),
    default_samples_per_person=common.MPII_SAMPLES_PER_PERSON,
    splits=('train',),
    default_read_splits=('train',),
    plan=plan_raw,
    generate=generate_raw,
    options=lambda c: {'normalized_distance_mm': float(
        c.get('normalized_distance_mm', 0) or normalization.DISTANCE_MM)},
)
