r"""Malicious clients against FedAvg and PrivatEyes, with and without a norm bound.

  python -m experiments.poisoning --workdir=runs/poisoning

Trains, on the same people and recipe:
* clean FedAvg and PrivatEyes (the reference errors);
* for each attack kind (``boost``: the attackers' own updates times ``factor``, as in
  model replacement; ``sign_flip``: times -``factor``): FedAvg without a check,
  FedAvg with the norm bound (the server excludes, by name, each client whose update
  norm exceeds it) and PrivatEyes (whose MAC check is blind to a client's input).
The norm bound is chosen on a clean run of shadow people (another identity seed):
``bound_margin`` times the largest honest update norm there. PrivatEyes checks the same
bound inside the MPC (``aggregator.validity``, docs/VALIDITY_DESIGN.md): honest clients
clip to it, the servers exclude by name every client above it without seeing any
update (``validity_runs``; the ``demo`` preset leaves these rows out for time). Finished runs are reused; ``poisoning.json`` and the table are written
to ``--workdir``. The report (``experiments.report --workdir=<workdir>``) lists every run
and the table.
"""

import json
import os

import numpy as np
from absl import flags
from scipy import stats
from ml_collections import config_flags

from experiments import common
from privateyes_jax import runner
from privateyes_jax import workdir as workdir_lib
from privateyes_jax.federated import engine
from privateyes_jax.mpc import ring

# Defined when the command runs, not at import: tests import this module beside other
# experiments that define the same flag names.
_FLAGS = {}


def _define_flags() -> None:
  if _FLAGS:
    return
  _FLAGS['config'] = config_flags.DEFINE_config_file(
      'config', os.path.join(os.path.dirname(__file__), 'configs', 'poisoning.py'),
      'Poisoning config (experiments/configs/poisoning.py[:demo|tiny]).', lock_config=True)
  _FLAGS['workdir'] = flags.DEFINE_string('workdir', 'runs/poisoning',
                                          'Where the runs are written.')
  _FLAGS['overwrite'] = flags.DEFINE_bool('overwrite', False, 'Start every run afresh.')


MPC_CHECK_SKIPPED = 'validity check: not run (preset small)'
MPC_CHECK = 'validity check (in MPC)'


def _train(config, workdir: str, overwrite: bool) -> dict:
  path = os.path.join(workdir, 'summary.json')
  if os.path.exists(path) and not overwrite:
    with open(path) as f:
      return json.load(f)
  return runner.train_and_evaluate(config, workdir, overwrite=overwrite)


def _metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [row for row in map(json.loads, f) if 'round' in row]


def _variant(base, *, aggregator='mean', kind='none', attackers=(), factor=1.0, bound=0.0,
             data_seed=None, validity=0.0, seed=None):
  c = base.copy_and_resolve_references()
  if seed is not None:
    c.seed = int(seed)
  c.aggregator.name = aggregator
  c.fl.malicious.kind = kind
  c.fl.malicious.clients = tuple(attackers)
  c.fl.malicious.factor = float(factor)
  c.aggregator.norm_bound = float(bound)
  c.aggregator.validity.enabled = bool(validity)
  c.aggregator.validity.clip_norm = float(validity or c.aggregator.validity.clip_norm)
  if data_seed is not None:
    c.data.seed = data_seed
  return c


