"""DualView stages 2 and 3: appearance inversion and gaze-distribution recovery (DESIGN.md §5).

Given what an adversary observed about one person in one round, `attack_person`
reconstructs

* **view 1, how the user looks**: images ``G(z)`` of the GAN prior whose simulated
  local-training signal explains the observed model change, and
* **view 2, where the user looks**: samples of the person's gaze (pitch, yaw).

Threat models (what ``observed_update`` is):

* plain FL: the server sees the person's **individual update** Δ = θ_local − θ;
* PrivatEyes: a coalition of S-1 servers sees only uniformly random shares of Δ
  (the `coalition_view`: noise, whatever the data) and the opened **output
  model**; an adversary with no individual update passes ``observed_update=None``
  and the output-model change ``OM_{r+1} − OM_r``.

Inversion objective (per restart ``r`` of ``latents`` images ``x = G(z_r)``), in the
spirit of GMI (Zhang et al., CVPR 2020) with the update matching of "Inverting
Gradients" (Geiping et al., NeurIPS 2020):

    loss_r = (1 − cos(u_sim(x, y_r), Δ))                      update matching
             + feature_weight · (1 − cos(φ(x), φ̄(Δ)))          feature matching
             + prior_weight · (−mean D(x))                     GAN prior
             + latent_weight · mean(z_r²)

* ``u_sim = −∇_θ L(θ; x, head_pose, y_r)`` is the update a client holding the images
  ``x`` with gaze labels ``y_r`` (optimised jointly with ``z_r``) would send after
  one step from θ. For SGD local training with learning rate η and T steps,
  Δ ≈ −η Σ_t g_t, so the gradient direction matches Δ up to the drift of θ within
  the round; cosine similarity ignores η, T and the batch size. For Adam (or
  momentum) local training each coordinate of Δ is roughly −lr · sign(g_t)
  (a running mean of g), which still correlates with −g: the same objective
  applies approximately.
* The client's loss is L1 (`training.loss_fn`), whose gradient depends on the
  labels only through ``sign(pred − y)``; the simulation uses the pseudo-Huber
  smoothing ``sqrt(r² + ε²) − ε`` (equal to L1 for |r| ≫ ε) so that the labels
  receive gradients.
* ``φ(x)`` is the input of a dense layer of the target model (GazeNet's first dense
  layer, fed by the convolutional features), and ``φ̄(Δ)`` the client's mean input
  to it, which the observed update of that layer reveals in closed form
  (`estimate_layer_input`). This is the strongest appearance signal in an
  individual update of a model with a dense layer; noise yields a random φ̄.
* Latents are kept on the sphere of radius sqrt(latent_dim), where the prior's
  N(0, I) latents live (``latent_constraint``).

The best restart is chosen by the attack's own final loss, never by ground truth.

View 2 (``gaze_source``): by default the attacked model θ's predictions on the
reconstructions of the ``gaze_restarts`` best restarts. The jointly optimised
labels are returned too; on the synthetic demo they were less accurate (an L1
update reveals only the signs of the residuals), see `default_config`.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from privateyes_jax.attacks import gan_prior
from privateyes_jax.models import gan as gan_models

PyTree = Any


def default_config(preset: str = 'demo') -> ml_collections.ConfigDict:
  """The attack budget and objective. ``preset``: ``'demo'`` (CPU), ``'full'``, ``'tiny'`` (tests).

  Fields:
    restarts: independent random initialisations, optimised in one batch.
    latents: images per restart (the simulated client batch).
    keep_restarts: the images of this many best restarts are returned,
      ``keep_restarts * latents`` in all (default 1: the best restart only).
    gaze_restarts: the gaze samples come from this many best restarts (more
      samples give a smoother estimate of the distribution).
    steps: Adam steps on the latents and labels.
    learning_rate: Adam learning rate of the latents.
    label_learning_rate: Adam learning rate of the gaze labels (radians).
    prior_weight: weight of the GAN prior term ``−mean D(G(z))``. Kept small: a
      critic trained briefly scores images far from its training distribution
      arbitrarily, and at weight 0.02+ pulled the inversion towards them.
    latent_weight: weight of ``mean(z²)`` (for ``latent_constraint='none'``).
    latent_constraint: ``'sphere'`` projects every latent back onto the sphere of
      radius sqrt(latent_dim) after each step, the typical set of the prior's
      N(0, I) latents (as in PULSE, Menon et al. 2020), so the inversion stays
      where the generator was trained; ``'clip'`` clips each coordinate to
      [-3, 3]; ``'none'``.
    huber_delta: ε of the pseudo-Huber smoothing of the client's L1 loss (radians).
    label_init_std: spread of the initial labels around θ's predictions (radians);
      labels equal to the predictions would give a zero simulated update.
    feature_weight: weight of the feature-matching term (0 disables it).
    feature_layer: the dense layer whose input is matched (GazeNet: ``'Dense_0'``,
      the 500-unit layer fed by the convolutions; 99% of the parameters).
    feature_match: ``'each'``: every image's features point like φ̄ (each
      reconstruction carries the identity); ``'mean'``: the images' mean does.
    match_layers: top-level parameter collections whose update is matched
      (e.g. ``('Dense_0', 'Dense_1')``); empty: every parameter. Matching only the
      dense layers keeps nearly all of GazeNet's parameters while avoiding a
      second-order backward pass through the convolutions (10x cheaper on CPU).
      GazeNet's names stand for the same roles in a model without them (the face
      model's dense head layers; `layers_for_model`).
    optimize_head_pose: optimise the simulated head pose too (else fixed at 0).
    gaze_source: how view 2 is formed: ``'global_model'`` (θ's predictions on the
      reconstructions), ``'labels'`` (the labels optimised jointly with the
      images; scale-free) or ``'local_model'`` (predictions of θ + Δ, meaningful
      only when Δ is a real individual update at its true scale). On the demo
      (15 synthetic people): mean-gaze error 5.4° for 'global_model', 6.9° for
      'labels', 7.6° for 'local_model', 8.4° for the population mean.
  """
  c = ml_collections.ConfigDict()
  c.restarts = 4
  c.latents = 8
  c.keep_restarts = 1
  c.gaze_restarts = 4
  c.steps = 30
  c.learning_rate = 0.08
  c.label_learning_rate = 0.02
  c.prior_weight = 0.01
  c.latent_weight = 0.0
  c.latent_constraint = 'sphere'
  c.huber_delta = 0.05
  c.label_init_std = 0.1
  c.feature_weight = 10.0  # Chosen on shadow people (experiments.tune_attack; DECISIONS.md).
  c.feature_layer = 'Dense_0'
  c.feature_match = 'mean'
  c.match_layers = ('Dense_0', 'Dense_1')
  c.optimize_head_pose = False
  c.gaze_source = 'global_model'
  if preset == 'full':
    c.restarts = 8
    c.latents = 16
    c.gaze_restarts = 8
    c.steps = 400
    c.learning_rate = 0.03
    c.match_layers = ()
  elif preset == 'tiny':
    c.feature_weight = 3.0  # The tests' budget (not tuned).
    c.restarts = 2
    c.latents = 4
    c.gaze_restarts = 2
    c.steps = 8
    c.feature_layer = 'Dense_0'
    c.match_layers = ()
  elif preset != 'demo':
    raise ValueError(f'Unknown attack preset {preset!r}; available: demo, full, tiny.')
  return c


GAZE_SOURCES = ('local_model', 'labels', 'global_model')


# The dense layers of `GazeNet` that the presets name (``feature_layer``, ``match_layers``).
GAZENET_DENSE_LAYERS = ('Dense_0', 'Dense_1')


def dense_layers(params: PyTree) -> tuple[str, ...]:
  """The model's top-level dense layers (a 2-D ``kernel`` and a ``bias``), sorted by name."""
  return tuple(sorted(
      k for k, v in params.items()
      if hasattr(v, 'keys') and set(v.keys()) == {'kernel', 'bias'}
      and getattr(v['kernel'], 'ndim', 0) == 2))


