"""A finished sweep's results table and its best config as a ready-to-run config file.

Runs are ranked, and the best configuration chosen, by their error on the
*validation* people (``data.num_val_people``, disjoint from training and test
people). The test people's error is reported beside it and never consulted for any
choice: a best chosen on test error would be an optimistic estimate of that error.
"""

from __future__ import annotations

import math
import os
import pprint
from typing import Sequence

import numpy as np

from privateyes_jax import workdir as workdir_lib
from privateyes_jax.sweeps import spec as spec_lib

RESULTS_FILE = 'results.md'
RESULTS_JSON = 'results.json'
BEST_CONFIG_FILE = 'best_config.py'


def _error(summary: dict) -> float:
  """The validation error used for ranking; rejected and aborted runs rank last.

  Only ``val_error`` is read: the test error must not influence any choice.
  """
  value = summary.get('val_error')
  if value is None or summary.get('status', 'done') != 'done':
    return math.inf
  return float(value)


def _test_error(summary: dict) -> float:
  """The test error, for reporting only (failed runs: inf)."""
  value = summary.get('test_error')
  if value is None or summary.get('status', 'done') != 'done':
    return math.inf
  return float(value)


def _fmt(value) -> str:
  if isinstance(value, float):
    return f'{value:.4g}'
  if isinstance(value, (tuple, list)):
    return '(' + ','.join(_fmt(v) for v in value) + ')'
  return str(value)


def rank(runs: Sequence[spec_lib.Run], summaries: dict[str, dict]) -> list[dict]:
  """One row per run, sorted by validation error (best first, failed runs last)."""
  rows = []
  for run in runs:
    s = summaries[run.name]
    rows.append({'run': run.name, 'overrides': dict(run.overrides),
                 'val_error': s.get('val_error'), 'test_error': s['test_error'],
                 'final_train_loss': s.get('final_train_loss'), 'status': s.get('status', 'done'),
                 'error_unit': s.get('error_unit', ''),
                 'baseline': s.get('baseline_mean_predictor_error')})
  return sorted(rows, key=lambda row: (_error(row), row['run']))


def seed_means(runs: Sequence[spec_lib.Run], rows: list[dict]) -> list[dict]:
  """Rows grouped over ``seed`` (when swept): mean and std of the validation error
  (ranked on), and the mean test error (reported beside it).

  A configuration with a failed seed (rejected, aborted, out of range) has mean ``inf``.
  """
  by_name = {row['run']: row for row in rows}
  groups: dict[tuple, list[dict]] = {}
  for run in runs:
    key = tuple((f, repr(v)) for f, v in run.overrides if f != 'seed')
    groups.setdefault(key, []).append(by_name[run.name])
  out = []
  for key, members in groups.items():
    errs = np.array([_error(m) for m in members])
    finite = bool(np.all(np.isfinite(errs)))
    tests = np.array([_test_error(m) for m in members])
    out.append({'overrides': {f: members[0]['overrides'][f] for f, _ in key},
                'mean': float(np.mean(errs)) if finite else math.inf,
                'std': float(np.std(errs)) if finite else math.inf,
                'test_mean': float(np.mean(tests)) if np.all(np.isfinite(tests)) else math.inf,
                'seeds': len(members), 'runs': [m['run'] for m in members],
                'best_run': min(members, key=lambda m: (_error(m), m['run']))['run']})
  return sorted(out, key=lambda g: (g['mean'], g['best_run']))


def choose_best(runs: Sequence[spec_lib.Run], rows: list[dict]) -> tuple[str, str]:
  """``(run name, why)``: the best configuration by validation error (its mean over
  seeds if seeds were swept); the why names its test error, which played no part."""
  if any(f == 'seed' for f, _ in runs[0].overrides):
    best = seed_means(runs, rows)[0]
    return best['best_run'], (
        f'chosen by the mean validation error over {best["seeds"]} seeds '
        f'({best["mean"]:.4g} ± {best["std"]:.2g}); this is its best seed by validation '
        f'error; its mean test error, not used for the choice, is {best["test_mean"]:.4g}')
  best = rows[0]
  return best['run'], (f'the lowest validation error of the sweep ({best["val_error"]:.4g}); '
                       f'its test error, not used for the choice, is '
                       f'{_test_error(best):.4g}')


