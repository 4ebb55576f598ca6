r"""Validates DualView at demo size: plain FL vs the PrivatEyes coalition view.

  python -m privateyes_jax.attacks.validate_demo [workdir]

Reproduces the paper's headline (plain FL: every person re-identified; PrivatEyes:
none) on the synthetic identities, self-contained:

1. 15 synthetic people (`synthetic.make_dataset(18, 600)`, people 0..14 are the
   clients) train the project's GazeNet (conv (20, 50), hidden 500, SAME) with a
   simple FedAvg written here (client SGD, server averages the updates).
2. The last round's **individual updates** Δ_c are recorded (the plain-FL server's
   view), as are the round's start θ_r and the output-model change.
3. The **coalition view** of PrivatEyes for client c is one uniformly random
   additive share of Δ_c over Z_2^k decoded as fixed-point: noise, independent of
   the data (any S-1 shares are uniform), of the same pytree structure.
4. The WGAN-GP prior is trained on auxiliary people 100.. (not the federation).
5. DualView attacks every client under both views, and once the output-model
   change (the same for everyone: what any observer of the OM sees); an identity
   classifier trained on the clients' private data (held-out accuracy checked)
   counts re-identified people; PSNR/SSIM, gaze error and gaze KL are reported,
   next to the gaze error and KL of guessing the population's gaze.
6. With a workdir: ``summary.json``, ``reconstructions.png``, ``gaze.png`` and the
   prior's orbax checkpoints (``prior/``; a rerun reuses them) are written there.

The library functions here (`run_fedavg`, `coalition_share`, `validate`) are plain
functions with arguments; nothing is parsed at import.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from privateyes_jax import metrics
from privateyes_jax import progress as progress_lib
from privateyes_jax import training
from privateyes_jax import workdir as workdir_lib
from privateyes_jax.attacks import dualview
from privateyes_jax.attacks import evaluation
from privateyes_jax.attacks import gan_prior
from privateyes_jax.data import synthetic
from privateyes_jax.models import gaze as gaze_models


def default_config(preset: str = 'demo') -> ml_collections.ConfigDict:
  """The validation run: data, GazeNet, FedAvg, prior, attack and classifier budgets.

  ``preset='tiny'`` shrinks everything for the smoke test.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_people = 18  # Rendered people; the first `num_clients` form the federation.
  c.num_clients = 15
  c.samples_per_person = 600
  c.model = ml_collections.ConfigDict(dict(name='gazenet', conv_features=(20, 50), hidden=500,
                                           padding='SAME'))
  c.rounds = 4
  c.local_steps = 10
  c.batch_size = 32
  c.client_learning_rate = 0.01  # SGD on the L1 loss; 0.05 diverges from GazeNet's init.
  c.ring_bits = 32  # k of the coalition's share ring Z_2^k, and fixed-point fraction bits f.
  c.fraction_bits = 16
  c.prior = gan_prior.default_config('demo')
  c.attack = dualview.default_config('demo')
  c.classifier_steps = 300
  c.classifier_features = (16, 32, 64)
  c.min_classifier_accuracy = evaluation.DEFAULT_MIN_ACCURACY
  if preset == 'tiny':  # Seconds on a CPU, for the smoke test; proves wiring, not the attack.
    c.num_people, c.num_clients, c.samples_per_person = 3, 2, 40
    c.model.conv_features, c.model.hidden = (4, 8), 16
    c.rounds, c.local_steps, c.batch_size = 1, 2, 8
    c.prior = gan_prior.default_config('tiny')
    c.attack = dualview.default_config('tiny')
    c.attack.steps = 2
    c.classifier_steps, c.classifier_features = 40, (8, 16)
  elif preset != 'demo':
    raise ValueError(f'Unknown validation preset {preset!r}; available: demo, tiny.')
  return c


# ----------------------------------------------------------------------------- federated training
def local_batches(person, seed: int, round_idx: int, client: int, steps: int, batch_size: int):
  """The client's ``[steps, B, ...]`` batches of one round, a pure function of the indices."""
  rng = np.random.default_rng([seed, 11, round_idx, client])
  idx = rng.choice(person.num_samples, size=(steps, batch_size), replace=True)
  return {'images': person.images[idx], 'head_pose': person.head_pose[idx],
          'labels': person.labels[idx], 'mask': np.ones((steps, batch_size), np.float32)}


