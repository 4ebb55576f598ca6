"""NVGaze (Kim et al., CHI 2019): near-eye infrared eye images, in NVIDIA's own layouts.

The layouts are those that NVIDIA's NVGaze code writes and reads (MIT-licensed; read
in the XMebius/NVGazeCode mirror, ``DatasetGeneration/`` = ``NvGaze_Training/
DatasetGeneration/``, and ``Training/``); docs/DATASETS.md cites the line of each fact.
``data.manual_dir`` holds one entry per person (the entry's name is the person):

* a **footage folder** ``<person>/`` with ``footage_description.csv`` and the zip
  archives it names. The CSV has a header row; a column title's first ``_``-separated
  token is its type (``string``, ``double``, ``float``, ``int``, ``bool``; anything else
  is text). Column ``archive`` is a zip archive, relative to the footage folder unless
  the path exists as written. An image column is ``image_..._<L|R>_<view>``: its cells
  are file names inside that row's archive, for the left or right eye and the view
  index. Other columns (``float_gaze_x_degree``, ``regionmask_withskin_L_0``, ...) are
  per-row labels.
* an **H5 file** ``<person>.h5`` as ``createH5`` writes it: ``images`` ``[N, E, V, C, H, W]``
  uint8 (eyes left then right, views by index), attribute ``eyes``, and one 1-D dataset per
  CSV column (byte strings; ``mergeH5Files.py`` writes float32 instead).

Every image (each image column of each row; each eye and view of an H5 sample) becomes
one sample, in row order. Images wider than 8 bits are scaled like every builder's
(`common.scale_to_uint8`, ``data.image_value_range``).

The code names ``float_gaze_x_degree`` but fixes neither the vertical gaze column nor the
signs of either axis relative to the MPII convention, so the gaze labels are *declared*:
``data.nvgaze_pitch`` and ``data.nvgaze_yaw`` each name a column with an explicit sign,
e.g. ``'-float_gaze_x_degree'`` (yaw = -x in radians). The unit comes from the column
name (``_degree`` or ``_radian``). There is no default: a wrong guess would train on
mirrored labels without any error. No head pose (zeros); right eyes are not mirrored.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import zipfile

import numpy as np

from privateyes_jax.data.builders import common

DatasetError = common.DatasetError

CSV_NAME = 'footage_description.csv'
ARCHIVE_COLUMN = 'archive'
IMAGES_KEY = 'images'
EYES = ('L', 'R')  # The order of the H5 eye axis (left first).
# Angle units a column name can end with, as radians per unit.
UNITS = {'degree': np.pi / 180, 'degrees': np.pi / 180, 'deg': np.pi / 180,
         'radian': 1.0, 'radians': 1.0, 'rad': 1.0}
NUMERIC_TYPES = ('double', 'float', 'int')


# ------------------------------------------------------------------- gaze columns


@dataclasses.dataclass(frozen=True)
class GazeColumn:
  """``angle = sign * to_radians * value`` of column ``name``."""
  name: str
  sign: float
  to_radians: float

  def read(self, values: np.ndarray) -> np.ndarray:
    return self.sign * self.to_radians * np.asarray(values, np.float64)


def gaze_column(value, field: str) -> GazeColumn:
  """Parses ``data.nvgaze_pitch`` / ``data.nvgaze_yaw``: ``'+name'`` or ``'-name'``.

  Raises:
    DatasetError: one line, if unset, unsigned, or its unit is not in its name.
  """
  text = str(value or '').strip()
  example = "e.g. data.nvgaze_yaw='-float_gaze_x_degree', data.nvgaze_pitch='+float_gaze_y_degree'"
  if not text:
    raise DatasetError(f'nvgaze: set data.{field} to the signed gaze column that gives the MPII '
                       f'{field[7:]} (docs/DATASETS.md, "NVGaze"); NVIDIA\'s code does not fix '
                       f'the axes or signs, so there is no default ({example}).')
  if text[0] not in '+-' or len(text) < 2:
    raise DatasetError(f'nvgaze: data.{field}={text!r} needs an explicit sign, "+" or "-" before '
                       f'the column name ({example}).')
  name = text[1:].strip()
  parts = name.split('_')
  if parts[0] not in NUMERIC_TYPES or parts[-1].lower() not in UNITS:
    raise DatasetError(f'nvgaze: data.{field} column {name!r} must be numeric (float_, double_ '
                       f'or int_) and end with its unit (_degree or _radian).')
  return GazeColumn(name, 1.0 if text[0] == '+' else -1.0, UNITS[parts[-1].lower()])


def _options(data_config) -> dict:
  pitch = gaze_column(data_config.get('nvgaze_pitch', ''), 'nvgaze_pitch')
  yaw = gaze_column(data_config.get('nvgaze_yaw', ''), 'nvgaze_yaw')
  if pitch.name == yaw.name:
    raise DatasetError(f'nvgaze: data.nvgaze_pitch and data.nvgaze_yaw both read {pitch.name!r}.')
  images = data_config.get('nvgaze_images', ()) or ()
  if isinstance(images, str):
    images = [c for c in images.replace(',', ' ').split() if c]
  return {'pitch': dataclasses.asdict(pitch), 'yaw': dataclasses.asdict(yaw),
          'images': [str(c) for c in images]}


def _gaze(params: common.BuildParams, pitch_values, yaw_values) -> np.ndarray:
  """``[N, 2]`` (pitch, yaw) radians from the declared columns' values."""
  pitch = GazeColumn(**params.option('pitch')).read(pitch_values)
  yaw = GazeColumn(**params.option('yaw')).read(yaw_values)
  return np.stack([pitch, yaw], axis=1)


