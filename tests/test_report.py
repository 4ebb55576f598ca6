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
