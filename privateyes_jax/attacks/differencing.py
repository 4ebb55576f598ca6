"""Attacks on PrivatEyes from opened outputs alone (issue #14 b, c).

Secure aggregation hides each individual update Δ_c inside a round, but it opens
every round's aggregate, and who took part in a round is public. Two attacks use
only that, so they are the limit of what the MPC protects:

**(b) Round differencing under client subsampling** (`differencing_targets`).
With ``fl.client_fraction < 1`` the cohorts C_r of different rounds differ. A
PrivatEyes round opens, exactly (mpc/aggregator.py, "Weighted averaging"),

    S_r = Σ_{c ∈ C_r} w̃_c Δ_c^(r)   [P]      and      W_r = Σ_{c ∈ C_r} w̃_c,

with w̃_c = w_c / w_max (w_max public). If C_A = C_B ∪ {t} ("pairs"), then

    (S_A − S_B) / (W_A − W_B) = Δ_t^(A) + Σ_{c ∈ C_B} w̃_c (Δ_c^(A) − Δ_c^(B)) / w̃_t,

which is Δ_t exactly when every other client's update is the same in both rounds
(same global model, same local batches, same weight) and only approximately in a
real run: θ_A ≠ θ_B (the model moved between the rounds) and each round draws new
local batches. The engine samples a FIXED number k of clients per round, so two
cohorts never differ by one client added; they differ by swaps. The general form
(``method='lstsq'``) finds coefficients v over rounds with Σ_r v_r 1[c ∈ C_r] =
1[c = t] for every client c (the minimum-norm solution of the public membership
system Mᵀv = e_t, exact when e_t lies in the row space of M, e.g. after about N
rounds of N clients) and returns Σ_r v_r S_r / Σ_r v_r W_r. A pair is the special
case v = e_A − e_B. Either way the estimate carries every round's drift.

What it assumes (document it next to any number it produces):

* the view holds the opened sums (``view/opened_sum``: the PrivatEyes aggregators
  record it; decoded with the run's ring) and the cohort (``client_names``, with
  ``view/submitted`` for dropouts): both are public to the coalition, and to any
  server. ``weights`` in the view file is the engine's own record of the private
  sample counts and is NEVER read here.
* ``record_views='all'`` (every round), and ``fl.client_fraction < 1`` (or
  ``fl.clients_per_round`` below the federation size); with full participation no
  target is isolated.
* For a ``mean`` run (no opened sums, e.g. an outside observer of a plain FedAvg
  run's output models), ``S_r`` is taken as ``n_r · (θ_{r+1} − θ_r) / server_lr``,
  i.e. equal client weights and FedAvg; such estimates are flagged ``exact=False``.

**(c) A Sybil coalition** (`sybil_round`, `sybil_recover`). If the servers also
control every other client of a round (they create fake clients, or corrupt real
ones), they choose those inputs (zeros, or any updates they know) and the opened
aggregate minus their own contribution is the target's weighted update:
``Δ_t = (S − Σ_s w̃_s Δ_s) / (W − Σ_s w̃_s)``, exact up to the fixed-point encoding
(2^-f per element, amplified by 1/w̃_t). No MPC protocol prevents this: it computes
the function it is asked to, and the function's output reveals the input. This is
the limit of the threat model. What stops it lies outside the MPC: client
authentication (one identity per real person, so servers cannot create clients),
a minimum number of HONEST clients per round (a minimum cohort size such as a
``min_clients`` count does not stop Sybils, who count towards it), and
differential-privacy noise added by each client before sharing (bounds what any
aggregate reveals).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

PyTree = Any


# ----------------------------------------------------------------------------- opened rounds
@dataclasses.dataclass(frozen=True)
class OpenedRound:
  """What anyone who sees a round's opened outputs knows about it.

  Attributes:
    round: 1-based round number.
    cohort: the clients who submitted this round (public).
    global_params: θ_r, flattened ``[P]`` float64 (public: the model broadcast).
    weighted_sum: S_r = Σ_c w̃_c Δ_c, ``[P]`` float64.
    weight_sum: W_r = Σ_c w̃_c.
    exact: True when S_r and W_r are the opened values themselves; False when
      reconstructed from the output model under equal weights (``mean`` runs).
  """
  round: int
  cohort: tuple[str, ...]
  global_params: np.ndarray
  weighted_sum: np.ndarray
  weight_sum: float
  exact: bool = True


def opened_round_from_view(view: dict, config) -> OpenedRound:
  """An `OpenedRound` from one recorded view (the dict `pipeline` reads from ``round_NNNNN.npz``).

  Uses ``view/opened_sum`` (PrivatEyes) when present, less the coalition's own DP
  noise (``view/coalition_noise``) when the run added noise, else the output-model
  change of a FedAvg ``mean`` run (equal weights assumed, ``exact=False``). Never reads
  the view's private ``weights``.
  """
  names = [str(n) for n in view['client_names']]
  if 'view/submitted' in view:
    submitted = np.asarray(view['view/submitted'], bool)
    names = [n for n, s in zip(names, submitted) if s]
  theta = np.asarray(view['global_params'], np.float64)
  if 'view/opened_sum' in view:
    from privateyes_jax.mpc import ring  # pylint: disable=g-import-not-at-top
    agg = config.aggregator
    with jax.enable_x64(True):
      sums = np.asarray(ring.decode(jnp.asarray(np.asarray(view['view/opened_sum'], np.uint64)),
                                    ring.RingSpec(k=agg.k, f=agg.f, s=agg.s), dtype=jnp.float64))
    if sums.shape != (theta.size + 1,):
      raise ValueError(f'view/opened_sum has shape {sums.shape}; expected [params + 1] = '
                       f'[{theta.size + 1}] (Σ w̃Δ, then Σ w̃).')
    if 'view/coalition_noise' in view:
      # Client-level DP: the opened sum carries every server's noise, and the coalition
      # drew its own, so it subtracts them; only the honest servers' noise is left.
      own = np.asarray(view['view/coalition_noise'], np.float64)
      if own.shape != (theta.size,):
        raise ValueError(f'view/coalition_noise has shape {own.shape}; expected [params] = '
                         f'[{theta.size}].')
      sums = np.concatenate([sums[:-1] - own, sums[-1:]])
    return OpenedRound(int(view['round']), tuple(names), theta, sums[:-1], float(sums[-1]), True)
  if config.fl.server_optimizer != 'fedavg':
    raise ValueError('Without opened sums, the aggregate is read off the output model, which '
                     f'needs FedAvg; this run uses {config.fl.server_optimizer!r}.')
  change = np.asarray(view['output_model'], np.float64) - theta
  n = len(names)
  return OpenedRound(int(view['round']), tuple(names), theta, n * change / config.fl.server_lr,
                     float(n), False)


def opened_rounds(run_dir: str) -> list[OpenedRound]:
  """Every recorded round of ``run_dir`` as an `OpenedRound`, ascending.

  Needs a run trained with ``record_views='all'`` (one view per round); the views'
  config fingerprints are checked like `pipeline.load_round` does.
  """
  from privateyes_jax.attacks import pipeline  # pylint: disable=g-import-not-at-top
  config = pipeline.load_run_config(run_dir)
  rounds = pipeline.recorded_rounds(run_dir)
  if len(rounds) < 2:
    raise pipeline.ViewError(
        f'{run_dir!r} recorded {len(rounds)} round(s); round differencing needs every round '
        '(train with --config.record_views=all and fl.client_fraction < 1).')
  open_view = pipeline._open_view  # pylint: disable=protected-access  (its checks, reused)
  return [opened_round_from_view(open_view(run_dir, config, r), config) for r in rounds]


# ----------------------------------------------------------------------------- differencing
@dataclasses.dataclass(frozen=True)
class DifferencedUpdate:
  """The coalition's estimate of one client's individual update.

  Attributes:
    client: the target client.
    update: ``[P]`` float32, the estimate of Δ_t (at the scale of one client's
      update when the recovered weight is positive, else the unnormalised
      difference, whose direction is what cosine-matching attacks use).
    global_params: ``[P]`` float32, θ of the round whose update it estimates
      (the latest round with the target among those combined): attack from here.
    rounds: the rounds combined; ``coefficients`` their v_r.
    weight: Σ_r v_r W_r, the recovered w̃_t (its true value if weights are constant).
    drift: max_r ||θ_r − θ_ref|| over the combined rounds (0: global model fixed,
      then the estimate is exact up to the other clients' batch sampling).
    exact: whether the opened sums were exact (see `OpenedRound`).
  """
  client: str
  update: np.ndarray
  global_params: np.ndarray
  rounds: tuple[int, ...]
  coefficients: tuple[float, ...]
  weight: float
  drift: float
  exact: bool


@dataclasses.dataclass(frozen=True)
class DifferencingResult:
  """`differencing_targets`' output.

  Attributes:
    targets: per isolated client, its `DifferencedUpdate`.
    usable_pairs: ordered round pairs (A, B) with C_A = C_B ∪ {one client}.
    pairs: those pairs as ``(round_A, round_B, client)``.
    method: ``'pairs'`` or ``'lstsq'``.
    clients: every client seen in any cohort (isolated or not).
  """
  targets: dict[str, DifferencedUpdate]
  usable_pairs: int
  pairs: tuple[tuple[int, int, str], ...]
  method: str
  clients: tuple[str, ...]


def _estimate(client, rounds: Sequence[OpenedRound], v: np.ndarray) -> DifferencedUpdate:
  used = [(r, c) for r, c in zip(rounds, v) if abs(c) > 1e-9]
  s = sum(c * r.weighted_sum for r, c in used)
  w = float(sum(c * r.weight_sum for r, c in used))
  with_target = [(r, c) for r, c in used if client in r.cohort]
  ref = max(with_target, key=lambda rc: (abs(rc[1]), rc[0].round))[0]
  drift = max(float(np.linalg.norm(r.global_params - ref.global_params)) for r, _ in used)
  update = s / w if w > 0 else s
  return DifferencedUpdate(client=client, update=update.astype(np.float32),
                           global_params=ref.global_params.astype(np.float32),
                           rounds=tuple(r.round for r, _ in used),
                           coefficients=tuple(float(c) for _, c in used), weight=w, drift=drift,
                           exact=all(r.exact for r, _ in used))


def differencing_targets(rounds: Sequence[OpenedRound], method: str = 'pairs',
                         tolerance: float = 1e-6, window: int = 0) -> DifferencingResult:
  """Per client, the update the coalition isolates from opened aggregates (module docstring).

  Args:
    rounds: every recorded round's opened values (`opened_rounds`).
    method: ``'pairs'``: rounds whose cohorts differ by exactly one added client
      (for each target the pair whose global models are closest); ``'lstsq'``:
      the minimum-norm combination of all rounds that isolates the target (also
      under a fixed cohort size, where pairs do not occur).
    tolerance: max residual of Mᵀv = e_t for a target to count as isolated (lstsq).
    window: lstsq only: > 0 solves within every run of ``window`` consecutive
      rounds and keeps, per target, the isolating window with the least drift of
      the global model (fewer rounds, closer models: a better approximation);
      0 solves over all rounds at once.

  Returns:
    `DifferencingResult` (targets keyed by client name; ``usable_pairs`` counts the
    one-client pairs whatever the method).
  """
  if method not in ('pairs', 'lstsq'):
    raise ValueError(f'method must be "pairs" or "lstsq", got {method!r}.')
  rounds = list(rounds)
  if len({r.round for r in rounds}) != len(rounds):
    raise ValueError('Each round must appear once.')
  sizes = {r.global_params.shape for r in rounds} | {r.weighted_sum.shape for r in rounds}
  if len(sizes) != 1:
    raise ValueError(f'Rounds of different models: parameter shapes {sorted(sizes)}.')
  clients = tuple(sorted({c for r in rounds for c in r.cohort}))
  pairs = []
  for a in rounds:
    for b in rounds:
      extra = set(a.cohort) - set(b.cohort)
      if len(extra) == 1 and set(b.cohort) <= set(a.cohort) and len(b.cohort) > 0:
        pairs.append((a.round, b.round, extra.pop()))
  targets = {}
  index = {r.round: i for i, r in enumerate(rounds)}
  if method == 'pairs':
    best = {}
    for ra, rb, t in pairs:
      a, b = rounds[index[ra]], rounds[index[rb]]
      drift = float(np.linalg.norm(a.global_params - b.global_params))
      if t not in best or drift < best[t][0]:
        best[t] = (drift, ra, rb)
    for t, (_, ra, rb) in sorted(best.items()):
      v = np.zeros(len(rounds))
      v[index[ra]], v[index[rb]] = 1.0, -1.0
      targets[t] = _estimate(t, rounds, v)
  else:
    if window < 0:
      raise ValueError(f'window must be >= 0, got {window}.')
    order = sorted(range(len(rounds)), key=lambda i: rounds[i].round)
    size = window if 0 < window < len(rounds) else len(rounds)
    for start in range(len(rounds) - size + 1):
      rows = order[start:start + size]
      m = np.array([[c in rounds[i].cohort for c in clients] for i in rows], np.float64)
      pinv = np.linalg.pinv(m.T)  # [rows, N]: v = pinv @ e_t, minimum norm.
      for j, t in enumerate(clients):
        e = np.zeros(len(clients))
        e[j] = 1.0
        if np.abs(m.T @ pinv[:, j] - e).max() > tolerance:
          continue
        v = np.zeros(len(rounds))
        v[rows] = pinv[:, j]
        est = _estimate(t, rounds, v)
        if t not in targets or est.drift < targets[t].drift:
          targets[t] = est
  return DifferencingResult(targets=targets, usable_pairs=len(pairs), pairs=tuple(pairs),
                            method=method, clients=clients)


def unravel_like(flat: np.ndarray, params_template: PyTree) -> PyTree:
  """A flat ``[P]`` vector as a pytree shaped like ``params_template`` (float32)."""
  flat0, unravel = ravel_pytree(params_template)
  if np.shape(flat) != flat0.shape:
    raise ValueError(f'Vector of shape {np.shape(flat)} for a model of {flat0.size} parameters.')
  return unravel(jnp.asarray(flat, jnp.float32))


def attack_inputs(run_dir: str, method: str = 'lstsq', window: int = 0) -> tuple[Any, dict]:
  """What the pipeline attacks for row (b): per isolated client, a plain-FL-like target.

  Args:
    run_dir: a PrivatEyes run trained with ``record_views='all'`` and client subsampling.
    method, window: see `differencing_targets`.

  Returns:
    ``(recorded, targets)``: ``recorded`` is `pipeline.load_round` of the last round
    (apply_fn, config, federation); ``targets[name] = {'person': PersonData,
    'global_params': pytree, 'update': pytree, 'estimate': DifferencedUpdate}``, to
    be attacked like an individual update from ``global_params`` and scored
    against ``person`` (`evaluation.evaluate_people`), in federation order.
  """
  from privateyes_jax.attacks import pipeline  # pylint: disable=g-import-not-at-top
  recorded = pipeline.load_round(run_dir)
  result = differencing_targets(opened_rounds(run_dir), method, window=window)
  by_name = {p.person: p for p in _federation_people(recorded)}
  template = recorded.global_params
  targets = {}
  for name in recorded.federation:
    if name in result.targets:
      est = result.targets[name]
      targets[name] = {'person': by_name[name], 'estimate': est,
                       'global_params': unravel_like(est.global_params, template),
                       'update': unravel_like(est.update, template)}
  return recorded, targets


# ----------------------------------------------------------------------------- Sybils
def sybil_recover(weighted_sum: np.ndarray, weight_sum: float, sybil_updates: np.ndarray,
                  sybil_weights: np.ndarray, max_weight: float) -> tuple[np.ndarray, float]:
  """The target's update from an opened aggregate whose other inputs the coalition chose.

  Args:
    weighted_sum: the opened S = Σ_c w̃_c Δ_c ``[P]`` (or ``mean · total_weight / w_max``).
    weight_sum: the opened W = Σ_c w̃_c.
    sybil_updates: ``[m, P]`` the Sybils' submitted updates (known to the coalition).
    sybil_weights: ``[m]`` their weights w_s (samples, unscaled).
    max_weight: the public w_max.

  Returns:
    ``(Δ_t [P] float64, w_t)``: the target's update and its weight (in samples).
  """
  w_s = np.asarray(sybil_weights, np.float64) / max_weight
  rest = np.asarray(weighted_sum, np.float64) - w_s @ np.asarray(sybil_updates, np.float64)
  w_t = float(weight_sum) - float(w_s.sum())
  if not w_t > 0:
    raise ValueError(f'The target contributed no weight (W − Σ w̃_s = {w_t}); nothing to recover.')
  return rest / w_t, w_t * max_weight


def sybil_round(aggregator, target_update: np.ndarray, target_weight: float, *,
                num_sybils: int, key: jax.Array, round_idx: int = 0,
                sybil_updates: np.ndarray | None = None,
                sybil_weight: float | None = None) -> dict:
  """One PrivatEyes round of a target among ``num_sybils`` coalition-controlled clients.

  Runs the real secure aggregation (``aggregator``: a `mpc.aggregator.SecureAggregator`,
  e.g. the run's, built by `federated.engine.build_aggregator`) on the target's
  update and the Sybils' inputs, takes only what is opened (the output mean and
  total weight, public to every server), and subtracts the Sybils' known part.

  Args:
    aggregator: the secure aggregator.
    target_update: ``[P]`` the target's individual update (what its honest local
      training produced from the round's global model).
    target_weight: its weight w_t (samples used), in (0, max_weight].
    num_sybils: clients the coalition controls in the round (≥ 1).
    key: the round's aggregation key.
    sybil_updates: ``[num_sybils, P]`` what they submit; default zeros.
    sybil_weight: each Sybil's weight; default ``aggregator.max_weight``.

  Returns:
    ``{'recovered': [P] float32, 'recovered_weight': float, 'max_abs_error': float,
    'cosine': float, 'opened_ok': bool}`` (error and cosine against the true
    ``target_update``: the measurement, not the coalition's knowledge).
  """
  if num_sybils < 1:
    raise ValueError(f'num_sybils must be >= 1, got {num_sybils}.')
  target_update = np.asarray(target_update, np.float32)
  p = target_update.size
  if sybil_updates is None:
    sybil_updates = np.zeros((num_sybils, p), np.float32)
  sybil_updates = np.asarray(sybil_updates, np.float32)
  if sybil_updates.shape != (num_sybils, p):
    raise ValueError(f'sybil_updates must be [{num_sybils}, {p}], got {sybil_updates.shape}.')
  w_max = float(aggregator.max_weight)
  w_s = np.full(num_sybils, w_max if sybil_weight is None else sybil_weight, np.float32)
  updates = np.concatenate([target_update[None], sybil_updates])
  weights = np.concatenate([[np.float32(target_weight)], w_s]).astype(np.float32)
  state = aggregator.init(jax.random.fold_in(key, 1))
  _, result = aggregator.apply(state, jnp.asarray(updates), jnp.asarray(weights), key, round_idx,
                               record_view=False)
  if not result.ok:
    raise RuntimeError(f'The secure aggregation aborted: {result.failure}')
  total = float(result.total_weight)  # Σ w_c (samples): opened W · w_max.
  opened_sum = np.asarray(result.mean_update, np.float64) * total / w_max
  recovered, w_t = sybil_recover(opened_sum, total / w_max, sybil_updates, w_s, w_max)
  cos = float(np.dot(recovered, target_update) /
              (np.linalg.norm(recovered) * np.linalg.norm(target_update) + 1e-30))
  return {'recovered': recovered.astype(np.float32), 'recovered_weight': w_t,
          'max_abs_error': float(np.abs(recovered - target_update).max()), 'cosine': cos,
          'opened_ok': bool(result.ok)}


def honest_update(run_config, apply_fn, global_params: PyTree, people, client: int,
                  round_idx: int, *, store=None, local_train=None) -> tuple[np.ndarray, float]:
  """The individual update client ``client`` would compute in round ``round_idx`` (0-based).

  Repeats the engine's local training (`executors.make_local_train` with the run's
  client optimizer, ``fl.local_steps``, ``batch_size`` and the round's batches from
  `client_data.round_indices`) from ``global_params``: the victim's honest
  behaviour in a simulated Sybil round.

  Args:
    run_config: the run's config.
    people: the federation's people, in the engine's client order.
    client: index of the target in ``people``.
    store, local_train: `client_data.make_store(people)` and the jitted
      `executors.make_local_train`, to reuse across calls (built here if None).

  Returns:
    ``(Δ [P] float32, weight)``.
  """
  from privateyes_jax import training  # pylint: disable=g-import-not-at-top
  from privateyes_jax.federated import client_data  # pylint: disable=g-import-not-at-top
  from privateyes_jax.federated import executors  # pylint: disable=g-import-not-at-top
  store = store if store is not None else client_data.make_store(people)
  if local_train is None:
    local_train = jax.jit(executors.make_local_train(
        apply_fn, training.make_optimizer(run_config.optimizer)))
  indices, mask = client_data.round_indices(run_config.seed, round_idx, np.array([client]),
                                            store.num_samples, run_config.fl.local_steps,
                                            run_config.batch_size)
  delta, _, weight = local_train(global_params, store.arrays(), jnp.int32(client),
                                          jnp.asarray(indices[0]), jnp.asarray(mask[0]))
  return np.asarray(delta, np.float32), float(weight)


def sybil_targets(recorded, key: jax.Array, num_sybils: int | None = None,
                  max_people: int = 0) -> list[dict]:
  """(c) on a recorded round of a PrivatEyes run: per client, what a Sybil coalition recovers.

  For each client of ``recorded`` (a `pipeline.RecordedRound`), replays the round
  as if its other participants were Sybils submitting zeros: the client's honest
  update from the recorded global model (`honest_update`), the run's own secure
  aggregator (`federated.engine.build_aggregator`), and `sybil_round`.

  Args:
    recorded: `pipeline.load_round` of a run (any aggregator; the run's
      ``aggregator`` config must be a PrivatEyes one for the MPC to be real).
    key: PRNG key (per-client aggregation keys are folded from it).
    num_sybils: Sybils per round; default the round's other participants.
    max_people: only the first this many clients (0: all).

  Returns:
    One dict per client: ``client``, ``update`` (pytree like the params: attack it
    as plain FL's individual update, from ``recorded.global_params``),
    ``max_abs_error``, ``cosine`` (vs the honest update), ``num_sybils``.
  """
  from privateyes_jax.federated import engine  # pylint: disable=g-import-not-at-top
  config = recorded.config
  if config.aggregator.name not in ('privateyes', 'privateyes_semi_honest'):
    raise ValueError(f'Sybil rounds replay the run\'s secure aggregation; {recorded.run_dir!r} '
                     f'uses aggregator {config.aggregator.name!r}.')
  flat0 = ravel_pytree(recorded.global_params)[0]
  aggregator = engine.build_aggregator(config, len(recorded.clients), flat0.size)
  aggregator = dataclasses.replace(aggregator, record_view=False)
  federation = list(recorded.federation)
  people = _federation_people(recorded)
  clients = recorded.clients[:max_people] if max_people else recorded.clients
  sybils = num_sybils if num_sybils is not None else max(len(recorded.clients) - 1, 1)
  from privateyes_jax import training  # pylint: disable=g-import-not-at-top
  from privateyes_jax.federated import client_data  # pylint: disable=g-import-not-at-top
  from privateyes_jax.federated import executors  # pylint: disable=g-import-not-at-top
  store = client_data.make_store(people)
  local_train = jax.jit(executors.make_local_train(recorded.apply_fn,
                                                   training.make_optimizer(config.optimizer)))
  out = []
  for i, person in enumerate(clients):
    update, weight = honest_update(config, recorded.apply_fn, recorded.global_params, people,
                                   federation.index(person.person), recorded.round - 1,
                                   store=store, local_train=local_train)
    r = sybil_round(aggregator, update, weight, num_sybils=sybils,
                    key=jax.random.fold_in(key, i), round_idx=recorded.round - 1)
    out.append({'client': person.person, 'update': unravel_like(r['recovered'],
                                                                recorded.global_params),
                'max_abs_error': r['max_abs_error'], 'cosine': r['cosine'],
                'num_sybils': sybils})
  return out


def _federation_people(recorded):
  """The run's training people in the engine's client order (`data.split_people`)."""
  from privateyes_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  dataset = data_lib.load_dataset(recorded.config.data)
  train_people, _ = data_lib.split_people(dataset, recorded.config.data)
  return list(train_people.people)
