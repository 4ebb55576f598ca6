"""Gradient inversion without a prior (issue #14 a): "Inverting Gradients" in pixel space.

The baseline every inversion paper reports (Geiping, Bauermeister, Dröge, Moeller,
NeurIPS 2020, §4): optimise the images themselves (no generator, no critic) so that
the update a client holding them would send points like the observed one,

    loss_r(x, y) = (1 − cos(u_sim(x, y), Δ)) + tv_weight · TV(x)

with ``u_sim = −∇_θ L(θ; x, head_pose, y)`` (`dualview.simulated_update`: the
client's L1 loss, pseudo-Huber smoothed so that the labels get gradients) and
``TV`` the mean absolute difference of neighbouring pixels (images in [0, 1]).
Adam on the pixels (and the gaze labels, which the adversary does not know),
optionally on the *signs* of the gradients as in Geiping et al. ("signed
gradients"), pixels boxed to [0, 1] after every step, several random restarts
optimised as one batch; the best restart is chosen by the attack's own loss,
never by ground truth.

Cosine matching ignores the update's scale, so it applies to any number of local
SGD steps, learning rate and batch size (approximately for multi-step and Adam
local training, see `dualview`'s module docstring). What a client's images look
like is recoverable to the extent that one update pins them down: well for one
image and a model with a dense layer near the input, poorly for a batch of
dozens of images (Geiping et al. Table 3); this module reports that baseline.

`attack_person` returns the same fields as `dualview.attack_person` (``images``
uint8 ``[K, H, W, C]``, ``gaze`` ``[M, 2]``), so `evaluation.evaluate_people`
scores its reconstructions exactly like DualView's.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from privateyes_jax.attacks import dualview

PyTree = Any


def default_config(preset: str = 'demo') -> ml_collections.ConfigDict:
  """The inversion budget. ``preset``: ``'demo'`` (CPU), ``'full'`` (GPU), ``'tiny'`` (tests).

  Fields:
    restarts: independent random initialisations, optimised in one batch.
    images: images per restart (the simulated client batch, K).
    steps: Adam steps on the pixels and labels.
    learning_rate: Adam learning rate of the pixels (images in [0, 1]).
    label_learning_rate: Adam learning rate of the gaze labels (radians).
    tv_weight: weight of the total-variation penalty (Geiping et al. use 1e-4 to
      1e-1 depending on the resolution; the default eye patches are 36×60).
    signed: Adam on ``sign(∇)`` (Geiping et al.'s signed gradients), else on ∇.
    huber_delta: ε of the pseudo-Huber smoothing of the client's L1 loss.
    label_init_std: spread of the initial labels around θ's predictions (radians).
    match_layers: top-level parameter collections matched (empty: every parameter).
    init: initial pixels: ``'uniform'`` (U[0, 1]) or ``'gray'`` (0.5 plus small noise).
    lr_decay: multiply the pixel learning rate by 0.1 at 3/8, 5/8 and 7/8 of the
      steps (Geiping et al.'s schedule).
  """
  c = ml_collections.ConfigDict()
  c.restarts = 4
  c.images = 1
  c.steps = 300
  c.learning_rate = 0.01
  c.label_learning_rate = 0.02
  c.tv_weight = 0.01
  c.signed = True
  c.huber_delta = 0.05
  c.label_init_std = 0.1
  c.match_layers = ()
  c.init = 'gray'
  c.lr_decay = True
  if preset == 'full':
    c.restarts = 8
    c.steps = 1000
  elif preset == 'tiny':
    c.restarts = 2
    c.steps = 100
  elif preset != 'demo':
    raise ValueError(f'Unknown gradient-inversion preset {preset!r}; available: demo, full, tiny.')
  return c


def total_variation(images01: jax.Array) -> jax.Array:
  """Mean absolute difference of vertically and horizontally adjacent pixels of ``[K, H, W, C]``."""
  dh = jnp.abs(images01[:, 1:] - images01[:, :-1])
  dw = jnp.abs(images01[:, :, 1:] - images01[:, :, :-1])
  return jnp.mean(dh) + jnp.mean(dw)


def _pixel_schedule(cfg) -> optax.Schedule:
  if not cfg.lr_decay:
    return optax.constant_schedule(cfg.learning_rate)
  bounds = {int(cfg.steps * f): 0.1 for f in (3 / 8, 5 / 8, 7 / 8) if int(cfg.steps * f) > 0}
  return optax.piecewise_constant_schedule(cfg.learning_rate, bounds)


def make_inversion(apply_fn: Callable, config: ml_collections.ConfigDict,
                   image_shape: tuple[int, int, int]):
  """Builds ``run(key, params, observed_update, head_pose=None) -> dict`` (one compile per model).

  ``run`` returns, per restart ``r``: ``images01 [R, K, H, W, C]``, ``labels [R, K, 2]``,
  ``loss [R]`` (the objective), ``match [R]`` (1 − cosine) and ``tv [R]``.
  ``head_pose`` ``[K, 2]`` is the clients' head pose if the adversary knows it
  (default zeros; GazeNet feeds it to its last layer only).
  """
  cfg = config
  for field in ('restarts', 'images', 'steps'):
    if cfg[field] < 1:
      raise ValueError(f'gradient_inversion config.{field} must be >= 1, got {cfg[field]}.')
  if cfg.init not in ('uniform', 'gray'):
    raise ValueError(f'init must be "uniform" or "gray", got {cfg.init!r}.')
  R, K = cfg.restarts, cfg.images
  layers = tuple(cfg.match_layers)

  def objective(variables, params, target, head_pose):
    def one(x01, y):
      u = dualview.simulated_update(apply_fn, params, 255.0 * x01, head_pose, y, layers,
                                    cfg.huber_delta)
      match = dualview.cosine_distance(u, target)
      tv = total_variation(x01)
      return match + cfg.tv_weight * tv, (match, tv)
    return jax.vmap(one)(variables['images01'], variables['labels'])

  def total(variables, params, target, head_pose):
    loss, aux = objective(variables, params, target, head_pose)
    return jnp.sum(loss), (loss, aux)  # Restarts are independent problems.

  pixel_tx = optax.chain(*(([_sign_transform()] if cfg.signed else [])
                           + [optax.adam(_pixel_schedule(cfg))]))
  label_tx = optax.chain(*(([_sign_transform()] if cfg.signed else [])
                           + [optax.adam(cfg.label_learning_rate)]))
  tx = optax.multi_transform({'images01': pixel_tx, 'labels': label_tx},
                             {'images01': 'images01', 'labels': 'labels'})

  @jax.jit
  def init(key, params, head_pose):
    kx, ky = jax.random.split(key)
    shape = (R, K) + tuple(image_shape)
    if cfg.init == 'uniform':
      x = jax.random.uniform(kx, shape)
    else:
      x = jnp.clip(0.5 + 0.05 * jax.random.normal(kx, shape), 0.0, 1.0)
    pred = jax.vmap(lambda xr: apply_fn({'params': params}, 255.0 * xr, head_pose))(x)
    labels = pred + cfg.label_init_std * jax.random.normal(ky, pred.shape)
    variables = {'images01': x, 'labels': labels}
    return variables, tx.init(variables)

  @jax.jit
  def step(variables, opt_state, params, target, head_pose):
    grads, (loss, _) = jax.grad(total, has_aux=True)(variables, params, target, head_pose)
    updates, opt_state = tx.update(grads, opt_state, variables)
    variables = optax.apply_updates(variables, updates)
    variables = {**variables, 'images01': jnp.clip(variables['images01'], 0.0, 1.0)}
    return variables, opt_state, loss

  @jax.jit
  def finish(variables, params, target, head_pose):
    loss, (match, tv) = objective(variables, params, target, head_pose)
    return {'images01': variables['images01'], 'labels': variables['labels'], 'loss': loss,
            'match': match, 'tv': tv}

  def run(key, params, observed_update, head_pose=None):
    # pylint: disable=protected-access  (DualView's own checks: one way to do each thing)
    dualview._check_update(observed_update, params, 'observed_update')
    target = dualview._select(observed_update, layers)
    # pylint: enable=protected-access
    if float(dualview.tree_norm(target)) == 0.0:
      raise ValueError('The observed update is zero on the matched layers; nothing to invert.')
    head_pose = (jnp.zeros((K, 2), jnp.float32) if head_pose is None
                 else jnp.asarray(head_pose, jnp.float32))
    if head_pose.shape != (K, 2):
      raise ValueError(f'head_pose must be [images={K}, 2], got {head_pose.shape}.')
    variables, opt_state = init(key, params, head_pose)
    for _ in range(cfg.steps):  # A Python loop: XLA:CPU runs convs in while loops slowly.
      variables, opt_state, _ = step(variables, opt_state, params, target, head_pose)
    result = finish(variables, params, target, head_pose)
    if not bool(jnp.all(jnp.isfinite(result['loss']))):
      raise FloatingPointError(f'Gradient inversion loss became non-finite: {result["loss"]}; '
                               'lower config.learning_rate.')
    return result

  return run


def _sign_transform() -> optax.GradientTransformation:
  """``g -> sign(g)`` leaf by leaf (Geiping et al.'s signed gradients)."""
  return optax.stateless(lambda updates, params: jax.tree.map(jnp.sign, updates))


def invert(key: jax.Array, apply_fn: Callable, global_params: PyTree, observed_update: PyTree,
           config: ml_collections.ConfigDict, image_shape: tuple[int, int, int] = (36, 60, 1),
           head_pose=None, inversion: Callable | None = None) -> dict:
  """Reconstructs a client's images from its observed update, without any prior.

  Args:
    key: PRNG key (initial pixels and labels of every restart).
    apply_fn: the attacked model's ``apply({'params': p}, images [B, H, W, C]
      (uint8 scale floats), head_pose [B, 2]) -> [B, 2]``.
    global_params: θ, the model the client's local training started from.
    observed_update: the change Δ the adversary observed (pytree like θ):
      plain FL's individual update, a differenced aggregate
      (`differencing.differencing_targets`), or a Sybil recovery
      (`differencing.sybil_recover`).
    config: see `default_config`.
    image_shape: ``(H, W, C)`` of the model's input, the run's image shape (36x60x1
      eye patches by default; a face model's faces, any size and channels).
    head_pose: ``[K, 2]`` if known; default zeros.
    inversion: a prebuilt `make_inversion` (saves recompiling across people).

  Returns:
    ``{'images': uint8 [K, H, W, C]`` (best restart, in 0..255), ``'labels'``
    ``[K, 2]`` (its jointly optimised labels), ``'loss'``, ``'match'`` (the best
    restart's terms), ``'restart_losses'`` ``[R]``, ``'all_images01'`` float
    ``[R, K, H, W, C]``}.
  """
  if inversion is None:
    inversion = make_inversion(apply_fn, config, image_shape)
  result = inversion(key, global_params, observed_update, head_pose)
  losses = np.asarray(result['loss'])
  best = int(np.argmin(losses))
  images = np.asarray(jnp.round(result['images01'][best] * 255.0)).astype(np.uint8)
  return {'images': images, 'labels': np.asarray(result['labels'][best], np.float32),
          'loss': float(losses[best]), 'match': float(result['match'][best]),
          'restart_losses': [float(v) for v in losses],
          'all_images01': np.asarray(result['images01'])}


def attack_person(key: jax.Array, apply_fn: Callable, global_params: PyTree,
                  observed_update: PyTree, config: ml_collections.ConfigDict,
                  image_shape: tuple[int, int, int] = (36, 60, 1), head_pose=None,
                  inversion: Callable | None = None) -> dict:
  """`invert` plus view 2, in the form `evaluation.evaluate_people` scores.

  The gaze samples are θ's predictions on the reconstructions (as DualView's
  default ``gaze_source='global_model'``); the jointly optimised labels are
  returned as ``labels``.

  Returns:
    ``{'images': uint8 [K, H, W, C], 'gaze': float32 [K, 2], 'labels', 'loss',
    'match', 'restart_losses'}``.
  """
  out = invert(key, apply_fn, global_params, observed_update, config, image_shape, head_pose,
               inversion)
  hp = (jnp.zeros((len(out['images']), 2), jnp.float32) if head_pose is None
        else jnp.asarray(head_pose, jnp.float32))
  gaze = apply_fn({'params': global_params}, jnp.asarray(out['images'], jnp.float32), hp)
  out.pop('all_images01')
  return {**out, 'gaze': np.asarray(gaze, np.float32)}