def layers_for_model(config: ml_collections.ConfigDict,
                     params: PyTree) -> ml_collections.ConfigDict:
  """``config`` (an attack config) with GazeNet's layer names given their roles in ``params``.

  The presets name GazeNet's dense layers: ``'Dense_0'`` (fed by the convolutional
  features) as ``feature_layer`` and both as ``match_layers``. A model without
  them (the face model: ``'gaze'``, or ``'screen_hidden'`` and ``'screen_target'``)
  gets the same roles: the feature layer is its dense layer with the most inputs
  (the one fed by the convolutions) and the matched layers are its dense layers.
  Names the model has, and names that are not GazeNet's, are left as they are (the
  inversion refuses the latter if the model lacks them). Returns a copy.
  """
  config = config.copy_and_resolve_references()
  dense = dense_layers(params)
  if not dense:
    return config
  if config.get('feature_layer', '') in GAZENET_DENSE_LAYERS and config.feature_layer not in params:
    config.feature_layer = max(dense, key=lambda k: (params[k]['kernel'].shape[0], k))
  layers = tuple(config.get('match_layers', ()))
  if (layers and set(layers) <= set(GAZENET_DENSE_LAYERS)
      and not set(layers) <= set(params)):
    config.match_layers = dense
  return config


# ----------------------------------------------------------------------------- pytree helpers
def _select(params: PyTree, layers) -> PyTree:
  """The top-level collections ``layers`` of a params dict (all of it if ``layers`` is empty)."""
  if not layers:
    return params
  missing = [k for k in layers if k not in params]
  if missing:
    raise ValueError(f'match_layers {missing} are not in the model parameters '
                     f'{sorted(params)}.')
  return {k: params[k] for k in layers}


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
  """``<a, b>`` summed over leaves. Leaf by leaf: XLA:CPU fuses a concatenated
  3.4M-vector dot with the gradient computation pathologically (100x slower)."""
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def cosine_distance(a: PyTree, b: PyTree) -> jax.Array:
  """``1 − cos(a, b)`` of two pytrees of the same structure, in [0, 2]."""
  return 1.0 - tree_vdot(a, b) / (jnp.sqrt(tree_vdot(a, a) * tree_vdot(b, b)) + 1e-20)


