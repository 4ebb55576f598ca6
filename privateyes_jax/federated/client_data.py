"""Clients' data on the device, and each round's batch indices.

Every client's samples live in one padded device array (``[clients, max_samples,
...]``), uploaded once; a round only sends small index arrays ``[C, steps, B]`` and
masks, so no image crosses the host-device boundary inside the training loop.
Clients with fewer samples than others are padded; clients with fewer samples than
a batch get masked batch slots, so every client runs the same compiled program.

The batch indices of client ``c`` in round ``r`` are a pure function of
``(seed, r, c)``: a resumed run trains on exactly the same batches.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

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

  def arrays(self) -> dict[str, jax.Array]:
    return {'images': self.images, 'labels': self.labels, 'head_pose': self.head_pose}


def make_store(people: Sequence[base.PersonData], device_put=jax.device_put) -> ClientStore:
  """Pads and uploads the clients' data. A client without samples is an error."""
  for p in people:
    if p.num_samples == 0:
      raise base.DatasetError(f'Client {p.person} has no data; remove it from the federation.')
  max_n = max(p.num_samples for p in people)

  def padded(field, dtype):
    first = getattr(people[0], field)
    out = np.zeros((len(people), max_n) + first.shape[1:], dtype)
    for i, p in enumerate(people):
      out[i, :p.num_samples] = getattr(p, field)
    return device_put(out)

  return ClientStore(
      images=padded('images', np.uint8), labels=padded('labels', np.float32),
      head_pose=padded('head_pose', np.float32),
      num_samples=np.array([p.num_samples for p in people], np.int64),
      names=tuple(p.person for p in people))


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

