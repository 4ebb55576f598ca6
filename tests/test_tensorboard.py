"""TensorBoard event files beside metrics.jsonl: same scalars, no duplicates after resume.

The events are read back with tensorboardX's protobufs and TensorBoard's reading
rules (files in name order; a ``SessionLog.START`` at step s discards the earlier
events at steps >= s), so these tests need neither TensorFlow nor TensorBoard.
"""

import glob
import json
import os
import struct

import pytest
from tensorboardX.proto import event_pb2

from privateyes_jax import runner
from privateyes_jax import workdir as workdir_lib
from tests.helpers import tiny_config


def _records(path):
  """The payloads of a TFRecord file (length, length CRC, data, data CRC)."""
  with open(path, 'rb') as f:
    data = f.read()
  pos = 0
  while pos + 12 <= len(data):
    (length,) = struct.unpack('<Q', data[pos:pos + 8])
    if pos + 16 + length > len(data):
      break  # A record cut by a kill: TensorBoard stops there as well.
    yield data[pos + 12:pos + 12 + length]
    pos += 16 + length


def read_scalars(logdir):
  """``{tag: {step: value}}`` as TensorBoard shows it, and the number of event files."""
  files = sorted(glob.glob(os.path.join(logdir, 'events.out.tfevents.*')))
  seen = []  # (step, tag, value) in reading order.
  for path in files:
    for record in _records(path):
      event = event_pb2.Event.FromString(record)
      if event.HasField('session_log') and event.session_log.status == event_pb2.SessionLog.START:
        seen = [s for s in seen if s[0] < event.step]
      for value in event.summary.value:
        seen.append((event.step, value.tag, value.simple_value))
  scalars = {}
  for step, tag, value in seen:
    assert step not in scalars.get(tag, {}), f'{tag} has two values at step {step}'
    scalars.setdefault(tag, {})[step] = value
  return scalars, len(files)


def expected_scalars(wd):
  expected = {}
  for row in workdir_lib.read_metrics(os.path.join(wd, 'metrics.jsonl')):
    step = workdir_lib.metrics_step(row)
    for tag, value in workdir_lib.scalar_fields(row).items():
      expected.setdefault(tag, {})[step] = value
  return expected


def assert_same(scalars, expected):
  assert sorted(scalars) == sorted(expected)
  for tag in expected:
    assert sorted(scalars[tag]) == sorted(expected[tag]), tag
    for step, value in expected[tag].items():
      assert scalars[tag][step] == pytest.approx(value, rel=1e-6, abs=1e-6), (tag, step)


def test_federated_run_events_equal_metrics_also_after_resuming(tmp_path):
  wd = str(tmp_path / 'run')
  config = tiny_config(method='federated', **{'fl.rounds': 4, 'fl.checkpoint_every': 2})
  # Rounds 1-3 are logged, but only round 2 is checkpointed: the resumed run redoes round 3.
  assert runner.train_and_evaluate(config, wd, halt_after=3) == {'halted_at_step': 3}
  first, _ = read_scalars(os.path.join(wd, 'tensorboard'))
  assert sorted(first['train_loss']) == [1, 2, 3]
  runner.train_and_evaluate(config, wd)
  scalars, num_files = read_scalars(os.path.join(wd, 'tensorboard'))
  assert num_files == 2  # One per process that appended rows.
  expected = expected_scalars(wd)
  assert sorted(expected['test_error']) == [1, 2, 3, 4]
  assert {'train_loss', 'round_seconds', 'clients', 'seconds', 'per_person_error/p04',
          'per_person_error/p05'} <= set(expected)
  assert_same(scalars, expected)  # Round 3 holds the resumed run's value, once.


def test_rows_are_on_disk_before_close_and_clear_removes_them(tmp_path):
  wd = str(tmp_path / 'run')
  w = workdir_lib.Workdir.open(wd, tiny_config())
  w.append_metrics({'step': 4, 'train_loss': 0.5, 'test_error': float('nan'),
                    'per_person_error': {'p 1': 3.0}, 'note': 'text'})
  scalars, _ = read_scalars(os.path.join(wd, 'tensorboard'))  # Not closed yet.
  assert scalars == {'train_loss': {4: 0.5}, 'per_person_error/p_1': {4: 3.0}}
  with open(os.path.join(wd, 'metrics.jsonl')) as f:
    assert json.loads(f.readline())['test_error'] is None  # NaN is absent in both.
  w.close()
  workdir_lib.Workdir.clear(wd)
  assert not os.path.exists(os.path.join(wd, 'tensorboard'))


def test_scalar_fields_flattens_nested_rows():
  row = {'round': 2, 'train_loss': 1, 'ok': True, 'per_person_error': {'a': 2.5},
         'mpc': {'x': {'y': 3}}, 'names': [1, 2], 'test_error': None}
  assert workdir_lib.scalar_fields(row) == {
      'train_loss': 1.0, 'per_person_error/a': 2.5, 'mpc/x/y': 3.0}
  assert workdir_lib.metrics_step(row) == 2
  assert workdir_lib.metrics_step({'step': 7}) == 7
  assert workdir_lib.metrics_step({'train_loss': 1.0}) is None
