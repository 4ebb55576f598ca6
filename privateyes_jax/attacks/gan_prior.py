"""DualView stage 1: the WGAN-GP image prior, trained on auxiliary people (DESIGN.md §5.1).

The adversary has public eye images of people *outside* the federation (GMI's
"public knowledge distillation"); on synthetic data these are people with indices
past the federation's (``first_person=100``), who are genuinely other people because
person ``i`` is a pure function of ``(seed, i)``.

Training is WGAN-GP (Gulrajani et al., NeurIPS 2017): ``n_critic`` critic updates
per generator update, critic loss ``E[D(fake)] - E[D(real)] + lambda * GP`` with
``GP = E[(||grad_x D(x_hat)||_2 - 1)^2]`` on random interpolates ``x_hat``, and
generator loss ``-E[D(G(z))]``; optax Adam with betas (0.5, 0.9). Generator and
critic each keep their own flax `TrainState` inside one `GANState`.

Everything is a pure function of the config's seed: the real batches are sampled
on the device from ``fold_in(seed, step)``, so a run resumed from an orbax checkpoint
(`train_prior` with a ``checkpoint_dir``) repeats an uninterrupted run exactly.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax.training import train_state

from privateyes_jax import progress as progress_lib
from privateyes_jax import workdir as workdir_lib
from privateyes_jax.data import base
from privateyes_jax.models import gan as gan_models


def default_config(preset: str = 'demo') -> ml_collections.ConfigDict:
  """The prior's config. ``preset``: ``'demo'`` (CPU, ~1 min), ``'full'`` (GPU), ``'tiny'`` (tests).

  Fields:
    latent_dim, g_features, g_norm, d_features: the `gan_models.Generator` /
      `Critic` architecture.
    conditional: condition G and D on a blurred copy of the image (GMI's auxiliary
      knowledge); the attack must then be given the target's blurred image.
    blur_sigma: Gaussian blur (pixels) that makes that auxiliary image.
    steps: generator updates; each is preceded by ``n_critic`` critic updates.
    batch_size, learning_rate, b1, b2: Adam, for both networks.
    gp_weight: lambda of the gradient penalty.
    aux_people, aux_samples_per_person, aux_first_person, aux_seed: the auxiliary
      synthetic people (ignored when `train_prior` is given a dataset).
    seed: the training seed (init, latents, batches).
    log_every, checkpoint_every: in generator steps.
  """
  c = ml_collections.ConfigDict()
  c.latent_dim = 64
  c.g_features = (16, 8)
  c.g_norm = 'none'
  c.d_features = (16, 32, 64)
  c.conditional = False
  c.blur_sigma = 3.0
  # Demo budget: under a minute on 2 CPU cores. n_critic=1 at batch 32 gave priors
  # as useful to the attack as n_critic=2 at batch 64 for a third of the compute.
  c.steps = 1000
  c.n_critic = 1
  c.batch_size = 32
  c.learning_rate = 1e-3
  c.b1 = 0.5
  c.b2 = 0.9
  c.gp_weight = 10.0
  c.aux_people = 60
  c.aux_samples_per_person = 100
  c.aux_first_person = 100
  c.aux_seed = 0
  c.seed = 0
  c.log_every = 250
  c.checkpoint_every = 500
  if preset == 'full':
    c.g_features = (128, 64)
    c.g_norm = 'layer'
    c.d_features = (64, 128, 256)
    c.latent_dim = 100
    c.steps = 20000
    c.n_critic = 5
    c.batch_size = 64
    c.learning_rate = 1e-4
    c.aux_people = 200
    c.aux_samples_per_person = 300
    c.log_every = 500
    c.checkpoint_every = 2000
  elif preset == 'tiny':
    c.latent_dim = 8
    c.g_features = (8, 4)
    c.d_features = (4, 8)
    c.n_critic = 1
    c.steps = 6
    c.batch_size = 8
    c.aux_people = 4
    c.aux_samples_per_person = 8
    c.log_every = 2
    c.checkpoint_every = 3
  elif preset != 'demo':
    raise ValueError(f'Unknown prior preset {preset!r}; available: demo, full, tiny.')
  return c


class Prior(NamedTuple):
  """A trained prior: the module definitions and their parameters."""
  generator: gan_models.Generator
  critic: gan_models.Critic
  gen_params: Any
  critic_params: Any
  conditional: bool = False


@flax.struct.dataclass
class GANState:
  """Generator and critic train states (one optimizer each) and the generator step."""
  step: jax.Array  # shape=(), dtype=int32; generator updates done.
  g: train_state.TrainState
  d: train_state.TrainState


# ----------------------------------------------------------------------------- losses
def gradient_penalty(critic_fn, real, fake, alpha):
  """WGAN-GP penalty ``mean((||grad_x critic(x_hat)||_2 - 1)^2)``.

  Args:
    critic_fn: ``[B, ...] -> [B]``, each score a function of its own sample only.
    real, fake: ``[B, H, W, C]``.
    alpha: ``[B]`` interpolation weights in [0, 1].

  Returns:
    The scalar penalty. The per-sample gradients come from one backward pass of the
    summed scores, valid because samples do not interact in the critic.
  """
  a = alpha.reshape((-1,) + (1,) * (real.ndim - 1))
  x_hat = a * real + (1.0 - a) * fake
  grads = jax.grad(lambda x: jnp.sum(critic_fn(x)))(x_hat)
  norms = jnp.sqrt(jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, axis=-1) + 1e-12)
  return jnp.mean((norms - 1.0) ** 2)


def critic_loss(critic_fn, real, fake, alpha, gp_weight: float):
  """``E[D(fake)] - E[D(real)] + gp_weight * GP``; returns ``(loss, (wasserstein, gp))``.

  Minimising it raises the critic's score of real images over fake ones, so the
  negative loss (without the penalty) estimates the Wasserstein-1 distance.
  """
  wasserstein = jnp.mean(critic_fn(real)) - jnp.mean(critic_fn(fake))
  gp = gradient_penalty(critic_fn, real, jax.lax.stop_gradient(fake), alpha)
  return -wasserstein + gp_weight * gp, (wasserstein, gp)


def generator_loss(critic_fn, fake):
  """``-E[D(G(z))]``: the generator raises the critic's score of its samples."""
  return -jnp.mean(critic_fn(fake))


