"""The accuracy–privacy curve's wiring at tiny scale (experiments/dp_curve.py)."""

import json
import math
import os

import pytest

from experiments import dp_curve
from experiments.configs import dp_curve as dp_curve_configs
from privateyes_jax import report


def test_presets_and_refusals():
  for preset in dp_curve_configs.PRESETS:
    c = dp_curve_configs.get_config(preset)
    assert math.isinf(c.epsilons[-1]) and c.train.aggregator.dp.enabled
    n = c.train.data.num_people - c.train.data.num_test_people
    assert c.train.aggregator.dp.delta < 1 / n  # The accountant refuses δ >= 1/N.
    assert c.attack.prior.data.first_person >= c.train.data.num_people  # Prior: other people.
  with pytest.raises(ValueError, match='Unknown dp_curve preset'):
    dp_curve_configs.get_config('huge')
  c = dp_curve_configs.get_config('tiny')
  inf = dp_curve.point_config(c, 'privateyes', math.inf, 0)
  assert inf.aggregator.dp.noise_multiplier == 0 and inf.aggregator.dp.target_epsilon == 0
  assert dp_curve.point_config(c, 'mean', 2.0, 1).aggregator.dp.target_epsilon == 2.0
  with pytest.raises(ValueError, match='Unknown aggregator'):
    dp_curve.point_config(c, 'median', 2.0, 0)
  with pytest.raises(ValueError, match='must be > 0'):
    dp_curve.point_config(c, 'mean', 0.0, 0)


def test_isolation_from_public_cohorts():
  c = dp_curve_configs.get_config('cpu').train
  # 20 cohorts of ~16 among 200 clients span 20 dimensions: nobody is isolated.
  result = dp_curve.isolated_by_differencing(c, 0, 0)
  assert result['isolated'] == 0 and result['clients'] == 200


def test_tiny_curve_end_to_end(tmp_path):
  config = dp_curve_configs.get_config('tiny')
  root = str(tmp_path / 'curve')
  curve = dp_curve.run_curve(config, root)
  with open(os.path.join(root, dp_curve.CURVE_FILE)) as f:
    assert json.load(f)['points'] == json.loads(json.dumps(curve['points']))
  by = {(p['aggregator'], p['epsilon_target']): p for p in curve['points']}
  assert set(by) == {(a, e) for a in ('mean', 'privateyes') for e in ('4', 'inf')}
  for agg in ('mean', 'privateyes'):
    assert by[(agg, '4')]['epsilon'] == pytest.approx(4.0, rel=0.05)
    assert by[(agg, '4')]['noise_multiplier'] > 0 and by[(agg, 'inf')]['noise_multiplier'] == 0
    assert by[(agg, 'inf')]['epsilon'] is None  # ε = ∞ (JSON has no infinity).
    assert by[(agg, '4')]['membership'][0]['num_nonmembers'] == 4
  assert by[('mean', '4')]['dualview']['plain_fl']['reidentified']['trials'] == 2
  assert by[('privateyes', '4')]['dualview']['privateyes_output_model']['reidentified'] is None
  assert by[('privateyes', '4')]['dualview']['privateyes_output_model']['view'].startswith(
      'opened aggregate less')  # DP: the coalition subtracted its own noise.
  assert [d['window'] for d in by[('privateyes', '4')]['round_differencing']] == [4, 0]
  assert 'round_differencing' not in by[('mean', '4')]
  table = dp_curve.format_table(curve)
  assert 'privateyes' in table and 'inf' in table
  assert curve['num_clients'] == 10
  # The report of the curve's directory, as the command builds it: the ε = ∞ runs' null ε
  # (JSON has no infinity) once crashed its DP section's figure.
  text = open(report.build_report([root], os.path.join(root, 'report'))).read()
  assert '## Accuracy–privacy curve' in text and '## Differential privacy' in text
  # A rerun reads every run and attack back.
  again = dp_curve.run_curve(config, root)
  assert again['points'] == curve['points']
  assert again['timings']['total_s'] < curve['timings']['total_s']


def test_each_training_seed_is_attacked_on_its_own_clients_and_the_rows_pool_them(
    tmp_path, monkeypatch):
  # Poisson sampling gives each training seed's last round other clients, and the
  # pipeline refuses target runs that attack different people: the curve attacks each
  # federation alone and pools the per-person rows. Mutant killed: one attack over every
  # seed's runs (the pipeline's "attack different clients" error), or a row that keeps
  # only the first seed's people (2/2 below instead of 3/4).
  config = dp_curve_configs.get_config('tiny')
  config.seeds = (0, 1)
  calls = []

  def fake_attack(attack_config, targets, directory, **kw):
    seed = len(calls)
    calls.append((tuple(targets), directory))
    rows = [{'person': f'p{seed}{i}', 'attack_seed': 0, 'federation': seed,
             'reidentified': hit, 'rank': 1.0 if hit else 2.0, 'auc_vs_null': 0.9 if hit else 0.4}
            for i, hit in enumerate([True, True] if seed == 0 else [True, False])]
    people = [{**r, 'reidentified': None} for r in rows]
    return {'threat_models': {'plain_fl': {'shared': False, 'view': 'individual updates'},
                              'privateyes_output_model': {'shared': True, 'view': 'model'}},
            'per_person': {'plain_fl': rows, 'privateyes_output_model': people},
            'membership': {'plain_fl': {'loss_threshold': {'auc': 0.5}}},
            'num_people': 2, 'classifier_accuracy': 0.9}

  monkeypatch.setattr(dp_curve.pipeline, 'run_attack', fake_attack)
  root = str(tmp_path)
  out = dp_curve.attack_point(config, root, 4.0, os.path.join(root, 'attack', 'eps4'),
                              os.path.join(root, 'prior'), {}, False)
  assert [c[1] for c in calls] == [os.path.join(root, 'attack', 'eps4', f'seed{s}')
                                   for s in (0, 1)]
  for s, (targets, _) in enumerate(calls):
    assert targets == tuple(dp_curve.point_workdir(root, agg, 4.0, s, (0, 1))
                            for agg in ('mean', 'privateyes'))
  row = out['threat_models']['plain_fl']
  assert (row['reidentified']['successes'], row['reidentified']['trials']) == (3, 4)
  assert row['federations'] == 2 and row['rank']['units'] == 4
  assert row['view'] == 'individual updates'
  assert out['threat_models']['privateyes_output_model']['reidentified'] is None
  assert sorted(out['membership']) == ['plain_fl (seed 0)', 'plain_fl (seed 1)']
  # Federations attacking different numbers of clients have no common chance level.
  calls.clear()
  sizes = iter([2, 1])
  monkeypatch.setattr(dp_curve.pipeline, 'run_attack',
                      lambda *a, **kw: {**fake_attack(*a, **kw), 'num_people': next(sizes)})
  with pytest.raises(ValueError, match='different numbers of clients'):
    dp_curve.attack_point(config, root, 4.0, os.path.join(root, 'x'), 'prior', {}, False)
