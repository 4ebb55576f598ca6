"""Writers of tiny datasets in the exact on-disk formats of the public releases.

Each writer creates a few people with a handful of samples in ``root`` and returns
the ground truth the builder must read back: per person, a list of `Truth` records
in the order the dataset lists them. Labels are chosen as (pitch, yaw) in the MPII
convention and written the way each release stores them (3-D gaze vectors and
Rodrigues head rotations for MPIIGaze, MATLAB v7.3 arrays for MPIIFaceGaze,
JSON for GazeCapture, ...), so reading back must reproduce them exactly.

Conversions here are written out independently of the library (closed forms of the
MPII convention), so a sign error in the library cannot cancel out in the tests.
"""

from __future__ import annotations

import dataclasses
import json
import os

import h5py
import numpy as np
from PIL import Image
from scipy import io as scipy_io
from scipy.spatial.transform import Rotation


@dataclasses.dataclass
class Truth:
  sample_id: str
  image: np.ndarray  # What the builder must store (before any resizing).
  label: np.ndarray  # [2]
  head_pose: np.ndarray  # [2]


# --------------------------------------------------------------------- conventions


def gaze_vector(pitch: float, yaw: float) -> np.ndarray:
  """Unit gaze direction (camera coordinates, x right, y down, z forward) of MPII angles."""
  return np.array([-np.cos(pitch) * np.sin(yaw), -np.sin(pitch), -np.cos(pitch) * np.cos(yaw)])


def head_rotation(pitch: float, yaw: float, roll: float = 0.0) -> np.ndarray:
  """Head -> camera rotation whose face (the head's -z axis) points along MPII (pitch, yaw)."""
  z_axis = -gaze_vector(pitch, yaw)
  x_axis = np.cross([0.0, 1.0, 0.0], z_axis)
  x_axis /= np.linalg.norm(x_axis)
  y_axis = np.cross(z_axis, x_axis)
  rotation = np.stack([x_axis, y_axis, z_axis], axis=1)
  # A fixture with a non-orthonormal head rotation would test nothing real.
  np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)
  return rotation @ Rotation.from_rotvec([0.0, 0.0, roll]).as_matrix()


def rotation_vector(rotation: np.ndarray) -> np.ndarray:
  return Rotation.from_matrix(rotation).as_rotvec()


def _rng(seed, *ids):
  return np.random.default_rng([seed, *ids])


def _random_angles(rng, n, max_pitch=0.4, max_yaw=0.6):
  return np.stack([rng.uniform(-max_pitch, max_pitch, n), rng.uniform(-max_yaw, max_yaw, n)], 1)


def _save_image(path: str, image: np.ndarray, **kwargs) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(image).save(path, **kwargs)


# ------------------------------------------------------------------------ MPIIGaze

# Explicit sign cases, written as raw vectors: looking up and to the image's left
# (the subject's right) from the normalised camera must give pitch > 0 and yaw > 0;
# a head turned by +0.2 rad about the camera's y axis has yaw +0.2.
SIGN_GAZE_VECTOR = np.array([-0.3, -0.2, -1.0])
SIGN_HEAD_ROTATION_VECTOR = np.array([0.0, 0.2, 0.0])


