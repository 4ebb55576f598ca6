"""What every public-dataset builder shares: one TFDS builder factory, checks, conversions.

A dataset *format* (MPIIGaze, MPIIFaceGaze, GazeCapture, ...) is described by a
`DatasetFormat`: how to check the user's ``manual_dir`` and plan the work
(``plan``: fast, structural, before anything is written) and how to turn one planned
split into examples (``generate``: reads the files; raises `DatasetError` naming
the file on bad content). `make_builder` wraps a format in a
``tfds.core.GeneratorBasedBuilder`` (not registered with TFDS, array_record files,
TensorFlow not needed) and `load` prepares it once and reads it back into a
`GazeDataset` through ``as_data_source``.

TFDS writes into an ``incomplete.*`` directory and renames it only when every split
is written, and it deletes that directory when generation raises: a failed build
leaves nothing that a later run would read.

Conventions (see docs/DATASETS.md): gaze labels are (pitch, yaw) radians in the MPII
convention of `privateyes_jax.metrics` (pitch > 0 looks up, yaw > 0 looks towards
the camera's -x, i.e. the image's left, the subject's right); head pose is the same
convention applied to the direction the face points; screen labels are 2-D targets
in the dataset's unit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
import os
import types
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
from absl import logging

from privateyes_jax import metrics
from privateyes_jax.data import base
from privateyes_jax.data import tfds_source

DatasetError = base.DatasetError

# The 15 people of MPIIGaze / MPIIFaceGaze.
MPII_PEOPLE = tuple(f'p{i:02d}' for i in range(15))
# Samples per person in the MPII evaluation subsets (1500 left + 1500 right eyes).
MPII_SAMPLES_PER_PERSON = 3000
# Everybody in these datasets looks towards the screen beside the camera: a gaze with
# |yaw| > 90 deg would point away from it, so it means a unit or sign error (typically
# degrees read as radians). Head poses are only held to the angles' natural ranges.
MAX_PITCH = np.pi / 2
MAX_GAZE_YAW = np.pi / 2
MAX_HEAD_YAW = np.pi

Example = dict[str, Any]
KeyedExample = tuple[str, Example]


@dataclasses.dataclass(frozen=True)
class BuildParams:
  """Everything that changes the prepared files (it names the TFDS config).

  Attributes:
    image_shape: ``(height, width, channels)`` of the stored images.
    people: the people to prepare, in order; empty = the format's default.
    expected_samples_per_person: refuse a person with another count; 0 = any.
    options: format-specific settings (JSON-serialisable).
    image_value_range: ``(low, high)`` pixel values of images wider than 8 bits
      (16-bit, 32-bit integer or float) that map to 0 and 255; None = each image's
      own minimum and maximum (see `scale_to_uint8`).
  """
  image_shape: tuple[int, int, int]
  people: tuple[str, ...]
  expected_samples_per_person: int
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  image_value_range: tuple[float, float] | None = None

  def option(self, name: str, default=None):
    return self.options.get(name, default)


@dataclasses.dataclass(frozen=True)
class DatasetFormat:
  """One on-disk format and how to turn it into per-sample examples.

  Attributes:
    name: registry name and TFDS builder name (``config.data.name``).
    label_kind: ``'gaze'`` or ``'screen'``.
    description: one line for the TFDS DatasetInfo.
    instructions: what ``data.manual_dir`` must contain (shown in errors).
    citation: BibTeX of the dataset's paper.
    default_image_shape: ``(height, width, channels)`` when ``data.image_size`` is unset.
    default_samples_per_person: expected count when ``data.expected_samples_per_person``
      is unset (0 = any).
    splits: the TFDS splits written, in reading order.
    default_read_splits: the splits `load` concatenates when ``data.splits`` is unset.
    plan: ``(manual_dir, params) -> {split: plan}``; checks structure, raises
      `DatasetError` naming the file. Runs before anything is written.
    generate: ``(plan, params) -> iterator of (key, example)``.
    options: ``data_config -> dict`` of format-specific settings.
    version: bump when the conversion changes, so old prepared data is not reused
      (1.1.0: the ``index`` feature, source order, 16-bit scaling, absent empty splits).
  """
  name: str
  label_kind: str
  description: str
  instructions: str
  citation: str
  default_image_shape: tuple[int, int, int]
  default_samples_per_person: int
  splits: tuple[str, ...]
  default_read_splits: tuple[str, ...]
  plan: Callable[[str, BuildParams], dict[str, Any]]
  generate: Callable[[Any, BuildParams], Iterator[KeyedExample]]
  options: Callable[[Any], dict] = lambda data_config: {}
  version: str = '1.1.0'


# ----------------------------------------------------------------------------- config


def build_params(fmt: DatasetFormat, data_config) -> BuildParams:
  """Reads ``data.image_size``, ``data.channels``, ``data.people``,
  ``data.expected_samples_per_person`` and ``data.image_value_range`` into `BuildParams`.

  Each is optional; an empty or neutral value (``()``, ``0``, ``''``, ``-1`` for the
  expected count) means the format's default, so a config can carry all fields.
  """
  height, width, channels = fmt.default_image_shape
  size = data_config.get('image_size', None)
  if size:
    if isinstance(size, (int, np.integer)):
      height = width = int(size)
    elif len(size) == 1:
      height = width = int(size[0])
    elif len(size) == 2:
      height, width = (int(s) for s in size)
    else:
      raise ValueError(f'data.image_size must be an int or (height, width), got {size!r}.')
  channels = int(data_config.get('channels', 0) or channels)
  if height < 1 or width < 1 or channels not in (1, 3):
    raise ValueError(f'Image shape ({height}, {width}, {channels}) is invalid: sizes must be '
                     '>= 1 and data.channels 1 (grayscale) or 3 (RGB).')
  people = data_config.get('people', ()) or ()
  if isinstance(people, str):
    people = [p for p in people.replace(',', ' ').split() if p]
  expected = data_config.get('expected_samples_per_person', None)
  if expected is None or expected < 0:  # Unset (None or -1 in a config): the format's count.
    expected = fmt.default_samples_per_person
  return BuildParams(image_shape=(height, width, channels), people=tuple(str(p) for p in people),
                     expected_samples_per_person=int(expected),
                     options=fmt.options(data_config),
                     image_value_range=_value_range(data_config.get('image_value_range', None)))


def _value_range(value) -> tuple[float, float] | None:
  """``data.image_value_range``: unset/empty -> None, else ``(low, high)`` with low < high."""
  if value is None or (not isinstance(value, str) and len(value) == 0) or value == '':
    return None
  if isinstance(value, str):
    value = [v for v in value.replace(',', ' ').split() if v]
  try:
    low, high = (float(v) for v in value)
  except (TypeError, ValueError) as e:
    raise ValueError(f'data.image_value_range must be (low, high), got {value!r}.') from e
  if not (np.isfinite(low) and np.isfinite(high) and low < high):
    raise ValueError(f'data.image_value_range must be finite with low < high, got {value!r}.')
  return low, high


def manual_dir_of(data_config) -> str:
  """The user's ``data.manual_dir``, absolute; '' if unset."""
  path = data_config.get('manual_dir', '') or ''
  return os.path.abspath(os.path.expanduser(path)) if path else ''


