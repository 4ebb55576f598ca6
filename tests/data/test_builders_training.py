"""Every format, prepared from its fixture, trains federated and evaluates through the runner.

Eye datasets (36x60x1) use the tiny GazeNet; face datasets the tiny `FaceGazeNet`
(``model.name='resnet_face'``, screen head for GazeCapture).
"""

import ml_collections
import numpy as np
import pytest

import fixtures_datasets as fx
from experiments.configs import default
from privateyes_jax import runner

MPII = {'people': ('p00', 'p01', 'p02')}
# name -> (fixture writer(root), data fields, model)
FORMATS = {
    'mpiigaze': (fx.write_mpiigaze, dict(MPII, expected_samples_per_person=8), 'eye'),
    'mpiigaze_h5': (lambda root: fx.write_mpiigaze_h5(f'{root}/MPIIGaze.h5'),
                    dict(MPII, expected_samples_per_person=6), 'eye'),
    'own_study': (fx.write_own_study, {}, 'eye'),
    'mpiifacegaze': (fx.write_mpiifacegaze_normalized,
                     dict(MPII, expected_samples_per_person=5, image_size=16), 'gaze'),
    'mpiifacegaze_h5': (lambda root: fx.write_mpiifacegaze_h5(f'{root}/MPIIFaceGaze.h5'),
                        dict(MPII, expected_samples_per_person=4, image_size=16), 'gaze'),
    'mpiifacegaze_raw': (lambda root: fx.write_mpiifacegaze_raw(root, people=('p00', 'p01')),
                         dict(people=('p00', 'p01'), expected_samples_per_person=3,
                              image_size=16), 'gaze'),
    'gazecapture': (fx.write_gazecapture, dict(image_size=16), 'screen'),
}


def _face_model_config(head):
  # One stage keeps XLA's compile time (most of this test's cost) small; the full
  # network is tested in tests/models/test_face.py.
  return ml_collections.ConfigDict(dict(
      name='resnet_face', stem_features=4, stage_features=(4,), blocks_per_stage=(1,),
      norm_groups=2, head=head, head_hidden=8))


@pytest.mark.parametrize('name', sorted(FORMATS))
def test_train_and_evaluate(name, tmp_path):
  writer, fields, model = FORMATS[name]
  writer(str(tmp_path / 'raw'))
  config = default.get_config('tiny')
  config.data.update(dict(name=name, source='tfds', manual_dir=str(tmp_path / 'raw'),
                          data_dir=str(tmp_path / 'tfds'), num_test_people=1, **fields))
  if model != 'eye':
    config.model = _face_model_config(model)
  config.batch_size = 4
  # A federated run (each person a client), through the same runner as the synthetic data.
  config.method = 'federated'
  config.optimizer.name, config.optimizer.learning_rate = 'sgd', 0.01
  config.fl.update(dict(rounds=1, local_steps=2))
  summary = runner.train_and_evaluate(config, str(tmp_path / 'run'))
  assert summary['dataset'] == name and summary['steps'] == 2 and summary['rounds'] == 1
  assert summary['num_people_test'] == 1 and np.isfinite(summary['test_error'])
  assert summary['label_kind'] == ('screen' if name == 'gazecapture' else 'gaze')
  if name == 'gazecapture':  # The official test subject is the one held out.
    assert summary['test_people'] == ['00010']
