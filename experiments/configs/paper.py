r"""The paper's experiments on your copy of the public datasets: ``paper.py:DATASET,METHOD``.

DATASET: mpiigaze | mpiifacegaze | gazecapture | mpiigaze_h5 | mpiifacegaze_h5
METHOD:  centralized | local | fedavg | fedadam | privateyes | privateyes_semi_honest

  python -m experiments.train --config=experiments/configs/paper.py:mpiigaze,privateyes \
      --config.data.manual_dir=/data/MPIIGaze --workdir=runs/mpiigaze/privateyes

MPII datasets use leave-one-person-out over all 15 people (one sub-run per fold; the
summary reports every person's error from the fold that held them out); GazeCapture
uses its official subject split (people are ordered train then test, so the last
``num_test_people`` are the official test subjects: data_prep prints that number).

Hyperparameters follow the public reference implementations (docs/DATASETS.md lists the
sources): LeNet on MPIIGaze with SGD-momentum 0.9, lr 0.01, batch 32, about 10 epochs of
each person's 3000 samples; ResNet-14 with spatial weights on MPIIFaceGaze with SGD-momentum,
lr 0.1 (scaled down for federated local steps), batch 32; GazeCapture with the face model's
screen head at 64x64. Federated runs give every client the same number of local steps per
round and enough rounds to see each person's data about 10 times. The PrivatEyes paper does
not publish its own training schedule in the parts we could read; change these fields to
match yours.
"""

import ml_collections

from experiments.configs import default

DATASETS = ('mpiigaze', 'mpiifacegaze', 'gazecapture', 'mpiigaze_h5', 'mpiifacegaze_h5')
METHODS = ('centralized', 'local', 'fedavg', 'fedadam', 'privateyes', 'privateyes_semi_honest')


def get_config(arg: str | None = 'mpiigaze,fedavg'):
  dataset, _, method = (arg or 'mpiigaze,fedavg').partition(',')
  if dataset not in DATASETS:
    raise ValueError(f'Unknown dataset {dataset!r} in paper.py:{arg}; available: {DATASETS}.')
  if method not in METHODS:
    raise ValueError(f'Unknown method {method!r} in paper.py:{arg}; available: {METHODS}.')
  c = default.get_config()
  c.data.name = dataset
  c.data.source = 'tfds'
  c.batch_size = 32
  c.optimizer.name = 'momentum'
  c.optimizer.momentum = 0.9
  c.optimizer.clip_norm = 0.0

  if dataset in ('mpiigaze', 'mpiigaze_h5'):
    c.data.protocol, c.data.fold = 'loo', -1  # All 15 folds.
    c.model.name = 'gazenet'
    c.model.padding = 'VALID'  # The original LeNet of Zhang et al. (CVPR 2015).
    c.optimizer.learning_rate = 0.01
    c.train.steps = 14 * 3000 * 10 // 32  # ~10 epochs of the 14 training people.
  else:
    c.model = ml_collections.ConfigDict(dict(
        name='resnet_face', stem_features=64, stage_features=(64, 128, 256),
        blocks_per_stage=(2, 2, 2), norm_groups=8, spatial_weights=True,
        head='screen' if dataset == 'gazecapture' else 'gaze', head_hidden=128,
        use_head_pose=False))
    c.optimizer.learning_rate = 0.01
    if dataset == 'gazecapture':
      c.data.image_size = 64
      c.data.protocol = 'holdout'
      c.data.num_test_people = 150  # Set to the number data_prep prints for your copy.
      c.train.steps = 100_000
    else:
      c.data.image_size = 224
      c.data.protocol, c.data.fold = 'loo', -1
      c.train.steps = 14 * 3000 * 15 // 32  # ~15 epochs.
  c.train.eval_every = max(c.train.steps // 20, 1)
  c.train.log_every = 100

  if method == 'centralized':
    c.method = 'centralized'
    return c
  c.method = 'local' if method == 'local' else 'federated'
  c.fl.local_steps = 20
  # Each client sees its own data about 10 times: 3000 samples / (20 steps x 32) per round.
  c.fl.rounds = 3000 * 10 // (c.fl.local_steps * c.batch_size)
  c.fl.eval_every = 5
  c.fl.checkpoint_every = 5
  c.fl.server_optimizer = 'fedadam' if method == 'fedadam' else 'fedavg'
  c.fl.server_lr = 1e-2 if method == 'fedadam' else 1.0
  if method.startswith('privateyes'):
    c.aggregator.name = method
  return c
