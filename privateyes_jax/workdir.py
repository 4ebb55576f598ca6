"""A run's working directory: resolved config, metrics, summary and checkpoints.

Layout of a workdir::

  config.json      the resolved config of the run (written once; checked on resume)
  metrics.jsonl    one JSON object per evaluation step / round
  summary.json     the final results
  checkpoints/     orbax CheckpointManager directory (one subdirectory per step)
  tensorboard/     TensorBoard event files: every scalar of every metrics row

Re-running the same command on the same workdir resumes from the latest checkpoint;
a workdir that holds a run with a *different* config is refused unless the caller
asks to overwrite it. Writes of the small JSON files go through a temporary file
and an atomic rename, so an interruption never leaves a truncated file behind.

``metrics.jsonl`` is the record of a run; ``tensorboard/`` mirrors its scalars for
``tensorboard --logdir=<workdir or a parent>`` (written through tensorboardX, one
event file per process that appends rows, flushed on every row). A resumed run
drops the rows after its checkpoint from ``metrics.jsonl``; its new event file
starts with a purge marker at its first step (tensorboardX's ``purge_step``), so
TensorBoard discards the older events from that step on instead of showing two
curves.

Multi-process runs (privateyes_jax/distributed.py): every process opens the same
workdir, which must be on a filesystem all hosts share; process 0 alone writes the
files above (`is_primary`), and checkpoints are saved by all processes together and
written by process 0.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from typing import Any

import functools

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from privateyes_jax import distributed

CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
SUMMARY_FILE = 'summary.json'
CHECKPOINT_DIR = 'checkpoints'
TENSORBOARD_DIR = 'tensorboard'
VIEWS_DIR = 'views'  # What the federated engine records for the DualView attack.
# Secure-aggregation attempts retired by an abort (checkpoints cannot be rewritten at the
# same step, so the engine records them here and applies them after a restore).
RETIRED_ATTEMPTS_FILE = 'mpc_retired_attempts.json'


class WorkdirError(ValueError):
  """The workdir cannot be used for this run; the message says why and what to do."""


class CheckpointError(RuntimeError):
  """A checkpoint could not be restored (corrupt or from another model)."""


def _jsonable(value):
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if hasattr(value, 'item') and getattr(value, 'ndim', 1) == 0:
    return _jsonable(value.item())
  return value


def atomic_write_text(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` via a temporary file and an atomic rename."""
  directory = os.path.dirname(path) or '.'
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp-', suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, 'w') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, obj: Any) -> None:
  atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True) + '\n')


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
  """A JSON round-trip of the config (tuples become lists), used for comparison."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def read_metrics(path: str) -> list[dict]:
  """The rows of the ``metrics.jsonl`` file ``path`` ([] if there is none yet).

  Safe on a run that is still writing: a last line cut by an interruption (or not
  yet complete) ends the list, and the file is only read.
  """
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line:
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError:
          break  # A line cut by an interruption: everything after it is dropped.
  return rows


def metrics_step(row: dict) -> int | None:
  """The x-axis value of a metrics row: its ``round`` (federated, local) or ``step``."""
  step = row.get('round', row.get('step'))
  return step if isinstance(step, int) and not isinstance(step, bool) else None


def scalar_fields(row: dict, prefix: str = '') -> dict[str, float]:
  """The numeric fields of a metrics row, nested dicts flattened as ``a/b``.

  ``round`` and ``step`` are the x axis, not scalars; ``None`` (a non-finite value
  in ``metrics.jsonl``), strings and lists are left out.

  >>> scalar_fields({'round': 2, 'test_error': 5.0, 'per_person_error': {'p04': 4.5}})
  {'test_error': 5.0, 'per_person_error/p04': 4.5}
  """
  out = {}
  for key, value in row.items():
    name = f'{prefix}{key}'
    if not prefix and key in ('round', 'step'):
      continue
    if isinstance(value, dict):
      out.update(scalar_fields(value, f'{name}/'))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      out[name] = float(value)
  return out


class EventWriter:
  """Writes scalars to a TensorBoard event file synchronously, flushing every call.

  Uses tensorboardX's ``EventsWriter`` (the file layer under its ``SummaryWriter``)
  directly: ``SummaryWriter`` hands events to a background thread and flushes on a
  timer, so a killed run could lose its last rows; here a row is on disk when
  `write_scalars` returns. The file starts with a ``SessionLog.START`` event at
  ``purge_step`` (what ``SummaryWriter(purge_step=...)`` writes): TensorBoard then
  discards events at that step or later from the directory's older files.
  """

  def __init__(self, directory: str, purge_step: int):
    # Imported here: only runs that write metrics pay for it.
    from tensorboardX import event_file_writer  # pylint: disable=g-import-not-at-top
    from tensorboardX import summary  # pylint: disable=g-import-not-at-top
    from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
    self._event_pb2, self._summary = event_pb2, summary
    os.makedirs(directory, exist_ok=True)
    # TensorBoard reads a directory's event files in name order; the default name
    # has whole seconds only, so a run resumed within the same second would reuse
    # (and truncate) the previous file. A fixed-width nanosecond suffix keeps one
    # file per writer, in the order they were opened.
    self._writer = event_file_writer.EventsWriter(
        os.path.join(directory, 'events'), filename_suffix=f'.{time.time_ns():020d}')
    self._writer.write_event(event_pb2.Event(
        wall_time=time.time(), step=purge_step,
        session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))
    self._writer.flush()

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    wall_time = time.time()
    for tag, value in scalars.items():
      self._writer.write_event(self._event_pb2.Event(
          wall_time=wall_time, step=step, summary=self._summary.scalar(tag, value)))
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def is_primary() -> bool:
  """Whether this process writes the workdir's files: process 0, or a single process.

  In a multi-process run (privateyes_jax/distributed.py) every process opens the
  same workdir (on a filesystem all hosts share); only process 0 writes
  ``config.json``, ``metrics.jsonl``, ``tensorboard/`` and ``summary.json``.
  Checkpoints are saved by every process together and written by process 0
  (`Workdir.save`).
  """
  return distributed.is_primary()


def _primary_only(method):
  """Makes a file-writing method a no-op outside process 0 (see `is_primary`)."""
  @functools.wraps(method)
  def wrapped(*args, **kwargs):
    if is_primary():
      return method(*args, **kwargs)
    return None
  return wrapped


def _multi_process() -> bool:
  return distributed.is_initialized() and jax.process_count() > 1


def _host_copy(tree: Any) -> Any:
  """``tree`` with its jax arrays as numpy arrays (see `Workdir.save`)."""
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)) if isinstance(x, jax.Array)
                      else x, tree)


def _diff(a: Any, b: Any, prefix: str = '') -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for key in sorted(set(a) | set(b)):
      name = f'{prefix}.{key}' if prefix else key
      if key not in a:
        out.append(f'{name}: (absent) -> {b[key]!r}')
      elif key not in b:
        out.append(f'{name}: {a[key]!r} -> (absent)')
      else:
        out.extend(_diff(a[key], b[key], name))
    return out
  return [] if a == b else [f'{prefix}: {a!r} -> {b!r}']


class Workdir:
  """Owns one run's directory. Create with `Workdir.open`."""

  def __init__(self, path: str, max_to_keep: int = 2):
    self.path = path
    self.checkpoint_path = os.path.join(path, CHECKPOINT_DIR)
    self._events: EventWriter | None = None  # Opened by the first `append_metrics`.
    self._events_unavailable = False
    self._manager = ocp.CheckpointManager(
        os.path.abspath(self.checkpoint_path),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  # ----------------------------------------------------------------- opening
  @classmethod
  def open(cls, path: str, config: ml_collections.ConfigDict,
           overwrite: bool = False) -> 'Workdir':
    """Prepares ``path`` for a run of ``config``.

    Raises:
      WorkdirError: ``path`` is not a usable directory, or holds a run with a
        different config and ``overwrite`` is False.
    """
    if not path:
      raise WorkdirError('No workdir given: pass --workdir=/path/to/run.')
    if os.path.exists(path) and not os.path.isdir(path):
      raise WorkdirError(f'Workdir {path!r} exists and is not a directory.')
    try:
      os.makedirs(path, exist_ok=True)
    except OSError as e:
      raise WorkdirError(f'Cannot create workdir {path!r}: {e.strerror}.') from e
    if not os.access(path, os.W_OK | os.X_OK):
      raise WorkdirError(f'Workdir {path!r} is not writable.')
    new = config_to_dict(config)
    config_path = os.path.join(path, CONFIG_FILE)
    if os.path.exists(config_path):
      try:
        with open(config_path) as f:
          old = json.load(f)
      except (OSError, json.JSONDecodeError) as e:
        raise WorkdirError(
            f'{config_path} is unreadable ({e}); pass --overwrite to start afresh.') from e
      differences = _diff(old, new)
      if differences and not overwrite:
        shown = '\n  '.join(differences[:20])
        raise WorkdirError(
            f'Workdir {path!r} holds a run with a different config:\n  {shown}\n'
            'Use another --workdir, or pass --overwrite to delete that run and start afresh.')
      if overwrite and is_primary():  # Start afresh, whether or not the config changed.
        logging.warning('Overwriting the run in %s%s.', path,
                        ' (config changed)' if differences else '')
        cls.clear(path)
    elif overwrite and is_primary():
      cls.clear(path)
    if is_primary():
      write_json(config_path, new)
    # Every process has read the old config and process 0 has finished clearing
    # before anyone looks for checkpoints. (One name on every host: mount points of
    # the shared workdir may differ between hosts.)
    distributed.barrier('privateyes_workdir_open')
    return cls(path, max_to_keep=config.get('checkpoint_keep', 2))

  @staticmethod
  def clear(path: str) -> None:
    """Deletes a previous run's outputs from ``path`` (only files this module writes)."""
    for name in (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, RETIRED_ATTEMPTS_FILE):
      if os.path.exists(os.path.join(path, name)):
        os.remove(os.path.join(path, name))
    for name in (CHECKPOINT_DIR, TENSORBOARD_DIR, VIEWS_DIR):
      shutil.rmtree(os.path.join(path, name), ignore_errors=True)

  # ----------------------------------------------------------------- checkpoints
  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any) -> None:
    """Saves ``state`` at ``step`` and waits, so no half-written checkpoint outlives us.

    Several processes: all must call it (Orbax synchronises them). Each holds the
    same replicated state as local arrays, which Orbax refuses to save in a
    multi-process run; as host (numpy) arrays they are written by process 0 alone.
    """
    if _multi_process():
      state = _host_copy(state)
    self._manager.save(step, args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()

  def restore(self, step: int, abstract_state: Any) -> Any:
    """Restores step ``step`` into the structure of ``abstract_state``.

    Several processes: every process reads the (shared) checkpoint as host arrays;
    the leaves that are jax arrays in ``abstract_state`` come back as jax arrays.
    """
    if _multi_process():
      try:
        restored = self._manager.restore(
            step, args=ocp.args.StandardRestore(_host_copy(abstract_state)))
      except Exception as e:  # Orbax raises many types for unreadable data.
        raise self._restore_error(step, e) from e
      return jax.tree.map(lambda r, t: jax.numpy.asarray(r) if isinstance(t, jax.Array) else r,
                          restored, abstract_state)
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except Exception as e:  # Orbax raises many types for unreadable data.
      raise self._restore_error(step, e) from e

  def _restore_error(self, step: int, e: Exception) -> CheckpointError:
    return CheckpointError(
        f'Checkpoint {os.path.join(self.checkpoint_path, str(step))} could not be restored '
        f'({type(e).__name__}: {str(e)[:300]}). It may be corrupt or from another model; '
        'delete that step directory to resume from an earlier one, or pass --overwrite.')

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
    if self._events is not None:
      self._events.close()
      self._events = None

  # ----------------------------------------------------------------- metrics
  @property
  def metrics_path(self) -> str:
    return os.path.join(self.path, METRICS_FILE)

  @property
  def tensorboard_path(self) -> str:
    return os.path.join(self.path, TENSORBOARD_DIR)

  def read_metrics(self) -> list[dict]:
    return read_metrics(self.metrics_path)

  @_primary_only
  def truncate_metrics(self, key: str, last: int) -> None:
    """Keeps only the rows with ``row[key] <= last`` (rows after the resumed checkpoint)."""
    rows = [r for r in self.read_metrics() if r.get(key, -1) <= last]
    atomic_write_text(self.metrics_path, ''.join(json.dumps(r) + '\n' for r in rows))

  @_primary_only
  def append_metrics(self, row: dict) -> None:
    """Appends ``row`` to ``metrics.jsonl`` and its scalars to the TensorBoard events.

    The events' step is the row's ``round`` or ``step``; the first row this object
    writes also purges older events from that step on (see `EventWriter`), which is
    what a resumed run, whose ``metrics.jsonl`` was cut back by `truncate_metrics`,
    needs.
    """
    row = _jsonable(row)
    with open(self.metrics_path, 'a') as f:
      f.write(json.dumps(row, sort_keys=True) + '\n')
      f.flush()
    step = metrics_step(row)
    if step is None or self._events_unavailable:
      return
    if self._events is None:
      try:
        self._events = EventWriter(self.tensorboard_path, purge_step=step)
      except ImportError as e:  # metrics.jsonl stays complete; only the mirror is lost.
        logging.warning('TensorBoard events are not written (%s); install tensorboardX.', e)
        self._events_unavailable = True
        return
    self._events.write_scalars(step, scalar_fields(row))

  @_primary_only
  def write_summary(self, summary: dict) -> None:
    write_json(os.path.join(self.path, SUMMARY_FILE), summary)