def _config_name(fmt: DatasetFormat, params: BuildParams, manual_dir: str) -> str:
  """A readable, unique TFDS config name: different settings or sources never share files."""
  h, w, c = params.image_shape
  settings = {'manual_dir': manual_dir, 'people': params.people,
              'expected': params.expected_samples_per_person, 'options': dict(params.options)}
  if params.image_value_range is not None:  # Only when set: older names stay valid.
    settings['image_value_range'] = params.image_value_range
  fingerprint = json.dumps(settings, sort_keys=True)
  digest = hashlib.sha1(fingerprint.encode()).hexdigest()[:10]
  return f'{h}x{w}x{c}_{digest}'


# ---------------------------------------------------------------------------- builder


def make_builder(fmt: DatasetFormat, data_config):
  """The TFDS builder of ``fmt`` with the settings in ``data_config`` (not prepared yet)."""
  tfds = tfds_source._tfds()  # pylint: disable=protected-access
  params = build_params(fmt, data_config)
  manual_dir = manual_dir_of(data_config)
  from privateyes_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  data_dir = data_config.get('data_dir', '') or data_lib.default_data_dir()

  def info(self):
    return tfds.core.DatasetInfo(
        builder=self, description=fmt.description, citation=fmt.citation,
        features=tfds_source.gaze_features(params.image_shape),
        metadata=tfds.core.MetadataDict(
            label_kind=fmt.label_kind, manual_dir=manual_dir, people=list(params.people),
            expected_samples_per_person=params.expected_samples_per_person,
            options=dict(params.options),
            image_value_range=list(params.image_value_range or ())))

  def split_generators(self, dl_manager):
    del dl_manager  # `load` checked manual_dir already, with a clearer message.
    plans = fmt.plan(manual_dir, params)
    return {split: self._generate_examples(plan) for split, plan in plans.items()}

  def generate_examples(self, plan):
    del self
    yield from fmt.generate(plan, params)

  config = tfds.core.BuilderConfig(name=_config_name(fmt, params, manual_dir),
                                   description=f'{fmt.name} from {manual_dir or "(unset)"}')
  namespace = {'name': fmt.name, 'VERSION': tfds.core.Version(fmt.version),
               'MANUAL_DOWNLOAD_INSTRUCTIONS': fmt.instructions, 'BUILDER_CONFIGS': [config],
               '_info': info, '_split_generators': split_generators,
               '_generate_examples': generate_examples, '__doc__': fmt.description,
               '__module__': __name__}
  builder_cls = types.new_class(_class_name(fmt.name), (tfds.core.GeneratorBasedBuilder,),
                                {'skip_registration': True},
                                lambda ns: ns.update(namespace))
  return builder_cls(config=config.name, data_dir=data_dir, file_format='array_record')


