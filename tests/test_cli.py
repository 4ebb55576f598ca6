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
