r"""Randomized stress test of PrivatEyes' active security (SPDZ2k MAC check).

  python -m experiments.mpc_stress --trials=10000 --seed=0

Each trial draws the number of servers, one malicious server, its deviation and a
random error (privateyes_jax.mpc.security_suite) and runs a real aggregation
round. Prints trials and detections per adversary kind and exits with status 1 if
any attack went undetected or any honest round aborted.
"""

import sys
import time

from absl import app
from absl import flags

from privateyes_jax.mpc import security_suite

_TRIALS = flags.DEFINE_integer('trials', 10000, 'Number of random trials.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the trial generator.')
_NUM_SERVERS_MAX = flags.DEFINE_integer('num_servers_max', 5,
                                        'Servers per trial: uniform in [2, this].')
_NUM_CLIENTS = flags.DEFINE_integer('num_clients', 4, 'Clients per round.')
_NUM_PARAMS = flags.DEFINE_integer('num_params', 8, 'Parameters per update.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  start = time.perf_counter()
  report = security_suite.run_suite(
      num_trials=_TRIALS.value, seed=_SEED.value,
      num_servers_max=_NUM_SERVERS_MAX.value, num_clients=_NUM_CLIENTS.value,
      num_params=_NUM_PARAMS.value)
  seconds = time.perf_counter() - start
  print(f'{"adversary kind":<22}{"trials":>8}{"detected":>10}{"failed":>8}')
  for kind in sorted(report.trials):
    # For honest runs ('none') there is nothing to detect; failed = aborted.
    detected = '-' if kind == 'none' else report.detected[kind]
    print(f'{kind:<22}{report.trials[kind]:>8}{detected:>10}'
          f'{report.failed[kind]:>8}')
  print(f'{sum(report.trials.values())} trials in {seconds:.1f} s')
  for failure in report.failures:
    print('FAILURE:', failure)
  if not report.ok:
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
