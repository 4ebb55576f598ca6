"""Person-level membership inference on the output model (issue #14): loss threshold and LiRA."""

import jax
import ml_collections
import numpy as np
import pytest

from privateyes_jax import training
from privateyes_jax.attacks import membership
from privateyes_jax.data import synthetic
from privateyes_jax.models import gaze

N_MEMBERS, N_NON, N_AUX, SAMPLES = 12, 12, 4, 8


@pytest.fixture(scope='module')
def setting():
  people = synthetic.make_dataset(N_MEMBERS + N_NON + N_AUX, SAMPLES, seed=3).people
  members = list(people[:N_MEMBERS])
  nonmembers = list(people[N_MEMBERS:N_MEMBERS + N_NON])
  aux = list(people[N_MEMBERS + N_NON:])
  model = gaze.GazeNet(conv_features=(4, 8), hidden=32, padding='VALID')
  opt = ml_collections.ConfigDict({'name': 'adam', 'learning_rate': 3e-3})
  train = membership.make_trainer(model, opt, steps=100, batch_size=32)
  predict = training.predict_fn(model.apply)
  overfit = train(jax.random.PRNGKey(0), members)  # 96 samples, 100 steps of 32: memorised.
  neither = train(jax.random.PRNGKey(0), aux)  # Trained on neither members nor non-members.
  return predict, members, nonmembers, aux, train, overfit, neither


def test_auc_summary_statistics():
  """Kills: an AUC that counts ties as wins or ignores the score direction, and a
  bootstrap interval or p-value detached from the data."""
  s = membership.auc_summary([3.0, 4.0, 5.0], [0.0, 1.0, 2.0])
  assert s['auc'] == 1.0 and s['auc_ci95'] == [1.0, 1.0] and s['p_value'] < 0.06
  assert s['tpr_at_fpr'] == {'0.01': 1.0, '0.1': 1.0}
  assert s['fpr_resolution'] == pytest.approx(1 / 3)
  r = membership.auc_summary([0.0, 1.0, 2.0], [3.0, 4.0, 5.0])
  assert r['auc'] == 0.0 and r['p_value'] > 0.9 and r['tpr_at_fpr']['0.01'] == 0.0
  assert membership.auc_summary([1.0, 1.0], [1.0, 1.0])['auc'] == 0.5
  rng = np.random.default_rng(0)
  null = membership.auc_summary(rng.normal(size=200), rng.normal(size=200))
  lo, hi = null['auc_ci95']
  assert lo < 0.5 < hi and hi - lo < 0.15 and null['p_value'] > 0.05
  assert membership.tpr_at_fpr([5, 6, 7, 0.5], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 0.1) == 0.0
  assert membership.tpr_at_fpr([5, 6, 9.5, 0.5], np.arange(10.0), 0.1) == 0.25


def test_loss_threshold(setting):
  """Kills: a score of +loss instead of −loss (members' low loss would read as
  non-membership: AUC near 0 on the overfitted model)."""
  predict, members, nonmembers, _, _, overfit, neither = setting
  hit = membership.loss_threshold(predict, overfit, members, nonmembers)
  null = membership.loss_threshold(predict, neither, members, nonmembers)
  print('loss threshold: overfitted', hit['auc'], hit['auc_ci95'], hit['p_value'],
        '| trained on neither', null['auc'], null['auc_ci95'], null['p_value'])
  assert hit['auc'] >= 0.9 and hit['auc_ci95'][0] > 0.5 and hit['p_value'] < 0.01
  assert null['auc_ci95'][0] < 0.5 < null['auc_ci95'][1] and null['auc'] < hit['auc']
  assert len(hit['member_scores']) == N_MEMBERS and hit['num_nonmembers'] == N_NON


def test_lira(setting):
  """Kills: swapping the IN and OUT Gaussians of the likelihood ratio (AUC below 0.5
  on the overfitted model)."""
  predict, members, nonmembers, aux, train, overfit, neither = setting
  kwargs = dict(num_shadows=4, seed=0)
  hit = membership.lira(predict, overfit, members, nonmembers, aux, train, **kwargs)
  print('LiRA: overfitted', hit['auc'], hit['auc_ci95'], hit['p_value'], hit['tpr_at_fpr'])
  assert hit['auc'] >= 0.9 and hit['auc_ci95'][0] > 0.5 and hit['p_value'] < 0.01
  assert hit['attack'] == 'lira' and hit['num_shadows'] == 4
  with pytest.raises(ValueError, match='candidates too'):
    membership.lira(predict, overfit, members, nonmembers, aux + members[:1], train, **kwargs)


def test_lira_scores_null_and_signal():
  """LiRA's ratio on synthetic statistics: a target statistic drawn like the OUT
  shadows scores at chance; one drawn like the IN shadows scores above it."""
  rng = np.random.default_rng(0)
  n, shadows = 60, 16
  difficulty = rng.normal(size=n)  # Per-person hardness, shared by every model.
  in_mask = np.stack([rng.permutation(shadows) < shadows // 2 for _ in range(n)], axis=1)
  shadow = difficulty + np.where(in_mask, -1.0, 0.0) + 0.3 * rng.normal(size=(shadows, n))
  member = np.arange(n) < n // 2
  target = difficulty + np.where(member, -1.0, 0.0) + 0.3 * rng.normal(size=n)
  scores = membership.lira_scores(target, shadow, in_mask)
  signal = membership.auc_summary(scores[member], scores[~member])
  offline = membership.lira_scores(target, shadow, in_mask, offline=True)
  null_target = difficulty + 0.3 * rng.normal(size=n)
  null = membership.lira_scores(null_target, shadow, in_mask)
  null_s = membership.auc_summary(null[member], null[~member])
  assert signal['auc'] > 0.95 and membership.auc_summary(offline[member],
                                                          offline[~member])['auc'] > 0.9
  assert null_s['auc_ci95'][0] < 0.5 < null_s['auc_ci95'][1]
  # The uncalibrated loss threshold does worse: difficulty (sd 1) swamps the effect.
  raw = membership.auc_summary(-target[member], -target[~member])
  assert raw['auc'] < signal['auc']


def test_output_model_membership_of_a_recorded_run(recorded_runs):
  """Wiring on a real (tiny) run: its 4 training people vs its 2 held-out people."""
  from privateyes_jax.attacks import pipeline  # pylint: disable=g-import-not-at-top
  recorded = pipeline.load_round(recorded_runs[1])  # PrivatEyes: the output model only.
  aux = synthetic.make_dataset(2, 8, seed=5, first_person=40).people
  out = membership.output_model_membership(recorded, aux, num_shadows=2, shadow_steps=5,
                                           num_bootstrap=200)
  assert out['members'] == ['p00', 'p01', 'p02', 'p03'] and out['nonmembers'] == ['p04', 'p05']
  for name in ('loss_threshold', 'lira'):
    s = out[name]
    assert 0.0 <= s['auc_ci95'][0] <= s['auc_ci95'][1] <= 1.0 and 0.0 <= s['auc'] <= 1.0
    assert 0 < s['p_value'] <= 1
    assert s['num_members'] == 4 and s['num_nonmembers'] == 2
  with pytest.raises(ValueError, match='candidates too'):
    membership.output_model_membership(recorded, synthetic.make_dataset(1, 8).people,
                                       num_shadows=2, shadow_steps=2)