# ------------------------------------------------------------------- image columns


@dataclasses.dataclass(frozen=True)
class ImageColumn:
  name: str  # e.g. 'image_L_0'
  eye: str  # 'L' or 'R'
  view: int


def image_columns(titles) -> list[ImageColumn]:
  """The image columns among ``titles``: ``image_..._<L|R>_<view>`` (NVIDIA's writeH5File)."""
  columns = []
  for title in titles:
    parts = title.split('_')
    if len(parts) > 2 and parts[0] == 'image' and parts[-2] in EYES and parts[-1].isdigit():
      columns.append(ImageColumn(title, parts[-2], int(parts[-1])))
  return columns


def _chosen(columns: list[ImageColumn], params: common.BuildParams,
            where: str) -> list[ImageColumn]:
  if not columns:
    raise DatasetError(f'{where}: no image column (expected titles such as image_L_0, '
                       'image_R_0: image_..._<L|R>_<view>).')
  wanted = params.option('images') or [c.name for c in columns]
  by_name = {c.name: c for c in columns}
  missing = [w for w in wanted if w not in by_name]
  if missing:
    raise DatasetError(f'{where}: no image column {missing[0]!r} (data.nvgaze_images); image '
                       f'columns: {", ".join(by_name)}.')
  return [by_name[w] for w in wanted]


# ------------------------------------------------------------------ footage folders


@dataclasses.dataclass(frozen=True)
class FootagePlan:
  person: str
  csv_path: str
  columns: tuple[str, ...]  # The chosen image columns.
  archives: tuple[str, ...]  # [rows] absolute zip paths.
  members: tuple[tuple[str, ...], ...]  # [rows][columns] file names inside the archive.
  lines: tuple[int, ...]  # [rows] CSV line numbers.
  gaze: np.ndarray  # [rows, 2] (pitch, yaw) radians.


