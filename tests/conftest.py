"""Test-wide set-up: 8 virtual CPU devices (sharded executors) and CPU-only JAX.

Runs before any test module imports jax, which is when XLA reads these flags.
"""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
_flags = os.environ.get('XLA_FLAGS', '')
if '--xla_force_host_platform_device_count' not in _flags:
  os.environ['XLA_FLAGS'] = (_flags + ' --xla_force_host_platform_device_count=8').strip()


import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope='session')
def recorded_runs(tmp_path_factory):
  """A tiny FedAvg run and the same run under PrivatEyes, both recording the last round.

  Shared by the attack and report tests (training them is the slow part).
  """
  from privateyes_jax import runner  # pylint: disable=g-import-not-at-top
  from tests.federated.test_engine import fl_config  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('recorded_runs')
  plain, secure = str(root / 'fedavg'), str(root / 'privateyes')
  runner.train_and_evaluate(fl_config(record_views='last'), plain)
  runner.train_and_evaluate(fl_config(record_views='last', **{'aggregator.name': 'privateyes'}),
                            secure)
  return plain, secure


@pytest.fixture(scope='session')
def recorded_attack(recorded_runs, tmp_path_factory):
  """The tiny DualView attack of both recorded runs, with the reviewer's rows (a, c) and
  membership inference: ``(summary, attack dir)``. Shared by the attack and report tests."""
  from privateyes_jax.attacks import pipeline  # pylint: disable=g-import-not-at-top
  config = pipeline.default_config('tiny')
  config.min_classifier_accuracy = 0.0  # Wiring, not attack strength.
  config.extra_rows = ('gradient_inversion', 'sybil')
  config.membership_inference = True
  out_dir = str(tmp_path_factory.mktemp('recorded_attack') / 'attack')
  return pipeline.run_attack(config, list(recorded_runs), out_dir), out_dir
