"""Read-only inspection of runs: list, show, parameters, evaluation, diff and export.

The library side of ``experiments/inspect_run.py``. Every function here only
reads a workdir (see `privateyes_jax.workdir` for its layout), so it is safe on a
run that is still training:

* checkpoints are opened through a *read-only* orbax ``CheckpointManager``: it
  creates no directory, deletes nothing, takes no lock, and lists only committed
  steps (a save in progress lives in a ``*.orbax-checkpoint-tmp*`` directory that
  orbax ignores and that we leave alone);
* ``metrics.jsonl`` is read up to its last complete line;
* a checkpoint that cannot be read is reported with its path, never deleted.

Only the parameters are restored (orbax partial restore against the checkpoint's
own metadata), so neither the model nor the optimizer has to be rebuilt to look
at them. Federated runs hold the global model under ``params``, centralized runs
under ``params``, local-only runs one model per client under ``client_params``
(a leading ``[clients]`` axis).

Errors about the user's input are `WorkdirError` or ``ValueError`` (a missing
step lists the saved ones), unreadable checkpoints `CheckpointError`; the entry
point prints them as one line.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re
import tempfile
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from privateyes_jax import workdir as workdir_lib
from privateyes_jax.workdir import CheckpointError, WorkdirError

PARAM_KEYS = ('params', 'client_params')  # Global model; local-only: one per client.
# Folders of a workdir that never hold runs (skipped when looking for runs).
_NOT_RUNS = (workdir_lib.CHECKPOINT_DIR, workdir_lib.TENSORBOARD_DIR, workdir_lib.VIEWS_DIR)
_VIEW_FILE = re.compile(r'round_(\d+)\.npz$')


# ------------------------------------------------------------------ finding runs
def is_workdir(path: str) -> bool:
  """Whether ``path`` is a run's workdir: its ``config.json`` is a training config.

  An attack directory or a sweep's group directory also holds a ``config.json``
  (the attack's identity, the group's members); they are not runs.
  """
  config_path = os.path.join(path, workdir_lib.CONFIG_FILE)
  if not os.path.isfile(config_path):
    return False
  try:
    with open(config_path) as f:
      config = json.load(f)
  except (OSError, ValueError):
    return True  # A run whose config is unreadable: reported as such by the caller.
  return isinstance(config, dict) and 'method' in config


def find_runs(root: str) -> list[str]:
  """The workdirs at or under ``root``, sorted (``fold_XX/`` sub-runs included).

  Raises:
    WorkdirError: ``root`` is not a directory or holds no run.
  """
  if not os.path.isdir(root):
    raise WorkdirError(f'{root!r} is not a directory. Pass --workdir=a run\'s directory '
                       '(one holding config.json) or a folder of runs.')
  runs = []
  for directory, subdirs, _ in os.walk(root):
    subdirs[:] = sorted(d for d in subdirs if d not in _NOT_RUNS)
    if is_workdir(directory):
      runs.append(directory)
  if not runs:
    raise WorkdirError(f'No run found in {root!r}: a run\'s workdir is a directory holding '
                       f'{workdir_lib.CONFIG_FILE} (written by experiments.train).')
  return sorted(runs)


def _require_workdir(path: str) -> None:
  if not is_workdir(path):
    what = 'does not exist' if not os.path.exists(path) else 'holds no config.json'
    raise WorkdirError(
        f'{path!r} is not a run\'s workdir: it {what}. A workdir is the --workdir of '
        'experiments.train, a directory holding config.json, metrics.jsonl and '
        'checkpoints/; use the "list" command on a parent folder to find runs.')


def load_config(path: str) -> ml_collections.ConfigDict:
  """The resolved config of the run in ``path`` (lists back to tuples, as configs hold)."""
  _require_workdir(path)
  config_path = os.path.join(path, workdir_lib.CONFIG_FILE)
  try:
    with open(config_path) as f:
      raw = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise WorkdirError(f'{config_path} is unreadable: {e}.') from e
  return ml_collections.ConfigDict(_tuples(raw))


def _tuples(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def method_label(config) -> str:
  from privateyes_jax.federated import engine  # pylint: disable=g-import-not-at-top
  return engine.method_label(config)


def step_unit(config) -> str:
  """``round`` for federated and local-only runs, ``step`` for centralized ones."""
  return 'step' if config.method == 'centralized' else 'round'


def read_metrics(path: str) -> list[dict]:
  """The complete rows of the run's ``metrics.jsonl`` (a cut last line is skipped)."""
  _require_workdir(path)
  return workdir_lib.read_metrics(os.path.join(path, workdir_lib.METRICS_FILE))


