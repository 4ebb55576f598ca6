r"""Default experiment config: the centralized GazeNet baseline on synthetic identities.

Every other config imports this one and changes a few fields. Run with

  python -m experiments.train --config=experiments/configs/default.py --workdir=/tmp/run

and override any field with ``--config.x=y`` (e.g. ``--config.train.steps=100``).
The optional argument selects a preset: ``default.py:tiny`` shrinks everything
for CPU tests.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = 'centralized'
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = 'synthetic'
  c.data.source = 'memory'  # 'memory' renders in RAM; 'tfds' prepares/reads array_record.
  c.data.data_dir = ''  # TFDS data_dir; '' = $PRIVATEYES_DATA_DIR or ~/tensorflow_datasets.
  c.data.seed = 0  # Seed of the synthetic people (separate from the training seed).
  c.data.num_people = 20  # 15 federation people + 5 held-out test people.
  c.data.samples_per_person = 600
  # Synthetic renderer: 'easy' (the original people, far easier to tell apart than real
  # eyes) or 'realistic' (calibrated to real eye crops; the demo's). docs/DATASETS.md.
  c.data.difficulty = 'easy'
  c.data.protocol = 'holdout'  # 'holdout' (last num_test_people) or 'loo' (person `fold`).
  c.data.num_test_people = 5
  # Validation people (disjoint from training and test people; holdout: the ones just
  # before the test people, loo: the ones after the fold). Sweeps choose on them and
  # need >= 1 (experiments/configs/sweep.py sets 1); single runs default to none.
  c.data.num_val_people = 0
  c.data.fold = 0  # -1 with protocol='loo': every fold, one sub-run each.
  c.data.partition = 'person'  # 'person' (each client is one person) or 'iid' (control).
  # Public datasets and your own study (docs/DATASETS.md); '' / () / 0 / -1 = dataset default.
  c.data.manual_dir = ''  # Where your copy of the raw files is (never downloaded).
  c.data.image_size = 0  # Face datasets: resize to this (int or (H, W)).
  c.data.channels = 0
  c.data.people = ()  # Subset of people, e.g. ('p00', 'p01').
  c.data.expected_samples_per_person = -1  # 3000 for MPII evaluation subsets; 0 = any.
  c.data.splits = ''  # GazeCapture splits, e.g. 'train+test'.
  c.data.h5_file = ''  # Preprocessed MPIIGaze.h5 / MPIIFaceGaze.h5.
  c.data.label_kind = ''  # own_study: 'gaze' or 'screen'.
  c.data.labels_file = ''  # own_study: per-person CSV name.
  c.data.normalized_distance_mm = 0.0  # Raw MPIIFaceGaze normalisation distance.
  c.data.image_value_range = ()  # Images wider than 8 bits: (low, high) -> 0..255; () per image.
  c.data.nvgaze_pitch = ''  # NVGaze (required): signed column, e.g. '+float_gaze_y_degree'.
  c.data.nvgaze_yaw = ''  # NVGaze (required): signed column, e.g. '-float_gaze_x_degree'.
  c.data.nvgaze_images = ()  # NVGaze image columns, e.g. ('image_L_0',); () = all.
  # Label standardisation (privateyes_jax/label_scaling.py): train on (y - offset) / scale,
  # report errors in the dataset's unit. 'auto': screen labels yes, gaze (radians) no;
  # 'on'; 'off'. Declare a public scale (and offset), e.g. label_scale=(150., 100.) or (150.,), to
  # compute nothing from the labels; otherwise the run's own aggregation computes them
  # before round 1 from per-client means divided by the public label_bound.
  c.data.label_standardize = 'auto'
  c.data.label_offset = ()
  c.data.label_scale = ()
  c.data.label_bound = 4096.0  # Public bound on |label| (label units) for that aggregation.

  c.model = ml_collections.ConfigDict()
  c.model.name = 'gazenet'
  c.model.conv_features = (20, 50)
  c.model.hidden = 500
  c.model.padding = 'VALID'  # The original MPIIGaze LeNet (1.8M params); 'SAME': 3.4M.

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 1e-3
  c.optimizer.momentum = 0.9  # Used by name='momentum'.
  c.optimizer.clip_norm = 0.0  # > 0: clip each gradient to this global norm.
  c.optimizer.schedule = 'constant'  # constant | cosine (to 10% over train.steps).
  c.batch_size = 32

  c.train = ml_collections.ConfigDict()
  c.train.steps = 600
  c.train.eval_every = 100
  c.train.log_every = 20
  c.checkpoint_keep = 2

  # Federated learning (method='federated' or 'local'). Each person is one client.
  c.fl = ml_collections.ConfigDict()
  c.fl.rounds = 20
  c.fl.local_steps = 5  # Client optimizer steps per round (config.optimizer, batch_size).
  c.fl.clients_per_round = 0  # > 0: a count; 0: use client_fraction.
  c.fl.client_fraction = 1.0
  c.fl.server_optimizer = 'fedavg'  # fedavg | fedavgm | fedadam | fedyogi (Reddi et al. 2021).
  c.fl.server_lr = 1.0
  c.fl.server_momentum = 0.9  # fedavgm.
  c.fl.server_b1 = 0.9  # fedadam / fedyogi.
  c.fl.server_b2 = 0.99
  c.fl.server_tau = 1e-3  # Adaptivity (the optimizer's eps).
  c.fl.server_schedule = 'constant'  # constant | cosine (to 10% over fl.rounds).
  c.fl.executor = 'auto'  # auto | sequential | vmap | sharded | client_parallel.
  c.fl.compute_dtype = 'float32'  # client_parallel conv activations: float32 | bfloat16.
  c.fl.client_chunk = 0  # Clients per compiled chunk; 0 = all sampled clients at once.
  # Clients' data: padded on the device | streamed (each round's batches uploaded, next
  # round prefetched) | auto: streamed when padded exceeds the budget (federated/client_data.py).
  c.fl.client_store = 'auto'
  c.fl.client_store_budget_mib = 0  # Budget of the padded store; 0: 1/4 of device memory.
  c.fl.unroll = True  # Unroll local steps (XLA:CPU runs conv loops ~10x slower).
  # Malicious clients (issue #15's poisoning experiment): these clients (indices in the
  # federation's order) send a crafted update instead of their honest one: 'boost' (their
  # own update times factor, as in model replacement) or 'sign_flip' (times -factor).
  c.fl.malicious = ml_collections.ConfigDict()
  c.fl.malicious.kind = 'none'  # none | boost | sign_flip
  c.fl.malicious.clients = ()
  c.fl.malicious.factor = 10.0
  c.fl.eval_every = 1  # Rounds between evaluations.
  c.fl.checkpoint_every = 1  # Rounds between checkpoints.

  c.aggregator = ml_collections.ConfigDict()
  c.aggregator.name = 'mean'  # mean (plain FL) | privateyes | privateyes_semi_honest.
  # PrivatEyes MPC (docs/MPC.md): S servers, fixed point with f fractional bits in
  # Z_2^k, shares and MACs in Z_2^(k+s) (k + s <= 64).
  c.aggregator.num_servers = 3
  c.aggregator.k = 32
  c.aggregator.f = 16
  c.aggregator.s = 32
  c.aggregator.coalition = (0, 1)  # Passive coalition (<= S-1 servers) whose view is recorded.
  c.aggregator.client_chunk = 0  # Clients per fused MPC program; 0: largest within ~1 GiB.
  c.aggregator.prg = 'threefry2x64'  # Share generator (mpc/prg.py).
  c.aggregator.min_clients = 3  # Fewer submitting clients: the round opens nothing (docs/MPC.md §5a).
  c.aggregator.adversary = ml_collections.ConfigDict()
  c.aggregator.adversary.kind = 'none'  # none | add_error | flip_bits | corrupt_mac |
  #   corrupt_check_value | drop_client | replay_client | high_error | cancel_chi |
  #   guess_mac | rush_coin | inconsistent_model | wrong_mask_to_client (one malicious
  #   server; docs/MPC.md §6).
  c.aggregator.adversary.server = 0
  c.aggregator.adversary.client = 0
  c.aggregator.adversary.magnitude = 1
  c.aggregator.adversary.element = -1
  c.aggregator.adversary.before_commit = False
  c.aggregator.adversary.guess = ()  # cancel_chi: (χ_0, χ_1); guess_mac: (α,); rush_coin: a seed.
  # Client-level differential privacy (docs/MPC.md §5b; off by default). Each client's
  # update is clipped to L2 norm clip_norm; clients join a round by Poisson sampling at
  # rate q = (clients per round) / (clients); every server adds its own discrete Gaussian
  # noise of std noise_multiplier * clip_norm inside the MPC (plain FL: the server adds a
  # continuous Gaussian of the same std, central DP); the mean divides by q * clients.
  # > 0: the server excludes, by name, every client whose update has L2 norm above this
  # bound (plain FL, where the server sees the updates; the in-MPC check for PrivatEyes
  # is designed in docs/VALIDITY_DESIGN.md and not built yet).
  c.aggregator.norm_bound = 0.0
  # The norm-bound validity check inside the MPC (privateyes only; docs/VALIDITY_DESIGN.md):
  # honest clients clip w̃·Δ to clip_norm, the servers exclude by name every client whose
  # input is above it, without opening any input.
  c.aggregator.validity = ml_collections.ConfigDict()
  c.aggregator.validity.enabled = False
  c.aggregator.validity.clip_norm = 1.0  # C: L2 bound of one client's scaled update.
  c.aggregator.validity.tau = 2  # Consistency repetitions: soundness 2^(-32 tau).
  c.aggregator.validity.slack_bits = 63
  c.aggregator.validity.element_chunk = 1 << 14  # Elements per server program (memory).
  c.aggregator.dp = ml_collections.ConfigDict()
  c.aggregator.dp.enabled = False
  c.aggregator.dp.clip_norm = 1.0  # C: L2 bound of one client's update Δ_c.
  c.aggregator.dp.noise_multiplier = 1.0  # z: noise std / C (of the one honest server).
  c.aggregator.dp.target_epsilon = 0.0  # > 0: calibrate z to this ε over fl.rounds.
  c.aggregator.dp.delta = 1e-5  # δ; must be below 1 / (number of clients).
  c.aggregator.dp.accountant = 'rdp'  # rdp | pld (dp-accounting).
  c.record_views = ''  # '' | 'last' | 'all': save what the observing party sees (attack input).

  if arg == 'tiny':
    apply_tiny(c)
  elif arg:
    raise ValueError(f'Unknown preset {arg!r}; available: tiny.')
  return c


def apply_tiny(c: ml_collections.ConfigDict) -> None:
  """A seconds-long CPU preset for tests: few people, few samples, a narrow model."""
  c.data.num_people = 6
  c.data.num_test_people = 2
  c.data.samples_per_person = 64
  c.model.conv_features = (4, 8)
  c.model.hidden = 32
  c.batch_size = 8
  c.train.steps = 12
  c.train.eval_every = 4
  c.train.log_every = 2
  c.fl.rounds = 3
  c.fl.local_steps = 2