def _class_name(name: str) -> str:
  return ''.join(part.capitalize() for part in name.split('_'))


def check_manual_dir(fmt: DatasetFormat, manual_dir: str) -> None:
  if not manual_dir:
    raise DatasetError(f'Dataset {fmt.name!r} is prepared from files you download yourself: '
                       f'set data.manual_dir to {fmt.instructions}')
  if not os.path.isdir(manual_dir):
    raise DatasetError(f'data.manual_dir {manual_dir} is not a directory; it must hold '
                       f'{fmt.instructions}')


def prepare(fmt: DatasetFormat, data_config, overwrite: bool = False):
  """Prepares ``fmt`` once (or again with ``overwrite``); returns the prepared builder."""
  tfds = tfds_source._tfds()  # pylint: disable=protected-access
  builder = make_builder(fmt, data_config)
  if builder.is_prepared() and not overwrite:
    return builder
  manual_dir = manual_dir_of(data_config)
  check_manual_dir(fmt, manual_dir)
  mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, download_mode=mode))
  return builder


def read_splits(fmt: DatasetFormat, data_config) -> tuple[str, ...]:
  """``data.splits`` ('train+test', or a sequence) or the format's default splits."""
  splits = data_config.get('splits', '') or fmt.default_read_splits
  if isinstance(splits, str):
    splits = [s for s in splits.replace(',', '+').split('+') if s]
  unknown = [s for s in splits if s not in fmt.splits]
  if unknown:
    raise ValueError(f'data.splits {unknown} unknown for {fmt.name}; available: {fmt.splits}.')
  return tuple(splits)


def present_splits(fmt: DatasetFormat, builder, data_config) -> tuple[str, ...]:
  """The splits to read that were prepared (a format leaves out empty splits).

  Of the format's default splits, those that exist are read (a warning names the rest);
  a split named in ``data.splits`` must exist.

  Raises:
    DatasetError: one line naming the absent split(s) and the prepared ones.
  """
  splits = read_splits(fmt, data_config)
  prepared = list(builder.info.splits.keys())
  missing = [s for s in splits if s not in prepared]
  explicit = bool(data_config.get('splits', ''))
  if missing and (explicit or len(missing) == len(splits)):
    raise DatasetError(
        f'{fmt.name}: split {"+".join(missing)} was not prepared because none of the chosen '
        f'people (data.people, or the recordings in {manual_dir_of(data_config)}) belongs to '
        f'it; prepared splits: {"+".join(prepared) or "none"}; set data.splits to those.')
  if missing:
    logging.warning('%s: reading splits %s; %s not prepared (none of the chosen people is '
                    'in it).', fmt.name, '+'.join(s for s in splits if s in prepared),
                    '+'.join(missing))
  return tuple(s for s in splits if s in prepared)


