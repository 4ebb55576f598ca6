r"""The accuracy–privacy curve of client-level DP (issue #15): error and attacks against ε.

  python -m experiments.dp_curve --workdir=runs/dp_curve \
      --config=experiments/configs/dp_curve.py:cpu      # 2 CPU cores, about half an hour
  python -m experiments.dp_curve --workdir=runs/dp_curve_full \
      --config=experiments/configs/dp_curve.py:full     # one GPU

For every aggregator (``mean``: plain FL with central DP, the baseline; ``privateyes``:
every server's noise inside the MPC) and every ε of the config (``inf``: the same
clipping and Poisson sampling without noise), it trains ``<workdir>/<agg>/eps<ε>/``
(``.../seed<s>/`` with several training seeds), then attacks each ε's runs together
(``<workdir>/attack/eps<ε>/``: DualView per threat model with 95% intervals against
chance, and membership inference on the output models; one GAN prior and one
evaluation classifier serve every ε), measures round differencing from the public
cohorts, and writes ``<workdir>/dp_curve.json``, the table it prints, and the Markdown
report of everything (``<workdir>/report/report.md``, with the curve's table and figure).
Rerunning reuses finished runs and attacks; ``--overwrite`` starts afresh.

Round differencing needs the opened aggregates of the rounds it combines and, to isolate
a client, a set of cohorts whose span contains that client alone (`differencing`). Which
clients a coalition can isolate depends only on the cohorts, which are public (the
Poisson samples of the run's seed), so it is counted from them for every window of the
config; DualView on an isolated client's estimate needs ``record_views='all'`` and is
run only where some client is isolated (never at the presets' scales: fewer rounds than
clients).
"""

import json
import math
import os
import shutil
import time

import numpy as np
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import common
from privateyes_jax import report
from privateyes_jax import runner
from privateyes_jax import workdir as workdir_lib
from privateyes_jax.attacks import differencing
from privateyes_jax.attacks import evaluation
from privateyes_jax.attacks import pipeline
from privateyes_jax.attacks import scoring
from privateyes_jax.privacy import dp as dp_lib

# Defined when the command runs, not at import: tests import this module beside other
# experiments that define the same flag names.
_FLAGS = {}


def _define_flags() -> None:
  if _FLAGS:
    return
  _FLAGS['config'] = config_flags.DEFINE_config_file(
      'config', os.path.join(os.path.dirname(__file__), 'configs', 'dp_curve.py') + ':cpu',
      'Curve config (experiments/configs/dp_curve.py:cpu|full|tiny).', lock_config=True)
  _FLAGS['workdir'] = flags.DEFINE_string('workdir', 'runs/dp_curve',
                                          'Where the curve\'s runs go.')
  _FLAGS['overwrite'] = flags.DEFINE_bool('overwrite', False,
                                          'Start every run and attack afresh.')


CURVE_FILE = 'dp_curve.json'
# DualView rows per aggregator: the per-client view first (the curve's re-identification).
THREAT_ROWS = {'mean': ('plain_fl',),
               'privateyes': ('privateyes', 'privateyes_output_model', 'generic_mpc')}
MEMBERSHIP_LABEL = {'mean': 'plain_fl', 'privateyes': 'privateyes'}


def eps_name(eps: float) -> str:
  """``eps`` as a directory and table label: ``'inf'`` or e.g. ``'2'``."""
  return 'inf' if math.isinf(eps) else f'{eps:g}'


def point_workdir(root: str, aggregator: str, eps: float, seed: int, seeds) -> str:
  """Where the run of one point (and training seed) trains."""
  path = os.path.join(root, aggregator, f'eps{eps_name(eps)}')
  return os.path.join(path, f'seed{seed}') if len(seeds) > 1 else path


def point_config(config, aggregator: str, eps: float, seed: int):
  """The run of one point: ``config.train`` with the aggregator, the seed and ε (``inf``:
  noise multiplier 0, the same clipping and sampling without noise)."""
  if aggregator not in THREAT_ROWS:
    raise ValueError(f'Unknown aggregator {aggregator!r} in the curve; available: '
                     f'{", ".join(THREAT_ROWS)}.')
  if not (eps > 0):
    raise ValueError(f'Every ε of the curve must be > 0 (inf: no noise), got {eps}.')
  c = config.train.copy_and_resolve_references()
  c.aggregator.name = aggregator
  c.seed = int(seed)
  if math.isinf(eps):
    c.aggregator.dp.target_epsilon = 0.0
    c.aggregator.dp.noise_multiplier = 0.0
  else:
    c.aggregator.dp.target_epsilon = float(eps)
  return c


