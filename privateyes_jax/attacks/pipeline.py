"""DualView against real training runs: read what each party saw, attack it, report it.

``run_attack(config, target_runs, attack_dir)`` is the library side of
``experiments/attack.py`` and of the demo's privacy table. For every target run
(a workdir trained with ``record_views='last'`` or ``'all'``) it reads one recorded
round from ``<run>/views/round_NNNNN.npz`` (written by the federated engine) and
attacks, per threat model, exactly the view that party had (DESIGN.md §5.3):

============================  =================================================
threat model                  view attacked (per client)
============================  =================================================
``plain_fl``                  the individual update Δ_c (a ``mean`` run whose
                              server optimizer is FedAvg)
``adaptive_fl``               the same, under FedAvgM/FedAdam/FedYogi
``privateyes``                the coalition of S-1 servers' knowledge of Δ_c:
                              the sum of its shares, decoded as fixed point
                              (uniform noise whatever Δ_c is)
``privateyes_output_model``   the round's opened output-model change, the same
                              for every client (the coalition also sees it)
``generic_mpc``               only the final model: its change from the public
                              initial model (training entirely inside MPC)
============================  =================================================

The evaluation (an identity classifier of another architecture trained on the
clients' private data, PSNR/SSIM, label error and gaze KL) is `evaluation`'s; the
per-person scores and their statistics are `scoring`'s. Per-client views report
re-identified counts; shared views (the output model, generic MPC) never do: an
argmax over one shared reconstruction names one person for everybody.

Repetitions: every threat model is attacked with ``attack_seeds`` attack seeds on
every federation given (target runs of the same people trained with different
``seed``; one row per threat model pools them). Each (federation, attack seed) also
inverts a **null view** (Gaussian noise in place of the model change) per attacked
model: the reconstructions an adversary gets from nothing, which ``auc_vs_null``
compares against.

Extra rows: `register_row` adds a threat model computed by another module (see
`RowContext`); its per-person rows are pooled and tested like DualView's.

Refusals: a run without recorded views, a view whose config fingerprint is not the
run's config (e.g. left over from an overwritten run), a run whose clients are not
people (``data.partition='iid'``), an evaluation classifier below a usable
accuracy, and an attack directory holding results of another attack config.

Outputs in ``attack_dir``: ``summary.json`` (``threat_models``: one row per threat
model, `scoring.summarize_row`; ``per_person`` rows of every seed and federation;
timings; the no-leakage gaze reference), ``per_person.png`` (each person's
AUC-vs-null and rank per threat model), ``reconstructions.png`` (real vs reconstructed images per person
and threat model), ``gaze.png`` (true vs recovered gaze per person), and the
prior's orbax checkpoints (``prior/``, reused by a rerun).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import shutil
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.flatten_util import ravel_pytree

from privateyes_jax import data as data_lib
from privateyes_jax import label_scaling as label_scaling_lib
from privateyes_jax import metrics
from privateyes_jax import progress as progress_lib
from privateyes_jax import workdir as workdir_lib
from privateyes_jax.attacks import dualview
from privateyes_jax.attacks import evaluation
from privateyes_jax.attacks import gan_prior
from privateyes_jax.attacks import gradient_inversion
from privateyes_jax.attacks import scoring
from privateyes_jax.data import base
from privateyes_jax.models import gaze as gaze_models
from privateyes_jax.mpc import ring

THREAT_MODELS = ('plain_fl', 'adaptive_fl', 'privateyes', 'privateyes_output_model',
                 'generic_mpc')
GAZE_DISTRIBUTIONS = ('aux_gaussian', 'samples')
_ROUND_FILE = re.compile(r'round_(\d{5})\.npz$')


class ViewError(ValueError):
  """A target run's recorded views are missing, foreign or unusable; the message says which."""


def default_config(preset: str = 'demo') -> ml_collections.ConfigDict:
  """The attack's config. ``preset``: ``'demo'`` (CPU minutes), ``'full'`` (GPU), ``'tiny'`` (tests).

  Fields:
    seed: the attack's first PRNG seed (restarts' latents and labels); the
      classifier and the prior's background samples use it too.
    attack_seeds: every threat model is attacked with seeds ``seed, seed+1, ...``
      (this many) on every federation (repetitions for the intervals).
    min_federations: refuse fewer federations (target runs of the same people
      trained with different seeds) than this.
    round: the recorded round to attack (1-based); -1: the latest recorded.
    max_people: attack only the first this many clients of the round (0: all).
    prior: `gan_prior.default_config` (the auxiliary people must not be clients).
    attack: `dualview.default_config` (inversion budget and objective).
    classifier_steps, classifier_features: the evaluation identity classifier.
    min_classifier_accuracy: below this held-out accuracy nothing is reported.
    background_samples: random prior samples the classifier's scores are
      calibrated against (`metrics.reidentification`); 0 disables calibration.
    num_real_images: real images per person for the best-match PSNR/SSIM.
    gaze_samples: samples of view 2's Gaussian (``'aux_gaussian'``).
    gaze_distribution: view 2's form: ``'aux_gaussian'`` (the recovered mean with
      the auxiliary people's within-person spread, `dualview.gaze_distribution`)
      or ``'samples'`` (the recovered gaze points themselves).
    extra_rows: the reviewer's rows added after DualView's (`rows`): any of
      ``'gradient_inversion'`` (a: no prior, plain FL's updates),
      ``'round_differencing'`` (b: differenced opened aggregates; needs a PrivatEyes run
      with ``record_views='all'`` and client subsampling, else no row) and ``'sybil'``
      (c: a Sybil coalition's recovery, the limit of the threat model).
    gradient_inversion: `gradient_inversion.default_config` (row a's budget).
    differencing_window: rounds back a differenced estimate may use (row b).
    membership_inference: membership inference on every target run's output model
      (loss threshold and LiRA; ``out['membership']``, per run, never a row).
    membership_shadows: LiRA's shadow models (even), trained on the prior's people;
      0: the loss-threshold attack only (the demo).
    membership_shadow_steps: each shadow's optimizer steps (0: the run's
      ``fl.rounds x fl.local_steps``).
  """
  if preset not in ('demo', 'full', 'tiny'):
    raise ValueError(f'Unknown attack preset {preset!r}; available: demo, full, tiny.')
  c = ml_collections.ConfigDict()
  c.seed = 1
  c.attack_seeds = 2  # Demo: the 15-minute budget on 2 CPU cores (docs/BENCHMARKS.md).
  c.min_federations = 1
  c.round = -1
  c.max_people = 0
  c.prior = gan_prior.default_config(preset)
  c.attack = dualview.default_config(preset)
  c.classifier_steps = 300
  c.classifier_features = (16, 32, 64)
  c.min_classifier_accuracy = evaluation.DEFAULT_MIN_ACCURACY
  c.background_samples = 256
  c.gaze_distribution = 'aux_gaussian'
  c.num_real_images = 100
  c.gaze_samples = 1024
  # Demo: the extra rows off, to keep its attack stage within budget (measured costs:
  # docs/DECISIONS.md, "DualView measurement (#14)"); membership by the loss threshold
  # only (LiRA's shadows: 61 s for 4 on 2 idle cores, past the 15-minute budget).
  c.extra_rows = ()
  c.gradient_inversion = gradient_inversion.default_config(preset)
  c.gradient_inversion.match_layers = ('Dense_0', 'Dense_1')  # As DualView's CPU presets.
  c.differencing_window = 4
  c.membership_inference = True
  c.membership_shadows = 0
  c.membership_shadow_steps = 0
  if preset == 'full':
    c.classifier_steps = 2000
    c.attack_seeds = 5
    c.min_federations = 3
    c.extra_rows = ('gradient_inversion', 'round_differencing', 'sybil')
    c.gradient_inversion.match_layers = ()  # Every layer (GPU).
    c.membership_inference = True
    c.membership_shadows = 16
  elif preset == 'tiny':
    c.attack_seeds = 2
    c.membership_inference = False
    c.num_real_images = 16
    c.gaze_samples = 128
    c.attack.steps = 2
    c.classifier_steps = 40
    c.classifier_features = (8, 16)
    # Off by default (the tests select them: tests/attacks/test_pipeline.py); tiny budgets.
    c.gradient_inversion.steps = 4
    c.membership_shadows = 2
  return c