def blur(images01, sigma: float):
  """Gaussian blur of ``[B, H, W, 1]`` images (GMI's auxiliary knowledge), separable, 'SAME'."""
  radius = max(1, int(3 * sigma))
  t = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  k = jnp.exp(-0.5 * (t / sigma) ** 2)
  k = k / jnp.sum(k)
  # Edge padding keeps the border brightness (zero padding would darken it).
  x = jnp.pad(images01, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode='edge')
  dn = ('NHWC', 'HWIO', 'NHWC')
  x = jax.lax.conv_general_dilated(x, k.reshape(-1, 1, 1, 1), (1, 1), 'VALID',
                                   dimension_numbers=dn)
  return jax.lax.conv_general_dilated(x, k.reshape(1, -1, 1, 1), (1, 1), 'VALID',
                                      dimension_numbers=dn)


# ----------------------------------------------------------------------------- training
def _optimizer(config) -> optax.GradientTransformation:
  return optax.adam(config.learning_rate, b1=config.b1, b2=config.b2)


# The config fields that determine the networks, the optimizer and the compiled step.
_STEP_FIELDS = ('latent_dim', 'g_features', 'g_norm', 'd_features', 'conditional', 'blur_sigma',
                'batch_size', 'n_critic', 'gp_weight', 'learning_rate', 'b1', 'b2')


def _step_key(config) -> tuple:
  return tuple((f, tuple(v) if isinstance(v, (list, tuple)) else v)
               for f in _STEP_FIELDS for v in [config.get(f)])


@functools.lru_cache(maxsize=4)
def _compiled(step_key: tuple):
  """Modules, optimizer and jitted train step of a config, shared by calls with equal
  ``_step_key``, so re-training or resuming in one process does not recompile."""
  config = ml_collections.ConfigDict(dict(step_key))
  generator, critic = gan_models.build(config)
  return generator, critic, _optimizer(config), jax.jit(make_train_step(config, generator, critic))


def init_state(config, key: jax.Array) -> tuple[GANState, gan_models.Generator, gan_models.Critic]:
  """Fresh `GANState` for ``config``, and the module definitions."""
  generator, critic, tx, _ = _compiled(_step_key(config))
  kg, kd = jax.random.split(key)
  z = jnp.zeros((1, config.latent_dim), jnp.float32)
  img = jnp.zeros((1,) + gan_models.IMAGE_SHAPE, jnp.float32)
  cond = img if config.conditional else None
  g_params = generator.init(kg, z, cond)['params']
  d_params = critic.init(kd, img, cond)['params']
  state = GANState(
      step=jnp.asarray(0, jnp.int32),
      g=train_state.TrainState.create(apply_fn=generator.apply, params=g_params, tx=tx),
      d=train_state.TrainState.create(apply_fn=critic.apply, params=d_params, tx=tx))
  return state, generator, critic