def write_mpiigaze(root: str, people=('p00', 'p01', 'p02'), day_sizes=(4, 1, 3),
                   seed: int = 0) -> dict[str, list[Truth]]:
  """``Data/Normalized/pXX/dayYY.mat`` (MATLAB v5) and the evaluation-subset lists.

  Every sample of every day is listed, alternating left and right eyes; a day of
  size 1 exercises MATLAB's dropped leading axis. Sample 0 of day01 uses the explicit
  sign vectors.
  """
  truth = {}
  list_dir = os.path.join(root, 'Evaluation Subset', 'sample list for eye image')
  os.makedirs(list_dir, exist_ok=True)
  for pi, person in enumerate(people):
    person_dir = os.path.join(root, 'Data', 'Normalized', person)
    os.makedirs(person_dir, exist_ok=True)
    lines, records = [], []
    for di, n in enumerate(day_sizes):
      day = f'day{di + 1:02d}'
      rng = _rng(seed, pi, di)
      filenames = [f'{k + 1:04d}.jpg' for k in range(n)]
      eyes = {}
      for side in ('left', 'right'):
        images = rng.integers(0, 200, (n, 36, 60)).astype(np.uint8)
        images[:, :, :6] = 255  # A bright band on the image's left: shows mirroring.
        gaze_angles = _random_angles(rng, n)
        head_angles = _random_angles(rng, n, 0.3, 0.4)
        gazes = np.stack([gaze_vector(*a) * rng.uniform(0.5, 2.0) for a in gaze_angles])
        poses = np.stack([rotation_vector(head_rotation(*a)) for a in head_angles])
        if di == 0:
          gazes[0] = SIGN_GAZE_VECTOR
          poses[0] = SIGN_HEAD_ROTATION_VECTOR
          gaze_angles[0] = [np.arcsin(0.2 / np.linalg.norm(SIGN_GAZE_VECTOR)), np.arctan2(0.3, 1.0)]
          head_angles[0] = [0.0, 0.2]
        eyes[side] = {'gaze': gazes, 'image': images, 'pose': poses}
        eyes[side + '_truth'] = (gaze_angles, head_angles)
      mat = {'data': {side: eyes[side] for side in ('left', 'right')},
             'filenames': np.array(filenames, dtype=object).reshape(n, 1)}
      scipy_io.savemat(os.path.join(person_dir, f'{day}.mat'), mat)
      for k, name in enumerate(filenames):
        side = ('left', 'right')[(k + di) % 2]
        lines.append(f'{day}/{name} {side}')
        gaze_angles, head_angles = eyes[side + '_truth']
        image, label, head = eyes[side]['image'][k], gaze_angles[k], head_angles[k]
        if side == 'right':  # The protocol: mirror right eyes, negating the yaws.
          image, label, head = image[:, ::-1], label * [1, -1], head * [1, -1]
        records.append(Truth(f'{day}/{name} {side}', image[..., None], label, head))
    with open(os.path.join(list_dir, f'{person}.txt'), 'w') as f:
      f.write('\n'.join(lines) + '\n')
    truth[person] = records
  return truth


# ------------------------------------------------------------------- MPIIFaceGaze


def _matlab_v73_header(path: str) -> None:
  """MATLAB v7.3 files are HDF5 with a 512-byte user block starting with this text."""
  text = (b'MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2017 '
          b'HDF5 schema 1.00 .')
  with open(path, 'r+b') as f:
    f.write(text.ljust(116, b' ') + b'\x00' * 8 + b'\x00\x02IM')


def _face_image(rng, size: int) -> np.ndarray:
  """A random RGB face stand-in with a pure-red square at the top-left (orientation)."""
  image = rng.integers(0, 256, (size, size, 3)).astype(np.uint8)
  image[:4, :4] = [255, 0, 0]
  return image


def write_mpiifacegaze_normalized(root: str, people=('p00', 'p01', 'p02'), n: int = 5,
                                  size: int = 16, seed: int = 1) -> dict[str, list[Truth]]:
  """``pXX.mat`` as MATLAB v7.3 with ``Data.data`` and ``Data.label``.

  The authors' MATLAB steps are applied to each RGB image (channels to BGR,
  ``flip(img, 2)``, ``imrotate(img, 90)``), the images are stacked as MATLAB's
  ``[size, size, 3, N]`` and stored the way MATLAB v7.3 stores arrays (dimensions
  reversed in HDF5); ``Data.label`` is ``[16, N]`` in MATLAB (gaze, head pose,
  six landmarks), ``[N, 16]`` in HDF5.
  """
  truth = {}
  os.makedirs(root, exist_ok=True)
  for pi, person in enumerate(people):
    rng = _rng(seed, pi)
    originals = [_face_image(rng, size) for _ in range(n)]
    matlab_images = np.stack(
        [np.rot90(np.flip(img[:, :, [2, 1, 0]], axis=1), k=1) for img in originals], axis=-1)
    gaze, head = _random_angles(rng, n), _random_angles(rng, n, 0.3, 0.5)
    landmarks = rng.uniform(0, 448, (12, n))
    matlab_labels = np.concatenate([gaze.T, head.T, landmarks])  # [16, N]
    path = os.path.join(root, f'{person}.mat')
    with h5py.File(path, 'w', userblock_size=512) as f:
      data = f.create_group('Data')
      data.attrs['MATLAB_class'] = np.bytes_('struct')
      images = data.create_dataset('data', data=np.transpose(matlab_images, (3, 2, 1, 0)))
      images.attrs['MATLAB_class'] = np.bytes_('uint8')
      labels = data.create_dataset('label', data=matlab_labels.T)
      labels.attrs['MATLAB_class'] = np.bytes_('double')
      for name, value in (('screen_width', 1280.0), ('screen_height', 800.0)):
        data.create_dataset(name, data=np.array([[value]])).attrs['MATLAB_class'] = \
            np.bytes_('double')
    _matlab_v73_header(path)
    truth[person] = [Truth(f'{i:04d}', originals[i], gaze[i], head[i]) for i in range(n)]
  return truth


