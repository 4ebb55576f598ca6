"""DualView evaluation: the re-identification oracle, its refusal when weak, summaries, plots."""

import dataclasses

import numpy as np
import pytest

from privateyes_jax.attacks import evaluation
from privateyes_jax.data import synthetic


@pytest.fixture(scope='module')
def people():
  return synthetic.make_dataset(4, 40).people


@pytest.fixture(scope='module')
def classifier(people):
  return evaluation.train_evaluation_classifier(people, steps=60, batch_size=32,
                                                features=(8, 16), min_accuracy=0.8)


def test_real_images_are_reidentified(people, classifier):
  assert classifier.accuracy >= 0.8
  assert classifier.person_names == tuple(p.person for p in people)
  # The "reconstructions" are each person's held-out real images (never trained on).
  attacks = [{'images': p.images[h][:4], 'gaze': p.labels[h][:6]}
             for p, h in zip(people, classifier.holdout)]
  # The null view's "reconstructions": noise images, nobody's.
  null = np.random.default_rng(0).integers(0, 256, (8, 36, 60, 1)).astype(np.uint8)
  centre = np.mean(np.concatenate([p.labels for p in people]), axis=0)
  rows = evaluation.evaluate_people(attacks, people, classifier, null_images=null, num_real=20,
                                    baseline_centre=centre)
  summary = evaluation.summarize(rows)
  assert summary['reidentified'] == summary['top5'] == 1.0 and summary['num_people'] == 4
  assert summary['rank'] == 1.0 and summary['auc_vs_null'] > 0.9
  assert all(r['predicted'] == p.person for r, p in zip(rows, people))
  assert 0.0 <= summary['ssim'] <= 1.0 and summary['psnr'] > 10.0
  assert summary['label_error'] < 10.0 and np.isfinite(summary['gaze_kl'])
  # The matched baseline: the same samples moved to the centre, so only the mean error differs.
  assert all(np.isfinite(r['baseline_kl']) and r['baseline_label_error'] >= 0 for r in rows)
  # A shared view: no count, whatever it shows.
  shared = evaluation.evaluate_people([attacks[0]] * 4, people, classifier, null_images=null,
                                      shared=True, num_real=20)
  assert all('reidentified' not in r and 'top5' not in r for r in shared)
  assert sorted(r['rank'] for r in shared) == [1.0, 2.0, 3.0, 4.0]
  # A person's own real images (as reconstructions) match some real image exactly.
  rows = evaluation.evaluate_people([{'images': p.images[:2], 'gaze': p.labels[:6]}
                                     for p in people], people, classifier, null_images=null,
                                    num_real=40)
  assert all(np.isinf(r['psnr']) and r['ssim'] == pytest.approx(1.0, abs=1e-5) for r in rows)


def test_weak_classifier_is_refused(people, classifier):
  with pytest.raises(ValueError, match=r'accuracy 0\.500.*threshold 0\.800'):
    evaluation.check_usable(dataclasses.replace(classifier, accuracy=0.5))
  weak = dataclasses.replace(classifier, accuracy=0.3)
  with pytest.raises(ValueError, match='refusing'):
    evaluation.evaluate_people([{'images': people[0].images[:2], 'gaze': people[0].labels[:5]}],
                               people[:1], weak, null_images=people[1].images[:2])
  with pytest.raises(ValueError, match='below the usable threshold'):
    evaluation.train_evaluation_classifier(people, steps=1, batch_size=4, features=(2,),
                                           min_accuracy=0.95)


def test_screen_labels_are_scored_in_their_own_unit():
  """View 2 with screen targets (e.g. mm): Euclidean error of the centres, never degrees.
  Mutant killed: the angular error applied to screen labels (issue #14: "126 deg" for mm)."""
  from privateyes_jax import metrics  # pylint: disable=g-import-not-at-top
  true = np.array([[100.0, 50.0], [110.0, 60.0], [90.0, 40.0]])
  assert metrics.recovered_label_error(true + [30.0, 40.0], true, 'screen') == pytest.approx(50.0)
  assert metrics.label_unit('screen', 'mm') == 'mm' and metrics.label_unit('gaze') == 'deg'
  moved = evaluation.baseline_samples(true, np.array([0.0, 0.0]), 'screen')
  np.testing.assert_allclose(moved.mean(axis=0), [0.0, 0.0], atol=1e-4)
  np.testing.assert_allclose(np.cov(moved.T), np.cov(true.T), rtol=1e-5)  # Same spread.


def test_plots_are_written(tmp_path, people):
  recon = {'plain FL': [p.images[:3] for p in people], 'PrivatEyes': [p.images[-3:] for p in people]}
  evaluation.plot_reconstructions(str(tmp_path / 'r.png'), people, recon)
  evaluation.plot_gaze(str(tmp_path / 'g.png'), people,
                       {'plain FL': [p.labels[:8] for p in people]})
  for name in ('r.png', 'g.png'):
    data = (tmp_path / name).read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 1000
