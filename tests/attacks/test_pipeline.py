"""DualView on real (tiny) training runs: views read back, every threat model, refusals,
and the tests that fail when the attack is broken (each names the mutant it kills)."""

import dataclasses
import json
import os
import shutil

import jax
import numpy as np
import pytest

from privateyes_jax import runner
from privateyes_jax import workdir as workdir_lib
from privateyes_jax.attacks import evaluation
from privateyes_jax.attacks import gan_prior
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


def extras_attack(**overrides):
  """The tiny attack with the reviewer's rows (a, c) and membership inference selected."""
  return tiny_attack(extra_rows=('gradient_inversion', 'sybil'), membership_inference=True,
                     **overrides)


@pytest.fixture(scope='module')
def tiny_out(recorded_attack):
  """One tiny attack of both runs with the extra rows and membership: (summary, attack dir)
  (conftest's `recorded_attack`, whose config is `extras_attack()`; shared with the report
  tests, so nothing here may change it)."""
  return recorded_attack


def test_attack_end_to_end_writes_every_threat_model(runs, tiny_out, tmp_path):
  out, out_dir = tiny_out
  rows = out['threat_models']
  assert list(rows)[:4] == ['plain_fl', 'privateyes', 'privateyes_output_model', 'generic_mpc']
  assert out['attack_seeds'] == [1, 2] and out['federation_seeds'] == [0]
  for name, row in list(rows.items())[:4]:
    assert row['num_people'] == 4 and row['repetitions'] == 2, name
    assert np.isfinite(row['psnr']) and 0 < row['ssim'] <= 1 and row['gaze_kl'] >= 0
    assert row['baseline_kl'] >= 0 and row['label_error'] >= 0
    assert 1 <= row['rank']['mean'] <= 4 and 0 <= row['auc_vs_null']['mean'] <= 1
    assert len(out['per_person'][name]) == 4 * 2
  for name in ('privateyes_output_model', 'generic_mpc'):  # Shared views: never a count.
    assert rows[name]['shared'] and rows[name]['reidentified'] is None
    assert all('reidentified' not in r for r in out['per_person'][name])
  for name in ('plain_fl', 'privateyes'):
    assert rows[name]['reidentified']['trials'] == 8
  with open(os.path.join(out_dir, 'summary.json')) as f:
    saved = json.load(f)
  assert set(saved['threat_models']) == set(rows)
  for png in ('reconstructions.png', 'gaze.png', 'per_person.png'):
    assert os.path.getsize(os.path.join(out_dir, png)) > 1000
  assert os.path.isdir(os.path.join(out_dir, 'prior'))
  table = pipeline.format_table(rows)
  assert 'plain_fl' in table and 'generic_mpc' in table and 'shared view: no count' in table
  assert 'label err (deg)' in table

  # The same attack again reads the finished results back; another config is refused.
  again = pipeline.run_attack(extras_attack(), list(runs), out_dir)
  assert again['threat_models'] == saved['threat_models']
  with pytest.raises(workdir_lib.WorkdirError, match='another config'):
    pipeline.run_attack(extras_attack(seed=7), list(runs), out_dir)
  # Another selection of rows is another attack: refused, never read back stale.
  with pytest.raises(workdir_lib.WorkdirError, match='another config'):
    pipeline.run_attack(tiny_attack(extra_rows=('sybil',), membership_inference=True),
                        list(runs), out_dir)
  assert json.load(open(os.path.join(out_dir, 'summary.json'))) == saved  # Untouched.
  # --overwrite with another prior replaces the results and retrains the prior (in a
  # copy: the attack directory is shared with the report tests).
  copy = str(tmp_path / 'attack')
  shutil.copytree(out_dir, copy)
  out_dir = copy
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


# ----------------------------------------------------------------------------- the attack works
def strong_tiny_attack():
  """The tiny preset with a usable prior and inversion (about 30 s on an idle 2-core CPU).

  The evaluation classifier keeps the default usable threshold (0.8): a weak oracle
  would make "above chance" meaningless.
  """
  config = pipeline.default_config('tiny')
  config.prior.steps = 150
  config.attack.steps = 30
  config.attack.match_layers = ('Dense_0', 'Dense_1')
  config.attack.feature_match = 'each'
  config.background_samples = 64
  return config


