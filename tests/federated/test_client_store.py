"""The streamed (out-of-core) client store: the same updates as the padded one, bit for bit."""

import dataclasses
import threading

import jax
import ml_collections
import numpy as np
import optax
import pytest

from privateyes_jax import runner
from privateyes_jax.data import synthetic
from privateyes_jax.federated import client_data
from privateyes_jax.federated import executors
from privateyes_jax.federated import memory
from privateyes_jax.models import gaze
from tests.federated.test_engine import fl_config
from tests.helpers import final_params

SIZES = (3, 7, 12, 20, 5)  # Unequal; client 0 has fewer samples than a batch.
STEPS, BATCH = 3, 4


def _people():
  return [synthetic.sample_person(1, i, n) for i, n in enumerate(SIZES)]


def _prefetch_threads():
  return [t for t in threading.enumerate() if t.name == 'client-store-prefetch']


@pytest.fixture(scope='module')
def federation():
  people = _people()
  model = gaze.GazeNet(conv_features=(4, 8), hidden=16)
  params = model.init(jax.random.PRNGKey(0), people[0].images[:1],
                      people[0].head_pose[:1])['params']
  local = executors.make_local_train(model.apply, optax.sgd(0.05))
  clients = executors.make_clients_train(
      ml_collections.ConfigDict(dict(name='gazenet', conv_features=(4, 8), hidden=16,
                                     padding='SAME')), optax.sgd(0.05))
  return people, params, local, clients


# The reference executor, the default one (chunked: padded local ids) and the sharded one
# (it replicates the streamed round's new arrays on every device).
@pytest.mark.parametrize('kind,chunk', [('sequential', 0), ('client_parallel', 3),
                                        ('sharded', 0)])
def test_streamed_updates_equal_padded_bit_for_bit(federation, kind, chunk):
  """Same indices -> same batches -> the same updates, losses and weights exactly.

  Kills: a streamed gather that reorders samples, uses another client's rows, or
  drops the masked slots of the small client (any of these changes the updates).
  """
  people, params, local, clients = federation
  padded = client_data.make_store(people, 'padded')
  streamed = client_data.make_store(people, 'streamed')
  assert isinstance(streamed, client_data.StreamedStore)
  ex = executors.Executor(local, kind, chunk, clients)
  ids = np.array([4, 0, 3, 1])  # A subset, out of order.
  for r in range(2):
    idx, mask = client_data.round_indices(0, r, ids, padded.num_samples, STEPS, BATCH)
    if r == 1:
      streamed.prefetch(ids, idx)  # Prefetched or gathered on demand: the same.
    ref = ex.run(params, padded, ids, idx, mask)
    got = ex.run(params, streamed, ids, idx, mask)
    for a, b in zip(got, ref):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  streamed.close()


def test_streamed_round_inputs_hold_exactly_the_round_samples():
  people = _people()
  store = client_data.make_store(people, 'streamed')
  ids = np.array([2, 0])
  idx, _ = client_data.round_indices(3, 1, ids, store.num_samples, STEPS, BATCH)
  arrays, local_ids, local_idx = store.round_inputs(ids, idx)
  assert arrays['images'].shape == (2, STEPS * BATCH) + people[0].images.shape[1:]
  np.testing.assert_array_equal(local_ids, [0, 1])
  for row, client in enumerate(ids):
    got = np.asarray(arrays['images'])[row][local_idx[row]]
    np.testing.assert_array_equal(got, people[client].images[idx[row]])
    np.testing.assert_array_equal(np.asarray(arrays['labels'])[row][local_idx[row]],
                                  people[client].labels[idx[row]])
  # Device memory: two rounds' batches at most, not the padded [clients, max_samples].
  assert store.device_bytes(2, STEPS, BATCH) == 2 * sum(
      int(v.nbytes) for v in arrays.values())


