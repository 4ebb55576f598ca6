r"""The accuracy–privacy curve of client-level DP (issue #15): presets ``cpu``, ``full``, ``tiny``.

  python -m experiments.dp_curve --workdir=runs/dp_curve \
      --config=experiments/configs/dp_curve.py:cpu

One config describes the whole curve: ``train`` is the run trained at every point
(the demo's model and client optimizer on the calibrated synthetic people, many
clients, few samples each), ``epsilons`` the points (``inf``: noise_multiplier 0,
the same clipping and Poisson sampling without noise), ``aggregators`` the two
methods (plain FL with central DP, the baseline; PrivatEyes with every server's
noise inside the MPC), and ``attack`` the attack every point gets
(`pipeline.default_config`, shrunk to fit the preset's budget).

Presets: ``cpu`` (2 CPU cores, three training seeds: about an hour with the attacks),
``full`` (one GPU: thousands of clients), ``tiny`` (tests: seconds).
"""

import math

import ml_collections

from experiments.configs import default
from experiments.configs import demo
from privateyes_jax.attacks import pipeline

PRESETS = ('cpu', 'full', 'tiny')
AGGREGATORS = ('mean', 'privateyes')

# The clip norm C, chosen on shadow people, never on the reported ones: the median L2 norm
# of the unclipped client updates of the cpu recipe without DP on another synthetic
# population (data.seed=1, 16 clients x 3 rounds: median 0.133, quartiles 0.127-0.144, at
# 32 samples a person; measured again at 128: per-round medians 0.130-0.138 over the first
# 3 rounds, 0.141 over 15; docs/DECISIONS.md, "The accuracy–privacy curve (#15)"). Clipping
# near the median bounds the sensitivity while barely shrinking the typical update
# (McMahan et al. 2018 clip near the median too). The full preset reuses it; measure again
# if its recipe changes.
CLIP_NORM = 0.13


def train_config(preset: str) -> ml_collections.ConfigDict:
  """The federated run of every point of the curve (DP settings filled in per point)."""
  c = demo.get_config('fedavg')
  c.record_views = 'last'  # DualView and membership inference read the last round.
  c.aggregator.dp.enabled = True
  c.aggregator.dp.clip_norm = CLIP_NORM
  c.aggregator.dp.accountant = 'rdp'
  if preset == 'tiny':
    default.apply_tiny(c)
    c.data.num_people = 14  # 10 federation people, 4 held out.
    c.data.num_test_people = 4
    c.data.samples_per_person = 16
    c.fl.rounds = 1
    c.fl.local_steps = 1
    c.fl.clients_per_round = 5  # q = 0.5.
    c.fl.eval_every = 1
    c.fl.checkpoint_every = 1
    c.aggregator.dp.delta = 1e-2  # Below 1/10.
    c.aggregator.min_clients = 1
    return c
  if preset == 'cpu':
    # 200 federation people (enough for client-level DP to be defined with δ = 1e-5 < 1/N)
    # and 40 held out. 128 samples each: at 32 the evaluation identity classifier could not
    # tell the attacked people apart well enough to score DualView (0.69 held-out accuracy,
    # under the 0.8 required); on shadow people 128 reach 0.97 on every draw (docs/
    # DECISIONS.md, "DualView on the accuracy–privacy curve"). Local training costs the
    # same (2 steps of batch 16 whatever the sample count).
    c.data.num_people = 240
    c.data.num_test_people = 40
    c.data.samples_per_person = 128
    c.fl.clients_per_round = 16  # q = 0.08.
    # The executor trains a fixed capacity of 29 slots a round (the Poisson sample padded
    # to its 1 - 1e-3 quantile, privacy/dp.py; 44 at 1e-9 when BENCHMARKS' run was made):
    # 2 local steps and 15 rounds keep a run near 2.5 minutes on the shared 2 cores.
    c.fl.local_steps = 2
    c.fl.rounds = 15
  else:  # full: a GPU (thousands of clients, q = 0.05).
    # 2000 federation people: the PrivatEyes view of the last round holds the coalition's
    # estimate of every executor slot (164 here) x 1.8M parameters as uint64, about
    # 2.4 GB per run; 5 ε x 3 seeds of them (36 GB) must fit the GPU machine's 64 GB disk.
    c.data.num_people = 2200
    c.data.num_test_people = 200
    c.data.samples_per_person = 64
    c.fl.clients_per_round = 100
    c.fl.rounds = 100
  c.fl.eval_every = c.fl.rounds  # Evaluate the final model only: the curve's point.
  c.fl.checkpoint_every = 10
  c.fl.server_schedule = 'constant'  # A cosine server lr would shrink the noise too.
  c.aggregator.dp.delta = 1e-5
  return c


def attack_config(preset: str, num_people: int) -> ml_collections.ConfigDict:
  """The attack of every point: DualView per threat model and membership inference."""
  c = pipeline.default_config('tiny' if preset == 'tiny' else
                              'full' if preset == 'full' else 'demo')
  # The prior's public people come after the run's people (its default start, index 100,
  # would be a federation person here).
  c.prior.data.first_person = num_people
  if preset == 'cpu':
    c.attack_seeds = 1
    c.max_people = 6  # Of the last round's ~16 sampled clients.
    # 300 steps (the pipeline's default): on shadow people 1000 steps gave the same
    # held-out accuracy as 300; more samples a person are what helps (train_config).
    c.classifier_steps = 300
  elif preset == 'full':
    c.max_people = 20
    c.min_federations = 3
    # Round differencing is measured from the public cohorts (experiments/dp_curve.py);
    # record_views='all' of thousands of clients would be terabytes. The Sybil row replays
    # the run's secure aggregation on the unfused path, which refuses DP.
    c.extra_rows = ('gradient_inversion',)
  else:
    c.max_people = 2
    c.attack_seeds = 1
    c.background_samples = 8
    c.num_real_images = 8
    c.classifier_steps = 20
    c.min_classifier_accuracy = 0.0  # Tests check the wiring, not the attack's strength.
    c.membership_inference = True
    c.membership_shadows = 0
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or 'cpu'
  if preset not in PRESETS:
    raise ValueError(f'Unknown dp_curve preset {preset!r}; available: {", ".join(PRESETS)}.')
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.train = train_config(preset)
  c.epsilons = (1.0, 2.0, 4.0, 8.0, math.inf) if preset != 'tiny' else (4.0, math.inf)
  c.aggregators = AGGREGATORS
  # Training seeds (federations): three wherever a curve is reported, so every error has
  # an interval and DualView pools 3 federations of attacked people.
  c.seeds = (0,) if preset == 'tiny' else (0, 1, 2)
  c.attack = attack_config(preset, c.train.data.num_people)
  # Rounds back that round differencing may combine (the pipeline's default window),
  # and 0 (every round) as the adversary's best case.
  c.differencing_windows = (4, 0)
  return c
