"""End to end: the runner trains, writes its outputs, resumes exactly, refuses bad input."""

import json
import os

import jax
import numpy as np
import pytest

from privateyes_jax import runner
from privateyes_jax import workdir as workdir_lib
from tests.helpers import final_params as _params
from tests.helpers import tiny_config


def test_trains_and_writes_outputs(tmp_path):
  wd = str(tmp_path / 'run')
  config = tiny_config(**{'train.steps': 40, 'train.eval_every': 20})
  summary = runner.train_and_evaluate(config, wd)
  for name in ('config.json', 'metrics.jsonl', 'summary.json'):
    assert os.path.exists(os.path.join(wd, name)), name
  with open(os.path.join(wd, 'summary.json')) as f:
    saved = json.load(f)
  for key in ('method', 'dataset', 'num_people_train', 'num_people_test',
              'test_angular_error_deg', 'baseline_mean_predictor_error_deg', 'steps',
              'wall_time_s'):
    assert key in saved, key
  assert saved['steps'] == 40 and saved['num_people_train'] == 4
  rows = [json.loads(l) for l in open(os.path.join(wd, 'metrics.jsonl'))]
  assert [r['step'] for r in rows] == [20, 40]
  # Gaze is learnable: the error falls with training and beats the mean predictor.
  assert rows[-1]['train_loss'] < rows[0]['train_loss']
  assert summary['test_error'] < summary['baseline_mean_predictor_error']


def test_resume_is_bit_identical(tmp_path):
  config = tiny_config()
  full = str(tmp_path / 'full')
  runner.train_and_evaluate(config, full)
  parted = str(tmp_path / 'parted')
  halted = runner.train_and_evaluate(config, parted, halt_after=5)
  assert halted == {'halted_at_step': 5}
  assert workdir_lib.Workdir(parted).latest_step() == 4  # Last checkpoint before the halt.
  runner.train_and_evaluate(config, parted)
  jax.tree.map(np.testing.assert_array_equal, _params(full), _params(parted))
  rows = [json.loads(l) for l in open(os.path.join(parted, 'metrics.jsonl'))]
  assert [r['step'] for r in rows] == [4, 8, 12]  # No duplicated rows after resuming.


def test_refuses_workdir_with_other_config(tmp_path):
  wd = str(tmp_path / 'run')
  runner.train_and_evaluate(tiny_config(), wd)
  before = open(os.path.join(wd, 'metrics.jsonl')).read()
  with pytest.raises(workdir_lib.WorkdirError, match=r'train.steps: 12 -> 16'):
    runner.train_and_evaluate(tiny_config(**{'train.steps': 16}), wd)
  assert open(os.path.join(wd, 'metrics.jsonl')).read() == before  # Nothing lost.
  summary = runner.train_and_evaluate(tiny_config(**{'train.steps': 16}), wd, overwrite=True)
  assert summary['steps'] == 16


def test_overwrite_starts_afresh_with_the_same_config(tmp_path):
  wd = str(tmp_path / 'run')
  runner.train_and_evaluate(tiny_config(), wd)
  assert workdir_lib.Workdir(wd).latest_step() == 12
  os.makedirs(os.path.join(wd, 'views'))  # As a federated run that recorded views.
  open(os.path.join(wd, 'views', 'round_00001.npz'), 'w').close()
  # Without --overwrite the finished run is reused; with it, training restarts at step 0.
  assert runner.train_and_evaluate(tiny_config(), wd, halt_after=4) != {'halted_at_step': 4}
  assert runner.train_and_evaluate(tiny_config(), wd, overwrite=True,
                                   halt_after=4) == {'halted_at_step': 4}
  assert workdir_lib.Workdir(wd).latest_step() == 4
  assert not os.path.exists(os.path.join(wd, 'views'))  # No stale views for the attack.
  rows = [json.loads(l) for l in open(os.path.join(wd, 'metrics.jsonl'))]
  assert [r['step'] for r in rows] == [4]


def test_unusable_workdir(tmp_path):
  not_a_dir = tmp_path / 'file'
  not_a_dir.write_text('x')
  with pytest.raises(workdir_lib.WorkdirError, match='not a directory'):
    runner.train_and_evaluate(tiny_config(), str(not_a_dir))
  with pytest.raises(workdir_lib.WorkdirError, match='No workdir'):
    runner.train_and_evaluate(tiny_config(), '')


def test_corrupt_checkpoint_is_reported_not_deleted(tmp_path):
  wd = str(tmp_path / 'run')
  runner.train_and_evaluate(tiny_config(), wd)
  step_dir = os.path.join(wd, 'checkpoints', '12')
  for root, _, files in os.walk(step_dir):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'garbage')
  with pytest.raises(workdir_lib.CheckpointError, match=r'checkpoints/12'):
    runner.train_and_evaluate(tiny_config(), wd)
  assert os.path.isdir(step_dir)  # The user decides what to delete.


def test_nan_loss_stops_with_step_number(tmp_path):
  wd = str(tmp_path / 'run')
  config = tiny_config(**{'optimizer.name': 'sgd', 'optimizer.learning_rate': 1e30})
  with pytest.raises(FloatingPointError, match=r'at step \d+'):
    runner.train_and_evaluate(config, wd)
  # No checkpoint holds the diverged parameters.
  wd_obj = workdir_lib.Workdir(wd)
  latest = wd_obj.latest_step()
  wd_obj.close()
  if latest is not None:
    state = workdir_lib.Workdir(wd)._manager.restore(latest)  # pylint: disable=protected-access
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state['params']))


def test_invalid_config_values(tmp_path):
  with pytest.raises(ValueError, match='Unknown method'):
    runner.train_and_evaluate(tiny_config(method='fedsomething'), str(tmp_path / 'a'))
  with pytest.raises(ValueError, match='batch_size'):
    runner.train_and_evaluate(tiny_config(batch_size=0), str(tmp_path / 'b'))
  assert not os.path.exists(tmp_path / 'a')  # Rejected before touching the disk.
