"""Clients' data, each round's batch indices, and the batches a round trains on.

Two stores serve the same round inputs (`ClientStore.round_inputs`):

* ``padded`` (`ClientStore`): every client's samples live in one device array
  ``[clients, max_samples, ...]``, padded to the largest client and uploaded once;
  a round only sends small index arrays ``[C, steps, B]`` and masks, and the
  executor's program gathers the batches on the device.
* ``streamed`` (`StreamedStore`, out of core): the samples stay where they are (host
  memory, a memory-mapped file, or the prepared array_record files through a TFDS
  data source), unpadded, one row source per client. A round gathers exactly its
  batches on the host and uploads only ``[C, steps·B, ...]``; the next round's
  batches are gathered and uploaded by a background thread while the current round
  computes. Device memory is bounded by two rounds' batches, whatever the dataset.

Both hand the executor ``(arrays, client_ids, indices)`` for the same program: the
streamed store's arrays are the round's own batches, its client ids ``0..C-1`` and
its indices ``t·B + b``, so the program gathers exactly the samples the padded
store would give it, and the updates are bit-identical (tests/federated/
test_client_store.py). `choose_store_kind` picks ``streamed`` when the padded
array would not fit the memory budget (``fl.client_store='auto'``). A run from prepared
array_record files hands the stores people whose images are a `tfds_source.RecordImages`
(left on disk; `runner.training_images_stay_on_disk`): the streamed store's `ArrayRows`
then reads only each round's records.

Clients with fewer samples than a batch get masked batch slots, so every client
runs the same compiled program. The batch indices of client ``c`` in round ``r``
are a pure function of ``(seed, r, c)``: a resumed run trains on exactly the same
batches, and the streamed store can fetch a round before it starts.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Any, Sequence

import jax
import numpy as np
from absl import logging

from privateyes_jax.data import base


@dataclasses.dataclass(frozen=True)
class ClientStore:
  """All clients' data, padded to the largest client.

  Attributes:
    images: ``[clients, max_samples, H, W, C]`` uint8 (device).
    labels: ``[clients, max_samples, 2]`` float32 (device).
    head_pose: ``[clients, max_samples, 2]`` float32 (device).
    num_samples: ``[clients]`` host int array: real samples per client.
    names: the clients' person names.
  """
  images: jax.Array
  labels: jax.Array
  head_pose: jax.Array
  num_samples: np.ndarray
  names: tuple[str, ...]

  @property
  def num_clients(self) -> int:
    return len(self.names)

  kind = 'padded'  # Not a field: the store's kind, as `StreamedStore.kind`.

  def arrays(self) -> dict[str, jax.Array]:
    return {'images': self.images, 'labels': self.labels, 'head_pose': self.head_pose}

  # The round-input interface shared with `StreamedStore`.

  def round_inputs(self, client_ids: np.ndarray, indices: np.ndarray):
    """``(arrays, client_ids, indices)`` for the executor's program: the whole store."""
    return self.arrays(), client_ids, indices

  def prefetch(self, client_ids: np.ndarray, indices: np.ndarray) -> None:
    del client_ids, indices  # Everything is on the device already.

  def abstract_arrays(self, num_clients: int, local_steps: int, batch_size: int):
    del num_clients, local_steps, batch_size  # The whole store, whatever the round.
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in self.arrays().items()}

  def device_bytes(self, num_clients: int, local_steps: int, batch_size: int) -> int:
    """Device bytes of the store during a round: the whole padded store."""
    del num_clients, local_steps, batch_size
    return sum(int(v.nbytes) for v in self.arrays().values())

  def close(self) -> None:
    pass


STORE_KINDS = ('auto', 'padded', 'streamed')

# fl.client_store_budget_mib = 0: the padded store may take this share of the device's
# memory (host RAM on CPU); the rest is for params, updates and the training program.
DEFAULT_BUDGET_FRACTION = 0.25


