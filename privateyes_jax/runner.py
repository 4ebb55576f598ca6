"""Runs one experiment from a config into a workdir: the library side of experiments/train.py.

``train_and_evaluate(config, workdir)`` loads the data, splits people by the
protocol, trains with the configured method, evaluates on the held-out people and
writes ``config.json``, ``metrics.jsonl``, ``summary.json`` and checkpoints.
Re-running it on the same workdir resumes from the latest checkpoint.
"""

from __future__ import annotations

import os
import time

import numpy as np
from absl import logging

from privateyes_jax import data as data_lib
from privateyes_jax import label_scaling as label_scaling_lib
from privateyes_jax import training
from privateyes_jax import workdir as workdir_lib
from privateyes_jax.models import gaze as gaze_models

METHODS = ('centralized', 'local', 'federated')


def validate(config) -> None:
  """Rejects configs that cannot run, before any work or file is touched."""
  if config.method not in METHODS:
    raise ValueError(f'Unknown method {config.method!r}; available: {", ".join(METHODS)}.')
  for path, value in (('batch_size', config.batch_size), ('train.steps', config.train.steps),
                      ('train.eval_every', config.train.eval_every),
                      ('train.log_every', config.train.log_every)):
    if value < 1:
      raise ValueError(f'config.{path} must be >= 1, got {value}.')
  if config.method in ('local', 'federated'):
    fl = config.fl
    for path, value in (('fl.rounds', fl.rounds), ('fl.local_steps', fl.local_steps),
                        ('fl.eval_every', fl.eval_every),
                        ('fl.checkpoint_every', fl.checkpoint_every)):
      if value < 1:
        raise ValueError(f'config.{path} must be >= 1, got {value}.')
    from privateyes_jax.federated import executors, server  # pylint: disable=g-import-not-at-top
    if fl.executor not in executors.EXECUTORS:
      raise ValueError(f'Unknown fl.executor {fl.executor!r}; available: '
                       f'{", ".join(executors.EXECUTORS)}.')
    if config.method == 'federated':
      server.make_server_optimizer(fl)  # Validates name and hyperparameters.
    if config.optimizer.get('schedule', 'constant') != 'constant':
      raise ValueError('optimizer.schedule must be "constant" for federated and local runs '
                       '(clients restart their optimizer every round); decay the server '
                       'learning rate with fl.server_schedule instead.')
    if config.get('record_views', '') not in ('', 'last', 'all'):
      raise ValueError(f'record_views must be "", "last" or "all", got {config.record_views!r}.')
  if config.method != 'federated':
    dp = config.get('aggregator', {}).get('dp', {})
    attackers = config.get('fl', {}).get('malicious', {})
    if dp.get('enabled', False):
      raise ValueError(f'aggregator.dp.enabled applies to federated runs, not method='
                       f'{config.method!r}: its privacy would be silently absent.')
    if attackers.get('kind', 'none') != 'none':
      raise ValueError(f'fl.malicious applies to federated runs, not method={config.method!r}.')
    if config.get('aggregator', {}).get('validity', {}).get('enabled', False):
      raise ValueError(f'aggregator.validity.enabled applies to federated runs, not method='
                       f'{config.method!r}: its check would be silently absent.')
  label_scaling_lib.validate(config.data)
  if config.data.get('num_val_people', 0) < 0:
    raise ValueError(f'config.data.num_val_people must be >= 0, got {config.data.num_val_people}.')
  if not config.optimizer.learning_rate > 0:
    raise ValueError(f'config.optimizer.learning_rate must be > 0, got '
                     f'{config.optimizer.learning_rate}.')


def training_images_stay_on_disk(config) -> bool:
  """Whether the training people's images are left in the prepared files (issue #17).

  For federated and local runs that read prepared array_record files
  (``data.source='tfds'`` or a public dataset) with ``fl.client_store`` ``'auto'`` or
  ``'streamed'`` and the per-person partition: the dataset is read with lazy images
  (`tfds_source.RecordImages`), so host memory holds labels and record numbers; the
  store reads each round's batches from disk (streamed) or, if ``'auto'`` resolves to
  padded (decided from counts x image shape, no image read), each client once.
  """
  if config.method not in ('federated', 'local'):
    return False
  if config.fl.get('client_store', 'auto') not in ('auto', 'streamed'):
    return False
  if config.data.get('partition', 'person') != 'person':
    return False  # The IID control pools every image.
  return data_lib.reads_prepared_files(config.data)


def train_and_evaluate(config, workdir: str, overwrite: bool = False,
                       halt_after: int | None = None) -> dict:
  """Trains and evaluates ``config`` in ``workdir``; returns the summary dict.

  Args:
    config: an experiment config (see experiments/configs/).
    workdir: directory for this run's outputs; resumed if it holds this run.
    overwrite: start afresh: delete the run found in ``workdir`` instead of
      resuming it (same config) or refusing it (another config).
    halt_after: stop after this many steps as if interrupted (for tests and
      preemption drills); the summary is not written then.
  """
  validate(config)
  if config.data.protocol == 'loo' and config.data.fold == -1:
    return _all_folds(config, workdir, overwrite)
  t0 = time.perf_counter()
  lazy = training_images_stay_on_disk(config)
  dataset = (data_lib.load_dataset(config.data, lazy_images=True) if lazy
             else data_lib.load_dataset(config.data))
  train_people, val_people, test_people = data_lib.split_people_val(dataset, config.data)
  if lazy:  # Held-out people are few: evaluated in memory. Training people stay on disk.
    from privateyes_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
    val_people, test_people = tfds_source.in_memory(val_people), tfds_source.in_memory(
        test_people)
  model = gaze_models.build_model(config.model)
  wd = workdir_lib.Workdir.open(workdir, config, overwrite=overwrite)
  try:
    # Once, before round 1 (a resumed run recomputes the same numbers).
    scaling = label_scaling_lib.resolve(config, dataset.label_kind, train_people)
    label_scaling_lib.save(wd.path, scaling)
    if config.method == 'centralized':
      from privateyes_jax import centralized as method  # pylint: disable=g-import-not-at-top
    else:
      from privateyes_jax.federated import engine as method  # pylint: disable=g-import-not-at-top
    result = method.train(config, wd, model,
                          label_scaling_lib.normalize_people(train_people, scaling),
                          test_people, dataset.label_kind, halt_after=halt_after,
                          val_people=val_people, label_scaling=scaling)
  finally:
    wd.close()
  if 'halted_at_step' in result:
    return result
  result['label_scaling'] = scaling.to_dict()
  summary = build_summary(config, dataset, train_people, test_people, result,
                          val_people=val_people)
  summary['total_time_s'] = time.perf_counter() - t0
  wd.write_summary(summary)
  logging.info('%s on %s: test error %.3f (mean predictor %.3f), validation error %s',
               summary['method'], summary['dataset'], summary['test_error'],
               summary['baseline_mean_predictor_error'], summary['val_error'])
  return summary