def _recording(monkeypatch):
  """Records the reconstructions of every per-client view the pipeline evaluates, in order."""
  seen = []
  real = evaluation.evaluate_people

  def evaluate_people(attacks, people, classifier, **kwargs):
    if not kwargs.get('shared'):
      seen.append([np.asarray(a['images']) for a in attacks])
    return real(attacks, people, classifier, **kwargs)
  monkeypatch.setattr(evaluation, 'evaluate_people', evaluate_people)
  return seen


def _null_row(context):
  """A shared row of pure noise: random prior samples for everybody, whatever the view."""
  images = gan_prior.sample_images(context.prior, jax.random.PRNGKey(context.attack_seed), 4)
  gaze = np.random.default_rng(context.attack_seed).normal(0.0, 0.1, (32, 2))
  return context.evaluate([{'images': np.asarray(images), 'gaze': gaze}] * len(context.people),
                          True)


@pytest.fixture(scope='module')
def strong_plain_fl(runs, tmp_path_factory):
  """The strong tiny attack on the plain-FL run: (summary, reconstructions, attack dir)."""
  mp = pytest.MonkeyPatch()
  seen = _recording(mp)
  out_dir = str(tmp_path_factory.mktemp('strong') / 'attack')
  pipeline.register_row('null_view', _null_row, shared=True)
  try:
    out = pipeline.run_attack(strong_tiny_attack(), [runs[0]], out_dir)
  finally:
    del pipeline.EXTRA_ROWS['null_view']
    mp.undo()
  return out, seen, out_dir


def test_plain_fl_reidentifies_above_chance(strong_plain_fl):
  """Mutants killed: the simulated client step ignores the observed update (e.g.
  ``match = 0`` and no feature target); the feature estimate reads the wrong layer's
  update; re-identification scored against the wrong class ids."""
  out, _, _ = strong_plain_fl
  row = out['threat_models']['plain_fl']
  assert out['classifier_accuracy'] >= evaluation.DEFAULT_MIN_ACCURACY
  reid = row['reidentified']
  assert reid['trials'] == 8 and reid['chance'] == 0.25
  assert reid['rate'] >= 2 * reid['chance'], reid  # Margin: twice chance.
  assert row['rank']['mean'] <= 2.0, row['rank']  # Chance: 2.5.


def test_attack_never_reads_target_images(strong_plain_fl, runs, monkeypatch, tmp_path):
  """Zeroing the targets' images (the data only the evaluation may use) leaves every
  reconstruction identical; only the metrics move. Mutant killed: the attack reads
  target data (e.g. its key, restart choice or feature target from the person's images)."""
  out, seen, out_dir = strong_plain_fl
  real_load = pipeline.data_lib.load_dataset

  def zeroed(data_config):
    dataset = real_load(data_config)
    if data_config.get('first_person', 0):  # The prior's public people (past the run's).
      return dataset
    people = tuple(dataclasses.replace(p, images=np.zeros_like(p.images)) for p in dataset.people)
    return dataclasses.replace(dataset, people=people)
  monkeypatch.setattr(pipeline.data_lib, 'load_dataset', zeroed)
  seen_zeroed = _recording(monkeypatch)
  zero_dir = tmp_path / 'attack'
  shutil.copytree(os.path.join(out_dir, 'prior'), zero_dir / 'prior')  # The same prior.
  config = strong_tiny_attack()
  config.min_classifier_accuracy = 0.0  # No classifier tells zero images apart.
  zero_out = pipeline.run_attack(config, [runs[0]], str(zero_dir))
  assert len(seen_zeroed) == len(seen) == 2  # One evaluation per attack seed.
  for a, b in zip(seen, seen_zeroed):
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
  before, after = out['threat_models']['plain_fl'], zero_out['threat_models']['plain_fl']
  assert before['psnr'] != after['psnr'] and before['ssim'] != after['ssim']