def run_fedavg(people, model, config) -> dict:
  """FedAvg with client SGD; returns the last round's views.

  Returns:
    ``{'global_params': θ_r (start of the last round), 'individual_updates': [Δ_c]
    (pytrees, one per client), 'output_model_update': OM_{r+1} − OM_r (the mean
    update, applied with server learning rate 1), 'final_params': θ_{r+1},
    'round_seconds': float}``.
  """
  optimizer = training.make_optimizer(ml_collections.ConfigDict(
      dict(name='sgd', learning_rate=config.client_learning_rate)))
  update = training.make_update_fn(model.apply, optimizer)

  @jax.jit
  def local_train(params, batches):
    opt_state = optimizer.init(params)
    local = params
    for t in range(config.local_steps):  # Unrolled: XLA:CPU while loops around convs are slow.
      local, opt_state, _ = update(local, opt_state, jax.tree.map(lambda a: a[t], batches))
    return jax.tree.map(jnp.subtract, local, params)

  p0 = people[0]
  params = model.init(jax.random.PRNGKey(config.seed), p0.images[:1], p0.head_pose[:1])['params']
  t0 = time.perf_counter()
  for r in range(config.rounds):
    deltas = [local_train(params, local_batches(p, config.seed, r, c, config.local_steps,
                                                config.batch_size))
              for c, p in enumerate(people)]
    mean = jax.tree.map(lambda *d: jnp.mean(jnp.stack(d), axis=0), *deltas)
    start = params
    params = jax.tree.map(jnp.add, params, mean)
    logging.info('FedAvg round %d/%d done (%.1f s)', r + 1, config.rounds, time.perf_counter() - t0)
  return {'global_params': start, 'individual_updates': deltas, 'output_model_update': mean,
          'final_params': params, 'round_seconds': (time.perf_counter() - t0) / config.rounds}


def coalition_share(key: jax.Array, update: Any, ring_bits: int = 32,
                    fraction_bits: int = 16) -> Any:
  """What a coalition of S-1 servers holds of one individual update, decoded as fixed-point.

  The client's other shares are uniform over Z_2^k and independent of the update,
  and the coalition's share is ``x − Σ others``, itself uniform whatever ``x`` is;
  so we sample it uniformly (the distribution is exact) and decode it as a signed
  fixed-point value with ``fraction_bits`` fractional bits.
  """
  if not 0 <= fraction_bits < ring_bits <= 32:
    raise ValueError(f'Need 0 <= fraction_bits < ring_bits <= 32 (shares are sampled as uint32), '
                     f'got k={ring_bits}, f={fraction_bits}.')
  shift = 32 - ring_bits
  leaves, treedef = jax.tree.flatten(update)  # Only the shapes are used.
  out = []
  for k, leaf in zip(jax.random.split(key, len(leaves)), leaves):
    share = jax.random.bits(k, leaf.shape, jnp.uint32) >> shift  # Uniform on Z_2^k.
    # Two's complement in k bits: move the sign bit to bit 31, shift back arithmetically.
    signed = jax.lax.bitcast_convert_type(share << shift, jnp.int32) >> shift
    out.append(signed.astype(jnp.float32) / 2.0 ** fraction_bits)
  return jax.tree.unflatten(treedef, out)


# ----------------------------------------------------------------------------- the validation
THREAT_MODELS = ('plain FL (IU)', 'PrivatEyes (share)', 'PrivatEyes (OM only)')


def format_table(summaries: dict[str, dict]) -> str:
  """The validation's results table: one row per threat model."""
  lines = [f'{"threat model":<22} {"re-identified":>13} {"top-5":>7} {"PSNR":>6} {"SSIM":>6} '
           f'{"gaze err (deg)":>14} {"gaze KL":>8}']
  for name, s in summaries.items():
    lines.append(f'{name:<22} {s["reidentified"]:>9d}/{s["num_people"]:<3d} '
                 f'{s["top5"]:>4d}/{s["num_people"]:<2d} {s["psnr"]:>6.2f} {s["ssim"]:>6.3f} '
                 f'{s["gaze_error_deg"]:>14.2f} {s["gaze_kl"]:>8.2f}')
  return '\n'.join(lines)


