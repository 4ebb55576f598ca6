"""GazeCapture (Krafka et al., CVPR 2016): phone and tablet frames, on-screen targets in cm.

On disk (the released archive, extracted; ``data.manual_dir`` holds the numbered
recording folders, one per subject)::

  00002/frames/00000.jpg ...    the camera frames
  00002/frames.json             frame file names (else 00000.jpg ... from TotalFrames)
  00002/appleFace.json          face box X, Y, W, H (pixels, in the frame), IsValid
  00002/appleLeftEye.json       eye boxes relative to the face box, IsValid
  00002/appleRightEye.json
  00002/faceGrid.json           25x25 face-grid box, IsValid
  00002/dotInfo.json            DotNum, XPts, YPts, XCam, YCam (cm from the camera), Time
  00002/info.json               TotalFrames, NumFaceDetections, NumEyeDetections,
                                Dataset ("train", "val" or "test"), DeviceName
  00002/screen.json             W, H (points), Orientation

Every per-frame JSON array has one entry per frame (the official README). As in the
official iTracker preparation (``pytorch/prepareDataset.py``), a frame is used only
when the face, both eyes and the face grid were detected (all four ``IsValid``); the
subject's ``Dataset`` field puts it in the official train / validation / test split.
A split without any recording (a subset chosen with ``data.people``, or a partial
download) is not written; `common.load` reads the default splits that exist and
refuses, in one line, a ``data.splits`` that names an absent one.

Each example is the face crop (the Apple face box, zero-padded where it leaves the
frame) resized to ``data.image_size``; the label is ``(XCam, YCam)`` in cm, so the
error metric is the Euclidean distance in cm; there is no head pose (zeros).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np
from absl import logging

from privateyes_jax.data.builders import common

DatasetError = common.DatasetError

FACE_SIZE = 64  # Default stored size; iTracker used 224 (memory: 1.49M frames).
# The largest device (12.9-inch iPad) has no screen point farther than ~35 cm from its
# camera; a larger |XCam| or |YCam| is a unit or parsing error.
MAX_TARGET_CM = 50.0
SPLIT_OF_DATASET_FIELD = {'train': 'train', 'val': 'validation', 'test': 'test'}
BOX_FILES = ('appleFace.json', 'appleLeftEye.json', 'appleRightEye.json', 'faceGrid.json')


@dataclasses.dataclass(frozen=True)
class SubjectPlan:
  person: str
  subject_dir: str
  frames: tuple[str, ...]  # The valid frames' file names.
  face_boxes: np.ndarray  # [valid frames, 4] X, Y, W, H.
  targets: np.ndarray  # [valid frames, 2] XCam, YCam (cm).


def read_json(path: str) -> Any:
  if not os.path.isfile(path):
    raise DatasetError(f'{path}: file not found.')
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DatasetError(f'{path}: cannot parse JSON ({e}).') from e


def _array(record: dict, key: str, n: int, path: str) -> np.ndarray:
  if not isinstance(record, dict) or key not in record:
    raise DatasetError(f'{path}: no {key!r} array.')
  try:
    values = np.asarray(record[key], np.float64)
  except (TypeError, ValueError) as e:
    raise DatasetError(f'{path}: {key!r} is not a numeric array ({e}).') from e
  if values.shape != (n,):
    raise DatasetError(f'{path}: {key!r} has {values.size} entries, expected one per frame '
                       f'({n}, info.json TotalFrames).')
  return values


def plan_subject(subject_dir: str, person: str) -> tuple[str, SubjectPlan | None]:
  """Reads and checks one recording's JSON files: ``(split, plan or None if no valid frame)``."""
  info_path = os.path.join(subject_dir, 'info.json')
  info = read_json(info_path)
  try:
    total = int(info['TotalFrames'])
    dataset = str(info['Dataset'])
  except (KeyError, TypeError, ValueError) as e:
    raise DatasetError(f'{info_path}: needs TotalFrames and Dataset ({e}).') from e
  if dataset not in SPLIT_OF_DATASET_FIELD:
    raise DatasetError(f'{info_path}: Dataset is {dataset!r}, expected train, val or test.')
  frames_path = os.path.join(subject_dir, 'frames.json')
  if os.path.isfile(frames_path):
    frames = read_json(frames_path)
    if not isinstance(frames, list) or len(frames) != total:
      raise DatasetError(f'{frames_path}: expected a list of {total} frame names (TotalFrames).')
    frames = [str(f) for f in frames]
  else:
    frames = [f'{i:05d}.jpg' for i in range(total)]
  valid = np.ones(total, bool)  # Face, both eyes and face grid detected.
  for name in BOX_FILES:
    path = os.path.join(subject_dir, name)
    record = read_json(path)
    box = np.stack([_array(record, k, total, path) for k in ('X', 'Y', 'W', 'H')], axis=1)
    valid &= _array(record, 'IsValid', total, path) > 0
    if name == 'appleFace.json':
      face_path, boxes = path, box
  dot_path = os.path.join(subject_dir, 'dotInfo.json')
  dots = read_json(dot_path)
  targets = np.stack([_array(dots, k, total, dot_path) for k in ('XCam', 'YCam')], axis=1)
  screen_path = os.path.join(subject_dir, 'screen.json')
  _array(read_json(screen_path), 'Orientation', total, screen_path)
  split = SPLIT_OF_DATASET_FIELD[dataset]
  if not valid.any():
    return split, None
  idx = np.flatnonzero(valid)
  bad_box = ~np.isfinite(boxes[idx]).all(1) | (boxes[idx, 2:] < 1).any(1)
  if bad_box.any():
    i = int(idx[np.flatnonzero(bad_box)[0]])
    raise DatasetError(f'{face_path}: face box of valid frame {frames[i]} is {boxes[i].tolist()}; '
                       'it must be finite, at least 1 pixel wide and high.')
  valid_targets = common.check_screen(targets[idx], f'{dot_path} (XCam, YCam)', MAX_TARGET_CM)
  valid_frames = tuple(frames[i] for i in idx)
  for name in valid_frames:
    path = os.path.join(subject_dir, 'frames', name)
    if not os.path.isfile(path):
      raise DatasetError(f'{path}: frame not found (valid in {face_path}).')
  return split, SubjectPlan(person, subject_dir, valid_frames, boxes[idx], valid_targets)


