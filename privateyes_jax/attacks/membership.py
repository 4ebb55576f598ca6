"""Person-level membership inference on the output model (issue #14, shared views).

The output model is what every threat model sees (the PrivatEyes coalition, any
user of the released model). Membership inference asks of a candidate person,
whose data the adversary holds, whether they were one of the federation's clients
(members: the training people) or not (non-members: held-out people). A person is
a client, so membership is decided per person, from the model's loss on that
person's samples.

* `loss_threshold` (Yeom et al., CSF 2018): score = −(the person's mean loss);
  members were trained on, so their loss tends to be lower.
* `lira` (Carlini et al., "Membership Inference Attacks From First Principles",
  S&P 2022), person-level: shadow models are trained on auxiliary people plus a
  random half of the candidates (each candidate IN half of the shadows, OUT of the
  others); per candidate a Gaussian is fitted to the statistic φ = log(mean loss)
  of the IN and of the OUT shadows, and the score is the log-likelihood ratio
  ``log N(φ_target; μ_in, σ_in) − log N(φ_target; μ_out, σ_out)``. This calibrates
  away how hard each person is for any model (a person with unusual eyes has a
  high loss whether trained on or not). With ``fixed_variance`` one σ over all
  candidates is used, as Carlini et al. recommend for few shadows; ``offline``
  uses the OUT shadows only (one-sided test of φ below μ_out).

Every result carries `auc_summary`: the ROC AUC, a 95% bootstrap interval
(resampling members and non-members), the one-sided Mann–Whitney p-value against
AUC = 0.5 (`scipy.stats.mannwhitneyu`), and the TPR at low FPRs. With few people
the lowest attainable FPR is 1/num_nonmembers (``fpr_resolution``): a TPR at 1%
FPR of 15 vs 5 people is the TPR at zero false positives.

What a shadow model is (``train_fn``) is the caller's: the closer to the target
run's training (federated rounds, local steps, optimizer), the better calibrated;
`make_trainer` gives a centralized stand-in with the run's model and optimizer.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from privateyes_jax import training
from privateyes_jax.data import base

PyTree = Any
TrainFn = Callable[[jax.Array, Sequence[base.PersonData]], PyTree]


# ----------------------------------------------------------------------------- scores and AUC
def person_losses(predict, params: PyTree, people: Sequence[base.PersonData],
                  batch_size: int = 512) -> np.ndarray:
  """Each person's mean training loss ``[n]`` (`training.loss_fn`'s L1, gaze or screen labels).

  ``predict`` is `training.predict_fn(model.apply)` (jitted). Batches are at most the
  largest person's sample count (one compiled shape, no padding of small people to 512).
  """
  batch_size = min(batch_size, max(p.num_samples for p in people))
  out = []
  for p in people:
    pred = training.predict(predict, params, p.images, p.head_pose, batch_size)
    out.append(float(np.mean(np.sum(np.abs(pred - p.labels), axis=-1))))
  return np.asarray(out, np.float64)


def _auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
  """P(member score > non-member score) + ½ P(tie): the Mann–Whitney U / (n1 n0)."""
  m = np.asarray(member_scores, np.float64)[:, None]
  n = np.asarray(nonmember_scores, np.float64)[None, :]
  return float(np.mean((m > n) + 0.5 * (m == n)))


def tpr_at_fpr(member_scores, nonmember_scores, fpr: float) -> float:
  """The largest TPR of a threshold ``score > t`` whose FPR is at most ``fpr``."""
  m = np.asarray(member_scores, np.float64)
  n = np.sort(np.asarray(nonmember_scores, np.float64))[::-1]
  allowed = int(np.floor(fpr * len(n) + 1e-12))  # False positives allowed.
  if allowed >= len(n):
    return 1.0
  return float(np.mean(m > n[allowed]))


def auc_summary(member_scores, nonmember_scores, *, num_bootstrap: int = 2000, seed: int = 0,
                fprs: Sequence[float] = (0.01, 0.1)) -> dict:
  """AUC of scores (higher = more likely a member) with a 95% interval and a p-value.

  Args:
    member_scores: ``[n1]`` scores of the members.
    nonmember_scores: ``[n0]`` scores of the non-members.
    num_bootstrap: bootstrap resamples (members and non-members resampled
      separately, with replacement) for the percentile interval.
    seed: bootstrap seed.
    fprs: FPRs at which the TPR is reported.

  Returns:
    ``{'auc', 'auc_ci95': [lo, hi], 'p_value'`` (one-sided Mann–Whitney, H1: members
    score higher), ``'tpr_at_fpr': {str(fpr): tpr}, 'fpr_resolution': 1/n0,
    'num_members', 'num_nonmembers'}``.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top
  m = np.asarray(member_scores, np.float64)
  n = np.asarray(nonmember_scores, np.float64)
  if m.ndim != 1 or n.ndim != 1 or len(m) < 1 or len(n) < 1:
    raise ValueError(f'Need 1-D member and non-member scores, got shapes {m.shape}, {n.shape}.')
  if not (np.all(np.isfinite(m)) and np.all(np.isfinite(n))):
    raise ValueError('Membership scores contain NaN or inf.')
  wins = (m[:, None] > n[None, :]) + 0.5 * (m[:, None] == n[None, :])  # [n1, n0]
  rng = np.random.default_rng([seed, 14])
  boot = np.empty(num_bootstrap)
  chunk = max(1, int(2e7 // (len(m) * len(n))))
  for start in range(0, num_bootstrap, chunk):
    b = min(chunk, num_bootstrap - start)
    im = rng.integers(0, len(m), (b, len(m)))
    in_ = rng.integers(0, len(n), (b, len(n)))
    boot[start:start + b] = wins[im[:, :, None], in_[:, None, :]].mean(axis=(1, 2))
  lo, hi = np.percentile(boot, [2.5, 97.5])
  p_value = float(stats.mannwhitneyu(m, n, alternative='greater').pvalue)
  return {'auc': float(wins.mean()), 'auc_ci95': [float(lo), float(hi)], 'p_value': p_value,
          'tpr_at_fpr': {str(f): tpr_at_fpr(m, n, f) for f in fprs},
          'fpr_resolution': 1.0 / len(n), 'num_members': int(len(m)),
          'num_nonmembers': int(len(n))}


# ----------------------------------------------------------------------------- attacks
def loss_threshold(predict, params: PyTree, members: Sequence[base.PersonData],
                   nonmembers: Sequence[base.PersonData], label_kind: str = 'gaze',
                   **summary_kwargs) -> dict:
  """Loss-threshold membership inference on the output model ``params``.

  Args:
    predict: `training.predict_fn(model.apply)`.
    params: the output model.
    members: the run's training people (candidates that were clients).
    nonmembers: held-out people (never clients).
    label_kind: ``'gaze'`` or ``'screen'``; the L1 loss is the training loss for
      both (checked only).
    **summary_kwargs: passed to `auc_summary`.

  Returns:
    `auc_summary`'s dict plus ``'member_scores'``, ``'nonmember_scores'`` (−mean loss)
    and ``'attack': 'loss_threshold'``.
  """
  if label_kind not in ('gaze', 'screen'):
    raise ValueError(f'Unknown label kind {label_kind!r}; expected "gaze" or "screen".')
  sm = -person_losses(predict, params, members)
  sn = -person_losses(predict, params, nonmembers)
  return {'attack': 'loss_threshold', **auc_summary(sm, sn, **summary_kwargs),
          'member_scores': sm.tolist(), 'nonmember_scores': sn.tolist()}


def _log_normal_pdf(x, mu, sigma):
  return -0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma)


def lira_scores(target_stat: np.ndarray, shadow_stats: np.ndarray, in_mask: np.ndarray, *,
                fixed_variance: bool = True, offline: bool = False,
                min_sigma: float = 1e-3) -> np.ndarray:
  """LiRA's per-candidate log-likelihood ratio (higher = more likely a member).

  Args:
    target_stat: ``[n]`` φ of each candidate under the target model.
    shadow_stats: ``[S, n]`` φ under each shadow model.
    in_mask: ``[S, n]`` bool: the candidate was in that shadow's training set.
    fixed_variance: one σ (per side) pooled over candidates.
    offline: ignore the IN shadows: score = (μ_out − φ) / σ_out.
    min_sigma: floor of σ (few shadows can give σ ≈ 0).
  """
  target_stat = np.asarray(target_stat, np.float64)
  shadow_stats = np.asarray(shadow_stats, np.float64)
  in_mask = np.asarray(in_mask, bool)
  if shadow_stats.shape != in_mask.shape or shadow_stats.shape[1:] != target_stat.shape:
    raise ValueError(f'Shapes: target {target_stat.shape}, shadows {shadow_stats.shape}, '
                     f'in_mask {in_mask.shape}; expected [n], [S, n], [S, n].')
  out_mask = ~in_mask
  if not out_mask.any(axis=0).all() or (not offline and not in_mask.any(axis=0).all()):
    raise ValueError('Every candidate needs at least one OUT shadow (and one IN shadow unless '
                     'offline); train more shadows.')

  def moments(mask):
    count = mask.sum(axis=0)
    mu = np.where(mask, shadow_stats, 0.0).sum(axis=0) / np.maximum(count, 1)
    sq = np.where(mask, (shadow_stats - mu) ** 2, 0.0)
    if fixed_variance:
      sigma = np.full_like(mu, np.sqrt(sq.sum() / max(mask.sum() - mask.shape[1], 1)))
    else:
      sigma = np.sqrt(sq.sum(axis=0) / np.maximum(count - 1, 1))
    return mu, np.maximum(sigma, min_sigma)

  mu_out, sd_out = moments(out_mask)
  if offline:
    return (mu_out - target_stat) / sd_out
  mu_in, sd_in = moments(in_mask)
  return (_log_normal_pdf(target_stat, mu_in, sd_in)
          - _log_normal_pdf(target_stat, mu_out, sd_out))


def shadow_statistics(predict, members: Sequence[base.PersonData],
                      nonmembers: Sequence[base.PersonData],
                      shadow_people: Sequence[base.PersonData], train_fn: TrainFn, *,
                      num_shadows: int = 8, seed: int = 0, shadow_fraction: float = 0.5
                      ) -> tuple[np.ndarray, np.ndarray]:
  """LiRA's shadow models: ``(stats [num_shadows, n], in_mask [num_shadows, n])``.

  ``stats[s, i]`` is φ = log(mean loss) of candidate i (members, then non-members)
  under shadow s; ``in_mask[s, i]`` whether i was one of shadow s's people. It
  depends only on the candidates' data, the auxiliary people, the trainer and the
  seed, not on the attacked model: runs that share them (e.g. FedAvg and PrivatEyes
  of one federation) can share one set of shadows (`output_model_membership`'s cache).
  """
  if num_shadows < 2 or num_shadows % 2:
    raise ValueError(f'num_shadows must be even and >= 2, got {num_shadows}.')
  candidates = list(members) + list(nonmembers)
  names = {p.person for p in candidates}
  overlap = sorted(names & {p.person for p in shadow_people})
  if overlap:
    raise ValueError(f'Shadow (auxiliary) people {overlap[:5]} are candidates too.')
  n = len(candidates)
  rng = np.random.default_rng([seed, 1414])
  # Balanced design: every candidate IN exactly half of the shadows.
  in_mask = np.stack([rng.permutation(num_shadows) < num_shadows // 2 for _ in range(n)], axis=1)
  num_aux = int(round(shadow_fraction * len(shadow_people)))
  key = jax.random.PRNGKey(seed)
  stats = np.empty((num_shadows, n))
  for s in range(num_shadows):
    aux = [shadow_people[i] for i in rng.permutation(len(shadow_people))[:num_aux]]
    people = aux + [c for c, inside in zip(candidates, in_mask[s]) if inside]
    shadow_params = train_fn(jax.random.fold_in(key, s), people)
    stats[s] = np.log(person_losses(predict, shadow_params, candidates) + 1e-12)
  return stats, in_mask


def lira(predict, params: PyTree, members: Sequence[base.PersonData],
         nonmembers: Sequence[base.PersonData], shadow_people: Sequence[base.PersonData],
         train_fn: TrainFn, *, num_shadows: int = 8, seed: int = 0, label_kind: str = 'gaze',
         shadow_fraction: float = 0.5, fixed_variance: bool = True, offline: bool = False,
         shadows: tuple[np.ndarray, np.ndarray] | None = None, **summary_kwargs) -> dict:
  """LiRA-style person-level membership inference on the output model ``params``.

  Args:
    predict: `training.predict_fn(model.apply)` (the shadows share the model).
    params: the output model.
    members, nonmembers: the candidates (see `loss_threshold`); the adversary
      holds their data (the membership game), not whether they were clients.
    shadow_people: auxiliary people, never candidates; each shadow trains on a
      random ``shadow_fraction`` of them plus its IN candidates.
    train_fn: ``(key, people) -> params`` trains one shadow model (e.g.
      `make_trainer`, or the run's own federated training on those people).
    num_shadows: shadow models (even; each candidate is IN exactly half of them).
    seed: the shadows' splits and keys.
    label_kind: ``'gaze'`` or ``'screen'`` (checked only).
    fixed_variance, offline: see `lira_scores`.
    shadows: `shadow_statistics`' result for these candidates, computed before
      (then ``shadow_people``, ``train_fn`` and ``shadow_fraction`` are unused).
    **summary_kwargs: passed to `auc_summary`.

  Returns:
    `auc_summary`'s dict plus ``'member_scores'``, ``'nonmember_scores'``,
    ``'attack': 'lira'`` (or ``'lira_offline'``), ``'num_shadows'``.
  """
  if label_kind not in ('gaze', 'screen'):
    raise ValueError(f'Unknown label kind {label_kind!r}; expected "gaze" or "screen".')
  candidates = list(members) + list(nonmembers)
  if shadows is None:
    shadows = shadow_statistics(predict, members, nonmembers, shadow_people, train_fn,
                                num_shadows=num_shadows, seed=seed,
                                shadow_fraction=shadow_fraction)
  shadow_stats, in_mask = shadows
  if shadow_stats.shape[1] != len(candidates):
    raise ValueError(f'Shadow statistics for {shadow_stats.shape[1]} candidates, '
                     f'{len(candidates)} given.')
  target_stat = np.log(person_losses(predict, params, candidates) + 1e-12)
  scores = lira_scores(target_stat, shadow_stats, in_mask, fixed_variance=fixed_variance,
                       offline=offline)
  sm, sn = scores[:len(members)], scores[len(members):]
  return {'attack': 'lira_offline' if offline else 'lira', 'num_shadows': len(shadow_stats),
          **auc_summary(sm, sn, **summary_kwargs),
          'member_scores': sm.tolist(), 'nonmember_scores': sn.tolist()}


# ----------------------------------------------------------------------------- shadow training
def make_trainer(model, optimizer_config, *, steps: int, batch_size: int) -> TrainFn:
  """A centralized shadow trainer ``(key, people) -> params`` with the target's model.

  Pools the people's samples and takes ``steps`` optimizer steps (``optimizer_config``:
  the run's ``config.optimizer``) on random batches: a cheap stand-in for the
  federated training that produced the target (fewer, larger steps; document the
  choice next to any number it gives).
  """
  tx = training.make_optimizer(optimizer_config)
  update = jax.jit(training.make_update_fn(model.apply, tx))

  def train(key, people):
    pooled = base.pool(people)
    num = len(pooled['labels'])
    k_init, k_batches = jax.random.split(key)
    params = model.init(k_init, pooled['images'][:1], pooled['head_pose'][:1])['params']
    opt_state = tx.init(params)
    order = np.random.default_rng(np.asarray(jax.random.key_data(k_batches))).integers(
        0, num, (steps, batch_size))
    for t in range(steps):
      idx = order[t]
      batch = {'images': jnp.asarray(pooled['images'][idx]),
               'labels': jnp.asarray(pooled['labels'][idx]),
               'head_pose': jnp.asarray(pooled['head_pose'][idx]),
               'mask': jnp.ones((batch_size,), jnp.float32)}
      params, opt_state, _ = update(params, opt_state, batch)
    return params

  return train


# ----------------------------------------------------------------------------- a recorded run
def output_model_membership(recorded, shadow_people: Sequence[base.PersonData], *,
                            num_shadows: int = 8, shadow_steps: int = 0, seed: int = 0,
                            train_fn: TrainFn | None = None, shadow_cache: dict | None = None,
                            **summary_kwargs) -> dict:
  """Both attacks on a run's output model: its training people vs its held-out people.

  Losses are the model's training loss, in the label space it was trained in: a
  run that standardised its labels (``recorded.label_scaling``, screen targets) is
  scored, and its shadows trained, on labels standardised the same way.

  Args:
    recorded: `pipeline.load_round` of the run (any threat model: the output
      model ``recorded.output_params`` is what everyone sees; use the last round).
    shadow_people: auxiliary people, neither training nor held-out people of the
      run (e.g. `gan_prior.aux_dataset`'s, or another dataset's).
    num_shadows: LiRA's shadow models (even); 0: the loss threshold only (no LiRA).
    shadow_steps: optimizer steps of each default shadow (0: the run's
      ``fl.rounds × fl.local_steps``, the steps each client's data saw).
    seed: shadows' seed and bootstrap seed.
    train_fn: the shadow trainer; default `make_trainer` with the run's model,
      client optimizer and batch size (centralized: a stand-in for the run's
      federated training).
    shadow_cache: a dict shared across calls: runs whose shadows would be the same
      (same data, people, model, optimizer, batch size, steps, label scaling and
      seed; e.g. FedAvg and PrivatEyes of one federation) train them once. Only
      with the default ``train_fn``.
    **summary_kwargs: passed to `auc_summary`.

  Returns:
    ``{'loss_threshold': ..., 'lira': ...}``, each as `loss_threshold` / `lira`
    return, plus ``'members'`` and ``'nonmembers'`` (person names) and
    ``'shadows_shared'`` (whether the shadows came from the cache).
  """
  import json  # pylint: disable=g-import-not-at-top
  from privateyes_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from privateyes_jax import label_scaling as label_scaling_lib  # pylint: disable=g-import-not-at-top
  from privateyes_jax.models import gaze as gaze_models  # pylint: disable=g-import-not-at-top
  config = recorded.config
  dataset = data_lib.load_dataset(config.data)
  train_people, test_people = data_lib.split_people(dataset, config.data)
  scaling = recorded.label_scaling
  members = label_scaling_lib.normalize_persons(train_people.people, scaling)
  nonmembers = label_scaling_lib.normalize_persons(test_people.people, scaling)
  shadow_people = label_scaling_lib.normalize_persons(shadow_people, scaling)
  predict = training.predict_fn(recorded.apply_fn)
  steps = shadow_steps or config.fl.rounds * config.fl.local_steps
  cache_key = None
  if train_fn is None:
    train_fn = make_trainer(gaze_models.build_model(config.model), config.optimizer,
                            steps=steps, batch_size=config.batch_size)
    if shadow_cache is not None:
      cache_key = json.dumps(
          [config.data.to_dict(), config.model.to_dict(), config.optimizer.to_dict(), steps,
           config.batch_size, seed, num_shadows, [p.person for p in members + nonmembers],
           [p.person for p in shadow_people], scaling.to_dict()], sort_keys=True, default=str)
  shared = cache_key is not None and cache_key in shadow_cache
  if num_shadows and cache_key is not None and not shared:
    shadow_cache[cache_key] = shadow_statistics(predict, members, nonmembers, shadow_people,
                                                train_fn, num_shadows=num_shadows, seed=seed)
  shadows = shadow_cache.get(cache_key) if cache_key is not None else None
  label_kind = dataset.label_kind
  out = {
      'loss_threshold': loss_threshold(predict, recorded.output_params, members, nonmembers,
                                       label_kind, seed=seed, **summary_kwargs),
      'members': [p.person for p in members], 'nonmembers': [p.person for p in nonmembers],
      'shadows_shared': shared}
  if num_shadows:
    out['lira'] = lira(predict, recorded.output_params, members, nonmembers, shadow_people,
                       train_fn, num_shadows=num_shadows, seed=seed, label_kind=label_kind,
                       shadows=shadows, **summary_kwargs)
  return out