def build_summary(config, dataset, train_people, test_people, result: dict,
                  baseline: float | None = None, val_people=None) -> dict:
  """A run's ``summary.json`` from its method's result (also used by sweeps).

  Args:
    result: the method's return value: ``test_error``, ``per_person_error``,
      ``steps``, ``wall_time_s`` and optionally the federated fields (rounds,
      clients, aggregator, costs, ...).
    baseline: the mean predictor's error on ``test_people``; computed if None.
    val_people: the validation people (``data.num_val_people``); their error
      (``result['val_error']``, chosen on by sweeps) is reported beside the test error.
  """
  if baseline is None:
    pooled_labels = np.concatenate([p.labels for p in train_people.people])
    baseline = training.mean_predictor_error(pooled_labels, test_people.people,
                                             dataset.label_kind)
  from privateyes_jax.federated import engine  # pylint: disable=g-import-not-at-top
  summary = {
      'method': engine.method_label(config),
      'dataset': dataset.name,
      'label_kind': dataset.label_kind,
      'error_unit': 'deg' if dataset.label_kind == 'gaze' else 'label units',
      'num_people_train': len(train_people.people),
      'num_people_val': len(val_people.people) if val_people is not None else 0,
      'num_people_test': len(test_people.people),
      'test_people': test_people.person_names,
      'val_people': val_people.person_names if val_people is not None else [],
      'test_error': result['test_error'],
      'val_error': result.get('val_error'),
      'baseline_mean_predictor_error': baseline,
      'per_person_error': result['per_person_error'],
      'steps': result['steps'],
      'wall_time_s': result['wall_time_s'],
  }
  for key in ('rounds', 'num_clients', 'clients_per_round', 'local_steps', 'server_optimizer',
              'aggregator', 'executor', 'num_params', 'upload_bytes_per_client',
              'mean_round_seconds', 'mpc', 'per_person_val_error', 'label_scaling', 'dp'):
    if key in result:
      summary[key] = result[key]
  if dataset.label_kind == 'gaze':
    summary['test_angular_error_deg'] = result['test_error']
    summary['baseline_mean_predictor_error_deg'] = baseline
    summary['per_person_error_deg'] = result['per_person_error']
  return summary


def _all_folds(config, workdir: str, overwrite: bool) -> dict:
  """Leave-one-person-out over every person: one sub-run per fold in ``fold_XX/``.

  The summary reports each person's error from the fold that held them out, and
  the mean over people.
  """
  # Only the people (count, label kind) are needed here: prepared images stay on disk.
  dataset = (data_lib.load_dataset(config.data, lazy_images=True)
             if data_lib.reads_prepared_files(config.data) else data_lib.load_dataset(config.data))
  wd = workdir_lib.Workdir.open(workdir, config, overwrite=overwrite)
  wd.close()
  per_person, folds = {}, []
  for fold in range(len(dataset.people)):
    fold_config = config.copy_and_resolve_references()
    with fold_config.unlocked():
      fold_config.data.fold = fold
    s = train_and_evaluate(fold_config, os.path.join(workdir, f'fold_{fold:02d}'),
                           overwrite=overwrite)
    per_person.update(s['per_person_error'])
    folds.append(s)
  val_errors = [s['val_error'] for s in folds if s.get('val_error') is not None]
  summary = {k: v for k, v in folds[0].items()
             if k not in ('test_error', 'per_person_error', 'per_person_error_deg',
                          'val_error', 'per_person_val_error', 'val_people', 'label_scaling',
                          'test_people', 'test_angular_error_deg', 'wall_time_s',
                          'total_time_s', 'baseline_mean_predictor_error',
                          'baseline_mean_predictor_error_deg')}
  summary.update(
      protocol='loo', folds=len(folds), per_person_error=per_person,
      test_error=float(np.mean(list(per_person.values()))),
      # Each fold's validation people's mean error, averaged over folds.
      val_error=float(np.mean(val_errors)) if val_errors else None,
      baseline_mean_predictor_error=float(np.mean(
          [s['baseline_mean_predictor_error'] for s in folds])),
      wall_time_s=float(sum(s['wall_time_s'] for s in folds)))
  if dataset.label_kind == 'gaze':
    summary.update(test_angular_error_deg=summary['test_error'],
                   per_person_error_deg=per_person,
                   baseline_mean_predictor_error_deg=summary['baseline_mean_predictor_error'])
  if workdir_lib.is_primary():
    workdir_lib.write_json(os.path.join(workdir, workdir_lib.SUMMARY_FILE), summary)
  return summary