def tree_norm(a: PyTree) -> jax.Array:
  return jnp.sqrt(tree_vdot(a, a))


# ----------------------------------------------------------------------------- the simulated client
def smooth_l1(pred, labels, delta: float):
  """Pseudo-Huber ``Σ_coords sqrt(r² + δ²) − δ``, ``[K, 2] -> [K]``: the client's L1, smoothed."""
  r = pred - labels
  return jnp.sum(jnp.sqrt(r * r + delta * delta) - delta, axis=-1)


def _input_interceptor(layer: str, captured: list):
  """A flax method interceptor that records the input of submodule ``layer``'s ``__call__``."""
  def interceptor(next_fun, args, kwargs, context):
    if context.module.name == layer and context.method_name == '__call__':
      captured.append(args[0])
    return next_fun(*args, **kwargs)
  return interceptor


def simulated_update(apply_fn: Callable, params: PyTree, images255, head_pose, labels,
                     layers, delta: float, feature_layer: str = ''):
  """``−∇ L`` of one client step on ``images255 [K, H, W, C]`` (floats, uint8 scale).

  Only the collections ``layers`` are differentiated (the rest of θ is a constant),
  so no weight gradient of the other layers is formed.

  Returns:
    The simulated update (pytree of the ``layers`` collections) or, when
    ``feature_layer`` names a submodule, ``(update, features [K, in])`` with the
    inputs of that layer for the K images.
  """
  matched = _select(params, layers)

  def loss(sub):
    full = {**params, **sub} if layers else sub
    captured = []
    if feature_layer:
      with nn.intercept_methods(_input_interceptor(feature_layer, captured)):
        pred = apply_fn({'params': full}, images255, head_pose)
      if len(captured) != 1:
        raise ValueError(f'feature_layer {feature_layer!r} was called {len(captured)} times in '
                         'the model; it must name a submodule called exactly once.')
    else:
      pred = apply_fn({'params': full}, images255, head_pose)
    return jnp.mean(smooth_l1(pred, labels, delta)), (captured[0] if captured else None)

  grads, features = jax.grad(loss, has_aux=True)(matched)
  update = jax.tree.map(jnp.negative, grads)
  return (update, features) if feature_layer else update


