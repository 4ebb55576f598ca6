"""Many clients: a chunked round equals the unchunked one; the memory plan fits its budget."""

import dataclasses

import jax
import ml_collections
import numpy as np
import optax
import pytest

from privateyes_jax.data import base
from privateyes_jax.data import synthetic
from privateyes_jax.federated import aggregators
from privateyes_jax.federated import client_data
from privateyes_jax.federated import executors
from privateyes_jax.federated import memory
from privateyes_jax.models import gaze
from privateyes_jax.mpc import aggregator as mpc_aggregator

CONV, HIDDEN, STEPS, BATCH = (4, 8), 16, 2, 4


def _clients(num_clients, samples=6, distinct=20):
  rendered = [synthetic.sample_person(0, i, samples) for i in range(distinct)]
  return [dataclasses.replace(rendered[c % distinct], person=f'c{c:04d}')
          for c in range(num_clients)]


@pytest.fixture(scope='module')
def setup():
  people = _clients(200)
  store = client_data.make_store(people)
  model = gaze.GazeNet(conv_features=CONV, hidden=HIDDEN)
  params = model.init(jax.random.PRNGKey(0), people[0].images[:1],
                      people[0].head_pose[:1])['params']
  local = executors.make_local_train(model.apply, optax.sgd(0.05))
  model_config = ml_collections.ConfigDict(dict(name='gazenet', conv_features=CONV,
                                                hidden=HIDDEN, padding='SAME'))
  clients_train = executors.make_clients_train(model_config, optax.sgd(0.05))
  ids = np.arange(200)
  idx, mask = client_data.round_indices(0, 3, ids, store.num_samples, STEPS, BATCH)
  return store, params, local, clients_train, ids, idx, mask


def _counting(executor):
  """Records the padded chunk size of every call of the executor's chunk program."""
  mesh = executor.mesh() if executor.resolved == 'sharded' else None
  fn = executor._vmapped(False, mesh)  # pylint: disable=protected-access
  calls = []

  def counted(p, arrays, client_ids, *rest):
    calls.append(client_ids.shape[0])
    return fn(p, arrays, client_ids, *rest)

  key = (False, mesh is not None)
  executor._compiled[key] = counted  # pylint: disable=protected-access
  return calls


# The sharded executor (8 devices, vmap per device) is the slowest on CPU: half the clients.
@pytest.mark.parametrize('kind,num_clients,chunk', [('client_parallel', 200, 64),
                                                    ('vmap', 200, 64), ('sharded', 100, 32)])
