r"""The out-of-core client store on a GazeCapture-shaped federation (issue #17).

  python -m experiments.bench.client_store            # defaults: a few minutes on 2 cores

GazeCapture (Krafka et al., "Eye Tracking for Everyone", CVPR 2016) has 2,445,504
frames of 1,474 people: 1,659 frames per person on average, with a wide spread
between people. The stand-in draws each person's frame count from a lognormal with
that mean and a 10x spread between the 5th and 95th percentile (``--spread``;
sigma = ln(spread) / (2 x 1.645)); the paper gives the total, not the per-person
histogram, so the shape of the distribution is our assumption. Images are
36x60x1 (``--height``, ``--width``, ``--channels``) instead of 64x64x3 so that the
files fit the disk and the write stays quick; the patches of a few rendered
synthetic people are dealt to every person's frames (the content does not matter
here, only sizes and access pattern).

The stand-in is written once as a prepared store: flat NumPy files (images uint8,
labels and head pose float32, concatenated per person, with offsets) in a temporary
directory, opened as ``np.memmap``. It is not an array_record dataset: the project's
TFDS builder would write 2.4M records one Python example at a time, too slow for a
benchmark; `client_data.StreamedStore` reads any row source the same way.

Two measurements, printed side by side:

1. Full size, streamed: the people (memmap-backed `PersonData`) go through
   ``client_data.make_store(people, 'auto')``, which must choose the streamed store
   (the padded one would need ``people x largest person`` samples). ``--rounds``
   FedAvg training rounds of ``--clients_per_round`` clients, next round prefetched
   as the engine does. Reports rounds/s, peak host RSS and the peak of JAX's live
   device buffers (the CPU backend's device memory).
2. A subset of ``--subset_people`` people where the padded store fits: the same
   rounds with the padded and the streamed store, in alternating blocks (the machine
   may be shared), and the rounds/s ratio; the updates are checked to be identical.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app
from absl import flags

from privateyes_jax.data import base
from privateyes_jax.data import synthetic
from privateyes_jax.federated import client_data
from privateyes_jax.federated import executors
from privateyes_jax.federated import memory
from privateyes_jax.federated import server as server_lib
from privateyes_jax.models import gaze

GAZECAPTURE_FRAMES, GAZECAPTURE_PEOPLE = 2_445_504, 1_474  # Krafka et al. 2016, Table 1.

_PEOPLE = flags.DEFINE_integer('num_people', GAZECAPTURE_PEOPLE, 'People (clients).')
_MEAN = flags.DEFINE_float('mean_frames', GAZECAPTURE_FRAMES / GAZECAPTURE_PEOPLE,
                           'Mean frames per person.')
_SPREAD = flags.DEFINE_float('spread', 10.0, '95th / 5th percentile of frames per person.')
_H = flags.DEFINE_integer('height', 36, 'Image height.')
_W = flags.DEFINE_integer('width', 60, 'Image width.')
_C = flags.DEFINE_integer('channels', 1, 'Image channels.')
_DIR = flags.DEFINE_string('dir', '', 'Where to write the store; "": a temporary directory.')
_KEEP = flags.DEFINE_bool('keep', False, 'Keep the written store.')
_K = flags.DEFINE_integer('clients_per_round', 16, 'Clients trained per round.')
_STEPS = flags.DEFINE_integer('local_steps', 2, 'Client SGD steps per round.')
_BATCH = flags.DEFINE_integer('batch', 16, 'Client batch size.')
_ROUNDS = flags.DEFINE_integer('rounds', 4, 'Rounds per measurement block.')
_BLOCKS = flags.DEFINE_integer('blocks', 3, 'Alternating padded/streamed blocks (subset).')
_SUBSET = flags.DEFINE_integer('subset_people', 64, 'People of the padded-vs-streamed run.')
_EXECUTOR = flags.DEFINE_enum('executor', 'auto', list(executors.EXECUTORS), 'fl.executor.')
_CONV = flags.DEFINE_list('conv_features', ['4', '8'], 'GazeNet conv features.')
_HIDDEN = flags.DEFINE_integer('hidden', 32, 'GazeNet hidden units.')
_BUDGET_MB = flags.DEFINE_integer('budget_mb', 0,
                                  'Padded-store budget of the auto choice; 0: the default.')

MIB = 1 << 20


def frames_per_person(num_people: int, mean: float, spread: float, seed: int = 0) -> np.ndarray:
  """Lognormal frame counts with mean ``mean`` and p95/p5 = ``spread``."""
  sigma = np.log(spread) / (2 * 1.6448536)
  mu = np.log(mean) - sigma ** 2 / 2
  return np.maximum(1, np.round(np.random.default_rng(seed).lognormal(mu, sigma, num_people))
                    ).astype(np.int64)


def write_store(directory: str, sizes: np.ndarray, image_shape: tuple[int, int, int]) -> dict:
  """Writes the prepared store (flat files, person after person); returns its manifest."""
  pool = [synthetic.sample_person(0, i, 256) for i in range(8)]
  pool_images = np.concatenate([p.images for p in pool])
  if pool_images.shape[1:] != image_shape:  # Other sizes: crop or tile the rendered patches.
    reps = [-(-a // b) for a, b in zip(image_shape, pool_images.shape[1:])]
    pool_images = np.tile(pool_images, [1] + reps)[:, :image_shape[0], :image_shape[1],
                                                   :image_shape[2]]
  pool_labels = np.concatenate([p.labels for p in pool]).astype(np.float32)
  pool_pose = np.concatenate([p.head_pose for p in pool]).astype(np.float32)
  files = {k: open(os.path.join(directory, f'{k}.bin'), 'wb')
           for k in ('images', 'labels', 'head_pose')}
  try:
    for person, n in enumerate(sizes):
      take = (np.arange(n) + 131 * person) % len(pool_images)
      files['images'].write(np.ascontiguousarray(pool_images[take]).tobytes())
      files['labels'].write(pool_labels[take].tobytes())
      files['head_pose'].write(pool_pose[take].tobytes())
  finally:
    for f in files.values():
      f.close()
  manifest = {'sizes': [int(n) for n in sizes], 'image_shape': list(image_shape)}
  with open(os.path.join(directory, 'manifest.json'), 'w') as f:
    json.dump(manifest, f)
  return manifest


def open_people(directory: str) -> list[base.PersonData]:
  """Memmap-backed people: nothing is read until a batch asks for it (labels are checked)."""
  with open(os.path.join(directory, 'manifest.json')) as f:
    manifest = json.load(f)
  sizes = np.array(manifest['sizes'])
  total, shape = int(sizes.sum()), tuple(manifest['image_shape'])
  mm = lambda name, dtype, tail: np.memmap(os.path.join(directory, f'{name}.bin'), dtype, 'r',
                                           shape=(total,) + tail)
  images, labels, pose = mm('images', np.uint8, shape), mm('labels', np.float32, (2,)), mm(
      'head_pose', np.float32, (2,))
  offsets = np.concatenate([[0], np.cumsum(sizes)])
  return [base.PersonData(person=f'gc{i:05d}', images=images[a:b], labels=labels[a:b],
                          head_pose=pose[a:b], sample_id=np.arange(b - a))
          for i, (a, b) in enumerate(zip(offsets[:-1], offsets[1:]))]


def rss() -> str:
  """Current resident memory split into anonymous and file-backed (memmap) pages."""
  fields = {}
  with open('/proc/self/status') as f:
    for line in f:
      key, _, value = line.partition(':')
      if key in ('VmRSS', 'RssAnon', 'RssFile', 'VmHWM'):
        fields[key] = int(value.split()[0]) * 1024
  mib = lambda key: f'{fields.get(key, 0) / MIB:,.0f}'
  return (f'RSS {mib("VmRSS")} MiB (anonymous {mib("RssAnon")}, file-backed '
          f'{mib("RssFile")}), peak {mib("VmHWM")} MiB')


def live_device_bytes() -> int:
  return int(sum(x.nbytes for x in jax.live_arrays()))


class Trainer:
  """FedAvg rounds of the sampled clients; measures time and live device bytes."""

  def __init__(self, executor: executors.Executor, params, num_clients: int, k: int):
    self.executor, self.params, self.num_clients, self.k = executor, params, num_clients, k
    self.peak_live = 0

  def plan(self, store, r: int):
    ids = server_lib.sample_clients(0, r, self.num_clients, self.k)
    return (ids, *client_data.round_indices(0, r, ids, store.num_samples, _STEPS.value,
                                            _BATCH.value))

  def rounds(self, store, first: int, count: int, prefetch: bool = True):
    """Runs rounds ``first..first+count-1``; returns (seconds, last round's updates)."""
    t = time.perf_counter()
    out = None
    for r in range(first, first + count):
      ids, idx, mask = self.plan(store, r)
      if prefetch and r + 1 < first + count:
        store.prefetch(*self.plan(store, r + 1)[:2])
      out = self.executor.run(self.params, store, ids, idx, mask)
      mean = jnp.sum(out.updates * out.weights[:, None], 0) / jnp.sum(out.weights)
      jax.block_until_ready(mean)
      self.peak_live = max(self.peak_live, live_device_bytes())
    return time.perf_counter() - t, out


def main(argv):
  del argv
  dev = jax.devices()[0]
  print(f'machine: {platform.node()} backend={jax.default_backend()} '
        f'device={dev.device_kind} cores={os.cpu_count()} '
        f'load={os.getloadavg()[0]:.1f} jax={jax.__version__}')
  shape = (_H.value, _W.value, _C.value)
  sizes = frames_per_person(_PEOPLE.value, _MEAN.value, _SPREAD.value)
  sample_bytes = int(np.prod(shape)) + 16
  print(f'stand-in: {len(sizes):,} people, {sizes.sum():,} frames (GazeCapture: '
        f'{GAZECAPTURE_FRAMES:,}), frames/person min {sizes.min()} p5 '
        f'{np.percentile(sizes, 5):.0f} median {np.median(sizes):.0f} p95 '
        f'{np.percentile(sizes, 95):.0f} max {sizes.max()}; images {shape}')
  print(f'  unpadded {sizes.sum() * sample_bytes / MIB:,.0f} MiB; padded to the largest '
        f'person {len(sizes) * sizes.max() * sample_bytes / MIB:,.0f} MiB '
        f'({len(sizes) * sizes.max() / sizes.sum():.1f}x)')
  directory = _DIR.value or tempfile.mkdtemp(prefix='client_store_bench_')
  os.makedirs(directory, exist_ok=True)
  try:
    t = time.perf_counter()
    write_store(directory, sizes, shape)
    print(f'wrote the prepared store (flat files, np.memmap) to {directory} in '
          f'{time.perf_counter() - t:.1f} s; host {rss()}')
    people = open_people(directory)

    conv = tuple(int(x) for x in _CONV.value)
    model = gaze.GazeNet(conv_features=conv, hidden=_HIDDEN.value)
    params = model.init(jax.random.PRNGKey(0), np.asarray(people[0].images[:1]),
                        np.asarray(people[0].head_pose[:1]))['params']
    client_opt = optax.sgd(0.01)
    local = executors.make_local_train(model.apply, client_opt)
    model_config = type('ModelConfig', (), dict(name='gazenet', conv_features=conv,
                                                padding='SAME'))
    executor = executors.Executor(local, _EXECUTOR.value,
                                  clients_train=executors.make_clients_train(model_config,
                                                                             client_opt))
    num_params = sum(x.size for x in jax.tree.leaves(params))
    print(f'GazeNet{conv} hidden {_HIDDEN.value} ({num_params:,} params), executor '
          f'{executors.describe(executor)}; {_K.value} clients/round x {_STEPS.value} steps '
          f'x batch {_BATCH.value}')

    # 1. Full size: auto must choose the streamed store.
    budget = _BUDGET_MB.value * MIB or None
    print(f'host before the store: {rss()}')
    store = client_data.make_store(people, 'auto', budget)
    print(f'\n== full size: make_store(auto) chose {store.kind!r} (padded would be '
          f'{client_data.padded_store_bytes(people) / MIB:,.0f} MiB; budget '
          f'{(budget or client_data.default_budget_bytes()) / MIB:,.0f} MiB)')
    trainer = Trainer(executor, params, len(people), _K.value)
    trainer.rounds(store, 0, 1)  # Compile.
    print(f'host after compiling: {rss()}')
    trainer.peak_live = 0
    seconds, _ = trainer.rounds(store, 1, _ROUNDS.value)
    gather_s = []
    for r in range(_ROUNDS.value + 1, _ROUNDS.value + 4):  # Not prefetched: timed alone.
      ids, idx, _ = trainer.plan(store, r)
      t = time.perf_counter()
      jax.block_until_ready(store.round_inputs(ids, idx)[0])
      gather_s.append(time.perf_counter() - t)
    store.close()
    round_mib = store.device_bytes(_K.value, _STEPS.value, _BATCH.value) / 2 / MIB
    print(f'streamed: {_ROUNDS.value / seconds:.2f} rounds/s; peak live device buffers '
          f'{trainer.peak_live / MIB:,.1f} MiB (one round\'s batches {round_mib:,.1f} MiB); '
          f'host {rss()}')
    print(f'  gathering + uploading one round alone (what the prefetch hides): '
          f'{1e3 * np.median(gather_s):.0f} ms median of {len(gather_s)}')
    del store

    # 2. A subset where the padded store fits: padded vs streamed, alternating blocks.
    subset = people[:_SUBSET.value]
    padded = client_data.make_store(subset, 'padded')
    streamed = client_data.make_store(subset, 'streamed')
    k = min(_K.value, len(subset))
    trainer = Trainer(executor, params, len(subset), k)
    print(f'\n== subset: {len(subset)} people, {sum(p.num_samples for p in subset):,} '
          f'frames; padded store {memory.store_bytes(padded) / MIB:,.1f} MiB on the device, '
          f'streamed {streamed.device_bytes(k, _STEPS.value, _BATCH.value) / MIB:,.1f} MiB '
          '(two rounds\' batches)')
    print(f'host with both stores: {rss()}')
    _, ref = trainer.rounds(padded, 0, 1)  # Compile both programs; check they agree.
    _, got = trainer.rounds(streamed, 0, 1)
    for a, b in zip(ref, got):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    print('updates of round 1: padded and streamed identical (bit for bit)')
    times = {'padded': [], 'streamed': []}
    peaks = {}
    for block in range(_BLOCKS.value):
      for name, store in (('padded', padded), ('streamed', streamed)):
        trainer.peak_live = 0
        seconds, _ = trainer.rounds(store, 1 + block * _ROUNDS.value, _ROUNDS.value)
        times[name].append(seconds)
        # Live buffers of this store's rounds: the padded store stays alive (and is
        # counted) during the streamed blocks too, so it is taken out of those.
        other = memory.store_bytes(padded) if name == 'streamed' else 0
        peaks[name] = max(peaks.get(name, 0), trainer.peak_live - other)
    streamed.close()
    rate = {n: _ROUNDS.value * len(v) / sum(v) for n, v in times.items()}
    print(f'{"store":<10}{"rounds/s":>10}{"blocks (s)":>24}{"peak live device MiB":>24}')
    for n in ('padded', 'streamed'):
      print(f'{n:<10}{rate[n]:>10.2f}{" ".join(f"{s:.2f}" for s in times[n]):>24}'
            f'{peaks[n] / MIB:>24,.1f}')
    print(f'streamed / padded rounds/s: {rate["streamed"] / rate["padded"]:.3f}; '
          f'host {rss()}; load {os.getloadavg()[0]:.1f}')
  finally:
    if not _KEEP.value:
      shutil.rmtree(directory, ignore_errors=True)


if __name__ == '__main__':
  app.run(main)