def estimate_layer_input(model_change: PyTree, layer: str) -> jax.Array:
  """The client's mean input to dense layer ``layer``, read off its update: ``[in]``.

  For a dense layer ``h = W^T x + b`` every sample contributes ``x_i δ_i^T`` to the
  kernel gradient and ``δ_i`` to the bias gradient, so the rank-1 least-squares fit
  ``ΔW ≈ x̄ Δb^T`` gives ``x̄ = ΔW Δb / ||Δb||² = Σ_i w_i x_i`` with weights summing to
  one, positive for samples whose δ_i agrees with the batch (Phong et al. 2017;
  Geiping et al. 2020 §4; Fowl et al. 2022). Under plain FL this is close to the
  mean of the client's features (cosine ≈ 0.95 for GazeNet's first dense layer on
  the synthetic people); for a share or any noise it is noise.
  """
  if layer not in model_change or not {'kernel', 'bias'} <= set(model_change[layer]):
    raise ValueError(f'feature_layer {layer!r} must be a dense layer with kernel and bias in the '
                     f'model parameters {sorted(model_change)}.')
  kernel, bias = model_change[layer]['kernel'], model_change[layer]['bias']
  return kernel @ bias / (jnp.vdot(bias, bias) + 1e-30)


# ----------------------------------------------------------------------------- inversion
def _check_update(update: PyTree, params: PyTree, name: str) -> None:
  if jax.tree.structure(update) != jax.tree.structure(params):
    raise ValueError(f'{name} must have the structure of the model parameters; got '
                     f'{jax.tree.structure(update)} vs {jax.tree.structure(params)}.')
  shapes = [(a.shape, b.shape) for a, b in zip(jax.tree.leaves(update), jax.tree.leaves(params))
            if a.shape != b.shape]
  if shapes:
    raise ValueError(f'{name} leaf shapes differ from the parameters: {shapes[:3]}.')
  if not all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(update)):
    raise ValueError(f'{name} contains NaN or inf.')


def make_inversion(prior: gan_prior.Prior, apply_fn: Callable, attack_config,
                   local_optimizer: str = 'sgd'):
  """Builds the inversion ``(key, params, model_change, cond) -> result dict``.

  ``model_change`` is the observed change of the model (pytree like ``params``).
  The result holds, for every restart ``r``: ``images01 [R, K, H, W, C]`` (the
  prior's image shape, the run's: 36x60x1 eye patches by default),
  ``labels [R, K, 2]``, ``head_pose [R, K, 2]``, ``loss [R]`` (the objective),
  ``match [R]`` (the update cosine-distance term), ``feature [R]`` and ``prior [R]``.

  Building it once per (prior, model, config) and calling it per person avoids
  recompiling for every target. ``local_optimizer`` (the clients' optimizer name)
  is checked only: SGD, momentum and Adam updates are all matched by direction
  (module docstring). The feature estimate is exact for SGD and momentum (their
  updates are linear in the per-sample gradients) and approximate for Adam.
  """
  cfg = attack_config
  if local_optimizer not in ('sgd', 'momentum', 'adam'):
    raise ValueError(f'Unknown local optimizer {local_optimizer!r}; expected sgd, momentum or adam.')
  if cfg.feature_match not in ('each', 'mean'):
    raise ValueError(f'feature_match must be "each" or "mean", got {cfg.feature_match!r}.')
  if cfg.latent_constraint not in ('sphere', 'clip', 'none'):
    raise ValueError(f'latent_constraint must be sphere, clip or none, got {cfg.latent_constraint!r}.')
  if cfg.gaze_source not in GAZE_SOURCES:
    raise ValueError(f'gaze_source must be one of {GAZE_SOURCES}, got {cfg.gaze_source!r}.')
  for field in ('restarts', 'latents', 'steps'):
    if cfg[field] < 1:
      raise ValueError(f'attack_config.{field} must be >= 1, got {cfg[field]}.')
  for field in ('keep_restarts', 'gaze_restarts'):
    if not 1 <= cfg[field] <= cfg.restarts:
      raise ValueError(f'attack_config.{field} must be in [1, restarts={cfg.restarts}], got '
                       f'{cfg[field]}.')
  feature_layer = cfg.feature_layer if cfg.feature_weight > 0 else ''
  if cfg.feature_weight > 0 and not cfg.feature_layer:
    raise ValueError('attack_config.feature_weight > 0 needs a feature_layer (a dense layer).')
  with_features = _build_inversion(prior, apply_fn, cfg, feature_layer)
  if not feature_layer:
    return with_features
  without_features = []  # Built when first needed.

  def run(key, params, model_change, cond=None):
    # A feature layer whose observed bias change is exactly zero (the client's L1
    # residual signs cancel in small batches) reveals no feature direction: the
    # estimate is zero and its cosine has no gradient (NaN). Its term is dropped.
    if float(tree_norm(estimate_layer_input(model_change, feature_layer))) > 0.0:
      return with_features(key, params, model_change, cond)
    if not without_features:
      without_features.append(_build_inversion(prior, apply_fn, cfg, ''))
    return without_features[0](key, params, model_change, cond)

  return run