# Raw release: a 160x120 laptop camera.
RAW_CAMERA = np.array([[200.0, 0.0, 80.0], [0.0, 200.0, 60.0], [0.0, 0.0, 1.0]])
# p01's lens distorts strongly enough that skipping undistortion moves the face centre
# by about 2 px in the normalised 32x32 image.
RAW_DISTORTION = {'p00': np.zeros(5), 'p01': np.array([0.8, -0.5, 0.004, -0.003, 0.0])}


def project(point: np.ndarray, camera: np.ndarray, distortion: np.ndarray) -> np.ndarray:
  """Pixel of a 3-D camera-coordinate point through OpenCV's lens model (k1, k2, p1, p2, k3)."""
  x, y = point[0] / point[2], point[1] / point[2]
  k1, k2, p1, p2, k3 = distortion
  r2 = x * x + y * y
  radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
  xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
  yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
  return np.array([camera[0, 0] * xd + camera[0, 2], camera[1, 1] * yd + camera[1, 2]])


@dataclasses.dataclass
class RawSample:
  """Geometry of one raw MPIIFaceGaze sample (for the tests' invariants)."""
  path: str
  face_center: np.ndarray
  head_rotation: np.ndarray
  gaze_target: np.ndarray
  gaze_in_head: np.ndarray  # The gaze direction in head coordinates.


def _blob(image: np.ndarray, pixel: np.ndarray, value, radius: float = 2.5) -> None:
  v, u = np.mgrid[0:image.shape[0], 0:image.shape[1]]
  image[(u - pixel[0]) ** 2 + (v - pixel[1]) ** 2 <= radius ** 2] = value


def write_mpiifacegaze_raw(root: str, people=('p00', 'p01'), n: int = 3,
                           seed: int = 2) -> dict[str, list[RawSample]]:
  """``pXX/pXX.txt`` (28 fields), ``pXX/Calibration/Camera.mat``, ``pXX/dayYY/NNNN.jpg``.

  Person p00 sits on the optical axis with a rolled head and an ideal lens, so the
  normalised gaze equals the gaze in head coordinates; p01 sits off-axis behind a
  distorting lens. Each photo is dark with a white blob where the face centre
  projects and a red blob 30 mm along the head's x axis.
  """
  samples = {}
  for pi, person in enumerate(people):
    rng = _rng(seed, pi)
    person_dir = os.path.join(root, person)
    os.makedirs(os.path.join(person_dir, 'Calibration'), exist_ok=True)
    distortion = RAW_DISTORTION[person]
    scipy_io.savemat(os.path.join(person_dir, 'Calibration', 'Camera.mat'),
                     {'cameraMatrix': RAW_CAMERA, 'distCoeffs': distortion[None],
                      'retval': 0.3, 'rvecs': np.zeros((3, 1)), 'tvecs': np.zeros((3, 1))})
    lines, records = [], []
    for i in range(n):
      if person == 'p00':
        face_center = np.array([0.0, 0.0, 550.0 + 20 * i])
        rotation = Rotation.from_rotvec([0.0, 0.0, 0.15 * (i - 1)]).as_matrix()
      else:
        face_center = np.array([150.0 * (i - 1), -60.0, 600.0])
        rotation = head_rotation(0.1 * (i - 1), -0.15 * i, roll=0.05 * i)
      gaze_in_head = np.array([-100.0 + 40 * i, -50.0, -500.0])
      gaze_target = face_center + rotation @ gaze_in_head
      translation = face_center + rng.normal(0, 5, 3)
      path = f'day{i // 2 + 1:02d}/{i + 1:04d}.jpg'
      photo = np.full((120, 160, 3), 20, np.uint8)
      _blob(photo, project(face_center, RAW_CAMERA, distortion), (255, 255, 255))
      _blob(photo, project(face_center + rotation @ [30.0, 0.0, 0.0], RAW_CAMERA, distortion),
            (255, 0, 0))
      _save_image(os.path.join(person_dir, path), photo, quality=98, subsampling=0)
      fields = ([path] + [f'{v:.0f}' for v in rng.uniform(0, 1280, 2)]
                + [f'{v:.0f}' for v in rng.uniform(0, 160, 12)]
                + [f'{v:.9f}' for v in np.concatenate([
                    rotation_vector(rotation), translation, face_center, gaze_target])]
                + [('left', 'right')[i % 2]])
      lines.append(' '.join(fields))
      records.append(RawSample(path, face_center, rotation, gaze_target, gaze_in_head))
    with open(os.path.join(person_dir, f'{person}.txt'), 'w') as f:
      f.write('\n'.join(lines) + '\n')
    samples[person] = records
  return samples


