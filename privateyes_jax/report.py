"""The paper's tables and figures from a set of workdirs: one Markdown report with PNGs.

``build_report(paths, out_dir)`` finds every finished training run (a directory
with ``config.json`` and ``summary.json``) and every DualView attack (a
``summary.json`` with ``threat_models``, from `attacks.pipeline`) under ``paths``
and writes ``out_dir/report.md`` with

* **Accuracy**: held-out error per method × dataset (mean over held-out people),
  the mean-predictor baseline, and per-person errors per dataset;
* **Cost**: per federated run, seconds per round, bytes each client uploads and
  each server sends per round, interaction rounds, PrivatEyes vs plain FL round
  time on the same dataset, and the ESTIMATED cost of training entirely inside
  MPC (generic MPC) and of the PrivatEyes offline phase (`mpc.costs`);
* **Privacy**: DualView per threat model with 95% intervals, chance and
  p-values (re-identified for per-client views only, rank, AUC vs a null view,
  PSNR, SSIM, label error and KL beside a matched no-leakage guess);
* **Differential privacy**: (ε, δ) of every DP run and held-out error versus ε; and
  the accuracy–privacy curve of ``experiments/dp_curve.py`` (a ``dp_curve.json``
  under ``paths``): per aggregator and ε, the error beside DualView's re-identification,
  membership inference and round differencing, each with its interval and chance;
* **Figures** (``out_dir/figures/``): held-out error versus round per dataset,
  and each attack's per-person scores, reconstruction grid and gaze-distribution plot.

Runs are grouped by dataset. Within a dataset every run must have been evaluated
on the same held-out people, otherwise their errors are not comparable and the
report is refused (`ReportError` names the runs and the people that differ).
Unfinished runs (no ``summary.json`` yet) are listed, not tabulated.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import shutil
import time
from typing import Any, Sequence

import numpy as np

from privateyes_jax import workdir as workdir_lib
from privateyes_jax.attacks import pipeline

FIGURES_DIR = 'figures'
REPORT_FILE = 'report.md'
CURVE_FILE = 'dp_curve.json'  # experiments/dp_curve.py's summary.
# Method order in tables; others follow alphabetically.
METHOD_ORDER = ('centralized', 'fedavg', 'fedavgm', 'fedadam', 'fedyogi', 'privateyes',
                'privateyes_semi_honest', 'local')
_MAX_DEPTH = 4


class ReportError(ValueError):
  """The runs cannot be reported together; the message says which and why."""


@dataclasses.dataclass
class Run:
  """A finished training run: its directory, config, summary and metrics rows."""
  path: str
  name: str
  config: dict
  summary: dict
  metrics: list[dict]
  # ' (seed s)' when runs of one method differ only by training seed (`group_runs`).
  label_suffix: str = ''

  @property
  def method(self) -> str:
    return self.summary.get('method', self.config.get('method', '?')) + self.label_suffix

  @property
  def dataset(self) -> str:
    return self.summary.get('dataset', self.config.get('data', {}).get('name', '?'))

  @property
  def test_people(self) -> tuple[str, ...]:
    if self.summary.get('protocol') == 'loo':
      return tuple(sorted(self.summary.get('per_person_error', {})))
    return tuple(self.summary.get('test_people') or sorted(self.summary.get('per_person_error', {})))


@dataclasses.dataclass
class Attack:
  path: str
  name: str
  summary: dict


def _read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ReportError(f'{path} is unreadable ({e}).') from e


def discover(paths: Sequence[str]) -> tuple[list[Run], list[Attack], list[str]]:
  """Finished runs, attacks and unfinished run directories under ``paths``.

  A path may be a run, an attack directory, or a directory holding them (searched
  up to a few levels deep; a run's own subdirectories, e.g. leave-one-out folds,
  are not searched again).

  Raises:
    ReportError: a path does not exist or holds no run and no attack.
  """
  runs, attacks, unfinished = [], [], []

  def visit(path: str, name: str, depth: int) -> None:
    summary_path = os.path.join(path, workdir_lib.SUMMARY_FILE)
    config_path = os.path.join(path, workdir_lib.CONFIG_FILE)
    if os.path.exists(summary_path):
      summary = _read_json(summary_path)
      if 'threat_models' in summary:
        attacks.append(Attack(path, name, summary))
        return
      if os.path.exists(config_path) and 'test_error' in summary:
        runs.append(Run(path, name, _read_json(config_path), summary,
                        workdir_lib.read_metrics(os.path.join(path, workdir_lib.METRICS_FILE))))
        return
    if os.path.exists(config_path) and os.path.exists(os.path.join(path, workdir_lib.METRICS_FILE)):
      unfinished.append(path)
      return
    if depth >= _MAX_DEPTH:
      return
    for child in sorted(os.listdir(path)):
      full = os.path.join(path, child)
      if os.path.isdir(full) and not child.startswith('.') and child != workdir_lib.CHECKPOINT_DIR:
        visit(full, f'{name}/{child}' if name else child, depth + 1)

  for p in paths:
    if not os.path.isdir(p):
      raise ReportError(f'{p!r} is not a directory; pass run workdirs or directories of runs.')
    before = (len(runs), len(attacks), len(unfinished))
    visit(p, os.path.basename(os.path.normpath(p)), 0)
    if (len(runs), len(attacks), len(unfinished)) == before and not find_curves([p]):
      raise ReportError(f'{p!r} holds no training run (config.json + summary.json) and no '
                        'DualView attack (summary.json with threat_models).')
  return runs, attacks, unfinished


def check_compatible(runs: Sequence[Run]) -> dict[str, list[Run]]:
  """Runs grouped by dataset; refuses groups evaluated on different people.

  Raises:
    ReportError: naming the dataset, the runs and the held-out people that differ.
  """
  groups: dict[str, list[Run]] = collections.defaultdict(list)
  for r in runs:
    groups[r.dataset].append(r)
  for dataset, group in groups.items():
    reference = group[0]
    for r in group[1:]:
      if r.test_people != reference.test_people:
        raise ReportError(
            f'Runs of dataset {dataset!r} were evaluated on different held-out people, so '
            f'their errors are not comparable: {reference.path} on {list(reference.test_people)} '
            f'vs {r.path} on {list(r.test_people)}. Report them separately.')
      if r.summary.get('label_kind') != reference.summary.get('label_kind'):
        raise ReportError(f'Runs of dataset {dataset!r} have different label kinds '
                          f'({reference.path}: {reference.summary.get("label_kind")}, '
                          f'{r.path}: {r.summary.get("label_kind")}).')
    labels = [r.method for r in group]
    repeated = sorted({m for m in labels if labels.count(m) > 1})
    for method in list(repeated):
      # Training seeds of one method (a curve's or an experiment's repetitions) are
      # reported side by side, each labelled with its seed.
      same = [r for r in group if r.method == method]
      seeds = [r.config.get('seed') for r in same]
      if None not in seeds and len(set(seeds)) == len(seeds):
        for r, seed in zip(same, seeds):
          r.label_suffix = f' (seed {seed})'
        repeated.remove(method)
    if repeated:
      names = [r.path for r in group if r.method in repeated]
      raise ReportError(
          f'Runs of dataset {dataset!r} share the method label(s) {repeated} and the training '
          f'seed ({names}); the tables have one column per method. Report them separately (a '
          'sweep ranks its own runs in results.md).')
  return dict(groups)


def _method_key(method: str):
  base = method.split('+')[0]
  return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), method)


def _fmt(value, spec: str = '.2f', missing: str = '–') -> str:
  if value is None or (isinstance(value, float) and not np.isfinite(value)):
    return missing
  return format(value, spec)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines)


# ----------------------------------------------------------------------------- sections
def accuracy_section(groups: dict[str, list[Run]]) -> str:
  """Methods × datasets (mean held-out error), the baseline, and per-person tables."""
  datasets = sorted(groups)
  by = {(d, r.method): r for d in datasets for r in groups[d]}
  methods = sorted({m for _, m in by}, key=_method_key)
  units = {d: groups[d][0].summary.get('error_unit', '') for d in datasets}
  header = ['method'] + [f'{d} ({units[d]})' for d in datasets]
  rows = [[m] + [_fmt(by[(d, m)].summary['test_error']) if (d, m) in by else '–'
                 for d in datasets] for m in methods]
  rows.append(['mean predictor (baseline)'] + [
      _fmt(np.mean([r.summary['baseline_mean_predictor_error'] for r in groups[d]]))
      for d in datasets])
  out = ['## Accuracy', '',
         'Held-out error (mean over held-out people; angular error in degrees for gaze).', '',
         _table(header, rows)]
  for d in datasets:
    group = sorted(groups[d], key=lambda r: _method_key(r.method))
    people = list(group[0].test_people)
    out += ['', f'Per person, {d}:', '',
            _table(['person'] + [r.method for r in group],
                   [[p] + [_fmt(r.summary['per_person_error'].get(p)) for r in group]
                    for p in people])]
  return '\n'.join(out)


def cost_section(groups: dict[str, list[Run]]) -> str:
  """Time and bytes per round of every federated run; PrivatEyes vs plain FL; estimates."""
  rows = []
  for d in sorted(groups):
    fl = [r for r in groups[d] if r.summary.get('rounds') and r.method != 'local']
    plain = {r.method: r for r in fl if r.summary.get('aggregator') == 'mean'}
    for r in sorted(fl, key=lambda r: _method_key(r.method)):
      s, mpc = r.summary, r.summary.get('mpc') or {}
      reference = plain.get(s.get('server_optimizer', 'fedavg'))
      ratio = (s['mean_round_seconds'] / reference.summary['mean_round_seconds']
               if reference and s.get('mean_round_seconds') else None)
      upload = s.get('upload_bytes_per_client')
      rows.append([
          d, r.method, s.get('rounds'), _fmt(s.get('mean_round_seconds'), '.3f'),
          _fmt(ratio, '.2f') + ('×' if ratio else ''),
          _fmt(upload / 2**20 if upload else None, '.2f'),
          _fmt(mpc['server_send_bytes'] / 2**20 if 'server_send_bytes' in mpc else None, '.1f'),
          _fmt(mpc.get('interaction_rounds'), '.0f'),
          _fmt(mpc['offline_estimate_s'] / 3600 if 'offline_estimate_s' in mpc else None, '.2f'),
          _fmt(mpc['generic_mpc_estimate_s'] / 3600 if 'generic_mpc_estimate_s' in mpc else None,
               '.1f'),
      ])
  if not rows:
    return '## Cost\n\nNo federated runs.'
  header = ['dataset', 'method', 'rounds', 's/round', 'vs plain FL', 'upload/client (MiB)',
            'server send/round (MiB)', 'interaction rounds', 'offline phase (h, ESTIMATE)',
            'generic MPC training (h, ESTIMATE)']
  return '\n'.join([
      '## Cost', '',
      'Measured per round on the machine that ran each workdir; "vs plain FL" divides by the '
      'plain-FL run with the same server optimizer on the same dataset. The offline-phase and '
      'generic-MPC columns are ESTIMATES from published SPDZ2k throughput '
      '(privateyes_jax/mpc/costs.py, docs/MPC.md), not measurements: training the whole model '
      'inside MPC on the same samples, a lower bound.', '',
      _table(header, rows)])


def privacy_section(attacks: Sequence[Attack], figures: dict[str, list[str]]) -> str:
  """DualView per threat model, per attack directory: 95% intervals, chance, p-values."""
  if not attacks:
    return '## Privacy\n\nNo DualView attack found (run `python -m experiments.attack`).'
  out = ['## Privacy (DualView)', '']
  for a in attacks:
    s = a.summary
    if 'attack_seeds' not in s:  # An attack directory written before issue #14.
      out += [f'`{a.name}`: written by an older attack without repetitions; rerun it '
              '(`experiments.attack --overwrite`) for intervals.', '']
      continue
    n, unit = s['num_people'], s.get('label_unit', 'deg')
    header = list(pipeline.TABLE_HEADER)
    header[8], header[9] = f'label err ({unit})', f'no-leak err ({unit})'
    ref = s.get('population_gaze_reference') or {}
    out += [f'`{a.name}`: {n} clients, attack seeds {s["attack_seeds"]} x federations '
            f'(training seeds) {s["federation_seeds"]}; evaluation classifier held-out accuracy '
            f'{_fmt(s.get("classifier_accuracy"), ".3f")}.', '',
            _table(header, pipeline.table_rows(s['threat_models'])), '',
            f'Chance: re-identified 1/{n} = {1 / n:.3f} per person, only for per-client views '
            '(a shared view has one reconstruction for everybody, so an argmax count would be '
            f'fixed by construction); mean rank {(n + 1) / 2:.1f} (for a shared view exactly, by '
            'construction); AUC vs null 0.5 (the true person\'s scores on the view\'s '
            'reconstructions against a null view\'s). 95% intervals: Clopper-Pearson for '
            'counts (pooled over people, seeds and federations), Student t over independent '
            'units for rank and AUC; p: one-sided tests against chance. No-leakage columns: '
            f'the attack\'s own view-2 distribution moved to the {s.get("baseline_centre")}; '
            f'guessing the federation\'s population gives {_fmt(ref.get("label_error"))} '
            f'{unit}, KL {_fmt(ref.get("gaze_kl"))}.', '']
    notes = pipeline.extra_row_notes(s['threat_models'])
    if notes:
      out += ['Rows after DualView\'s:', ''] + [f'- {line}' for line in notes.split('\n')] + ['']
    if s.get('membership'):
      from privateyes_jax.attacks import rows as rows_lib  # pylint: disable=g-import-not-at-top
      lines = rows_lib.format_membership(s['membership']).split('\n')
      out += [lines[0], ''] + [f'- `{line.strip()}`' for line in lines[1:]] + ['']
    for fig in figures.get(a.name, []):
      out.append(f'![{a.name}: {os.path.basename(fig)}]({fig})')
    out.append('')
  return '\n'.join(out)


def dp_section(groups: dict[str, list[Run]], fig_dir: str) -> str:
  """Runs with client-level DP: (ε, δ) against both adversaries, and error versus ε.

  The curve pairs every DP run with the run of the same aggregator without DP (ε = ∞)
  when one is among the runs.
  """
  rows, curves = [], {}
  for d in sorted(groups):
    for r in groups[d]:
      dp = r.summary.get('dp')
      agg = r.summary.get('aggregator')
      if dp:
        rows.append([r.method, d, _fmt(dp.get('epsilon')), f'{dp.get("delta"):.0e}',
                     _fmt(dp.get('epsilon_vs_servers')), _fmt(dp.get('noise_multiplier'), '.3f'),
                     _fmt(dp.get('clip_norm'), '.3g'), _fmt(dp.get('sampling_rate'), '.3f'),
                     _fmt(r.summary['test_error'])])
        # ε = ∞ (noise multiplier 0: clipping and sampling only) is null in JSON.
        eps = np.inf if dp.get('epsilon') is None else float(dp['epsilon'])
        curves.setdefault((d, agg), []).append((eps, r.summary['test_error']))
  if not rows:
    return ''
  for d in sorted(groups):
    for r in groups[d]:
      key = (d, r.summary.get('aggregator'))
      if not r.summary.get('dp') and key in curves and r.method in ('fedavg', 'privateyes'):
        curves[key].append((np.inf, r.summary['test_error']))
  out = ['## Differential privacy', '',
         'Client-level (ε, δ) from dp-accounting (docs/MPC.md §5b). ε: against whoever sees '
         'the opened sums or the models but not who was sampled (amplification by Poisson '
         'sampling). ε vs servers: the servers see who submitted, so no amplification, '
         'composed over the rounds of the most frequent client.', '',
         _table(['method', 'dataset', 'ε', 'δ', 'ε vs servers', 'z', 'C', 'q',
                 'held-out error'], rows)]
  plt = _pyplot()
  for d in sorted({d for d, _ in curves}):
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    finite = [e for (dd, _), pts in curves.items() if dd == d for e, _ in pts if np.isfinite(e)]
    inf_x = 2 * max(finite) if finite else 1.0
    for (dd, agg), pts in sorted(curves.items()):
      if dd != d:
        continue
      pts = sorted((inf_x if not np.isfinite(e) else e, err) for e, err in pts)
      ax.plot(*zip(*pts), marker='o', label=agg or '?')
    ax.set_xscale('log')
    ax.set_xlabel(f'ε (δ fixed; rightmost point at {inf_x:g}: no DP)')
    ax.set_ylabel('held-out error')
    ax.set_title(f'{d}: error versus ε')
    ax.legend(fontsize=7)
    fig.tight_layout()
    name = f'dp_error_vs_epsilon_{_slug(d)}.png'
    fig.savefig(os.path.join(fig_dir, name), dpi=110)
    plt.close(fig)
    out += ['', f'![error versus ε, {d}]({FIGURES_DIR}/{name})']
  return '\n'.join(out)


POISONING_FILE = 'poisoning.json'


def find_files(paths: Sequence[str], name: str) -> list[str]:
  """Every file called ``name`` under ``paths``, as deep as `discover` looks, not inside a
  run's own directory or a hidden one (e.g. a shadow run of other people)."""
  found = []

  def visit(path: str, depth: int) -> None:
    candidate = os.path.join(path, name)
    if os.path.exists(candidate):
      found.append(candidate)
      return
    if depth >= _MAX_DEPTH or os.path.exists(os.path.join(path, workdir_lib.CONFIG_FILE)):
      return
    for child in sorted(os.listdir(path)):
      full = os.path.join(path, child)
      if os.path.isdir(full) and not child.startswith('.') and child != workdir_lib.CHECKPOINT_DIR:
        visit(full, depth + 1)

  for p in paths:
    if os.path.isdir(p):
      visit(p, 0)
  return found


