"""The report: every table and figure from tiny runs and an attack; incomparable runs refused."""

import json
import os
import shutil

import pytest

from privateyes_jax import report
from privateyes_jax import runner
from privateyes_jax.attacks import pipeline
from tests.helpers import tiny_config


@pytest.fixture(scope='module')
def demo_like(recorded_runs, recorded_attack, tmp_path_factory):
  """runs/: centralized, the recorded fedavg and privateyes runs, and their DualView attack
  (conftest's, with the reviewer's rows and membership inference)."""
  root = tmp_path_factory.mktemp('report_runs')
  runs = root / 'runs'
  runner.train_and_evaluate(tiny_config(), str(runs / 'centralized'))
  for src in recorded_runs:
    shutil.copytree(src, runs / os.path.basename(src), ignore=shutil.ignore_patterns('views'))
  shutil.copytree(recorded_attack[1], runs / 'attack')
  return runs


def test_report_has_every_table_and_figure(demo_like, tmp_path):
  out = str(tmp_path / 'report')
  path = report.build_report([str(demo_like)], out)
  text = open(path).read()
  for section in ('## Accuracy', '## Cost', '## Error versus round', '## Privacy (DualView)'):
    assert section in text, section
  # Accuracy: every method with its logged error, the baseline, the per-person table.
  for name in ('centralized', 'fedavg', 'privateyes'):
    summary = json.load(open(demo_like / name / 'summary.json'))
    assert f'| {name} | {summary["test_error"]:.2f} |' in text
  assert 'mean predictor (baseline)' in text and 'Per person, synthetic' in text
  # Cost: PrivatEyes against plain FL, bytes, and the labelled generic-MPC estimate.
  cost = text[text.index('## Cost'):text.index('## Error versus round')]
  assert '| synthetic | privateyes | 3 |' in cost and 'ESTIMATE' in cost
  privateyes_row = [l for l in cost.splitlines() if '| privateyes |' in l][0]
  assert privateyes_row.count('–') == 0  # Every column filled: server bytes, rounds, estimates.
  # Privacy: one row per threat model with intervals, then chance and the no-leakage reference.
  privacy = text[text.index('## Privacy'):]
  positions = [privacy.index(cell) for cell in (
      '| plain_fl |', '| privateyes |', '| privateyes_output_model |', '| generic_mpc |',
      'Chance: re-identified 1/4')]
  assert positions == sorted(positions)  # In threat-model order, whatever the JSON order.
  assert 'shared view: no count' in privacy and '95% CI' in privacy
  # Figures exist and are linked.
  for fig in ('error_vs_round_synthetic.png', 'runs_attack_reconstructions.png',
              'runs_attack_gaze.png', 'runs_attack_per_person.png'):
    assert os.path.getsize(os.path.join(out, 'figures', fig)) > 1000, fig
    assert f'figures/{fig}' in text, fig


def test_report_refuses_incomparable_runs_and_bad_paths(demo_like, tmp_path):
  other = tmp_path / 'other'
  runner.train_and_evaluate(tiny_config(**{'data.num_test_people': 3}), str(other))
  with pytest.raises(report.ReportError, match='different held-out people') as e:
    report.build_report([str(demo_like / 'centralized'), str(other)], str(tmp_path / 'r'))
  assert str(other) in str(e.value)
  twin = tmp_path / 'twin'
  shutil.copytree(demo_like / 'centralized', twin / 'centralized')
  with pytest.raises(report.ReportError, match="share the method label"):
    report.build_report([str(demo_like / 'centralized'), str(twin)], str(tmp_path / 'r'))
  # The same method under another training seed is a repetition: both are reported,
  # each labelled with its seed (a curve's seeds, experiments/dp_curve.py).
  config_path = twin / 'centralized' / 'config.json'
  config = json.loads(config_path.read_text())
  config['seed'] = int(config.get('seed', 0)) + 1
  config_path.write_text(json.dumps(config))
  text = open(report.build_report([str(demo_like / 'centralized'), str(twin)],
                                  str(tmp_path / 'r'))).read()
  method = json.loads((twin / 'centralized' / 'summary.json').read_text())['method']
  assert f'{method} (seed {config["seed"] - 1})' in text
  assert f'{method} (seed {config["seed"]})' in text
  with pytest.raises(report.ReportError, match='not a directory'):
    report.build_report([str(tmp_path / 'missing')], str(tmp_path / 'r'))
  (tmp_path / 'empty').mkdir()
  with pytest.raises(report.ReportError, match='holds no training run'):
    report.build_report([str(tmp_path / 'empty')], str(tmp_path / 'r'))


def test_unfinished_run_is_listed_not_tabulated(demo_like, tmp_path):
  running = tmp_path / 'running'
  runner.train_and_evaluate(tiny_config(), str(running), halt_after=4)
  path = report.build_report([str(demo_like / 'centralized'), str(running)], str(tmp_path / 'r'))
  text = open(path).read()
  assert 'Unfinished runs' in text and str(running) in text
  # The finished run only: its line in the runs list and its accuracy row.
  assert sum(line.startswith('| centralized |') for line in text.splitlines()) == 2


