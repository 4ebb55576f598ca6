"""The federated engine: executors agree, FedAvg is exact, resume is bit-identical."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from privateyes_jax import data as data_lib
from privateyes_jax import runner
from privateyes_jax import training
from privateyes_jax import workdir as workdir_lib
from privateyes_jax.data import synthetic
from privateyes_jax.federated import client_data
from privateyes_jax.federated import engine
from privateyes_jax.federated import executors
from privateyes_jax.federated import server
from privateyes_jax.models import gaze
from tests.helpers import final_params
from tests.helpers import tiny_config


def fl_config(**overrides):
  """The tiny preset as a federated run with client SGD."""
  base = {'method': 'federated', 'optimizer.name': 'sgd', 'optimizer.learning_rate': 0.05}
  return tiny_config(**{**base, **overrides})


def test_round_indices_masks_and_determinism():
  num_samples = np.array([10, 3, 40])
  idx, mask = client_data.round_indices(0, 5, np.array([0, 1, 2]), num_samples, 4, 8)
  assert idx.shape == (3, 4, 8) and mask.shape == (3, 4, 8)
  assert mask[0].all() and mask[2].all()
  np.testing.assert_array_equal(mask[1].sum(-1), [3, 3, 3, 3])  # Small client: padded.
  assert np.all(idx[1][:, :3].max() < 3)
  # Within an epoch a client sees each sample once.
  assert len(np.unique(idx[2].reshape(-1))) == 32
  again = client_data.round_indices(0, 5, np.array([0, 1, 2]), num_samples, 4, 8)
  np.testing.assert_array_equal(idx, again[0])


def test_client_sampling():
  a = server.sample_clients(3, 7, 20, 5)
  np.testing.assert_array_equal(a, server.sample_clients(3, 7, 20, 5))
  assert len(set(a)) == 5 and not np.array_equal(a, server.sample_clients(3, 8, 20, 5))
  cfg = fl_config().fl
  cfg.clients_per_round, cfg.client_fraction = 0, 0.5
  assert server.clients_per_round(cfg, 10) == 5
  cfg.client_fraction = 0.01
  with pytest.raises(ValueError, match='zero clients'):
    server.clients_per_round(cfg, 10)
  cfg.client_fraction = 1.5
  with pytest.raises(ValueError, match='client_fraction'):
    server.clients_per_round(cfg, 10)
  cfg.clients_per_round = 11
  with pytest.raises(ValueError, match='exceeds'):
    server.clients_per_round(cfg, 10)


def test_client_without_data_is_an_error():
  person = synthetic.make_dataset(1, 4).people[0]
  empty = data_lib.PersonData('p09', person.images[:0], person.labels[:0],
                              person.head_pose[:0], person.sample_id[:0])
  with pytest.raises(data_lib.DatasetError, match='p09 has no data'):
    client_data.make_store([person, empty])


def _tiny_model_config():
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(dict(name='gazenet', conv_features=(4, 8), hidden=16,
                                        padding='SAME'))


def _round_inputs(num_clients=4, steps=2, batch=4):
  ds = synthetic.make_dataset(num_clients, 6)
  store = client_data.make_store(ds.people)
  model = gaze.GazeNet(conv_features=(4, 8), hidden=16)
  params = model.init(jax.random.PRNGKey(0), ds.people[0].images[:1],
                      ds.people[0].head_pose[:1])['params']
  ids = np.arange(num_clients)
  idx, mask = client_data.round_indices(0, 0, ids, store.num_samples, steps, batch)
  return ds, store, model, params, ids, idx, mask


@pytest.mark.parametrize('kind,chunk', [('vmap', 0), ('vmap', 3), ('sharded', 0),
                                        ('client_parallel', 0), ('client_parallel', 3)])
def test_executors_agree_with_sequential(kind, chunk):
  _, store, model, params, ids, idx, mask = _round_inputs()
  import optax  # pylint: disable=g-import-not-at-top
  local = executors.make_local_train(model.apply, optax.sgd(0.05))
  clients = executors.make_clients_train(_tiny_model_config(), optax.sgd(0.05))
  ref = executors.Executor(local, 'sequential').run(params, store, ids, idx, mask)
  got = executors.Executor(local, kind, chunk, clients).run(params, store, ids, idx, mask)
  np.testing.assert_allclose(got.updates, ref.updates, atol=1e-6, rtol=1e-5)
  np.testing.assert_allclose(got.losses, ref.losses, atol=1e-6, rtol=1e-5)
  np.testing.assert_array_equal(got.weights, ref.weights)


def test_sharded_uses_eight_devices():
  assert len(jax.devices()) == 8  # tests/conftest.py forces 8 CPU devices.


def test_fedavg_one_step_equals_weighted_gradient_step(tmp_path):
  """FedAvg, 1 local SGD step, server lr 1: θ' = θ − η Σ_c n_c g_c / Σ_c n_c exactly."""
  ds, store, model, params, ids, idx, mask = _round_inputs(steps=1)
  mask[1, 0, 2:] = 0.0  # Unequal sample counts: client 1 uses 2 samples, others 4.
  import optax  # pylint: disable=g-import-not-at-top
  eta = 0.1
  local = executors.make_local_train(model.apply, optax.sgd(eta))
  res = executors.Executor(local, 'vmap').run(params, store, ids, idx, mask)
  grads, weights = [], []
  for c in ids:
    batch = client_data.gather_batches(store.arrays(), c, idx[c, 0], mask[c, 0])
    g = jax.grad(training.loss_fn, argnums=1)(model.apply, params, batch)
    grads.append(jax.flatten_util.ravel_pytree(g)[0])
    weights.append(mask[c, 0].sum())
  weights = np.array(weights)
  expected = -eta * np.einsum('c,cp->p', weights, np.stack(grads)) / weights.sum()
  from privateyes_jax.federated import aggregators  # pylint: disable=g-import-not-at-top
  _, result = aggregators.MeanAggregator().apply((), res.updates, res.weights, None, 0)
  np.testing.assert_allclose(result.mean_update, expected, atol=1e-6)
  np.testing.assert_array_equal(res.weights, weights)