def view_rounds(path: str) -> list[int]:
  """Rounds whose observer view was recorded in ``views/`` (complete files only)."""
  names = glob.glob(os.path.join(path, workdir_lib.VIEWS_DIR, 'round_*.npz'))
  return sorted(int(m.group(1)) for m in (_VIEW_FILE.search(os.path.basename(n))
                                          for n in names) if m)


# ------------------------------------------------------------------ checkpoints
class _ReadOnlyCheckpoints:
  """A read-only orbax ``CheckpointManager`` over ``<workdir>/checkpoints``."""

  def __init__(self, path: str):
    _require_workdir(path)
    self.directory = os.path.abspath(os.path.join(path, workdir_lib.CHECKPOINT_DIR))
    self._manager = None
    if os.path.isdir(self.directory):  # Never let orbax create it.
      self._manager = ocp.CheckpointManager(
          self.directory, item_handlers=ocp.PyTreeCheckpointHandler(),
          options=ocp.CheckpointManagerOptions(read_only=True, create=False,
                                               save_interval_steps=0))

  def __enter__(self) -> '_ReadOnlyCheckpoints':
    return self

  def __exit__(self, *exc) -> None:
    if self._manager is not None:
      self._manager.close()

  def steps(self) -> list[int]:
    return [] if self._manager is None else sorted(self._manager.all_steps())

  def resolve(self, step: int | None) -> int:
    """``step``, or the latest saved step when None; a missing step lists the saved ones."""
    steps = self.steps()
    if not steps:
      raise ValueError(f'No saved checkpoint in {self.directory} (the run has not saved '
                       'one yet, or is a parent of fold_XX sub-runs).')
    if step is None:
      return steps[-1]
    if step not in steps:
      raise ValueError(f'No saved step {step} in {self.directory}; saved steps: '
                       f'{", ".join(map(str, steps))}.')
    return step

  def _unreadable(self, step: int, e: Exception) -> CheckpointError:
    return CheckpointError(
        f'Checkpoint {os.path.join(self.directory, str(step))} could not be read '
        f'({type(e).__name__}: {str(e)[:300]}). It may be corrupt or have been deleted by '
        'the running job (checkpoint_keep); it was left as it is.')

  def restore_params(self, step: int) -> tuple[str, Any]:
    """(``'params'`` or ``'client_params'``, that tree as NumPy arrays) of ``step``."""
    try:
      metadata = self._manager.item_metadata(step)
      tree = getattr(metadata, 'tree', metadata)
      key = next(k for k in PARAM_KEYS if tree is not None and k in tree)
    except StopIteration:
      raise CheckpointError(
          f'Checkpoint {os.path.join(self.directory, str(step))} holds no model parameters '
          f'(looked for {" or ".join(PARAM_KEYS)}).') from None
    except Exception as e:  # Orbax raises many types for unreadable data.
      raise self._unreadable(step, e) from e
    try:
      args = _params_restore_args({key: tree[key]}, partial_restore=True)
    except TypeError:  # An Orbax without partial restores: read the whole state.
      args = _params_restore_args(tree)
    try:
      restored = self._manager.restore(step, args=args)
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise self._unreadable(step, e) from e
    return key, restored[key]


def _params_restore_args(metadata_tree: Any, **kwargs) -> ocp.args.PyTreeRestore:
  """Restores the leaves of ``metadata_tree`` (shapes, dtypes) as NumPy arrays."""
  abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), metadata_tree)
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract)
  return ocp.args.PyTreeRestore(item=abstract, restore_args=as_numpy, **kwargs)


def saved_steps(path: str) -> list[int]:
  """The committed checkpoint steps (rounds for federated runs) of the run in ``path``."""
  with _ReadOnlyCheckpoints(path) as checkpoints:
    return checkpoints.steps()


