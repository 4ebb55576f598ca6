"""Identity classifier: tells people apart from their images (eye patches or faces).

Used to check that synthetic people are distinguishable, and by DualView's
evaluation as the re-identification oracle. Its architecture (3x3 conv stacks with
average pooling and global pooling) deliberately differs from the gaze model's
LeNet, so that re-identification does not reward images that merely fool the
attacked model. It takes any image shape ``(H, W, C)`` (the run's; 36x60x1 eye
patches by default): its output layer is sized at ``init``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from privateyes_jax.models.gaze import scale_images


class IdentityNet(nn.Module):
  num_classes: int
  features: Sequence[int] = (16, 32, 64)

  @nn.compact
  def __call__(self, images):
    x = scale_images(images)
    for f in self.features:
      x = nn.relu(nn.Conv(f, (3, 3))(x))
      x = nn.relu(nn.Conv(f, (3, 3))(x))
      x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = jnp.concatenate([x.mean(axis=(-3, -2)), x.reshape(x.shape[:-3] + (-1,))], axis=-1)
    return nn.Dense(self.num_classes)(x)


def train_classifier(images: np.ndarray, labels: np.ndarray, num_classes: int, *,
                     steps: int = 300, batch_size: int = 64, learning_rate: float = 2e-3,
                     seed: int = 0, features: Sequence[int] = (16, 32, 64)):
  """Trains an `IdentityNet` on uint8 ``images [N, H, W, C]`` with int ``labels [N]``.

  Returns:
    (model, params).
  """
  model = IdentityNet(num_classes=num_classes, features=tuple(features))
  params = model.init(jax.random.PRNGKey(seed), images[:1])['params']
  tx = optax.adam(learning_rate)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    def loss(p):
      logits = model.apply({'params': p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  rng = np.random.default_rng(seed)
  for _ in range(steps):
    idx = rng.integers(0, len(images), batch_size)
    params, opt_state, _ = step(params, opt_state, images[idx], labels[idx])
  return model, params


def predict_logits(model: IdentityNet, params, images: np.ndarray,
                   batch_size: int = 256) -> np.ndarray:
  """``[N, num_classes]`` logits for uint8 images, in fixed-size batches."""
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x))
  out = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    pad = batch_size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    out.append(np.asarray(apply(params, chunk))[:batch_size - pad])
  return np.concatenate(out)