def test_streamed_store_reads_memory_mapped_rows(tmp_path):
  """Rows on disk (np.memmap views into one file, with offsets) serve the store as-is."""
  people = _people()
  offsets = np.concatenate([[0], np.cumsum(SIZES)])
  path = tmp_path / 'images.u8'
  np.concatenate([p.images for p in people]).tofile(path)
  images = np.memmap(path, np.uint8, 'r', shape=(offsets[-1],) + people[0].images.shape[1:])
  rows = [client_data.ArrayRows(images[offsets[c]:offsets[c + 1]], p.labels, p.head_pose)
          for c, p in enumerate(people)]
  on_disk = client_data.StreamedStore(rows, [p.person for p in people])
  in_memory = client_data.make_store(people, 'streamed')
  ids = np.arange(len(people))
  idx, _ = client_data.round_indices(0, 0, ids, on_disk.num_samples, STEPS, BATCH)
  for a, b in zip(jax.tree.leaves(on_disk.round_inputs(ids, idx)),
                  jax.tree.leaves(in_memory.round_inputs(ids, idx))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_prefetch_threads_end_and_close_drops_pending():
  """Kills: a prefetch thread that never ends, or pending rounds that close() keeps."""
  store = client_data.make_store(_people(), 'streamed')
  ids = np.array([0, 1])
  plans = [client_data.round_indices(0, r, ids, store.num_samples, STEPS, BATCH)[0]
           for r in range(4)]
  store.prefetch(ids, plans[0])
  store.prefetch(ids, plans[0])  # The same round twice: one fetch.
  store.prefetch(ids, plans[1])
  store.prefetch(ids, plans[2])  # Over max_pending: the oldest (round 0) is dropped.
  assert len(store._pending) == 2  # pylint: disable=protected-access
  store.round_inputs(ids, plans[1])  # Consumed from the prefetch.
  assert len(store._pending) == 1  # pylint: disable=protected-access
  store.close()
  assert not store._pending  # pylint: disable=protected-access
  assert not _prefetch_threads()
  store.close()  # Idempotent.
  # A failing fetch is raised where the round asks for it, and its thread ends.
  store.prefetch(ids, np.full_like(plans[3], 10_000))
  with pytest.raises(IndexError):
    store.round_inputs(ids, np.full_like(plans[3], 10_000))
  assert not _prefetch_threads()


def test_auto_picks_streamed_when_the_padded_store_exceeds_the_budget():
  people = _people()
  padded = client_data.padded_store_bytes(people)
  assert padded == len(SIZES) * max(SIZES) * (36 * 60 + 16)
  assert client_data.choose_store_kind(people, 'auto', padded - 1) == 'streamed'
  assert client_data.choose_store_kind(people, 'auto', padded) == 'padded'
  assert client_data.choose_store_kind(people, 'padded', 1) == 'padded'
  assert isinstance(client_data.make_store(people, 'auto', 1), client_data.StreamedStore)
  assert isinstance(client_data.make_store(people, 'auto', 10 * padded),
                    client_data.ClientStore)
  fl = ml_collections.ConfigDict({'client_store': 'auto', 'client_store_budget_mib': 1e-6})
  assert client_data.store_for_config(people, fl).kind == 'streamed'
  with pytest.raises(ValueError, match='fl.client_store must be one of'):
    client_data.make_store(people, 'disk')


def test_memory_plan_counts_the_round_working_set(federation):
  people, params, local, _ = federation
  many = [dataclasses.replace(people[i % 5], person=f'c{i}') for i in range(50)]
  ex = executors.Executor(local, 'vmap')
  args = dict(num_clients=4, local_steps=STEPS, batch_size=BATCH,
              training=memory.TrainingCost(0, 0, 'estimate'))  # No compilation.
  plan_p, _ = memory.plan_round(ex, params, client_data.make_store(many, 'padded'), **args)
  plan_s, _ = memory.plan_round(ex, params, client_data.make_store(many, 'streamed'), **args)
  assert plan_p.store_bytes == 50 * max(SIZES) * (36 * 60 + 16)
  assert plan_s.store_bytes == 2 * 4 * STEPS * BATCH * (36 * 60 + 16)


def test_engine_streamed_run_equals_padded_run(tmp_path):
  """The whole engine (prefetching round r + 1 during round r; halted after round 1 and
  resumed): the same final model as the padded store's uninterrupted run."""
  finals = {}
  for kind in ('padded', 'streamed'):
    config = fl_config(**{'fl.client_store': kind, 'fl.rounds': 2, 'fl.executor': 'sequential'})
    if kind == 'streamed':
      halted = runner.train_and_evaluate(config, str(tmp_path / kind), halt_after=1)
      assert halted == {'halted_at_step': 1}
    runner.train_and_evaluate(config, str(tmp_path / kind))
    finals[kind] = final_params(tmp_path / kind)
  for a, b in zip(jax.tree.leaves(finals['streamed']), jax.tree.leaves(finals['padded'])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not _prefetch_threads()


def test_streamed_store_reads_the_prepared_array_record_files(tmp_path):
  """The on-disk path: rows read through the TFDS data source give the same batches."""
  from privateyes_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
  pytest.importorskip('tensorflow_datasets')
  builder = tfds_source.synthetic_builder(3, 10, 0, str(tmp_path))
  builder.download_and_prepare()
  people = tfds_source.read_gaze_dataset(builder, 'train', 'synthetic', 'gaze').people
  names, rows = tfds_source.person_rows(builder, 'train', chunk=7)
  assert names == [p.person for p in people]
  on_disk = client_data.StreamedStore(rows, names)
  in_memory = client_data.make_store(people, 'padded')
  ids = np.array([2, 0])
  idx, _ = client_data.round_indices(0, 0, ids, on_disk.num_samples, STEPS, BATCH)
  np.testing.assert_array_equal(on_disk.num_samples, in_memory.num_samples)
  arrays, local_ids, local_idx = on_disk.round_inputs(ids, idx)
  for field, padded in in_memory.arrays().items():
    for row, client in enumerate(ids):
      np.testing.assert_array_equal(np.asarray(arrays[field])[local_ids[row]][local_idx[row]],
                                    np.asarray(padded)[client][idx[row]])


def test_sweep_group_with_streamed_store_equals_padded(tmp_path):
  """The sweep group's program reads the streamed store's round batches the same way."""
  from privateyes_jax.sweeps import sweep  # pylint: disable=g-import-not-at-top
  from tests.test_sweep import sweep_config  # pylint: disable=g-import-not-at-top
  finals = {}
  for kind in ('padded', 'streamed'):
    config = sweep_config('optimizer.learning_rate=0.05',
                          **{'fl.client_store': kind, 'fl.rounds': 1})
    sweep.run_sweep(config, str(tmp_path / kind))
    finals[kind] = final_params(tmp_path / kind / 'runs' / 'learning_rate=0.05')
  for a, b in zip(jax.tree.leaves(finals['streamed']), jax.tree.leaves(finals['padded'])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_run_from_prepared_files_streams_training_images_from_disk(tmp_path, monkeypatch):
  """A run from a prepared dataset (data.source='tfds') with the streamed store: the same
  final model and errors as the padded in-memory run, and no training person's images are
  ever read whole (only their round batches) nor the split loaded eagerly."""
  pytest.importorskip('tensorflow_datasets')
  from privateyes_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from privateyes_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
  data = {'data.source': 'tfds', 'data.data_dir': str(tmp_path / 'tfds'),
          'data.num_people': 6, 'data.samples_per_person': 12, 'data.num_test_people': 1,
          'data.num_val_people': 1, 'fl.rounds': 2, 'fl.executor': 'sequential'}
  padded_config = fl_config(**data, **{'fl.client_store': 'padded'})
  assert not runner.training_images_stay_on_disk(padded_config)
  padded = runner.train_and_evaluate(padded_config, str(tmp_path / 'padded'))

  loaded_whole, read_rows = [], []
  real_load, real_read = tfds_source.RecordImages.load, tfds_source.RecordImages._read

  def load(self):
    loaded_whole.append(self.name)
    return real_load(self)

  def read(self, ids):
    read_rows.append(len(np.asarray(ids).reshape(-1)))
    return real_read(self, ids)

  def eager(*args, **kwargs):
    raise AssertionError('the split was read with its images')

  monkeypatch.setattr(tfds_source.RecordImages, 'load', load)
  monkeypatch.setattr(tfds_source.RecordImages, '_read', read)
  real_reader = tfds_source.read_gaze_dataset
  monkeypatch.setattr(tfds_source, 'read_gaze_dataset', lambda *a, lazy_images=False, **k: (
      real_reader(*a, lazy_images=True, **k) if lazy_images else eager()))
  streamed_config = fl_config(**data, **{'fl.client_store': 'streamed'})
  assert runner.training_images_stay_on_disk(streamed_config)
  streamed = runner.train_and_evaluate(streamed_config, str(tmp_path / 'streamed'))

  dataset = data_lib.load_dataset(streamed_config.data, lazy_images=True)
  train, val, test = data_lib.split_people_val(dataset, streamed_config.data)
  assert sorted(loaded_whole) == sorted(val.person_names + test.person_names)
  assert not set(loaded_whole) & set(train.person_names)
  assert max(read_rows) <= max(12, streamed_config.fl.local_steps * streamed_config.batch_size)
  for a, b in zip(jax.tree.leaves(final_params(tmp_path / 'streamed')),
                  jax.tree.leaves(final_params(tmp_path / 'padded'))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for key in ('test_error', 'val_error', 'per_person_error', 'baseline_mean_predictor_error'):
    assert streamed[key] == padded[key], key
  assert not _prefetch_threads()


def test_lazy_images_index_like_the_eager_arrays(tmp_path):
  """`RecordImages` (images left in the array_record files) reads what NumPy would give."""
  pytest.importorskip('tensorflow_datasets')
  from privateyes_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
  builder = tfds_source.synthetic_builder(3, 10, 0, str(tmp_path))
  builder.download_and_prepare()
  eager = tfds_source.read_gaze_dataset(builder, 'train', 'synthetic', 'gaze')
  lazy = tfds_source.read_gaze_dataset(builder, 'train', 'synthetic', 'gaze',
                                       lazy_images=True, chunk=7)
  for e, l in zip(eager.people, lazy.people):
    assert isinstance(l.images, tfds_source.RecordImages)
    assert (l.person, l.images.shape, l.images.dtype) == (e.person, e.images.shape,
                                                           e.images.dtype)
    for field in ('labels', 'head_pose', 'sample_id'):
      np.testing.assert_array_equal(getattr(l, field), getattr(e, field))
    for key in (3, slice(None, 1), slice(2, 9, 3), np.array([4, 4, 0, 9]),
                np.arange(10) % 3 == 0, (np.array([1, 2]), 5)):
      np.testing.assert_array_equal(l.images[key], e.images[key])
    np.testing.assert_array_equal(np.asarray(l.images), e.images)
  # 'auto' is decided from counts x image shape, without reading an image.
  assert client_data.padded_store_bytes(lazy.people) == client_data.padded_store_bytes(
      eager.people)
  memory_people = tfds_source.in_memory(lazy).people
  assert all(isinstance(p.images, np.ndarray) for p in memory_people)