def test_round_in_chunks_equals_one_chunk(setup, kind, num_clients, chunk):
  store, params, local, clients_train, ids, idx, mask = setup
  ids, idx, mask = ids[:num_clients], idx[:num_clients], mask[:num_clients]
  whole = executors.Executor(local, kind, 0, clients_train)
  chunked = executors.Executor(local, kind, chunk, clients_train)
  calls = _counting(chunked)
  ref = whole.run(params, store, ids, idx, mask)
  got = chunked.run(params, store, ids, idx, mask)
  assert calls == [chunk] * 4  # E.g. 200 = 3 x 64 + 8, the last chunk padded.
  assert got.updates.shape == ref.updates.shape == (num_clients, ref.updates.shape[1])
  np.testing.assert_allclose(got.updates, ref.updates, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(got.losses, ref.losses, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(got.weights, ref.weights)
  assert np.abs(np.asarray(ref.updates)).max() > 0  # Clients really trained.

  # The round's aggregation, plain and secure, chunked and not.
  _, plain_ref = aggregators.MeanAggregator().apply((), ref.updates, ref.weights, None, 0)
  _, plain = aggregators.MeanAggregator().apply((), got.updates, got.weights, None, 0)
  np.testing.assert_allclose(plain.mean_update, plain_ref.mean_update, rtol=1e-5, atol=1e-8)
  if kind == 'client_parallel':
    make = lambda chunk: mpc_aggregator.SecureAggregator(
        max_weight=float(STEPS * BATCH), client_chunk=chunk)
    key = jax.random.PRNGKey(7)
    agg_whole, agg_chunked = make(0), make(64)
    _, secure_ref = agg_whole.apply(agg_whole.init(key), ref.updates, ref.weights, key, 0)
    _, secure = agg_chunked.apply(agg_chunked.init(key), ref.updates, ref.weights, key, 0)
    assert secure.ok and secure_ref.ok
    assert secure.stats['mpc/client_chunk'] == 64 and secure_ref.stats['mpc/client_chunk'] == 200
    np.testing.assert_array_equal(secure.mean_update, secure_ref.mean_update)  # Exact ring sums.
    np.testing.assert_allclose(secure.mean_update, plain_ref.mean_update, atol=1e-4)


def test_plan_fits_budget_and_picks_the_largest_chunk(setup):
  store, params, local, clients_train, *_ = setup
  executor = executors.Executor(local, 'client_parallel', clients_train=clients_train)
  training = memory.training_cost(executor, params, store, STEPS, BATCH)
  assert training.source == 'xla' and training.per_client_bytes > 0
  # The fitted line predicts XLA's analysis at a chunk size it was not fitted on.
  measured = memory.compiled_chunk_bytes(executor, params, store, 40, STEPS, BATCH)
  assert abs(training.bytes_for(40) - measured) <= 0.05 * measured

  agg = mpc_aggregator.SecureAggregator(max_weight=float(STEPS * BATCH))
  unlimited, _ = memory.plan_round(executor, params, store, 200, STEPS, BATCH, aggregator=agg,
                                   training=training)
  assert unlimited.client_chunk == 200 and unlimited.num_chunks == 1
  budget = unlimited.common_bytes * 2 + 70 * training.per_client_bytes
  plan, planned_agg = memory.plan_round(executor, params, store, 200, STEPS, BATCH,
                                        aggregator=agg, budget_bytes=budget, training=training)
  assert 1 < plan.num_chunks and plan.client_chunk < 200
  assert plan.peak_bytes <= budget
  # Balanced chunks, and no bigger balanced chunk fits: one chunk fewer does not.
  assert plan.client_chunk == -(-200 // plan.num_chunks)
  bigger = -(-200 // (plan.num_chunks - 1))
  assert plan.common_bytes + training.bytes_for(bigger) > budget
  # The MPC chunk was planned within the same budget and handed to the aggregator.
  assert planned_agg.client_chunk == plan.mpc['client_chunk'] >= 1
  assert plan.common_bytes + plan.mpc_bytes <= budget
  assert plan.as_dict()['peak_bytes'] == plan.peak_bytes
  assert 'peak' in plan.describe()

  with pytest.raises(memory.MemoryPlanError, match=r'updates \[200, '):
    memory.plan_round(executor, params, store, 200, STEPS, BATCH,
                      budget_bytes=unlimited.common_bytes // 2, training=training)


def test_sharded_plan_counts_a_store_replica_per_device(setup):
  store, params, local, clients_train, *_ = setup
  executor = executors.Executor(local, 'sharded', clients_train=clients_train)
  training = memory.TrainingCost(fixed_bytes=1000, per_client_bytes=10_000, source='test')
  plan, _ = memory.plan_round(executor, params, store, 200, STEPS, BATCH, training=training,
                              client_chunk=60)
  assert plan.num_devices == 8 and plan.client_chunk == 64 and plan.num_chunks == 4
  assert plan.store_bytes == 2 * memory.store_bytes(store)
  assert plan.training_chunk_bytes == 1000 + 8 * 10_000  # 64 clients over 8 devices.


def test_ten_thousand_clients_fit_in_memory_and_plan():
  """The client store of 10,000 tiny clients, and a plan for a round with all of them."""
  person = synthetic.sample_person(0, 0, 2)
  people = [base.PersonData(f'c{c:05d}', person.images, person.labels, person.head_pose,
                            person.sample_id) for c in range(10_000)]
  store = client_data.make_store(people)
  assert store.num_clients == 10_000 and store.images.shape[:2] == (10_000, 2)
  model = gaze.GazeNet(conv_features=CONV, hidden=HIDDEN, padding='VALID')
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), person.images[:1],
                                             person.head_pose[:1])['params'])
  local = executors.make_local_train(model.apply, optax.sgd(0.05))
  executor = executors.Executor(local, 'vmap')
  training = memory.TrainingCost(fixed_bytes=0, per_client_bytes=3 << 20, source='test')
  agg = mpc_aggregator.SecureAggregator(max_weight=float(STEPS * BATCH))
  plan, agg = memory.plan_round(executor, params, store, 10_000, STEPS, BATCH, aggregator=agg,
                                budget_bytes=4 << 30, training=training)
  updates = 4 * 10_000 * plan.num_params
  assert plan.updates_bytes == 2 * updates  # Chunk outputs and their concatenation.
  assert plan.num_chunks > 1 and plan.peak_bytes <= 4 << 30
  assert agg.chunk_size(10_000, plan.num_params) == plan.mpc['client_chunk']
