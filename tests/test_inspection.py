"""Run inspection: listing, evaluation equal to the logged error, params, read-only safety."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from privateyes_jax import inspection
from privateyes_jax import runner
from privateyes_jax.workdir import CheckpointError, WorkdirError
from tests.helpers import final_params
from tests.helpers import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """``root/{fedavg,local,centralized}``: finished tiny runs (rounds 2, 3 / steps 4, 8 kept)."""
  root = str(tmp_path_factory.mktemp('runs'))
  runner.train_and_evaluate(tiny_config(method='federated', record_views='last'),
                            os.path.join(root, 'fedavg'))
  runner.train_and_evaluate(tiny_config(method='local', **{'fl.rounds': 2}),
                            os.path.join(root, 'local'))
  runner.train_and_evaluate(tiny_config(**{'train.steps': 8}), os.path.join(root, 'centralized'))
  return root


def _snapshot(root):
  """Every path under ``root`` with its size and modification time."""
  out = {}
  for directory, subdirs, files in os.walk(root):
    for name in subdirs + files:
      st = os.stat(os.path.join(directory, name))
      out[os.path.relpath(os.path.join(directory, name), root)] = (st.st_size, st.st_mtime_ns)
  return out


def _logged(path, unit):
  return {r[unit]: r['test_error'] for r in inspection.read_metrics(path) if 'test_error' in r}


@pytest.mark.parametrize('name,unit,step', [('fedavg', 'round', 2), ('fedavg', 'round', 3),
                                            ('local', 'round', 2), ('centralized', 'step', 4)])
def test_evaluate_equals_the_logged_test_error(runs, name, unit, step):
  path = os.path.join(runs, name)
  result = inspection.evaluate(path, step)
  assert result.step == step and result.error_unit == 'deg'
  assert sorted(result.per_person) == ['p04', 'p05']  # The run's held-out people.
  assert result.mean == pytest.approx(_logged(path, unit)[step], rel=1e-5, abs=1e-5)
  assert result.logged == _logged(path, unit)[step]
  assert result.mean == pytest.approx(np.mean(list(result.per_person.values())))


def test_evaluate_on_other_data(runs):
  path = os.path.join(runs, 'fedavg')
  other = inspection.evaluate(path, data_overrides={'num_people': 8, 'num_test_people': 3})
  assert sorted(other.per_person) == ['p05', 'p06', 'p07'] and other.logged is None
  every = inspection.evaluate(path, people='all')
  assert sorted(every.per_person) == [f'p0{i}' for i in range(6)]
  own = inspection.evaluate(path)
  assert every.per_person['p04'] == pytest.approx(own.per_person['p04'])
  with pytest.raises(ValueError, match="Unknown data config field 'data.num_peeple'"):
    inspection.evaluate(path, data_overrides={'num_peeple': 8})


def test_list_describes_every_run_nested_ones_included(runs, tmp_path):
  root = str(tmp_path / 'sweep')
  shutil.copytree(os.path.join(runs, 'fedavg'), os.path.join(root, 'loo', 'fold_00'))
  shutil.copytree(os.path.join(runs, 'centralized'), os.path.join(root, 'central'))
  infos = {os.path.relpath(i.path, root): i for i in inspection.list_runs(root)}
  assert sorted(infos) == ['central', os.path.join('loo', 'fold_00')]
  fed = infos[os.path.join('loo', 'fold_00')]
  assert (fed.method, fed.dataset, fed.unit, fed.saved, fed.finished, fed.views) == (
      'fedavg', 'synthetic', 'round', [2, 3], True, [3])
  assert fed.last_metrics['round'] == 3 and 'test_error' in fed.last_metrics
  central = infos['central']
  assert (central.method, central.unit, central.saved, central.views) == (
      'centralized', 'step', [4, 8], [])
  text = inspection.format_runs(list(infos.values()), root)
  assert 'fold_00' in text and 'centralized' in text and '2,3' in text
  # A single run is its own list.
  assert [i.path for i in inspection.list_runs(os.path.join(root, 'central'))] == [
      os.path.join(root, 'central')]


def test_show_prints_config_and_metrics(runs):
  path = os.path.join(runs, 'fedavg')
  text = inspection.format_show(path)
  assert '"method": "federated"' in text
  header = next(l for l in text.splitlines() if l.startswith('round'))
  assert header.split() == ['round', 'train_loss', 'test_error', 'round_seconds', 'seconds']
  last = text.splitlines()[-1].split()
  row = inspection.read_metrics(path)[-1]
  assert last[0] == '3' and float(last[2]) == pytest.approx(row['test_error'], abs=1e-4)


def test_params_export_and_diff(runs, tmp_path):
  path = os.path.join(runs, 'fedavg')
  step, key, params = inspection.restore_params(path)
  assert (step, key) == (3, 'params')
  jax.tree.map(np.testing.assert_array_equal, params, final_params(path))
  stats = {s.name: s for s in inspection.param_stats(params)}
  kernel = params['Dense_0']['kernel']
  assert stats['Dense_0/kernel'].shape == kernel.shape
  assert stats['Dense_0/kernel'].l2 == pytest.approx(np.linalg.norm(kernel), rel=1e-6)
  assert sum(s.count for s in stats.values()) == sum(x.size for x in jax.tree.leaves(params))
  assert 'total parameters' in inspection.format_params(path, step, key, params)

  out = str(tmp_path / 'p.npz')
  assert inspection.export(path, out, step=2)[0] == 2
  saved = np.load(out)
  _, _, params2 = inspection.restore_params(path, 2)
  assert sorted(saved.files) == sorted(inspection.flatten(params2))
  np.testing.assert_array_equal(saved['Conv_0/kernel'], params2['Conv_0']['kernel'])

  a, b, rows = inspection.diff(path, 2, path, 3)
  assert (a, b) == (2, 3)
  by_name = {r.name: r for r in rows}
  expected = np.linalg.norm(params2['Dense_0']['kernel'] - kernel)
  assert by_name['Dense_0/kernel'].diff_l2 == pytest.approx(expected, rel=1e-5)
  assert by_name['Dense_0/kernel'].relative == pytest.approx(
      expected / np.linalg.norm(params2['Dense_0']['kernel']), rel=1e-5)
  assert by_name['(total)'].diff_l2 > 0
  assert all(r.diff_l2 == 0 for r in inspection.diff(path, 3)[2])  # Same step: no difference.
  local_key = inspection.restore_params(os.path.join(runs, 'local'))[1]
  assert local_key == 'client_params'
  with pytest.raises(ValueError, match='different models'):
    inspection.diff(path, 3, os.path.join(runs, 'local'))  # [clients, ...] vs global shapes.


def test_restores_params_with_an_orbax_without_partial_restore(runs, monkeypatch):
  path = os.path.join(runs, 'centralized')
  expected = inspection.restore_params(path)[2]
  original = inspection.ocp.args.PyTreeRestore

  def old_pytree_restore(*args, **kwargs):
    if 'partial_restore' in kwargs:
      raise TypeError("unexpected keyword argument 'partial_restore'")
    return original(*args, **kwargs)
  monkeypatch.setattr(inspection.ocp.args, 'PyTreeRestore', old_pytree_restore)
  step, key, params = inspection.restore_params(path)
  assert (step, key) == (8, 'params')
  jax.tree.map(np.testing.assert_array_equal, params, expected)


def test_read_only_on_a_run_that_is_still_writing(runs, tmp_path):
  live = str(tmp_path / 'live')
  shutil.copytree(os.path.join(runs, 'fedavg'), live)
  os.remove(os.path.join(live, 'summary.json'))
  # A save in progress (orbax writes into a tmp directory and renames it when complete)
  # and a metrics row being written.
  partial = os.path.join(live, 'checkpoints', '4.orbax-checkpoint-tmp-1700000000000000')
  shutil.copytree(os.path.join(live, 'checkpoints', '3'), partial)
  with open(os.path.join(live, 'metrics.jsonl'), 'a') as f:
    f.write('{"round": 4, "train_lo')
  no_checkpoints = str(tmp_path / 'started')
  os.makedirs(no_checkpoints)
  shutil.copy(os.path.join(live, 'config.json'), no_checkpoints)
  before = _snapshot(str(tmp_path))

  info = inspection.run_info(live)
  assert info.saved == [2, 3] and not info.finished and info.last_metrics['round'] == 3
  assert inspection.restore_params(live)[0] == 3
  assert '(3 rows)' in inspection.format_show(live)
  assert inspection.diff(live, 2)[1] == 3
  assert inspection.evaluate(live, 3).logged is not None
  assert inspection.saved_steps(no_checkpoints) == []
  with pytest.raises(ValueError, match='No saved checkpoint'):
    inspection.restore_params(no_checkpoints)
  assert _snapshot(str(tmp_path)) == before  # Nothing created, changed or deleted.


# Orbax's reader leaves a callback on its closed event loop after the failed read of the
# corrupt checkpoint; Python reports it as unraisable. The error we raise is what counts.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_bad_input_is_reported_clearly(runs, tmp_path):
  with pytest.raises(WorkdirError, match=r"'/nonexistent/run' is not a run's workdir: it does "
                                         'not exist.*config.json'):
    inspection.restore_params('/nonexistent/run')
  with pytest.raises(WorkdirError, match='holds no config.json'):
    inspection.format_show(runs)  # A folder of runs, not a run.
  with pytest.raises(WorkdirError, match='No run found'):
    inspection.list_runs(str(tmp_path))
  with pytest.raises(ValueError, match=r'No saved step 7 .* saved steps: 2, 3\.'):
    inspection.evaluate(os.path.join(runs, 'fedavg'), 7)
  with pytest.raises(ValueError, match=r'\.npz'):
    inspection.export(os.path.join(runs, 'fedavg'), str(tmp_path / 'p.txt'))

  corrupt = str(tmp_path / 'corrupt')
  shutil.copytree(os.path.join(runs, 'fedavg'), corrupt)
  data_dir = os.path.join(corrupt, 'checkpoints', '3', 'default', 'ocdbt.process_0', 'd')
  for name in os.listdir(data_dir):
    with open(os.path.join(data_dir, name), 'wb') as f:
      f.write(b'garbage')
  before = _snapshot(corrupt)
  step_dir = os.path.join(corrupt, 'checkpoints', '3')
  with pytest.raises(CheckpointError, match=f'Checkpoint {step_dir} could not be read'):
    inspection.restore_params(corrupt)
  assert _snapshot(corrupt) == before  # Never deleted or repaired.
  assert inspection.restore_params(corrupt, 2)[0] == 2  # The other step is still readable.


def _inspect(*args):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'experiments.inspect_run', *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)


def test_cli(runs):
  path = os.path.join(runs, 'fedavg')
  ok = _inspect('evaluate', f'--workdir={path}', '--step=2')
  assert ok.returncode == 0, ok.stderr[-2000:]
  mean = next(l for l in ok.stdout.splitlines() if l.startswith('mean')).split()[1]
  assert float(mean) == pytest.approx(_logged(path, 'round')[2], abs=1e-4)
  assert 'WARNING' not in ok.stderr  # Orbax's read-only notices are filtered.

  missing = _inspect('params', f'--workdir={path}', '--step=9')
  assert missing.returncode == 1 and 'Traceback' not in missing.stderr
  assert missing.stderr.strip().splitlines()[-1] == (
      f'ERROR (ValueError): No saved step 9 in {path}/checkpoints; saved steps: 2, 3.')

  unknown = _inspect('evaluate', f'--workdir={path}', '--data.num_peeple=3')
  assert unknown.returncode == 2 and 'Unknown config field' in unknown.stderr
  assert 'num_peeple' in unknown.stderr and 'Traceback' not in unknown.stderr
  with open(os.path.join(path, 'config.json')) as f:
    assert json.load(f)['method'] == 'federated'  # Untouched.


def test_only_training_configs_are_runs(tmp_path):
  """An attack directory or a sweep group also holds a config.json; they are not runs."""
  for name, config in (('run', {'method': 'federated'}), ('attack', {'attack_config': {}}),
                       ('group', {'members': []})):
    (tmp_path / name).mkdir()
    (tmp_path / name / 'config.json').write_text(json.dumps(config))
  assert inspection.is_workdir(str(tmp_path / 'run'))
  assert not inspection.is_workdir(str(tmp_path / 'attack'))
  assert not inspection.is_workdir(str(tmp_path / 'group'))
