"""Centralized baseline: all training people's data pooled, trained with optax.

This is the upper reference of the paper's accuracy table: no privacy at all.
Checkpoints hold params, optimizer state and the step; the batch order is a pure
function of ``(seed, step)``, so a resumed run is bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from privateyes_jax import data as data_lib
from privateyes_jax import progress as progress_lib
from privateyes_jax import training
from privateyes_jax.workdir import Workdir


class PooledBatches:
  """Batch ``t`` is positions ``[tB, (t+1)B)`` of a stream of per-epoch permutations."""

  def __init__(self, pooled: dict[str, np.ndarray], batch_size: int, seed: int):
    self.pooled, self.batch_size, self.seed = pooled, batch_size, seed
    self.n = len(pooled['images'])
    self._perms: dict[int, np.ndarray] = {}

  def _perm(self, epoch: int) -> np.ndarray:
    if epoch not in self._perms:
      self._perms = {epoch: np.random.default_rng([self.seed, 1, epoch]).permutation(self.n)}
    return self._perms[epoch]

  def __call__(self, step: int) -> training.Batch:
    pos = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
    epochs, offsets = pos // self.n, pos % self.n
    idx = np.array([self._perm(e)[o] for e, o in zip(epochs, offsets)])
    return {'images': self.pooled['images'][idx], 'head_pose': self.pooled['head_pose'][idx],
            'labels': self.pooled['labels'][idx],
            'mask': np.ones(self.batch_size, np.float32)}


def check_finite(losses: list, first_step: int) -> None:
  """Raises FloatingPointError naming the first step whose loss is NaN or infinite."""
  values = np.asarray(jax.device_get(losses), np.float64)
  bad = np.flatnonzero(~np.isfinite(values))
  if bad.size:
    step = first_step + int(bad[0]) + 1
    raise FloatingPointError(
        f'Training loss became {values[bad[0]]} at step {step}; stopping. The last good '
        'checkpoint is kept. Lower the learning rate or check the data.')


def train(config, workdir: Workdir, model, train_people, test_people, label_kind: str,
          halt_after: int | None = None, *, val_people=None, label_scaling=None) -> dict:
  """Trains the centralized baseline; returns the summary fields of this method.

  ``train_people`` carry the labels training sees (standardised by ``label_scaling``,
  `privateyes_jax.label_scaling`); predictions are mapped back to the dataset's unit
  before the test (and validation) people's errors are computed.
  """
  pooled = data_lib.pool(train_people.people)
  optimizer = training.make_optimizer(config.optimizer, config.train.steps)
  batches = PooledBatches(pooled, config.batch_size, config.seed)
  params = model.init(jax.random.PRNGKey(config.seed), pooled['images'][:1],
                      pooled['head_pose'][:1])['params']
  state = {'params': params, 'opt_state': optimizer.init(params),
           'step': np.asarray(0, np.int64), 'elapsed_s': np.asarray(0.0, np.float64)}
  latest = workdir.latest_step()
  if latest is not None:
    state = workdir.restore(latest, state)
    workdir.truncate_metrics('step', latest)
  step = int(state['step'])
  update = jax.jit(training.make_update_fn(model.apply, optimizer))
  predict = training.predict_fn(model.apply, label_scaling)
  val = list(val_people.people) if val_people is not None else []
  total = config.train.steps
  progress = progress_lib.Progress('centralized', total, start=step)
  params, opt_state = state['params'], state['opt_state']
  elapsed = float(state['elapsed_s'])
  losses: list = []
  t_last = time.perf_counter()
  errors = None
  while step < total:
    params, opt_state, loss = update(params, opt_state, batches(step))
    losses.append(loss)
    step += 1
    if step % config.train.log_every == 0 or step == total:
      check_finite(losses[-config.train.log_every:], step - len(losses[-config.train.log_every:]))
      progress.update(step, loss=float(losses[-1]))
    if step % config.train.eval_every == 0 or step == total:
      check_finite(losses, step - len(losses))
      errors = training.evaluate_people(predict, params, test_people.people, label_kind)
      val_errors = training.evaluate_people(predict, params, val, label_kind)
      now = time.perf_counter()
      elapsed += now - t_last
      t_last = now
      workdir.append_metrics({
          'step': step, 'train_loss': float(np.mean(jax.device_get(losses))),
          'test_error': float(np.mean(list(errors.values()))),
          'per_person_error': errors, 'seconds': elapsed,
          **({'val_error': training.mean_error(val_errors)} if val else {})})
      workdir.save(step, {'params': params, 'opt_state': opt_state,
                          'step': np.asarray(step, np.int64), 'elapsed_s': np.asarray(elapsed, np.float64)})
      losses = []
    if halt_after is not None and step >= halt_after and step < total:
      return {'halted_at_step': step}
  if errors is None:  # Resumed from the final checkpoint: evaluate it again.
    errors = training.evaluate_people(predict, params, test_people.people, label_kind)
    val_errors = training.evaluate_people(predict, params, val, label_kind)
  return {
      'val_error': training.mean_error(val_errors), 'per_person_val_error': val_errors,
      'steps': step, 'per_person_error': errors,
      'test_error': float(np.mean(list(errors.values()))),
      'wall_time_s': elapsed, 'params': params,
  }
