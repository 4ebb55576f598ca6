r"""A sweep's specification: the grid of runs, their names, and their grouping.

A sweep is a base experiment config plus ``config.sweep.grid``, a string that names
config fields and the values each takes; the runs are the Cartesian product::

  optimizer.learning_rate=0.01,0.02,0.05; seed=0,1,2,3
  optimizer.learning_rate=logspace(1e-3,1e-1,16); seed=range(4); fl.local_steps=1,5

Values are a comma-separated list (parsed as the field's type: int, float, bool, str,
or a tuple literal such as ``(20,50)``), ``logspace(lo,hi,n)``, ``linspace(lo,hi,n)``
or ``range([start,] stop[, step])``.

Runs that differ only in *continuous* hyperparameters (`CONTINUOUS_FIELDS`: seeds,
client and server learning rates, momenta, clipping norm, FedAdam/FedYogi τ) are trained
together as one compiled program; every other field (local steps, server optimizer,
aggregator, model, batch size, data, ...) changes shapes or code, so runs that differ
in one are put into separate *groups*, trained one after another.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import hashlib
import itertools
import json
import re
from typing import Any, Sequence

import ml_collections
import numpy as np

from privateyes_jax import workdir as workdir_lib

# Fields a group's compiled program takes as arrays (one value per run), and which
# optimizer hyperparameter each becomes (``None``: the seed, used on the host).
# fl.server_b1/b2 are not among them: as arrays they would change Adam's and Yogi's
# updates by an ulp (federated/server.py), so they split groups like discrete fields.
CONTINUOUS_FIELDS = {
    'seed': None,
    'optimizer.learning_rate': ('client', 'learning_rate'),
    'optimizer.momentum': ('client', 'momentum'),
    'optimizer.clip_norm': ('client', 'clip_norm'),
    'fl.server_lr': ('server', 'server_lr'),
    'fl.server_momentum': ('server', 'server_momentum'),
    'fl.server_tau': ('server', 'server_tau'),
}

_RANGE = re.compile(r'^(logspace|linspace|range)\((.*)\)$')
_NAME_UNSAFE = re.compile(r'[^A-Za-z0-9_.,=+-]')


class SweepSpecError(ValueError):
  """The sweep specification is unusable; the message names the field and the fix."""


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep.

  Attributes:
    name: directory name under ``<sweep_dir>/runs/``, e.g. ``learning_rate=0.01,seed=0``.
    overrides: ``((field, value), ...)``, this run's values of the swept fields.
    config: the run's complete experiment config (the base without ``sweep``).
  """
  name: str
  overrides: tuple[tuple[str, Any], ...]
  config: ml_collections.ConfigDict


def leaf_fields(config: ml_collections.ConfigDict, prefix: str = '') -> dict[str, Any]:
  """``{'a.b.c': value}`` for every leaf field of ``config``."""
  out = {}
  for key in config.keys():
    value = config[key]
    path = f'{prefix}{key}'
    if isinstance(value, ml_collections.ConfigDict):
      out.update(leaf_fields(value, path + '.'))
    else:
      out[path] = value
  return out


def _group_fields(config: ml_collections.ConfigDict, prefix: str = '') -> set[str]:
  out = set()
  for key in config.keys():
    if isinstance(config[key], ml_collections.ConfigDict):
      out.add(f'{prefix}{key}')
      out |= _group_fields(config[key], f'{prefix}{key}.')
  return out


def _split_top_level(text: str) -> list[str]:
  """Splits on commas outside brackets: ``'1,(2,3),4' -> ['1', '(2,3)', '4']``."""
  parts, depth, current = [], 0, ''
  for ch in text:
    if ch in '([':
      depth += 1
    elif ch in ')]':
      depth -= 1
    if ch == ',' and depth == 0:
      parts.append(current)
      current = ''
    else:
      current += ch
  parts.append(current)
  return [p.strip() for p in parts]


def _convert(field: str, token: str, like: Any) -> Any:
  """``token`` as the type of the base value ``like`` of ``field``."""
  try:
    if isinstance(like, bool):
      if token.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(token)
      return token.lower() in ('true', '1')
    if isinstance(like, int):
      return int(token)
    if isinstance(like, float):
      return float(token)
    if isinstance(like, (tuple, list)):
      value = ast.literal_eval(token)
      if not isinstance(value, (tuple, list)):
        raise ValueError(token)
      return tuple(value)
    if isinstance(like, str):
      return token.strip('\'"')
  except (ValueError, SyntaxError) as e:
    raise SweepSpecError(f'sweep.grid: {token!r} is not a valid value for {field} '
                         f'({type(like).__name__}).') from e
  raise SweepSpecError(f'sweep.grid: field {field} (a {type(like).__name__}) cannot be swept.')