def make_train_step(config, generator: nn.Module, critic: nn.Module):
  """``(state, real_images uint8 [N, 36, 60, 1], key) -> (state, metrics)``, one generator step.

  Runs ``config.n_critic`` critic updates and then one generator update, each on a
  fresh real batch sampled from ``real_images`` with ``key``. The critic loop is
  unrolled in Python: XLA:CPU runs convolutions inside while loops slowly
  (DESIGN.md §7), and ``n_critic`` is small.
  """
  bs, gp_weight = config.batch_size, config.gp_weight
  conditional, sigma = config.conditional, config.blur_sigma

  def sample(real_images, key):
    k_idx, k_z, k_a = jax.random.split(key, 3)
    idx = jax.random.randint(k_idx, (bs,), 0, real_images.shape[0])
    real = gan_models.from_uint8(real_images[idx])
    cond = blur(real, sigma) if conditional else None
    z = jax.random.normal(k_z, (bs, config.latent_dim))
    alpha = jax.random.uniform(k_a, (bs,))
    return real, cond, z, alpha

  def step(state: GANState, real_images, key):
    d_state = state.d
    metrics = {}
    for i in range(config.n_critic):
      real, cond, z, alpha = sample(real_images, jax.random.fold_in(key, i))
      fake = generator.apply({'params': state.g.params}, z, cond)

      def d_loss(d_params, real=real, fake=fake, cond=cond, alpha=alpha):
        critic_fn = lambda x: critic.apply({'params': d_params}, x, cond)
        return critic_loss(critic_fn, real, fake, alpha, gp_weight)

      (loss, (wd, gp)), grads = jax.value_and_grad(d_loss, has_aux=True)(d_state.params)
      d_state = d_state.apply_gradients(grads=grads)
      metrics = {'critic_loss': loss, 'wasserstein': wd, 'gp': gp}

    _, cond, z, _ = sample(real_images, jax.random.fold_in(key, config.n_critic))

    def g_loss(g_params):
      fake = generator.apply({'params': g_params}, z, cond)
      return generator_loss(lambda x: critic.apply({'params': d_state.params}, x, cond), fake)

    loss, grads = jax.value_and_grad(g_loss)(state.g.params)
    g_state = state.g.apply_gradients(grads=grads)
    metrics['generator_loss'] = loss
    return GANState(step=state.step + 1, g=g_state, d=d_state), metrics

  return step


def aux_dataset(config) -> base.GazeDataset:
  """The auxiliary (public) people of ``config``: synthetic people outside the federation."""
  from privateyes_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  return synthetic.make_dataset(config.aux_people, config.aux_samples_per_person,
                                seed=config.aux_seed, first_person=config.aux_first_person)


# Config fields that may change between a run and its resumption.
_RESUMABLE_FIELDS = ('steps', 'log_every', 'checkpoint_every')
CONFIG_FILE = 'prior_config.json'


def _check_same_prior(directory: str, config, dataset: base.GazeDataset) -> None:
  """Records the prior's config (and data) in ``directory``, or refuses a different one.

  Checked before any restore, so a checkpoint of another prior is never half-read.
  """
  current = {k: v for k, v in workdir_lib.config_to_dict(config).items()
             if k not in _RESUMABLE_FIELDS}
  current['aux_people_names'] = list(dataset.person_names)
  path = os.path.join(directory, CONFIG_FILE)
  if os.path.exists(path):
    with open(path) as f:
      recorded = json.load(f)
    differences = sorted(k for k in set(recorded) | set(current)
                         if recorded.get(k) != current.get(k))
    if differences:
      raise ValueError(f'{directory} holds a prior trained with a different config or data '
                       f'(fields {differences}); use another directory or delete it.')
  else:
    os.makedirs(directory, exist_ok=True)
    workdir_lib.write_json(path, current)


