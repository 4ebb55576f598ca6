"""PrivatEyes inside federated training: same model as FedAvg, aborts on cheating, views."""

import json
import os

import jax
import numpy as np
import pytest

from privateyes_jax import runner
from privateyes_jax import workdir as workdir_lib
from privateyes_jax.federated import engine
from tests.federated.test_engine import final_params, fl_config


def _flat(workdir):
  return jax.flatten_util.ravel_pytree(final_params(workdir))[0]


@pytest.mark.parametrize('mode', ['privateyes', 'privateyes_semi_honest'])
def test_privateyes_matches_fedavg(tmp_path, mode):
  fedavg = runner.train_and_evaluate(fl_config(), str(tmp_path / 'fedavg'))
  secure = runner.train_and_evaluate(fl_config(**{'aggregator.name': mode}),
                                     str(tmp_path / mode))
  # Fixed point with f=16 bits: each client's input is rounded to 2^-17.
  np.testing.assert_allclose(_flat(tmp_path / mode), _flat(tmp_path / 'fedavg'), atol=1e-4)
  assert abs(secure['test_error'] - fedavg['test_error']) < 0.05
  assert secure['method'] == mode
  rows = [json.loads(l) for l in open(tmp_path / mode / 'metrics.jsonl')]
  assert rows[0]['upload_bytes_per_client'] > rows[0]['mpc/plain_fl_upload_bytes']
  for key in ('mpc/sharing_s', 'mpc/aggregation_s', 'mpc/checking_s', 'mpc/server_send_bytes',
              'mpc/interaction_rounds'):
    assert key in rows[0], key
  # summary.json's mpc section: per-round means, and the generic-MPC estimate for both.
  mpc = secure['mpc']
  assert mpc['client_upload_bytes'] == rows[0]['mpc/client_upload_bytes']
  assert mpc['sharing_s'] == pytest.approx(np.mean([r['mpc/sharing_s'] for r in rows]))
  assert mpc['forward_multiplies_per_sample'] > 1000
  # Only the malicious-secure mode has a dealer, whose offline phase is estimated.
  assert ('offline_estimate_s' in mpc) == (mode == 'privateyes')
  assert 0 < mpc['online_round_seconds'] <= mpc['round_seconds']
  assert mpc['samples_trained'] == 3 * 4 * 2 * 8  # rounds x clients x local steps x batch.
  assert fedavg['mpc']['generic_mpc_estimate_s'] == mpc['generic_mpc_estimate_s'] > 0
  assert 'client_upload_bytes' not in fedavg['mpc']


@pytest.mark.parametrize('server_optimizer', ['fedavgm', 'fedadam', 'fedyogi'])
def test_privateyes_with_adaptive_server_optimizers(tmp_path, server_optimizer):
  overrides = {'fl.server_optimizer': server_optimizer, 'fl.rounds': 2,
               'fl.server_lr': 1.0 if server_optimizer == 'fedavgm' else 0.01}
  runner.train_and_evaluate(fl_config(**overrides), str(tmp_path / 'plain'))
  secure = runner.train_and_evaluate(
      fl_config(**overrides, **{'aggregator.name': 'privateyes'}), str(tmp_path / 'secure'))
  assert secure['method'] == f'privateyes+{server_optimizer}'
  # Adaptive optimizers normalise tiny differences, so compare loosely.
  np.testing.assert_allclose(_flat(tmp_path / 'secure'), _flat(tmp_path / 'plain'), atol=2e-3)


def test_cheating_server_aborts_and_keeps_checkpoints(tmp_path, monkeypatch):
  honest_config = fl_config(**{'aggregator.name': 'privateyes'})
  ref = str(tmp_path / 'ref')
  runner.train_and_evaluate(honest_config, ref, halt_after=1)

  # Server 1 turns malicious in round 2: it adds an error to its shares of the sum.
  cheating_config = fl_config(**{'aggregator.name': 'privateyes',
                                 'aggregator.adversary.kind': 'add_error',
                                 'aggregator.adversary.server': 1})
  build = engine.build_aggregator

  class TurnsMalicious:
    def __init__(self, *args):
      self.honest = build(honest_config, *args)
      self.cheating = build(cheating_config, *args)
      self.name = self.honest.name

    def init(self, key):
      return self.honest.init(key)

    def apply(self, state, updates, weights, key, round_idx, **kwargs):
      agg = self.honest if round_idx == 0 else self.cheating
      return agg.apply(state, updates, weights, key, round_idx, **kwargs)

  monkeypatch.setattr(engine, 'build_aggregator', lambda config, *args: TurnsMalicious(*args))
  wd = str(tmp_path / 'run')
  with pytest.raises(engine.RoundAborted, match=r'Round 2 aborted .*(mac|MAC)'):
    runner.train_and_evaluate(honest_config, wd)
  wd_obj = workdir_lib.Workdir(wd)
  assert wd_obj.latest_step() == 1
  wd_obj.close()
  jax.tree.map(np.testing.assert_array_equal, final_params(wd), final_params(ref))
  rows = [json.loads(l) for l in open(os.path.join(wd, 'metrics.jsonl'))]
  assert [r['round'] for r in rows] == [1]


def test_recorded_views(tmp_path):
  plain = str(tmp_path / 'plain')
  runner.train_and_evaluate(fl_config(record_views='last'), plain)
  view = np.load(os.path.join(plain, 'views', 'round_00003.npz'))
  assert view['view/individual_updates'].shape == (4, view['global_params'].size)
  assert str(view['aggregator']) == 'mean' and list(view['client_names']) == [
      'p00', 'p01', 'p02', 'p03']

  secure = str(tmp_path / 'secure')
  runner.train_and_evaluate(fl_config(record_views='last', **{'aggregator.name': 'privateyes'}),
                            secure)
  sview = np.load(os.path.join(secure, 'views', 'round_00003.npz'))
  estimate = sview['view/coalition_input_estimate']
  assert estimate.dtype == np.uint64 and estimate.shape[0] == 4
  assert 'view/individual_updates' not in sview
  # Same seed, same individual updates; what the coalition holds looks nothing like them:
  # its estimate is off by the honest server's uniformly random share.
  low = (estimate & np.uint64(0xFFFFFFFF)).astype(np.int64)
  assert np.abs(low).mean() > 2**28  # Uniform over 32 bits, not small fixed-point values.
