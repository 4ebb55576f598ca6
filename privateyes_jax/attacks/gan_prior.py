"""DualView stage 1: the WGAN-GP image prior, trained on auxiliary people (DESIGN.md §5.1).

The adversary has public images of people *outside* the federation (GMI's
"public knowledge distillation"): eye patches for the eye model, faces for the face
model. The prior's networks take their image shape from those images (36x60x1 eye
patches by default; H and W multiples of 4, `gan_models.check_image_shape`). Which images is the config's ``data``: a data
config like a run's, loaded by the same `privateyes_jax.data.load_dataset` path, so
the prior can come from another dataset (MPIIGaze, the HDF5 files, a lab's own
study, ...) or from people of the target's dataset outside the federation. The
default is synthetic people with indices past the federation's (``first_person=100``),
who are genuinely other people because person ``i`` is a pure function of
``(seed, i)``. `check_disjoint` refuses a prior whose people overlap the target
run's (training and held-out), and `check_image_shape` one whose images the run's
model does not take.

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
import hashlib
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
    data: the auxiliary (public) people, a data config like a run's ``config.data``
      (see `default_data_config`; ignored when `train_prior` is given a dataset).
      ``data.difficulty=''`` on synthetic data renders them like the target run's
      people (`prior_data_config`).
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
  c.data = default_data_config()
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
    c.data.num_people = 200
    c.data.samples_per_person = 300
    c.log_every = 500
    c.checkpoint_every = 2000
  elif preset == 'tiny':
    c.latent_dim = 8
    c.g_features = (8, 4)
    c.d_features = (4, 8)
    c.n_critic = 1
    c.steps = 6
    c.batch_size = 8
    c.data.num_people = 4
    c.data.samples_per_person = 8
    c.log_every = 2
    c.checkpoint_every = 3
  elif preset != 'demo':
    raise ValueError(f'Unknown prior preset {preset!r}; available: demo, full, tiny.')
  return c


def default_data_config() -> ml_collections.ConfigDict:
  """The prior's default data: 60 synthetic people from index 100, 100 samples each.

  It carries every field of a run's ``config.data`` that a dataset reads, so
  ``--config.prior.data.name=own_study --config.prior.data.manual_dir=...`` (or
  ``mpiigaze``, ``mpiigaze_h5`` with ``h5_file``, ...) switches the prior to another
  dataset; ``people`` picks a subset (e.g. a study's people outside the federation).
  """
  return ml_collections.ConfigDict(dict(
      name='synthetic', source='memory', data_dir='',
      # Synthetic: people first_person .. first_person + num_people - 1 of seed.
      seed=0, num_people=60, samples_per_person=100, first_person=100,
      difficulty='',  # '': like the target run's people; else 'easy' or 'realistic'.
      # Public datasets and own studies (docs/DATASETS.md), as in a run's config.data.
      manual_dir='', image_size=0, channels=0, people=(), expected_samples_per_person=-1,
      splits='', h5_file='', label_kind='', labels_file='', normalized_distance_mm=0.0))


class Prior(NamedTuple):
  """A trained prior: the module definitions and their parameters."""
  generator: gan_models.Generator
  critic: gan_models.Critic
  gen_params: Any
  critic_params: Any
  conditional: bool = False

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """``(H, W, C)`` of the prior's images (its data's, the target run's)."""
    return tuple(self.generator.image_shape)


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
  """Gaussian blur of ``[B, H, W, C]`` images (GMI's auxiliary knowledge), separable, 'SAME'.

  Each channel is blurred on its own (a depthwise convolution).
  """
  radius = max(1, int(3 * sigma))
  t = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  k = jnp.exp(-0.5 * (t / sigma) ** 2)
  k = k / jnp.sum(k)
  # Edge padding keeps the border brightness (zero padding would darken it).
  x = jnp.pad(images01, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode='edge')
  dn = ('NHWC', 'HWIO', 'NHWC')
  c = images01.shape[-1]
  x = jax.lax.conv_general_dilated(x, jnp.tile(k.reshape(-1, 1, 1, 1), (1, 1, 1, c)), (1, 1),
                                   'VALID', dimension_numbers=dn, feature_group_count=c)
  return jax.lax.conv_general_dilated(x, jnp.tile(k.reshape(1, -1, 1, 1), (1, 1, 1, c)), (1, 1),
                                      'VALID', dimension_numbers=dn, feature_group_count=c)


# ----------------------------------------------------------------------------- training
def _optimizer(config) -> optax.GradientTransformation:
  return optax.adam(config.learning_rate, b1=config.b1, b2=config.b2)


# The config fields that determine the networks, the optimizer and the compiled step.
_STEP_FIELDS = ('latent_dim', 'g_features', 'g_norm', 'd_features', 'conditional', 'blur_sigma',
                'batch_size', 'n_critic', 'gp_weight', 'learning_rate', 'b1', 'b2')


def _step_key(config, image_shape=gan_models.IMAGE_SHAPE) -> tuple:
  return tuple((f, tuple(v) if isinstance(v, (list, tuple)) else v)
               for f in _STEP_FIELDS for v in [config.get(f)]) + (
                   ('image_shape', gan_models.check_image_shape(image_shape)),)


@functools.lru_cache(maxsize=4)
def _compiled(step_key: tuple):
  """Modules, optimizer and jitted train step of a config and image shape, shared by
  calls with equal ``_step_key``, so re-training or resuming in one process does not
  recompile."""
  fields = dict(step_key)
  image_shape = fields.pop('image_shape')
  config = ml_collections.ConfigDict(fields)
  generator, critic = gan_models.build(config, image_shape)
  return generator, critic, _optimizer(config), jax.jit(make_train_step(config, generator, critic))


def init_state(config, key: jax.Array, image_shape=gan_models.IMAGE_SHAPE
               ) -> tuple[GANState, gan_models.Generator, gan_models.Critic]:
  """Fresh `GANState` for ``config`` and ``(H, W, C)`` images, and the module definitions.

  Args:
    config: the prior's config.
    key: the init key.
    image_shape: the prior's data's image shape (36x60x1 eye patches by default).
  """
  image_shape = gan_models.check_image_shape(image_shape)
  generator, critic, tx, _ = _compiled(_step_key(config, image_shape))
  kg, kd = jax.random.split(key)
  z = jnp.zeros((1, config.latent_dim), jnp.float32)
  img = jnp.zeros((1,) + image_shape, jnp.float32)
  cond = img if config.conditional else None
  g_params = generator.init(kg, z, cond)['params']
  d_params = critic.init(kd, img, cond)['params']
  state = GANState(
      step=jnp.asarray(0, jnp.int32),
      g=train_state.TrainState.create(apply_fn=generator.apply, params=g_params, tx=tx),
      d=train_state.TrainState.create(apply_fn=critic.apply, params=d_params, tx=tx))
  return state, generator, critic


def make_train_step(config, generator: nn.Module, critic: nn.Module):
  """``(state, real_images uint8 [N, H, W, C], key) -> (state, metrics)``, one generator step.

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


def _run_data(run_config):
  """A run's data config, given the run's config or its ``config.data``."""
  if run_config is None:
    return None
  return run_config.data if 'data' in run_config else run_config


def prior_data_config(config, run_config=None) -> ml_collections.ConfigDict:
  """The prior's data config, resolved against the target run's config.

  A synthetic prior with ``difficulty=''`` takes the target run's difficulty (a
  public sample of the same population), or ``'easy'`` without a synthetic run.

  Args:
    config: the prior's config (`default_config`).
    run_config: the target run's config or its ``config.data``; optional.
  """
  data = ml_collections.ConfigDict(config.data.to_dict())
  if data.name == 'synthetic' and not data.get('difficulty', ''):
    run_data = _run_data(run_config)
    from_run = run_data.get('difficulty', '') if (
        run_data is not None and run_data.name == 'synthetic') else ''
    data.difficulty = from_run or 'easy'
  return data


def aux_dataset(config, run_config=None) -> base.GazeDataset:
  """The auxiliary (public) people of ``config.data``, loaded as a run loads its data.

  Args:
    config: the prior's config.
    run_config: the target run's config (or ``config.data``), which fills in
      what the prior's data leaves to it (`prior_data_config`).
  """
  from privateyes_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  return data_lib.load_dataset(prior_data_config(config, run_config))


# Datasets holding the same people under the same names: the 15 MPIIGaze participants
# are MPIIFaceGaze's, in every file format.
_MPII = ('mpiigaze', 'mpiifacegaze', 'mpiifacegaze_raw', 'mpiigaze_h5', 'mpiifacegaze_h5')


def _population(data) -> tuple:
  """Which population of people a data config draws from; equal keys may share people.

  Synthetic people are a function of the seed (the difficulty only renders them
  differently); the MPII datasets share their 15 participants; two own studies are
  different populations only when both name different ``manual_dir`` folders (a run
  that reads already prepared data may leave it empty, so it may be either).
  """
  name = data.name
  if name == 'synthetic':
    return ('synthetic', int(data.seed))
  if name in _MPII:
    return ('mpii',)
  return (name,)


def _same_population(a, b) -> bool:
  if _population(a) != _population(b):
    return False
  if a.name == 'own_study':
    dir_a, dir_b = (os.path.abspath(os.path.expanduser(d.get('manual_dir', '') or ''))
                    if d.get('manual_dir', '') else '' for d in (a, b))
    return not (dir_a and dir_b and dir_a != dir_b)
  return True


def _people_of(data, dataset: base.GazeDataset | None) -> tuple[str, ...]:
  """The names of a data config's people: rendered synthetic people are named by
  index without rendering them; other datasets are loaded (or ``dataset`` read)."""
  if dataset is not None:
    return tuple(dataset.person_names)
  if data.name == 'synthetic':
    first = int(data.get('first_person', 0) or 0)
    return tuple(f'p{i:02d}' for i in range(first, first + int(data.num_people)))
  from privateyes_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  return tuple(data_lib.load_dataset(data).person_names)


def check_disjoint(prior_data, run_config, prior_dataset: base.GazeDataset | None = None,
                   run_dataset: base.GazeDataset | None = None) -> tuple[str, ...]:
  """Refuses a prior whose people are people of the target run (DESIGN.md §5.1).

  The target run's people are all people of its dataset, its training people (the
  federation) and its held-out people alike: a prior trained on either would give
  the adversary images of the people it attacks or is evaluated against.

  Args:
    prior_data: the prior's data config (`prior_data_config`, or ``config.data``).
    run_config: the target run's config (or its ``config.data``).
    prior_dataset, run_dataset: the datasets those configs load, if already
      loaded (otherwise the people of a non-synthetic dataset are loaded to name them).

  Returns:
    The run's people that share the prior's population (empty when the prior is
    another dataset or other synthetic people): pass them to `train_prior` as
    ``excluded_people``, which checks the images it is given by name.

  Raises:
    ValueError: one line naming the overlapping people and both datasets.
  """
  run_data = _run_data(run_config)
  if not _same_population(prior_data, run_data):
    return ()
  run_people = _people_of(run_data, run_dataset)
  overlap = sorted(set(_people_of(prior_data, prior_dataset)) & set(run_people))
  if overlap:
    shown = ', '.join(overlap[:8]) + (f' and {len(overlap) - 8} more' if len(overlap) > 8 else '')
    raise ValueError(
        f'The prior\'s data ({prior_data.name}) contains people of the target run\'s dataset '
        f'({run_data.name}, training or held-out): {shown}. Train the prior on other people '
        '(prior.data.people, prior.data.first_person or another seed or dataset).')
  return run_people


def check_image_shape(prior_dataset: base.GazeDataset, run_image_shape) -> None:
  """Refuses a prior whose images are not the run model's input shape.

  Args:
    prior_dataset: the prior's images.
    run_image_shape: ``(height, width, channels)`` of the target run's images.

  Raises:
    ValueError: naming both shapes and the fields that prepare matching images.
  """
  prior_shape, run_shape = tuple(prior_dataset.image_shape), tuple(run_image_shape)
  if prior_shape != run_shape:
    raise ValueError(
        f'The prior\'s images ({prior_dataset.name}) are {"x".join(map(str, prior_shape))} but '
        f'the target run\'s model takes {"x".join(map(str, run_shape))}; prepare the prior\'s '
        'dataset at that size (prior.data.image_size, prior.data.channels) or attack with '
        'another prior.')


# Config fields that may change between a run and its resumption.
_RESUMABLE_FIELDS = ('steps', 'log_every', 'checkpoint_every')
CONFIG_FILE = 'prior_config.json'


def _check_same_prior(directory: str, config, dataset: base.GazeDataset) -> None:
  """Records the prior's config (and data) in ``directory``, or refuses a different one.

  Checked before any restore, so a checkpoint of another prior is never half-read.
  The image shape is recorded too (a prior's networks are built for one shape);
  a record without one is of a 36x60x1 eye-patch prior (written before faces).
  """
  current = {k: v for k, v in workdir_lib.config_to_dict(config).items()
             if k not in _RESUMABLE_FIELDS}
  current['image_shape'] = list(dataset.image_shape)
  current['aux_people_names'] = list(dataset.person_names)
  # The images themselves: the same config can load other images (a synthetic prior
  # rendered like its target run, a re-prepared own study).
  digest = hashlib.sha256()
  for p in dataset.people:
    digest.update(np.ascontiguousarray(p.images).tobytes())
  current['aux_images_sha256'] = digest.hexdigest()
  path = os.path.join(directory, CONFIG_FILE)
  if os.path.exists(path):
    with open(path) as f:
      recorded = json.load(f)
    recorded.setdefault('image_shape', list(gan_models.IMAGE_SHAPE))
    if recorded['image_shape'] != current['image_shape']:
      raise ValueError(
          f'{directory} holds a prior of {"x".join(map(str, recorded["image_shape"]))} images, '
          f'not {"x".join(map(str, current["image_shape"]))}; use another directory or delete it.')
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
    dataset: the auxiliary images; default `aux_dataset(config)`. The networks are
      built for their image shape ``(H, W, C)`` (the target run's, `check_image_shape`).
    excluded_people: names of the target run's people in the prior's population
      (what `check_disjoint` returns). Training on any of them would give the
      adversary the private data it is meant to reconstruct, so a dataset that
      contains one is refused.

  Raises:
    ValueError: the dataset overlaps ``excluded_people``, the config is invalid, the
      images' height or width is not a multiple of 4, or ``checkpoint_dir`` holds a
      prior of another config, dataset or image shape.
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
  image_shape = gan_models.check_image_shape(dataset.image_shape)
  real_images = jnp.asarray(np.concatenate([p.images for p in dataset.people]))
  root = jax.random.PRNGKey(config.seed)
  state, generator, critic = init_state(config, jax.random.fold_in(root, 0), image_shape)
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
    step_fn = _compiled(_step_key(config, image_shape))[3]
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
  """``num`` uint8 ``[num, H, W, C]`` samples of the prior (its image shape; for inspection and plots)."""
  z = jax.random.normal(key, (num, prior.generator.latent_dim))
  return np.asarray(gan_models.to_uint8(
      prior.generator.apply({'params': prior.gen_params}, z, cond)))
