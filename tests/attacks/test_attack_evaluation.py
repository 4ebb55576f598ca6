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
  rows = evaluation.evaluate_people(attacks, people, classifier, num_real=20)
  summary = evaluation.summarize(rows)
  assert set(summary) == set(evaluation.SUMMARY_KEYS)
  assert summary['reidentified'] == summary['top5'] == summary['num_people'] == 4
  assert all(r['predicted'] == p.person for r, p in zip(rows, people))
  assert 0.0 <= summary['ssim'] <= 1.0 and summary['psnr'] > 10.0
  assert summary['gaze_error_deg'] < 10.0 and np.isfinite(summary['gaze_kl'])
  # A person's own real images (as reconstructions) match some real image exactly.
  rows = evaluation.evaluate_people([{'images': p.images[:2], 'gaze': p.labels[:6]}
                                     for p in people], people, classifier, num_real=40)
  assert all(np.isinf(r['psnr']) and r['ssim'] == pytest.approx(1.0, abs=1e-5) for r in rows)


def test_weak_classifier_is_refused(people, classifier):
  with pytest.raises(ValueError, match=r'accuracy 0\.500.*threshold 0\.800'):
    evaluation.check_usable(dataclasses.replace(classifier, accuracy=0.5))
  weak = dataclasses.replace(classifier, accuracy=0.3)
  with pytest.raises(ValueError, match='refusing'):
    evaluation.evaluate_people([{'images': people[0].images[:2], 'gaze': people[0].labels[:5]}],
                               people[:1], weak)
  with pytest.raises(ValueError, match='below the usable threshold'):
    evaluation.train_evaluation_classifier(people, steps=1, batch_size=4, features=(2,),
                                           min_accuracy=0.95)


def test_plots_are_written(tmp_path, people):
  recon = {'plain FL': [p.images[:3] for p in people], 'PrivatEyes': [p.images[-3:] for p in people]}
  evaluation.plot_reconstructions(str(tmp_path / 'r.png'), people, recon)
  evaluation.plot_gaze(str(tmp_path / 'g.png'), people,
                       {'plain FL': [p.labels[:8] for p in people]})
  for name in ('r.png', 'g.png'):
    data = (tmp_path / name).read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 1000
