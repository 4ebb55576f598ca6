"""Label standardisation: train on ``(y - offset) / scale``, report in the dataset's unit.

Screen targets are in millimetres, centimetres or pixels: hundreds or thousands of
units. An L1 loss on raw units gives gradients hundreds of times larger than on gaze
radians, so a client optimizer tuned for gaze (SGD 0.05) diverges in the first round
and Adam barely learns (issue #17). Training therefore sees standardised labels, and
every prediction is mapped back, ``pred * scale + offset``, before any error is
computed: errors, metrics and summaries stay in the dataset's unit.

Where the statistics come from (``data.label_standardize``, ``data.label_offset``,
``data.label_scale``):

* declared: ``data.label_scale`` (and optionally ``data.label_offset``) given in the
  config: public numbers, nothing is computed from anyone's labels;
* centralized runs: from the pooled training labels (the server holds them anyway);
* federated and local-only runs: once, before round 1, by the run's own aggregation.
  Each client contributes two small vectors, one aggregation each:

    pass 1  m_c / B               (its mean label, [2])            -> mean μ
    pass 2  v_c / (2B)^2          (its mean of (y - μ)^2, [2])     -> variance σ²

  with B = ``data.label_bound``, a PUBLIC bound on |label| (default 4096 units), and
  every client weighted equally (each person one vote: their sample counts are never
  sent, not even secret-shared). FedAvg (``aggregator.name='mean'``) and local-only
  runs average them in the clear; PrivatEyes runs through a `SecureAggregator` with
  the run's protocol (mode, servers, k, s, PRG), so the servers learn only μ and σ².

Why this shape rather than sums, sums of squares and counts (the fixed-point range,
docs/DECISIONS.md "Label scaling and validation people"): a raw sum of squares of
labels in the hundreds over thousands of samples (500² × 2560 ≈ 6.4·10^8) does not
fit k=32 with f=16 (|x| < 2^15 = 32768), and sharing counts would reveal how much data
a person has. Per-client means divided by the public bound lie in [-1, 1] and [0, 1],
so C clients sum within ±C; the statistics' aggregation uses the largest f that holds
that sum in the run's k (`ring.default_fractional_bits`; 27 bits for 15 clients at
k=32), so rounding moves μ and σ by ~10^-8 · B. Two passes (mean, then squared
deviations from the opened mean) avoid the cancellation of E[y²] - μ² when |μ| ≫ σ
(e.g. pixel coordinates far from the origin).

Gaze labels (radians, ~±0.5) are not standardised by default
(``label_standardize='auto'``): they are already O(1), and leaving them alone keeps
every existing gaze result bit for bit. ``'on'`` standardises them too, ``'off'``
never standardises anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import jax
import numpy as np

from privateyes_jax.data import base

MODES = ('auto', 'on', 'off')
FILE = 'label_scaling.json'  # In the run's workdir: inspection and evaluation read it.
DEFAULT_BOUND = 4096.0
_MIN_SCALE = 1e-6  # Relative to the bound: a study whose labels barely vary.


@dataclasses.dataclass(frozen=True)
class LabelScaling:
  """``y_train = (y - offset) / scale`` per label axis; predictions map back.

  Attributes:
    offset: ``(2,)`` in the dataset's unit.
    scale: ``(2,)`` > 0, in the dataset's unit.
    source: 'identity', 'declared', 'pooled' (centralized), 'mean' (plain
      aggregation), or the secure aggregation's mode ('privateyes', ...).
  """
  offset: tuple[float, float] = (0.0, 0.0)
  scale: tuple[float, float] = (1.0, 1.0)
  source: str = 'identity'

  @property
  def is_identity(self) -> bool:
    return self.source == 'identity'

  def normalize(self, labels: np.ndarray) -> np.ndarray:
    if self.is_identity:
      return labels
    return ((labels - np.asarray(self.offset, np.float32))
            / np.asarray(self.scale, np.float32)).astype(np.float32)

  def denormalize(self, predictions):
    """Model outputs (standardised) -> the dataset's unit; numpy or jax arrays."""
    if self.is_identity:
      return predictions
    return (predictions * np.asarray(self.scale, np.float32)
            + np.asarray(self.offset, np.float32))

  def to_dict(self) -> dict[str, Any]:
    return {'offset': list(self.offset), 'scale': list(self.scale), 'source': self.source}

  @classmethod
  def from_dict(cls, d: dict) -> 'LabelScaling':
    return cls(tuple(float(v) for v in d['offset']), tuple(float(v) for v in d['scale']),
               str(d['source']))