def validate(config: ml_collections.ConfigDict | None = None, workdir: str | None = None) -> dict:
  """Runs the whole validation; returns ``{'summaries', 'per_person', 'timings', ...}``.

  Args:
    config: see `default_config`.
    workdir: where the prior's orbax checkpoints (``prior/``) and the PNG plots go;
      re-running with the same workdir reuses the trained prior. None: nothing is
      written.
  """
  config = config or default_config()
  timings = {}
  t_all = time.perf_counter()
  if config.num_clients > config.num_people:
    raise ValueError(f'num_clients {config.num_clients} > num_people {config.num_people}.')
  dataset = synthetic.make_dataset(config.num_people, config.samples_per_person, config.seed)
  clients = dataset.people[:config.num_clients]
  model = gaze_models.build_model(config.model)

  t = time.perf_counter()
  fl = run_fedavg(clients, model, config)
  timings['fedavg_s'] = time.perf_counter() - t
  predict = training.predict_fn(model.apply)
  errors = training.evaluate_people(predict, fl['final_params'], clients, 'gaze')
  gaze_error = float(np.mean(list(errors.values())))
  logging.info('FedAvg: %d rounds, clients\' mean error %.2f deg', config.rounds, gaze_error)

  t = time.perf_counter()
  prior = gan_prior.train_prior(
      config.prior, os.path.join(workdir, 'prior') if workdir else None,
      excluded_people=tuple(dataset.person_names))
  timings['prior_s'] = time.perf_counter() - t

  t = time.perf_counter()
  classifier = evaluation.train_evaluation_classifier(
      clients, steps=config.classifier_steps, seed=config.seed,
      features=tuple(config.classifier_features), min_accuracy=config.min_classifier_accuracy)
  timings['classifier_s'] = time.perf_counter() - t
  logging.info('Evaluation classifier: held-out accuracy %.3f', classifier.accuracy)

  local_training = {'optimizer': 'sgd', 'learning_rate': config.client_learning_rate,
                    'local_steps': config.local_steps, 'batch_size': config.batch_size}
  inversion = dualview.make_inversion(prior, model.apply, config.attack, 'sgd')
  attack = lambda key, observed, om=None: dualview.attack_person(
      key, prior, model.apply, fl['global_params'], observed, local_training, config.attack,
      output_model_update=om, inversion=inversion)
  root = jax.random.PRNGKey(config.seed + 1)
  results = {name: [] for name in THREAT_MODELS}
  t = time.perf_counter()
  progress = progress_lib.Progress('DualView', 2 * len(clients) + 1, unit='attack')
  for c, update in enumerate(fl['individual_updates']):
    key = jax.random.fold_in(root, c)
    results[THREAT_MODELS[0]].append(attack(key, update))
    share = coalition_share(jax.random.fold_in(key, 1), update, config.ring_bits,
                            config.fraction_bits)
    results[THREAT_MODELS[1]].append(attack(key, share))
    progress.update(2 * c + 2)
  # The output model is the same for everyone: one attack, evaluated against each person.
  om_result = attack(jax.random.fold_in(root, 10_000), None, fl['output_model_update'])
  results[THREAT_MODELS[2]] = [om_result] * len(clients)
  timings['attacks_s'] = time.perf_counter() - t
  timings['attack_mean_s'] = timings['attacks_s'] / (2 * len(clients) + 1)

  t = time.perf_counter()
  per_person = {name: evaluation.evaluate_people(r, clients, classifier,
                                                 min_accuracy=config.min_classifier_accuracy)
                for name, r in results.items()}
  summaries = {name: evaluation.summarize(rows) for name, rows in per_person.items()}
  timings['evaluation_s'] = time.perf_counter() - t
  # Reference for view 2: an adversary who learnt nothing guesses the population's gaze.
  population = np.concatenate([p.labels for p in clients])
  subsample = population[np.linspace(0, len(population) - 1, 32 * len(clients)).astype(int)]
  reference = {
      'gaze_error_deg': float(np.mean([metrics.recovered_gaze_error_deg(population, p.labels)
                                       for p in clients])),
      'gaze_kl': float(np.mean([metrics.gaze_kde_kl(p.labels, subsample) for p in clients]))}
  timings['total_s'] = time.perf_counter() - t_all
  out = {'summaries': summaries, 'per_person': per_person, 'timings': timings,
         'population_gaze_reference': reference, 'classifier_accuracy': classifier.accuracy,
         'fl_gaze_error_deg': gaze_error}
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    workdir_lib.write_json(os.path.join(workdir, 'summary.json'), out)
    evaluation.plot_reconstructions(
        os.path.join(workdir, 'reconstructions.png'), clients,
        {name: [r['images'] for r in results[name]] for name in THREAT_MODELS[:2]})
    evaluation.plot_gaze(os.path.join(workdir, 'gaze.png'), clients,
                         {name: [r['gaze'] for r in results[name]] for name in THREAT_MODELS[:2]})
  return out


def main(workdir: str | None = None, config: ml_collections.ConfigDict | None = None) -> dict:
  """Runs `validate` and prints the table and timings."""
  out = validate(config, workdir)
  t = out['timings']
  n = len(next(iter(out['per_person'].values())))
  print(f'\nDualView validation on synthetic identities ({n} clients, last FedAvg round)')
  print(f'FedAvg clients\' gaze error {out["fl_gaze_error_deg"]:.2f} deg; evaluation classifier '
        f'held-out accuracy {out["classifier_accuracy"]:.3f}')
  print(format_table(out['summaries']))
  ref = out['population_gaze_reference']
  print(f'Reference (no leakage: guess the population\'s gaze): gaze err {ref["gaze_error_deg"]:.2f} '
        f'deg, gaze KL {ref["gaze_kl"]:.2f}')
  for name, rows in out['per_person'].items():
    missed = [f'{r["person"]}->{r["predicted"]}' for r in rows if not r['reidentified']]
    hits = [r['person'] for r in rows if r['reidentified']]
    print(f'  {name}: re-identified {hits or "none"}; not: {missed or "none"}')
  print(f'Timings: FedAvg {t["fedavg_s"]:.1f} s, prior {t["prior_s"]:.1f} s, classifier '
        f'{t["classifier_s"]:.1f} s, attacks {t["attacks_s"]:.1f} s '
        f'({t["attack_mean_s"]:.2f} s each), evaluation {t["evaluation_s"]:.1f} s, total '
        f'{t["total_s"]:.1f} s')
  if workdir:
    print(f'Plots: {os.path.join(workdir, "reconstructions.png")}, {os.path.join(workdir, "gaze.png")}')
  return out


if __name__ == '__main__':
  logging.set_verbosity(logging.INFO)
  main(sys.argv[1] if len(sys.argv) > 1 else None)
