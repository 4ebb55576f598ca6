"""Loss, optimizer step and evaluation shared by every training method.

Centralized training, each federated client's local training and the attack's
simulated client all use `loss_fn` and `make_update_fn`, so there is one
definition of what "a training step" is.

A batch is a dict of arrays with a leading batch axis:
  ``images`` uint8 ``[B, H, W, C]``, ``head_pose`` float32 ``[B, 2]``,
  ``labels`` float32 ``[B, 2]``, ``mask`` float32 ``[B]`` (1 real, 0 padding).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from privateyes_jax import metrics

Batch = dict[str, Any]

CLIENT_OPTIMIZERS = ('sgd', 'momentum', 'adam')


def learning_rate(lr: float, schedule: str, total_steps: int):
  """A constant rate, or a cosine decay to 10% of ``lr`` over ``total_steps``."""
  if schedule == 'constant':
    return lr
  if schedule == 'cosine':
    return optax.cosine_decay_schedule(lr, max(total_steps, 1), alpha=0.1)
  raise ValueError(f'Unknown learning-rate schedule {schedule!r}; available: constant, cosine.')


def make_optimizer(opt_config, total_steps: int = 0,
                   inject_hyperparams: bool = False) -> optax.GradientTransformation:
  """The optax optimizer named by ``opt_config.name`` (sgd, momentum, adam).

  ``opt_config.schedule`` ('constant' or 'cosine' over ``total_steps``) shapes the
  learning rate; ``opt_config.clip_norm > 0`` clips each step's gradient to that
  global norm first (keeps large client learning rates stable in the first local steps).

  With ``inject_hyperparams`` the same optimizer is wrapped in
  ``optax.inject_hyperparams``: ``learning_rate``, ``momentum`` and ``clip_norm`` become
  array leaves of the optimizer state (`set_hyperparams`), so one compiled program can
  train many clients or runs with different values (sweeps). Whether clipping happens at
  all stays a static choice (``clip_norm > 0``); the schedule must be constant.
  """
  name = opt_config.name
  if name not in CLIENT_OPTIMIZERS:
    raise ValueError(f'Unknown optimizer {name!r}; available: {", ".join(CLIENT_OPTIMIZERS)}.')
  clip = opt_config.get('clip_norm', 0.0)
  if clip < 0:
    raise ValueError(f'optimizer.clip_norm must be >= 0 (0: no clipping), got {clip}.')
  momentum = opt_config.get('momentum', 0.9)
  schedule = opt_config.get('schedule', 'constant')
  if not inject_hyperparams:
    lr = learning_rate(opt_config.learning_rate, schedule, total_steps)
    return _client_optimizer(name, lr, momentum, clip if clip > 0 else None)
  if schedule != 'constant':
    raise ValueError(f'optimizer.schedule={schedule!r} cannot be combined with injected '
                     'hyperparameters; use "constant".')
  clip_enabled = clip > 0

  def factory(learning_rate, momentum, clip_norm):  # pylint: disable=redefined-outer-name
    return _client_optimizer(name, learning_rate, momentum,
                             clip_norm if clip_enabled else None)

  return optax.inject_hyperparams(factory)(
      learning_rate=float(opt_config.learning_rate), momentum=float(momentum),
      clip_norm=float(clip))


def _client_optimizer(name: str, lr, momentum, clip_norm) -> optax.GradientTransformation:
  """``name``'s optax transform, after global-norm clipping when ``clip_norm`` is not None."""
  if name == 'sgd':
    tx = optax.sgd(lr)
  elif name == 'momentum':
    tx = optax.sgd(lr, momentum=momentum)
  else:
    tx = optax.adam(lr)
  return optax.chain(optax.clip_by_global_norm(clip_norm), tx) if clip_norm is not None else tx


