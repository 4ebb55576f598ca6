"""WGAN-GP losses against hand-computed values, and the prior's training loop."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.configs import default as default_configs
from privateyes_jax.attacks import gan_prior
from privateyes_jax.data import base
from privateyes_jax.data import synthetic
from tests.data import fixtures_datasets as fx


def test_gradient_penalty_of_linear_critic():
  # D(x) = <w, x>: the input gradient is w everywhere, so GP = (||w|| - 1)^2 exactly.
  w = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5, 1)).astype(np.float32))
  critic = lambda x: jnp.sum(x * w, axis=(1, 2, 3))
  real = jnp.ones((3, 4, 5, 1))
  fake = jnp.zeros((3, 4, 5, 1))
  gp = gan_prior.gradient_penalty(critic, real, fake, jnp.array([0.1, 0.5, 0.9]))
  np.testing.assert_allclose(gp, (np.linalg.norm(np.asarray(w)) - 1.0) ** 2, rtol=1e-5)
  # A unit-norm linear critic is 1-Lipschitz with unit gradient: no penalty.
  gp_unit = gan_prior.gradient_penalty(lambda x: critic(x) / jnp.linalg.norm(w), real, fake,
                                       jnp.array([0.3, 0.3, 0.3]))
  np.testing.assert_allclose(gp_unit, 0.0, atol=1e-6)


def test_gradient_penalty_per_sample_norms():
  # D(x) = sum(x^2): gradient 2 x_hat, so each sample has its own norm.
  critic = lambda x: jnp.sum(x ** 2, axis=(1, 2, 3))
  real = jnp.stack([jnp.full((2, 2, 1), 1.0), jnp.full((2, 2, 1), 2.0)])
  fake = jnp.zeros_like(real)
  alpha = jnp.array([0.5, 0.25])
  # x_hat = alpha * real: norms 2 * sqrt(4) * (0.5, 0.5) = (2, 2).
  np.testing.assert_allclose(gan_prior.gradient_penalty(critic, real, fake, alpha), 1.0,
                             rtol=1e-5)


def test_critic_and_generator_loss_signs():
  critic = lambda x: jnp.mean(x, axis=(1, 2, 3))  # Scores bright images as real.
  real, fake = jnp.ones((2, 3, 3, 1)), jnp.zeros((2, 3, 3, 1))
  loss, (wd, gp) = gan_prior.critic_loss(critic, real, fake, jnp.full((2,), 0.5), gp_weight=0.0)
  assert float(wd) == pytest.approx(1.0)  # E D(real) - E D(fake).
  assert float(loss) == pytest.approx(-1.0)  # The critic minimises -W (+ penalty).
  loss_gp, _ = gan_prior.critic_loss(critic, real, fake, jnp.full((2,), 0.5), gp_weight=10.0)
  assert float(loss_gp) == pytest.approx(-1.0 + 10.0 * float(gp), rel=1e-5)
  assert float(gan_prior.generator_loss(critic, fake)) == pytest.approx(0.0)
  assert float(gan_prior.generator_loss(critic, real)) == pytest.approx(-1.0)


def test_blur_keeps_constants_and_smooths():
  flat = jnp.full((1, 12, 14, 1), 0.3)
  np.testing.assert_allclose(gan_prior.blur(flat, 1.5), flat, atol=1e-6)
  spike = jnp.zeros((1, 12, 14, 1)).at[0, 6, 7, 0].set(1.0)
  out = gan_prior.blur(spike, 1.0)
  assert out.shape == spike.shape
  np.testing.assert_allclose(float(out.sum()), 1.0, rtol=1e-5)
  assert float(out.max()) < 0.5


@pytest.fixture(scope='module')
def aux():
  return synthetic.make_dataset(3, 8, first_person=100)


def test_train_prior_deterministic_and_resumes(tmp_path, aux):
  config = gan_prior.default_config('tiny')
  a = gan_prior.train_prior(config, dataset=aux)
  # Interrupted after 3 steps (a shorter run into the same directory), then resumed.
  short = gan_prior.default_config('tiny')
  short.steps = 3
  gan_prior.train_prior(short, str(tmp_path / 'ckpt'), dataset=aux)
  assert sorted(int(p.name) for p in (tmp_path / 'ckpt').iterdir() if p.name.isdigit()) == [3]
  resumed = gan_prior.train_prior(config, str(tmp_path / 'ckpt'), dataset=aux)
  # Batches and latents are functions of (seed, step): resuming repeats the same run.
  jax.tree.map(np.testing.assert_array_equal, resumed.gen_params, a.gen_params)
  jax.tree.map(np.testing.assert_array_equal, resumed.critic_params, a.critic_params)
  other = gan_prior.default_config('tiny')
  other.g_features = (6, 4)  # Another architecture cannot resume this checkpoint.
  with pytest.raises(ValueError, match=r'different config.*g_features'):
    gan_prior.train_prior(other, str(tmp_path / 'ckpt'), dataset=aux)
  samples = gan_prior.sample_images(resumed, jax.random.PRNGKey(0), 5)
  assert samples.shape == (5, 36, 60, 1) and samples.dtype == np.uint8


def test_conditional_prior_trains(aux):
  config = gan_prior.default_config('tiny')
  config.conditional = True
  config.steps = 1
  prior = gan_prior.train_prior(config, dataset=aux)
  assert prior.conditional
  cond = jnp.full((2, 36, 60, 1), 0.5)
  assert gan_prior.sample_images(prior, jax.random.PRNGKey(0), 2, cond).shape == (2, 36, 60, 1)


def test_prior_refuses_federation_people(aux):
  with pytest.raises(ValueError, match='federation people'):
    gan_prior.train_prior(gan_prior.default_config('tiny'), dataset=aux,
                          excluded_people=('p101',))
  with pytest.raises(ValueError, match='Unknown prior preset'):
    gan_prior.default_config('huge')


# ----------------------------------------------------------------------------- prior data


def _run_config(**data):
  config = default_configs.get_config('tiny')
  config.data.update(data)
  return config


def test_default_prior_data_is_synthetic_people_outside_the_federation():
  config = gan_prior.default_config('tiny')
  aux = gan_prior.aux_dataset(config)
  assert aux.person_names == ['p100', 'p101', 'p102', 'p103']
  np.testing.assert_array_equal(
      aux.people[0].images, synthetic.make_dataset(1, 8, first_person=100).people[0].images)
  # Rendered like the target run's people, unless the prior's data says otherwise.
  realistic_run = _run_config(difficulty='realistic')
  assert gan_prior.prior_data_config(config, realistic_run).difficulty == 'realistic'
  assert gan_prior.prior_data_config(config, _run_config()).difficulty == 'easy'
  assert gan_prior.prior_data_config(config).difficulty == 'easy'
  config.data.difficulty = 'easy'
  assert gan_prior.prior_data_config(config, realistic_run).difficulty == 'easy'
  np.testing.assert_array_equal(
      gan_prior.aux_dataset(gan_prior.default_config('tiny'), realistic_run).people[0].images,
      synthetic.make_dataset(1, 8, first_person=100, difficulty='realistic').people[0].images)
  # The default prior and a tiny synthetic run share nobody: nothing to exclude by name...
  run = _run_config()
  assert gan_prior.check_disjoint(gan_prior.prior_data_config(config, run), run) == (
      'p00', 'p01', 'p02', 'p03', 'p04', 'p05')
  # ...and people of another seed are other people, whatever their names.
  other_seed = gan_prior.prior_data_config(config, run)
  other_seed.update(dict(seed=5, first_person=0))
  assert gan_prior.check_disjoint(other_seed, run) == ()


def test_overlapping_synthetic_prior_is_refused():
  """Kills a check that looks only at training people, or ignores the seed."""
  run = _run_config(num_people=6, num_test_people=2)  # p00-p03 train, p04-p05 held out.
  prior = gan_prior.prior_data_config(gan_prior.default_config('tiny'), run)
  prior.first_person = 5  # p05..p08: p05 is a held-out person of the run.
  with pytest.raises(ValueError, match=r'people of the target run.*p05\.'):
    gan_prior.check_disjoint(prior, run)
  prior.first_person = 0
  with pytest.raises(ValueError, match=r'p00, p01, p02, p03'):
    gan_prior.check_disjoint(prior, run.data)  # A data config works as well as a run config.
  prior.difficulty = 'easy' if run.data.difficulty == 'realistic' else 'realistic'
  with pytest.raises(ValueError, match='p00'):  # Rendered differently, still the same people.
    gan_prior.check_disjoint(prior, run)


def _named_dataset(name, people, shape=(36, 60, 1)):
  return base.GazeDataset(name=name, people=tuple(
      base.PersonData(person=p, images=np.zeros((2, *shape), np.uint8),
                      labels=np.zeros((2, 2), np.float32), head_pose=np.zeros((2, 2), np.float32),
                      sample_id=np.arange(2)) for p in people))


def test_mpii_files_share_their_participants():
  h5 = ml_collections.ConfigDict(dict(name='mpiigaze_h5', people=('p05', 'p06')))
  run = ml_collections.ConfigDict(dict(name='mpiigaze'))
  run_people = _named_dataset('mpiigaze', [f'p{i:02d}' for i in range(6)])
  with pytest.raises(ValueError, match=r'mpiigaze_h5.*mpiigaze.*: p05\.'):
    gan_prior.check_disjoint(h5, run, _named_dataset('mpiigaze_h5', ['p05', 'p06']), run_people)
  assert gan_prior.check_disjoint(h5, run, _named_dataset('mpiigaze_h5', ['p10', 'p11']),
                                  run_people) == tuple(run_people.person_names)
  # Another dataset altogether: nobody in common, nothing loaded.
  gazecapture = ml_collections.ConfigDict(dict(name='gazecapture'))
  assert gan_prior.check_disjoint(gazecapture, run) == ()


def test_prior_images_must_fit_the_run_model():
  gan_prior.check_image_shape(_named_dataset('own_study', ['a']), (36, 60, 1))
  with pytest.raises(ValueError, match=r'24x40x1 but the target run.s model takes 36x60x1.*'
                                       r'prior.data.image_size'):
    gan_prior.check_image_shape(_named_dataset('own_study', ['a'], (24, 40, 1)), (36, 60, 1))
  # Any (H, W, C) with H and W multiples of 4 (the generator upsamples twice by 2).
  with pytest.raises(ValueError, match=r'30x50x3 images: height and width must be multiples of 4'
                                       r'.*prior.data.image_size'):
    gan_prior.train_prior(gan_prior.default_config('tiny'),
                          dataset=_named_dataset('x', ['a'], (30, 50, 3)))


def test_prior_from_other_people_of_an_own_study(tmp_path):
  """A lab attacks its own-study run with a prior of the study's other people."""
  raw, prepared = str(tmp_path / 'raw'), str(tmp_path / 'tfds')
  fx.write_own_study(raw, people=('alice', 'bob', 'carol', 'dave', 'erin'), n=6, screen=True)
  study = dict(name='own_study', source='tfds', manual_dir=raw, data_dir=prepared,
               label_kind='screen')
  run = _run_config(people=('alice', 'bob', 'carol'), num_test_people=1, **study)
  config = gan_prior.default_config('tiny')
  config.data.update(dict(people=('dave', 'erin'), **study))
  prior_data = gan_prior.prior_data_config(config, run)
  aux = gan_prior.aux_dataset(config, run)
  assert aux.person_names == ['dave', 'erin'] and aux.image_shape == (36, 60, 1)
  excluded = gan_prior.check_disjoint(prior_data, run, prior_dataset=aux)
  assert excluded == ('alice', 'bob', 'carol')  # Read from the run's prepared data.
  gan_prior.check_image_shape(aux, (36, 60, 1))
  prior = gan_prior.train_prior(config, str(tmp_path / 'prior'), dataset=aux,
                                excluded_people=excluded)
  assert gan_prior.sample_images(prior, jax.random.PRNGKey(0), 2).shape == (2, 36, 60, 1)
  # The held-out person carol in the prior's people: refused, naming her.
  config.data.people = ('carol', 'dave')
  with pytest.raises(ValueError, match=r'own_study.*: carol\.'):
    gan_prior.check_disjoint(gan_prior.prior_data_config(config, run), run)
  # The names alone do not make people the same: another study's 'carol' is someone else.
  another_study = gan_prior.prior_data_config(config, run)
  another_study.manual_dir = str(tmp_path / 'another_lab')
  assert gan_prior.check_disjoint(another_study, run) == ()