@pytest.mark.parametrize('executor', ['sequential', 'vmap', 'sharded', 'client_parallel'])
def test_runs_end_to_end_and_executors_agree(tmp_path, executor):
  config = fl_config(**{'fl.executor': executor})
  summary = runner.train_and_evaluate(config, str(tmp_path / executor))
  ref_dir = str(tmp_path / 'ref')
  if executor == 'sequential':
    return
  runner.train_and_evaluate(fl_config(**{'fl.executor': 'sequential'}), ref_dir)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4),
               final_params(str(tmp_path / executor)), final_params(ref_dir))
  assert summary['rounds'] == 3 and summary['num_clients'] == 4


def test_metrics_rows_and_summary(tmp_path):
  wd = str(tmp_path / 'run')
  summary = runner.train_and_evaluate(fl_config(), wd)
  rows = [json.loads(l) for l in open(os.path.join(wd, 'metrics.jsonl'))]
  assert [r['round'] for r in rows] == [1, 2, 3]
  for key in ('train_loss', 'test_error', 'clients', 'upload_bytes_per_client', 'seconds',
              'round_seconds', 'per_person_error'):
    assert key in rows[-1], key
  for key in ('num_clients', 'rounds', 'clients_per_round', 'local_steps', 'server_optimizer',
              'per_person_error_deg'):
    assert key in summary, key
  assert summary['method'] == 'fedavg'
  assert rows[0]['upload_bytes_per_client'] == 4 * summary['num_params']


@pytest.mark.parametrize('overrides', [
    {},
    {'fl.server_optimizer': 'fedadam', 'fl.server_lr': 0.01, 'fl.client_fraction': 0.5},
])
def test_resume_is_bit_identical(tmp_path, overrides):
  config = fl_config(**overrides)
  full, parted = str(tmp_path / 'full'), str(tmp_path / 'parted')
  runner.train_and_evaluate(config, full)
  assert runner.train_and_evaluate(config, parted, halt_after=1) == {'halted_at_step': 1}
  runner.train_and_evaluate(config, parted)
  jax.tree.map(np.testing.assert_array_equal, final_params(full), final_params(parted))
  rows = [json.loads(l) for l in open(os.path.join(parted, 'metrics.jsonl'))]
  assert [r['round'] for r in rows] == [1, 2, 3]