# ----------------------------------------------------------------------------- recorded views
@dataclasses.dataclass
class RecordedRound:
  """One recorded round of a run, unflattened to the model's parameter pytrees.

  Attributes:
    run_dir: the run's workdir.
    config: the run's config (from its ``config.json``).
    round: 1-based round number.
    clients: the round's clients (their real data, for the evaluation only).
    federation: the names of every training person of the run (sampled or not).
    initial_params: θ_0, the public initialisation (the run's seed).
    global_params: θ_r, the model the round started from.
    output_params: θ_{r+1}, the round's output model.
    individual_updates: per client Δ_c (plain FL), else None.
    coalition_estimates: per client the coalition's decoded knowledge of its
      (weight-scaled) input (PrivatEyes), else None.
    apply_fn: the run's model's apply function.
    label_kind: ``'gaze'`` or ``'screen'`` (the run's dataset).
    label_unit: how its label errors are printed (``'deg'``, or the run's unit).
    label_scaling: the standardisation the run trained with (`label_scaling`;
      identity for gaze runs). Its offset and scale are opened outputs of the run's
      aggregation, so every threat model knows them; the attack works in the
      model's (standardised) label space and maps view 2 back to the run's unit.
    coalition_aggregate: a PrivatEyes run with DP noise: the round's opened mean
      update less the coalition's own noise (`differencing.opened_round_from_view`),
      what the coalition knows of the aggregate; None otherwise (the output-model
      change is then all it knows).
  """
  run_dir: str
  config: ml_collections.ConfigDict
  round: int
  clients: list[base.PersonData]
  federation: tuple[str, ...]
  initial_params: Any
  global_params: Any
  output_params: Any
  individual_updates: list[Any] | None
  coalition_estimates: list[Any] | None
  apply_fn: Any
  label_kind: str = 'gaze'
  label_unit: str = 'deg'
  label_scaling: label_scaling_lib.LabelScaling = label_scaling_lib.IDENTITY
  coalition_aggregate: Any = None

  @property
  def federation_seed(self) -> int:
    """The training seed: runs of one federation share it (and their people)."""
    return int(self.config.get('seed', 0))


def load_run_config(run_dir: str) -> ml_collections.ConfigDict:
  path = os.path.join(run_dir, workdir_lib.CONFIG_FILE)
  if not os.path.isdir(run_dir) or not os.path.exists(path):
    raise ViewError(f'{run_dir!r} is not a run workdir (no {workdir_lib.CONFIG_FILE}); pass the '
                    'directory a training run wrote.')
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except (OSError, json.JSONDecodeError) as e:
    raise ViewError(f'{path} is unreadable ({e}).') from e


def recorded_rounds(run_dir: str) -> list[int]:
  """The rounds (1-based) whose views ``run_dir`` holds, ascending."""
  paths = glob.glob(os.path.join(run_dir, workdir_lib.VIEWS_DIR, 'round_*.npz'))
  return sorted(int(m.group(1)) for p in paths if (m := _ROUND_FILE.search(p)))


def _open_view(run_dir: str, config, round_: int) -> dict[str, np.ndarray]:
  rounds = recorded_rounds(run_dir)
  if not rounds:
    raise ViewError(
        f'{run_dir!r} has no recorded views ({workdir_lib.VIEWS_DIR}/round_NNNNN.npz). Train it '
        'with --config.record_views=last (or all) to record what the observing party sees.')
  r = rounds[-1] if round_ == -1 else round_
  if r not in rounds:
    raise ViewError(f'{run_dir!r} has no recorded view of round {r}; recorded: {rounds}.')
  path = os.path.join(run_dir, workdir_lib.VIEWS_DIR, f'round_{r:05d}.npz')
  try:
    with np.load(path) as z:
      view = {k: z[k] for k in z.files}
  except (OSError, ValueError, EOFError) as e:
    raise ViewError(f'{path} is unreadable ({type(e).__name__}: {e}).') from e
  from privateyes_jax.federated import engine  # pylint: disable=g-import-not-at-top
  expected = engine.config_fingerprint(config)
  recorded = str(view.get('config_fingerprint', ''))
  if recorded != expected:
    raise ViewError(
        f'{path} was recorded by a run with another configuration (fingerprint {recorded!r}, '
        f'this run\'s config.json gives {expected!r}); it is left over from an earlier run in '
        'the same workdir. Retrain, or point the attack at the run that recorded it.')
  missing = [k for k in ('global_params', 'output_model', 'client_names', 'round')
             if k not in view]
  if missing:
    raise ViewError(f'{path} lacks {missing}; it was not written by the federated engine.')
  return view