def _build_inversion(prior: gan_prior.Prior, apply_fn: Callable, cfg, feature_layer: str):
  """`make_inversion`'s inversion for a checked config, with ``feature_layer`` ('' for none)."""
  generator, critic = prior.generator, prior.critic
  layers = tuple(cfg.match_layers)
  R, K, zdim = cfg.restarts, cfg.latents, generator.latent_dim

  def generate(z, cond):
    return generator.apply({'params': prior.gen_params}, z, cond)

  def objective(variables, params, targets, cond):
    """Per-restart losses ``[R]`` and their parts."""
    z, labels, head_pose = variables['z'], variables['labels'], variables['head_pose']

    def one(z_r, y_r, hp_r):
      x = generate(z_r, cond)
      simulated = simulated_update(apply_fn, params, gan_models.to_model_images(x), hp_r, y_r,
                                   layers, cfg.huber_delta, feature_layer)
      # Without a feature layer only the update comes back (feature_weight=0).
      u, feats = simulated if feature_layer else (simulated, None)
      match = cosine_distance(u, targets['update'])
      if feature_layer:  # Cosine: the scale of φ̄ depends on η, T and the batch size.
        if cfg.feature_match == 'each':
          feature_term = jnp.mean(jax.vmap(lambda f: cosine_distance(f, targets['features']))(feats))
        else:
          feature_term = cosine_distance(jnp.mean(feats, axis=0), targets['features'])
      else:
        feature_term = jnp.zeros(())
      prior_term = -jnp.mean(critic.apply({'params': prior.critic_params}, x, cond))
      loss = (match + cfg.feature_weight * feature_term + cfg.prior_weight * prior_term
              + cfg.latent_weight * jnp.mean(z_r ** 2))
      return loss, (match, feature_term, prior_term)

    return jax.vmap(one)(z, labels, head_pose)

  def total(variables, params, targets, cond):
    loss, aux = objective(variables, params, targets, cond)
    return jnp.sum(loss), (loss, aux)  # Restarts are independent: sum = separate problems.

  tx = optax.multi_transform(
      {'z': optax.adam(cfg.learning_rate), 'labels': optax.adam(cfg.label_learning_rate),
       'head_pose': (optax.adam(cfg.label_learning_rate) if cfg.optimize_head_pose
                     else optax.set_to_zero())},
      {'z': 'z', 'labels': 'labels', 'head_pose': 'head_pose'})

  def constrain(z):
    if cfg.latent_constraint == 'sphere':
      return z * jnp.sqrt(zdim) / jnp.linalg.norm(z, axis=-1, keepdims=True)
    if cfg.latent_constraint == 'clip':
      return jnp.clip(z, -3.0, 3.0)
    return z

  @jax.jit
  def init(key, params, cond):
    kz, ky = jax.random.split(key)
    z = constrain(jax.random.normal(kz, (R, K, zdim)))
    head_pose = jnp.zeros((R, K, 2))
    x = jax.vmap(lambda zr: generate(zr, cond))(z)
    pred = jax.vmap(lambda xr, hr: apply_fn({'params': params},
                                            gan_models.to_model_images(xr), hr))(x, head_pose)
    labels = pred + cfg.label_init_std * jax.random.normal(ky, pred.shape)
    variables = {'z': z, 'labels': labels, 'head_pose': head_pose}
    return variables, tx.init(variables)

  @jax.jit
  def step(variables, opt_state, params, targets, cond):
    grads, (loss, aux) = jax.grad(total, has_aux=True)(variables, params, targets, cond)
    updates, opt_state = tx.update(grads, opt_state, variables)
    variables = optax.apply_updates(variables, updates)
    return {**variables, 'z': constrain(variables['z'])}, opt_state, loss, aux

  @jax.jit
  def finish(variables, params, targets, cond):
    loss, (match, feature_term, prior_term) = objective(variables, params, targets, cond)
    images01 = jax.vmap(lambda zr: generate(zr, cond))(variables['z'])
    return {'images01': images01, 'labels': variables['labels'],
            'head_pose': variables['head_pose'], 'loss': loss, 'match': match,
            'feature': feature_term, 'prior': prior_term}

  def run(key, params, model_change, cond=None):
    targets = {'update': _select(model_change, layers)}
    if float(tree_norm(targets['update'])) == 0.0:
      raise ValueError('The observed model change is zero on the matched layers; nothing to invert.')
    if feature_layer:
      targets['features'] = estimate_layer_input(model_change, feature_layer)
    variables, opt_state = init(key, params, cond)
    for _ in range(cfg.steps):  # A Python loop: XLA:CPU runs convs in while loops slowly.
      variables, opt_state, loss, _ = step(variables, opt_state, params, targets, cond)
    result = finish(variables, params, targets, cond)
    if not bool(jnp.all(jnp.isfinite(result['loss']))):
      raise FloatingPointError(f'DualView inversion loss became non-finite: {result["loss"]}; '
                               'lower attack_config.learning_rate.')
    return result

  return run


