"""Federated training rounds: sample, train locally, aggregate, step the server.

One round (DESIGN.md §3)::

  θ ──broadcast──► local training of the sampled clients (executor) ──► Δ_c [C, P]
  Δ_c ──► aggregator (plain mean, or PrivatEyes MPC: only Σ Δ_c is opened) ──► Δ̄
  −Δ̄ ──► server optimizer (FedAvg/FedAvgM/FedAdam/FedYogi) ──► θ' (the output model)

Client sampling, batch order and the aggregator's randomness are pure functions of
``(seed, round)``; the checkpoint holds the server state (params, server optimizer
state, aggregator state, round), so a resumed run repeats the same rounds exactly.

``method='local'`` (local-only) trains every person's own model on their own data
for the same number of rounds and never aggregates; its error on the held-out people
is averaged over the clients' models.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.flatten_util import ravel_pytree

from privateyes_jax import metrics as metrics_lib
from privateyes_jax import progress as progress_lib
from privateyes_jax import training
from privateyes_jax import workdir as workdir_lib
from privateyes_jax.federated import aggregators as aggregators_lib
from privateyes_jax.federated import client_data
from privateyes_jax.federated import executors as executors_lib
from privateyes_jax.federated import malicious as malicious_lib
from privateyes_jax.federated import server as server_lib
from privateyes_jax.privacy import dp as dp_lib
from privateyes_jax.workdir import Workdir

AGGREGATORS = ('mean', 'privateyes', 'privateyes_semi_honest')


class RoundRejected(FloatingPointError):
  """A round produced an unusable individual update; the global model was not changed."""


class RoundAborted(RuntimeError):
  """The secure aggregation detected cheating; the global model was not changed."""


def build_aggregator(config, num_clients: int, num_params: int, dp=None):
  """The aggregator named by ``config.aggregator.name`` (one field switches FL and MPC).

  ``dp``: the run's ``privacy.dp.DPSettings`` (None: no DP).
  """
  del num_clients  # The MPC ring bounds are checked per round on the real client count.
  agg = config.aggregator
  record = bool(config.get('record_views', ''))
  validity = agg.get('validity')
  if agg.name != 'privateyes' and validity is not None and validity.get('enabled', False):
    raise ValueError(f'aggregator.validity needs aggregator.name=privateyes, not {agg.name!r} '
                     '(plain FL checks norms in the clear: aggregator.norm_bound).')
  if agg.name == 'mean':
    return aggregators_lib.MeanAggregator(record_view=record, dp=dp)
  if agg.name in ('privateyes', 'privateyes_semi_honest'):
    from privateyes_jax.mpc import aggregator as mpc_aggregator  # pylint: disable=g-import-not-at-top
    from privateyes_jax.mpc import validity as validity_lib  # pylint: disable=g-import-not-at-top
    mpc_config = {'k': agg.k, 'f': agg.f, 's': agg.s, 'num_servers': agg.num_servers,
                  'mode': agg.name, 'coalition': tuple(agg.coalition), 'record_view': record,
                  'adversary': dict(agg.adversary), 'client_chunk': agg.get('client_chunk', 0),
                  'prg': agg.get('prg', 'threefry2x64'),
                  'min_clients': agg.get('min_clients', 3), 'dp': dp,
                  'validity': validity_lib.ValiditySettings.from_config(agg.get('validity'))}
    # The public bound on a client's weight (samples used per round) scales the
    # weighted inputs into [0, 1] before sharing; see mpc/aggregator.py.
    return mpc_aggregator.SecureAggregator.from_config(
        mpc_config, max_weight=config.fl.local_steps * config.batch_size,
        num_params=num_params)
  raise ValueError(f'Unknown aggregator {agg.name!r}; available: {", ".join(AGGREGATORS)}.')


def mpc_cohort_too_small() -> str:
  from privateyes_jax.mpc import aggregator as mpc_aggregator  # pylint: disable=g-import-not-at-top
  return mpc_aggregator.COHORT_TOO_SMALL


def aggregator_init_key(seed: int) -> jax.Array:
  """The key of a run's aggregator state (the MPC dealer's MAC key)."""
  return jax.random.PRNGKey(seed + 1)


def aggregator_round_key(seed: int, round_idx: int) -> jax.Array:
  """The key of a run's aggregation in round ``round_idx`` (0-based)."""
  return jax.random.fold_in(jax.random.PRNGKey(seed + 2), round_idx)