IDENTITY = LabelScaling()


def normalize_persons(people: Sequence[base.PersonData],
                      scaling: LabelScaling) -> list[base.PersonData]:
  """Each person with their labels standardised (a list; the same people when identity)."""
  if scaling.is_identity:
    return list(people)
  return [dataclasses.replace(p, labels=scaling.normalize(p.labels)) for p in people]


def normalize_people(dataset: base.GazeDataset, scaling: LabelScaling) -> base.GazeDataset:
  """``dataset`` with every person's labels standardised (the training people)."""
  if scaling.is_identity:
    return dataset
  return dataclasses.replace(dataset, people=tuple(normalize_persons(dataset.people, scaling)))


def _pair(value, name: str) -> tuple[float, float]:
  values = tuple(float(v) for v in np.atleast_1d(np.asarray(value, np.float64)))
  if len(values) == 1:
    values = values * 2
  if len(values) != 2 or not all(np.isfinite(values)):
    raise ValueError(f'data.{name} must be one number or two (x, y), got {value!r}.')
  return values


def validate(data_config) -> None:
  """Rejects bad label-scaling fields before any work (called by `runner.validate`)."""
  mode = data_config.get('label_standardize', 'auto')
  if mode not in MODES:
    raise ValueError(f'data.label_standardize must be one of {MODES}, got {mode!r}.')
  if tuple(data_config.get('label_scale', ()) or ()):
    if any(s <= 0 for s in _pair(data_config.label_scale, 'label_scale')):
      raise ValueError(f'data.label_scale must be > 0, got {data_config.label_scale!r}.')
  if tuple(data_config.get('label_offset', ()) or ()):
    _pair(data_config.label_offset, 'label_offset')
  bound = data_config.get('label_bound', DEFAULT_BOUND)
  if not (np.isfinite(bound) and bound > 0):
    raise ValueError(f'data.label_bound must be a positive public bound, got {bound!r}.')


def wanted(data_config, label_kind: str) -> bool:
  """Whether this run standardises its labels."""
  mode = data_config.get('label_standardize', 'auto')
  return mode == 'on' or (mode == 'auto' and label_kind == 'screen')


def client_means(people: Sequence[base.PersonData], center=None) -> np.ndarray:
  """``[clients, 2]``: each client's mean label, or mean of ``(y - center)²``."""
  out = []
  for p in people:
    y = p.labels.astype(np.float64)
    out.append(y.mean(axis=0) if center is None else ((y - center) ** 2).mean(axis=0))
  return np.asarray(out, np.float64)


def _from_moments(mean: np.ndarray, var: np.ndarray, bound: float,
                  source: str) -> LabelScaling:
  std = np.sqrt(np.maximum(var, 0.0))
  std = np.where(std > _MIN_SCALE * bound, std, 1.0)  # Constant labels: only shift them.
  return LabelScaling(tuple(float(v) for v in mean), tuple(float(v) for v in std), source)


def _check_bound(people: Sequence[base.PersonData], bound: float) -> None:
  for p in people:
    worst = float(np.max(np.abs(p.labels))) if p.num_samples else 0.0
    if worst > bound:
      raise ValueError(
          f'Client {p.person} has a label of magnitude {worst:.6g} > data.label_bound='
          f'{bound:g}, the public bound its statistics are scaled by before aggregation. '
          'Raise data.label_bound (e.g. to the screen size in the labels\' unit) or declare '
          'data.label_scale.')