def _checkpoint_manager(directory: str, keep: int = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(os.path.abspath(directory),
                               options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def _pure(state: GANState) -> dict:
  """The array part of a `GANState` (what a checkpoint holds)."""
  return {'step': state.step, 'g_params': state.g.params, 'g_opt': state.g.opt_state,
          'd_params': state.d.params, 'd_opt': state.d.opt_state}


def _with(state: GANState, arrays: dict) -> GANState:
  return GANState(step=jnp.asarray(arrays['step'], jnp.int32),
                  g=state.g.replace(params=arrays['g_params'], opt_state=arrays['g_opt']),
                  d=state.d.replace(params=arrays['d_params'], opt_state=arrays['d_opt']))


def train_prior(config, checkpoint_dir: str | None = None,
                dataset: base.GazeDataset | None = None,
                excluded_people: tuple[str, ...] = ()) -> Prior:
  """Trains (or resumes) the WGAN-GP prior; returns it.

  Args:
    config: see `default_config`.
    checkpoint_dir: orbax `CheckpointManager` directory; training resumes from its
      latest step, and a finished run is restored without training. None: no
      checkpoints.
    dataset: the auxiliary images; default `aux_dataset(config)`.
    excluded_people: names of the federation's people. Training on any of them
      would give the adversary the private data it is meant to reconstruct, so a
      dataset that contains one is refused.

  Raises:
    ValueError: the dataset overlaps ``excluded_people``, the config is invalid, or
      ``checkpoint_dir`` holds a prior of another config or dataset.
    FloatingPointError: a loss became NaN or infinite.
  """
  if config.steps < 1 or config.n_critic < 1 or config.batch_size < 1:
    raise ValueError(f'Prior steps, n_critic and batch_size must be >= 1, got '
                     f'{config.steps}, {config.n_critic}, {config.batch_size}.')
  dataset = dataset if dataset is not None else aux_dataset(config)
  overlap = sorted(set(dataset.person_names) & set(excluded_people))
  if overlap:
    raise ValueError(f'The prior must be trained on auxiliary people, but its data contains '
                     f'federation people {overlap}.')
  if dataset.image_shape != gan_models.IMAGE_SHAPE:
    raise ValueError(f'The prior models {gan_models.IMAGE_SHAPE} images, got {dataset.image_shape}.')
  real_images = jnp.asarray(np.concatenate([p.images for p in dataset.people]))
  root = jax.random.PRNGKey(config.seed)
  state, generator, critic = init_state(config, jax.random.fold_in(root, 0))
  if checkpoint_dir:
    _check_same_prior(checkpoint_dir, config, dataset)
  manager = _checkpoint_manager(checkpoint_dir) if checkpoint_dir else None
  try:
    if manager is not None and manager.latest_step() is not None:
      latest = manager.latest_step()
      try:
        restored = manager.restore(latest, args=ocp.args.StandardRestore(_pure(state)))
      except Exception as e:  # Orbax raises many types for unreadable or mismatched data.
        raise ValueError(
            f'The prior checkpoint at step {latest} in {checkpoint_dir} could not be restored '
            f'({type(e).__name__}: {str(e)[:300]}); it may be corrupt. Delete that step '
            'directory to resume from an earlier one.') from e
      state = _with(state, restored)
      if latest > config.steps:
        logging.warning('GAN prior: the checkpoint in %s is at step %d, past config.steps=%d; '
                        'using it as it is.', checkpoint_dir, latest, config.steps)
      logging.info('GAN prior: resumed from step %d in %s', latest, checkpoint_dir)
    step_fn = _compiled(_step_key(config))[3]
    start = int(state.step)
    progress = progress_lib.Progress('GAN prior', config.steps, start=start)
    data_key = jax.random.fold_in(root, 1)
    t0 = time.perf_counter()
    for step in range(start, config.steps):
      state, metrics = step_fn(state, real_images, jax.random.fold_in(data_key, step))
      done = step + 1
      if done % config.log_every == 0 or done == config.steps:
        values = {k: float(v) for k, v in metrics.items()}
        bad = [k for k, v in values.items() if not np.isfinite(v)]
        if bad:
          raise FloatingPointError(f'GAN prior: {bad} became non-finite at step {done} '
                                   f'({values}); lower the learning rate.')
        progress.update(done, force=done == config.steps, **values)
      if manager is not None and (done % config.checkpoint_every == 0 or done == config.steps):
        manager.save(done, args=ocp.args.StandardSave(_pure(state)))
    if manager is not None:
      manager.wait_until_finished()
    if config.steps > start:
      logging.info('GAN prior: %d steps in %.1f s', config.steps - start, time.perf_counter() - t0)
  finally:
    if manager is not None:
      manager.close()
  return Prior(generator=generator, critic=critic, gen_params=state.g.params,
               critic_params=state.d.params, conditional=bool(config.conditional))


def sample_images(prior: Prior, key: jax.Array, num: int, cond=None) -> np.ndarray:
  """``num`` uint8 ``[num, 36, 60, 1]`` samples of the prior (for inspection and plots)."""
  z = jax.random.normal(key, (num, prior.generator.latent_dim))
  return np.asarray(gan_models.to_uint8(
      prior.generator.apply({'params': prior.gen_params}, z, cond)))
