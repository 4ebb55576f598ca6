"""The reviewer's extra rows of the privacy table (issue #14 a–c) and membership inference.

Selected by the attack config (``extra_rows``, ``membership_inference``), never by a
global registration. Each row is a function over `pipeline.RowContext` that scores
its reconstructions with ``context.evaluate`` (rank, AUC vs a null view, re-identified
counts for per-client views), so its row is pooled and tested exactly like DualView's:

* ``gradient_inversion`` (a): Geiping et al.'s pixel-space inversion, no prior, on
  plain FL's individual updates (per client, from the round's global model). Its null
  view is the same inversion of noise (the reconstructions it gets from nothing).
* ``round_differencing`` (b): DualView on the difference of opened PrivatEyes
  aggregates of rounds whose cohorts isolate one client (`differencing.attack_inputs`;
  needs ``record_views='all'`` and ``fl.client_fraction < 1``, else not applicable:
  no row for that federation). What a coalition computes from opened outputs alone.
* ``sybil`` (c): DualView on what a Sybil coalition recovers when it controls every
  other client of the round (`differencing.sybil_targets`, the run's own secure
  aggregation replayed): the limit of the threat model. Its row also reports the
  recovery's mean cosine to the honest update and its max abs error.

Membership inference (`membership_by_run`) is per run, not per person: a section of
the summary of its own (``out['membership']``), never a row.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from privateyes_jax.attacks import differencing
from privateyes_jax.attacks import dualview
from privateyes_jax.attacks import gradient_inversion
from privateyes_jax.attacks import membership

EXTRA_ROW_NAMES = ('gradient_inversion', 'round_differencing', 'sybil')
_SECURE = ('privateyes', 'privateyes_semi_honest')


def _plain_round(context):
  """The federation's round with individual updates (FedAvg first), or None."""
  with_updates = [r for r in context.rounds if r.individual_updates is not None]
  with_updates.sort(key=lambda r: r.config.fl.server_optimizer != 'fedavg')
  return with_updates[0] if with_updates else None


def _secure_round(context):
  return next((r for r in context.rounds if r.config.aggregator.name in _SECURE), None)


def gradient_inversion_row(context) -> list[dict] | None:
  """(a) Gradient inversion without a prior on plain FL's individual updates, per client."""
  recorded = _plain_round(context)
  if recorded is None:
    return None
  cfg = dualview.layers_for_model(context.config.gradient_inversion, recorded.global_params)
  people = context.people
  image_shape = tuple(people[0].images.shape[1:])
  cache = context.cache.setdefault('gradient_inversion', {})
  key_ = (id(recorded.apply_fn), image_shape)
  if key_ not in cache:
    cache[key_] = gradient_inversion.make_inversion(recorded.apply_fn, cfg, image_shape)
  inversion = cache[key_]
  by_name = {c.person: i for i, c in enumerate(recorded.clients)}
  root = jax.random.PRNGKey(context.attack_seed)

  def run(key, update):
    return context.view2(gradient_inversion.attack_person(
        key, recorded.apply_fn, recorded.global_params, update, cfg, image_shape,
        inversion=inversion), recorded.label_scaling)
  attacks = [run(jax.random.fold_in(root, 1000 + c),
                 recorded.individual_updates[by_name[p.person]]) for c, p in enumerate(people)]
  null = run(jax.random.fold_in(root, 999_979),
             context.null_change(jax.random.fold_in(root, 999_983),
                                 recorded.individual_updates[0]))
  return context.evaluate(attacks, False, null_images=null['images'])


def round_differencing_row(context) -> list[dict] | None:
  """(b) DualView on differenced opened aggregates; None when the runs do not allow it."""
  recorded = _secure_round(context)
  if recorded is None:
    return None
  config = recorded.config
  fl = config.fl
  subsampled = (fl.get('client_fraction', 1.0) < 1
                or 0 < fl.get('clients_per_round', 0) < len(recorded.federation))
  if config.get('record_views') != 'all' or not subsampled:
    return None
  cache = context.cache.setdefault('round_differencing', {})
  if recorded.run_dir not in cache:
    _, targets = differencing.attack_inputs(recorded.run_dir, 'lstsq',
                                            window=context.config.differencing_window)
    cache[recorded.run_dir] = targets
  targets = cache[recorded.run_dir]
  attacked = [(c, p) for c, p in enumerate(context.people) if p.person in targets]
  if not attacked:
    return None
  root = jax.random.PRNGKey(context.attack_seed)
  attacks = [context.dualview(recorded, targets[p.person]['global_params'],
                              targets[p.person]['update'], jax.random.fold_in(root, 1000 + c))
             for c, p in attacked]
  first = targets[attacked[0][1].person]
  null = context.dualview_null(recorded, first['global_params'], first['update'])
  rows = context.evaluate(attacks, False, null_images=null['images'],
                          people=[p for _, p in attacked])
  for row, (_, p) in zip(rows, attacked):
    row['exact'] = bool(targets[p.person]['estimate'].exact)
  return rows