def isolated_by_differencing(train_config, seed: int, window: int) -> dict:
  """Clients a coalition isolates by differencing the run's public cohorts (`differencing`).

  The cohorts are the run's Poisson samples (a public function of the seed, as the
  servers see who submits); the opened sums do not change which clients are isolated,
  so placeholders stand in for them.
  """
  data, fl = train_config.data, train_config.fl
  n = data.num_people - data.num_test_people - data.get('num_val_people', 0)
  q = fl.clients_per_round / n
  rounds = []
  for r in range(fl.rounds):
    cohort = tuple(f'c{i}' for i in dp_lib.poisson_sample(seed, r, n, q))
    rounds.append(differencing.OpenedRound(r + 1, cohort, np.zeros(1), np.zeros(1),
                                           float(len(cohort))))
  result = differencing.differencing_targets(rounds, 'lstsq', window=window)
  return {'window': window, 'isolated': len(result.targets), 'clients': n,
          'rounds': fl.rounds, 'one_client_pairs': result.usable_pairs}


def _row_summary(row: dict) -> dict:
  """What the curve keeps of a DualView row: the count and AUC with their intervals."""
  keep = {k: row[k] for k in ('reidentified', 'auc_vs_null', 'rank', 'shared', 'num_people',
                              'attack_seeds', 'federations', 'view', 'label_error',
                              'baseline_label_error') if k in row}
  return keep


def _membership(out: dict, label: str) -> list[dict]:
  """The loss-threshold membership results of the runs named ``label`` (one per seed)."""
  found = []
  for name, result in (out.get('membership') or {}).items():
    if name == label or name.startswith(label + ' ('):
      lt = result.get('loss_threshold')
      if lt:
        found.append({'run': name, 'auc': lt['auc'], 'auc_ci95': list(lt['auc_ci95']),
                      'p_value': lt['p_value'], 'num_members': lt['num_members'],
                      'num_nonmembers': lt['num_nonmembers']})
  return found


def attack_point(config, root: str, eps: float, attack_dir: str, prior_dir: str,
                 cache: dict, overwrite: bool) -> dict:
  """DualView and membership inference on one ε's runs, every aggregator and seed.

  Each training seed is its own federation, attacked on the clients its last round
  sampled (Poisson sampling picks other people under another seed, and the pipeline
  attacks the same people in every target run), in ``attack_dir/seed<s>``; the rows
  then pool every federation's per-person results (`scoring.summarize_row`), as the
  pipeline pools federations of the same people. One seed: ``attack_dir`` itself.
  """
  seeds = tuple(config.seeds)
  attack = lambda s, directory: pipeline.run_attack(
      config.attack, [point_workdir(root, agg, eps, s, seeds) for agg in config.aggregators],
      directory, overwrite=overwrite, prior_dir=prior_dir, cache=cache)
  if len(seeds) == 1:
    return attack(seeds[0], attack_dir)
  parts = {s: attack(s, os.path.join(attack_dir, f'seed{s}')) for s in seeds}
  sizes = {s: out['num_people'] for s, out in parts.items()}
  if len(set(sizes.values())) > 1:
    raise ValueError(f'ε={eps_name(eps)}: the federations attack different numbers of clients '
                     f'{sizes} (a last round sampled fewer than attack.max_people); the '
                     'pooled re-identification count needs one chance level. Lower '
                     'attack.max_people.')
  per_person = {}
  for out in parts.values():
    for name, rows in out['per_person'].items():
      per_person.setdefault(name, []).extend(rows)
  first = parts[seeds[0]]
  rows = {}
  for name, person_rows in per_person.items():
    shared = bool(first['threat_models'][name].get('shared'))
    rows[name] = {**first['threat_models'][name],
                  **scoring.summarize_row(person_rows, sizes[seeds[0]], shared)}
  membership = {f'{name} (seed {s})': result for s, out in parts.items()
                for name, result in (out.get('membership') or {}).items()}
  # What run_curve reads; each seed's own summary.json keeps the rest (classifier, timings).
  return {'threat_models': rows, 'membership': membership, 'num_people': sizes[seeds[0]]}