def plan(manual_dir: str, params: common.BuildParams) -> dict[str, list[SubjectPlan]]:
  found = [d for d in os.listdir(manual_dir)
           if d.isdigit() and os.path.isdir(os.path.join(manual_dir, d))]
  people = common.select_people(found, params, None, manual_dir)
  plans = {split: [] for split in SPLIT_OF_DATASET_FIELD.values()}
  skipped = []
  for person in people:
    split, subject = plan_subject(os.path.join(manual_dir, person), person)
    if subject is None:
      skipped.append(person)
      continue
    common.check_count(len(subject.frames), params, os.path.join(manual_dir, person), person)
    plans[split].append(subject)
  if skipped:
    # The official release has recordings without a single complete detection.
    logging.warning('GazeCapture: %d recordings have no frame with face, eye and face-grid '
                    'detections and are left out: %s', len(skipped), ', '.join(skipped))
  if not any(plans.values()):
    raise DatasetError(f'{manual_dir}: no recording has a frame with valid detections.')
  # A subset (data.people, a partial download) may have no recording of some split: TFDS
  # refuses to write an empty split, so such a split is left out, and readers say so.
  return {split: subjects for split, subjects in plans.items() if subjects}


def crop(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
  """The ``box`` (X, Y, W, H; pixels, rounded) of ``frame``, zero where it leaves the frame."""
  x, y, w, h = (int(round(v)) for v in box)
  out = np.zeros((h, w) + frame.shape[2:], frame.dtype)
  x0, y0 = max(x, 0), max(y, 0)
  x1, y1 = min(x + w, frame.shape[1]), min(y + h, frame.shape[0])
  if x1 > x0 and y1 > y0:
    out[y0 - y:y1 - y, x0 - x:x1 - x] = frame[y0:y1, x0:x1]
  return out


def generate(plans: list[SubjectPlan], params: common.BuildParams):
  for subject in plans:
    for index, (name, box, target) in enumerate(
        zip(subject.frames, subject.face_boxes, subject.targets)):
      frame = common.read_image(os.path.join(subject.subject_dir, 'frames', name),
                                params.image_value_range)
      face = crop(frame, box)
      yield f'{subject.person}/{name}', common.example(
          subject.person, common.resize_image(face, params.image_shape), target,
          np.zeros(2, np.float32), os.path.splitext(name)[0], index)


GAZECAPTURE = common.DatasetFormat(
    name='gazecapture',
    label_kind='screen',
    description='GazeCapture face crops with on-screen targets (cm from the camera).',
    instructions=('the extracted GazeCapture archive: a folder of numbered recordings, each '
                  'with frames/, appleFace.json, appleLeftEye.json, appleRightEye.json, '
                  'faceGrid.json, dotInfo.json, info.json and screen.json.'),
    citation=('@inproceedings{cvpr2016_gazecapture, author={Krafka, Kyle and Khosla, Aditya '
              'and Kellnhofer, Petr and Kannan, Harini and Bhandarkar, Suchendra and Matusik, '
              'Wojciech and Torralba, Antonio}, title={Eye Tracking for Everyone}, '
              'booktitle={CVPR}, year={2016}}'),
    default_image_shape=(FACE_SIZE, FACE_SIZE, 3),
    default_samples_per_person=0,
    splits=('train', 'validation', 'test'),
    default_read_splits=('train', 'test'),
    plan=plan,
    generate=generate,
)
