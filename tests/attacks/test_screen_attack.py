"""DualView and membership inference on an own-study run with screen targets in mm,
with a prior of the study's other people (issue #14): view 2 is scored in the run's
unit, from the model's standardised label space."""

import numpy as np
import pytest

from privateyes_jax import label_scaling
from privateyes_jax import metrics
from privateyes_jax import runner
from privateyes_jax.attacks import pipeline
from tests import helpers

RUN_PEOPLE = tuple(f'p{i:02d}' for i in range(6))  # 4 clients + 2 held out.
PRIOR_PEOPLE = ('p06', 'p07', 'p08', 'p09')  # Other people of the same study.


@pytest.fixture(scope='module')
def screen_attack(tmp_path_factory):
  root = tmp_path_factory.mktemp('screen_attack')
  raw = str(root / 'raw')
  helpers.write_screen_study(raw, helpers.make_screen_study(num_people=10,
                                                            samples_per_person=48))
  study = dict(name='own_study', source='tfds', manual_dir=raw, data_dir=str(root / 'tfds'),
               label_kind='screen')
  config = helpers.tiny_config(**{'method': 'federated', 'record_views': 'last',
                                  'fl.rounds': 4, 'optimizer.name': 'sgd',
                                  'optimizer.learning_rate': 0.05})
  config.data.update(dict(people=RUN_PEOPLE, num_test_people=2, **study))
  run_dir = str(root / 'fedavg')
  runner.train_and_evaluate(config, run_dir)
  attack = pipeline.default_config('tiny')
  attack.min_classifier_accuracy = 0.0  # Wiring and units, not strength.
  attack.attack_seeds = 1
  attack.membership_inference = True
  attack.prior.data.update(dict(people=PRIOR_PEOPLE, **study))
  out = pipeline.run_attack(attack, [run_dir], str(root / 'attack'))
  return run_dir, out


def test_view_2_is_scored_in_the_runs_unit(screen_attack):
  """Mutant killed: view 2 left in the model's standardised space (the recovered points
  near (0, 0) scored against targets in mm, the bug the review found for screen runs)."""
  run_dir, out = screen_attack
  scaling = label_scaling.load(run_dir)
  assert scaling.source == 'mean' and out['label_kind'] == 'screen'
  recorded = pipeline.load_round(run_dir)
  assert recorded.label_scaling == scaling
  # Every person's targets sit 120 mm or more from (0, 0) (helpers.make_screen_study):
  # the error of a centre left at the standardised origin.
  origin_error = {p.person: metrics.recovered_label_error(np.zeros((3, 2)), p.labels, 'screen')
                  for p in recorded.clients}
  rows = out['per_person']['plain_fl']
  recovered = np.mean([r['label_error'] for r in rows])
  unscaled = np.mean([origin_error[r['person']] for r in rows])
  assert recovered < 0.7 * unscaled, (recovered, unscaled)
  # The matched baseline's centre is the prior's people's mean target (the same study, mm).
  assert out['baseline_centre'] == 'public auxiliary people\'s mean label'
  assert out['gaze_distribution'] == 'aux_gaussian'


def test_membership_in_the_trained_label_space(screen_attack):
  """Membership losses are the run's training loss (standardised labels): O(1), not mm.
  Mutant killed: raw mm labels against standardised predictions (losses in the hundreds)."""
  run_dir, out = screen_attack
  (result,) = out['membership'].values()
  assert result['members'] == list(RUN_PEOPLE[:4])
  assert result['nonmembers'] == list(RUN_PEOPLE[4:])
  for attack in ('loss_threshold', 'lira'):
    assert 0.0 <= result[attack]['auc'] <= 1.0
  from privateyes_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from privateyes_jax.attacks import membership  # pylint: disable=g-import-not-at-top
  recorded = pipeline.load_round(run_dir)
  config = recorded.config.copy_and_resolve_references()
  config.data.people = PRIOR_PEOPLE
  shadow_people = list(data_lib.load_dataset(config.data).people)
  direct = membership.output_model_membership(recorded, shadow_people, num_shadows=2,
                                              shadow_steps=4)
  losses = -np.concatenate([direct['loss_threshold']['member_scores'],
                            direct['loss_threshold']['nonmember_scores']])
  assert np.all((losses > 0) & (losses < 5.0)), losses
  # No shadows (the demo): the loss threshold alone, the same scores, no LiRA.
  alone = membership.output_model_membership(recorded, shadow_people, num_shadows=0)
  assert 'lira' not in alone
  assert alone['loss_threshold']['auc'] == direct['loss_threshold']['auc']