def recover_gaze(apply_fn: Callable, global_params: PyTree, model_change: PyTree,
                 images01, labels, head_pose, gaze_source: str) -> np.ndarray:
  """View 2: gaze samples ``[M, 2]`` (pitch, yaw radians) from ``M`` reconstructed images.

  ``'global_model'`` evaluates θ on the reconstructions (their gaze, as the
  attacked model reads it); ``'local_model'`` evaluates the locally updated model
  θ + Δ; ``'labels'`` returns the labels optimised jointly with the images.
  """
  if gaze_source == 'labels':
    return np.asarray(labels, np.float32)
  if gaze_source == 'global_model':
    params = global_params
  elif gaze_source == 'local_model':
    params = jax.tree.map(jnp.add, global_params, model_change)
  else:
    raise ValueError(f'gaze_source must be one of {GAZE_SOURCES}, got {gaze_source!r}.')
  pred = apply_fn({'params': params}, gan_models.to_model_images(images01), head_pose)
  return np.asarray(pred, np.float32)


def gaze_distribution(points: np.ndarray, within_person_cov: np.ndarray, num_samples: int = 1024,
                      seed: int = 0) -> np.ndarray:
  """View 2 as a distribution: samples of N(mean of the recovered gaze, Σ_within).

  The reconstructions locate a person's gaze (their mean), but a few dozen points
  from one round's inversion are a noisy picture of its shape. The adversary's
  public auxiliary people show how gaze spreads around a person's mean, so the
  estimate is a Gaussian at the recovered mean with their average within-person
  covariance. The samples are re-centred so that their mean is exactly the
  recovered mean (the gaze error is not changed by the sampling).

  Args:
    points: ``[M, 2]`` recovered gaze (pitch, yaw radians).
    within_person_cov: ``[2, 2]`` mean within-person covariance of auxiliary people.
    num_samples: samples to draw.
    seed: sampling seed.
  """
  points = np.asarray(points, np.float64)
  cov = np.asarray(within_person_cov, np.float64)
  if points.ndim != 2 or points.shape[1] != 2 or cov.shape != (2, 2):
    raise ValueError(f'Expected points [M, 2] and a [2, 2] covariance, got {points.shape} and '
                     f'{cov.shape}.')
  noise = np.random.default_rng(seed).multivariate_normal(np.zeros(2), cov, size=num_samples)
  return (points.mean(axis=0) + noise - noise.mean(axis=0)).astype(np.float32)


def within_person_covariance(people) -> np.ndarray:
  """Mean over people of each person's gaze covariance ``[2, 2]`` (e.g. auxiliary people)."""
  covs = [np.cov(np.asarray(p.labels, np.float64).T) for p in people if p.num_samples > 2]
  if not covs:
    raise ValueError('Need people with at least 3 gaze samples to estimate a gaze spread.')
  return np.mean(covs, axis=0)