def load_round(run_dir: str, round_: int = -1) -> RecordedRound:
  """Reads and checks one recorded round of ``run_dir`` (see `RecordedRound`).

  Raises:
    ViewError: no views, a foreign view, a run whose clients are not people, or a
      view that does not fit the run's model.
  """
  config = load_run_config(run_dir)
  if config.get('method') != 'federated':
    raise ViewError(f'{run_dir!r} is a {config.get("method")!r} run; only federated runs '
                    'record views.')
  if config.data.get('partition', 'person') != 'person':
    raise ViewError(f'{run_dir!r} used data.partition={config.data.partition!r}: its clients '
                    'are not people, so re-identifying them is undefined.')
  view = _open_view(run_dir, config, round_)
  dataset = data_lib.load_dataset(config.data)
  train_people, _ = data_lib.split_people(dataset, config.data)
  by_name = {p.person: p for p in train_people.people}
  names = [str(n) for n in view['client_names']]
  # Clients who submitted nothing (DP's padding of the Poisson sample; dropouts) were
  # never seen by the observer: only the others are attacked.
  keep = (np.asarray(view['view/submitted'], bool) if 'view/submitted' in view
          else np.ones(len(names), bool))
  if keep.shape != (len(names),):
    raise ViewError(f'The view of {run_dir!r} marks {keep.shape} submissions for '
                    f'{len(names)} clients.')
  names = [n for n, k in zip(names, keep) if k]
  if not names:
    raise ViewError(f'No client submitted in the recorded round of {run_dir!r}.')
  unknown = [n for n in names if n not in by_name]
  if unknown:
    raise ViewError(f'The view of {run_dir!r} names clients {unknown[:5]} that are not people of '
                    'its training split.')
  clients = [by_name[n] for n in names]
  model = gaze_models.build_model(config.model)
  p0 = clients[0]
  initial = model.init(jax.random.PRNGKey(config.seed), p0.images[:1], p0.head_pose[:1])['params']
  flat0, unravel = ravel_pytree(initial)
  num_params = flat0.size
  unflat = lambda v, what: _unravel(unravel, v, num_params, what, run_dir)
  individual, coalition = None, None
  if 'view/individual_updates' in view:
    individual = [unflat(u, 'an individual update')
                  for u, k in zip(view['view/individual_updates'], keep) if k]
  elif 'view/coalition_input_estimate' in view:
    agg = config.aggregator
    with jax.enable_x64(True):  # The ring's own codec (low k bits, signed fixed point).
      decoded = np.asarray(ring.decode(view['view/coalition_input_estimate'],
                                       ring.RingSpec(k=agg.k, f=agg.f, s=agg.s)))
    coalition = [unflat(d[:num_params], 'a coalition estimate')
                 for d, k in zip(decoded, keep) if k]
  else:
    raise ViewError(f'The view of round {int(view["round"])} in {run_dir!r} holds neither '
                    'individual updates nor a coalition\'s shares.')
  aggregate = None
  if coalition is not None and 'view/coalition_noise' in view:
    aggregate = unflat(_coalition_aggregate(view, config, len(train_people.people)),
                       'the coalition\'s aggregate')
  return RecordedRound(run_dir=run_dir, config=config, round=int(view['round']), clients=clients,
                       federation=tuple(train_people.person_names),
                       initial_params=initial,
                       global_params=unflat(view['global_params'], 'global_params'),
                       output_params=unflat(view['output_model'], 'output_model'),
                       individual_updates=individual, coalition_estimates=coalition,
                       apply_fn=model.apply, label_kind=dataset.label_kind,
                       label_unit=_label_unit(run_dir, dataset.label_kind),
                       label_scaling=label_scaling_lib.load(run_dir),
                       coalition_aggregate=aggregate)


def _coalition_aggregate(view: dict, config, num_clients: int) -> np.ndarray:
  """The round's mean update as a DP coalition knows it: the opened noisy sum less its
  own servers' noise, over the public expected cohort q·N = k, the engine's denominator
  (`DPSettings.expected_clients`, with q = k / N from the same `clients_per_round`)."""
  from privateyes_jax.attacks import differencing  # pylint: disable=g-import-not-at-top
  from privateyes_jax.federated import server as server_lib  # pylint: disable=g-import-not-at-top
  opened = differencing.opened_round_from_view(view, config)
  expected = server_lib.clients_per_round(config.fl, num_clients)
  return (opened.weighted_sum / float(expected)).astype(np.float32)


def _label_unit(run_dir: str, label_kind: str) -> str:
  path = os.path.join(run_dir, workdir_lib.SUMMARY_FILE)
  unit = 'label units'
  if os.path.exists(path):
    try:
      with open(path) as f:
        unit = json.load(f).get('error_unit', unit)
    except (OSError, json.JSONDecodeError):
      pass
  return metrics.label_unit(label_kind, unit)


def _unravel(unravel, vector: np.ndarray, num_params: int, what: str, run_dir: str):
  if vector.shape != (num_params,):
    raise ViewError(f'{what} recorded in {run_dir!r} has shape {vector.shape}, but the run\'s '
                    f'model has {num_params} parameters.')
  return unravel(jnp.asarray(vector, jnp.float32))


# ----------------------------------------------------------------------------- threat models
@dataclasses.dataclass
class Target:
  """One threat model's attack on one run: per client, what to invert."""
  threat_model: str
  recorded: RecordedRound
  global_params: Any  # The θ the simulated client step is taken from.
  changes: list[Any]  # Per client: the observed model change (pytree).
  shared: bool  # One view for everyone (attacked once, evaluated against each client).
  gaze_source: str
  view: str  # A description of the view, for the summary.