def load(fmt: DatasetFormat, data_config, lazy_images: bool = False) -> base.GazeDataset:
  """Prepares ``fmt`` (once) and reads its splits, people in split order then by name.

  ``lazy_images``: images stay on disk (`tfds_source.read_gaze_dataset`).
  """
  read_splits(fmt, data_config)  # An unknown split name fails before preparing.
  builder = prepare(fmt, data_config)
  splits = present_splits(fmt, builder, data_config)
  people = []
  for split in splits:
    people.extend(tfds_source.read_gaze_dataset(builder, split, fmt.name, fmt.label_kind,
                                                 lazy_images=lazy_images).people)
  return base.GazeDataset(name=fmt.name, people=tuple(people), label_kind=fmt.label_kind)


# ---------------------------------------------------------------------------- people


def select_people(found: Sequence[str], params: BuildParams, default: Sequence[str] | None,
                  where: str) -> list[str]:
  """The people to prepare: ``params.people``, else ``default``, else everyone found.

  Raises:
    DatasetError: naming ``where`` and the first person that is requested but missing.
  """
  wanted = list(params.people) or list(default if default is not None else sorted(found))
  missing = [p for p in wanted if p not in set(found)]
  if missing:
    raise DatasetError(f'{where}: no data for person {missing[0]}'
                       + (f' (and {len(missing) - 1} more: {", ".join(missing[1:])})'
                          if len(missing) > 1 else '')
                       + f'; found {", ".join(sorted(found)) or "nobody"}.')
  if not wanted:
    raise DatasetError(f'{where}: no people found.')
  return wanted


def check_count(n: int, params: BuildParams, where: str, person: str) -> None:
  expected = params.expected_samples_per_person
  if expected and n != expected:
    raise DatasetError(f'{where}: person {person} has {n} samples, expected {expected} '
                       '(set data.expected_samples_per_person=0 to accept any count).')


# --------------------------------------------------------------------- label checks


def check_gaze(pitchyaw: np.ndarray, where: str,
               sample_names: Sequence[str] | None = None) -> np.ndarray:
  """``[N, 2]`` gaze (pitch, yaw) radians, finite and towards the camera, as float32."""
  return _check_angles(pitchyaw, where, 'gaze', MAX_GAZE_YAW, sample_names)


def check_head_pose(pitchyaw: np.ndarray, where: str,
                    sample_names: Sequence[str] | None = None) -> np.ndarray:
  """``[N, 2]`` head pose (pitch, yaw) radians, finite and in range, as float32."""
  return _check_angles(pitchyaw, where, 'head pose', MAX_HEAD_YAW, sample_names)


def _sample_name(i: int, sample_names: Sequence[str] | None) -> str:
  return sample_names[i] if sample_names is not None else f'sample {i}'


def _check_angles(pitchyaw, where, what, max_yaw, sample_names):
  arr = np.asarray(pitchyaw, np.float64)
  if arr.ndim != 2 or arr.shape[1] != 2:
    raise DatasetError(f'{where}: {what} must be [samples, 2] (pitch, yaw), got {arr.shape}.')
  bad = ~np.isfinite(arr).all(1) | (np.abs(arr[:, 0]) > MAX_PITCH) | (np.abs(arr[:, 1]) > max_yaw)
  if bad.any():
    i = int(np.flatnonzero(bad)[0])
    raise DatasetError(
        f'{where}: {what} of {_sample_name(i, sample_names)} is {arr[i].tolist()}, out of range '
        f'(|pitch| <= {np.degrees(MAX_PITCH):.0f} deg, |yaw| <= {np.degrees(max_yaw):.0f} deg, '
        f'in radians); {int(bad.sum())} of {len(arr)} samples are. Degrees instead of radians?')
  return arr.astype(np.float32)


def check_screen(targets: np.ndarray, where: str, max_abs: float | None = None,
                 sample_names: Sequence[str] | None = None) -> np.ndarray:
  """``[N, 2]`` finite screen targets (optionally within ``max_abs``), as float32."""
  arr = np.asarray(targets, np.float64)
  if arr.ndim != 2 or arr.shape[1] != 2:
    raise DatasetError(f'{where}: screen targets must be [samples, 2], got {arr.shape}.')
  bad = ~np.isfinite(arr).all(1)
  if max_abs is not None:
    bad |= (np.abs(arr) > max_abs).any(1)
  if bad.any():
    i = int(np.flatnonzero(bad)[0])
    limit = f' (|value| <= {max_abs})' if max_abs is not None else ''
    raise DatasetError(f'{where}: screen target of {_sample_name(i, sample_names)} is '
                       f'{arr[i].tolist()}, not finite or out of range{limit}.')
  return arr.astype(np.float32)


