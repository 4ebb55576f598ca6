r"""Runs a hyperparameter sweep into a sweep directory: the library side of experiments/sweep.py.

``run_sweep(config, sweep_dir)`` expands ``config.sweep.grid`` into runs
(`spec.expand`), trains every group of runs that share a program structure as one
batched program (`group.train_group`), and writes::

  <sweep_dir>/sweep.json          the grid and the runs' swept values
  <sweep_dir>/runs/<run>/         one ordinary workdir per run (config, metrics, summary,
                                  final checkpoint)
  <sweep_dir>/groups/<id>/        a group's stacked checkpoints while it trains
  <sweep_dir>/results.md          the table ranked by validation error, test error beside it
                                  (also results.json)
  <sweep_dir>/best_config.py      the best run's config by validation error, ready for
                                  experiments.train

Nothing is chosen on the test people: every run needs ``data.num_val_people >= 1``.

Re-running the same sweep resumes: finished runs (``summary.json`` with the same
config) are reused, an interrupted group resumes from its latest checkpoint (with its
own members, even if the grid has grown since), and runs added to the grid are trained
in groups of their own.
"""

from __future__ import annotations

import json
import os
import shutil

from absl import logging
import ml_collections

from privateyes_jax import runner
from privateyes_jax import workdir as workdir_lib
from privateyes_jax.sweeps import group as group_lib
from privateyes_jax.sweeps import report
from privateyes_jax.sweeps import spec as spec_lib

SPEC_FILE = 'sweep.json'


def prepare(config: ml_collections.ConfigDict) -> list[spec_lib.Run]:
  """The sweep's runs, each validated; raises before any file is touched."""
  runs = spec_lib.expand(config)
  for run in runs:
    try:
      runner.validate(run.config)
    except ValueError as e:
      raise spec_lib.SweepSpecError(f'Run {run.name}: {e}') from e
    spec_lib.check_supported(run)
  spec_lib.group_runs(runs, config.sweep.get('max_runs_per_program', 0))  # Validates it.
  return runs


def _finished(sweep_dir: str, run: spec_lib.Run) -> dict | None:
  """The run's summary if its workdir holds this config and a summary, else None."""
  path = group_lib.run_dir(sweep_dir, run)
  try:
    with open(os.path.join(path, workdir_lib.CONFIG_FILE)) as f:
      old = json.load(f)
    with open(os.path.join(path, workdir_lib.SUMMARY_FILE)) as f:
      summary = json.load(f)
  except (OSError, json.JSONDecodeError):
    return None
  return summary if old == workdir_lib.config_to_dict(run.config) else None


def _interrupted_groups(sweep_dir: str, pending: list[spec_lib.Run],
                        finished: set[str]) -> list[list[spec_lib.Run]]:
  """The groups with a checkpoint under ``groups/`` whose members all still wait to train.

  A group's identity hashes its members, so regrouping the pending runs after the
  grid changed would orphan an interrupted group's checkpoint and retrain its runs
  from the start. Resuming it with exactly its members keeps its rounds. A group
  whose members' configs changed (or left the grid) is not resumed; its directory
  stays, and a warning says so.
  """
  root = os.path.join(sweep_dir, group_lib.GROUPS_DIR)
  by_name = {r.name: r for r in pending}
  out = []
  for gid in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    try:
      with open(os.path.join(root, gid, workdir_lib.CONFIG_FILE)) as f:
        names = json.load(f)['sweep_group']['runs']
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
      continue  # Not a group this code wrote (or an empty one): nothing to resume.
    members = [by_name.get(n) for n in names]
    if all(members) and spec_lib.group_id(members) == gid:
      out.append(members)
    elif not any(members) and all(n in finished for n in names):
      # Every member wrote its outputs; the process stopped before removing this.
      shutil.rmtree(os.path.join(root, gid), ignore_errors=True)
    else:
      logging.warning('Sweep %s: group %s is not resumed: its runs are no longer all in the '
                      'grid with the same configs (%s).', sweep_dir, gid, ', '.join(names))
  return out


def run_sweep(config: ml_collections.ConfigDict, sweep_dir: str, overwrite: bool = False,
              halt_after: int | None = None) -> dict:
  """Runs (or resumes) the sweep ``config`` in ``sweep_dir``.

  Args:
    config: an experiment config with a ``sweep`` section (experiments/configs/sweep.py).
    sweep_dir: the sweep's directory.
    overwrite: start afresh: delete the runs (and interrupted groups) in ``sweep_dir``
      instead of reusing finished ones and refusing ones of another config.
    halt_after: stop the first group that trains after this many rounds, as if
      interrupted (tests and drills); nothing else is written then.

  Returns:
    ``{'halted_at_round': t}``, or ``{'table', 'best_run', 'best_reason', 'rows',
    'trained_runs'}``.
  """
  runs = prepare(config)
  if not sweep_dir:
    raise workdir_lib.WorkdirError('No sweep directory given: pass --workdir=/path/to/sweep.')
  os.makedirs(os.path.join(sweep_dir, group_lib.RUNS_DIR), exist_ok=True)
  if overwrite:
    shutil.rmtree(os.path.join(sweep_dir, group_lib.GROUPS_DIR), ignore_errors=True)
  for run in runs:  # Refuse (or clear, with overwrite) other runs before any training.
    workdir_lib.Workdir.open(group_lib.run_dir(sweep_dir, run), run.config,
                             overwrite=overwrite).close()
  workdir_lib.write_json(os.path.join(sweep_dir, SPEC_FILE), {
      'grid': config.sweep.grid,
      'runs': [{'name': r.name, 'overrides': dict(r.overrides)} for r in runs]})

  summaries = {r.name: s for r in runs if (s := _finished(sweep_dir, r)) is not None}
  pending = [r for r in runs if r.name not in summaries]
  # Interrupted groups first, with their own members, even if the grid has grown since.
  groups = _interrupted_groups(sweep_dir, pending, set(summaries))
  resumed = {r.name for members in groups for r in members}
  groups += spec_lib.group_runs([r for r in pending if r.name not in resumed],
                                config.sweep.get('max_runs_per_program', 0))
  logging.info('Sweep %s: %d runs, %d finished, %d to train in %d group(s).', sweep_dir,
               len(runs), len(summaries), len(pending), len(groups))
  data_cache = {}
  for members in groups:
    out = group_lib.train_group(members, sweep_dir, halt_after=halt_after,
                                data_cache=data_cache)
    if 'halted_at_round' in out:
      return out
    summaries.update(out)
  result = report.write(sweep_dir, runs, summaries, config.sweep.grid)
  result['trained_runs'] = len(pending)
  return result
