r"""The demo job behind ``./run.sh``: every method on the synthetic identities, then DualView.

  python -m experiments.demo --workdir=runs/demo

Each method trains into its own sub-workdir (``runs/demo/<method>``), so re-running
resumes or reuses finished runs. ``--overwrite`` starts everything afresh. The
DualView attack then reads what the FedAvg server and the PrivatEyes coalition saw
in the last round (``runs/demo/attack``) and prints the privacy table with 95%
intervals; its budget is ``experiments/configs/attack.py:demo`` (2 attack seeds;
``--attack=false`` skips it). ``--federations=N`` trains N-1 more federations (FedAvg
and PrivatEyes with training seeds 1..N-1, into
``runs/demo/federations/seed<s>/``) and attacks all N; the default is 1 to keep the
demo within 15 minutes on 2 CPU cores. Last, the Markdown report of everything
(``runs/demo/report/report.md``) is written.
"""

import os
import time

from absl import flags
from absl import logging

from experiments import common
from experiments.configs import demo as demo_configs
from privateyes_jax import report
from privateyes_jax import runner
from privateyes_jax.attacks import pipeline

_WORKDIR = flags.DEFINE_string('workdir', 'runs/demo', 'Where the demo runs are written.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Start every demo run afresh.')
_ATTACK = flags.DEFINE_bool('attack', True, 'Run DualView on the FedAvg and PrivatEyes runs.')
_FEDERATIONS = flags.DEFINE_integer(
    'federations', 1, 'Federations (training seeds 0..N-1) of the attacked runs; each extra '
    'one trains FedAvg and PrivatEyes again (about 3 min on 2 cores).')

# (run name, config argument of experiments/configs/demo.py) in the order they run.
DEMO_RUNS = ('centralized', 'fedavg', 'privateyes', 'local')
# The runs whose recorded last round DualView attacks.
ATTACKED_RUNS = ('fedavg', 'privateyes')


def federation_workdir(root: str, seed: int, name: str) -> str:
  """Where the demo trains ``name`` for the extra federation of training seed ``seed``."""
  return os.path.join(root, 'federations', f'seed{seed}', name)


def format_table(rows: list[tuple[str, dict]]) -> str:
  """The demo's results table: held-out error per method, against centralized and the
  mean predictor, with each federated method's round time and upload per client."""
  reference = dict(rows).get('centralized', {}).get('test_error')
  lines = [f'{"method":<12} {"held-out err (deg)":>18} {"vs central":>10} '
           f'{"mean pred (deg)":>15} {"clients":>7} {"rounds":>6} {"s/round":>8} '
           f'{"upload/client":>13} {"time (s)":>8}']
  for name, s in rows:
    rel = f'{s["test_error"] / reference:>9.2f}x' if reference else f'{"":>10}'
    rounds = s.get('rounds')
    per_round = s.get('mean_round_seconds')
    upload = s.get('upload_bytes_per_client')
    lines.append(
        f'{name:<12} {s["test_error"]:>18.2f} {rel} {s["baseline_mean_predictor_error"]:>15.2f} '
        f'{s.get("num_clients", s["num_people_train"]):>7d} '
        f'{rounds if rounds else "-":>6} '
        f'{(f"{per_round:.2f}" if per_round else "-"):>8} '
        f'{(f"{upload / 2**20:.1f} MiB" if upload and name != "local" else "-"):>13} '
        f'{s["wall_time_s"]:>8.1f}')
  return '\n'.join(lines)


def main(argv):
  del argv  # Unused.
  t0 = time.perf_counter()
  rows = []
  for name in DEMO_RUNS:
    config = demo_configs.get_config(name)
    workdir = os.path.join(_WORKDIR.value, name)
    logging.info('Demo: training %s into %s', name, workdir)
    rows.append((name, runner.train_and_evaluate(config, workdir, overwrite=_OVERWRITE.value)))
  print()
  print('PrivatEyes-JAX demo: synthetic identities, held-out people')
  print(format_table(rows))
  report_paths = [os.path.join(_WORKDIR.value, name) for name in DEMO_RUNS]
  attack_dir = os.path.join(_WORKDIR.value, 'attack')
  if _ATTACK.value:
    targets = [os.path.join(_WORKDIR.value, n) for n in ATTACKED_RUNS]
    for seed in range(1, _FEDERATIONS.value):
      for name in ATTACKED_RUNS:
        config = demo_configs.get_config(name)
        config.seed = seed
        workdir = federation_workdir(_WORKDIR.value, seed, name)
        logging.info('Demo: training %s (training seed %d) into %s', name, seed, workdir)
        runner.train_and_evaluate(config, workdir, overwrite=_OVERWRITE.value)
        targets.append(workdir)
    logging.info('Demo: DualView on %s into %s', ', '.join(targets), attack_dir)
    t = time.perf_counter()
    out = pipeline.run_attack(pipeline.default_config('demo'), targets, attack_dir,
                              overwrite=_OVERWRITE.value)
    print()
    pipeline.print_summary(out)
    print(f'Per-person scores, reconstructions and gaze plots: {os.path.abspath(attack_dir)}/'
          f'{{per_person,reconstructions,gaze}}.png (attack stage {time.perf_counter() - t:.0f} s)')
  if os.path.exists(os.path.join(attack_dir, 'summary.json')):
    report_paths.append(attack_dir)
  # The runs by name (not the whole tree): extra federations repeat the method labels.
  report_path = report.build_report([p for p in report_paths if os.path.isdir(p)],
                                    os.path.join(_WORKDIR.value, 'report'))
  print(f'\nReport (accuracy, cost and privacy tables, figures): {os.path.abspath(report_path)}')
  print(f'\nRuns, metrics and checkpoints are in {os.path.abspath(_WORKDIR.value)}/'
        f' (total {time.perf_counter() - t0:.0f} s).')


def entry_point():
  common.run(main)


if __name__ == '__main__':
  entry_point()
