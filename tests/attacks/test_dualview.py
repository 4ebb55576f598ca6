"""DualView end to end on a tiny federated round: shapes, and the real IU vs the coalition's noise."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from privateyes_jax import training
from privateyes_jax.attacks import dualview
from privateyes_jax.attacks import gan_prior
from privateyes_jax.data import synthetic
from privateyes_jax.models import gaze

LOCAL = {'optimizer': 'sgd', 'learning_rate': 0.05, 'local_steps': 3, 'batch_size': 8}


@pytest.fixture(scope='module')
def fl_round():
  """θ and the individual updates of 3 clients after 3 local SGD steps each."""
  people = synthetic.make_dataset(3, 24).people
  model = gaze.GazeNet(conv_features=(4, 8), hidden=16)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), people[0].images[:1],
                               people[0].head_pose[:1])['params']
  opt = training.make_optimizer(ml_collections.ConfigDict(dict(name='sgd', learning_rate=0.05)))
  update = jax.jit(training.make_update_fn(model.apply, opt))
  deltas = []
  for c, p in enumerate(people):
    local, state = params, opt.init(params)
    rng = np.random.default_rng(c)
    for _ in range(LOCAL['local_steps']):
      idx = rng.choice(p.num_samples, LOCAL['batch_size'])
      batch = {'images': p.images[idx], 'head_pose': p.head_pose[idx], 'labels': p.labels[idx],
               'mask': np.ones(LOCAL['batch_size'], np.float32)}
      local, state, _ = update(local, state, batch)
    deltas.append(jax.tree.map(jnp.subtract, local, params))
  return model, params, deltas, people


@pytest.fixture(scope='module')
def prior():
  config = gan_prior.default_config('tiny')
  return gan_prior.train_prior(config, dataset=synthetic.make_dataset(3, 8, first_person=100))


@pytest.fixture(scope='module')
def inversion(fl_round, prior):
  """The tiny inversion, compiled once for the module (it depends on no per-person data)."""
  return dualview.make_inversion(prior, fl_round[0].apply, dualview.default_config('tiny'))


def test_simulated_update_is_the_clients_l1_step(fl_round):
  model, params, _, people = fl_round
  p = people[0]
  batch = {'images': p.images[:6], 'head_pose': p.head_pose[:6],
           'labels': p.labels[:6] + 1.0,  # Far from any prediction: |residual| >> delta.
           'mask': np.ones(6, np.float32)}
  client = jax.grad(training.loss_fn, argnums=1)(model.apply, params, batch)
  sim = dualview.simulated_update(model.apply, params, batch['images'].astype(np.float32),
                                  batch['head_pose'], batch['labels'], (), delta=1e-4)
  jax.tree.map(lambda s, c: np.testing.assert_allclose(s, -c, rtol=1e-3, atol=1e-6), sim, client)
  # Restricting to some layers differentiates only those.
  dense = dualview.simulated_update(model.apply, params, batch['images'].astype(np.float32),
                                    batch['head_pose'], batch['labels'], ('Dense_1',), 1e-4)
  assert set(dense) == {'Dense_1'}
  np.testing.assert_allclose(dense['Dense_1']['kernel'], sim['Dense_1']['kernel'], rtol=1e-5)


def test_layer_input_is_read_off_the_update(fl_round):
  model, params, _, people = fl_round
  p = people[1]
  # One sample: the first dense layer's kernel update is x δ^T, its bias update δ,
  # so the estimate is exactly that sample's input to the layer.
  update, features = dualview.simulated_update(
      model.apply, params, p.images[:1].astype(np.float32), p.head_pose[:1], p.labels[:1] + 0.5,
      (), 0.05, feature_layer='Dense_0')
  assert features.shape == (1, params['Dense_0']['kernel'].shape[0])
  np.testing.assert_allclose(dualview.estimate_layer_input(update, 'Dense_0'), features[0],
                             rtol=1e-4, atol=1e-5)
  # Many samples with the same δ: the estimate is their mean input.
  x = jax.random.normal(jax.random.PRNGKey(0), (5, 7))
  c = jnp.array([1.0, -2.0, 0.5])
  change = {'dense': {'kernel': x.T @ jnp.tile(c, (5, 1)), 'bias': 5 * c}}
  np.testing.assert_allclose(dualview.estimate_layer_input(change, 'dense'), x.mean(0), rtol=1e-5)
  with pytest.raises(ValueError, match='dense layer'):
    dualview.estimate_layer_input({'conv': {'kernel': x}}, 'conv')


def test_cosine_distance():
  a = {'x': jnp.array([1.0, 0.0]), 'y': jnp.array([[0.0]])}
  b = {'x': jnp.array([0.0, 2.0]), 'y': jnp.array([[0.0]])}
  assert float(dualview.cosine_distance(a, a)) == pytest.approx(0.0, abs=1e-6)
  assert float(dualview.cosine_distance(a, b)) == pytest.approx(1.0)
  assert float(dualview.cosine_distance(a, jax.tree.map(jnp.negative, a))) == pytest.approx(2.0)


def test_attack_on_individual_update_beats_coalition_noise(fl_round, prior, inversion):
  model, params, deltas, people = fl_round
  config = dualview.default_config('tiny')
  real_match, noise_match = [], []
  for c, delta in enumerate(deltas):
    key = jax.random.PRNGKey(c)
    out = dualview.attack_person(key, prior, model.apply, params, delta, LOCAL, config,
                                 inversion=inversion)
    assert out['images'].shape == (config.latents, 36, 60, 1)
    assert out['images'].dtype == np.uint8
    m = config.gaze_restarts * config.latents
    assert out['gaze'].shape == (m, 2) and out['gaze'].dtype == np.float32
    assert out['labels'].shape == (m, 2)
    assert np.all(np.isfinite(out['gaze'])) and np.isfinite(out['loss'])
    assert len(out['restart_losses']) == config.restarts
    assert out['loss'] == pytest.approx(min(out['restart_losses']))  # Best by its own loss.
    real_match.append(out['match'])
    # The coalition's view: noise of the same norm as the individual update.
    leaves, treedef = jax.tree.flatten(delta)
    noise = [jax.random.normal(k, l.shape) for k, l in
             zip(jax.random.split(jax.random.fold_in(key, 1), len(leaves)), leaves)]
    scale = dualview.tree_norm(delta) / dualview.tree_norm(noise)
    noise = jax.tree.unflatten(treedef, [scale * n for n in noise])
    np.testing.assert_allclose(dualview.tree_norm(noise), dualview.tree_norm(delta), rtol=1e-4)
    out_noise = dualview.attack_person(key, prior, model.apply, params, noise, LOCAL, config,
                                       inversion=inversion)
    noise_match.append(out_noise['match'])
  # Every client's real update is explained far better than noise, which nothing explains
  # (a random direction in parameter space is nearly orthogonal to any client step).
  assert all(r < n - 0.1 for r, n in zip(real_match, noise_match)), (real_match, noise_match)
  assert np.mean(real_match) < 0.75 and min(noise_match) > 0.9, (real_match, noise_match)


def test_output_model_fallback_gaze_sources_and_errors(fl_round, prior, inversion):
  model, params, deltas, _ = fl_round
  config = dualview.default_config('tiny')
  config.keep_restarts = 2  # Read by attack_person; the inversion is the module's.
  attack = lambda observed, **kw: dualview.attack_person(
      jax.random.PRNGKey(0), prior, model.apply, params, observed, LOCAL, config,
      inversion=inversion, **kw)
  mean = jax.tree.map(lambda *d: jnp.mean(jnp.stack(d), axis=0), *deltas)
  out = attack(None, output_model_update=mean)
  assert out['images'].shape == (2 * config.latents, 36, 60, 1)  # Two restarts kept.
  for source in ('labels', 'local_model'):
    config.gaze_source = source
    out = attack(deltas[0])
    assert out['gaze'].shape == (config.gaze_restarts * config.latents, 2)
    if source == 'labels':
      np.testing.assert_array_equal(out['gaze'], out['labels'])
  with pytest.raises(ValueError, match='both are None'):
    attack(None)
  with pytest.raises(ValueError, match='structure'):
    attack({'Dense_0': deltas[0]['Dense_0']})
  with pytest.raises(ValueError, match='unconditional'):
    attack(deltas[0], cond=np.zeros((1, 36, 60, 1), np.float32))
  with pytest.raises(ValueError, match='zero'):
    attack(jax.tree.map(jnp.zeros_like, deltas[0]))
  with pytest.raises(ValueError, match='NaN'):
    attack(jax.tree.map(lambda d: d * jnp.nan, deltas[0]))
  for field, value, match in (('gaze_source', 'oracle', 'gaze_source'),
                              ('keep_restarts', 3, 'keep_restarts'),
                              ('feature_match', 'max', 'feature_match')):
    bad = dualview.default_config('tiny')
    bad[field] = value
    with pytest.raises(ValueError, match=match):
      dualview.make_inversion(prior, model.apply, bad)
  bad = dualview.default_config('tiny')
  bad.match_layers = ('Conv_9',)
  with pytest.raises(ValueError, match='Conv_9'):
    dualview.make_inversion(prior, model.apply, bad)(jax.random.PRNGKey(0), params, deltas[0])


def test_zero_bias_change_drops_the_feature_term(fl_round, inversion):
  """The feature layer's observed bias change exactly zero (the client's L1 residual signs
  cancel; seen on a small-batch face-model run): no feature direction, so the feature term
  is dropped and the inversion stays finite. Mutant killed: the zero feature estimate
  matched by cosine (NaN gradients, a FloatingPointError for that client)."""
  _, params, deltas, _ = fl_round
  change = {**deltas[0], 'Dense_0': {**deltas[0]['Dense_0'],
                                     'bias': jnp.zeros_like(deltas[0]['Dense_0']['bias'])}}
  result = inversion(jax.random.PRNGKey(0), params, change)
  assert np.all(np.isfinite(np.asarray(result['loss'])))
  np.testing.assert_array_equal(result['feature'], 0.0)