def set_hyperparams(opt_state, values: dict[str, Any]):
  """``opt_state`` of an ``inject_hyperparams`` optimizer with some hyperparameters replaced.

  Args:
    opt_state: the state of an optimizer built with ``inject_hyperparams`` (e.g.
      `make_optimizer(..., inject_hyperparams=True)`), possibly with leading batch axes
      (a vmapped ``init``).
    values: hyperparameter name -> value, broadcast to the stored leaf's shape (e.g.
      ``{'learning_rate': lr}`` with ``lr`` ``[clients]`` for a vmapped state).

  Raises:
    ValueError: the state has no injected hyperparameters, or not one of ``values``.
  """
  stored = getattr(opt_state, 'hyperparams', None)
  if stored is None:
    raise ValueError('The optimizer state has no injected hyperparameters; build the '
                     'optimizer with inject_hyperparams=True.')
  unknown = sorted(set(values) - set(stored))
  if unknown:
    raise ValueError(f'Unknown hyperparameter(s) {unknown}; the optimizer has {sorted(stored)}.')
  new = dict(stored)
  for key, value in values.items():
    new[key] = jnp.broadcast_to(jnp.asarray(value, stored[key].dtype), stored[key].shape)
  return opt_state._replace(hyperparams=new)


def loss_fn(apply_fn: Callable, params, batch: Batch) -> jax.Array:
  """Masked mean L1 error of the (pitch, yaw) or screen-target prediction."""
  pred = apply_fn({'params': params}, batch['images'], batch['head_pose'])
  per_sample = jnp.sum(jnp.abs(pred - batch['labels']), axis=-1)
  mask = batch['mask']
  return jnp.sum(per_sample * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def make_update_fn(apply_fn: Callable, optimizer: optax.GradientTransformation):
  """``(params, opt_state, batch) -> (params, opt_state, loss)``, not jitted.

  A batch with no real samples (all-zero mask) leaves params and optimizer state
  unchanged, which is how padded local steps of small clients are skipped.
  """
  def update(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn, argnums=1)(apply_fn, params, batch)
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    has_data = jnp.sum(batch['mask']) > 0
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(has_data, n, o), new, old)
    return keep(new_params, params), keep(new_opt_state, opt_state), loss
  return update


def predict_fn(apply_fn: Callable, label_scaling=None):
  """Jitted ``(params, images, head_pose) -> predictions`` in the dataset's unit.

  ``label_scaling`` (`label_scaling.LabelScaling`): the model was trained on
  standardised labels; its outputs are mapped back (``out * scale + offset``).
  """
  if label_scaling is None or label_scaling.is_identity:
    return jax.jit(lambda params, images, head_pose: apply_fn({'params': params}, images,
                                                              head_pose))
  return jax.jit(lambda params, images, head_pose: label_scaling.denormalize(
      apply_fn({'params': params}, images, head_pose)))


def predict(predict_jit, params, images: np.ndarray, head_pose: np.ndarray,
            batch_size: int = 512) -> np.ndarray:
  """Predictions for arbitrarily many samples with one compiled shape (pads the tail)."""
  n = len(images)
  out = []
  for start in range(0, n, batch_size):
    img = images[start:start + batch_size]
    hp = head_pose[start:start + batch_size]
    pad = batch_size - len(img)
    if pad:
      img = np.concatenate([img, np.zeros((pad,) + img.shape[1:], img.dtype)])
      hp = np.concatenate([hp, np.zeros((pad, 2), hp.dtype)])
    out.append(np.asarray(predict_jit(params, img, hp))[:batch_size - pad])
  return np.concatenate(out) if out else np.zeros((0, 2), np.float32)


def evaluate_people(predict_jit, params, people, label_kind: str,
                    batch_size: int = 512) -> dict[str, float]:
  """Mean error per person (degrees for gaze, label units for screen targets)."""
  return {
      p.person: float(np.mean(metrics.label_error(
          predict(predict_jit, params, p.images, p.head_pose, batch_size),
          p.labels, label_kind)))
      for p in people
  }


def mean_error(errors: dict[str, float] | None) -> float | None:
  """The mean over people of per-person errors (None when there are none)."""
  return float(np.mean(list(errors.values()))) if errors else None


def mean_predictor_error(train_labels: np.ndarray, people, label_kind: str) -> float:
  """Error of always predicting the training mean label, over all test samples."""
  mean = train_labels.mean(axis=0)
  errs = [metrics.label_error(np.broadcast_to(mean, p.labels.shape).astype(np.float32),
                              p.labels, label_kind) for p in people]
  return float(np.mean(np.concatenate(errs)))
