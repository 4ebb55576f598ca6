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
clients' private data, PSNR/SSIM, gaze error and gaze KL) is `evaluation`'s.

Refusals: a run without recorded views, a view whose config fingerprint is not the
run's config (e.g. left over from an overwritten run), a run whose clients are not
people (``data.partition='iid'``), an evaluation classifier below a usable
accuracy, and an attack directory holding results of another attack config.

Outputs in ``attack_dir``: ``summary.json`` (``threat_models``: one row per threat
model with `evaluation.SUMMARY_KEYS`; ``per_person`` rows; timings; the no-leakage
gaze reference), ``reconstructions.png`` (real vs reconstructed images per person
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
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.flatten_util import ravel_pytree

from privateyes_jax import data as data_lib
from privateyes_jax import metrics
from privateyes_jax import progress as progress_lib
from privateyes_jax import workdir as workdir_lib
from privateyes_jax.attacks import dualview
from privateyes_jax.attacks import evaluation
from privateyes_jax.attacks import gan_prior
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
    seed: the attack's PRNG seed (restarts' latents and labels).
    round: the recorded round to attack (1-based); -1: the latest recorded.
    max_people: attack only the first this many clients of the round (0: all).
    prior: `gan_prior.default_config` (the auxiliary people must not be clients).
    attack: `dualview.default_config` (inversion budget and objective).
    classifier_steps, classifier_features: the evaluation identity classifier.
    min_classifier_accuracy: below this held-out accuracy nothing is reported.
    background_samples: random prior samples the classifier's scores are
      calibrated against (`metrics.reidentification`); 0 disables calibration.
    gaze_distribution: view 2's form: ``'aux_gaussian'`` (the recovered mean with
      the auxiliary people's within-person spread, `dualview.gaze_distribution`)
      or ``'samples'`` (the recovered gaze points themselves).
  """
  if preset not in ('demo', 'full', 'tiny'):
    raise ValueError(f'Unknown attack preset {preset!r}; available: demo, full, tiny.')
  c = ml_collections.ConfigDict()
  c.seed = 1
  c.round = -1
  c.max_people = 0
  c.prior = gan_prior.default_config(preset)
  c.attack = dualview.default_config(preset)
  c.classifier_steps = 300
  c.classifier_features = (16, 32, 64)
  c.min_classifier_accuracy = evaluation.DEFAULT_MIN_ACCURACY
  c.background_samples = 256
  c.gaze_distribution = 'aux_gaussian'
  if preset == 'full':
    c.classifier_steps = 2000
  elif preset == 'tiny':
    c.attack.steps = 2
    c.classifier_steps = 40
    c.classifier_features = (8, 16)
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
    individual = [unflat(u, 'an individual update') for u in view['view/individual_updates']]
  elif 'view/coalition_input_estimate' in view:
    agg = config.aggregator
    with jax.enable_x64(True):  # The ring's own codec (low k bits, signed fixed point).
      decoded = np.asarray(ring.decode(view['view/coalition_input_estimate'],
                                       ring.RingSpec(k=agg.k, f=agg.f, s=agg.s)))
    coalition = [unflat(d[:num_params], 'a coalition estimate') for d in decoded]
  else:
    raise ViewError(f'The view of round {int(view["round"])} in {run_dir!r} holds neither '
                    'individual updates nor a coalition\'s shares.')
  return RecordedRound(run_dir=run_dir, config=config, round=int(view['round']), clients=clients,
                       federation=tuple(train_people.person_names),
                       initial_params=initial,
                       global_params=unflat(view['global_params'], 'global_params'),
                       output_params=unflat(view['output_model'], 'output_model'),
                       individual_updates=individual, coalition_estimates=coalition,
                       apply_fn=model.apply)


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


def format_table(rows: dict[str, dict]) -> str:
  """The privacy table: one line per threat model."""
  rows = in_threat_order(rows)
  lines = [f'{"threat model":<24} {"re-identified":>13} {"top-5":>7} {"PSNR":>6} {"SSIM":>6} '
           f'{"gaze err (deg)":>14} {"gaze KL":>8}']
  for name, s in rows.items():
    lines.append(f'{name:<24} {s["reidentified"]:>9d}/{s["num_people"]:<3d} '
                 f'{s["top5"]:>4d}/{s["num_people"]:<2d} {s["psnr"]:>6.2f} {s["ssim"]:>6.3f} '
                 f'{s["gaze_error_deg"]:>14.2f} {s["gaze_kl"]:>8.2f}')
  return '\n'.join(lines)


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


def run_attack(config: ml_collections.ConfigDict, target_runs: Sequence[str],
               attack_dir: str | None = None, overwrite: bool = False) -> dict:
  """DualView on every threat model of ``target_runs``; returns (and writes) the summary.

  Args:
    config: see `default_config`.
    target_runs: workdirs of federated runs that recorded views (plain FL and/or
      PrivatEyes; each contributes the threat models its view allows).
    attack_dir: where ``summary.json``, the plots and the prior go. A finished
      attack of the same config and targets is read back instead of rerun; one
      of another config is refused unless ``overwrite``. None: nothing written.
    overwrite: start afresh in ``attack_dir`` (another attack's results, or this
      one's, and the prior are replaced).

  Returns:
    ``{'threat_models': {name: row}, 'per_person': {name: [rows]}, 'timings',
    'population_gaze_reference', 'classifier_accuracy', 'targets'}``.
  """
  if not target_runs:
    raise ValueError('Give at least one target run (a workdir trained with record_views).')
  if config.gaze_distribution not in GAZE_DISTRIBUTIONS:
    raise ValueError(f'gaze_distribution must be one of {GAZE_DISTRIBUTIONS}, got '
                     f'{config.gaze_distribution!r}.')
  t_all = time.perf_counter()
  runs = [load_round(r, config.round) for r in target_runs]
  targets = [t for r in runs for t in threat_targets(r)]
  names = [t.threat_model for t in targets]
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise ValueError(f'Threat models {duplicates} come from more than one target run; attack '
                     'those runs separately.')
  identity = _attack_identity(config, runs, attack_dir)
  if attack_dir:
    done = _check_attack_dir(attack_dir, identity, overwrite)
    if done is not None:
      logging.info('Attack results found in %s; not rerunning.', attack_dir)
      return done
  timings = {}
  people = runs[0].clients
  key_people = lambda r: [p.person for p in r.clients]
  for r in runs[1:]:
    if key_people(r) != key_people(runs[0]):
      raise ValueError(f'Target runs attack different clients ({runs[0].run_dir}: '
                       f'{key_people(runs[0])[:5]}..., {r.run_dir}: {key_people(r)[:5]}...); '
                       'attack them separately.')
  if config.max_people:
    people = people[:config.max_people]
  n = len(people)

  t = time.perf_counter()
  aux = gan_prior.aux_dataset(config.prior)  # Public people: the prior and the gaze spread.
  prior = gan_prior.train_prior(
      config.prior, os.path.join(os.path.abspath(attack_dir), 'prior') if attack_dir else None,
      dataset=aux, excluded_people=tuple(sorted({name for r in runs for name in r.federation})))
  timings['prior_s'] = time.perf_counter() - t

  t = time.perf_counter()
  classifier = evaluation.train_evaluation_classifier(
      people, steps=config.classifier_steps, seed=config.seed,
      features=tuple(config.classifier_features), min_accuracy=config.min_classifier_accuracy)
  timings['classifier_s'] = time.perf_counter() - t
  logging.info('Evaluation classifier: held-out accuracy %.3f', classifier.accuracy)
  background = (gan_prior.sample_images(prior, jax.random.PRNGKey(config.seed + 7),
                                        config.background_samples)
                if config.background_samples else None)
  within_cov = dualview.within_person_covariance(aux.people)

  results: dict[str, list[dict]] = {}
  t = time.perf_counter()
  progress = progress_lib.Progress('DualView', sum(1 if tg.shared else n for tg in targets),
                                   unit='attack')
  done_attacks = 0
  inversions = {}  # One compiled inversion per (model, gaze source), shared by all people.
  root = jax.random.PRNGKey(config.seed)

  def attack(tg: Target, key: jax.Array, change: Any) -> dict:
    rcfg = tg.recorded.config
    attack_cfg = config.attack.copy_and_resolve_references()
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
    result['gaze_points'] = result['gaze']
    if config.gaze_distribution == 'aux_gaussian':
      result['gaze'] = dualview.gaze_distribution(result['gaze_points'], within_cov,
                                                  seed=config.seed)
    return result

  for i, tg in enumerate(targets):
    if tg.shared:  # One view for everybody: attacked once.
      results[tg.threat_model] = [attack(tg, jax.random.fold_in(root, i), tg.changes[0])] * n
      done_attacks += 1
      progress.update(done_attacks)
      continue
    rows = []
    for c in range(n):
      # The same key per client across threat models: differences come from the views.
      rows.append(attack(tg, jax.random.fold_in(root, 1000 + c), tg.changes[c]))
      done_attacks += 1
      progress.update(done_attacks)
    results[tg.threat_model] = rows
  timings['attacks_s'] = time.perf_counter() - t
  timings['attack_mean_s'] = timings['attacks_s'] / max(done_attacks, 1)

  t = time.perf_counter()
  per_person = {name: evaluation.evaluate_people(rows, people, classifier,
                                                 min_accuracy=config.min_classifier_accuracy,
                                                 background=background)
                for name, rows in results.items()}
  rows = {}
  for tg in targets:
    rows[tg.threat_model] = {**evaluation.summarize(per_person[tg.threat_model]),
                             'run': tg.recorded.run_dir, 'round': tg.recorded.round,
                             'view': tg.view}
  timings['evaluation_s'] = time.perf_counter() - t
  timings['total_s'] = time.perf_counter() - t_all
  out = {'threat_models': rows, 'per_person': per_person, 'timings': timings,
         'population_gaze_reference': population_gaze_reference(people),
         'classifier_accuracy': classifier.accuracy,
         'num_people': n, 'targets': identity['targets']}
  if attack_dir:
    evaluation.plot_reconstructions(
        os.path.join(attack_dir, 'reconstructions.png'), people,
        {name: [r['images'] for r in rs] for name, rs in results.items()})
    evaluation.plot_gaze(os.path.join(attack_dir, 'gaze.png'), people,
                         {name: [r['gaze_points'] for r in rs] for name, rs in results.items()
                          if name not in ('privateyes_output_model', 'generic_mpc')})
    workdir_lib.write_json(os.path.join(attack_dir, workdir_lib.SUMMARY_FILE), out)
  return out


def population_gaze_reference(people: Sequence[base.PersonData]) -> dict:
  """Gaze error and KL of an adversary who learnt nothing and guesses the population's gaze."""
  population = np.concatenate([p.labels for p in people])
  subsample = population[np.linspace(0, len(population) - 1, 32 * len(people)).astype(int)]
  return {
      'gaze_error_deg': float(np.mean([metrics.recovered_gaze_error_deg(population, p.labels)
                                       for p in people])),
      'gaze_kl': float(np.mean([metrics.gaze_kde_kl(p.labels, subsample) for p in people]))}


def print_summary(out: dict) -> None:
  """Prints the privacy table, the no-leakage reference and who was re-identified."""
  print(f'DualView on {out["num_people"]} clients (evaluation classifier held-out accuracy '
        f'{out["classifier_accuracy"]:.3f})')
  print(format_table(out['threat_models']))
  ref = out['population_gaze_reference']
  print(f'{"no leakage (population)":<24} {"":>13} {"":>7} {"":>6} {"":>6} '
        f'{ref["gaze_error_deg"]:>14.2f} {ref["gaze_kl"]:>8.2f}')