def _poisoning_cell(row: dict) -> str:
  """Mean held-out error over the training seeds, with its 95% t-interval if any."""
  if row.get('test_error') is None:
    return 'failed' if row.get('failed') else '–'
  interval = row.get('interval')
  return _fmt(row['test_error']) + (f' [{interval[0]:.2f}, {interval[1]:.2f}]'
                                    if interval else '')


def poisoning_section(paths: Sequence[str]) -> str:
  """The poisoning table (experiments/poisoning.py) of every ``poisoning.json`` found."""
  out = []
  for path in find_files(paths, POISONING_FILE):
    p = _read_json(path)
    rows = [[r['run'], r['attack'], r['check'], _poisoning_cell(r),
             ', '.join(r.get('excluded_clients', [])) or '–'] for r in p['rows']]
    mean_pred = next((r['mean_predictor_error'] for r in p['rows']
                      if r.get('mean_predictor_error')), None)
    out += ['## Poisoning', '',
            f'`{os.path.dirname(path)}`: clients {p["attackers"]} send their own update times '
            f'{p["factor"]:g} (boost) or times −{p["factor"]:g} (sign_flip), {p["rounds"]} '
            f'rounds. Norm bound {p["norm_bound"]:.4g}, chosen on shadow people (identity seed '
            f'{p["shadow_data_seed"]}); mean predictor {_fmt(mean_pred)}; training seeds '
            f'{p.get("seeds", [0])} (mean [95% t-interval]).', '',
            _table(['run', 'attack', 'check', 'held-out error', 'excluded'], rows), '']
    out += [f'- {r["run"]} failed: {r["failed"]}' for r in p['rows'] if r.get('failed')]
  return '\n'.join(out)


