r"""Trains one group of a sweep (R runs with one program structure) as one program.

R runs of C sampled clients each are R·C "clients" of the client-parallel GazeNet
(`executors.make_clients_train`): every run's global model is broadcast to its own
clients, every client trains with its run's learning rate, momentum and clipping
norm (``optax.inject_hyperparams``: array leaves of the client optimizer state, one
value per client), each run's updates are aggregated, and the server optimizer step
is vmapped over the run axis with each run's server hyperparameters in its
(injected) state::

  θ [R, ...] ──repeat C──► local training of R·C clients (batched GEMMs) ──► Δ [R, C, P]
  Δ ──aggregate per run──► Δ̄ [R, P] ──vmap(server step)──► θ' [R, ...]

The aggregation is the engine's, per run: the weighted mean (``aggregator.name=mean``,
one vmapped program) or PrivatEyes' secure aggregation (``privateyes``,
``privateyes_semi_honest``), run by run with `engine.build_aggregator`'s aggregator
on the device-resident updates, each run with its own MAC key and round keys. The
updates never leave the device between the three programs.

Seeds act on the host exactly as in a single run: run r's initial model is
``model.init(PRNGKey(seed_r))``, its clients and batches in round t are
``sample_clients(seed_r, t)`` and ``round_indices(seed_r, t, ...)``, and its
aggregator keys are those of `engine.train`. A run's results therefore equal
`runner.train_and_evaluate` of its config up to float rounding (PrivatEyes: up to the
fixed-point rounding that float rounding can move).

A run that fails stops as a single run would, while the other runs of the group go
on (`FAILURES`): a NaN/inf individual update or loss *rejects* it, a value outside
the MPC ring leaves it *out_of_range*, cheating detected by the secure aggregation
*aborts* it. Its model stays at the last good round and it gets no further rows.

Outputs: each run's directory is an ordinary workdir (``config.json``,
``metrics.jsonl``, ``summary.json`` and a final checkpoint in the engine's format, so
``experiments.train`` with the run's config recognises it as finished). The group's
stacked state is checkpointed every ``fl.checkpoint_every`` rounds in its own
workdir under ``<sweep_dir>/groups/`` and resumed from there; it is deleted once
every run of the group has its own outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.flatten_util import ravel_pytree

from privateyes_jax import data as data_lib
from privateyes_jax import label_scaling as label_scaling_lib
from privateyes_jax import progress as progress_lib
from privateyes_jax import runner
from privateyes_jax import training
from privateyes_jax import workdir as workdir_lib
from privateyes_jax.federated import aggregators
from privateyes_jax.federated import client_data
from privateyes_jax.federated import engine
from privateyes_jax.federated import executors as executors_lib
from privateyes_jax.federated import server as server_lib
from privateyes_jax.models import gaze as gaze_models
from privateyes_jax.mpc import costs
from privateyes_jax.mpc import ring
from privateyes_jax.sweeps import spec as spec_lib

RUNS_DIR = 'runs'
GROUPS_DIR = 'groups'

# Compiled rounds by (program structure, runs, clients per run): chunks of a large
# group share one compilation.
_ROUND_FNS: dict[tuple, Any] = {}


def run_dir(sweep_dir: str, run: spec_lib.Run) -> str:
  return os.path.join(sweep_dir, RUNS_DIR, run.name)


def hyperparams(runs: Sequence[spec_lib.Run], side: str) -> dict[str, np.ndarray]:
  """``{hyperparameter: [R]}`` of the ``'client'`` or ``'server'`` optimizer, from configs."""
  out = {}
  for field, target in spec_lib.CONTINUOUS_FIELDS.items():
    if target is None or target[0] != side:
      continue
    section, key = field.split('.')
    defaults = {'momentum': 0.9, 'clip_norm': 0.0}
    out[target[1]] = np.array([r.config[section].get(key, defaults.get(key)) for r in runs],
                              np.float32)
  return out


class RoundFns(NamedTuple):
  """The jitted pieces of a group's round (see `make_round_fns`)."""
  train: Any
  mean: Any
  server: Any