# ------------------------------------------------------------------------ GazeCapture

GAZECAPTURE_SUBJECTS = {'00002': 'train', '00003': 'train', '00005': 'val', '00010': 'test'}
FRAME_HW = (48, 36)  # Portrait frames, height x width.


def write_gazecapture(root: str, subjects=None, frames_per_subject: int = 5,
                      seed: int = 3) -> dict[str, list[Truth]]:
  """Numbered recording folders with frames/%05d.jpg and the eight JSON files.

  Frame 1 of every recording has no eye detection (IsValid 0: left out); the last
  valid frame's face box pokes out of the frame (zero padding). Each face box is
  filled with one flat colour per frame so the crop can be recognised after JPEG.
  """
  subjects = subjects or GAZECAPTURE_SUBJECTS
  truth = {}
  for si, (subject, split) in enumerate(subjects.items()):
    rng = _rng(seed, si)
    subject_dir = os.path.join(root, subject)
    n = frames_per_subject
    boxes = np.array([[rng.integers(2, 10), rng.integers(4, 16), 20, 22] for _ in range(n)],
                     np.float64)
    boxes[-1] = [24, 30, 20, 22]  # Leaves the 36x48 frame on the right and bottom.
    face_valid = np.ones(n, int)
    left_valid = np.ones(n, int)
    left_valid[1] = 0
    targets = np.stack([rng.uniform(-10, 10, n), rng.uniform(-15, 0, n)], 1).round(4)
    colors = rng.integers(40, 230, (n, 3))
    frames, records = [], []
    for k in range(n):
      name = f'{k:05d}.jpg'
      frames.append(name)
      frame = np.zeros(FRAME_HW + (3,), np.uint8)
      x, y, w, h = boxes[k].astype(int)
      frame[y:y + h, x:x + w] = colors[k]
      _save_image(os.path.join(subject_dir, 'frames', name), frame, quality=98, subsampling=0)
      if face_valid[k] and left_valid[k]:
        face = np.zeros((h, w, 3), np.uint8)
        visible = frame[y:y + h, x:x + w]
        face[:visible.shape[0], :visible.shape[1]] = visible
        records.append(Truth(f'{k:05d}', face, targets[k], np.zeros(2)))
    eye = lambda valid: {'X': [5.0] * n, 'Y': [4.0] * n, 'W': [6.0] * n, 'H': [6.0] * n,
                         'IsValid': [int(v) for v in valid]}
    files = {
        'frames.json': frames,
        'appleFace.json': {'X': boxes[:, 0].tolist(), 'Y': boxes[:, 1].tolist(),
                           'W': boxes[:, 2].tolist(), 'H': boxes[:, 3].tolist(),
                           'IsValid': face_valid.tolist()},
        'appleLeftEye.json': eye(left_valid),
        'appleRightEye.json': eye(face_valid),
        'faceGrid.json': {'X': [8] * n, 'Y': [6] * n, 'W': [10] * n, 'H': [10] * n,
                          'IsValid': (face_valid * left_valid).tolist()},
        'dotInfo.json': {'DotNum': list(range(n)), 'XPts': [100.0] * n, 'YPts': [200.0] * n,
                         'XCam': targets[:, 0].tolist(), 'YCam': targets[:, 1].tolist(),
                         'Time': [0.5] * n},
        'info.json': {'TotalFrames': n, 'NumFaceDetections': int(face_valid.sum()),
                      'NumEyeDetections': int((face_valid * left_valid).sum()),
                      'Dataset': split, 'DeviceName': 'iPhone 6'},
        'screen.json': {'H': [568.0] * n, 'W': [320.0] * n, 'Orientation': [1] * n},
    }
    for name, content in files.items():
      with open(os.path.join(subject_dir, name), 'w') as f:
        json.dump(content, f)
    truth[subject] = records
  return truth


# --------------------------------------------------------------- preprocessed HDF5