def make_store(people: Sequence[base.PersonData], kind: str = 'padded',
               budget_bytes: int | None = None, device_put=jax.device_put):
  """The clients' store: padded on the device, or streamed (see the module docstring).

  Args:
    people: the clients, in client-id order. A client without samples is an error.
    kind: ``'padded'``, ``'streamed'`` or ``'auto'`` (`choose_store_kind`).
    budget_bytes: for ``'auto'``: device memory the padded store may take; None: a
      quarter of the device's memory (`default_budget_bytes`).
    device_put: how arrays reach the device.
  """
  for p in people:
    if p.num_samples == 0:
      raise base.DatasetError(f'Client {p.person} has no data; remove it from the federation.')
  kind = choose_store_kind(people, kind, budget_bytes)
  if kind == 'streamed':
    return StreamedStore([ArrayRows(p.images, p.labels, p.head_pose) for p in people],
                         [p.person for p in people], device_put=device_put)
  max_n = max(p.num_samples for p in people)

  def padded(field, dtype):
    first = getattr(people[0], field)
    out = np.zeros((len(people), max_n) + first.shape[1:], dtype)
    for i, p in enumerate(people):  # np.asarray: lazy images (on disk) are read here.
      out[i, :p.num_samples] = np.asarray(getattr(p, field))
    return device_put(out)

  return ClientStore(
      images=padded('images', np.uint8), labels=padded('labels', np.float32),
      head_pose=padded('head_pose', np.float32),
      num_samples=np.array([p.num_samples for p in people], np.int64),
      names=tuple(p.person for p in people))


def store_for_config(people: Sequence[base.PersonData], fl_config):
  """`make_store` as ``fl.client_store`` and ``fl.client_store_budget_mib`` ask."""
  budget_mib = fl_config.get('client_store_budget_mib', 0)
  return make_store(people, fl_config.get('client_store', 'auto'),
                    int(budget_mib * (1 << 20)) if budget_mib else None)


def padded_store_bytes(people: Sequence[base.PersonData]) -> int:
  """Bytes of the padded store: every client padded to the largest one."""
  max_n = max(p.num_samples for p in people)
  # uint8 image, float32 label and head pose.
  per_sample = int(np.prod(people[0].images.shape[1:])) + 2 * 4 + 2 * 4
  return len(people) * max_n * per_sample


def default_budget_bytes(device: jax.Device | None = None) -> int:
  """`DEFAULT_BUDGET_FRACTION` of the device's memory (of the host's RAM on CPU)."""
  device = device or jax.local_devices()[0]
  total = None
  try:
    total = (device.memory_stats() or {}).get('bytes_limit')
  except (NotImplementedError, RuntimeError):
    pass
  if not total:
    total = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  return int(DEFAULT_BUDGET_FRACTION * total)


def choose_store_kind(people: Sequence[base.PersonData], kind: str,
                      budget_bytes: int | None = None) -> str:
  """``'padded'`` or ``'streamed'``; ``'auto'``: streamed iff padded exceeds the budget."""
  if kind not in STORE_KINDS:
    raise ValueError(f'fl.client_store must be one of {", ".join(STORE_KINDS)}, got {kind!r}.')
  if kind != 'auto':
    return kind
  budget = default_budget_bytes() if budget_bytes is None else budget_bytes
  padded = padded_store_bytes(people)
  chosen = 'streamed' if padded > budget else 'padded'
  logging.info('Client store: %s (padded would take %.1f MiB; budget %.1f MiB).', chosen,
               padded / (1 << 20), budget / (1 << 20))
  return chosen


@dataclasses.dataclass(frozen=True)
class ArrayRows:
  """One client's samples as host arrays (NumPy arrays, or `np.memmap` views of a file).

  Any object with ``num_samples`` and ``take(positions) -> {images, labels,
  head_pose}`` serves a `StreamedStore` (e.g. `privateyes_jax.data.tfds_source.
  RecordRows`, which reads the prepared array_record files).
  """
  images: np.ndarray  # [n, H, W, C] uint8
  labels: np.ndarray  # [n, 2] float32
  head_pose: np.ndarray  # [n, 2] float32

  @property
  def num_samples(self) -> int:
    return len(self.labels)

  def take(self, positions: np.ndarray) -> dict[str, np.ndarray]:
    # The padded store's dtypes, whatever the people's arrays hold.
    return {'images': np.asarray(self.images[positions], np.uint8),
            'labels': np.asarray(self.labels[positions], np.float32),
            'head_pose': np.asarray(self.head_pose[positions], np.float32)}


