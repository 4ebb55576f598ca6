"""A run's working directory: resolved config, metrics, summary and checkpoints.

Layout of a workdir::

  config.json      the resolved config of the run (written once; checked on resume)
  metrics.jsonl    one JSON object per evaluation step / round
  summary.json     the final results
  checkpoints/     orbax CheckpointManager directory (one subdirectory per step)

Re-running the same command on the same workdir resumes from the latest checkpoint;
a workdir that holds a run with a *different* config is refused unless the caller
asks to overwrite it. Writes of the small JSON files go through a temporary file
and an atomic rename, so an interruption never leaves a truncated file behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from typing import Any

import ml_collections
import orbax.checkpoint as ocp
from absl import logging

CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
SUMMARY_FILE = 'summary.json'
CHECKPOINT_DIR = 'checkpoints'


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
      if differences:
        logging.warning('Overwriting the run in %s (config changed).', path)
        cls.clear(path)
    elif overwrite:
      cls.clear(path)
    write_json(config_path, new)
    return cls(path, max_to_keep=config.get('checkpoint_keep', 2))

  @staticmethod
  def clear(path: str) -> None:
    """Deletes a previous run's outputs from ``path`` (only files this module writes)."""
    for name in (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE):
      if os.path.exists(os.path.join(path, name)):
        os.remove(os.path.join(path, name))
    shutil.rmtree(os.path.join(path, CHECKPOINT_DIR), ignore_errors=True)

  # ----------------------------------------------------------------- checkpoints
  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any) -> None:
    """Saves ``state`` at ``step`` and waits, so no half-written checkpoint outlives us."""
    self._manager.save(step, args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()

  def restore(self, step: int, abstract_state: Any) -> Any:
    try:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except Exception as e:  # Orbax raises many types for unreadable data.
      raise CheckpointError(
          f'Checkpoint {os.path.join(self.checkpoint_path, str(step))} could not be restored '
          f'({type(e).__name__}: {str(e)[:300]}). It may be corrupt or from another model; '
          'delete that step directory to resume from an earlier one, or pass --overwrite.') from e

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  # ----------------------------------------------------------------- metrics
  @property
  def metrics_path(self) -> str:
    return os.path.join(self.path, METRICS_FILE)

  def read_metrics(self) -> list[dict]:
    if not os.path.exists(self.metrics_path):
      return []
    rows = []
    with open(self.metrics_path) as f:
      for line in f:
        line = line.strip()
        if line:
          try:
            rows.append(json.loads(line))
          except json.JSONDecodeError:
            break  # A line cut by an interruption: everything after it is dropped.
    return rows

  def truncate_metrics(self, key: str, last: int) -> None:
    """Keeps only the rows with ``row[key] <= last`` (rows after the resumed checkpoint)."""
    rows = [r for r in self.read_metrics() if r.get(key, -1) <= last]
    atomic_write_text(self.metrics_path, ''.join(json.dumps(r) + '\n' for r in rows))

  def append_metrics(self, row: dict) -> None:
    with open(self.metrics_path, 'a') as f:
      f.write(json.dumps(_jsonable(row), sort_keys=True) + '\n')
      f.flush()

  def write_summary(self, summary: dict) -> None:
    write_json(os.path.join(self.path, SUMMARY_FILE), summary)