def run_curve(config, root: str, overwrite: bool = False) -> dict:
  """Trains, attacks and summarises every point; writes and returns ``dp_curve.json``."""
  t0 = time.perf_counter()
  for eps in config.epsilons:
    if not eps > 0:
      raise ValueError(f'Every ε of the curve must be > 0 (inf: no noise), got {eps}.')
  seeds = tuple(config.seeds)
  points, timings = [], {'train_s': 0.0, 'attack_s': 0.0}
  summaries = {}
  for eps in config.epsilons:
    for agg in config.aggregators:
      for seed in seeds:
        workdir = point_workdir(root, agg, eps, seed, seeds)
        logging.info('DP curve: training %s at ε=%s (seed %d) into %s', agg, eps_name(eps),
                     seed, workdir)
        t = time.perf_counter()
        summaries[(agg, eps, seed)] = runner.train_and_evaluate(
            point_config(config, agg, eps, seed), workdir, overwrite=overwrite)
        timings['train_s'] += time.perf_counter() - t

  attack_root = os.path.join(root, 'attack')
  prior_dir = os.path.abspath(os.path.join(attack_root, 'prior'))
  if overwrite:
    shutil.rmtree(prior_dir, ignore_errors=True)
  cache = {}
  attacks = {}
  for eps in config.epsilons:
    attack_dir = os.path.join(attack_root, f'eps{eps_name(eps)}')
    logging.info('DP curve: attacking ε=%s into %s', eps_name(eps), attack_dir)
    t = time.perf_counter()
    try:
      attacks[eps] = attack_point(config, root, eps, attack_dir, prior_dir, cache, overwrite)
    except evaluation.ClassifierTooWeak as e:
      # Too few samples a person to score re-identification at all: the point keeps its
      # error, ε and differencing, and says why DualView and membership are missing.
      logging.warning('DP curve: ε=%s not attacked: %s', eps_name(eps), e)
      attacks[eps] = {'threat_models': {}, 'membership': {}, 'error': str(e)}
    timings['attack_s'] += time.perf_counter() - t

  differencing_results = {
      seed: [isolated_by_differencing(config.train, seed, w)
             for w in config.differencing_windows] for seed in seeds}
  for eps in config.epsilons:
    out = attacks[eps]
    for agg in config.aggregators:
      runs = [summaries[(agg, eps, s)] for s in seeds]
      dp = [r.get('dp') or {} for r in runs]
      errors = [float(r['test_error']) for r in runs]
      mean_predictor = float(np.mean([r['baseline_mean_predictor_error'] for r in runs]))
      point = {
          'aggregator': agg, 'epsilon_target': eps_name(eps),
          'epsilon': _mean([d.get('epsilon') for d in dp]),
          'epsilon_vs_servers': _mean([d.get('epsilon_vs_servers') for d in dp]),
          'noise_multiplier': _mean([d.get('noise_multiplier') for d in dp]),
          'test_error': float(np.mean(errors)), 'test_errors': errors,
          # Over the training seeds: Student t 95% interval and a one-sided test of
          # "below the mean predictor" (one seed: no interval).
          'test_error_summary': scoring.mean_summary(errors, mean_predictor, 'less'),
          'mean_predictor_error': mean_predictor,
          'runs': [os.path.relpath(point_workdir(root, agg, eps, s, seeds), root)
                   for s in seeds],
          'dualview': {name: _row_summary(out['threat_models'][name])
                       for name in THREAT_ROWS[agg] if name in out['threat_models']},
          'membership': _membership(out, MEMBERSHIP_LABEL[agg]),
          'attack_dir': os.path.relpath(os.path.join(attack_root, f'eps{eps_name(eps)}'), root),
          'attack_error': out.get('error'),
      }
      if agg == 'privateyes':
        point['round_differencing'] = [dict(d, seed=s) for s, ds in differencing_results.items()
                                       for d in ds]
      points.append(point)
  first_run = summaries[(config.aggregators[0], config.epsilons[0], seeds[0])]
  first = first_run.get('dp') or {}
  curve = {
      'preset': config.get('preset', ''), 'points': points,
      'num_clients': first_run.get('num_clients'), 'sampling_rate': first.get('sampling_rate'),
      'rounds': config.train.fl.rounds, 'delta': first.get('delta'),
      'clip_norm': config.train.aggregator.dp.clip_norm, 'seeds': list(seeds),
      'attack_people': next((a['num_people'] for a in attacks.values() if 'num_people' in a),
                            None),
      'timings': {**timings, 'total_s': time.perf_counter() - t0},
  }
  path = os.path.join(root, CURVE_FILE)
  workdir_lib.write_json(path, curve)
  with open(path) as f:  # As a reader sees it (NaN and ∞ are null in JSON).
    return json.load(f)


