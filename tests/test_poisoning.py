"""The poisoning experiment's wiring at tiny scale (experiments/poisoning.py)."""

import json
import os

from experiments import poisoning
from experiments.configs import poisoning as poisoning_configs


def test_poisoning_table_excludes_the_boosted_client_in_the_clear_and_inside_the_mpc(tmp_path):
  config = poisoning_configs.get_config('tiny')
  out = poisoning.run_poisoning(config, str(tmp_path))
  rows = {r['run']: r for r in out['rows']}
  assert rows['fedavg_boost_normcheck']['excluded_clients'] == ['p00']
  assert rows['fedavg_boost']['excluded_clients'] == []
  assert rows['fedavg_clean_normcheck']['excluded_clients'] == []  # Honest: never excluded.
  run = os.path.join(tmp_path, 'fedavg_boost_normcheck')
  with open(os.path.join(run, 'metrics.jsonl')) as f:
    metrics = [json.loads(line) for line in f if '"round"' in line]
  assert all(m['excluded_clients'] == ['p00'] for m in metrics)  # Every round, by name.
  with open(os.path.join(run, 'summary.json')) as f:
    assert json.load(f)['method'].endswith('+boostx50(1)+normcheck')
  # PrivatEyes: the same bound, checked inside the MPC without opening any update.
  assert rows['privateyes_boost_validity']['check'] == poisoning.MPC_CHECK
  assert rows['privateyes_boost_validity']['excluded_clients'] == ['p00']
  assert rows['privateyes_clean_validity']['excluded_clients'] == []
  assert rows['privateyes_boost']['excluded_clients'] == []  # The MAC check alone is blind.
  run = os.path.join(tmp_path, 'privateyes_boost_validity')
  with open(os.path.join(run, 'metrics.jsonl')) as f:
    metrics = [json.loads(line) for line in f if '"round"' in line]
  assert all(m['excluded_clients'] == ['p00'] and m['mpc/validity_excluded'] == 1
             for m in metrics)
  with open(os.path.join(run, 'summary.json')) as f:
    assert '+validity(C=' in json.load(f)['method']
  assert out['norm_bound'] == config.bound_margin * out['shadow_honest_max_norm']
  with open(os.path.join(tmp_path, 'poisoning.json')) as f:
    assert json.load(f)['rows'][0]['run'] == 'fedavg_clean'
  assert 'fedavg_boost_normcheck' in poisoning.format_table(out)


def test_rows_over_seeds_report_the_mean_and_interval_and_hide_the_extra_seeds(tmp_path,
                                                                              monkeypatch):
  """Every row trains each seed; seeds after the first live under .seeds (the report
  wants one run per method label), the row holds the mean and a 95% t-interval."""
  trained = []

  def fake_train(cfg, directory, overwrite):
    del overwrite
    trained.append(os.path.relpath(directory, tmp_path))
    error = 5.0 + cfg.seed + (30.0 if cfg.fl.malicious.kind == 'sign_flip' else 0.0)
    return {'test_error': error, 'method': 'm', 'baseline_mean_predictor_error': 11.0}

  monkeypatch.setattr(poisoning, '_train', fake_train)
  monkeypatch.setattr(poisoning, '_metrics', lambda d: [{'update_norm/max': 0.5}])
  config = poisoning_configs.get_config('tiny')
  config.seeds = (0, 1, 2)
  config.kinds = ('sign_flip',)
  out = poisoning.run_poisoning(config, str(tmp_path))
  rows = {r['run']: r for r in out['rows']}
  assert 'fedavg_clean' in trained and os.path.join('.seeds', 'fedavg_clean_seed2') in trained
  assert rows['fedavg_sign_flip']['test_errors'] == [35.0, 36.0, 37.0]
  assert rows['fedavg_sign_flip']['test_error'] == 36.0
  low, high = rows['fedavg_sign_flip']['interval']
  assert low < 36.0 < high and abs((high - 36.0) - 4.303 * (1 / 3**0.5)) < 1e-3
  assert '36.00 [' in poisoning.format_table(out)
