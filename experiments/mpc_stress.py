r"""Randomized stress test of PrivatEyes' active security (SPDZ2k MAC check).

  python -m experiments.mpc_stress                       # about 2 minutes on 2 cores
  python -m experiments.mpc_stress --trials=10000 --small_s_trials=5000,5000

Part 1, escape rates at small s (4 and 8): each measured attack
(``security_suite.MEASURED``: a sign-bit error, an error that is a multiple of
2^k, a MAC adjusted by a guessed α, errors that cancel across elements for a χ
guessed by a dry run, and for the χ of an earlier aborted attempt) runs many
times; the escape rate is compared with the ideal check's (uniform α and χ,
``security_suite.ideal_escape_rate``) by a two-sided binomial test. A constant or
predictable χ makes the cancelling attacks escape every time.

Part 2, s=32: the randomized suite over every scenario (random S, server, client,
error); every attack must be detected and no honest round may abort.

Exits with status 1 if a binomial test rejects (p < 1e-4, Bonferroni over the rows),
an attack escaped at s=32, or an honest round aborted.
"""

import sys
import time

from absl import app
from absl import flags

from privateyes_jax.mpc import ring
from privateyes_jax.mpc import security_suite

_TRIALS = flags.DEFINE_integer('trials', 280, 'Trials of the s=32 suite.')
_SMALL_S_TRIALS = flags.DEFINE_list('small_s_trials', ['300', '600'],
                                    'Trials per measured attack at s=4 and at s=8.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the trial generator.')
_NUM_SERVERS_MAX = flags.DEFINE_integer('num_servers_max', 5,
                                        'Servers per s=32 trial: uniform in [2, this].')
_NUM_CLIENTS = flags.DEFINE_integer('num_clients', 4, 'Clients per round.')
_NUM_PARAMS = flags.DEFINE_integer('num_params', 8, 'Parameters per update.')
REJECT_P = 1e-4


def escape_rates(trials_per_s, seed):
  """Rows (s, scenario, trials, escapes, ideal rate, p-value) at s = 4 and 8."""
  rows = []
  for s, trials in zip((4, 8), trials_per_s):
    spec = ring.RingSpec(k=32, f=16, s=s)
    for scenario in security_suite.MEASURED:
      escapes = security_suite.measure_escapes(scenario, spec, trials, seed)
      ideal = security_suite.ideal_escape_rate(scenario, spec)
      rows.append((s, scenario, trials, escapes, ideal,
                   security_suite.binomial_p_value(escapes, trials, ideal)))
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  ok = True
  start = time.perf_counter()
  print(f'{"s":>3} {"attack":<20}{"trials":>7}{"escapes":>8}{"rate":>9}{"ideal":>9}'
        f'{"(s+1)2^-s":>10}{"binom p":>11}')
  for s, scenario, trials, escapes, ideal, p in escape_rates(
      [int(t) for t in _SMALL_S_TRIALS.value], _SEED.value):
    ok &= p >= REJECT_P
    print(f'{s:>3} {scenario:<20}{trials:>7}{escapes:>8}{escapes / trials:>9.4f}'
          f'{ideal:>9.4f}{(s + 1) / 2**s:>10.4f}{p:>11.3g}'
          f'{"  REJECTED" if p < REJECT_P else ""}')
  print(f'escape rates in {time.perf_counter() - start:.1f} s\n')

  start = time.perf_counter()
  report = security_suite.run_suite(
      num_trials=_TRIALS.value, seed=_SEED.value,
      num_servers_max=_NUM_SERVERS_MAX.value, num_clients=_NUM_CLIENTS.value,
      num_params=_NUM_PARAMS.value)
  print(f's=32: {"scenario":<20}{"trials":>8}{"detected":>10}{"failed":>8}')
  for scenario in sorted(report.trials):
    # For honest runs ('none') there is nothing to detect; failed = aborted.
    detected = '-' if scenario == 'none' else report.detected[scenario]
    print(f'      {scenario:<20}{report.trials[scenario]:>8}{detected:>10}'
          f'{report.failed[scenario]:>8}')
  print(f'{sum(report.trials.values())} trials in {time.perf_counter() - start:.1f} s')
  for failure in report.failures:
    print('FAILURE:', failure)
  if not (ok and report.ok):
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