def threat_targets(recorded: RecordedRound) -> list[Target]:
  """The threat models a run's recorded round allows (see the module docstring)."""
  config = recorded.config
  clients = len(recorded.clients)
  om_change = jax.tree.map(jnp.subtract, recorded.output_params, recorded.global_params)
  targets = []
  if recorded.individual_updates is not None:
    name = 'plain_fl' if config.fl.server_optimizer == 'fedavg' else 'adaptive_fl'
    targets.append(Target(name, recorded, recorded.global_params, recorded.individual_updates,
                          False, '', 'individual updates'))
  if recorded.coalition_estimates is not None:
    targets.append(Target('privateyes', recorded, recorded.global_params,
                          recorded.coalition_estimates, False, '',
                          f'coalition {tuple(config.aggregator.coalition)} shares'))
    if recorded.coalition_aggregate is not None:
      # DP: the coalition subtracts its own noise from the opened sum (only the honest
      # server's noise is left), which the output model alone would not let it do.
      targets.append(Target('privateyes_output_model', recorded, recorded.global_params,
                            [recorded.coalition_aggregate] * clients, True, '',
                            'opened aggregate less the coalition\'s own DP noise'))
    else:
      targets.append(Target('privateyes_output_model', recorded, recorded.global_params,
                            [om_change] * clients, True, '', 'opened output-model change'))
    final_change = jax.tree.map(jnp.subtract, recorded.output_params, recorded.initial_params)
    # Generic MPC reveals only the final model: invert its change from the public
    # initialisation, read gaze with the final model (θ_0 + change).
    targets.append(Target('generic_mpc', recorded, recorded.initial_params,
                          [final_change] * clients, True, 'local_model',
                          'final model only'))
  return targets


# ----------------------------------------------------------------------------- the attack
def in_threat_order(rows: dict[str, Any]) -> dict[str, Any]:
  """``rows`` keyed by threat model, in `THREAT_MODELS` order (JSON files sort keys)."""
  rank = lambda name: THREAT_MODELS.index(name) if name in THREAT_MODELS else len(THREAT_MODELS)
  return {name: rows[name] for name in sorted(rows, key=lambda n: (rank(n), n))}


def _finite(value) -> bool:
  """A number that is finite; False for None (NaN read back from JSON is null)."""
  return value is not None and bool(np.isfinite(value))


def _interval(summary: dict | None, spec: str) -> str:
  if not summary or not _finite(summary.get('mean')):
    return '–'
  if not (_finite(summary.get('low')) and _finite(summary.get('high'))):
    return f'{summary["mean"]:{spec}}'
  return f'{summary["mean"]:{spec}} [{summary["low"]:{spec}}, {summary["high"]:{spec}}]'


def _p(summary: dict | None) -> str:
  if not summary or not _finite(summary.get('p_value')):
    return '–'
  return f'{summary["p_value"]:.2g}'


def table_rows(rows: dict[str, dict]) -> list[list[str]]:
  """The privacy table's cells, one list per threat model (`TABLE_HEADER`)."""
  out = []
  for name, s in in_threat_order(rows).items():
    n = s['num_people']
    reid = s.get('reidentified')
    if s.get('shared'):
      count = 'shared view: no count'
    elif reid:
      count = (f'{reid["successes"]}/{reid["trials"]} = {reid["rate"]:.2f} '
               f'[{reid["low"]:.2f}, {reid["high"]:.2f}] (chance {reid["chance"]:.2f}, '
               f'p={reid["p_value"]:.2g})')
    else:
      count = '–'
    rank = s.get('rank')
    if rank and rank.get('by_construction'):
      rank_cell = f'{rank["chance"]:.1f} by construction'
    else:
      rank_cell = _interval(rank, '.1f') + (f' (chance {(n + 1) / 2:.1f})' if rank else '')
    auc = s.get('auc_vs_null')
    out.append([name, f'{s["attack_seeds"]}x{s["federations"]}', count, rank_cell,
                _interval(auc, '.2f'), _p(auc), _fmt(s.get('psnr')), _fmt(s.get('ssim'), '.3f'),
                _fmt(s.get('label_error')), _fmt(s.get('baseline_label_error')),
                _fmt(s.get('gaze_kl')), _fmt(s.get('baseline_kl'))])
  return out


TABLE_HEADER = ('threat model', 'seeds x feds', 're-identified [95% CI] (per-client views)',
                'mean rank [95% CI]', 'AUC vs null [95% CI]', 'p (AUC>0.5)', 'PSNR', 'SSIM',
                'label err', 'no-leak err', 'gaze KL', 'no-leak KL')


def _fmt(value, spec: str = '.2f') -> str:
  if value is None or not np.isfinite(value):
    return '–'
  return format(value, spec)