# ------------------------------------------------------------------------ geometry


def gaze_vectors_to_pitchyaw(vectors: np.ndarray, where: str) -> np.ndarray:
  """``[N, 3]`` gaze directions (camera coordinates) -> ``[N, 2]`` MPII (pitch, yaw).

  Rejects zero or non-finite vectors and vectors pointing away from the camera
  (z >= 0): the gaze in these datasets always points from the eye towards the screen,
  which is beside the camera.
  """
  v = np.asarray(vectors, np.float64)
  if v.ndim != 2 or v.shape[1] != 3:
    raise DatasetError(f'{where}: gaze vectors must be [samples, 3], got {v.shape}.')
  norm = np.linalg.norm(v, axis=1)
  bad = ~np.isfinite(v).all(1) | ~(norm > 0) | ~(v[:, 2] < 0)
  if bad.any():
    i = int(np.flatnonzero(bad)[0])
    raise DatasetError(f'{where}: gaze vector of sample {i} is {v[i].tolist()}: it must be '
                       'finite, non-zero and point towards the camera (z < 0).')
  return check_gaze(metrics.vector_to_pitchyaw(v), where)


def rotation_vectors_to_matrices(rotation_vectors: np.ndarray) -> np.ndarray:
  """``[N, 3]`` Rodrigues rotation vectors -> ``[N, 3, 3]`` rotation matrices (as cv2.Rodrigues)."""
  from scipy.spatial.transform import Rotation  # pylint: disable=g-import-not-at-top
  return Rotation.from_rotvec(np.asarray(rotation_vectors, np.float64)).as_matrix()


def head_rotations_to_pitchyaw(rotations: np.ndarray, where: str) -> np.ndarray:
  """``[N, 3, 3]`` head rotations (head -> camera) -> ``[N, 2]`` head (pitch, yaw).

  The head's z axis points backwards out of the head, so the face points along its
  negation; the head pose is that facing direction in the MPII gaze convention:
  ``pitch = arcsin(z_y)``, ``yaw = arctan2(z_x, z_z)`` of the z axis (column 2), the
  conversion of the MPIIGaze authors' code and of hysts/pytorch_mpiigaze.
  """
  z_axis = np.asarray(rotations, np.float64)[:, :, 2]
  return check_head_pose(metrics.vector_to_pitchyaw(-z_axis), where)


def mirror_pitchyaw(pitchyaw: np.ndarray) -> np.ndarray:
  """Angles of the horizontally mirrored image: x -> -x negates yaw, keeps pitch."""
  return np.asarray(pitchyaw, np.float32) * np.array([1.0, -1.0], np.float32)


# -------------------------------------------------------------------------- images


def optional_import(module: str, needed_for: str):
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise ImportError(f'{module} is needed for {needed_for} (pip install {module}).') from e