def attack_person(key: jax.Array, prior: gan_prior.Prior, target_apply_fn: Callable,
                  global_params: PyTree, observed_update: PyTree | None,
                  local_training: dict, attack_config: ml_collections.ConfigDict, *,
                  output_model_update: PyTree | None = None, cond=None,
                  inversion: Callable | None = None) -> dict:
  """DualView on one person under one threat model.

  Args:
    key: PRNG key of this attack (restarts' latents and labels).
    prior: the trained GAN prior (`gan_prior.train_prior`).
    target_apply_fn: the attacked gaze model's ``apply``:
      ``apply_fn({'params': p}, images [B, H, W, C] (uint8 scale), head_pose [B, 2])
      -> [B, 2]``; must accept float images (the attack differentiates through them).
      ``(H, W, C)`` is the run's image shape (36x60x1 eye patches by default), which
      the prior's must equal.
    global_params: θ_r, the model the round started from (pytree).
    observed_update: the change Δ of this person's model that the adversary
      observes (plain FL: the individual update θ_local − θ_r; PrivatEyes
      coalition: its decoded share, which is noise). None: the adversary sees no
      individual update and uses ``output_model_update``.
    local_training: the clients' local training, ``{'optimizer': 'sgd'|'momentum'|
      'adam', 'learning_rate': η, 'local_steps': T, 'batch_size': B}``; only the
      optimizer name changes the attack (see the module docstring).
    attack_config: see `default_config`.
    output_model_update: ``OM_{r+1} − OM_r`` (pytree), used when
      ``observed_update`` is None.
    cond: ``[1 or K, H, W, C]`` floats in [0, 1], the auxiliary blurred image of
      the target; required by a conditional prior, refused by an unconditional one.
    inversion: a prebuilt `make_inversion` for this prior, model and config (saves
      recompiling across people); built here if None.

  Returns:
    ``{'images': uint8 [K, H, W, C], 'gaze': float32 [M, 2], 'labels': float32
    [M, 2], 'loss': float, 'match': float, 'feature': float, 'restart_losses':
    [R]}``: the reconstructions of the ``keep_restarts`` best restarts (lowest
    attack loss; K = ``keep_restarts * latents``), the gaze samples and jointly
    optimised labels of the ``gaze_restarts`` best (M = ``gaze_restarts *
    latents``), the best restart's loss and its update-matching and
    feature-matching terms, and every restart's loss.

  Raises:
    ValueError: nothing to attack, mismatched pytrees, or ``cond`` inconsistent
      with the prior.
  """
  model_change = observed_update if observed_update is not None else output_model_update
  if model_change is None:
    raise ValueError('attack_person needs observed_update or output_model_update; both are None.')
  _check_update(model_change, global_params,
                'observed_update' if observed_update is not None else 'output_model_update')
  if prior.conditional and cond is None:
    raise ValueError('The prior is conditional: pass cond (a blurred image of the target).')
  if not prior.conditional and cond is not None:
    raise ValueError('The prior is unconditional: cond must be None.')
  K = attack_config.latents
  if cond is not None:
    cond = jnp.broadcast_to(jnp.asarray(cond, jnp.float32), (K,) + prior.image_shape)
  optimizer = local_training.get('optimizer', 'sgd') if local_training else 'sgd'
  if inversion is None:
    inversion = make_inversion(prior, target_apply_fn, attack_config, optimizer)
  result = inversion(key, global_params, model_change, cond)
  order = np.argsort(np.asarray(result['loss']), kind='stable')
  keep, gaze_keep = attack_config.keep_restarts, attack_config.gaze_restarts
  if not (1 <= keep <= len(order) and 1 <= gaze_keep <= len(order)):
    raise ValueError(f'keep_restarts={keep} and gaze_restarts={gaze_keep} must be in '
                     f'[1, {len(order)}] (the inversion\'s restarts).')
  flat = lambda a, n: jnp.reshape(a[order[:n]], (-1,) + a.shape[2:])
  gaze = recover_gaze(target_apply_fn, global_params, model_change,
                      flat(result['images01'], gaze_keep), flat(result['labels'], gaze_keep),
                      flat(result['head_pose'], gaze_keep), attack_config.gaze_source)
  best = int(order[0])
  return {
      'images': np.asarray(gan_models.to_uint8(flat(result['images01'], keep))),
      'gaze': gaze,
      'labels': np.asarray(flat(result['labels'], gaze_keep), np.float32),
      'loss': float(result['loss'][best]),
      'match': float(result['match'][best]),
      'feature': float(result['feature'][best]),
      'restart_losses': [float(v) for v in result['loss']],
  }