def format_table(rows: dict[str, dict], label_unit: str = 'deg') -> str:
  """The privacy table: one line per threat model, with 95% intervals and p-values."""
  header = list(TABLE_HEADER)
  header[8] = f'label err ({label_unit})'
  header[9] = f'no-leak err ({label_unit})'
  cells = [header] + table_rows(rows)
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  return '\n'.join('  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def _attack_identity(config, runs: Sequence[RecordedRound], attack_dir: str | None) -> dict:
  """What the attack's results depend on: its config and each target's run and round.

  Targets are named relative to the attack directory, so moving or copying a tree
  that holds both (e.g. ``runs/demo``) keeps a finished attack recognised.
  """
  from privateyes_jax.federated import engine  # pylint: disable=g-import-not-at-top
  where = lambda path: (os.path.relpath(os.path.abspath(path), os.path.abspath(attack_dir))
                        if attack_dir else os.path.abspath(path))
  return {'attack_config': workdir_lib.config_to_dict(config),
          'targets': [{'run': where(r.run_dir), 'round': r.round,
                       'config_fingerprint': engine.config_fingerprint(r.config)} for r in runs]}


def _check_attack_dir(attack_dir: str, identity: dict, overwrite: bool) -> dict | None:
  """Refuses a directory of another attack; returns its summary if this attack is done.

  ``overwrite`` starts afresh: the results, and the prior too, are made again.
  """
  path = os.path.join(attack_dir, workdir_lib.CONFIG_FILE)
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if old != identity and not overwrite:
      changed = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
      raise workdir_lib.WorkdirError(
          f'{attack_dir!r} holds an attack with another config or other targets (differs in '
          f'{changed}); use another directory or pass --overwrite.')
    if overwrite:
      for name in (workdir_lib.SUMMARY_FILE, workdir_lib.CONFIG_FILE):
        if os.path.exists(os.path.join(attack_dir, name)):
          os.remove(os.path.join(attack_dir, name))
      shutil.rmtree(os.path.join(attack_dir, 'prior'), ignore_errors=True)
    else:
      summary = os.path.join(attack_dir, workdir_lib.SUMMARY_FILE)
      if os.path.exists(summary):
        with open(summary) as f:
          return json.load(f)
  os.makedirs(attack_dir, exist_ok=True)
  workdir_lib.write_json(path, identity)
  return None


# ----------------------------------------------------------------------------- extra rows
@dataclasses.dataclass
class RowContext:
  """What a registered row gets for one (federation, attack seed).

  Attributes:
    rounds: the federation's recorded rounds (one per target run of that seed).
    people: the attacked people (classes of the evaluation classifier).
    attack_seed: this repetition's seed.
    prior: the trained GAN prior (auxiliary people only).
    evaluate: ``evaluate(attacks, shared, null_images=None, people=None) -> per-person
      rows`` scores results shaped like `dualview.attack_person`'s (``images`` uint8
      ``[K, H, W, C]``, the run's image shape, ``gaze`` ``[M, 2]``) exactly as
      DualView's rows are (rank, AUC vs the null view, re-identified for per-client
      views, PSNR/SSIM, label error, KL, baseline). ``null_images``: the row's own null view (the same attack on
      noise; default a DualView null of this repetition); ``people``: a subset of
      ``people`` the attacks belong to (default all, in order).
    config: the attack config (the rows' budgets).
    dualview: ``dualview(recorded, global_params, change, key) -> result``: DualView
      as on a per-client view of ``recorded`` (its model and local training), with
      view 2 in the pipeline's form.
    dualview_null: ``dualview_null(recorded, global_params, like) -> result``: this
      repetition's DualView null view of that model (cached; DualView's own rows
      share it when they attack the same model).
    null_change: `null_change`.
    view2: ``view2(result, scaling=None) -> result``: view 2 in the pipeline's form
      (the recovered gaze points, mapped from the model's standardised labels to the
      run's unit by ``scaling`` = the attacked run's ``label_scaling``, kept as
      ``gaze_points``; ``gaze`` the distribution scored), as DualView's results get it.
    cache: a dict kept across repetitions (e.g. recoveries that do not depend on
      the attack seed).
  """
  rounds: list[RecordedRound]
  people: list[base.PersonData]
  attack_seed: int
  prior: Any
  evaluate: Callable[..., list[dict]]
  config: Any = None
  dualview: Callable[..., dict] | None = None
  dualview_null: Callable[..., dict] | None = None
  null_change: Callable[..., Any] | None = None
  view2: Callable[..., dict] | None = None
  cache: dict = dataclasses.field(default_factory=dict)


# name -> (shared, fn). ``fn(context) -> list of per-person rows or None`` (None: the
# federation's views do not allow this row). Rows need ``person``; any of ``rank``,
# ``reidentified`` (per-client only), ``auc_vs_null`` and the pixel/label metric keys
# of `evaluation.evaluate_people` are pooled by `scoring.summarize_row`.
EXTRA_ROWS: dict[str, tuple[bool, Callable[[RowContext], list[dict] | None]]] = {}


def register_row(name: str, fn: Callable[[RowContext], list[dict] | None], *,
                 shared: bool) -> None:
  """Adds a threat model to every attack: ``fn(context)`` gives its per-person rows."""
  if name in THREAT_MODELS:
    raise ValueError(f'{name!r} is a DualView threat model already.')
  EXTRA_ROWS[name] = (shared, fn)


def null_change(key: jax.Array, like: Any) -> Any:
  """A null view: Gaussian noise shaped like the model change (the update matching is
  scale-free, so its scale does not matter)."""
  leaves, treedef = jax.tree.flatten(like)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype)
                                      for k, x in zip(keys, leaves)])