def sybil_row(context) -> list[dict] | None:
  """(c) DualView on a Sybil coalition's exact recovery of each client's update."""
  recorded = _secure_round(context)
  if recorded is None:
    return None
  names = [p.person for p in context.people]
  cache = context.cache.setdefault('sybil', {})
  if recorded.run_dir not in cache:  # The recovery is deterministic given the round.
    recovered = differencing.sybil_targets(
        recorded, jax.random.PRNGKey(context.config.seed + 5), max_people=0)
    cache[recorded.run_dir] = {r['client']: r for r in recovered}
  recovered = cache[recorded.run_dir]
  root = jax.random.PRNGKey(context.attack_seed)
  attacks = [context.dualview(recorded, recorded.global_params, recovered[n]['update'],
                              jax.random.fold_in(root, 1000 + c)) for c, n in enumerate(names)]
  null = context.dualview_null(recorded, recorded.global_params, recovered[names[0]]['update'])
  rows = context.evaluate(attacks, False, null_images=null['images'])
  for row, n in zip(rows, names):
    row['cosine'] = float(recovered[n]['cosine'])
    row['max_abs_error'] = float(recovered[n]['max_abs_error'])
    row['num_sybils'] = int(recovered[n]['num_sybils'])
  return rows


ROW_FUNCTIONS: dict[str, tuple[bool, Callable[[Any], list[dict] | None]]] = {
    'gradient_inversion': (False, gradient_inversion_row),
    'round_differencing': (False, round_differencing_row),
    'sybil': (False, sybil_row),
}

ROW_LABELS = {
    'gradient_inversion': 'gradient inversion, no prior (Geiping et al.), plain FL updates',
    'round_differencing': 'DualView on differenced opened aggregates (client subsampling)',
    'sybil': 'DualView on a Sybil coalition\'s recovery: the limit of the threat model',
}


def selected_rows(config) -> dict[str, tuple[bool, Callable]]:
  names = tuple(config.get('extra_rows', ()))
  unknown = [n for n in names if n not in ROW_FUNCTIONS]
  if unknown:
    raise ValueError(f'Unknown extra_rows {unknown}; available: {EXTRA_ROW_NAMES}.')
  return {n: ROW_FUNCTIONS[n] for n in EXTRA_ROW_NAMES if n in names}


def summarize_extra(name: str, person_rows) -> dict:
  """Row-specific means pooled beside `scoring.summarize_row`'s (the Sybil's recovery)."""
  out = {}
  if name == 'sybil':
    for key in ('cosine', 'max_abs_error'):
      values = [r[key] for r in person_rows if r.get(key) is not None]
      if values:
        out[f'mean_{key}' if key == 'cosine' else key] = (
            float(np.mean(values)) if key == 'cosine' else float(np.max(values)))
  if name == 'round_differencing':
    out['exact'] = bool(all(r.get('exact', False) for r in person_rows))
  return out


# ----------------------------------------------------------------------------- membership
def run_label(recorded) -> str:
  """A run's name in the membership section: the threat model its output model is seen by."""
  if recorded.individual_updates is not None:
    return 'plain_fl' if recorded.config.fl.server_optimizer == 'fedavg' else 'adaptive_fl'
  return 'privateyes'


def membership_by_run(config, federations, shadow_people) -> dict:
  """Membership inference on every target run's output model: ``{label: result}``.

  A label is the run's threat model, with its training seed when several
  federations are attacked. Results are `membership.output_model_membership`'s
  without the raw scores, plus ``run`` and ``federation``.
  """
  out = {}
  several = len(federations) > 1
  shadow_cache: dict = {}  # Runs of one federation share their shadows.
  for fed in federations:
    for recorded in fed:
      label = run_label(recorded) + (f' (seed {recorded.federation_seed})' if several else '')
      result = membership.output_model_membership(
          recorded, shadow_people, num_shadows=config.membership_shadows,
          shadow_steps=config.membership_shadow_steps, seed=config.seed,
          shadow_cache=shadow_cache)
      for attack in ('loss_threshold', 'lira'):
        if attack not in result:
          continue
        result[attack] = {k: v for k, v in result[attack].items()
                          if k not in ('member_scores', 'nonmember_scores')}
      out[label] = {**result, 'run': recorded.run_dir, 'federation': recorded.federation_seed}
  return out


def format_membership(section: dict) -> str:
  """Lines of the membership section: AUC [95% CI] (chance 0.5), p, TPR at low FPR."""
  if not section:
    return ''
  lines = ['Membership inference on the output model (training vs held-out people; per run, '
           'a shared view: no count):']
  for label, result in section.items():
    for attack in ('loss_threshold', 'lira'):
      r = result.get(attack)
      if not r:
        continue
      lo, hi = r['auc_ci95']
      tpr = ', '.join(f'TPR@FPR{k}={v:.2f}' for k, v in r.get('tpr_at_fpr', {}).items())
      lines.append(
          f'  {label:<24} {attack:<15} AUC {r["auc"]:.2f} [{lo:.2f}, {hi:.2f}] (chance 0.50, '
          f'p={r["p_value"]:.2g}); {r["num_members"]} members vs {r["num_nonmembers"]} '
          f'non-members; {tpr} (lowest FPR 1/{r["num_nonmembers"]})')
  return '\n'.join(lines)