def evaluate_stacked(predict, stacked_params, people, label_kind: str) -> dict[str, float]:
  """Per-person error averaged over a stack of models ``[M, ...]`` (local-only evaluation).

  Models are evaluated one after another with the single-model predict function:
  vmapping predictions over per-model conv kernels makes grouped convolutions, which
  XLA:CPU runs an order of magnitude slower.
  """
  num_models = jax.tree.leaves(stacked_params)[0].shape[0]
  per_model = [training.evaluate_people(predict, jax.tree.map(lambda x: x[m], stacked_params),
                                        people, label_kind) for m in range(num_models)]
  return {p.person: float(np.mean([e[p.person] for e in per_model])) for p in people}


def method_label(config) -> str:
  """The method's name in tables: centralized, local, fedavg, ..., privateyes."""
  if config.method != 'federated':
    return config.method
  agg = config.aggregator.name
  opt = config.fl.server_optimizer
  label = opt if agg == 'mean' else (agg if opt == 'fedavg' else f'{agg}+{opt}')
  dp = config.aggregator.get('dp')
  if dp is not None and dp.get('enabled', False):
    # Runs at several privacy levels are different methods in the tables.
    level = (f'eps={dp.target_epsilon:g}' if dp.get('target_epsilon', 0) else
             f'z={dp.noise_multiplier:g}')
    label += f'+dp({level})'
  attackers = config.fl.get('malicious')
  if attackers is not None and attackers.get('kind', 'none') != 'none':
    label += (f'+{attackers.kind}x{attackers.get("factor", 10.0):g}'
              f'({len(attackers.get("clients", ()))})')
  if config.aggregator.get('norm_bound', 0.0):
    label += '+normcheck'
  validity = config.aggregator.get('validity')
  if validity is not None and validity.get('enabled', False):
    label += f'+validity(C={validity.clip_norm:g})'
  return label