def _values(field: str, text: str, like: Any) -> list[Any]:
  """The values of ``field`` given by ``text`` (a list or a range expression)."""
  text = text.strip()
  match = _RANGE.match(text)
  if match:
    kind, args = match.group(1), [a for a in _split_top_level(match.group(2)) if a]
    try:
      nums = [float(a) for a in args]
    except ValueError as e:
      raise SweepSpecError(f'sweep.grid: {field}={text}: arguments must be numbers.') from e
    if kind == 'range':
      if not 1 <= len(nums) <= 3 or any(n != int(n) for n in nums):
        raise SweepSpecError(f'sweep.grid: {field}={text}: range takes 1-3 integers.')
      values = list(range(*(int(n) for n in nums)))
    else:
      if len(nums) != 3 or nums[2] != int(nums[2]):
        raise SweepSpecError(f'sweep.grid: {field}={text}: {kind} takes (lo, hi, count).')
      lo, hi, count = nums[0], nums[1], int(nums[2])
      if kind == 'logspace':
        if lo <= 0 or hi <= 0:
          raise SweepSpecError(f'sweep.grid: {field}={text}: logspace needs lo, hi > 0.')
        values = [float(v) for v in np.geomspace(lo, hi, max(count, 0))]
      else:
        values = [float(v) for v in np.linspace(lo, hi, max(count, 0))]
    values = [_convert(field, repr(v), like) for v in values]
  else:
    tokens = [t for t in _split_top_level(text) if t]
    values = [_convert(field, t, like) for t in tokens]
  if not values:
    raise SweepSpecError(f'sweep.grid: the range of {field} is empty ({text!r}); give at '
                         'least one value.')
  if len(set(map(repr, values))) != len(values):
    raise SweepSpecError(f'sweep.grid: {field} repeats a value ({text!r}).')
  return values


def parse_grid(text: str, base: ml_collections.ConfigDict) -> list[tuple[str, list[Any]]]:
  """``[(field, values), ...]`` from a grid string, checked against the base config.

  Raises:
    SweepSpecError: an empty grid, an unknown or non-leaf field (the message lists
      similar fields), a field given twice, an empty range or a value of the wrong type.
  """
  if not text or not text.strip():
    raise SweepSpecError('sweep.grid is empty; name at least one field, e.g. '
                         "--config.sweep.grid='optimizer.learning_rate=0.01,0.02;seed=0,1'.")
  fields = {k: v for k, v in leaf_fields(base).items() if not k.startswith('sweep.')}
  groups = _group_fields(base)
  out = []
  for segment in text.split(';'):
    if not segment.strip():
      continue
    if '=' not in segment:
      raise SweepSpecError(f'sweep.grid: {segment.strip()!r} has no "=": write '
                           'field=value1,value2,...')
    field, values_text = (s.strip() for s in segment.split('=', 1))
    if field.startswith('config.'):
      field = field[len('config.'):]
    if field == 'sweep' or field.startswith('sweep.'):
      raise SweepSpecError(f'sweep.grid: {field} configures the sweep itself and cannot be '
                           'swept.')
    if field in groups:
      inside = sorted(f for f in fields if f.startswith(field + '.'))
      raise SweepSpecError(f'sweep.grid: {field} is a group of fields, not a field; name one '
                           f'of: {", ".join(inside)}.')
    if field not in fields:
      similar = difflib.get_close_matches(field, list(fields), n=3, cutoff=0.6)
      hint = f' Similar fields: {", ".join(similar)}.' if similar else (
          ' Fields are dotted paths of the experiment config, e.g. optimizer.learning_rate.')
      raise SweepSpecError(f'sweep.grid: unknown config field {field!r}.{hint}')
    if any(f == field for f, _ in out):
      raise SweepSpecError(f'sweep.grid: {field} is given twice.')
    out.append((field, _values(field, values_text, fields[field])))
  if not out:
    raise SweepSpecError('sweep.grid names no field.')
  return out


def _format(value: Any) -> str:
  if isinstance(value, float):
    return f'{value:.4g}'
  if isinstance(value, (tuple, list)):
    return '-'.join(_format(v) for v in value)
  return str(value)


def run_names(grid: Sequence[tuple[str, Sequence[Any]]],
              combos: Sequence[Sequence[Any]]) -> list[str]:
  """Readable, unique, file-system-safe names such as ``learning_rate=0.01,seed=0``."""
  last = [f.split('.')[-1] for f, _ in grid]
  labels = [l if last.count(l) == 1 else f for l, (f, _) in zip(last, grid)]

  def name(combo, fmt):
    text = ','.join(f'{l}={fmt(v)}' for l, v in zip(labels, combo))
    return _NAME_UNSAFE.sub('_', text)

  names = [name(c, _format) for c in combos]
  if len(set(names)) != len(names):  # 4 significant digits were not enough.
    names = [name(c, lambda v: repr(v) if isinstance(v, float) else _format(v)) for c in combos]
  if len(set(names)) != len(names):
    names = [f'r{i:04d}_{n}' for i, n in enumerate(names)]
  return names