def restore_params(path: str, step: int | None = None) -> tuple[int, str, Any]:
  """(step, ``'params'``/``'client_params'``, params) of a saved step (default latest).

  Raises:
    WorkdirError: ``path`` is not a workdir.
    ValueError: no such step (the message lists the saved ones) or none saved.
    CheckpointError: the checkpoint cannot be read.
  """
  with _ReadOnlyCheckpoints(path) as checkpoints:
    step = checkpoints.resolve(step)
    key, params = checkpoints.restore_params(step)
  return step, key, params


def flatten(params: Any) -> dict[str, np.ndarray]:
  """``{'Conv_0/kernel': array, ...}``: the leaves of a params tree by '/'-joined path."""
  def name(path) -> str:
    return '/'.join(str(getattr(k, 'key', getattr(k, 'idx', getattr(k, 'name', k))))
                    for k in path)
  return {name(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}


def _l2(x: np.ndarray) -> float:
  return float(np.sqrt(np.sum(np.square(x.astype(np.float64)))))


# ------------------------------------------------------------------ commands
@dataclasses.dataclass(frozen=True)
class RunInfo:
  """One run as ``list`` shows it."""
  path: str
  method: str
  dataset: str
  unit: str  # 'round' or 'step': what checkpoints and metrics rows count.
  saved: list[int]  # Committed checkpoint steps.
  last_metrics: dict | None
  finished: bool  # summary.json exists.
  views: list[int]  # Rounds recorded in views/.


def run_info(path: str) -> RunInfo:
  config = load_config(path)
  rows = read_metrics(path)
  return RunInfo(path=path, method=method_label(config), dataset=config.data.name,
                 unit=step_unit(config), saved=saved_steps(path),
                 last_metrics=rows[-1] if rows else None,
                 finished=os.path.exists(os.path.join(path, workdir_lib.SUMMARY_FILE)),
                 views=view_rounds(path))


def list_runs(root: str) -> list[RunInfo]:
  return [run_info(p) for p in find_runs(root)]


@dataclasses.dataclass(frozen=True)
class ParamStat:
  name: str
  shape: tuple[int, ...]
  dtype: str
  l2: float
  count: int


def param_stats(params: Any) -> list[ParamStat]:
  return [ParamStat(n, tuple(v.shape), str(v.dtype), _l2(v), int(v.size))
          for n, v in flatten(params).items()]


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """The held-out error of one saved step."""
  path: str
  step: int
  dataset: str
  error_unit: str  # 'deg' for gaze, 'label units' for screen targets.
  per_person: dict[str, float]
  mean: float
  logged: float | None  # The run's own test_error at this step, when evaluated on its data.


def data_config_for(config, base: ml_collections.ConfigDict | None = None,
                    overrides: dict[str, Any] | None = None) -> ml_collections.ConfigDict:
  """The run's data config (or ``base``) with ``{'field': value}`` overrides applied.

  Raises:
    ValueError: an override names a field the data config does not have.
  """
  data = (base if base is not None else config.data).to_dict()
  for key, value in (overrides or {}).items():
    *parents, last = key.removeprefix('data.').split('.')
    target = data
    for p in parents:
      target = target.get(p) if isinstance(target, dict) else None
    if not isinstance(target, dict) or last not in target:
      raise ValueError(f'Unknown data config field {"data." + key.removeprefix("data.")!r}; '
                       f'known fields: {", ".join(sorted(data))}.')
    target[last] = value
  return ml_collections.ConfigDict(data)


def evaluate(path: str, step: int | None = None,
             data_config: ml_collections.ConfigDict | None = None,
             data_overrides: dict[str, Any] | None = None,
             people: str = 'test') -> Evaluation:
  """Evaluates a saved step's model as the run does: per-person mean error.

  Args:
    path: the run's workdir.
    step: a saved step (round); default the latest.
    data_config: another dataset's data config (``config.data`` of a config file);
      default the run's own.
    data_overrides: ``{'num_people': 10}``-style changes to that data config.
    people: ``'test'`` (the people held out by the data config's protocol, what the
      run reports as ``test_error``), ``'val'`` (its validation people, ``val_error``)
      or ``'all'``.

  Predictions are mapped back to the dataset's unit with the label scaling the run
  recorded (``label_scaling.json``; `privateyes_jax.label_scaling`).

  Local-only runs are evaluated as the run does: each person's error averaged over
  the clients' models.
  """
  from privateyes_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from privateyes_jax import label_scaling  # pylint: disable=g-import-not-at-top
  from privateyes_jax import training  # pylint: disable=g-import-not-at-top
  from privateyes_jax.federated import engine  # pylint: disable=g-import-not-at-top
  from privateyes_jax.models import gaze as gaze_models  # pylint: disable=g-import-not-at-top
  if people not in ('test', 'val', 'all'):
    raise ValueError(f'people must be "test", "val" or "all", got {people!r}.')
  config = load_config(path)
  data = data_config_for(config, data_config, data_overrides)
  step, key, params = restore_params(path, step)
  dataset = data_lib.load_dataset(data)
  if people == 'all':
    evaluated = dataset
  else:
    _, val, test = data_lib.split_people_val(dataset, data)
    evaluated = test if people == 'test' else val
    if evaluated is None:
      raise ValueError('The data config has no validation people (data.num_val_people=0); '
                       'evaluate people="test" or "all", or override data.num_val_people.')
  predict = training.predict_fn(gaze_models.build_model(config.model).apply,
                                label_scaling.load(path))
  try:
    if key == 'client_params':
      errors = engine.evaluate_stacked(predict, params, evaluated.people, dataset.label_kind)
    else:
      errors = training.evaluate_people(predict, params, evaluated.people, dataset.label_kind)
  except (TypeError, ValueError) as e:  # Flax/XLA shape errors: another image format.
    raise ValueError(
        f'The model of {path} cannot be applied to {dataset.name} (images '
        f'{dataset.image_shape}): {str(e)[:300]}') from e
  logged = None
  if data.to_dict() == config.data.to_dict() and people != 'all':
    unit = step_unit(config)
    logged = next((r.get(f'{people}_error') for r in read_metrics(path) if r.get(unit) == step),
                  None)
  return Evaluation(path=path, step=step, dataset=dataset.name,
                    error_unit='deg' if dataset.label_kind == 'gaze' else 'label units',
                    per_person=errors, mean=float(np.mean(list(errors.values()))),
                    logged=logged)


@dataclasses.dataclass(frozen=True)
class ParamDiff:
  name: str
  diff_l2: float  # ||a - b||
  l2: float  # ||a||
  relative: float  # ||a - b|| / ||a|| (nan when ||a|| = 0)


def diff(path: str, step: int | None, other: str | None = None,
         other_step: int | None = None) -> tuple[int, int, list[ParamDiff]]:
  """Per-tensor L2 norms of ``params(path, step) - params(other, other_step)``.

  ``other`` defaults to ``path``, steps to the latest. The last entry, ``(total)``,
  is over all parameters.

  Raises:
    ValueError: the two parameter trees differ in names or shapes.
  """
  step, _, a = restore_params(path, step)
  other_step, _, b = restore_params(other or path, other_step)
  fa, fb = flatten(a), flatten(b)
  mismatched = sorted(n for n in set(fa) | set(fb)
                      if n not in fa or n not in fb or fa[n].shape != fb[n].shape)
  if mismatched:
    shapes = [f'{n}: {getattr(fa.get(n), "shape", "absent")} vs '
              f'{getattr(fb.get(n), "shape", "absent")}' for n in mismatched[:10]]
    raise ValueError(f'The two checkpoints hold different models; {"; ".join(shapes)}.')
  rows = []
  for n in fa:
    d, norm = _l2(fa[n] - fb[n]), _l2(fa[n])
    rows.append(ParamDiff(n, d, norm, d / norm if norm else math.nan))
  total_d = math.sqrt(sum(r.diff_l2 ** 2 for r in rows))
  total = math.sqrt(sum(r.l2 ** 2 for r in rows))
  rows.append(ParamDiff('(total)', total_d, total, total_d / total if total else math.nan))
  return step, other_step, rows


def export(path: str, out: str, step: int | None = None) -> tuple[int, list[str]]:
  """Writes a saved step's parameters to the ``.npz`` file ``out`` ('/'-joined keys).

  The file is written next to ``out`` and renamed into place, so a reader never
  sees half of it. Returns the step and the keys written.
  """
  if not out.endswith('.npz'):
    raise ValueError(f'--out must name a .npz file, got {out!r}.')
  directory = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(directory):
    raise ValueError(f'Cannot write {out!r}: directory {directory!r} does not exist.')
  step, _, params = restore_params(path, step)
  arrays = flatten(params)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp-', suffix='.npz')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **arrays)
    os.replace(tmp, out)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return step, list(arrays)


# ------------------------------------------------------------------ text output
def _fmt(value: Any) -> str:
  """``-`` for None; floats with 4 decimals, or 4 significant digits when tiny or huge."""
  if value is None:
    return '-'
  if isinstance(value, float):
    if not math.isfinite(value) or value == 0 or 1e-3 <= abs(value) < 1e6:
      return f'{value:.4f}'
    return f'{value:.3e}'  # E.g. PrivatEyes vs FedAvg: differences of fixed-point rounding.
  return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A plain-text table: numbers right-aligned, text left-aligned, two spaces apart."""
  numeric = [bool(rows) and all(isinstance(r[i], (int, float)) or r[i] is None for r in rows)
             for i in range(len(header))]
  cells = [list(header)] + [[_fmt(c) for c in row] for row in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  return '\n'.join(
      '  '.join(c.rjust(w) if num else c.ljust(w)
                for c, w, num in zip(r, widths, numeric)).rstrip() for r in cells)


def _steps_text(steps: Sequence[int]) -> str:
  return ','.join(map(str, steps)) if steps else '-'


def format_runs(runs: Sequence[RunInfo], root: str) -> str:
  rows = []
  for r in runs:
    last = r.last_metrics or {}
    rows.append([os.path.relpath(r.path, root) if r.path != root else '.', r.method,
                 r.dataset, r.unit, _steps_text(r.saved), last.get(r.unit),
                 last.get('train_loss'), last.get('test_error'),
                 'yes' if r.finished else 'no', _steps_text(r.views)])
  return table(['run', 'method', 'dataset', 'unit', 'saved', 'last', 'train_loss',
                'test_error', 'finished', 'views'], rows)


METRIC_COLUMNS = ('train_loss', 'test_error', 'round_seconds', 'seconds')


def format_show(path: str) -> str:
  config = load_config(path)
  unit = step_unit(config)
  rows = read_metrics(path)
  info = run_info(path)
  head = (f'run {path}: {info.method} on {info.dataset}, saved {unit}s '
          f'{_steps_text(info.saved)}, {"finished" if info.finished else "not finished"}')
  metrics = (table([unit, *METRIC_COLUMNS], [[r.get(unit)] + [r.get(c) for c in METRIC_COLUMNS]
                                             for r in rows]) if rows else '(no rows yet)')
  return (f'{head}\n\nconfig.json:\n{json.dumps(config.to_dict(), indent=2, sort_keys=True)}'
          f'\n\nmetrics.jsonl ({len(rows)} rows):\n{metrics}')


def format_params(path: str, step: int, key: str, params: Any) -> str:
  stats = param_stats(params)
  note = ' (local-only: one model per client, leading axis)' if key == 'client_params' else ''
  body = table(['name', 'shape', 'dtype', 'l2_norm', 'count'],
               [[s.name, 'x'.join(map(str, s.shape)) or '()', s.dtype, s.l2, s.count]
                for s in stats])
  total = sum(s.count for s in stats)
  return f'{path} step {step}: {key}{note}\n{body}\ntotal parameters: {total:,}'


def format_evaluation(e: Evaluation) -> str:
  body = table(['person', f'error ({e.error_unit})'],
               [[p, v] for p, v in e.per_person.items()] + [['mean', e.mean]])
  logged = f'\nlogged test_error at this step: {e.logged:.4f}' if e.logged is not None else ''
  return f'{e.path} step {e.step} on {e.dataset}:\n{body}{logged}'


def format_diff(path: str, step: int, other: str, other_step: int,
                rows: Sequence[ParamDiff]) -> str:
  body = table(['name', 'l2(a-b)', 'l2(a)', 'relative'],
               [[r.name, r.diff_l2, r.l2, r.relative] for r in rows])
  return f'a = {path} step {step}, b = {other} step {other_step}\n{body}'