def scale_to_uint8(image: np.ndarray, where: str,
                   value_range: tuple[float, float] | None = None) -> np.ndarray:
  """One image wider than 8 bits (16-bit, 32-bit integer, float) -> uint8, linearly.

  Lab IR and machine-vision cameras write 16-bit images whose real range is far below
  65535 (a 10- or 12-bit sensor, a dim near-eye scene), so the full type range would
  leave them nearly black and clipping at 255 would leave them white. With
  ``value_range=None`` each image is stretched from its own minimum to its own maximum
  (a constant image becomes 0); with ``value_range=(low, high)`` (``data.image_value_range``,
  e.g. the sensor's range) ``low`` maps to 0 and ``high`` to 255 for every image, which
  keeps absolute brightness comparable across a person's images. A pixel outside the
  declared range is refused, never clipped.

  Raises:
    DatasetError: naming ``where`` for non-finite pixels or pixels outside ``value_range``.
  """
  arr = np.asarray(image, np.float64)
  if arr.size == 0 or not np.isfinite(arr).all():
    raise DatasetError(f'{where}: image is empty or has non-finite pixel values.')
  lo, hi = float(arr.min()), float(arr.max())
  if value_range is not None:
    if lo < value_range[0] or hi > value_range[1]:
      raise DatasetError(f'{where}: pixel values span [{lo:g}, {hi:g}], outside '
                         f'data.image_value_range [{value_range[0]:g}, {value_range[1]:g}].')
    lo, hi = value_range
  if hi <= lo:
    return np.zeros(arr.shape, np.uint8)
  return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def to_uint8(images: np.ndarray, where: str, value_range: tuple[float, float] | None = None,
             stacked: bool = False) -> np.ndarray:
  """Pixel arrays -> uint8.

  uint8 is kept. uint16 arrays are 16-bit images and are scaled by `scale_to_uint8`
  (each image by its own range, or by ``value_range``); so is any other numeric dtype
  when ``value_range`` is given. Otherwise (e.g. MATLAB doubles) values must already be
  in [0, 255] and are rounded.

  Args:
    images: one image, or a stack of images along axis 0 if ``stacked``.
    where: file (and variable) named in errors.
    value_range: ``data.image_value_range`` (`BuildParams.image_value_range`).
    stacked: scale each ``images[i]`` by its own range instead of the whole array's.
  """
  arr = np.asarray(images)
  if arr.dtype == np.uint8:
    return arr
  if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
    raise DatasetError(f'{where}: images have dtype {arr.dtype}, expected numbers in [0, 255].')
  if arr.dtype == np.uint16 or value_range is not None:
    if stacked:
      return np.stack([scale_to_uint8(a, f'{where} [{i}]', value_range) for i, a in enumerate(arr)]
                      ) if len(arr) else arr.astype(np.uint8)
    return scale_to_uint8(arr, where, value_range)
  lo, hi = float(np.min(arr)), float(np.max(arr))
  if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0 and hi <= 255):
    raise DatasetError(f'{where}: pixel values span [{lo}, {hi}], expected [0, 255] (set '
                       'data.image_value_range=(low, high) to scale wider images to 8 bits).')
  return np.round(arr).astype(np.uint8)