def write_mpiigaze_h5(path: str, people=('p00', 'p01', 'p02'), n: int = 6,
                      seed: int = 4) -> dict[str, list[Truth]]:
  """``MPIIGaze.h5``: groups pXX with image [N, 36, 60] uint8, pose and gaze [N, 2] float32."""
  truth = {}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with h5py.File(path, 'w') as f:
    for pi, person in enumerate(people):
      rng = _rng(seed, pi)
      images = rng.integers(0, 256, (n, 36, 60)).astype(np.uint8)
      gaze = _random_angles(rng, n).astype(np.float32)
      pose = _random_angles(rng, n, 0.3, 0.5).astype(np.float32)
      f.create_dataset(f'{person}/image', data=images)
      f.create_dataset(f'{person}/pose', data=pose)
      f.create_dataset(f'{person}/gaze', data=gaze)
      truth[person] = [Truth(f'{i:04d}', images[i][..., None], gaze[i], pose[i])
                       for i in range(n)]
  return truth


def write_mpiifacegaze_h5(path: str, people=('p00', 'p01', 'p02'), n: int = 4, size: int = 16,
                          seed: int = 5) -> dict[str, list[Truth]]:
  """``MPIIFaceGaze.h5``: pXX/image/NNNN [size, size, 3] uint8 BGR, pXX/pose|gaze/NNNN [2]."""
  truth = {}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with h5py.File(path, 'w') as f:
    for pi, person in enumerate(people):
      rng = _rng(seed, pi)
      records = []
      for i in range(n):
        rgb = _face_image(rng, size)
        gaze, pose = _random_angles(rng, 1)[0], _random_angles(rng, 1, 0.3, 0.5)[0]
        f.create_dataset(f'{person}/image/{i:04d}', data=rgb[..., ::-1])
        f.create_dataset(f'{person}/pose/{i:04d}', data=pose)
        f.create_dataset(f'{person}/gaze/{i:04d}', data=gaze)
        records.append(Truth(f'{i:04d}', rgb, gaze, pose))
      truth[person] = records
  return truth


# ------------------------------------------------------------------------ own study


def write_own_study(root: str, people=('alice', 'bob', 'carol'), n: int = 5, screen=False,
                    seed: int = 6) -> dict[str, list[Truth]]:
  """One folder per person: PNG, JPEG and BMP images of various sizes and labels.csv.

  Gaze studies give pitch, yaw and head pose (radians); screen studies x, y (pixels).
  Images are flat grey levels so they survive JPEG and resizing.
  """
  truth = {}
  for pi, person in enumerate(people):
    rng = _rng(seed, pi)
    person_dir = os.path.join(root, person)
    os.makedirs(person_dir, exist_ok=True)
    rows = ['image,x,y' if screen else 'image,pitch,yaw,head_pitch,head_yaw']
    records = []
    for i in range(n):
      ext = ('png', 'jpg', 'bmp')[i % 3]
      name = f'img_{i:03d}.{ext}'
      level = int(rng.integers(30, 220))
      height, width = (24, 40) if i % 2 else (72, 120)
      _save_image(os.path.join(person_dir, name), np.full((height, width, 3), level, np.uint8))
      if screen:
        label = rng.uniform(0, 1920, 2).round(1)
        head = np.zeros(2)
        rows.append(f'{name},{label[0]},{label[1]}')
      else:
        label, head = _random_angles(rng, 1)[0], _random_angles(rng, 1, 0.3, 0.5)[0]
        rows.append(','.join([name] + [repr(float(v)) for v in (*label, *head)]))
      records.append(Truth(name, np.full((36, 60, 1), level, np.uint8), label, head))
    with open(os.path.join(person_dir, 'labels.csv'), 'w') as f:
      f.write('\n'.join(rows) + '\n')
    truth[person] = records
  return truth


# ------------------------------------------------------------------------- NVGaze

# The declared convention the NVGaze tests use: yaw = -x, pitch = +y (degrees in the CSV).
NVGAZE_DECLARED = {'nvgaze_yaw': '-float_gaze_x_degree', 'nvgaze_pitch': '+float_gaze_y_degree'}


def _nvgaze_rows(rng, n):
  """n gaze angles (pitch, yaw) radians and their CSV cells (x = -yaw, y = pitch, degrees)."""
  angles = _random_angles(rng, n)
  angles[0] = [0.1, 0.2]  # Sign case: looking up and to the subject's right.
  x_degree, y_degree = -np.degrees(angles[:, 1]), np.degrees(angles[:, 0])
  return angles, x_degree, y_degree


def _png_bytes(image: np.ndarray) -> bytes:
  import io  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG')
  return buffer.getvalue()


