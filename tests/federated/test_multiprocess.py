"""Two CPU processes on JAX's distributed runtime give the one-process result.

Each test launches `multiprocess_worker.py` as two processes on localhost (2
virtual CPU devices each, gloo collectives), so the sharded executor's mesh spans
4 devices in 2 processes, and as one 4-device reference process; the runs use
the same tiny federated config, and the multi-process run is interrupted after
round 1 and resumed, which exercises the multi-process checkpoints.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from privateyes_jax import distributed
from privateyes_jax import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 300


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _child_env(devices: int) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if not k.startswith('PRIVATEYES_')}
  flags = re.sub(r'--xla_force_host_platform_device_count=\d+', '', env.get('XLA_FLAGS', ''))
  env['XLA_FLAGS'] = f'{flags} --xla_force_host_platform_device_count={devices}'.strip()
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO, env.get('PYTHONPATH')) if p)
  return env


def _launch(tmp_path, name: str, args: list[str], devices: int):
  log = open(tmp_path / f'{name}.log', 'w')  # A file, not a pipe: no pipe-buffer stalls.
  proc = subprocess.Popen([sys.executable, '-m', 'tests.federated.multiprocess_worker', *args],
                          cwd=REPO, env=_child_env(devices), stdout=log,
                          stderr=subprocess.STDOUT)
  return proc, log, tmp_path / f'{name}.log'


def _wait_all(launched) -> None:
  """Waits for every process; on a failure or timeout kills the rest and shows the logs."""
  failed = []
  for proc, log, path in launched:
    try:
      rc = proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
      rc = 'timeout'
    log.close()
    if rc != 0:
      failed.append((path, rc))
  if failed:
    for proc, _, _ in launched:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
    report = []
    for path, rc in failed:
      text = ''.join(line for line in open(path) if not line.startswith('[Gloo]'))
      report.append(f'--- {path.name} (exit {rc}) ---\n{text[-6000:]}')
    pytest.fail('worker process(es) failed:\n' + '\n'.join(report))


def _params(out_dir, process: int) -> np.ndarray:
  return np.load(os.path.join(out_dir, f'params_{process}.npz'))['params']


@pytest.mark.skipif(not distributed.cpu_collectives_available(),
                    reason='the installed jaxlib has no gloo CPU collectives, so two CPU '
                           'processes cannot run one sharded program')
@pytest.mark.parametrize('aggregator', ['mean', 'privateyes'])
def test_two_processes_match_one_process(tmp_path, aggregator):
  port = _free_port()
  multi_out, ref_out = tmp_path / 'multi_out', tmp_path / 'ref_out'
  workdir = tmp_path / 'multi_workdir'
  common = ['--rounds=2', f'--aggregator={aggregator}']
  launched = [
      _launch(tmp_path, f'process_{i}',
              [*common, '--num_processes=2', f'--process_id={i}',
               f'--coordinator=localhost:{port}', f'--workdir={workdir}',
               f'--out={multi_out}', '--halt_first'], devices=2)
      for i in range(2)]
  launched.append(_launch(tmp_path, 'reference',
                          [*common, f'--workdir={tmp_path / "ref_workdir"}', f'--out={ref_out}'],
                          devices=4))
  _wait_all(launched)

  infos = [json.load(open(multi_out / f'info_{i}.json')) for i in range(2)]
  for i, info in enumerate(infos):
    assert info['process_index'] == i and info['process_count'] == 2
    assert info['local_device_count'] == 2 and info['device_count'] == 4
    assert info['executor'] == 'sharded' and info['is_primary'] == (i == 0)
  ref_info = json.load(open(ref_out / 'info_0.json'))
  assert ref_info['process_count'] == 1 and ref_info['device_count'] == 4

  # Every process ends with the same global model, and it is the one-process model.
  np.testing.assert_array_equal(_params(multi_out, 0), _params(multi_out, 1))
  np.testing.assert_allclose(_params(multi_out, 0), _params(ref_out, 0), rtol=1e-5, atol=1e-6)
  assert np.abs(_params(ref_out, 0)).max() > 0

  # Process 0 alone wrote the files: one metrics row per round (round 1 written
  # before the interruption, round 2 after resuming), and a readable checkpoint.
  rows = workdir_lib.read_metrics(str(workdir / workdir_lib.METRICS_FILE))
  assert [r['round'] for r in rows] == [1, 2]
  summary = json.load(open(workdir / workdir_lib.SUMMARY_FILE))
  assert summary['rounds'] == 2 and summary['executor'] == 'sharded'
  from jax.flatten_util import ravel_pytree  # pylint: disable=g-import-not-at-top
  from tests.helpers import final_params  # pylint: disable=g-import-not-at-top
  saved = np.asarray(ravel_pytree(final_params(str(workdir)))[0])
  np.testing.assert_array_equal(saved, _params(multi_out, 0))


def test_resolve_reads_flags_then_environment():
  env = {distributed.ENV_COORDINATOR: 'host0:7777', distributed.ENV_NUM_PROCESSES: '4',
         distributed.ENV_PROCESS_ID: '3', distributed.ENV_LOCAL_DEVICE_IDS: '0,1'}
  group = distributed.resolve(environ=env)
  assert group == distributed.ProcessGroup('host0:7777', 4, 3, (0, 1))
  assert group.multi_process
  # Flags win over the environment.
  group = distributed.resolve('host1:1', 2, 1, environ=env)
  assert (group.coordinator_address, group.num_processes, group.process_id) == ('host1:1', 2, 1)
  # Nothing set: one process, nothing to initialise.
  single = distributed.resolve(environ={})
  assert single == distributed.ProcessGroup(None, 1, 0) and not single.multi_process
  assert not distributed.initialize(num_processes=1).multi_process
  with pytest.raises(ValueError, match='coordinator'):
    distributed.resolve(num_processes=2, process_id=0, environ={})
  with pytest.raises(ValueError, match='process_id=2'):
    distributed.resolve('h:1', 2, 2, environ={})
  with pytest.raises(ValueError, match='PRIVATEYES_NUM_PROCESSES'):
    distributed.resolve(environ={distributed.ENV_NUM_PROCESSES: 'two'})


def test_single_process_is_primary():
  assert distributed.is_primary() and workdir_lib.is_primary()
  distributed.barrier('no-op with one process')
