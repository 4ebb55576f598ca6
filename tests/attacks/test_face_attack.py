"""DualView on a face-model run (issue #14: "It works for the eye model, and for the face
model where that run used it"): an own study of 32x32 RGB faces, a tiny `FaceGazeNet`
trained with FedAvg and with PrivatEyes, attacked end to end with a prior of the
study's other people."""

import os

import jax
import ml_collections
import numpy as np
import pytest

from privateyes_jax import runner
from privateyes_jax.attacks import dualview
from privateyes_jax.attacks import evaluation
from privateyes_jax.attacks import pipeline
from privateyes_jax.models import face
from tests import helpers

SIZE = 32
RUN_PEOPLE = tuple(f'p{i:02d}' for i in range(6))  # 4 clients + 2 held out.
PRIOR_PEOPLE = ('p06', 'p07', 'p08')  # Other people of the same study.
TINY_FACE = dict(name='resnet_face', stem_features=4, stage_features=(4, 8),
                 blocks_per_stage=(1, 1), norm_groups=2, spatial_weights=False, head='gaze',
                 head_hidden=8, use_head_pose=False)


def write_face_study(root: str, num_people: int = 9, samples_per_person: int = 16) -> None:
  """An own study (docs/DATASETS.md) of RGB faces: a skin-coloured disc whose pupils move
  with the gaze, one colour and face position per person; labels in radians."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
  for i in range(num_people):
    rng = np.random.default_rng([5, i])
    skin = rng.uniform(90, 230, 3)
    cx, cy = SIZE / 2 + rng.uniform(-3, 3), SIZE / 2 + rng.uniform(-3, 3)
    directory = os.path.join(root, f'p{i:02d}')
    os.makedirs(directory, exist_ok=True)
    rows = ['image,pitch,yaw']
    for j in range(samples_per_person):
      pitch, yaw = rng.uniform(-0.3, 0.3), rng.uniform(-0.4, 0.4)
      image = np.full((SIZE, SIZE, 3), 30.0)
      image[(xx - cx) ** 2 + (yy - cy) ** 2 < 11.0 ** 2] = skin
      for ex in (cx - 5, cx + 5):  # Two eyes; the pupils look where the gaze points.
        px, py = ex - 2.5 * yaw / 0.4, cy - 3 - 2.0 * pitch / 0.3
        image[(xx - px) ** 2 + (yy - py) ** 2 < 2.0 ** 2] = 15.0
      image += rng.normal(0, 5, image.shape)
      name = f'img_{j:03d}.png'
      Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(os.path.join(directory, name))
      rows.append(f'{name},{pitch!r},{yaw!r}')
    with open(os.path.join(directory, 'labels.csv'), 'w') as f:
      f.write('\n'.join(rows) + '\n')


@pytest.fixture(scope='module')
def face_attack(tmp_path_factory):
  root = tmp_path_factory.mktemp('face_attack')
  raw = str(root / 'raw')
  write_face_study(raw)
  study = dict(name='own_study', source='tfds', manual_dir=raw, data_dir=str(root / 'tfds'),
               label_kind='gaze', image_size=SIZE, channels=3)
  run_dirs = []
  for aggregator in ('fedavg', 'privateyes'):
    config = helpers.tiny_config(**{'method': 'federated', 'record_views': 'last',
                                    'fl.rounds': 1, 'optimizer.name': 'sgd',
                                    'optimizer.learning_rate': 0.05})
    if aggregator == 'privateyes':
      config.aggregator.name = 'privateyes'
    config.model = ml_collections.ConfigDict(TINY_FACE)
    config.data.update(dict(people=RUN_PEOPLE, num_test_people=2, **study))
    run_dirs.append(str(root / aggregator))
    runner.train_and_evaluate(config, run_dirs[-1])
  attack = pipeline.default_config('tiny')
  attack.min_classifier_accuracy = 0.0  # Wiring and shapes, not strength.
  attack.attack_seeds = 1
  attack.background_samples = 32
  attack.prior.data.update(dict(people=PRIOR_PEOPLE, **study))
  attack.extra_rows = ('gradient_inversion',)  # Row a: pixel-space inversion, no prior.
  # The demo's GazeNet names, which stand for the face model's dense head (and keep the
  # inversion off the convolutions' second-order backward pass: a third of the time).
  attack.attack.match_layers = ('Dense_0', 'Dense_1')
  plotted = {}

  def keep_reconstructions(path, people, reconstructions, **kwargs):
    plotted.update(reconstructions)
    return plot(path, people, reconstructions, **kwargs)

  plot = evaluation.plot_reconstructions
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(evaluation, 'plot_reconstructions', keep_reconstructions)
    out = pipeline.run_attack(attack, run_dirs, str(root / 'attack'))
  return run_dirs, out, plotted


def test_face_run_is_attacked_end_to_end(face_attack):
  """Every threat model of a FedAvg and a PrivatEyes face-model run (32x32x3) gets a row
  (and the pixel-space gradient inversion's row a), scored on RGB reconstructions of the
  run's shape. Mutants killed: the prior's generator hard-wired to 36x60x1 eye patches or
  to one channel (refused at training, or reconstructions of the wrong shape), and the
  presets' GazeNet layer names ('Dense_0') passed to a model without them."""
  run_dirs, out, plotted = face_attack
  recorded = pipeline.load_round(run_dirs[0])
  assert recorded.clients[0].images.shape[1:] == (SIZE, SIZE, 3)
  assert list(out['threat_models']) == ['plain_fl', 'privateyes', 'privateyes_output_model',
                                        'generic_mpc', 'gradient_inversion']
  for name, rows in out['per_person'].items():
    assert len(rows) == len(recorded.clients) == 4, name
    for row in rows:
      assert np.isfinite(row['psnr']) and -1.0 <= row['ssim'] <= 1.0, (name, row)
      assert np.isfinite(row['label_error']), (name, row)
  assert set(plotted) == {'plain_fl', 'privateyes', 'privateyes_output_model', 'generic_mpc'}
  keep = pipeline.default_config('tiny').attack
  for name, per_person in plotted.items():
    for images in per_person:
      assert images.shape == (keep.keep_restarts * keep.latents, SIZE, SIZE, 3), name
      assert images.dtype == np.uint8
  attack_dir = os.path.join(os.path.dirname(run_dirs[0]), 'attack')
  assert os.path.exists(os.path.join(attack_dir, 'reconstructions.png'))


def test_gazenet_layer_names_take_their_roles_in_the_face_model():
  """The presets' 'Dense_0' / ('Dense_0', 'Dense_1') become the face model's dense head
  layers; the eye model's names are kept. Mutant killed: the names left as they are (the
  face model has no 'Dense_0': the inversion refuses every face run)."""
  images = np.zeros((1, SIZE, SIZE, 3), np.uint8)
  hp = np.zeros((1, 2), np.float32)
  config = dualview.default_config('demo')
  for head, feature, matched in (('gaze', 'gaze', ('gaze',)),
                                 ('screen', 'screen_hidden', ('screen_hidden', 'screen_target'))):
    model = face.build_face_model(ml_collections.ConfigDict(dict(TINY_FACE, head=head)))
    params = model.init(jax.random.PRNGKey(0), images, hp)['params']
    resolved = dualview.layers_for_model(config, params)
    assert resolved.feature_layer == feature and tuple(resolved.match_layers) == matched
  assert config.feature_layer == 'Dense_0'  # A copy: the config itself is unchanged.
  from privateyes_jax.models import gaze  # pylint: disable=g-import-not-at-top
  eye = gaze.GazeNet(conv_features=(4, 8), hidden=16)
  params = eye.init(jax.random.PRNGKey(0), np.zeros((1, 36, 60, 1), np.uint8), hp)['params']
  resolved = dualview.layers_for_model(config, params)
  assert resolved.feature_layer == 'Dense_0'
  assert tuple(resolved.match_layers) == ('Dense_0', 'Dense_1')