def test_null_view_row_scores_at_chance_under_shared_scoring(strong_plain_fl):
  """A registered row (the extra-row hook) whose "reconstructions" are random prior
  samples, one set for everybody: no count, rank (n+1)/2 exactly, AUC vs null near 0.5.
  Mutants killed: argmax count on a shared view; ties or shared rows counted for the true
  person; the hook's rows left out of the table."""
  out, _, _ = strong_plain_fl
  row = out['threat_models']['null_view']
  assert row['shared'] and row['reidentified'] is None and row['repetitions'] == 2
  assert row['rank']['mean'] == 2.5 and row['rank']['by_construction']
  assert abs(row['auc_vs_null']['mean'] - 0.5) < 0.25
  assert 'null_view' in pipeline.format_table(out['threat_models'])
  assert list(out['threat_models'])[-1] == 'null_view'  # After the DualView rows.


# ----------------------------------------------------------------------------- the extra rows
def test_config_selected_rows_and_membership(tiny_out, runs):
  """The reviewer's rows (issue #14 a, c) selected by the attack config, after DualView's rows,
  scored like them; membership inference per run as its own section. Mutants killed: a row
  registered globally instead of by config; a Sybil recovery that is not the target's update;
  a shared view or the membership section given a count; the selection left out of the
  attack's identity (the end-to-end test checks that a changed selection is refused)."""
  out, _ = tiny_out
  rows = out['threat_models']
  assert list(rows) == ['plain_fl', 'privateyes', 'privateyes_output_model', 'generic_mpc',
                        'gradient_inversion', 'sybil']
  assert not pipeline.EXTRA_ROWS  # Nothing registered globally.
  for name in ('gradient_inversion', 'sybil'):
    row = rows[name]
    assert not row['shared'] and row['repetitions'] == 2 and row['num_people'] == 4
    reid = row['reidentified']
    assert reid['trials'] == 8 and reid['low'] <= reid['rate'] <= reid['high']
    assert reid['chance'] == 0.25
    assert np.isfinite(row['auc_vs_null']['low']) and 1 <= row['rank']['mean'] <= 4
    assert len(out['per_person'][name]) == 8
  sybil = rows['sybil']
  assert sybil['mean_cosine'] > 0.999 and sybil['max_abs_error'] < 1e-2, sybil
  assert all(r['cosine'] > 0.999 for r in out['per_person']['sybil'])
  for name, row in rows.items():  # A shared view never gets a count.
    if row['shared']:
      assert row['reidentified'] is None and row['rank']['by_construction'], name
      assert all('reidentified' not in r for r in out['per_person'][name]), name
  membership = out['membership']
  assert set(membership) == {'plain_fl', 'privateyes'}
  for result in membership.values():
    for attack in ('loss_threshold', 'lira'):
      r = result[attack]
      assert 0 <= r['auc'] <= 1 and r['auc_ci95'][0] <= r['auc'] <= r['auc_ci95'][1]
      assert 0 <= r['p_value'] <= 1 and 'successes' not in r and 'reidentified' not in r
      assert r['num_members'] == len(result['members'])
  assert out['timings']['membership_s'] > 0 and out['timings']['row_sybil_s'] > 0
  table = pipeline.format_table(rows)
  assert table.index('generic_mpc') < table.index('gradient_inversion') < table.index('sybil')
  notes = pipeline.extra_row_notes(rows)
  assert 'limit of the threat model' in notes and 'client authentication' in notes
  from privateyes_jax.attacks import rows as rows_lib
  lines = rows_lib.format_membership(membership)
  assert 'chance 0.50' in lines and lines.count('AUC') == 4
  from privateyes_jax import report
  section = report.privacy_section([report.Attack(path='x', name='attack', summary=out)], {})
  assert 'sybil' in section and 'limit of the threat model' in section
  assert 'Membership inference' in section and section.count('chance 0.50') == 4
  # Round differencing needs record_views='all' and client subsampling: not applicable here.
  context = pipeline.RowContext(rounds=[pipeline.load_round(r) for r in runs], people=[],
                                attack_seed=1, prior=None, evaluate=None, config=extras_attack())
  assert rows_lib.round_differencing_row(context) is None