def run_poisoning(config, root: str, overwrite: bool = False) -> dict:
  """Trains every run of the experiment under ``root``; returns the table as a dict."""
  base = config.base
  shadow = _variant(base, data_seed=config.shadow_data_seed)
  # A hidden directory: the report skips it (its people are not the reported ones).
  shadow_dir = os.path.join(root, '.shadow_clean')
  _train(shadow, shadow_dir, overwrite)
  honest_max = max(r['update_norm/max'] for r in _metrics(shadow_dir))
  bound = config.bound_margin * honest_max
  rows = []

  seeds = tuple(config.get('seeds', (0,)))

  def add(name, make, check):
    """Trains ``make(seed=...)`` for every training seed; one row with the mean and a
    95% t-interval over the seeds (the people and the attackers stay the same)."""
    errors, excluded, failures, summary = [], set(), [], None
    for seed in seeds:
      cfg = make(seed=seed)
      # The first seed keeps the single-seed layout (earlier runs are reused, the report
      # lists them); the others go to a hidden directory, which the report skips (it
      # wants one run per method) and the poisoning section summarises.
      directory = (os.path.join(root, name) if seed == seeds[0]
                   else os.path.join(root, '.seeds', f'{name}_seed{seed}'))
      try:
        summary = _train(cfg, directory, overwrite)
      except (ring.RingOverflowError, engine.RoundRejected, engine.RoundAborted) as e:
        # The attack can break training outright (e.g. a model so far off that honest
        # clients' updates leave the ring's range): that is the result, not a crash.
        failures.append(f'seed {seed}: ' + str(e).split('\n')[0])
        continue
      errors.append(summary['test_error'])
      excluded |= {c for r in _metrics(directory) for c in r.get('excluded_clients', [])}
    row = {'run': name, 'attack': cfg.fl.malicious.kind, 'check': check,
           'workdir': os.path.join(root, name), 'seeds': list(seeds), 'test_errors': errors,
           'test_error': float(np.mean(errors)) if errors else None,
           'interval': _interval(errors), 'excluded_clients': sorted(excluded)}
    if summary is not None:
      row.update(method=summary['method'],
                 mean_predictor_error=summary['baseline_mean_predictor_error'])
    if failures:
      row['failed'] = '; '.join(failures)
    rows.append(row)

  plain = lambda **kw: (lambda seed: _variant(base, seed=seed, **kw))
  checked = lambda **kw: plain(aggregator='privateyes', validity=bound, **kw)
  add('fedavg_clean', plain(), 'none')
  add('fedavg_clean_normcheck', plain(bound=bound), 'norm bound')
  add('privateyes_clean', plain(aggregator='privateyes'), 'none')
  if config.validity_runs:
    add('privateyes_clean_validity', checked(), MPC_CHECK)
  for kind in config.kinds:
    attack = dict(kind=kind, attackers=config.attackers, factor=config.factor)
    add(f'fedavg_{kind}', plain(**attack), 'none')
    add(f'fedavg_{kind}_normcheck', plain(bound=bound, **attack), 'norm bound')
    add(f'privateyes_{kind}', plain(aggregator='privateyes', **attack), 'none')
    if config.validity_runs:
      add(f'privateyes_{kind}_validity', checked(**attack), MPC_CHECK)
    else:
      rows.append({'run': f'privateyes_{kind}_validity', 'method': 'privateyes',
                   'attack': kind, 'check': MPC_CHECK_SKIPPED, 'test_error': None})
  out = {'attackers': list(config.attackers), 'factor': config.factor, 'seeds': list(seeds),
         'norm_bound': bound, 'shadow_honest_max_norm': honest_max,
         'shadow_data_seed': config.shadow_data_seed, 'rounds': config.rounds, 'rows': rows}
  workdir_lib.atomic_write_text(os.path.join(root, 'poisoning.json'),
                                json.dumps(out, indent=2) + '\n')
  return out


def _interval(values) -> list[float] | None:
  """95% t-interval of the mean over seeds (None below two seeds)."""
  if len(values) < 2:
    return None
  mean, sem = float(np.mean(values)), float(stats.sem(values))
  half = float(stats.t.ppf(0.975, len(values) - 1)) * sem
  return [mean - half, mean + half]


def format_cell(row: dict) -> str:
  """'4.51', '4.51 [4.30, 4.72]' over seeds, 'failed' or '–'."""
  if row.get('test_error') is None:
    return 'failed' if row.get('failed') else '–'
  cell = f'{row["test_error"]:.2f}'
  if row.get('interval'):
    cell += f' [{row["interval"][0]:.2f}, {row["interval"][1]:.2f}]'
  return cell


def format_table(out: dict) -> str:
  lines = [f'Attackers {out["attackers"]} (factor {out["factor"]:g}); norm bound '
           f'{out["norm_bound"]:.4g} = margin x the largest honest update norm of shadow '
           f'people (seed {out["shadow_data_seed"]}): {out["shadow_honest_max_norm"]:.4g}.',
           f'Training seeds {out.get("seeds", [0])}: held-out error, mean [95% t-interval].',
           f'{"run":<30} {"attack":<10} {"check":<36} {"held-out err":>22} {"excluded":<20}']
  for r in out['rows']:
    err = format_cell(r)
    lines.append(f'{r["run"]:<30} {r["attack"]:<10} {r["check"]:<36} {err:>22} '
                 f'{",".join(r.get("excluded_clients", [])) or "–":<20}')
  lines += [f'{r["run"]} failed: {r["failed"]}' for r in out['rows'] if r.get('failed')]
  mean_pred = [r['mean_predictor_error'] for r in out['rows'] if r.get('mean_predictor_error')]
  if mean_pred:
    lines.append(f'Mean predictor: {mean_pred[0]:.2f}.')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'Unexpected arguments: {argv[1:]}')
  out = run_poisoning(_FLAGS['config'].value, _FLAGS['workdir'].value,
                      overwrite=_FLAGS['overwrite'].value)
  print(format_table(out))


def entry_point():
  _define_flags()
  common.run(main)


if __name__ == '__main__':
  entry_point()