def set_field(config: ml_collections.ConfigDict, field: str, value: Any) -> None:
  *path, last = field.split('.')
  node = config
  for p in path:
    node = node[p]
  node[last] = value


def experiment_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A resolved, unlocked copy of ``config`` without its ``sweep`` section."""
  out = ml_collections.ConfigDict(config.copy_and_resolve_references().to_dict())
  if 'sweep' in out:
    del out['sweep']
  return out


def expand(config: ml_collections.ConfigDict) -> list[Run]:
  """The runs of the sweep ``config`` (grid in ``config.sweep.grid``), in grid order."""
  if 'sweep' not in config or 'grid' not in config.sweep:
    raise SweepSpecError('The config has no sweep.grid; use experiments/configs/sweep.py'
                         '[:BASE] or add a sweep section (see its docstring).')
  base = experiment_config(config)
  grid = parse_grid(config.sweep.grid, config)
  combos = list(itertools.product(*(values for _, values in grid)))
  names = run_names(grid, combos)
  runs = []
  for name, combo in zip(names, combos):
    run_config = ml_collections.ConfigDict(base.to_dict())
    for (field, _), value in zip(grid, combo):
      set_field(run_config, field, value)
    runs.append(Run(name, tuple((f, v) for (f, _), v in zip(grid, combo)), run_config))
  return runs


def check_supported(run: Run) -> None:
  """Refuses runs the batched sweep trainer does not implement, saying what to do instead."""
  c = run.config
  problems = []
  if c.method != 'federated':
    problems.append(f'method={c.method!r} (sweeps train federated runs; run other methods '
                    'with experiments.train)')
  if c.model.name != 'gazenet':
    problems.append(f'model.name={c.model.name!r} (sweeps use the client-parallel GazeNet)')
  if c.get('record_views', ''):
    problems.append('record_views (sweeps record no views for the attack; train the chosen '
                    'config with experiments.train and record_views)')
  if c.aggregator.get('dp', {}).get('enabled', False):
    problems.append('aggregator.dp.enabled (a sweep group has no Poisson sampling, clipping '
                    'or accountant; train DP runs with experiments.train)')
  if c.aggregator.get('validity', {}).get('enabled', False):
    problems.append('aggregator.validity.enabled (a sweep group aggregates in the clear; '
                    'train checked runs with experiments.train)')
  if c.optimizer.get('schedule', 'constant') != 'constant':
    problems.append(f'optimizer.schedule={c.optimizer.schedule!r} (federated clients restart '
                    'their optimizer every round; decay fl.server_schedule instead)')
  if c.data.get('num_val_people', 0) < 1:
    problems.append('data.num_val_people=0 (sweeps rank and choose on validation people, '
                    'never on the test people; set data.num_val_people >= 1, as '
                    'experiments/configs/sweep.py does)')
  if c.data.protocol == 'loo' and c.data.fold == -1:
    problems.append('data.fold=-1 (sweep one fold at a time: data.fold=range(N))')
  if c.data.get('partition', 'person') not in ('person', 'iid'):
    problems.append(f'data.partition={c.data.partition!r} (must be "person" or "iid")')
  if problems:
    raise SweepSpecError(f'Run {run.name} cannot be trained by a sweep: '
                         + '; '.join(problems) + '.')


def structure_key(config: ml_collections.ConfigDict) -> str:
  """What must be equal for runs to share one compiled program (a JSON string).

  Everything except the continuous fields, plus whether clipping is on at all.
  """
  d = workdir_lib.config_to_dict(config)
  for field in CONTINUOUS_FIELDS:
    *path, last = field.split('.')
    node = d
    for p in path:
      node = node[p]
    node.pop(last, None)
  d['_clipping'] = bool(config.optimizer.get('clip_norm', 0.0) > 0)
  return json.dumps(d, sort_keys=True)


def group_runs(runs: Sequence[Run], max_runs: int = 0) -> list[list[Run]]:
  """Runs with equal `structure_key`, in first-seen order, in chunks of ``max_runs``."""
  if max_runs < 0:
    raise SweepSpecError(f'sweep.max_runs_per_program must be >= 0, got {max_runs}.')
  groups: dict[str, list[Run]] = {}
  for run in runs:
    groups.setdefault(structure_key(run.config), []).append(run)
  out = []
  for members in groups.values():
    size = max_runs or len(members)
    out.extend(members[i:i + size] for i in range(0, len(members), size))
  return out


def group_id(runs: Sequence[Run]) -> str:
  """A stable directory name for a group: a hash of its members' names and configs."""
  h = hashlib.sha256()
  for run in runs:
    h.update(run.name.encode())
    h.update(json.dumps(workdir_lib.config_to_dict(run.config), sort_keys=True).encode())
  return f'group-{h.hexdigest()[:12]}'