def federations_of(runs: Sequence[RecordedRound]) -> list[list[RecordedRound]]:
  """Target runs grouped by training seed (one federation each), in seed order.

  Raises:
    ValueError: two runs of one federation give the same threat model, or the
      federations' rounds attack different people.
  """
  groups: dict[int, list[RecordedRound]] = {}
  for r in runs:
    groups.setdefault(r.federation_seed, []).append(r)
  for seed, group in groups.items():
    names = [t.threat_model for r in group for t in threat_targets(r)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
      raise ValueError(f'Threat models {duplicates} come from more than one target run of '
                       f'training seed {seed}; give one run per threat model and federation.')
  key_people = lambda r: [p.person for p in r.clients]
  for r in runs[1:]:
    if key_people(r) != key_people(runs[0]):
      raise ValueError(f'Target runs attack different clients ({runs[0].run_dir}: '
                       f'{key_people(runs[0])[:5]}..., {r.run_dir}: {key_people(r)[:5]}...); '
                       'attack them separately.')
  kinds = {(r.label_kind, r.label_unit) for r in runs}
  if len(kinds) > 1:
    raise ValueError(f'Target runs have different label kinds {sorted(kinds)}; attack them '
                     'separately.')
  return [groups[s] for s in sorted(groups)]


def run_attack(config: ml_collections.ConfigDict, target_runs: Sequence[str],
               attack_dir: str | None = None, overwrite: bool = False,
               prior_dir: str | None = None, cache: dict | None = None) -> dict:
  """DualView on every threat model of ``target_runs``; returns (and writes) the summary.

  Args:
    config: see `default_config`.
    target_runs: workdirs of federated runs that recorded views (plain FL and/or
      PrivatEyes; each contributes the threat models its view allows). Runs with
      different training seeds are different federations of the same people; each
      threat model's row pools every federation and attack seed.
    attack_dir: where ``summary.json``, the plots and the prior go. A finished
      attack of the same config and targets is read back instead of rerun; one
      of another config is refused unless ``overwrite``. None: nothing written.
    overwrite: start afresh in ``attack_dir`` (another attack's results, or this
      one's, and the prior are replaced).
    prior_dir: the prior's checkpoints (default ``attack_dir/prior``). Attacks of one
      prior config and auxiliary people (e.g. the points of a curve) share one
      directory and train the prior once; `gan_prior.train_prior` refuses a directory
      of another prior.
    cache: a dict kept across calls: the evaluation classifier of the same people and
      settings is trained once (it reads only the attacked people's data).

  Returns:
    ``{'threat_models': {name: row}, 'per_person': {name: [rows]}, 'timings',
    'population_gaze_reference', 'classifier_accuracy', 'targets', ...}``.
  """
  if not target_runs:
    raise ValueError('Give at least one target run (a workdir trained with record_views).')
  if config.gaze_distribution not in GAZE_DISTRIBUTIONS:
    raise ValueError(f'gaze_distribution must be one of {GAZE_DISTRIBUTIONS}, got '
                     f'{config.gaze_distribution!r}.')
  if config.attack_seeds < 1:
    raise ValueError(f'attack_seeds must be >= 1, got {config.attack_seeds}.')
  t_all = time.perf_counter()
  runs = [load_round(r, config.round) for r in target_runs]
  federations = federations_of(runs)
  if len(federations) < config.min_federations:
    raise ValueError(
        f'The attack config asks for at least {config.min_federations} federations (target runs '
        f'of the same people trained with different seeds); got {len(federations)} (seeds '
        f'{[f[0].federation_seed for f in federations]}). Train more, or lower min_federations.')
  identity = _attack_identity(config, runs, attack_dir)
  if attack_dir:
    done = _check_attack_dir(attack_dir, identity, overwrite)
    if done is not None:
      logging.info('Attack results found in %s; not rerunning.', attack_dir)
      return done
  timings = {}
  people = runs[0].clients
  if config.max_people:
    people = people[:config.max_people]
  people_all = people
  n = len(people)
  label_kind, label_unit = runs[0].label_kind, runs[0].label_unit

  t = time.perf_counter()
  # Public people: the prior and the gaze spread. Their data is a data config like a
  # run's (another dataset, or people of the same one outside the federation); people of
  # any target run (training or held out) are refused, and those in the prior's
  # population are excluded from its training.
  prior_data = gan_prior.prior_data_config(config.prior, runs[0].config)
  aux = gan_prior.aux_dataset(config.prior, runs[0].config)
  gan_prior.check_image_shape(aux, people[0].images.shape[1:])
  excluded = sorted({name for r in runs
                     for name in gan_prior.check_disjoint(prior_data, r.config, prior_dataset=aux)})
  if prior_dir is None and attack_dir:
    prior_dir = os.path.join(os.path.abspath(attack_dir), 'prior')
  prior = gan_prior.train_prior(config.prior, prior_dir, dataset=aux,
                                excluded_people=tuple(excluded))
  timings['prior_s'] = time.perf_counter() - t

  t = time.perf_counter()
  classifier_key = ('classifier', tuple(p.person for p in people), config.classifier_steps,
                    config.seed, tuple(config.classifier_features),
                    config.min_classifier_accuracy, runs[0].config.data.to_json(sort_keys=True))
  classifier = (cache or {}).get(classifier_key)
  if classifier is None:
    classifier = evaluation.train_evaluation_classifier(
        people, steps=config.classifier_steps, seed=config.seed,
        features=tuple(config.classifier_features), min_accuracy=config.min_classifier_accuracy)
    if cache is not None:
      cache[classifier_key] = classifier
  timings['classifier_s'] = time.perf_counter() - t
  logging.info('Evaluation classifier: held-out accuracy %.3f', classifier.accuracy)
  background = (gan_prior.sample_images(prior, jax.random.PRNGKey(config.seed + 7),
                                        config.background_samples)
                if config.background_samples else None)
  # View 2's spread and the no-leakage centre come from the public auxiliary people,
  # when their labels are of the run's kind; otherwise the recovered points stand alone
  # and the no-leakage centre is the federation's mean (a reference, not adversary knowledge).
  aux_matches = getattr(aux, 'label_kind', 'gaze') == label_kind
  gaze_distribution = config.gaze_distribution if aux_matches else 'samples'
  if not aux_matches and config.gaze_distribution == 'aux_gaussian':
    logging.warning('The prior\'s people have %s labels, the targets %s: view 2 uses the '
                    'recovered points (gaze_distribution=samples).', aux.label_kind, label_kind)
  within_cov = dualview.within_person_covariance(aux.people) if aux_matches else None
  if aux_matches:
    baseline_centre = metrics.mean_label(np.concatenate([p.labels for p in aux.people]),
                                         label_kind)
    baseline_from = 'public auxiliary people\'s mean label'
  else:
    baseline_centre = metrics.mean_label(np.concatenate([p.labels for p in people]), label_kind)
    baseline_from = 'federation\'s mean label (reference only)'

  inversions = {}  # One compiled inversion per (model, gaze source), shared by all people.
  from privateyes_jax.attacks import rows as rows_lib  # pylint: disable=g-import-not-at-top
  extra_rows = {**EXTRA_ROWS, **rows_lib.selected_rows(config)}
  row_cache: dict = {}  # Kept across repetitions (rows_lib's recoveries).

  def attack(tg: Target, key: jax.Array, change: Any, gaze_seed: int) -> dict:
    rcfg = tg.recorded.config
    attack_cfg = dualview.layers_for_model(config.attack, tg.global_params)
    attack_cfg.gaze_source = tg.gaze_source or attack_cfg.gaze_source
    cache_key = (id(tg.recorded.apply_fn), attack_cfg.gaze_source)
    if cache_key not in inversions:
      inversions[cache_key] = dualview.make_inversion(prior, tg.recorded.apply_fn, attack_cfg,
                                                      rcfg.optimizer.name)
    local_training = {'optimizer': rcfg.optimizer.name,
                      'learning_rate': rcfg.optimizer.learning_rate,
                      'local_steps': rcfg.fl.local_steps, 'batch_size': rcfg.batch_size}
    result = dualview.attack_person(key, prior, tg.recorded.apply_fn, tg.global_params, change,
                                    local_training, attack_cfg, inversion=inversions[cache_key])
    return view2(result, gaze_seed, tg.recorded.label_scaling)

  def view2(result: dict, gaze_seed: int, scaling=None) -> dict:
    """View 2 in the pipeline's form: the recovered points, and the distribution scored.

    ``scaling``: the attacked run's label standardisation; the inversion's labels and
    the model's predictions are standardised, view 2 is scored in the run's unit.
    """
    if scaling is not None and not scaling.is_identity:
      for field in ('gaze', 'labels'):
        if field in result:
          result[field] = np.asarray(scaling.denormalize(np.asarray(result[field])), np.float32)
    result['gaze_points'] = result['gaze']
    if gaze_distribution == 'aux_gaussian':
      result['gaze'] = dualview.gaze_distribution(result['gaze_points'], within_cov,
                                                  num_samples=config.gaze_samples, seed=gaze_seed)
    return result

  seeds = [config.seed + i for i in range(config.attack_seeds)]
  targets_of = [[t for r in fed for t in threat_targets(r)] for fed in federations]
  per_rep = sum(1 if tg.shared else n for tg in targets_of[0])
  progress = progress_lib.Progress(
      'DualView', sum(sum(1 if tg.shared else n for tg in tgs) for tgs in targets_of)
      * len(seeds), unit='attack')
  done_attacks, null_attacks = 0, 0
  per_person: dict[str, list[dict]] = {}
  shared_of: dict[str, bool] = {}
  views: dict[str, dict] = {}
  plots: dict[str, list[dict]] = {}
  timings['attacks_s'] = timings['evaluation_s'] = 0.0
  for f, (fed, targets) in enumerate(zip(federations, targets_of)):
    for s_i, seed in enumerate(seeds):
      t = time.perf_counter()
      root = jax.random.PRNGKey(seed)
      results, nulls = {}, {}
      for i, tg in enumerate(targets):
        # The null view of this attacked model (θ and gaze source): noise for a change.
        null_key = (tg.recorded.run_dir, id(tg.global_params), tg.gaze_source)
        if null_key not in nulls:
          noise = null_change(jax.random.fold_in(root, 999_983), tg.changes[0])
          nulls[null_key] = attack(tg, jax.random.fold_in(root, 999_979), noise, seed)
          null_attacks += 1
        if tg.shared:  # One view for everybody: attacked once.
          results[tg.threat_model] = [attack(tg, jax.random.fold_in(root, i), tg.changes[0],
                                             seed)] * n
          done_attacks += 1
          progress.update(done_attacks)
          continue
        rows = []
        for c in range(n):
          # The same key per client across threat models: differences come from the views.
          rows.append(attack(tg, jax.random.fold_in(root, 1000 + c), tg.changes[c], seed))
          done_attacks += 1
          progress.update(done_attacks)
        results[tg.threat_model] = rows
      timings['attacks_s'] += time.perf_counter() - t

      t = time.perf_counter()
      for tg in targets:
        null = nulls[(tg.recorded.run_dir, id(tg.global_params), tg.gaze_source)]
        rows = evaluation.evaluate_people(
            results[tg.threat_model], people, classifier, null_images=null['images'],
            shared=tg.shared, min_accuracy=config.min_classifier_accuracy,
            background=background, label_kind=label_kind, baseline_centre=baseline_centre,
            num_real=config.num_real_images)
        _collect(per_person, tg.threat_model, rows, seed, fed[0].federation_seed)
        shared_of[tg.threat_model] = tg.shared
        runs_of = views.setdefault(tg.threat_model, {'view': tg.view, 'round': tg.recorded.round,
                                                     'runs': []})['runs']
        if tg.recorded.run_dir not in runs_of:
          runs_of.append(tg.recorded.run_dir)
        if f == 0 and s_i == 0:
          plots[tg.threat_model] = results[tg.threat_model]
      some_null = next(iter(nulls.values()))

      def evaluate_extra(attacks, shared, null_images=None, people=None, _null=some_null):
        return evaluation.evaluate_people(
            attacks, list(people_all if people is None else people), classifier,
            null_images=_null['images'] if null_images is None else null_images, shared=shared,
            min_accuracy=config.min_classifier_accuracy, background=background,
            label_kind=label_kind, baseline_centre=baseline_centre,
            num_real=config.num_real_images)

      def row_target(recorded, global_params):
        return Target('extra', recorded, global_params, [], False, '', 'extra row')

      def dualview_row(recorded, global_params, change, key, _seed=seed):
        return attack(row_target(recorded, global_params), key, change, _seed)

      def dualview_null(recorded, global_params, like, _root=root, _seed=seed, _nulls=nulls):
        null_key = (recorded.run_dir, id(global_params), '')
        if null_key not in _nulls:  # The same keys as DualView's own nulls.
          noise = null_change(jax.random.fold_in(_root, 999_983), like)
          _nulls[null_key] = attack(row_target(recorded, global_params),
                                    jax.random.fold_in(_root, 999_979), noise, _seed)
        return _nulls[null_key]

      context = RowContext(rounds=list(fed), people=list(people), attack_seed=seed, prior=prior,
                           evaluate=evaluate_extra, config=config, dualview=dualview_row,
                           dualview_null=dualview_null, null_change=null_change,
                           view2=lambda result, scaling=None, _seed=seed: view2(
                               result, _seed, scaling),
                           cache=row_cache)
      for name, (shared, fn) in extra_rows.items():
        t_row = time.perf_counter()
        rows = fn(context)
        timings[f'row_{name}_s'] = timings.get(f'row_{name}_s', 0.0) + time.perf_counter() - t_row
        if rows is not None:
          _collect(per_person, name, rows, seed, fed[0].federation_seed)
          shared_of[name] = shared
          views.setdefault(name, {'view': rows_lib.ROW_LABELS.get(name, name),
                                  'round': fed[0].round, 'runs': []})
      timings['evaluation_s'] += time.perf_counter() - t
  timings['attack_mean_s'] = timings['attacks_s'] / max(done_attacks + null_attacks, 1)
  timings['attacks'] = done_attacks
  timings['null_attacks'] = null_attacks
  del per_rep

  rows = {}
  for name, person_rows in per_person.items():
    rows[name] = {**scoring.summarize_row(person_rows, n, shared_of[name]), **views[name],
                  **rows_lib.summarize_extra(name, person_rows)}
  rows = in_threat_order(rows)
  membership_out = {}
  if config.get('membership_inference', False):
    t = time.perf_counter()
    # Shadow people: the prior's auxiliary people (disjoint from every target run's
    # training and held-out people: checked above), less any excluded from the prior.
    shadow_people = [p for p in aux.people if p.person not in set(excluded)]
    membership_out = rows_lib.membership_by_run(config, federations, shadow_people)
    timings['membership_s'] = time.perf_counter() - t
  timings['total_s'] = time.perf_counter() - t_all
  out = {'threat_models': rows, 'per_person': {k: per_person[k] for k in rows},
         'timings': timings,
         'population_gaze_reference': population_gaze_reference(people, label_kind),
         'classifier_accuracy': classifier.accuracy, 'num_people': n,
         'label_kind': label_kind, 'label_unit': label_unit,
         'gaze_distribution': gaze_distribution, 'baseline_centre': baseline_from,
         'attack_seeds': seeds, 'federation_seeds': [f[0].federation_seed for f in federations],
         'targets': identity['targets']}
  if membership_out:
    out['membership'] = membership_out
  if attack_dir:
    evaluation.plot_reconstructions(
        os.path.join(attack_dir, 'reconstructions.png'), people,
        {name: [r['images'] for r in rs] for name, rs in plots.items()})
    evaluation.plot_gaze(os.path.join(attack_dir, 'gaze.png'), people,
                         {name: [r['gaze_points'] for r in rs] for name, rs in plots.items()
                          if not shared_of[name]}, label_kind=label_kind, unit=label_unit)
    evaluation.plot_person_scores(os.path.join(attack_dir, 'per_person.png'), out)
    workdir_lib.write_json(os.path.join(attack_dir, workdir_lib.SUMMARY_FILE), out)
  return out


def _collect(per_person: dict, name: str, rows: Sequence[dict], seed: int, federation: int):
  per_person.setdefault(name, []).extend(
      {**r, 'attack_seed': seed, 'federation': federation} for r in rows)


def population_gaze_reference(people: Sequence[base.PersonData], label_kind: str = 'gaze') -> dict:
  """Label error and KL of guessing the federation's population (a reference that reads the
  targets' labels: no adversary has it; the matched baseline is in every row)."""
  population = np.concatenate([p.labels for p in people])
  subsample = population[np.linspace(0, len(population) - 1, 32 * len(people)).astype(int)]
  return {
      'label_error': float(np.mean([metrics.recovered_label_error(population, p.labels,
                                                                  label_kind) for p in people])),
      'gaze_kl': float(np.mean([metrics.gaze_kde_kl(p.labels, subsample) for p in people]))}


def print_summary(out: dict) -> None:
  """Prints the privacy table (95% intervals, chance, p-values) and the no-leakage references."""
  unit = out.get('label_unit', 'deg')
  print(f'DualView on {out["num_people"]} clients, {len(out.get("attack_seeds", [1]))} attack '
        f'seeds x {len(out.get("federation_seeds", [0]))} federations (evaluation classifier '
        f'held-out accuracy {out["classifier_accuracy"]:.3f})')
  print(format_table(out['threat_models'], unit))
  ref = out['population_gaze_reference']
  n = out['num_people']
  print(f'Chance: re-identified 1/{n} = {1 / n:.2f} per person (per-client views only; a shared '
        f'view has one reconstruction for everybody), mean rank {(n + 1) / 2:.1f}, AUC vs null '
        '0.5. Intervals: Clopper-Pearson (counts), Student t (rank, AUC); p: one-sided tests '
        'against chance (scoring.py).')
  print(f'No-leakage columns: the attack\'s own view-2 distribution moved to the '
        f'{out.get("baseline_centre", "auxiliary mean")}. Guessing the federation\'s '
        f'population itself: label err {ref["label_error"]:.2f} {unit}, KL {ref["gaze_kl"]:.2f}.')
  notes = extra_row_notes(out['threat_models'])
  if notes:
    print(notes)
  from privateyes_jax.attacks import rows as rows_lib  # pylint: disable=g-import-not-at-top
  membership_lines = rows_lib.format_membership(out.get('membership') or {})
  if membership_lines:
    print(membership_lines)


def extra_row_notes(rows: dict[str, dict]) -> str:
  """What the reviewer's rows (after DualView's) attack, one line each; the Sybil
  row's recovery (mean cosine to the honest update, max abs error)."""
  from privateyes_jax.attacks import rows as rows_lib  # pylint: disable=g-import-not-at-top
  lines = []
  for name, s in rows.items():
    if name not in rows_lib.ROW_LABELS:
      continue
    line = f'{name}: {rows_lib.ROW_LABELS[name]}'
    if name == 'sybil' and 'mean_cosine' in s:
      line += (f'; recovered updates: mean cosine {s["mean_cosine"]:.4f} to the honest update, '
               f'max abs error {s.get("max_abs_error", float("nan")):.2g} (fixed-point). What '
               'would stop it: client authentication and a minimum number of HONEST clients '
               'per round (min_clients does not: Sybils count towards it)')
    if name == 'round_differencing':
      line += ('; built from the opened sums themselves' if s.get('exact') else
               '; built from output models (equal weights assumed)')
      line += (', so exact only where the other clients\' updates do not change between the '
               'rounds combined (a moving run: they drift, and the estimate carries it)')
    lines.append(line)
  return '\n'.join(lines)