def test_poisoning_table_and_hidden_shadow_runs(demo_like, tmp_path):
  """poisoning.json becomes a table; a hidden directory (the shadow run of other people)
  is not reported, so it cannot make the runs incomparable."""
  root = tmp_path / 'poisoning'
  shutil.copytree(demo_like / 'centralized', root / 'centralized')
  shadow = root / '.shadow_clean'
  shutil.copytree(demo_like / 'centralized', shadow)
  summary = json.loads((shadow / 'summary.json').read_text())
  summary['test_people'] = ['someone_else']
  (shadow / 'summary.json').write_text(json.dumps(summary))
  table = {'attackers': [0, 1], 'factor': 15.0, 'rounds': 30, 'norm_bound': 0.25,
           'shadow_data_seed': 1000, 'shadow_honest_max_norm': 0.17,
           'rows': [{'run': 'fedavg_boost', 'attack': 'boost', 'check': 'none',
                     'test_error': 9.5, 'mean_predictor_error': 11.7, 'excluded_clients': []},
                    {'run': 'fedavg_boost_normcheck', 'attack': 'boost', 'check': 'norm bound',
                     'test_error': 4.5, 'excluded_clients': ['p00', 'p01']},
                    {'run': 'privateyes_boost', 'attack': 'boost', 'check': 'none',
                     'test_error': None, 'failed': 'ring overflow', 'excluded_clients': []}]}
  (root / 'poisoning.json').write_text(json.dumps(table))
  text = open(report.build_report([str(root)], str(tmp_path / 'r'))).read()
  assert '## Poisoning' in text
  assert '| fedavg_boost_normcheck | boost | norm bound | 4.50 | p00, p01 |' in text
  assert '| privateyes_boost | boost | none | failed | – |' in text
  assert 'someone_else' not in text


def _fake_curve() -> dict:
  """A dp_curve.json as experiments/dp_curve.py writes it: two aggregators, ε 4 and ∞."""
  reid = lambda s: {'successes': s, 'trials': 6, 'rate': s / 6, 'low': 0.36 if s == 5 else 0.0,
                    'high': 1.0 if s == 5 else 0.64, 'chance': 1 / 6, 'p_value': 0.5}
  auc = {'mean': 0.52, 'low': 0.40, 'high': 0.64, 'p_value': 0.4, 'chance': 0.5}
  member = [{'run': 'plain_fl', 'auc': 0.51, 'auc_ci95': [0.42, 0.60], 'p_value': 0.4,
             'num_members': 200, 'num_nonmembers': 40}]
  points = []
  for eps, epsilon, err in (('4', 3.98, 11.9), ('inf', None, 8.1)):
    points.append({'aggregator': 'mean', 'epsilon_target': eps, 'epsilon': epsilon,
                   'epsilon_vs_servers': None if epsilon is None else 40.0,
                   'noise_multiplier': 0.0 if epsilon is None else 0.9, 'test_error': err,
                   'mean_predictor_error': 11.2, 'membership': member,
                   'dualview': {'plain_fl': {'reidentified': reid(5), 'auc_vs_null': auc,
                                             'shared': False}}})
    points.append({'aggregator': 'privateyes', 'epsilon_target': eps, 'epsilon': epsilon,
                   'epsilon_vs_servers': None if epsilon is None else 40.0,
                   'noise_multiplier': 0.0 if epsilon is None else 0.9, 'test_error': err + 0.1,
                   'mean_predictor_error': 11.2, 'membership': member,
                   'dualview': {'privateyes': {'reidentified': reid(1), 'auc_vs_null': auc,
                                               'shared': False},
                                'privateyes_output_model': {'auc_vs_null': auc, 'shared': True}},
                   'round_differencing': [{'window': 4, 'isolated': 0, 'clients': 200, 'seed': 0},
                                          {'window': 0, 'isolated': 0, 'clients': 200,
                                           'seed': 0}]})
  return {'preset': 'cpu', 'points': points, 'num_clients': 200, 'sampling_rate': 0.08,
          'rounds': 20, 'delta': 1e-5, 'clip_norm': 0.3, 'seeds': [0], 'attack_people': 6}


def test_report_has_the_dp_curve(tmp_path):
  root = tmp_path / 'dp_curve'
  root.mkdir()
  (root / report.CURVE_FILE).write_text(json.dumps(_fake_curve()))
  path = report.build_report([str(tmp_path)], str(tmp_path / 'report'))
  text = open(path).read()
  assert '## Accuracy–privacy curve (client-level DP)' in text
  # One row per aggregator and ε, each attack with its interval and chance.
  assert '| mean | 4 | 3.98 | 40.00 | 0.900 | 11.90 | 11.20 | plain_fl: 5/6 = 0.83 [0.36, 1.00] ' \
         '(chance 0.17) | 0.52 [0.40, 0.64] | – | 0.51 [0.42, 0.60] | no opened sums |' in text
  assert '| privateyes | inf | ∞ | ∞ | 0.000 |' in text
  # Several training seeds: the error gets its interval.
  curve = _fake_curve()
  curve['points'][0]['test_error_summary'] = {'mean': 11.9, 'low': 10.5, 'high': 13.3,
                                              'p_value': 0.6, 'chance': 11.2}
  (root / report.CURVE_FILE).write_text(json.dumps(curve))
  text = open(report.build_report([str(tmp_path)], str(tmp_path / 'report'))).read()
  assert '| mean | 4 | 3.98 | 40.00 | 0.900 | 11.90 [10.50, 13.30] | 11.20 |' in text
  assert 'privateyes_output_model: 0.52 [0.40, 0.64]' in text
  assert '4 rounds: 0/200; all rounds: 0/200' in text
  assert os.path.exists(tmp_path / 'report' / report.FIGURES_DIR / 'dp_curve_0.png')