def test_server_optimizers_differ_and_fedavgm_without_momentum_is_fedavg(tmp_path):
  results = {}
  for name, extra in [('fedavg', {}), ('fedavgm0', {'fl.server_optimizer': 'fedavgm',
                                                     'fl.server_momentum': 0.0}),
                      ('fedavgm', {'fl.server_optimizer': 'fedavgm'}),
                      ('fedyogi', {'fl.server_optimizer': 'fedyogi', 'fl.server_lr': 0.01})]:
    wd = str(tmp_path / name)
    runner.train_and_evaluate(fl_config(**extra), wd)
    results[name] = jax.flatten_util.ravel_pytree(final_params(wd))[0]
  np.testing.assert_allclose(results['fedavgm0'], results['fedavg'], atol=1e-6)
  assert not np.allclose(results['fedavgm'], results['fedavg'])
  assert not np.allclose(results['fedyogi'], results['fedavg'])


def test_nan_update_rejects_round_and_keeps_model(tmp_path, monkeypatch):
  config = fl_config()
  ref = str(tmp_path / 'ref')
  runner.train_and_evaluate(config, ref, halt_after=1)
  original_run = executors.Executor.run
  calls = {'n': 0}

  def poisoned_run(self, *args, **kwargs):
    out = original_run(self, *args, **kwargs)
    calls['n'] += 1
    if calls['n'] == 2:  # Round 2: client 1 sends NaN.
      out = out._replace(updates=out.updates.at[1, 0].set(jnp.nan))
    return out

  monkeypatch.setattr(executors.Executor, 'run', poisoned_run)
  wd = str(tmp_path / 'run')
  with pytest.raises(engine.RoundRejected, match=r'Round 2: .*client\(s\) p01'):
    runner.train_and_evaluate(config, wd)
  assert workdir_lib.Workdir(wd).latest_step() == 1
  jax.tree.map(np.testing.assert_array_equal, final_params(wd), final_params(ref))


def test_local_only_and_iid_and_loo(tmp_path):
  local = runner.train_and_evaluate(fl_config(method='local'), str(tmp_path / 'local'))
  assert local['method'] == 'local' and len(local['per_person_error']) == 2
  iid = runner.train_and_evaluate(fl_config(**{'data.partition': 'iid'}), str(tmp_path / 'iid'))
  assert np.isfinite(iid['test_error'])
  loo = runner.train_and_evaluate(fl_config(**{'data.protocol': 'loo', 'data.fold': 2}),
                                  str(tmp_path / 'loo'))
  assert loo['num_people_train'] == 5 and list(loo['per_person_error']) == ['p02']


def test_iid_reshuffle_is_a_permutation():
  people = synthetic.make_dataset(3, 10).people
  mixed = client_data.iid_reshuffle(people, seed=0)
  assert [p.num_samples for p in mixed] == [10, 10, 10]
  before = np.sort(np.concatenate([p.labels[:, 0] for p in people]))
  after = np.sort(np.concatenate([p.labels[:, 0] for p in mixed]))
  np.testing.assert_array_equal(before, after)
  assert not np.array_equal(mixed[0].labels, people[0].labels)


def test_bad_fl_configs(tmp_path):
  with pytest.raises(ValueError, match='Unknown fl.executor'):
    runner.train_and_evaluate(fl_config(**{'fl.executor': 'ray'}), str(tmp_path / 'a'))
  with pytest.raises(ValueError, match='fl.rounds'):
    runner.train_and_evaluate(fl_config(**{'fl.rounds': 0}), str(tmp_path / 'b'))
  with pytest.raises(ValueError, match='server_optimizer'):
    runner.train_and_evaluate(fl_config(**{'fl.server_optimizer': 'fedprox'}),
                              str(tmp_path / 'c'))
  with pytest.raises(ValueError, match='zero clients'):
    runner.train_and_evaluate(fl_config(**{'fl.client_fraction': 0.01}), str(tmp_path / 'd'))


def test_leave_one_person_out_all_folds(tmp_path):
  config = fl_config(**{'data.protocol': 'loo', 'data.fold': -1, 'data.num_people': 3,
                        'fl.rounds': 1})
  summary = runner.train_and_evaluate(config, str(tmp_path / 'loo'))
  assert summary['folds'] == 3
  assert sorted(summary['per_person_error']) == ['p00', 'p01', 'p02']
  np.testing.assert_allclose(summary['test_error'],
                             np.mean(list(summary['per_person_error'].values())))
  assert os.path.exists(tmp_path / 'loo' / 'fold_02' / 'summary.json')
