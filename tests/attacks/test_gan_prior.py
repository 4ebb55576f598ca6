"""WGAN-GP losses against hand-computed values, and the prior's training loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from privateyes_jax.attacks import gan_prior
from privateyes_jax.data import synthetic


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
