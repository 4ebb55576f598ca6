r"""Secure sum of the same vectors in MPyC (an existing MPC framework) and in PrivatEyes-JAX.

  pip install mpyc                      # only for this comparison; not a project dependency
  python -m experiments.bench.mpyc_compare --clients=15 --values=100000

MPyC (Schoenmakers, https://github.com/lschoe/mpyc) runs 3 parties as local processes
(Shamir secret sharing, semi-honest, honest majority): the client vectors are
secret-shared as secure fixed-point numbers, summed and the sum opened. PrivatEyes-JAX
aggregates the same vectors with ``privateyes_semi_honest`` and ``privateyes``
(SPDZ2k-style MACs, dishonest majority) with 3 servers simulated in one program. Both
sums are checked against the float sum. Times are wall clock of the secure part only.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

MPYC_PARTY = textwrap.dedent('''
    import sys, time
    import numpy as np
    from mpyc.runtime import mpc
    secfxp = mpc.SecFxp(32, 16)
    async def main():
        data = np.load(sys.argv[1])
        await mpc.start()
        t0 = time.perf_counter()
        rows = [mpc.input([secfxp(float(v)) for v in row] if mpc.pid == 0 else
                          [secfxp(None)] * data.shape[1], senders=0) for row in data]
        total = rows[0]
        for row in rows[1:]:
            total = mpc.vector_add(total, row)
        out = await mpc.output(total)
        seconds = time.perf_counter() - t0
        await mpc.shutdown()
        if mpc.pid == 0:
            err = float(np.max(np.abs(np.array(out, dtype=float) - data.sum(0))))
            print(f'MPYC seconds={seconds:.3f} max_abs_err={err:.2e}')
    mpc.run(main())
''')


def run_mpyc(data: np.ndarray) -> str:
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'data.npy')
    np.save(path, data)
    script = os.path.join(tmp, 'party.py')
    with open(script, 'w') as f:
      f.write(MPYC_PARTY)
    procs = [subprocess.Popen([sys.executable, script, path, '-M3', f'-I{i}', '--no-log'],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(3)]
    outs = [p.communicate(timeout=1800)[0] for p in procs]
  line = [l for l in outs[0].splitlines() if l.startswith('MPYC')]
  return line[0] if line else 'MPyC failed:\n' + outs[0][-2000:]


def run_ours(data: np.ndarray, mode: str, repeats: int = 3) -> tuple[float, float]:
  import jax  # pylint: disable=g-import-not-at-top
  from privateyes_jax.mpc import aggregator  # pylint: disable=g-import-not-at-top
  agg = aggregator.SecureAggregator(max_weight=1.0, num_servers=3, mode=mode)
  state = agg.init(jax.random.PRNGKey(0))
  updates = jax.numpy.asarray(data, jax.numpy.float32)
  weights = jax.numpy.ones(len(data), jax.numpy.float32)  # w/w_max = 1: a plain sum.
  _, result = agg.apply(state, updates, weights, jax.random.PRNGKey(1), 0)  # Compile.
  best = float('inf')
  for r in range(repeats):
    t0 = time.perf_counter()
    _, result = agg.apply(state, updates, weights, jax.random.PRNGKey(2 + r), r)
    jax.block_until_ready(result.mean_update)
    best = min(best, time.perf_counter() - t0)
  total = np.asarray(result.mean_update) * float(result.total_weight)
  return best, float(np.max(np.abs(total - data.sum(0))))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--clients', type=int, default=15)
  parser.add_argument('--values', type=int, default=100_000)
  args = parser.parse_args()
  data = np.random.default_rng(0).normal(0, 0.01, (args.clients, args.values))
  print(f'secure sum of {args.clients} x {args.values} values, 3 parties, this machine')
  for mode in ('privateyes_semi_honest', 'privateyes'):
    seconds, err = run_ours(data, mode)
    print(f'privateyes_jax {mode:<24} seconds={seconds:.3f} max_abs_err={err:.2e}')
  print('mpyc (Shamir, semi-honest, 3 processes)', run_mpyc(data))


if __name__ == '__main__':
  main()