def make_round_fns(clients_train, server_opt: optax.GradientTransformation, unravel,
                   num_runs: int, clients_per_run: int) -> RoundFns:
  """The jitted round of R runs, in three programs; see the module docstring.

  * ``train(params [R,..], client_hparams {[R*C]}, arrays, client_ids [R*C],
    indices [R*C,T,B], mask [R*C,T,B])`` -> individual updates ``[R, C, P]``, their
    weights ``[R, C]``, the clients' losses ``[R, C]`` and ``finite [R]`` (every
    update and the run's training loss are finite).
  * ``mean(updates, weights)`` -> ``[R, P]``: each run's weighted mean update, as the
    engine's `MeanAggregator` (plain FL; PrivatEyes runs aggregate with MPC instead).
  * ``server(params, server_state, ok [R], mean [R, P])`` -> the new params and
    server state, unchanged for runs whose round was not accepted (``ok`` False).

  The updates stay on the device between the programs.
  """
  r, c = num_runs, clients_per_run

  def server_step(params, opt_state, mean_update_flat):
    pseudo_gradient = unravel(-mean_update_flat)
    updates, opt_state = server_opt.update(pseudo_gradient, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def train(params, client_hparams, arrays, client_ids, indices, mask):
    stacked = jax.tree.map(lambda x: jnp.repeat(x, c, axis=0), params)
    updates, losses, weights = clients_train(stacked, arrays, client_ids, indices, mask,
                                             per_client_params=True,
                                             hyperparams=client_hparams)
    updates = updates.reshape(r, c, -1)
    w = weights.reshape(r, c)
    losses = losses.reshape(r, c)
    loss = jnp.sum(losses * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)
    finite = jnp.all(jnp.isfinite(updates), axis=(1, 2)) & jnp.isfinite(loss)
    return updates, w, losses, finite

  def mean(updates, w):
    # As the engine's MeanAggregator; exact float32 (GPUs default to TF32 matmuls).
    with jax.default_matmul_precision('float32'):
      return jax.vmap(aggregators.weighted_mean)(updates, w)[0]

  def server(params, server_state, ok, mean_update):
    new_params, new_state = jax.vmap(server_step)(params, server_state, mean_update)

    def keep(new, old):
      return jax.tree.map(
          lambda n, o: jnp.where(ok.reshape((r,) + (1,) * (n.ndim - 1)), n, o), new, old)

    return keep(new_params, params), keep(new_state, server_state)

  return RoundFns(jax.jit(train), jax.jit(mean), jax.jit(server))


def _stack(trees: Sequence[Any]) -> Any:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _index(tree: Any, i: int) -> Any:
  return jax.tree.map(lambda x: np.asarray(x[i]), tree)


def _group_config(runs: Sequence[spec_lib.Run]) -> ml_collections.ConfigDict:
  """What the group's workdir checks on resume: its members and their configs."""
  return ml_collections.ConfigDict({
      'sweep_group': {'runs': tuple(r.name for r in runs),
                      'id': spec_lib.group_id(runs)},
      'checkpoint_keep': runs[0].config.get('checkpoint_keep', 2)})


class GroupData(NamedTuple):
  """A group's data: people as split, the clients' training data and the label scaling."""
  dataset: Any
  train_people: Any  # Labels in the dataset's unit (the mean predictor's baseline).
  val_people: Any
  test_people: Any
  clients: list  # The training people as clients: standardised labels, iid if asked.
  store: Any  # client_data.ClientStore or StreamedStore (fl.client_store).
  label_scaling: label_scaling_lib.LabelScaling


def load_data(config, cache: dict | None = None) -> GroupData:
  """The group's data, cached by what it depends on (data, method, aggregator, store).

  The label scaling is computed as a single run of ``config`` computes it
  (`label_scaling.resolve`); it does not depend on seeds or learning rates, so every
  run of the group shares it. The store is the one ``config.fl`` asks for
  (`client_data.store_for_config`).
  """
  key = json.dumps([workdir_lib.config_to_dict(config.data), config.method,
                    workdir_lib.config_to_dict(config.aggregator),
                    config.fl.get('client_store', 'auto'),
                    config.fl.get('client_store_budget_mib', 0)], sort_keys=True)
  if cache is not None and key in cache:
    return cache[key]
  data_config = config.data
  dataset = data_lib.load_dataset(data_config)
  train_people, val_people, test_people = data_lib.split_people_val(dataset, data_config)
  scaling = label_scaling_lib.resolve(config, dataset.label_kind, train_people)
  people = list(label_scaling_lib.normalize_people(train_people, scaling).people)
  if data_config.get('partition', 'person') == 'iid':
    people = client_data.iid_reshuffle(people, data_config.seed)
  out = GroupData(dataset, train_people, val_people, test_people, people,
                  client_data.store_for_config(people, config.fl), scaling)
  if cache is not None:
    cache[key] = out
  return out


def train_group(runs: Sequence[spec_lib.Run], sweep_dir: str,
                halt_after: int | None = None, data_cache: dict | None = None) -> dict:
  """Trains ``runs`` (equal `spec.structure_key`) together; writes each run's outputs.

  Args:
    runs: the group's runs.
    sweep_dir: the sweep directory (runs go to ``runs/<name>``, the group's
      checkpoints to ``groups/<id>``).
    halt_after: stop after this many rounds as if interrupted (tests, drills).
    data_cache: a dict to reuse loaded data (and its device copy) across groups.

  Returns:
    ``{'halted_at_round': t}`` if halted, else ``{name: summary}`` for the runs.
  """
  base = runs[0].config
  fl = base.fl
  num_runs = len(runs)
  data = load_data(base, data_cache)
  dataset, train_people, test_people = data.dataset, data.train_people, data.test_people
  people, store, val = data.clients, data.store, (
      list(data.val_people.people) if data.val_people is not None else [])
  num_clients = store.num_clients
  k = server_lib.clients_per_round(fl, num_clients)
  model = gaze_models.build_model(base.model)

  client_opt = training.make_optimizer(base.optimizer, inject_hyperparams=True)
  clients_train = executors_lib.make_clients_train(
      base.model, client_opt, unroll=fl.get('unroll', True),
      compute_dtype=jnp.dtype(fl.get('compute_dtype', 'float32')))
  server_opt = server_lib.make_server_optimizer(fl, inject_hyperparams=True)
  x0, h0 = people[0].images[:1], people[0].head_pose[:1]
  # Eagerly and one by one, as the engine does, so every run starts from its own
  # single run's initial model bit for bit.
  params = _stack([model.init(jax.random.PRNGKey(r.config.seed), x0, h0)['params']
                   for r in runs])
  num_params = ravel_pytree(_index(params, 0))[0].size
  unravel = ravel_pytree(_index(params, 0))[1]
  server_state = training.set_hyperparams(jax.vmap(server_opt.init)(params),
                                          hyperparams(runs, 'server'))
  client_hparams = {key: np.repeat(v, k) for key, v in hyperparams(runs, 'client').items()}
  # PrivatEyes runs aggregate one after another with the engine's own aggregator (the
  # fused MPC is already a chunked pass over the clients), each from its own seeds.
  aggregator = (None if base.aggregator.name == 'mean'
                else engine.build_aggregator(base, k, num_params))
  state = {'params': params, 'server_opt_state': server_state,
           'aggregator_state': (() if aggregator is None else _stack(
               [aggregator.init(engine.aggregator_init_key(r.config.seed)) for r in runs])),
           'failed_round': np.zeros(num_runs, np.int64),  # 0: alive.
           'failure_kind': np.zeros(num_runs, np.int64),  # One of FAILURES.
           'round': np.asarray(0, np.int64), 'elapsed_s': np.asarray(0.0, np.float64)}

  gid = spec_lib.group_id(runs)
  group_dir = os.path.join(sweep_dir, GROUPS_DIR, gid)
  group_wd = workdir_lib.Workdir.open(group_dir, _group_config(runs))
  run_wds = [workdir_lib.Workdir.open(run_dir(sweep_dir, r), r.config) for r in runs]
  for wd in run_wds:
    label_scaling_lib.save(wd.path, data.label_scaling)
  try:
    latest = group_wd.latest_step()
    if latest is not None:
      state = group_wd.restore(latest, state)
      logging.info('Sweep group %s (%d runs): resuming after round %d.', gid, num_runs, latest)
    start_round = int(state['round'])
    for wd in run_wds:  # Rows of rounds after the checkpoint are repeated below.
      wd.truncate_metrics('round', start_round)

    fn_key = (spec_lib.structure_key(base), num_runs, k)
    if fn_key not in _ROUND_FNS:
      _ROUND_FNS.clear()  # Keep one program (and its device memory) alive at a time.
      _ROUND_FNS[fn_key] = make_round_fns(clients_train, server_opt, unravel, num_runs, k)
    fns = _ROUND_FNS[fn_key]
    predict = training.predict_fn(model.apply, data.label_scaling)
    rounds = fl.rounds
    elapsed = float(state['elapsed_s'])
    failed = np.asarray(state['failed_round']).copy()
    kinds = np.asarray(state['failure_kind']).copy()
    agg_states = (None if aggregator is None else
                  [jax.tree.map(lambda x, i=i: x[i], state['aggregator_state'])
                   for i in range(num_runs)])
    messages: dict[int, str] = {}  # Failures of this process (resumed ones: generic).
    errors: dict[int, dict[str, float]] = {}
    val_errors: dict[int, dict[str, float]] = {}
    last_loss = np.full(num_runs, np.nan)
    label = f'sweep {gid} ({num_runs} runs)'
    progress = progress_lib.Progress(label, rounds, start=start_round, unit='round')
    # What a client uploads per round: the float32 update (plain FL) or its share
    # messages (PrivatEyes), as the engine logs it.
    upload_bytes = (4 * num_params if aggregator is None else int(costs.round_costs(
        aggregator.mode, aggregator.spec, aggregator.num_servers, 1, num_params + 1,
        seed_compressed=True).client_upload_bytes))

    def fail(i: int, r: int, kind: str, message: str) -> None:
      failed[i], kinds[i] = r + 1, FAILURES.index(kind)
      messages[i] = message
      errors.pop(i, None)  # An earlier round's error is not this run's result.
      val_errors.pop(i, None)
      logging.warning('Sweep run %s: %s', runs[i].name, message)

    for r in range(start_round, rounds):
      t_round = time.perf_counter()
      ids, idx, mask = [], [], []
      for run in runs:
        cid = server_lib.sample_clients(run.config.seed, r, num_clients, k)
        i, m = client_data.round_indices(run.config.seed, r, cid, store.num_samples,
                                         fl.local_steps, base.batch_size)
        ids.append(cid)
        idx.append(i)
        mask.append(m)
      arrays, round_ids, round_idx = store.round_inputs(np.concatenate(ids),
                                                        np.concatenate(idx))
      updates, weights, losses, finite = fns.train(
          state['params'], client_hparams, arrays, np.asarray(round_ids, np.int32),
          round_idx, np.concatenate(mask))
      alive = failed == 0
      ok = alive & np.asarray(finite)
      for i in np.flatnonzero(alive & ~ok):
        fail(i, r, 'rejected', _rejected_message(r + 1))
      stats: list[dict] = [{} for _ in runs]
      if aggregator is None:
        mean = fns.mean(updates, weights)
      else:
        # Failed runs get a placeholder mean; the server step keeps their state.
        means = [jnp.zeros((num_params,), jnp.float32)] * num_runs
        for i in np.flatnonzero(ok):
          out = _secure_round(aggregator, agg_states[i], runs[i].config.seed, r,
                              updates[i], weights[i])
          if isinstance(out, Failure):
            fail(i, r, out.kind, out.message)
            ok[i] = False
          else:
            agg_states[i], means[i], stats[i] = out
        mean = jnp.stack(means)
      new_params, new_server = fns.server(state['params'], state['server_opt_state'], ok, mean)
      losses, weights = np.asarray(losses), np.asarray(weights)
      state.update(params=new_params, server_opt_state=new_server)
      done = r + 1
      evaluated = done % fl.eval_every == 0 or done == rounds
      live = np.flatnonzero(failed == 0)
      if evaluated:
        for i in live:
          errors[i] = training.evaluate_people(predict, _index(state['params'], i),
                                               test_people.people, dataset.label_kind)
          val_errors[i] = training.evaluate_people(predict, _index(state['params'], i), val,
                                                   dataset.label_kind)
      now = time.perf_counter()
      round_seconds = now - t_round
      elapsed += round_seconds
      # What a deployment waits for: the dealers' (offline) work precedes the round.
      offline = sum(st.get('mpc/preprocessing_s', 0.0) for st in stats)
      for i in live:
        w = weights[i]
        # As the engine computes it (host, float32 products).
        last_loss[i] = float(np.sum(losses[i] * w) / max(w.sum(), 1.0))
        row = {'round': done, 'train_loss': last_loss[i], 'clients': int(k),
               'upload_bytes_per_client': int(stats[i].get('mpc/client_upload_bytes',
                                                            upload_bytes)),
               'round_seconds': round_seconds, 'seconds': elapsed, 'sweep_runs': num_runs,
               **stats[i]}
        if stats[i]:
          row['mpc/online_round_seconds'] = round_seconds - offline
        if evaluated:
          row.update(test_error=float(np.mean(list(errors[i].values()))),
                     per_person_error=errors[i])
          if val:
            row['val_error'] = training.mean_error(val_errors[i])
        run_wds[i].append_metrics(row)
      state.update(round=np.asarray(done, np.int64), elapsed_s=np.asarray(elapsed, np.float64),
                   failed_round=failed.copy(), failure_kind=kinds.copy())
      if done % fl.checkpoint_every == 0 or done == rounds:
        if agg_states is not None:
          state['aggregator_state'] = _stack(agg_states)
        group_wd.save(done, state)
      shown = {'runs_alive': len(live)}
      if evaluated and len(live) and val:  # Progress shows validation, never test, error.
        shown['best_val_error'] = float(min(training.mean_error(val_errors[i]) for i in live))
      progress.update(done, force=done == rounds, **shown)
      if not len(live):
        logging.warning('Sweep group %s: every run has stopped (round %d); the group ends.',
                        gid, done)
        break
      if halt_after is not None and done >= halt_after and done < rounds:
        return {'halted_at_round': done}

    for i in np.flatnonzero(failed == 0):  # Resumed from the final checkpoint.
      if i not in errors:
        errors[i] = training.evaluate_people(predict, _index(state['params'], i),
                                             test_people.people, dataset.label_kind)
        val_errors[i] = training.evaluate_people(predict, _index(state['params'], i), val,
                                                 dataset.label_kind)
    pooled_labels = np.concatenate([p.labels for p in train_people.people])
    baseline = training.mean_predictor_error(pooled_labels, test_people.people,
                                             dataset.label_kind)
    multiplies = engine.forward_multiplies(model, _index(state['params'], 0), people[0])
    summaries = {}
    for i, run in enumerate(runs):
      rows = run_wds[i].read_metrics()
      last_round = rounds if failed[i] == 0 else int(failed[i]) - 1
      if last_round >= 1 and run_wds[i].latest_step() != last_round:
        # The engine's checkpoint layout, so the run's workdir is an ordinary one.
        run_wds[i].save(last_round, {
            'params': _index(state['params'], i),
            'server_opt_state': _index(state['server_opt_state'].inner_state, i),
            'aggregator_state': (() if agg_states is None else
                                 jax.tree.map(np.asarray, agg_states[i])),
            'round': np.asarray(last_round, np.int64),
            'elapsed_s': np.asarray(elapsed, np.float64)})
      failure = None
      if failed[i]:
        failure = messages.get(i) or _generic_failure(FAILURES[kinds[i]], int(failed[i]))
      summary = _summary(run, dataset, train_people, data.val_people, test_people, baseline,
                         errors.get(i), val_errors.get(i), data.label_scaling, rows,
                         upload_bytes, num_params, k, num_clients,
                         elapsed, gid, num_runs, FAILURES[kinds[i]] if failed[i] else 'done',
                         failure,
                         engine.mpc_summary(rows, multiplies,
                                            rounds * k * fl.local_steps * base.batch_size))
      run_wds[i].write_summary(summary)
      summaries[run.name] = summary
  finally:
    group_wd.close()
    for wd in run_wds:
      wd.close()
  shutil.rmtree(group_dir, ignore_errors=True)  # Every run now has its own outputs.
  return summaries


# How a run of a group can stop early (``summary['status']``), each as it stops a
# single run: a NaN/inf update or loss ('rejected', `engine.RoundRejected`), a value
# outside the MPC ring ('out_of_range', the ring's range check), or cheating detected
# by the secure aggregation ('aborted', `engine.RoundAborted`).
FAILURES = ('done', 'rejected', 'aborted', 'out_of_range')


def _rejected_message(round_no: int) -> str:
  return (f'Round {round_no}: an individual update or the training loss was NaN or inf; '
          f'the run stopped with its model of round {round_no - 1}. Lower the client '
          'learning rate.')


def _generic_failure(kind: str, round_no: int) -> str:
  """The failure text of a run that failed before the sweep was resumed."""
  if kind == 'aborted':
    return (f'Round {round_no} aborted by the secure aggregation (a check failed; the '
            'details are in the log of the interrupted sweep); the run stopped with its '
            f'model of round {round_no - 1}.')
  if kind == 'out_of_range':
    return (f'Round {round_no}: a weighted update was outside the MPC ring\'s range (the '
            'details are in the log of the interrupted sweep); the run stopped with its '
            f'model of round {round_no - 1}. Raise aggregator.k or lower aggregator.f or '
            'the client learning rate.')
  return _rejected_message(round_no)


class Failure(NamedTuple):
  """Why a run stopped: a `FAILURES` kind and the message for its summary."""
  kind: str
  message: str


def _secure_round(aggregator, agg_state, seed: int, r: int, updates, weights):
  """One run's secure aggregation in round r, with the keys of its single run.

  Returns ``(new aggregator state, mean update [P], stats)``, or a `Failure` (the
  run stops; the other runs go on).
  """
  try:
    new_state, result = aggregator.apply(agg_state, updates, weights,
                                         engine.aggregator_round_key(seed, r), r,
                                         record_view=False)
  except ring.RingOverflowError as e:
    return Failure('out_of_range', f'Round {r + 1}: {str(e).rstrip(".")}. The run stopped '
                   f'with its model of round {r}.')
  if not result.ok:
    return Failure('aborted', f'Round {r + 1} aborted by the secure aggregation: '
                   f'{result.failure.rstrip(".")}. The run stopped with its model of round {r}.')
  return new_state, result.mean_update, dict(result.stats)


def _summary(run: spec_lib.Run, dataset, train_people, val_people, test_people,
             baseline: float, errors: dict[str, float] | None,
             val_errors: dict[str, float] | None, scaling, rows: list[dict], upload_bytes: int,
             num_params: int, k: int,
             num_clients: int, elapsed: float, gid: str, num_runs: int,
             status: str, failure: str | None, mpc_section: dict) -> dict:
  """A run's ``summary.json``: the fields `runner.train_and_evaluate` writes, plus sweep ones."""
  c = run.config
  test_error = float(np.mean(list(errors.values()))) if errors else None
  result = {
      'test_error': test_error, 'per_person_error': errors,
      'val_error': training.mean_error(val_errors), 'per_person_val_error': val_errors,
      'label_scaling': scaling.to_dict(),
      'steps': c.fl.rounds * c.fl.local_steps, 'wall_time_s': elapsed, 'rounds': c.fl.rounds,
      'num_clients': num_clients, 'clients_per_round': k, 'local_steps': c.fl.local_steps,
      'server_optimizer': c.fl.server_optimizer, 'aggregator': c.aggregator.name,
      'executor': 'sweep(client_parallel)', 'num_params': int(num_params),
      'upload_bytes_per_client': int(upload_bytes),
      'mean_round_seconds': (float(np.mean([x['round_seconds'] for x in rows])) if rows
                             else None),
      'mpc': mpc_section}
  summary = runner.build_summary(c, dataset, train_people, test_people, result, baseline,
                                 val_people=val_people)
  summary.update(
      final_train_loss=rows[-1]['train_loss'] if rows else None,
      status=status,
      sweep={'group': gid, 'runs_in_group': num_runs,
             'overrides': {f: v for f, v in run.overrides}})
  if failure:
    summary['failure'] = failure
  return summary
