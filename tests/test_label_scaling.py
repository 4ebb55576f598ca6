"""Label scaling (issue #17): screen studies in mm train with the default configs; the
statistics are aggregated (securely under PrivatEyes) and recorded; validation people."""

import json
import os

import ml_collections
import numpy as np
import pytest

from experiments.configs import centralized, fedavg, privateyes
from privateyes_jax import data as data_lib
from privateyes_jax import inspection
from privateyes_jax import label_scaling
from privateyes_jax import runner
from privateyes_jax.mpc import ring
from tests import helpers

STUDY = helpers.make_screen_study(num_people=8, samples_per_person=64)


def _config(module, **data):
  c = module.get_config('tiny')  # Tiny model and budget; the methods' own optimizers.
  c.data.update(dict(num_people=8, num_test_people=2, num_val_people=1, **data))
  c.fl.rounds = 6  # 6 x 2 local steps per client; centralized: the preset's 12 steps.
  return c


@pytest.fixture
def study(monkeypatch):
  monkeypatch.setattr(data_lib, 'load_dataset', lambda data_config: STUDY)
  return STUDY


def test_default_configs_train_on_a_screen_study_in_mm(study, tmp_path):
  """Centralized <= 0.6x the mean predictor, FedAvg within 1.25x of it, PrivatEyes trains.

  Without standardisation (label_standardize='off') both end worse than the mean
  predictor on this study (measured: 1.56x and 1.62x).
  """
  assert np.abs(np.concatenate([p.labels for p in study.people])).max() > 200  # mm.
  central = runner.train_and_evaluate(_config(centralized), str(tmp_path / 'c'))
  fed = runner.train_and_evaluate(_config(fedavg), str(tmp_path / 'f'))
  baseline = central['baseline_mean_predictor_error']
  assert central['test_error'] <= 0.6 * baseline, (central['test_error'], baseline)
  assert fed['test_error'] <= 1.25 * central['test_error'], (fed['test_error'],
                                                              central['test_error'])
  assert central['label_scaling']['source'] == 'pooled'
  assert fed['label_scaling']['source'] == 'mean'
  # PrivatEyes with the default client SGD 0.05: no rejected round, same statistics.
  c = _config(privateyes)
  c.fl.rounds = 1
  secure = runner.train_and_evaluate(c, str(tmp_path / 'p'))
  with open(tmp_path / 'f' / 'metrics.jsonl') as f:
    fed_round_1 = json.loads(f.readline())['test_error']
  # Its round 1 is FedAvg's round 1 up to the fixed-point rounding.
  assert secure['test_error'] == pytest.approx(fed_round_1, rel=1e-3)
  assert secure['label_scaling']['source'] == 'privateyes'
  np.testing.assert_allclose(secure['label_scaling']['offset'],
                             fed['label_scaling']['offset'], rtol=1e-5)
  np.testing.assert_allclose(secure['label_scaling']['scale'],
                             fed['label_scaling']['scale'], rtol=1e-5)
  # Recorded for inspection, which reports the logged errors in mm again.
  with open(tmp_path / 'f' / label_scaling.FILE) as f:
    assert json.load(f) == fed['label_scaling']
  for people, key in (('test', 'test_error'), ('val', 'val_error')):
    e = inspection.evaluate(str(tmp_path / 'f'), people=people)
    assert e.mean == pytest.approx(fed[key], rel=1e-5) and e.logged == pytest.approx(e.mean)


def test_secure_statistics_fit_the_ring_and_match_plain_ones(study):
  """Raw sums of squares of mm labels overflow k=32, f=16; the scaled means do not."""
  people = study.people[:5]
  spec = ring.RingSpec(k=32, f=16, s=32)
  sum_sq = max(float(np.sum(p.labels.astype(np.float64) ** 2)) for p in people)
  assert sum_sq > ring.max_abs_value(spec, len(people))  # Why sums are not shared.
  config = _config(privateyes)
  secure = label_scaling.federated_statistics(people, config)
  config.aggregator.name = 'mean'
  plain = label_scaling.federated_statistics(people, config)
  pooled = label_scaling.pooled_statistics(people, 4096.0)
  for got in (secure, plain):
    np.testing.assert_allclose(got.offset, pooled.offset, rtol=1e-5)
    np.testing.assert_allclose(got.scale, pooled.scale, rtol=1e-5)
  # A label beyond the public bound is refused with the fix named.
  config.data.label_bound = 100.0
  with pytest.raises(ValueError, match='label_bound'):
    label_scaling.federated_statistics(people, config)


def test_declared_scale_gaze_default_and_round_trip():
  c = ml_collections.ConfigDict(dict(method='federated', data=dict(
      label_standardize='auto', label_offset=(), label_scale=(150.0,), label_bound=4096.0)))
  declared = label_scaling.resolve(c, 'screen', STUDY)
  assert declared == label_scaling.LabelScaling((0.0, 0.0), (150.0, 150.0), 'declared')
  # Gaze labels (radians) are left alone by default: existing gaze results do not move.
  assert label_scaling.resolve(c, 'gaze', STUDY).is_identity
  y = STUDY.people[0].labels
  s = label_scaling.pooled_statistics(STUDY.people, 4096.0)
  np.testing.assert_allclose(s.denormalize(s.normalize(y)), y, rtol=1e-5, atol=1e-3)
  normed = np.concatenate([p.labels for p in label_scaling.normalize_people(STUDY, s).people])
  assert np.all(np.abs(normed.mean(axis=0)) < 0.1) and np.all(np.abs(normed.std(axis=0) - 1) < 0.1)
  for bad in (dict(label_standardize='yes'), dict(label_scale=(0.0, 1.0)),
              dict(label_bound=-1.0)):
    d = c.data.copy_and_resolve_references()
    d.update(bad)
    with pytest.raises(ValueError, match='data.label_'):
      label_scaling.validate(d)


@pytest.mark.parametrize('protocol,fold', [('holdout', 0), ('loo', 6), ('loo', 2)])
def test_validation_people_are_disjoint(protocol, fold):
  d = ml_collections.ConfigDict(dict(protocol=protocol, fold=fold, num_test_people=2,
                                     num_val_people=2))
  train, val, test = data_lib.split_people_val(STUDY, d)
  names = [set(x.person_names) for x in (train, val, test)]
  assert len(names[1]) == 2 and not (names[0] & names[1] or names[0] & names[2]
                                     or names[1] & names[2])
  assert len(set.union(*names)) == len(STUDY.people)
  assert set(data_lib.split_people(STUDY, d)[0].person_names) == names[0]
  d.num_val_people = 7
  with pytest.raises(ValueError, match='no training person'):
    data_lib.split_people_val(STUDY, d)
