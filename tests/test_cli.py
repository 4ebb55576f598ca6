"""The absl entry point as a user runs it: readable errors, resume on re-run."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(*args):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, '-m', 'experiments.train',
                         '--config=experiments/configs/default.py:tiny', *args],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_cli_runs_and_rejects_bad_flags(tmp_path):
  wd = str(tmp_path / 'run')
  ok = _train(f'--workdir={wd}', '--config.train.steps=4', '--config.train.eval_every=2')
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert json.loads(ok.stdout)['steps'] == 4

  unknown = _train(f'--workdir={wd}', '--config.train.stepz=3')
  assert unknown.returncode != 0
  assert 'Unknown config field' in unknown.stderr and 'steps' in unknown.stderr

  changed = _train(f'--workdir={wd}', '--config.train.steps=6', '--config.train.eval_every=2')
  assert changed.returncode == 1
  assert 'different config' in changed.stderr and 'Traceback' not in changed.stderr

  env = dict(os.environ, PYTHONPATH=ROOT)
  preset = subprocess.run([sys.executable, '-m', 'experiments.train',
                           '--config=experiments/configs/default.py:tinyy', f'--workdir={wd}'],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert preset.returncode == 2
  assert "Unknown preset 'tinyy'" in preset.stderr and 'Traceback' not in preset.stderr


def test_attack_cli_explains_a_run_without_views(tmp_path):
  wd = str(tmp_path / 'run')
  ok = _train(f'--workdir={wd}', '--config.method=federated', '--config.fl.rounds=1')
  assert ok.returncode == 0, ok.stderr[-2000:]
  env = dict(os.environ, PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, '-m', 'experiments.attack',
                        '--config=experiments/configs/attack.py:tiny', f'--run={wd}',
                        f'--workdir={tmp_path / "attack"}'],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1, out.stderr[-2000:]
  assert 'no recorded views' in out.stderr and 'record_views=last' in out.stderr
  assert 'Traceback' not in out.stderr
