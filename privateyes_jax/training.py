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


def learning_rate(lr: float, schedule: str, total_steps: int):
  """A constant rate, or a cosine decay to 10% of ``lr`` over ``total_steps``."""
  if schedule == 'constant':
    return lr
  if schedule == 'cosine':
    return optax.cosine_decay_schedule(lr, max(total_steps, 1), alpha=0.1)
  raise ValueError(f'Unknown learning-rate schedule {schedule!r}; available: constant, cosine.')


def make_optimizer(opt_config, total_steps: int = 0) -> optax.GradientTransformation:
  """The optax optimizer named by ``opt_config.name`` (sgd, momentum, adam).

  ``opt_config.schedule`` ('constant' or 'cosine' over ``total_steps``) shapes the
  learning rate; ``opt_config.clip_norm > 0`` clips each step's gradient to that
  global norm first (keeps large client learning rates stable in the first local steps).
  """
  lr = learning_rate(opt_config.learning_rate, opt_config.get('schedule', 'constant'),
                     total_steps)
  if opt_config.name == 'sgd':
    tx = optax.sgd(lr)
  elif opt_config.name == 'momentum':
    tx = optax.sgd(lr, momentum=opt_config.get('momentum', 0.9))
  elif opt_config.name == 'adam':
    tx = optax.adam(lr)
  else:
    raise ValueError(f'Unknown optimizer {opt_config.name!r}; available: sgd, momentum, adam.')
  clip = opt_config.get('clip_norm', 0.0)
  if clip < 0:
    raise ValueError(f'optimizer.clip_norm must be >= 0 (0: no clipping), got {clip}.')
  return optax.chain(optax.clip_by_global_norm(clip), tx) if clip > 0 else tx


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


def predict_fn(apply_fn: Callable):
  return jax.jit(lambda params, images, head_pose: apply_fn({'params': params}, images, head_pose))


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


def mean_predictor_error(train_labels: np.ndarray, people, label_kind: str) -> float:
  """Error of always predicting the training mean label, over all test samples."""
  mean = train_labels.mean(axis=0)
  errs = [metrics.label_error(np.broadcast_to(mean, p.labels.shape).astype(np.float32),
                              p.labels, label_kind) for p in people]
  return float(np.mean(np.concatenate(errs)))
