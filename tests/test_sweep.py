"""Sweeps: the grid, batched runs equal single runs, resume, results and the best config."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import optax
import pytest

from experiments.configs import sweep as sweep_configs
from privateyes_jax import runner
from privateyes_jax import training
from privateyes_jax import workdir as workdir_lib
from privateyes_jax.federated import server
from privateyes_jax.sweeps import report
from privateyes_jax.sweeps import spec
from privateyes_jax.sweeps import sweep
from tests.helpers import final_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = 'optimizer.learning_rate=0.02,0.05;seed=0,1'


def sweep_config(grid=GRID, **overrides):
  """The tiny preset with client momentum + clipping and FedAdam: every injected path."""
  c = sweep_configs.get_config('tiny')
  c.fl.rounds = 2
  c.optimizer.name = 'momentum'
  c.optimizer.clip_norm = 5.0
  c.fl.server_optimizer = 'fedadam'
  c.fl.server_lr = 0.01
  c.sweep.grid = grid
  for key, value in overrides.items():
    spec.set_field(c, key, value)
  return c


def assert_trees_close(a, b, **tol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol), a, b)


def _saved_state(run_dir):
  wd = workdir_lib.Workdir(run_dir)
  state = wd._manager.restore(wd.latest_step())  # pylint: disable=protected-access
  wd.close()
  return state


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """One uninterrupted 4-run sweep shared by the tests below."""
  directory = str(tmp_path_factory.mktemp('sweep') / 'full')
  config = sweep_config()
  return config, directory, sweep.run_sweep(config, directory)


# ------------------------------------------------------------------ the grid
def test_grid_product_names_and_groups():
  runs = spec.expand(sweep_config('fl.local_steps=1,2;optimizer.learning_rate='
                                  'logspace(1e-3,1e-1,3);seed=range(2)'))
  assert len(runs) == 12
  assert runs[0].name == 'local_steps=1,learning_rate=0.001,seed=0'
  assert runs[-1].config.fl.local_steps == 2 and runs[-1].config.seed == 1
  np.testing.assert_allclose(runs[-1].config.optimizer.learning_rate, 0.1)
  assert 'sweep' not in runs[0].config
  groups = spec.group_runs(runs)  # Local steps change the program; lr and seed do not.
  assert [len(g) for g in groups] == [6, 6]
  assert {r.config.fl.local_steps for r in groups[1]} == {2}
  assert [len(g) for g in spec.group_runs(runs, max_runs=4)] == [4, 2, 4, 2]
  # Clipping on/off changes the program; its value does not.
  clip = spec.expand(sweep_config('optimizer.clip_norm=0,1,2'))
  assert [len(g) for g in spec.group_runs(clip)] == [1, 2]
  # A tuple field (model widths) is swept as literals and makes groups.
  wide = spec.expand(sweep_config('model.conv_features=(4,8),(8,16)'))
  assert wide[1].config.model.conv_features == (8, 16)
  assert len(spec.group_runs(wide)) == 2


@pytest.mark.parametrize('grid,message', [
    ('optimizer.learnig_rate=0.1', r"unknown config field 'optimizer.learnig_rate'.*"
                                   r'Similar fields: optimizer.learning_rate'),
    ('fl.server_lrate=0.1,1', r'Similar fields: fl.server_lr'),
    ('seed=', r'range of seed is empty'),
    ('optimizer.learning_rate=logspace(1e-3,1e-1,0)', r'empty'),
    ('seed=range(0)', r'empty'),
    ('', r'sweep.grid is empty'),
    ('optimizer=1', r'group of fields.*optimizer.learning_rate'),
    ('seed=0.5', r"'0.5' is not a valid value for seed"),
    ('seed=1,1', r'repeats a value'),
    ('seed=0;seed=1', r'given twice'),
    ('sweep.grid=1', r'cannot be swept'),
    ('optimizer.learning_rate', r'has no "="'),
])
def test_bad_grids_are_refused_with_the_field_named(grid, message):
  with pytest.raises(spec.SweepSpecError, match=message):
    spec.expand(sweep_config(grid))


def test_unsupported_and_invalid_runs_are_refused_before_any_file(tmp_path):
  directory = str(tmp_path / 'refused')
  with pytest.raises(spec.SweepSpecError, match=r'record_views.*experiments.train'):
    sweep.run_sweep(sweep_config(record_views='last'), directory)
  with pytest.raises(spec.SweepSpecError, match=r'aggregator.dp.enabled.*experiments.train'):
    sweep.run_sweep(sweep_config(**{'aggregator.dp.enabled': True}), directory)
  with pytest.raises(spec.SweepSpecError, match=r'learning_rate=-0.1.*must be > 0'):
    sweep.run_sweep(sweep_config('optimizer.learning_rate=0.1,-0.1'), directory)
  assert not os.path.exists(directory)


# ------------------------------------------------------------------ exactness
def test_injected_optimizers_equal_the_plain_ones():
  params = {'w': np.linspace(-1, 1, 6, dtype=np.float32), 'b': np.array([0.3], np.float32)}
  grads = {'w': np.cos(np.arange(6, dtype=np.float32)), 'b': np.array([-2.0], np.float32)}
  for name in training.CLIENT_OPTIMIZERS:
    cfg = ml_collections.ConfigDict(dict(name=name, learning_rate=0.07, momentum=0.8,
                                         clip_norm=0.5))
    plain, injected = training.make_optimizer(cfg), training.make_optimizer(cfg, 0, True)
    a, b = plain.init(params), injected.init(params)
    for _ in range(3):
      ua, a = plain.update(grads, a, params)
      ub, b = injected.update(grads, b, params)
      jax.tree.map(np.testing.assert_array_equal, ua, ub)
  fl = sweep_config().fl
  fl.server_schedule = 'cosine'
  for name in server.SERVER_OPTIMIZERS:
    fl.server_optimizer = name
    plain = server.make_server_optimizer(fl)
    injected = server.make_server_optimizer(fl, inject_hyperparams=True)
    a, b = plain.init(params), injected.init(params)
    for _ in range(3):
      ua, a = plain.update(grads, a, params)
      ub, b = injected.update(grads, b, params)
      jax.tree.map(np.testing.assert_array_equal, ua, ub)
    # The injected state's inner state is the plain one (per-run checkpoints rely on it).
    assert jax.tree.structure(b.inner_state) == jax.tree.structure(a)
  # Changing an injected value changes the update like rebuilding the optimizer.
  state = training.set_hyperparams(injected.init(params), {'server_lr': 0.5})
  fl.server_lr = 0.5
  expected, _ = server.make_server_optimizer(fl).update(grads, server.make_server_optimizer(
      fl).init(params), params)
  jax.tree.map(np.testing.assert_array_equal, injected.update(grads, state, params)[0], expected)
  with pytest.raises(ValueError, match='Unknown hyperparameter'):
    training.set_hyperparams(state, {'lr': 1.0})
  with pytest.raises(ValueError, match='no injected hyperparameters'):
    training.set_hyperparams(optax.sgd(0.1).init(params), {'learning_rate': 1.0})


def test_sweep_runs_equal_independent_single_runs(finished, tmp_path):
  config, directory, result = finished
  assert result['trained_runs'] == 4
  runs = {r.name: r for r in spec.expand(config)}
  # Two of the four runs, differing in both learning rate and seed, as single runs.
  for name in ('learning_rate=0.02,seed=0', 'learning_rate=0.05,seed=1'):
    single_config = runs[name].config.copy_and_resolve_references()
    single_config.fl.executor = 'client_parallel'  # What 'auto' picks for GazeNet.
    single = runner.train_and_evaluate(single_config, str(tmp_path / name))
    run_dir = os.path.join(directory, 'runs', name)
    # Batched GEMMs over 4x more clients reduce in another order: float rounding only
    # (a one-run sweep is bit-identical to the single run).
    assert_trees_close(final_params(run_dir), final_params(str(tmp_path / name)),
                       rtol=1e-5, atol=1e-6)
    with open(os.path.join(run_dir, 'summary.json')) as f:
      summary = json.load(f)
    assert summary['test_error'] == pytest.approx(single['test_error'], rel=1e-5)
    assert summary['status'] == 'done' and summary['rounds'] == 2
    rows = workdir_lib.Workdir(run_dir).read_metrics()
    with open(tmp_path / name / 'metrics.jsonl') as f:
      single_rows = [json.loads(line) for line in f]
    assert [r['round'] for r in rows] == [1, 2]
    for got, want in zip(rows, single_rows):
      assert got['train_loss'] == pytest.approx(want['train_loss'], rel=1e-5)
      assert got['test_error'] == pytest.approx(want['test_error'], rel=1e-5)
  # The runs differ from each other (the hyperparameters really are per run).
  errors = {row['run']: row['test_error'] for row in result['rows']}
  assert len(set(errors.values())) == 4


def test_run_workdirs_are_ordinary_finished_runs(finished):
  config, directory, _ = finished
  run = spec.expand(config)[3]
  with open(os.path.join(directory, 'runs', run.name, 'summary.json')) as f:
    expected = json.load(f)['test_error']
  # experiments.train on a run's workdir with its config finds it finished.
  again = runner.train_and_evaluate(run.config, os.path.join(directory, 'runs', run.name))
  assert again['test_error'] == pytest.approx(expected, rel=1e-6)
  assert not os.listdir(os.path.join(directory, 'groups'))  # Group checkpoints cleaned up.


# ------------------------------------------------------------------ resume
def test_interrupted_sweep_resumes_to_the_same_results(finished, tmp_path):
  config, full_dir, _ = finished
  parted = str(tmp_path / 'parted')
  assert sweep.run_sweep(config, parted, halt_after=1) == {'halted_at_round': 1}
  assert not os.path.exists(os.path.join(parted, 'results.md'))
  resumed = sweep.run_sweep(config, parted)
  assert resumed['trained_runs'] == 4
  for run in spec.expand(config):
    jax.tree.map(np.testing.assert_array_equal,
                 final_params(os.path.join(full_dir, 'runs', run.name)),
                 final_params(os.path.join(parted, 'runs', run.name)))
    rows = workdir_lib.Workdir(os.path.join(parted, 'runs', run.name)).read_metrics()
    assert [r['round'] for r in rows] == [1, 2]  # No repeated rows after the resume.
  # A finished sweep is reused, not retrained; another config is refused.
  assert sweep.run_sweep(config, parted)['trained_runs'] == 0
  with pytest.raises(workdir_lib.WorkdirError, match='fl.rounds: 2 -> 3'):
    sweep.run_sweep(sweep_config(**{'fl.rounds': 3}), parted)


def test_interrupted_group_resumes_after_the_grid_grew(finished, tmp_path):
  """Two more seeds added to a halted sweep: the interrupted group keeps its rounds."""
  config, full_dir, _ = finished
  parted = str(tmp_path / 'grown')
  small = sweep_config('optimizer.learning_rate=0.02,0.05;seed=0')
  assert sweep.run_sweep(small, parted, halt_after=1) == {'halted_at_round': 1}
  result = sweep.run_sweep(config, parted)  # The grid of `finished`: seed=0,1.
  assert result['trained_runs'] == 4
  for run in spec.expand(config):
    run_dir = os.path.join(parted, 'runs', run.name)
    # The seed-0 runs finished in their 2-run group (resumed, not retrained in a new
    # group of 4); the added seed-1 runs formed their own group.
    rows = workdir_lib.Workdir(run_dir).read_metrics()
    assert [r['sweep_runs'] for r in rows] == [2, 2], run.name
    want = final_params(os.path.join(full_dir, 'runs', run.name))
    assert_trees_close(final_params(run_dir), want, rtol=1e-5, atol=1e-6)
  assert not os.listdir(os.path.join(parted, 'groups'))
  # A group directory left by a process that stopped after its runs wrote their outputs
  # is removed on the next run, which trains nothing.
  stale = os.path.join(parted, 'groups', 'group-stale')
  os.makedirs(stale)
  workdir_lib.write_json(os.path.join(stale, workdir_lib.CONFIG_FILE), {'sweep_group': {
      'runs': [r.name for r in spec.expand(config)[:2]], 'id': 'group-stale'}})
  assert sweep.run_sweep(config, parted)['trained_runs'] == 0
  assert not os.path.exists(stale)


# ------------------------------------------------------------------ results
def test_results_table_and_best_config(finished):
  config, directory, result = finished
  errors = [row['val_error'] for row in result['rows']]
  assert errors == sorted(errors)  # Ranked on the validation people.
  assert all(row['test_error'] is not None for row in result['rows'])  # Reported beside.
  with open(os.path.join(directory, 'results.md')) as f:
    text = f.read()
  lines = [l for l in text.splitlines() if l.startswith('| 1 |')]
  assert result['rows'][0]['run'] in lines[0] and 'Mean over seeds' in text
  assert 'validation error (chosen on)' in text and 'test error (reported)' in text
  # best_config.py is a config file: it loads, validates and is the chosen run's config.
  path = os.path.join(directory, 'best_config.py')
  module_spec = importlib.util.spec_from_file_location('best_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  best = module.get_config()
  runner.validate(best)
  with open(os.path.join(directory, 'runs', result['best_run'], 'config.json')) as f:
    assert workdir_lib.config_to_dict(best) == json.load(f)
  with open(path) as f:
    assert 'validation error' in f.read()
  # Chosen by the mean validation error over seeds: the learning rate with the lower mean.
  means = {}
  for row in result['rows']:
    means.setdefault(row['overrides']['optimizer.learning_rate'], []).append(row['val_error'])
  best_lr = min(means, key=lambda lr: np.mean(means[lr]))
  assert best.optimizer.learning_rate == best_lr
  assert report.choose_best(spec.expand(config), result['rows'])[0] == result['best_run']


@pytest.mark.parametrize('seeds', [False, True])
def test_the_choice_ignores_test_errors(seeds, tmp_path):
  """Permuting or inverting the test errors changes neither the ranking nor the choice.

  Mutant killed: ranking or choosing on ``test_error`` (e.g. ``report._error`` reading
  it) picks the run with the best test error, which here is never the best validation run.
  """
  grid = 'optimizer.learning_rate=0.01,0.02,0.05,0.1' + (';seed=0,1' if seeds else '')
  runs = spec.expand(sweep_config(grid))
  rng = np.random.default_rng(0)
  val = rng.uniform(5, 10, len(runs))

  def write(name, test):
    os.makedirs(tmp_path / name)
    return report.write(str(tmp_path / name), runs, summaries(test), grid)

  def summaries(test):
    return {r.name: {'val_error': float(v), 'test_error': float(t), 'status': 'done',
                     'error_unit': 'deg', 'baseline_mean_predictor_error': 20.0}
            for r, v, t in zip(runs, val, test)}

  base = write('a', np.full(len(runs), 7.0))
  for i, test in enumerate([-val, rng.permutation(val) * 3, rng.uniform(0, 1, len(runs))]):
    got = write(f'b{i}', test)
    assert got['best_run'] == base['best_run']
    assert [r['run'] for r in got['rows']] == [r['run'] for r in base['rows']]
  # Inverted test errors: the best test run is the worst validation run; not chosen.
  inverted = summaries(-val)
  best_by_test = min(inverted, key=lambda n: inverted[n]['test_error'])
  assert write('c', -val)['best_run'] != best_by_test
  # A sweep without validation people is refused before training.
  with pytest.raises(spec.SweepSpecError, match='num_val_people'):
    sweep.prepare(sweep_config(**{'data.num_val_people': 0}))


def test_discrete_groups_and_diverging_runs(tmp_path):
  """Two local-step groups; lr 1e30 diverges (in round 1 with 2 local steps, round 2 with 1)."""
  config = sweep_config('fl.local_steps=1,2;optimizer.learning_rate=0.05,1e30',
                        **{'optimizer.name': 'sgd', 'optimizer.clip_norm': 0.0,
                           'fl.server_optimizer': 'fedavg', 'fl.server_lr': 1.0})
  result = sweep.run_sweep(config, str(tmp_path / 'sweep'))
  status = {row['run']: row for row in result['rows']}
  assert status['local_steps=1,learning_rate=0.05']['status'] == 'done'
  assert status['local_steps=2,learning_rate=0.05']['status'] == 'done'
  assert [row['status'] for row in result['rows'][2:]] == ['rejected', 'rejected']
  summaries = {}
  for name in status:
    with open(tmp_path / 'sweep' / 'runs' / name / 'summary.json') as f:
      summaries[name] = json.load(f)
  assert summaries['local_steps=2,learning_rate=1e+30']['failure'].startswith('Round 1:')
  assert summaries['local_steps=1,learning_rate=1e+30']['failure'].startswith('Round 2:')
  # It was evaluated after round 1 (eval_every=1), but that is not its result.
  assert summaries['local_steps=1,learning_rate=1e+30']['test_error'] is None
  groups = {s['sweep']['group'] for s in summaries.values()}
  assert len(groups) == 2 and all(s['sweep']['runs_in_group'] == 2 for s in summaries.values())
  # The diverged run keeps its last good model (round 1) as an ordinary checkpoint.
  wd = workdir_lib.Workdir(str(tmp_path / 'sweep' / 'runs' / 'local_steps=1,learning_rate=1e+30'))
  assert wd.latest_step() == 1
  wd.close()
  assert 'rejected' in result['table']


# ------------------------------------------------------------------ PrivatEyes
def test_privateyes_sweep_runs_equal_single_runs(tmp_path):
  """Secure aggregation per run inside a group: each run equals its single PrivatEyes run."""
  config = sweep_config('optimizer.learning_rate=0.02,0.05;seed=0,1',
                        **{'aggregator.name': 'privateyes'})
  directory = str(tmp_path / 'sweep')
  # Interrupted after round 1 and resumed: the group's per-run MPC states come back.
  assert sweep.run_sweep(config, directory, halt_after=1) == {'halted_at_round': 1}
  result = sweep.run_sweep(config, directory)
  assert result['trained_runs'] == 4
  assert all(row['status'] == 'done' for row in result['rows'])
  runs = {r.name: r for r in spec.expand(config)}
  name = 'learning_rate=0.05,seed=1'
  single_config = runs[name].config.copy_and_resolve_references()
  single_config.fl.executor = 'client_parallel'
  single = runner.train_and_evaluate(single_config, str(tmp_path / 'single'))
  run_dir = os.path.join(directory, 'runs', name)
  # Float rounding of the batched training can move a fixed-point rounding (2^-f).
  assert_trees_close(final_params(run_dir), final_params(str(tmp_path / 'single')),
                     rtol=1e-4, atol=1e-5)
  with open(os.path.join(run_dir, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['test_error'] == pytest.approx(single['test_error'], rel=1e-4)
  assert summary['aggregator'] == 'privateyes'
  # The MPC costs are the engine's: shares uploaded, the mpc section of the summary.
  assert summary['upload_bytes_per_client'] == single['upload_bytes_per_client']
  assert summary['upload_bytes_per_client'] > 4 * summary['num_params']
  assert summary['mpc']['client_upload_bytes'] == single['mpc']['client_upload_bytes']
  rows = workdir_lib.Workdir(run_dir).read_metrics()
  assert all(0 < r['mpc/online_round_seconds'] < r['round_seconds'] for r in rows)
  # Each run has its own MAC key, as its single run (seed + 1).
  keys = [_saved_state(d)['aggregator_state']['mac_key_shares']
          for d in (run_dir, str(tmp_path / 'single'))]
  np.testing.assert_array_equal(*keys)
  # experiments.train finds the run finished (the checkpoint has the engine's layout).
  again = runner.train_and_evaluate(runs[name].config, run_dir)
  assert again['test_error'] == pytest.approx(summary['test_error'], rel=1e-6)


def test_cheating_server_aborts_only_its_runs(tmp_path):
  """A malicious server aborts the PrivatEyes runs; the plain-FL group of the sweep goes on."""
  config = sweep_config('aggregator.name=mean,privateyes',
                        **{'aggregator.adversary.kind': 'add_error',
                           'aggregator.adversary.server': 1})
  result = sweep.run_sweep(config, str(tmp_path / 'sweep'))
  status = {row['run']: row['status'] for row in result['rows']}
  assert status == {'name=mean': 'done', 'name=privateyes': 'aborted'}
  assert result['rows'][-1]['run'] == 'name=privateyes'  # Ranked last.
  assert result['best_run'] == 'name=mean'
  run_dir = tmp_path / 'sweep' / 'runs' / 'name=privateyes'
  with open(run_dir / 'summary.json') as f:
    summary = json.load(f)
  assert summary['status'] == 'aborted' and summary['test_error'] is None
  assert re.match(r'Round 1 aborted by the secure aggregation: .*(mac|MAC)', summary['failure'])
  # Aborted in round 1: no model was saved for it, and no round was logged.
  wd = workdir_lib.Workdir(str(run_dir))
  assert wd.latest_step() is None and wd.read_metrics() == []
  wd.close()


def test_group_whose_every_run_fails_ends_and_recommends_nothing(tmp_path, caplog):
  """A ring too small for the weight element itself: every run is out of range in round 1."""
  config = sweep_config('optimizer.learning_rate=0.02,0.05',
                        **{'aggregator.name': 'privateyes', 'aggregator.k': 16,
                           'aggregator.f': 15, 'fl.rounds': 3})
  directory = tmp_path / 'sweep'
  result = sweep.run_sweep(config, str(directory))
  assert [row['status'] for row in result['rows']] == ['out_of_range'] * 2
  assert result['best_run'] is None
  assert not (directory / 'best_config.py').exists()
  assert 'No run finished' in (directory / 'results.md').read_text()
  for row in result['rows']:
    with open(directory / 'runs' / row['run'] / 'summary.json') as f:
      summary = json.load(f)
    assert summary['failure'].startswith('Round 1: ') and 'exceeds the bound' in summary['failure']
    # What a PrivatEyes client uploads, even though no round was logged.
    assert summary['upload_bytes_per_client'] > 4 * summary['num_params']
  # The group stopped after round 1 instead of going through its 3 rounds.
  assert 'every run has stopped (round 1)' in caplog.text


# ------------------------------------------------------------------ command line
def test_command_line_rejects_bad_grids(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT)

  def sweep_cli(grid):
    return subprocess.run(
        [sys.executable, '-m', 'experiments.sweep', '--config=experiments/configs/sweep.py:tiny',
         f'--workdir={tmp_path / "cli"}', f'--config.sweep.grid={grid}'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

  unknown = sweep_cli('optimizer.learning_rat=0.1;seed=0,1')
  assert unknown.returncode == 1, unknown.stderr[-2000:]
  assert 'ERROR (SweepSpecError)' in unknown.stderr and 'Traceback' not in unknown.stderr
  assert "'optimizer.learning_rat'" in unknown.stderr
  assert 'optimizer.learning_rate' in unknown.stderr
  empty = sweep_cli('seed=range(0)')
  assert empty.returncode == 1 and 'range of seed is empty' in empty.stderr