def find_curves(paths: Sequence[str]) -> list[tuple[str, dict]]:
  """Every ``dp_curve.json`` under ``paths``: (path, curve)."""
  return [(path, _read_json(path)) for path in find_files(paths, CURVE_FILE)]


def _interval_cell(summary: dict | None) -> str:
  if not summary or summary.get('mean') is None:
    return '–'
  low, high = summary.get('low'), summary.get('high')
  if low is None or high is None or not np.isfinite(low):
    return f'{summary["mean"]:.2f}'
  return f'{summary["mean"]:.2f} [{low:.2f}, {high:.2f}]'


def dp_curve_section(curves: Sequence[tuple[str, dict]], fig_dir: str) -> str:
  """The accuracy–privacy curves: per aggregator and ε, error and every attack's result.

  Each attack keeps its interval and its chance level beside it, so a row at chance
  reads as one; the figure puts the error and the per-client re-identification rate
  against ε.
  """
  if not curves:
    return ''
  out = ['## Accuracy–privacy curve (client-level DP)', '',
         'From `experiments/dp_curve.py` (`dp_curve.json`). ε: against whoever sees the '
         'released models or opened sums (Poisson amplification); ε vs servers: against the '
         'servers, who see who submitted. DualView: the per-client view of each aggregator '
         '(plain FL: the server\'s individual clipped updates, which central DP does not '
         'hide from it; PrivatEyes: the coalition\'s shares), re-identified out of the '
         'attacked clients of the last round, Clopper-Pearson 95%; AUC vs null: Student t 95% '
         '(chance 0.5); shared views: the PrivatEyes output model as the coalition knows it '
         '(its own noise subtracted) and the final model. Membership: loss threshold on the '
         'output model, training vs held-out people, bootstrap 95% (chance 0.5). Round '
         'differencing: clients a coalition isolates from the public cohorts within a window '
         'of rounds (all: every round).', '']
  plt = _pyplot()
  for i, (path, curve) in enumerate(curves):
    out += [f'`{path}`: preset {curve.get("preset", "?")}, {curve.get("num_clients")} clients, '
            f'q = {_fmt(curve.get("sampling_rate"), ".3f")}, {curve.get("rounds")} rounds, '
            f'δ = {curve.get("delta", float("nan")):.0e}, C = {_fmt(curve.get("clip_norm"), ".3g")}, '
            f'training seeds {curve.get("seeds")}, DualView on {curve.get("attack_people")} '
            'clients.', '']
    rows = []
    for p in curve['points']:
      eps = lambda key, p=p: ('∞' if p.get(key) is None and p['epsilon_target'] == 'inf'
                              else _fmt(p.get(key)))
      first = next((n for n, r in (p.get('dualview') or {}).items() if not r.get('shared')),
                   None)  # The per-client row (JSON sorts the rows by name).
      row = (p.get('dualview') or {}).get(first) or {}
      reid = row.get('reidentified')
      reid_cell = (f'{first}: {reid["successes"]}/{reid["trials"]} = {reid["rate"]:.2f} '
                   f'[{reid["low"]:.2f}, {reid["high"]:.2f}] (chance {reid["chance"]:.2f})'
                   if reid else (first or '–'))
      shared = '; '.join(f'{name}: {_interval_cell(r.get("auc_vs_null"))}'
                         for name, r in (p.get('dualview') or {}).items() if r.get('shared'))
      membership = '; '.join(
          f'{m["auc"]:.2f} [{m["auc_ci95"][0]:.2f}, {m["auc_ci95"][1]:.2f}]'
          for m in p.get('membership') or []) or '–'
      diff = p.get('round_differencing')
      diff_cell = ('; '.join(f'{"all" if not d["window"] else d["window"]} rounds: '
                             f'{d["isolated"]}/{d["clients"]}' for d in diff
                             if d.get('seed', 0) == (curve.get('seeds') or [0])[0])
                   if diff else 'no opened sums')
      rows.append([p['aggregator'], p['epsilon_target'], eps('epsilon'),
                   eps('epsilon_vs_servers'), _fmt(p.get('noise_multiplier'), '.3f'),
                   _interval_cell(p['test_error_summary']) if p.get('test_error_summary')
                   else _fmt(p.get('test_error')), _fmt(p.get('mean_predictor_error')), reid_cell,
                   _interval_cell(row.get('auc_vs_null')), shared or '–', membership, diff_cell])
    out.append(_table(['aggregator', 'ε target', 'ε', 'ε vs servers', 'z',
                       'held-out error [95% CI, training seeds]',
                       'mean predictor', 'DualView re-identified [95% CI]',
                       'AUC vs null [95% CI]', 'shared views: AUC vs null',
                       'membership AUC [95% CI]', 'differencing: isolated'], rows))
    errors = sorted({(p['epsilon_target'], p['attack_error']) for p in curve['points']
                     if p.get('attack_error')})
    out += [f'- ε = {e}: not attacked: {reason}' for e, reason in errors]
    fig, (ax_err, ax_reid) = plt.subplots(1, 2, figsize=(9, 3.5))
    finite = [float(p['epsilon_target']) for p in curve['points'] if p['epsilon_target'] != 'inf']
    inf_x = 2 * max(finite) if finite else 1.0
    for agg in sorted({p['aggregator'] for p in curve['points']}):
      pts = sorted((inf_x if p['epsilon_target'] == 'inf' else float(p['epsilon_target']), p)
                   for p in curve['points'] if p['aggregator'] == agg)
      ax_err.plot([x for x, _ in pts], [p['test_error'] for _, p in pts], marker='o', label=agg)
      reid = [(x, next((r for r in (p.get('dualview') or {}).values() if not r.get('shared')),
                       {}).get('reidentified')) for x, p in pts]
      reid = [(x, r) for x, r in reid if r]
      if reid:
        ax_reid.errorbar([x for x, _ in reid], [r['rate'] for _, r in reid],
                         yerr=[[max(r['rate'] - r['low'], 0.0) for _, r in reid],
                               [max(r['high'] - r['rate'], 0.0) for _, r in reid]],
                         marker='o', capsize=3, label=agg)
        ax_reid.axhline(reid[0][1]['chance'], linestyle=':', color='gray')
    if curve['points']:
      ax_err.axhline(curve['points'][0].get('mean_predictor_error') or np.nan, linestyle=':',
                     color='black', label='mean predictor')
    for ax in (ax_err, ax_reid):
      ax.set_xscale('log')
      ax.set_xlabel(f'ε (rightmost at {inf_x:g}: no noise)')
    ax_err.set_ylabel('held-out error')
    ax_reid.set_ylabel('DualView re-identified (chance dotted)')
    ax_err.legend(fontsize=7)
    ax_reid.legend(fontsize=7)
    fig.tight_layout()
    name = f'dp_curve_{i}.png'
    fig.savefig(os.path.join(fig_dir, name), dpi=110)
    plt.close(fig)
    out += ['', f'![accuracy–privacy curve]({FIGURES_DIR}/{name})', '']
  return '\n'.join(out)


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_error_curves(path: str, dataset: str, runs: Sequence[Run]) -> None:
  """Held-out error versus round (federated runs) with centralized runs' final errors as lines."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 3.5))
  for r in sorted(runs, key=lambda r: _method_key(r.method)):
    points = [(row['round'], row['test_error']) for row in r.metrics
              if 'round' in row and 'test_error' in row]
    if points:
      x, y = zip(*points)
      ax.plot(x, y, marker='o', markersize=3, label=r.method)
    elif r.method == 'centralized':
      ax.axhline(r.summary['test_error'], linestyle='--', color='gray', label='centralized')
  ax.axhline(np.mean([r.summary['baseline_mean_predictor_error'] for r in runs]), linestyle=':',
             color='black', label='mean predictor')
  ax.set_xlabel('round')
  ax.set_ylabel(f'held-out error ({runs[0].summary.get("error_unit", "")})')
  ax.set_title(dataset)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def build_report(paths: Sequence[str], out_dir: str) -> str:
  """Writes ``out_dir/report.md`` (and ``out_dir/figures/``) from the runs under ``paths``.

  Returns:
    The report's path.

  Raises:
    ReportError: no runs, unreadable files, or runs of a dataset evaluated on
      different people.
  """
  runs, attacks, unfinished = discover(paths)
  dp_curves = find_curves(paths)
  if not runs and not attacks and not dp_curves:
    raise ReportError(f'No finished run or attack under {list(paths)}.')
  groups = check_compatible(runs)
  fig_dir = os.path.join(out_dir, FIGURES_DIR)
  os.makedirs(fig_dir, exist_ok=True)
  curves = []
  for d, group in sorted(groups.items()):
    name = f'error_vs_round_{_slug(d)}.png'
    plot_error_curves(os.path.join(fig_dir, name), d, group)
    curves.append(f'{FIGURES_DIR}/{name}')
  attack_figures = {}
  for i, a in enumerate(attacks):
    if a.name in attack_figures:  # Two attack directories of the same name.
      a.name = f'{a.name}#{i}'
    attack_figures[a.name] = []
    for png in ('per_person.png', 'reconstructions.png', 'gaze.png'):
      src = os.path.join(a.path, png)
      if os.path.exists(src):
        dst = f'{_slug(a.name)}_{png}'
        shutil.copyfile(src, os.path.join(fig_dir, dst))
        attack_figures[a.name].append(f'{FIGURES_DIR}/{dst}')
  parts = [
      '# PrivatEyes-JAX report', '',
      f'Generated {time.strftime("%Y-%m-%d %H:%M:%S")} from '
      f'{", ".join(f"`{p}`" for p in paths)}: {len(runs)} runs, {len(attacks)} attacks.', '',
      '| run | method | dataset | workdir |', '|---|---|---|---|',
      *[f'| {r.name} | {r.method} | {r.dataset} | `{r.path}` |' for r in runs], '']
  if unfinished:
    parts += ['Unfinished runs (no summary.json yet), not tabulated: '
              + ', '.join(f'`{u}`' for u in unfinished), '']
  if runs:
    parts += [accuracy_section(groups), '', cost_section(groups), '', '## Error versus round', '',
              *[f'![{c}]({c})' for c in curves], '']
    dp_part = dp_section(groups, fig_dir)
    if dp_part:
      parts += [dp_part, '']
  poisoning = poisoning_section(paths)
  if poisoning:
    parts += [poisoning, '']
  curve_part = dp_curve_section(dp_curves, fig_dir)
  if curve_part:
    parts += [curve_part, '']
  parts.append(privacy_section(attacks, attack_figures))
  path = os.path.join(out_dir, REPORT_FILE)
  workdir_lib.atomic_write_text(path, '\n'.join(parts) + '\n')
  return path


def _slug(name: str) -> str:
  return ''.join(c if c.isalnum() or c in '-_' else '_' for c in name)