def test_checkpoint_of_other_images_is_refused(tmp_path):
  """Same config, other images (a prior rendered like another target run): not resumed."""
  config = gan_prior.default_config('tiny')
  config.steps = 1
  easy = synthetic.make_dataset(3, 8, first_person=100)
  gan_prior.train_prior(config, str(tmp_path / 'prior'), dataset=easy)
  realistic = synthetic.make_dataset(3, 8, first_person=100, difficulty='realistic')
  with pytest.raises(ValueError, match='aux_images_sha256'):
    gan_prior.train_prior(config, str(tmp_path / 'prior'), dataset=realistic)


def test_checkpoint_of_another_image_shape_is_refused(tmp_path):
  """A prior of 36x60x1 eye patches is not resumed for 36x60x3 images, in one line naming
  both shapes. Mutant killed: the image shape left out of the prior's recorded identity
  (the networks differ, so orbax would fail half-way or restore a mismatched prior)."""
  config = gan_prior.default_config('tiny')
  config.steps = 1
  eyes = _named_dataset('x', ['a', 'b'])
  gan_prior.train_prior(config, str(tmp_path / 'prior'), dataset=eyes)
  rgb = _named_dataset('x', ['a', 'b'], (36, 60, 3))  # Same names, same (zero) bytes per pixel.
  with pytest.raises(ValueError, match=r'holds a prior of 36x60x1 images, not 36x60x3'):
    gan_prior.train_prior(config, str(tmp_path / 'prior'), dataset=rgb)
  # A record written before the shape was recorded is of eye patches: still resumable.
  path = tmp_path / 'prior' / gan_prior.CONFIG_FILE
  recorded = json.loads(path.read_text())
  del recorded['image_shape']
  path.write_text(json.dumps(recorded))
  gan_prior.train_prior(config, str(tmp_path / 'prior'), dataset=eyes)
