"""Tuning DualView on shadow people only (issue #14): target people never select anything.

``tune(config, training_config, workdir)`` trains a **shadow federation**: the
target runs' training recipe on synthetic people of another identity seed
(``shadow_data_seed``), so none of them is a target, and none is an auxiliary
person of the prior (those are ids ``aux_first_person..`` of the prior's own
seed). It records the shadow run's last round, attacks it with each candidate
setting, and picks each setting there:

* settings of view 1 (e.g. ``attack.feature_weight``, ``background_samples``, the
  calibration): the candidate whose shadow plain-FL mean rank of the true person is
  lowest (ties: the higher AUC vs the null view);
* settings of view 2 (``attack.gaze_source``): the lowest shadow mean label error.

The search is one field at a time around the attack config's defaults (a
coordinate search: ``sum(len(values))`` attacks instead of their product), in the
order of ``grid``; a field's choice is kept for the fields after it. The result,
with every candidate's shadow scores and the shadow people, is written to
``workdir/tuning.json``; ``chosen`` holds ``--config.<field>=<value>`` overrides for
`experiments.attack`.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Sequence

import ml_collections
from absl import logging

from privateyes_jax import data as data_lib
from privateyes_jax import runner
from privateyes_jax import workdir as workdir_lib
from privateyes_jax.attacks import pipeline

TUNING_FILE = 'tuning.json'
VIEW2_FIELDS = ('attack.gaze_source', 'gaze_distribution')


def default_config(preset: str = 'demo') -> ml_collections.ConfigDict:
  """``preset``: ``'demo'`` (CPU, minutes) or ``'tiny'`` (tests).

  Fields:
    shadow_data_seed: identity seed of the shadow people (must differ from every
      target run's ``data.seed``).
    attack: the attack config tuned (`pipeline.default_config`); its values are
      the starting point of the search.
    grid: ``'field.path=v1,v2,...'`` items searched one field at a time, in order;
      values are parsed as the field's current type.
  """
  if preset not in ('demo', 'tiny'):
    raise ValueError(f'Unknown tuning preset {preset!r}; available: demo, tiny.')
  c = ml_collections.ConfigDict()
  c.shadow_data_seed = 1000
  c.attack = pipeline.default_config(preset)
  c.attack.attack_seeds = 1
  c.attack.membership_inference = False  # Nothing of it is tuned.
  c.grid = ('attack.feature_weight=0,1,3,10', 'background_samples=0,256',
            'attack.gaze_source=global_model,labels')
  if preset == 'demo':
    c.attack.max_people = 8
  else:
    c.attack.min_classifier_accuracy = 0.0  # Tiny shadow runs: wiring, not strength.
    c.grid = ('attack.feature_weight=0,3', 'attack.gaze_source=global_model,labels')
  return c


def parse_grid(grid: Sequence[str], attack_config) -> list[tuple[str, list]]:
  """``('field=v1,v2', ...)`` -> ``[(field, [values])]``, each value of the field's type."""
  out = []
  for item in grid:
    field, sep, values = item.partition('=')
    if not sep or not values:
      raise ValueError(f'A tuning grid item is "field=v1,v2,...", got {item!r}.')
    current = _get(attack_config, field.strip())
    kind = type(current)
    parse = (lambda v: v.lower() in ('1', 'true')) if kind is bool else kind
    out.append((field.strip(), [parse(v.strip()) for v in values.split(',')]))
  return out


def _get(config, path: str):
  for part in path.split('.'):
    if part not in config:
      raise ValueError(f'The attack config has no field {path!r} to tune.')
    config = config[part]
  return config


def _set(config, path: str, value) -> None:
  *parents, last = path.split('.')
  for part in parents:
    config = config[part]
  if last not in config:
    raise ValueError(f'The attack config has no field {path!r} to tune.')
  config[last] = value


def shadow_training_config(training_config, shadow_data_seed: int,
                           target_runs: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The targets' training recipe on shadow people; refuses people shared with a target."""
  shadow = training_config.copy_and_resolve_references()
  if shadow.data.name != 'synthetic':
    raise ValueError('Shadow federations are synthetic people of another identity seed; '
                     f'got data.name={shadow.data.name!r}.')
  shadow.data.seed = shadow_data_seed
  shadow.record_views = 'last'
  for run in target_runs:
    target = pipeline.load_run_config(run)
    if target.data.name == 'synthetic' and target.data.seed == shadow_data_seed:
      raise ValueError(f'The shadow people (synthetic seed {shadow_data_seed}) are the people of '
                       f'target run {run!r}; pick another shadow_data_seed.')
  return shadow


def _score(out: dict) -> dict:
  row = out['threat_models']['plain_fl']
  return {'mean_rank': row['rank']['mean'], 'auc_vs_null': row['auc_vs_null']['mean'],
          'reidentified_rate': row['reidentified']['rate'], 'label_error': row['label_error']}


def tune(config: ml_collections.ConfigDict, training_config: ml_collections.ConfigDict,
         workdir: str, target_runs: Sequence[str] = (), overwrite: bool = False) -> dict:
  """Trains the shadow federation, searches ``config.grid`` on it, writes ``tuning.json``.

  Args:
    config: see `default_config`.
    training_config: the target runs' training config (a plain-FL ``mean`` run);
      the shadow federation is trained with it on other people.
    workdir: the shadow run (``shadow_fedavg/``), one attack directory per
      candidate and ``tuning.json``.
    target_runs: optional target runs, read only to refuse overlapping people.
    overwrite: retrain the shadow run and redo every candidate.

  Returns:
    The tuning record (what ``tuning.json`` holds).
  """
  shadow_config = shadow_training_config(training_config, config.shadow_data_seed, target_runs)
  if shadow_config.aggregator.name != 'mean':
    raise ValueError('Tune on a plain-FL shadow run (aggregator.name=mean): its individual '
                     'updates are the view the settings are selected on.')
  shadow_dir = os.path.join(workdir, 'shadow_fedavg')
  runner.train_and_evaluate(shadow_config, shadow_dir, overwrite=overwrite)
  shadow_people = data_lib.split_people(data_lib.load_dataset(shadow_config.data),
                                        shadow_config.data)[0].person_names
  current = config.attack.copy_and_resolve_references()
  candidates: list[dict[str, Any]] = []
  chosen: dict[str, Any] = {}
  for f_i, (field, values) in enumerate(parse_grid(config.grid, current)):
    scored = []
    for v_i, value in enumerate(values):
      attack_config = current.copy_and_resolve_references()
      _set(attack_config, field, value)
      attack_dir = os.path.join(workdir, f'candidate_{f_i:02d}_{v_i:02d}')
      if candidates and not os.path.exists(os.path.join(attack_dir, 'prior')):
        # The grid does not touch the prior: reuse the first candidate's (its recorded
        # config is checked before it is restored).
        first = os.path.join(workdir, 'candidate_00_00', 'prior')
        if os.path.isdir(first):
          shutil.copytree(first, os.path.join(attack_dir, 'prior'))
      logging.info('Tuning on shadow people: %s=%r', field, value)
      out = pipeline.run_attack(attack_config, [shadow_dir], attack_dir, overwrite=overwrite)
      score = _score(out)
      scored.append((value, score))
      candidates.append({'field': field, 'value': value, **score,
                         'fixed': {k: v for k, v in chosen.items()}})
    if field in VIEW2_FIELDS:
      best = min(scored, key=lambda vs: vs[1]['label_error'])[0]
    else:
      best = min(scored, key=lambda vs: (vs[1]['mean_rank'], -vs[1]['auc_vs_null']))[0]
    chosen[field] = best
    _set(current, field, best)
  record = {
      'chosen': chosen,
      'overrides': [f'--config.{k}={v}' for k, v in chosen.items()],
      'criterion': {'view 1 fields': 'lowest shadow plain-FL mean rank (ties: higher AUC vs '
                                     'null)', 'view 2 fields (' + ', '.join(VIEW2_FIELDS) + ')':
                    'lowest shadow mean label error', 'search': 'one field at a time, in order'},
      'candidates': candidates,
      'shadow': {'data_seed': config.shadow_data_seed, 'people': list(shadow_people),
                 'run': os.path.abspath(shadow_dir),
                 'note': 'synthetic people of another identity seed: no target person, no '
                         'auxiliary person of the prior; targets never select anything'},
      'target_runs_checked_for_overlap': list(target_runs),
  }
  workdir_lib.write_json(os.path.join(workdir, TUNING_FILE), record)
  return record


def read(path: str) -> dict:
  """A ``tuning.json`` (or the directory holding it)."""
  if os.path.isdir(path):
    path = os.path.join(path, TUNING_FILE)
  with open(path) as f:
    return json.load(f)