def train(config, workdir: Workdir, model, train_people, test_people, label_kind: str,
          halt_after: int | None = None, *, val_people=None, label_scaling=None) -> dict:
  """Runs federated (or local-only) training; returns this method's summary fields.

  ``train_people`` carry the labels the clients train on (standardised by
  ``label_scaling``, computed before round 1 by `privateyes_jax.label_scaling`);
  predictions are mapped back to the dataset's unit before the test and
  validation people's errors are computed.
  """
  fl = config.fl
  local_only = config.method == 'local'
  people = list(train_people.people)
  if config.data.get('partition', 'person') == 'iid':
    people = client_data.iid_reshuffle(people, config.data.seed)
  elif config.data.get('partition', 'person') != 'person':
    raise ValueError(f'data.partition must be "person" or "iid", got {config.data.partition!r}.')
  store = client_data.store_for_config(people, fl)  # Padded on the device, or streamed.
  num_clients = store.num_clients
  k = num_clients if local_only else server_lib.clients_per_round(fl, num_clients)

  client_opt = training.make_optimizer(config.optimizer)
  local_train = executors_lib.make_local_train(model.apply, client_opt,
                                               unroll=fl.get('unroll', True))
  clients_train = None
  if config.model.name == 'gazenet':
    clients_train = executors_lib.make_clients_train(
        config.model, client_opt, unroll=fl.get('unroll', True),
        compute_dtype=jnp.dtype(fl.get('compute_dtype', 'float32')))
  executor = executors_lib.Executor(local_train, fl.executor, fl.client_chunk,
                                    clients_train=clients_train, model_name=config.model.name)
  params = model.init(jax.random.PRNGKey(config.seed), people[0].images[:1],
                      people[0].head_pose[:1])['params']
  flat0, unravel = ravel_pytree(params)
  num_params = flat0.size
  server_opt = server_lib.make_server_optimizer(fl)  # Its schedule counts rounds.
  dp = None if local_only else dp_lib.DPSettings.from_config(
      config.aggregator.get('dp'), num_clients=num_clients, clients_per_round=k,
      rounds=fl.rounds)
  aggregator = None if local_only else build_aggregator(config, k, num_params, dp)
  attackers = malicious_lib.MaliciousClients.from_config(fl.get('malicious'), num_clients)
  norm_bound = float(config.aggregator.get('norm_bound', 0.0) or 0.0)
  if norm_bound < 0 or not np.isfinite(norm_bound):
    raise ValueError(f'aggregator.norm_bound={norm_bound} must be >= 0 (0: no check).')
  if norm_bound and aggregator is not None and aggregator.name != 'mean':
    raise ValueError(f'aggregator.norm_bound with {aggregator.name}: the servers cannot see '
                     'the updates; set aggregator.validity (the check inside the MPC) instead.')
  validity = getattr(aggregator, 'validity', None)
  max_weight = fl.local_steps * config.batch_size
  ledger = dp_lib.Ledger(dp, config.seed) if dp else None
  dp_slots = dp_lib.capacity(num_clients, dp.sampling_rate) if dp else 0
  if dp and hasattr(aggregator, 'check_noise_headroom'):
    aggregator.check_noise_headroom(max(dp_slots, k), num_params)  # Refused before training.

  if local_only:
    state = {'client_params': jax.tree.map(lambda x: jnp.stack([x] * num_clients), params)}
  else:
    state = {'params': params, 'server_opt_state': server_opt.init(params),
             'aggregator_state': aggregator.init(aggregator_init_key(config.seed))}
  state.update(round=np.asarray(0, np.int64), elapsed_s=np.asarray(0.0, np.float64))
  latest = workdir.latest_step()
  if latest is not None:
    state = workdir.restore(latest, state)
  if not local_only:
    state['aggregator_state'] = _resume_retired_attempts(workdir, aggregator,
                                                         state['aggregator_state'])
  # Rows logged after the checkpoint we resume from (or before the first checkpoint
  # of a run interrupted early) are repeated by this run: drop them.
  workdir.truncate_metrics('round', latest or 0)
  start_round = int(state['round'])

  @jax.jit
  def server_step(params, opt_state, mean_update_flat):
    pseudo_gradient = unravel(-mean_update_flat)
    updates, opt_state = server_opt.update(pseudo_gradient, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  apply_deltas = jax.jit(lambda stacked, deltas: jax.tree.map(
      jnp.add, stacked, jax.vmap(unravel)(deltas)))
  predict = training.predict_fn(model.apply, label_scaling)
  val = list(val_people.people) if val_people is not None else []

  def evaluate(people=test_people.people) -> dict[str, float]:
    if local_only:
      return evaluate_stacked(predict, state['client_params'], people, label_kind)
    return training.evaluate_people(predict, state['params'], people, label_kind)

  rounds = fl.rounds
  progress = progress_lib.Progress(method_label(config), rounds, start=start_round,
                                   unit='round')
  elapsed = float(state['elapsed_s'])
  errors = None
  upload_bytes = 4 * num_params  # float32 update, plain FL.

  def sampled_clients(r):
    """(client ids, members): DP pads its Poisson sample with non-members (weight 0)."""
    if dp:
      return dp_lib.plan_round(config.seed, r, dp, dp_slots)
    client_ids = (np.arange(num_clients) if local_only else
                  server_lib.sample_clients(config.seed, r, num_clients, k))
    return client_ids, np.ones(len(client_ids), bool)

  def round_plan(r):  # Pure in (seed, r): the streamed store fetches round r + 1 early.
    """(client ids, batch indices, batch mask, members)."""
    client_ids, members = sampled_clients(r)
    return (client_ids, *client_data.round_indices(config.seed, r, client_ids,
                                                   store.num_samples, fl.local_steps,
                                                   config.batch_size), members)

  for r in range(start_round, rounds):
    t_round = time.perf_counter()
    client_ids, indices, mask, members = round_plan(r)
    if r + 1 < rounds and (halt_after is None or r + 1 < halt_after):
      store.prefetch(*round_plan(r + 1)[:2])  # Overlaps this round's training.
    source = state['client_params'] if local_only else state['params']
    if not local_only and hasattr(aggregator, 'distribute_model'):
      # Every client compares the model digests of all servers (docs/MPC.md §6a).
      broadcast = aggregator.distribute_model(np.asarray(ravel_pytree(source)[0]),
                                              len(client_ids))
      if not broadcast.ok:
        raise RoundAborted(f'Round {r + 1} aborted before training: '
                           f'{broadcast.failure.rstrip(".")}. The global model and the '
                           'saved checkpoints are unchanged.')
    local = executor.run(source, store, client_ids, indices, mask,
                         per_client_params=local_only)
    finite = np.asarray(jnp.all(jnp.isfinite(local.updates), axis=1))
    if not finite.all():
      bad = [store.names[c] for c in client_ids[~finite]]
      raise RoundRejected(
          f'Round {r + 1}: the individual update of client(s) {", ".join(bad)} contains NaN '
          'or inf; the round is rejected and the global model is unchanged (last checkpoint '
          'kept). Lower the client learning rate or check those clients\' data.')
    stats: dict[str, Any] = {}
    if local_only:
      state['client_params'] = apply_deltas(state['client_params'], local.updates)
    else:
      agg_key = aggregator_round_key(config.seed, r)
      record = _should_record(config, r, rounds) and workdir_lib.is_primary()
      updates, weights = local.updates, local.weights
      if dp:  # Client side: clip; every sampled client weighs the same (privacy/dp.py).
        updates = dp_lib.clip_updates(updates, dp.clip_norm)[0]
        weights = dp_lib.round_weights(members, max_weight)
      if attackers:  # They send what they like, unclipped.
        updates = attackers.apply(updates, client_ids)
      excluded = []
      if aggregator.name == 'mean':  # Only plain FL's server sees the updates' norms.
        norms = np.asarray(malicious_lib.update_norms(updates))  # [k] floats, one transfer.
        submitted = norms[np.asarray(weights) > 0]
        if submitted.size:  # What a norm bound is chosen from.
          stats.update({'update_norm/median': float(np.median(submitted)),
                        'update_norm/max': float(submitted.max())})
      if norm_bound:  # Plain FL: the server sees every update.
        weights, rows = malicious_lib.exclude_above(norms, weights, norm_bound)
        excluded = [store.names[client_ids[i]] for i in rows]
        if excluded:
          logging.info('Round %d: excluded %s (update norm above %g).', r + 1,
                       ', '.join(excluded), norm_bound)
      unchecked = ({'unchecked': np.isin(client_ids, attackers.clients)}
                   if attackers and aggregator.name != 'mean' else {})
      agg_state, result = aggregator.apply(state['aggregator_state'], updates,
                                           weights, agg_key, r, record_view=record, **unchecked)
      if result.excluded:  # The validity check inside the MPC, by name.
        excluded = [store.names[client_ids[i]] for i in result.excluded]
        logging.info('Round %d: the validity check excluded %s.', r + 1, ', '.join(excluded))
      skipped = (dp is not None and not result.ok
                 and result.failure.startswith(mpc_cohort_too_small()))
      if skipped:
        # Poisson sampling drew fewer than min_clients: nothing was opened, so the
        # round releases nothing; the model stays as it is (logged, not an abort).
        logging.warning('Round %d: %s; the model is unchanged.', r + 1, result.failure)
        result = result._replace(mean_update=jnp.zeros_like(result.mean_update), ok=True)
      if not result.ok:
        _record_retired_attempts(workdir, agg_state)
        raise RoundAborted(
            f'Round {r + 1} aborted by the secure aggregation: {result.failure.rstrip(".")}. '
            'The global model and the saved checkpoints are unchanged.')
      new_params, new_opt_state = server_step(state['params'], state['server_opt_state'],
                                              result.mean_update)
      if record and result.view is not None:
        _record_view(workdir, r, config, store.names, client_ids, state['params'], new_params,
                     local.weights, result.view)
      state.update(params=new_params, server_opt_state=new_opt_state,
                   aggregator_state=agg_state)
      stats.update(result.stats)
      upload_bytes = stats.get('mpc/client_upload_bytes', upload_bytes)
    w = np.asarray(local.weights) * members
    train_loss = float(np.sum(np.asarray(local.losses) * w) / max(w.sum(), 1.0))
    if not np.isfinite(train_loss):
      raise RoundRejected(f'Round {r + 1}: local training loss is {train_loss}; round rejected.')
    done = r + 1
    evaluated = done % fl.eval_every == 0 or done == rounds
    if evaluated:
      errors, val_errors = evaluate(), evaluate(val)
    now = time.perf_counter()
    elapsed += now - t_round
    row = {'round': done, 'train_loss': train_loss, 'clients': int(len(client_ids)),
           'upload_bytes_per_client': int(upload_bytes), 'round_seconds': now - t_round,
           'seconds': elapsed, **stats, **(ledger.row(done) if ledger else {})}
    if dp:
      row['dp/skipped'] = int(skipped)
    if (norm_bound or validity is not None) and not local_only:
      row['excluded_clients'] = excluded
    if 'mpc/preprocessing_s' in stats:
      # What a deployment waits for: its dealer (offline phase) runs before the round.
      row['mpc/online_round_seconds'] = row['round_seconds'] - stats['mpc/preprocessing_s']
    if evaluated:
      row.update(test_error=float(np.mean(list(errors.values()))), per_person_error=errors)
      if val:
        row['val_error'] = training.mean_error(val_errors)
    state.update(round=np.asarray(done, np.int64), elapsed_s=np.asarray(elapsed, np.float64))
    workdir.append_metrics(row)
    if done % fl.checkpoint_every == 0 or done == rounds:
      workdir.save(done, state)
    progress.update(done, force=done == rounds, loss=train_loss,
                    **({'test_error': row['test_error']} if 'test_error' in row else {}))
    if halt_after is not None and done >= halt_after and done < rounds:
      return {'halted_at_step': done}

  if errors is None:  # Resumed from the final checkpoint: evaluate it again.
    errors, val_errors = evaluate(), evaluate(val)
  rows = workdir.read_metrics()
  if rows:  # A run resumed from its final checkpoint ran no round here: read the log.
    upload_bytes = rows[-1].get('upload_bytes_per_client', upload_bytes)
  cost_section = None
  if not local_only:
    samples = rounds * k * fl.local_steps * config.batch_size
    cost_section = mpc_summary(rows, forward_multiplies(model, params, people[0]), samples)
  return {
      'steps': rounds * fl.local_steps, 'rounds': rounds, 'per_person_error': errors,
      'test_error': float(np.mean(list(errors.values()))), 'wall_time_s': elapsed,
      'val_error': training.mean_error(val_errors), 'per_person_val_error': val_errors,
      'num_clients': num_clients, 'clients_per_round': k, 'local_steps': fl.local_steps,
      'server_optimizer': None if local_only else fl.server_optimizer,
      'aggregator': None if local_only else config.aggregator.name,
      'executor': executors_lib.describe(executor),
      'num_params': int(num_params),
      'upload_bytes_per_client': int(upload_bytes),
      'mean_round_seconds': float(np.mean([x['round_seconds'] for x in rows])) if rows else None,
      'params': state.get('params'),
      **({'mpc': cost_section} if cost_section else {}),
      **({'dp': ledger.summary(rounds)} if ledger else {}),
  }


def forward_multiplies(model, params, person) -> float | None:
  """Multiply-accumulates of one sample's forward pass (XLA's flop count / 2)."""
  fn = jax.jit(lambda p, x, h: model.apply({'params': p}, x, h))
  try:
    analysis = fn.lower(params, person.images[:1], person.head_pose[:1]).compile().cost_analysis()
  except Exception:  # pylint: disable=broad-except  (backends without cost analysis)
    return None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  flops = (analysis or {}).get('flops')
  return float(flops) / 2.0 if flops else None


def mpc_summary(rows: list[dict], multiplies_per_sample: float | None,
                samples_trained: int) -> dict:
  """The ``mpc`` section of a federated run's summary.

  Means over rounds of the per-round ``mpc/*`` metrics (PrivatEyes runs: bytes each
  client uploads and each server sends, interaction rounds, sharing / aggregation /
  checking seconds, and the ESTIMATED offline phase), and, for every federated run,
  the ESTIMATED cost of training the same model on the same number of samples
  entirely inside MPC (generic MPC, `mpc.costs.estimate_generic_mpc_training`).
  """
  from privateyes_jax.mpc import costs  # pylint: disable=g-import-not-at-top
  keys = sorted({k for r in rows for k in r if k.startswith('mpc/')})
  out: dict[str, Any] = {k[len('mpc/'):]: float(np.mean([r[k] for r in rows if k in r]))
                         for k in keys}
  if rows:
    out['round_seconds'] = float(np.mean([r['round_seconds'] for r in rows]))
  if multiplies_per_sample:
    out.update(costs.estimate_generic_mpc_training(multiplies_per_sample, samples_trained, 1.0))
    out['forward_multiplies_per_sample'] = multiplies_per_sample
    out['samples_trained'] = samples_trained
  return out


# An aborted MPC attempt must never be repeated (docs/MPC.md §4a): the aggregator
# advances its attempt counter on abort, and since the checkpoint of the last good
# round cannot be rewritten, the counter is kept next to it and applied on resume.
RETIRED_ATTEMPTS_FILE = workdir_lib.RETIRED_ATTEMPTS_FILE


def _record_retired_attempts(workdir: Workdir, agg_state) -> None:
  attempt = getattr(agg_state, 'attempt', None)
  if attempt is not None and workdir_lib.is_primary():
    workdir_lib.write_json(os.path.join(workdir.path, RETIRED_ATTEMPTS_FILE),
                           {'attempt': int(np.asarray(attempt))})


def _resume_retired_attempts(workdir: Workdir, aggregator, agg_state):
  path = os.path.join(workdir.path, RETIRED_ATTEMPTS_FILE)
  if not (hasattr(aggregator, 'retire_attempt') and os.path.exists(path)):
    return agg_state
  with open(path) as f:
    retired = int(json.load(f)['attempt'])
  while int(np.asarray(agg_state.attempt)) < retired:
    agg_state = aggregator.retire_attempt(agg_state)
  return agg_state


def _should_record(config, r: int, rounds: int) -> bool:
  which = config.get('record_views', '')
  return which == 'all' or (which == 'last' and r == rounds - 1)


def _record_view(workdir: Workdir, r: int, config, names, client_ids, params_before,
                 params_after, weights, view: dict) -> None:
  """Saves what the observing party saw in round ``r`` (for the DualView attack).

  ``views/round_NNNNN.npz`` holds the round's starting global model and output model
  (flattened), the sampled clients and the aggregator's view arrays (plain FL: every
  individual update; PrivatEyes: the coalition's shares and opened values). Never
  the clients' private weights w_c (docs/MPC.md §6: a view holds what the observer
  receives); ``weights`` is accepted only for the call's signature.
  """
  del weights  # Private: w_c says how much data a person has.
  directory = os.path.join(workdir.path, workdir_lib.VIEWS_DIR)
  os.makedirs(directory, exist_ok=True)
  arrays = {f'view/{k}': np.asarray(v) for k, v in _compact_view(view).items()}
  path = os.path.join(directory, f'round_{r + 1:05d}.npz')
  tmp = path + '.tmp.npz'
  np.savez(tmp, global_params=np.asarray(ravel_pytree(params_before)[0]),
           output_model=np.asarray(ravel_pytree(params_after)[0]),
           client_names=np.array([names[c] for c in client_ids]),
           round=np.int64(r + 1),
           aggregator=np.array(config.aggregator.name),
           config_fingerprint=np.array(config_fingerprint(config)), **arrays)
  os.replace(tmp, path)
  logging.info('Recorded the %s view of round %d in %s', config.aggregator.name, r + 1, path)


def config_fingerprint(config) -> str:
  """A short hash of the run's config, stored with views to refuse mixing runs."""
  import hashlib  # pylint: disable=g-import-not-at-top
  return hashlib.sha256(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()[:16]


def _compact_view(view: dict) -> dict:
  """Drops what a view does not need on disk, keeping the coalition's knowledge exact.

  A passive coalition's shares of client inputs are ``[coalition, clients, elements]``
  uint64 (plus as many MAC shares): gigabytes per round. Everything they say about an
  input ``x_c`` is ``x_c`` minus the honest servers' shares, i.e. the sum of the
  coalition's value shares (plus the public ε_c when server 0, who adds ε, is not in
  the coalition). That sum, ``coalition_input_estimate [clients, elements]``, is
  what we store; MAC shares are independent of ``x_c`` given the unknown key.
  """
  view = {k: v for k, v in view.items() if v is not None}
  shares = view.pop('input_value_shares', None)
  view.pop('input_mac_shares', None)
  masked = view.pop('masked_inputs', None)
  if shares is not None:
    coalition = tuple(int(i) for i in np.atleast_1d(view['coalition']))
    estimate = np.sum(np.asarray(shares, np.uint64), axis=0, dtype=np.uint64)  # Wraps mod 2^64.
    if masked is not None and 0 not in coalition:
      estimate = estimate + np.asarray(masked, np.uint64)
    view['coalition_input_estimate'] = estimate
  return view