def secure_statistics_aggregator(agg_config, num_clients: int):
  """The run's secure aggregation protocol, sized for per-client statistics in [-1, 1].

  Same mode, servers, k, s and PRG as the run's rounds; every client has weight 1
  (``max_weight=1``); f is the largest that holds ``num_clients`` values of
  magnitude 1 (`ring.default_fractional_bits`). No adversary: the configured one
  deviates in training rounds (its element and client indices refer to model updates).
  """
  from privateyes_jax.mpc import aggregator as mpc_aggregator  # pylint: disable=g-import-not-at-top
  from privateyes_jax.mpc import ring  # pylint: disable=g-import-not-at-top
  k = int(agg_config.k)
  f = ring.default_fractional_bits(k, max(num_clients, 1), 1.0)
  return mpc_aggregator.SecureAggregator.from_config(
      {'k': k, 'f': f, 's': agg_config.s, 'num_servers': agg_config.num_servers,
       'mode': agg_config.name, 'prg': agg_config.get('prg', 'threefry2x64')},
      max_weight=1.0)


def federated_statistics(people: Sequence[base.PersonData], config) -> LabelScaling:
  """μ and σ of the clients' labels by the run's aggregation (module docstring)."""
  from privateyes_jax.federated import aggregators  # pylint: disable=g-import-not-at-top
  bound = float(config.data.get('label_bound', DEFAULT_BOUND))
  _check_bound(people, bound)
  name = 'mean' if config.method == 'local' else config.aggregator.name
  weights = np.ones(len(people), np.float32)
  if name == 'mean':
    def aggregate(values, step):
      del step  # Unused.
      return np.asarray(aggregators.weighted_mean(np.asarray(values, np.float32),
                                                  weights)[0], np.float64)
  else:
    secure = secure_statistics_aggregator(config.aggregator, len(people))
    state = secure.init(jax.random.PRNGKey(config.seed + 3))

    def aggregate(values, step):
      nonlocal state
      key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 4), step)
      state, result = secure.apply(state, np.asarray(values, np.float32), weights, key,
                                   step, record_view=False)
      if not result.ok:
        raise RuntimeError('The secure aggregation of the label statistics aborted: '
                           f'{result.failure}')
      return np.asarray(result.mean_update, np.float64)

  mean = aggregate(client_means(people) / bound, 0) * bound
  var = aggregate(client_means(people, center=mean) / (2 * bound) ** 2, 1) * (2 * bound) ** 2
  return _from_moments(mean, var, bound, name)


def pooled_statistics(people: Sequence[base.PersonData], bound: float) -> LabelScaling:
  """The same person-balanced μ and σ, computed in the clear (centralized runs)."""
  mean = client_means(people).mean(axis=0)
  var = client_means(people, center=mean).mean(axis=0)
  return _from_moments(mean, var, bound, 'pooled')


def resolve(config, label_kind: str, train_people: base.GazeDataset) -> LabelScaling:
  """This run's label scaling: identity, declared, or computed from the training people."""
  data = config.data
  if not wanted(data, label_kind):
    return IDENTITY
  if tuple(data.get('label_scale', ()) or ()):
    offset = (_pair(data.label_offset, 'label_offset')
              if tuple(data.get('label_offset', ()) or ()) else (0.0, 0.0))
    return LabelScaling(offset, _pair(data.label_scale, 'label_scale'), 'declared')
  if config.method == 'centralized':
    return pooled_statistics(train_people.people,
                             float(data.get('label_bound', DEFAULT_BOUND)))
  return federated_statistics(train_people.people, config)


def save(directory: str, scaling: LabelScaling) -> None:
  from privateyes_jax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  if workdir_lib.is_primary():
    workdir_lib.write_json(os.path.join(directory, FILE), scaling.to_dict())


def load(directory: str) -> LabelScaling:
  """The scaling a run recorded; identity for runs without one (gaze, older runs)."""
  path = os.path.join(directory, FILE)
  if not os.path.exists(path):
    return IDENTITY
  with open(path) as f:
    return LabelScaling.from_dict(json.load(f))