def _mean(values) -> float | None:
  """The mean over seeds; None when absent or not finite (ε of the noiseless point: JSON
  has no infinity, and ``epsilon_target`` says 'inf')."""
  values = [v for v in values if v is not None]
  mean = float(np.mean(values)) if values else None
  return mean if mean is not None and math.isfinite(mean) else None


def per_client_row(point: dict) -> str | None:
  """The point's per-client DualView row (plain FL's updates, the coalition's shares)."""
  return next((n for n, r in point['dualview'].items() if not r.get('shared')), None)


def _ci(summary: dict | None, rate: bool = False) -> str:
  if not summary or summary.get('mean', summary.get('rate')) is None:
    return '-'
  if rate:
    return (f'{summary["successes"]}/{summary["trials"]} [{summary["low"]:.2f}, '
            f'{summary["high"]:.2f}]')
  if summary.get('low') is None or not np.isfinite(summary['low']):
    return f'{summary["mean"]:.2f}'
  return f'{summary["mean"]:.2f} [{summary["low"]:.2f}, {summary["high"]:.2f}]'


def table_rows(curve: dict) -> list[list[str]]:
  """The curve's cells, one list per (aggregator, ε) (`TABLE_HEADER`)."""
  out = []
  fmt = lambda v, spec='.2f': '-' if v is None else format(v, spec)
  eps_cell = lambda p, key: ('inf' if p[key] is None and p['epsilon_target'] == 'inf'
                             else fmt(p[key]))
  for p in curve['points']:
    first = per_client_row(p)
    row = p['dualview'].get(first, {}) if first else {}
    shared = [f'{n}: {_ci(r.get("auc_vs_null"))}' for n, r in p['dualview'].items()
              if r.get('shared')]
    membership = '; '.join(f'{_ci({"mean": m["auc"], "low": m["auc_ci95"][0], "high": m["auc_ci95"][1]})}'
                           for m in p['membership']) or '-'
    diff = p.get('round_differencing')
    diff_cell = ('; '.join(f'w={d["window"] or "all"}: {d["isolated"]}/{d["clients"]}'
                           for d in diff if d.get('seed', 0) == curve['seeds'][0])
                 if diff else 'n/a (no opened sums)')
    chance = row.get('reidentified', {}).get('chance')
    out.append([p['aggregator'], p['epsilon_target'], eps_cell(p, 'epsilon'),
                eps_cell(p, 'epsilon_vs_servers'), fmt(p['noise_multiplier'], '.3f'),
                _ci(p.get('test_error_summary')) if p.get('test_error_summary')
                else fmt(p['test_error']), fmt(p['mean_predictor_error']),
                f'{first}: {_ci(row.get("reidentified"), rate=True)}' if first else '-',
                fmt(chance), _ci(row.get('auc_vs_null')), '; '.join(shared) or '-',
                membership, diff_cell])
  return out


TABLE_HEADER = ('aggregator', 'ε target', 'ε', 'ε vs servers', 'z', 'held-out err [95% CI]',
                'mean pred', 'DualView re-identified [95% CI]', 'chance',
                'AUC vs null [95% CI]', 'shared views: AUC vs null', 'membership AUC [95% CI]',
                'differencing: isolated')


def format_table(curve: dict) -> str:
  cells = [list(TABLE_HEADER)] + table_rows(curve)
  widths = [max(len(r[i]) for r in cells) for i in range(len(TABLE_HEADER))]
  return '\n'.join('  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'Unexpected arguments: {argv[1:]}')
  workdir = _FLAGS['workdir'].value
  curve = run_curve(_FLAGS['config'].value, workdir, overwrite=_FLAGS['overwrite'].value)
  print()
  print(f'Accuracy–privacy curve ({curve["preset"]}): {curve["num_clients"]} clients, q = '
        f'{curve["sampling_rate"]:.3f}, {curve["rounds"]} rounds, δ = {curve["delta"]:g}, C = '
        f'{curve["clip_norm"]:g}; DualView on {curve["attack_people"]} clients of the last '
        'round (chance 1/n); membership: loss threshold, chance 0.5')
  print(format_table(curve))
  report_path = report.build_report([workdir], os.path.join(workdir, 'report'))
  print(f'\n{os.path.abspath(os.path.join(workdir, CURVE_FILE))} (this call '
        f'{curve["timings"]["total_s"]:.0f} s); report with the curve\'s table and figure: '
        f'{os.path.abspath(report_path)}')


def entry_point():
  _define_flags()
  common.run(main)


if __name__ == '__main__':
  entry_point()