class StreamedStore:
  """Clients' samples off the device; each round uploads only its own batches.

  The round's batches are gathered on the host from each client's row source
  (unpadded; in memory, memory-mapped or read from array_record files) into
  ``{images [C, T·B, H, W, C], labels [C, T·B, 2], head_pose [C, T·B, 2]}`` and
  uploaded; `round_inputs` returns them with client ids ``0..C-1`` and indices
  ``t·B + b``, so the executor's program (written for the padded store) gathers
  exactly the samples the padded store would give it.

  `prefetch` starts gathering and uploading a future round in a background thread
  (one short-lived thread per round); `round_inputs` waits for it if it was
  prefetched and does the work itself if not. At most ``max_pending`` rounds are
  held (the oldest is dropped): with the engine's order (prefetch round r + 1, then
  train round r) that is round r in use and round r + 1 in flight, so device memory
  stays at ``max_pending × C × T × B`` samples.
  """
  kind = 'streamed'

  def __init__(self, rows: Sequence[Any], names: Sequence[str], device_put=jax.device_put,
               max_pending: int = 2):
    if len(rows) != len(names):
      raise ValueError(f'{len(rows)} row sources for {len(names)} clients.')
    self._rows = list(rows)
    self.names = tuple(names)
    self.num_samples = np.array([r.num_samples for r in rows], np.int64)
    for name, n in zip(self.names, self.num_samples):
      if n == 0:
        raise base.DatasetError(f'Client {name} has no data; remove it from the federation.')
    first = self._rows[0].take(np.zeros(1, np.int64))
    self._spec = {k: (v.shape[1:], v.dtype) for k, v in first.items()}
    self._device_put = device_put
    self._max_pending = max_pending
    self._lock = threading.Lock()
    self._pending: dict[bytes, tuple[threading.Thread, dict]] = {}

  @property
  def num_clients(self) -> int:
    return len(self.names)

  def gather(self, client_ids: np.ndarray, indices: np.ndarray) -> dict[str, np.ndarray]:
    """The round's samples on the host: ``{field: [C, T·B, ...]}`` (row ``c``: client_ids[c])."""
    c, t, b = indices.shape
    out = {k: np.empty((c, t * b) + shape, dtype) for k, (shape, dtype) in self._spec.items()}
    for row, client in enumerate(np.asarray(client_ids)):
      taken = self._rows[int(client)].take(np.asarray(indices[row]).reshape(-1))
      for k, v in out.items():
        v[row] = taken[k]
    return out

  def _upload(self, client_ids, indices):
    host = self.gather(client_ids, indices)
    arrays = {k: self._device_put(v) for k, v in host.items()}
    jax.block_until_ready(arrays)  # In the prefetch thread: the upload is done there.
    c, t, b = indices.shape
    local_ids = np.arange(c, dtype=np.int32)
    local_idx = np.broadcast_to(np.arange(t * b, dtype=np.int32).reshape(1, t, b), (c, t, b))
    return arrays, local_ids, np.ascontiguousarray(local_idx)

  @staticmethod
  def _key(client_ids, indices) -> bytes:
    ids = np.ascontiguousarray(client_ids, np.int64)
    idx = np.ascontiguousarray(indices, np.int64)
    return repr(idx.shape).encode() + ids.tobytes() + idx.tobytes()

  def prefetch(self, client_ids: np.ndarray, indices: np.ndarray) -> None:
    """Starts gathering and uploading these batches in a background thread."""
    key = self._key(client_ids, indices)
    client_ids, indices = np.array(client_ids), np.array(indices)  # Private copies.
    box: dict[str, Any] = {}

    def work():
      try:
        box['value'] = self._upload(client_ids, indices)
      except BaseException as e:  # pylint: disable=broad-except  (re-raised in round_inputs)
        box['error'] = e

    with self._lock:
      if key in self._pending:
        return
      while len(self._pending) >= self._max_pending:  # Drop the oldest, never used.
        old = self._pending.pop(next(iter(self._pending)))
        old[0].join()
      thread = threading.Thread(target=work, name='client-store-prefetch', daemon=True)
      self._pending[key] = (thread, box)
      thread.start()

  def round_inputs(self, client_ids: np.ndarray, indices: np.ndarray):
    """``(arrays, client_ids, indices)`` for the executor: the round's own batches."""
    with self._lock:
      entry = self._pending.pop(self._key(client_ids, indices), None)
    if entry is None:
      return self._upload(client_ids, indices)
    thread, box = entry
    thread.join()
    if 'error' in box:
      raise box['error']
    return box['value']

  def abstract_arrays(self, num_clients: int, local_steps: int, batch_size: int):
    """Shapes of one round's arrays on the device."""
    n = local_steps * batch_size
    return {k: jax.ShapeDtypeStruct((num_clients, n) + shape, dtype)
            for k, (shape, dtype) in self._spec.items()}

  def device_bytes(self, num_clients: int, local_steps: int, batch_size: int) -> int:
    """Device bytes during a round: ``max_pending`` rounds' batches (see the class)."""
    one = sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize
              for a in self.abstract_arrays(num_clients, local_steps, batch_size).values())
    return self._max_pending * one

  def close(self) -> None:
    """Waits for prefetch threads and drops their batches (idempotent)."""
    with self._lock:
      pending, self._pending = list(self._pending.values()), {}
    for thread, _ in pending:
      thread.join()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def round_indices(seed: int, round_idx: int, client_ids: np.ndarray, num_samples: np.ndarray,
                  local_steps: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Sample indices and masks of each sampled client's local steps this round.

  A client walks through its own data in epochs of fresh permutations (without
  replacement within an epoch) continuing across its local steps; a client with
  fewer samples than ``batch_size`` uses all of them in every step, the rest of
  the batch masked out.

  Returns:
    ``(indices [C, steps, B] int32, mask [C, steps, B] float32)``.
  """
  c = len(client_ids)
  idx = np.zeros((c, local_steps, batch_size), np.int32)
  mask = np.zeros((c, local_steps, batch_size), np.float32)
  for row, client in enumerate(client_ids):
    n = int(num_samples[client])
    rng = np.random.default_rng([seed, 2, round_idx, int(client)])
    if n >= batch_size:
      needed = local_steps * batch_size
      stream = np.concatenate([rng.permutation(n) for _ in range(-(-needed // n))])[:needed]
      idx[row] = stream.reshape(local_steps, batch_size)
      mask[row] = 1.0
    else:
      for t in range(local_steps):
        idx[row, t, :n] = rng.permutation(n)
      mask[row, :, :n] = 1.0
  return idx, mask


def gather_batches(arrays: dict[str, jax.Array], client_id: jax.Array,
                   indices: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
  """One client's local batches ``[steps, B, ...]`` from the device store (inside jit)."""
  return {
      'images': arrays['images'][client_id][indices],
      'labels': arrays['labels'][client_id][indices],
      'head_pose': arrays['head_pose'][client_id][indices],
      'mask': mask,
  }


def iid_reshuffle(people: Sequence[base.PersonData], seed: int) -> list[base.PersonData]:
  """The IID control: pool all samples and deal them back to as many clients, same sizes.

  Each resulting client keeps its original name (so metrics line up) but holds a
  random mix of everyone's samples.
  """
  pooled = base.pool(people)
  ids = np.concatenate([p.sample_id.astype(str) for p in people])
  order = np.random.default_rng([seed, 4]).permutation(len(ids))
  out, start = [], 0
  for p in people:
    take = order[start:start + p.num_samples]
    start += p.num_samples
    out.append(base.PersonData(
        person=p.person, images=pooled['images'][take], labels=pooled['labels'][take],
        head_pose=pooled['head_pose'][take], sample_id=ids[take]))
  return out


def pad_to(x: np.ndarray, length: int) -> np.ndarray:
  """Pads axis 0 to ``length`` with zeros (padded clients have all-zero masks)."""
  if len(x) == length:
    return x
  return np.concatenate([x, np.zeros((length - len(x),) + x.shape[1:], x.dtype)])