def resize_image(image: np.ndarray, image_shape: tuple[int, int, int]) -> np.ndarray:
  """``[H, W]`` or ``[H, W, C]`` uint8 -> ``image_shape`` uint8 (grayscale/RGB, antialiased).

  Three-channel inputs must be RGB; grayscale output uses the ITU-R 601 luma weights.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  height, width, channels = image_shape
  arr = np.asarray(image, np.uint8)
  if arr.ndim == 3 and arr.shape[-1] == 1:
    arr = arr[..., 0]
  pil = Image.fromarray(arr)
  pil = pil.convert('L' if channels == 1 else 'RGB')
  if pil.size != (width, height):
    pil = pil.resize((width, height), Image.Resampling.BILINEAR)
  out = np.asarray(pil, np.uint8)
  return out[..., None] if channels == 1 else out


# Pillow modes of images wider than 8 bits: 16-bit unsigned (little/big/native endian),
# 32-bit signed integer (how Pillow opens many 16-bit PNGs and TIFFs) and 32-bit float.
WIDE_IMAGE_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I', 'F')


def read_image(path: str, value_range: tuple[float, float] | None = None) -> np.ndarray:
  """Decodes an image file (PNG, JPEG, BMP, TIFF, ...) to uint8 ``[H, W]`` or ``[H, W, 3]`` RGB.

  8-bit grayscale and RGB are kept; images wider than 8 bits (`WIDE_IMAGE_MODES`) are
  scaled by `scale_to_uint8` (their own range, or ``value_range``); other modes (palette,
  RGBA, CMYK, ...) are converted to RGB.

  Raises:
    DatasetError: naming ``path`` if it is missing, truncated, not an image, or its
      pixels fall outside ``value_range``.
  """
  if not os.path.isfile(path):
    raise DatasetError(f'{path}: image file not found.')
  with open(path, 'rb') as f:
    return decode_image(f.read(), path, value_range)


def decode_image(data: bytes, where: str,
                 value_range: tuple[float, float] | None = None) -> np.ndarray:
  """`read_image` of encoded bytes (e.g. a member of a zip archive), errors naming ``where``."""
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(io.BytesIO(data)) as img:
      img.load()  # Decode now, so a truncated file fails here and not later.
      if img.mode not in WIDE_IMAGE_MODES and img.mode not in ('L', 'RGB'):
        img = img.convert('RGB')
      pixels = np.asarray(img)
      mode = img.mode
  except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as e:
    raise DatasetError(f'{where}: cannot read the image ({e}).') from e
  if mode in WIDE_IMAGE_MODES:
    return scale_to_uint8(pixels, where, value_range)
  return pixels.astype(np.uint8, copy=False)


def load_mat_v5(path: str) -> dict:
  """Reads a MATLAB v5 .mat file with structs as attribute objects and squeezed arrays.

  Raises:
    DatasetError: naming ``path`` if it is missing, truncated or not MATLAB v5.
  """
  from scipy import io as scipy_io  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise DatasetError(f'{path}: file not found.')
  try:
    return scipy_io.loadmat(path, struct_as_record=False, squeeze_me=True)
  except Exception as e:  # scipy raises many types for damaged files; all mean "unreadable".
    raise DatasetError(f'{path}: cannot read the MATLAB file ({type(e).__name__}: {e}); '
                       'is it truncated or damaged?') from e


def open_hdf5(path: str):
  """Opens an HDF5 (or MATLAB v7.3) file for reading.

  Raises:
    DatasetError: naming ``path`` if it is missing, truncated or not HDF5.
  """
  h5py = optional_import('h5py', 'HDF5 and MATLAB v7.3 files')
  if not os.path.isfile(path):
    raise DatasetError(f'{path}: file not found.')
  try:
    return h5py.File(path, 'r')
  except OSError as e:
    raise DatasetError(f'{path}: cannot open as HDF5 ({e}); is it truncated or damaged?') from e


def read_hdf5(h5file, key: str, where: str, index=()) -> np.ndarray:
  """``h5file[key][index]`` as NumPy, with a `DatasetError` naming the file and key."""
  if key not in h5file:
    raise DatasetError(f'{where}: no {key!r} in the file (found {sorted(h5file.keys())}).')
  try:
    return np.asarray(h5file[key][index])
  except (OSError, KeyError, ValueError, TypeError) as e:
    raise DatasetError(f'{where}: cannot read {key!r} ({e}); is the file truncated?') from e


# ------------------------------------------------------------------------- summary


def describe(dataset: base.GazeDataset, split_people: Mapping[str, int] | None = None) -> str:
  """A human-readable summary: people, samples per person, label and head-pose ranges."""
  counts = np.array([p.num_samples for p in dataset.people])
  labels = np.concatenate([p.labels for p in dataset.people]).astype(np.float64)
  heads = np.concatenate([p.head_pose for p in dataset.people]).astype(np.float64)
  lines = [f'dataset {dataset.name}: {len(dataset.people)} people, {counts.sum()} samples, '
           f'images {dataset.image_shape} uint8, labels: {dataset.label_kind}']
  if split_people:
    lines.append('people per split: ' + ', '.join(f'{k} {v}' for k, v in split_people.items()))
  lines.append(f'samples per person: min {counts.min()}, median {int(np.median(counts))}, '
               f'max {counts.max()}')
  lines.append('  ' + ', '.join(f'{p.person}: {p.num_samples}' for p in dataset.people))
  if dataset.label_kind == 'gaze':
    deg = np.degrees(labels)
    lines.append(f'gaze pitch [{deg[:, 0].min():.1f}, {deg[:, 0].max():.1f}] deg, '
                 f'yaw [{deg[:, 1].min():.1f}, {deg[:, 1].max():.1f}] deg')
  else:
    lines.append(f'screen target x [{labels[:, 0].min():.2f}, {labels[:, 0].max():.2f}], '
                 f'y [{labels[:, 1].min():.2f}, {labels[:, 1].max():.2f}] (dataset units)')
  if np.any(heads):
    hdeg = np.degrees(heads)
    lines.append(f'head pitch [{hdeg[:, 0].min():.1f}, {hdeg[:, 0].max():.1f}] deg, '
                 f'yaw [{hdeg[:, 1].min():.1f}, {hdeg[:, 1].max():.1f}] deg')
  else:
    lines.append('head pose: not provided (zeros)')
  return '\n'.join(lines)


def example(person: str, image: np.ndarray, label, head_pose, sample_id: str,
            index: int) -> Example:
  """One TFDS example in the `gaze_features` layout.

  ``index`` is the sample's position in its person's source order (list, CSV or file
  order); readers restore that order from it, whatever order the examples are stored in.
  """
  return {'person': person, 'image': image, 'label': np.asarray(label, np.float32),
          'head_pose': np.asarray(head_pose, np.float32), 'sample_id': str(sample_id),
          'index': int(index)}