def read_footage_csv(path: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
  """``footage_description.csv``: ``(titles, [(line, {title: cell})])``.

  As NVIDIA's ``parseCSV``: comma-separated, first row the titles (stripped), columns
  with an empty title and cells beyond the titles are ignored.
  """
  try:
    with open(path, newline='', encoding='utf-8-sig') as f:
      rows = list(csv.reader(f, delimiter=','))
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise DatasetError(f'{path}: cannot read the CSV ({e}).') from e
  if not rows:
    raise DatasetError(f'{path}: empty; expected a header row such as "archive,image_L_0,...".')
  titles = [t.strip() for t in rows[0]]
  records = []
  for line, row in enumerate(rows[1:], start=2):
    if not any(cell.strip() for cell in row):
      continue
    if len(row) < len(titles) and any(titles[len(row):]):
      raise DatasetError(f'{path}:{line}: {len(row)} values for {len(titles)} columns.')
    records.append((line, {t: c.strip() for t, c in zip(titles, row) if t}))
  if not records:
    raise DatasetError(f'{path}: no samples.')
  return [t for t in titles if t], records


def _number(cell: str, path: str, line: int, column: str) -> float:
  try:
    return float(cell)
  except ValueError as e:
    raise DatasetError(f'{path}:{line}: column {column!r} must be a number, got {cell!r}.') from e


def plan_footage(folder: str, person: str, params: common.BuildParams) -> FootagePlan:
  path = os.path.join(folder, CSV_NAME)
  titles, records = read_footage_csv(path)
  needed = [ARCHIVE_COLUMN, params.option('pitch')['name'], params.option('yaw')['name']]
  absent = [c for c in needed if c not in titles]
  if absent:
    raise DatasetError(f'{path}: no column {absent[0]!r} (found {", ".join(titles)}).')
  columns = _chosen(image_columns(titles), params, path)
  archives, members, lines, pitch, yaw, listed = [], [], [], [], [], {}
  for line, cells in records:
    archive = cells[ARCHIVE_COLUMN]
    if not os.path.exists(archive):  # As NVIDIA's writeH5File: relative to the footage folder.
      archive = os.path.join(folder, archive)
    if archive not in listed:
      if not os.path.isfile(archive):
        raise DatasetError(f'{archive}: archive not found (named in {path}:{line}).')
      try:
        with zipfile.ZipFile(archive) as z:
          listed[archive] = set(z.namelist())
      except (OSError, zipfile.BadZipFile) as e:
        raise DatasetError(f'{archive}: cannot open the zip archive ({e}).') from e
    names = tuple(cells[c.name] for c in columns)
    for name in names:
      if name not in listed[archive]:
        raise DatasetError(f'{archive}: no image {name!r} (named in {path}:{line}).')
    archives.append(archive)
    members.append(names)
    lines.append(line)
    pitch.append(_number(cells[needed[1]], path, line, needed[1]))
    yaw.append(_number(cells[needed[2]], path, line, needed[2]))
  gaze = common.check_gaze(_gaze(params, pitch, yaw), path, [f'line {n}' for n in lines])
  common.check_count(len(records) * len(columns), params, path, person)
  return FootagePlan(person, path, tuple(c.name for c in columns), tuple(archives),
                     tuple(members), tuple(lines), gaze)


def generate_footage(plan: FootagePlan, params: common.BuildParams):
  archive, zf = None, None
  try:
    for row, (path, names) in enumerate(zip(plan.archives, plan.members)):
      if path != archive:  # Rows of one archive are usually consecutive: open each once.
        if zf is not None:
          zf.close()
        archive, zf = path, zipfile.ZipFile(path)
      for k, name in enumerate(names):
        where = f'{path}:{name} ({plan.csv_path}:{plan.lines[row]})'
        try:
          data = zf.read(name)
        except (OSError, zipfile.BadZipFile, KeyError) as e:
          raise DatasetError(f'{where}: cannot read from the archive ({e}).') from e
        image = common.decode_image(data, where, params.image_value_range)
        index = row * len(names) + k
        yield f'{plan.person}/{index:07d}', common.example(
            plan.person, common.resize_image(image, params.image_shape), plan.gaze[row],
            np.zeros(2, np.float32), f'{os.path.basename(path)}/{name}', index)
  finally:
    if zf is not None:
      zf.close()


# ------------------------------------------------------------------------ H5 files


@dataclasses.dataclass(frozen=True)
class H5Plan:
  person: str
  path: str
  slots: tuple[tuple[str, int, int], ...]  # (name, eye axis index, view axis index).
  gaze: np.ndarray  # [N, 2] (pitch, yaw) radians.


def _h5_slots(f, path: str, shape: tuple[int, ...],
              params: common.BuildParams) -> list[tuple[str, int, int]]:
  """Names the ``[E, V]`` image slots by the file's image-name datasets, eyes L then R.

  createH5 stores every CSV column, so ``image_..._L_0`` etc. are in the file and give
  the eyes and views; a file without them (mergeH5Files) has slots ``images_e0_v0``, ...
  """
  _, num_eyes, num_views = shape[:3]
  columns = image_columns(f.keys())
  if not columns:
    slots = [(f'{IMAGES_KEY}_e{e}_v{v}', e, v) for e in range(num_eyes) for v in range(num_views)]
    by_name = {name: (name, e, v) for name, e, v in slots}
  else:
    eyes = [eye for eye in EYES if any(c.eye == eye for c in columns)]
    if len(eyes) != num_eyes or any(c.view >= num_views for c in columns):
      raise DatasetError(f'{path}: image columns {[c.name for c in columns]} do not match '
                         f'{IMAGES_KEY} of shape {shape} ([N, eyes, views, C, H, W]).')
    by_name = {c.name: (c.name, eyes.index(c.eye), c.view) for c in columns}
  wanted = params.option('images') or list(by_name)
  missing = [w for w in wanted if w not in by_name]
  if missing:
    raise DatasetError(f'{path}: no image slot {missing[0]!r} (data.nvgaze_images); slots: '
                       f'{", ".join(by_name)}.')
  return [by_name[w] for w in wanted]


def _h5_numbers(f, key: str, path: str, n: int) -> np.ndarray:
  if key not in f:
    raise DatasetError(f'{path}: no dataset {key!r} (found {", ".join(sorted(f.keys()))}).')
  values = common.read_hdf5(f, key, path)
  try:
    # createH5 stores labels as byte strings (b'12.5'); mergeH5Files as float32.
    values = np.asarray(values).astype(np.float64).reshape(-1)
  except (TypeError, ValueError) as e:
    raise DatasetError(f'{path}: {key!r} is not numeric ({e}).') from e
  if values.shape != (n,):
    raise DatasetError(f'{path}: {key!r} has {values.size} values for {n} images.')
  return values


def plan_h5(path: str, person: str, params: common.BuildParams) -> H5Plan:
  with common.open_hdf5(path) as f:
    if IMAGES_KEY not in f:
      raise DatasetError(f'{path}: no dataset {IMAGES_KEY!r} '
                         f'(found {", ".join(sorted(f.keys()))}).')
    shape = tuple(f[IMAGES_KEY].shape)
    if len(shape) != 6 or shape[3] not in (1, 3) or shape[0] < 1:
      raise DatasetError(f'{path}: {IMAGES_KEY} has shape {shape}, expected [N, eyes, views, '
                         'C, H, W] with C 1 or 3 (NVIDIA createH5).')
    slots = _h5_slots(f, path, shape, params)
    n = shape[0]
    pitch = _h5_numbers(f, params.option('pitch')['name'], path, n)
    yaw = _h5_numbers(f, params.option('yaw')['name'], path, n)
  gaze = common.check_gaze(_gaze(params, pitch, yaw), path, [f'sample {i}' for i in range(n)])
  common.check_count(n * len(slots), params, path, person)
  return H5Plan(person, path, tuple(slots), gaze)


def generate_h5(plan: H5Plan, params: common.BuildParams):
  with common.open_hdf5(plan.path) as f:
    for i in range(len(plan.gaze)):
      sample = common.read_hdf5(f, IMAGES_KEY, plan.path, i)  # [E, V, C, H, W]
      for k, (name, eye, view) in enumerate(plan.slots):
        where = f'{plan.path} ({IMAGES_KEY}[{i}], {name})'
        image = common.to_uint8(sample[eye, view].transpose(1, 2, 0), where,
                                params.image_value_range)
        index = i * len(plan.slots) + k
        yield f'{plan.person}/{index:07d}', common.example(
            plan.person, common.resize_image(image, params.image_shape), plan.gaze[i],
            np.zeros(2, np.float32), f'{i:06d}/{name}', index)


# --------------------------------------------------------------------------- format


def plan(manual_dir: str, params: common.BuildParams) -> dict[str, list]:
  found = {}
  for entry in sorted(os.listdir(manual_dir)):
    full = os.path.join(manual_dir, entry)
    if entry.startswith('.'):
      continue
    if os.path.isdir(full) and os.path.isfile(os.path.join(full, CSV_NAME)):
      found[entry] = full
    elif os.path.isfile(full) and entry.lower().endswith(('.h5', '.hdf5')):
      found[os.path.splitext(entry)[0]] = full
  if not found:
    raise DatasetError(f'{manual_dir}: no NVGaze footage folder (<person>/{CSV_NAME}) and no '
                       '<person>.h5 file.')
  people = common.select_people(list(found), params, None, manual_dir)
  plans = [plan_footage(found[p], p, params) if os.path.isdir(found[p])
           else plan_h5(found[p], p, params) for p in people]
  return {'train': plans}


def generate(plans: list, params: common.BuildParams):
  for person_plan in plans:
    if isinstance(person_plan, FootagePlan):
      yield from generate_footage(person_plan, params)
    else:
      yield from generate_h5(person_plan, params)


NVGAZE = common.DatasetFormat(
    name='nvgaze',
    label_kind='gaze',
    description='NVGaze near-eye infrared eye images (NVIDIA footage folders or createH5 files).',
    instructions=('one entry per person: a footage folder holding footage_description.csv and '
                  'its zip archives, or a <person>.h5 written by NVIDIA\'s createH5; and '
                  'data.nvgaze_pitch, data.nvgaze_yaw naming the signed gaze columns (see '
                  'docs/DATASETS.md, "NVGaze").'),
    citation=('@inproceedings{kim2019nvgaze, author={Kim, Joohwan and Stengel, Michael and '
              'Majercik, Alexander and De Mello, Shalini and Dunn, David and Laine, Samuli and '
              'McGuire, Morgan and Luebke, David}, title={NVGaze: An Anatomically-Informed '
              'Dataset for Low-Latency, Near-Eye Gaze Estimation}, booktitle={CHI}, '
              'year={2019}}'),
    default_image_shape=(36, 60, 1),
    default_samples_per_person=0,
    splits=('train',),
    default_read_splits=('train',),
    plan=plan,
    generate=generate,
    options=_options,
)