def write_nvgaze_footage(root: str, people=('nvgaze_female_01', 'nvgaze_male_01'), n: int = 4,
                         seed: int = 7) -> dict[str, list[Truth]]:
  """Footage folders as NVIDIA's DatasetGeneration scripts read them.

  ``<person>/footage_description.csv`` (typed column titles: ``archive``, ``image_L_0``,
  ``image_R_0``, a region-mask column, ``float_gaze_x_degree``, ``float_gaze_y_degree``,
  ``int_frame``) naming PNGs inside zip archives relative to the folder; rows are split
  over two archives, and the second person's images are 16-bit PNGs (values 1000..3000).
  Truth per image column, in row order (left then right eye of each row).
  """
  import zipfile  # pylint: disable=g-import-not-at-top
  truth = {}
  for pi, person in enumerate(people):
    rng = _rng(seed, pi)
    folder = os.path.join(root, person)
    os.makedirs(folder, exist_ok=True)
    angles, x_degree, y_degree = _nvgaze_rows(rng, n)
    rows = ['archive,image_L_0,image_R_0,regionmask_withskin_L_0,float_gaze_x_degree,'
            'float_gaze_y_degree,int_frame']
    records, archives = [], {}
    for i in range(n):
      archive = f'footage_{i // 2:02d}.zip'  # Two rows per archive.
      names = (f'{i:04d}_L.png', f'{i:04d}_R.png')
      for eye, name in enumerate(names):
        level = int(rng.integers(20, 230))
        image = np.full((12, 16), level, np.uint8)
        image[:, :4] = 255 - level  # An asymmetric band: shows there is no mirroring.
        stored = image
        if pi == 1:  # 16-bit: 1000 + 2000 * level / 255, with the extremes present.
          wide = (1000 + np.round(image.astype(np.float64) * 2000 / 255)).astype(np.uint16)
          wide[0, 0], wide[-1, -1] = 1000, 3000
          stored = wide
          image = np.round((wide - 1000.0) * 255 / 2000).astype(np.uint8)
        archives.setdefault(archive, []).append((name, _png_bytes(stored)))
        records.append(Truth(f'{archive}/{name}', image[..., None], angles[i], np.zeros(2)))
      rows.append(f'{archive},{names[0]},{names[1]},mask_{i:04d}.png,{float(x_degree[i])!r},'
                  f'{float(y_degree[i])!r},{i}')
    for archive, members in archives.items():
      with zipfile.ZipFile(os.path.join(folder, archive), 'w') as z:
        for name, data in members:
          z.writestr(name, data)
    with open(os.path.join(folder, 'footage_description.csv'), 'w') as f:
      f.write('\n'.join(rows) + '\n')
    truth[person] = records
  return truth


def write_nvgaze_h5(path: str, n: int = 3, seed: int = 8) -> list[Truth]:
  """One person's H5 file as NVIDIA's createH5 writes it (binocular, one view).

  ``images`` [N, E=2, V=1, C=1, H, W] uint8 (left eye first), attributes ``eyes`` and
  ``image_resolution``, and every CSV column as a 1-D dataset of byte strings.
  """
  rng = _rng(seed)
  angles, x_degree, y_degree = _nvgaze_rows(rng, n)
  images = rng.integers(0, 256, (n, 2, 1, 1, 12, 16)).astype(np.uint8)
  columns = {'archive': ['footage.zip'] * n,
             'image_L_0': [f'{i:04d}_L.png' for i in range(n)],
             'image_R_0': [f'{i:04d}_R.png' for i in range(n)],
             'float_gaze_x_degree': [repr(float(v)) for v in x_degree],
             'float_gaze_y_degree': [repr(float(v)) for v in y_degree]}
  with h5py.File(path, 'w') as f:
    f.attrs.update({'eyes': 'binocular', 'image_resolution': [16, 12]})
    f.create_dataset('images', data=images)
    for name, values in columns.items():
      f.create_dataset(name, data=np.array(values, dtype='S'))
  return [Truth(f'{i:06d}/image_{eye}_0', images[i, e, 0, 0][..., None], angles[i], np.zeros(2))
          for i in range(n) for e, eye in enumerate('LR')]


# --------------------------------------------------------------------- test helpers


def data_config(name: str, manual_dir: str, data_dir: str, **fields):
  """A ``config.data`` for a fixture dataset (any extra field, e.g. people=(...))."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(dict(
      name=name, source='tfds', manual_dir=str(manual_dir), data_dir=str(data_dir), seed=0,
      protocol='holdout', num_test_people=1, fold=0))
  config.update(fields)
  return config
