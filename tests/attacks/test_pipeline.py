"""DualView on real (tiny) training runs: views read back, every threat model, refusals."""

import dataclasses
import json
import os
import shutil

import jax
import numpy as np
import pytest

from privateyes_jax import runner
from privateyes_jax import workdir as workdir_lib
from privateyes_jax.attacks import pipeline
from privateyes_jax.federated import engine
from tests.federated.test_engine import fl_config


@pytest.fixture(scope='module')
def runs(recorded_runs):
  return recorded_runs


def tiny_attack(**overrides):
  config = pipeline.default_config('tiny')
  config.min_classifier_accuracy = 0.0  # Wiring, not attack strength (see the refusal test).
  for key, value in overrides.items():
    config[key] = value
  return config


def test_views_are_unflattened_to_the_runs_updates(runs):
  plain, secure = runs
  p = pipeline.load_round(plain)
  s = pipeline.load_round(secure)
  assert p.round == s.round == 3 and [c.person for c in p.clients] == ['p00', 'p01', 'p02', 'p03']
  # The output model is the mean of the individual updates (FedAvg, server lr 1, equal weights).
  mean = jax.tree.map(lambda *u: np.mean(np.stack(u), axis=0), *p.individual_updates)
  change = jax.tree.map(np.subtract, p.output_params, p.global_params)
  for a, b in zip(jax.tree.leaves(mean), jax.tree.leaves(change)):
    np.testing.assert_allclose(a, b, atol=1e-6)
  # Same seed: the PrivatEyes run starts its last round from (nearly) the same model, but
  # what its coalition holds of each update is uniform noise over the fixed-point range.
  flat = lambda t: jax.flatten_util.ravel_pytree(t)[0]
  np.testing.assert_allclose(flat(s.global_params), flat(p.global_params), atol=1e-4)
  assert s.individual_updates is None and p.coalition_estimates is None
  update, estimate = flat(p.individual_updates[0]), flat(s.coalition_estimates[0])
  assert np.abs(update).max() < 1.0
  assert np.abs(estimate).mean() > 1000  # Uniform over ±2^15 for k=32, f=16.
  assert abs(np.corrcoef(update, estimate)[0, 1]) < 0.05
  assert [t.threat_model for t in pipeline.threat_targets(p)] == ['plain_fl']
  assert [t.threat_model for t in pipeline.threat_targets(s)] == [
      'privateyes', 'privateyes_output_model', 'generic_mpc']


def test_attack_end_to_end_writes_every_threat_model(runs, tmp_path):
  out_dir = str(tmp_path / 'attack')
  out = pipeline.run_attack(tiny_attack(), list(runs), out_dir)
  rows = out['threat_models']
  assert list(rows) == ['plain_fl', 'privateyes', 'privateyes_output_model', 'generic_mpc']
  for name, row in rows.items():
    assert row['num_people'] == 4, name
    assert 0 <= row['reidentified'] <= row['top5'] <= 4
    assert np.isfinite(row['psnr']) and 0 < row['ssim'] <= 1 and row['gaze_kl'] >= 0
    assert len(out['per_person'][name]) == 4
  with open(os.path.join(out_dir, 'summary.json')) as f:
    saved = json.load(f)
  assert set(saved['threat_models']) == set(rows)
  for key in ('reidentified', 'num_people', 'top5', 'psnr', 'ssim', 'gaze_error_deg',
              'gaze_kl'):
    assert key in saved['threat_models']['plain_fl']
  for png in ('reconstructions.png', 'gaze.png'):
    assert os.path.getsize(os.path.join(out_dir, png)) > 1000
  assert os.path.isdir(os.path.join(out_dir, 'prior'))
  table = pipeline.format_table(rows)
  assert 'plain_fl' in table and 'generic_mpc' in table

  # The same attack again reads the finished results back; another config is refused.
  again = pipeline.run_attack(tiny_attack(), list(runs), out_dir)
  assert again['threat_models'] == saved['threat_models']
  with pytest.raises(workdir_lib.WorkdirError, match='another config'):
    pipeline.run_attack(tiny_attack(seed=7), list(runs), out_dir)
  assert json.load(open(os.path.join(out_dir, 'summary.json'))) == saved  # Untouched.
  # --overwrite with another prior replaces the results and retrains the prior.
  other = tiny_attack()
  other.prior.batch_size = 4  # Not resumable: the old prior would be refused.
  redone = pipeline.run_attack(other, [runs[0]], out_dir, overwrite=True)
  assert list(redone['threat_models']) == ['plain_fl']
  prior_config = json.load(open(os.path.join(out_dir, 'prior', 'prior_config.json')))
  assert prior_config['batch_size'] == 4


def test_finished_attack_is_recognised_after_its_tree_moves(runs):
  """Targets are recorded relative to the attack directory (e.g. a copied runs/demo)."""
  recorded = pipeline.load_round(runs[0])
  def identity(root):
    moved = dataclasses.replace(recorded, run_dir=os.path.join(root, 'fedavg'))
    return pipeline._attack_identity(tiny_attack(), [moved], os.path.join(root, 'attack'))
  assert identity('/a/runs/demo') == identity('/elsewhere/demo_copy')
  assert identity('/a/runs/demo')['targets'][0]['run'] == os.path.join('..', 'fedavg')


def test_run_without_views_is_refused(tmp_path):
  wd = str(tmp_path / 'novews')
  runner.train_and_evaluate(fl_config(**{'fl.rounds': 1}), wd)
  with pytest.raises(pipeline.ViewError, match='no recorded views.*record_views=last'):
    pipeline.run_attack(tiny_attack(), [wd])
  with pytest.raises(pipeline.ViewError, match='not a run workdir'):
    pipeline.load_round(str(tmp_path / 'nothing'))


def test_view_of_another_configuration_is_refused(runs, tmp_path):
  plain, _ = runs
  other = str(tmp_path / 'other')
  shutil.copytree(plain, other)
  config = json.load(open(os.path.join(other, 'config.json')))
  config['optimizer']['learning_rate'] = 0.5  # As if the workdir had been overwritten.
  workdir_lib.write_json(os.path.join(other, 'config.json'), config)
  with pytest.raises(pipeline.ViewError, match='another configuration'):
    pipeline.load_round(other)
  with pytest.raises(pipeline.ViewError, match='no recorded view of round 2'):
    pipeline.load_round(plain, 2)


def test_fingerprint_survives_the_json_round_trip(runs):
  plain, _ = runs
  config = pipeline.load_run_config(plain)
  view = np.load(os.path.join(plain, 'views', 'round_00003.npz'))
  assert engine.config_fingerprint(config) == str(view['config_fingerprint'])


def test_weak_classifier_is_refused(runs, tmp_path):
  config = tiny_attack(min_classifier_accuracy=1.01)  # No classifier can reach it.
  with pytest.raises(ValueError, match='refusing to report re-identification'):
    pipeline.run_attack(config, [runs[0]], str(tmp_path / 'weak'))
  assert not os.path.exists(tmp_path / 'weak' / 'summary.json')