def table(runs: Sequence[spec_lib.Run], rows: list[dict], grid: str) -> str:
  """The Markdown results table (and the over-seeds table when seeds were swept)."""
  fields = [f for f, _ in runs[0].overrides]
  unit = rows[0]['error_unit'] if rows else ''
  baseline = next((r['baseline'] for r in rows if r['baseline'] is not None), None)
  lines = [f'Sweep `{grid}`: {len(rows)} runs, ranked by validation error ({unit}), best '
           'first. The best configuration is chosen on the validation people; the test '
           'people\'s error is reported beside it and plays no part in any choice.']
  if baseline is not None:
    lines.append(f'Mean predictor on the test people (always the training people\'s mean '
                 f'label): {baseline:.4g}.')
  header = ' | '.join(['rank', 'run', *fields, 'validation error (chosen on)',
                       'test error (reported)', 'train loss', 'status'])
  lines += ['', f'| {header} |', '|---:|---|' + '---:|' * len(fields) + '---:|---:|---:|---|']
  for i, row in enumerate(rows):
    val = '-' if row['val_error'] is None else f'{row["val_error"]:.4f}'
    err = '-' if row['test_error'] is None else f'{row["test_error"]:.4f}'
    loss = '-' if row['final_train_loss'] is None else f'{row["final_train_loss"]:.4f}'
    values = ' | '.join(_fmt(row['overrides'][f]) for f in fields)
    lines.append(f'| {i + 1} | {row["run"]} | {values} | {val} | {err} | {loss} | '
                 f'{row["status"]} |')
  if 'seed' in fields and len(fields) > 1:
    others = [f for f in fields if f != 'seed']
    lines += ['', 'Mean over seeds:', '',
              '| ' + ' | '.join(others) + ' | mean validation error (chosen on) | std | '
              'mean test error (reported) | seeds |',
              '|' + '---:|' * len(others) + '---:|---:|---:|---:|']
    for g in seed_means(runs, rows):
      values = ' | '.join(_fmt(g['overrides'][f]) for f in others)
      mean = f'{g["mean"]:.4f}' if math.isfinite(g['mean']) else 'failed'
      std = f'{g["std"]:.4f}' if math.isfinite(g['std']) else '-'
      test = f'{g["test_mean"]:.4f}' if math.isfinite(g['test_mean']) else '-'
      lines.append(f'| {values} | {mean} | {std} | {test} | {g["seeds"]} |')
  return '\n'.join(lines) + '\n'


def best_config_source(run: spec_lib.Run, why: str, sweep_dir: str, test_error,
                       val_error=None) -> str:
  """A config file (``get_config()``) holding ``run``'s complete config as a literal."""
  literal = pprint.pformat(run.config.to_dict(), indent=1, width=96, sort_dicts=False)
  err = 'rejected' if test_error is None else f'{test_error:.4g}'
  val = 'rejected' if val_error is None else f'{val_error:.4g}'
  run_path = os.path.join(sweep_dir, 'runs', run.name)
  return f'''r"""Best configuration of the sweep in {sweep_dir} (written by experiments.sweep).

Run {run.name}: validation error {val} (chosen on), test error {err} (reported, not
used for the choice); {why}.

  python -m experiments.train --config={os.path.join(sweep_dir, BEST_CONFIG_FILE)} \\
      --workdir={run_path}

reuses that run's outputs; pass another --workdir to train it again, and override
fields as usual (--config.fl.rounds=100).
"""

import ml_collections

CONFIG = {literal}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg:
    raise ValueError(f'best_config.py takes no argument, got {{arg!r}}.')
  return ml_collections.ConfigDict(CONFIG)
'''


def write(sweep_dir: str, runs: Sequence[spec_lib.Run], summaries: dict[str, dict],
          grid: str) -> dict:
  """Writes ``results.md``, ``results.json`` and ``best_config.py``; returns what it wrote."""
  rows = rank(runs, summaries)
  text = table(runs, rows, grid)
  best_path = os.path.join(sweep_dir, BEST_CONFIG_FILE)
  if any(math.isfinite(_error(row)) for row in rows):
    best_name, why = choose_best(runs, rows)
    best = next(r for r in runs if r.name == best_name)
    workdir_lib.atomic_write_text(
        best_path, best_config_source(best, why, sweep_dir, summaries[best_name]['test_error'],
                                      summaries[best_name].get('val_error')))
  else:  # Nothing to recommend: say why instead of naming a failed run as the best.
    best_name, why = None, 'no run finished'
    text += ('\nNo run finished with a validation error (see each run\'s summary.json '
             '"failure"), so no best_config.py was written.\n')
    if os.path.exists(best_path):  # A stale recommendation from an earlier sweep here.
      os.remove(best_path)
  workdir_lib.atomic_write_text(os.path.join(sweep_dir, RESULTS_FILE), text)
  workdir_lib.write_json(os.path.join(sweep_dir, RESULTS_JSON),
                         {'grid': grid, 'best_run': best_name, 'best_reason': why, 'runs': rows})
  return {'table': text, 'best_run': best_name, 'best_reason': why, 'rows': rows}
