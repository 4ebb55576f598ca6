"""Per-round communication of plain FL and both PrivatEyes modes, and ESTIMATES.

Exact counts (what the simulated protocol would put on the wire per round) come
from ``round_costs``. Two things the simulation does not run are only ESTIMATED
from published MP-SPDZ / SPDZ2k figures:

* ``estimate_offline_phase``: producing the authenticated masks [[r]] that the
  dealer simulates;
* ``estimate_generic_mpc_training``: training the whole gaze model inside MPC,
  the PrivatEyes paper's other baseline.

Published figures used (docs/MPC.md repeats them with their sources):

* ``SPDZ2K_TRIPLES_PER_SECOND = 3000``: M. Keller (MP-SPDZ maintainer), GitHub
  data61/MP-SPDZ issue #1010, 2023-05-04, on SPDZ2k over Z_2^128 with 3 parties:
  "the maximum production rate is a few thousand [triples] per second". We take
  3,000/s. We could not retrieve a table with exact SPDZ2k preprocessing
  throughput (SPDZ2k paper, CRYPTO 2018; MP-SPDZ paper, Keller CCS 2020) through
  the available search; this is the assumption, stated.
* ``MASK_COST_IN_TRIPLES = 1.0``: ASSUMPTION. An authenticated random value
  needs only SPDZ2k's authentication step, not a multiplication, so it is
  cheaper than a triple; costing it as one triple gives an upper bound.
* Keller & Sun, "Secure Quantized Training for Deep Learning", ICML 2022
  (ePrint 2022/933), abstract: a CNN with two convolutional and two dense layers
  trained inside MPC on MNIST to 99.2% accuracy in 3.5 hours (under one hour to
  99%), their fastest setting. Reported next to the estimate as a reference point.
"""

from __future__ import annotations

import dataclasses

from privateyes_jax.mpc import ring

SEED_BYTES = 16  # A PRG seed (AES-128 key, as MP-SPDZ's PRNG SEED_SIZE).
NONCE_BYTES = 16  # Commitment randomness.
DIGEST_BYTES = 32  # SHA-256.
FLOAT32_BYTES = 4

SPDZ2K_TRIPLES_PER_SECOND = 3000.0  # See the module docstring (MP-SPDZ #1010).
MASK_COST_IN_TRIPLES = 1.0  # ASSUMPTION: upper bound, see module docstring.
KELLER_SUN_MNIST_HOURS = 3.5  # ICML 2022 abstract: MNIST CNN to 99.2% in MPC.


@dataclasses.dataclass(frozen=True)
class RoundCosts:
  """Communication of one aggregation round (bytes and network rounds)."""
  client_upload_bytes: float  # Per submitting client.
  client_download_bytes: float  # Per submitting client, beyond the model broadcast
  # (privateyes: the dealer's seed of its mask, sent in the offline phase).
  server_send_bytes: float  # Per server, to clients and other servers.
  interaction_rounds: float  # Sequential online network rounds (client and server).
  plain_fl_upload_bytes: float  # The same client's upload under plain FL.

  def as_stats(self, prefix: str = 'mpc/') -> dict[str, float]:
    return {prefix + k: float(v) for k, v in dataclasses.asdict(self).items()}


def plain_fl_costs(num_params: int) -> RoundCosts:
  """Plain FL: each client sends its float32 individual update, P·4 bytes."""
  upload = float(FLOAT32_BYTES * num_params)
  return RoundCosts(upload, 0.0, 0.0, 1.0, upload)


def semi_honest_costs(spec: ring.RingSpec, num_servers: int, num_submitted: int,
                      num_elements: int, seed_compressed: bool = False) -> RoundCosts:
  """Semi-honest PrivatEyes over Z_2^k.

  Client: one share per server (E·⌈k/8⌉ bytes each), or with seed compression
  one full share plus S-1 PRG seeds. Servers: broadcast their share of the sum
  to the S-1 others. Rounds: clients → servers, servers ↔ servers (open).

  Args:
    spec: the ring (only k is used).
    num_servers: S.
    num_submitted: clients that sent an input this round.
    num_elements: E = P + 1 (the weight travels as one extra element).
    seed_compressed: send S-1 shares as seeds.
  """
  del num_submitted  # Server traffic does not depend on it in this mode.
  share = num_elements * spec.value_bytes
  upload = (share + (num_servers - 1) * SEED_BYTES if seed_compressed
            else num_servers * share)
  server_send = (num_servers - 1) * share
  return RoundCosts(float(upload), 0.0, float(server_send), 2.0,
                    float(FLOAT32_BYTES * (num_elements - 1)))


def privateyes_costs(spec: ring.RingSpec, num_servers: int, num_submitted: int,
                     num_elements: int) -> RoundCosts:
  """Maliciously secure PrivatEyes (SPDZ2k), one aggregation round.

  Client c: receives the 16-byte seed of its mask r_c from the DEALER in the
  offline phase (once per attempt; it expands r_c mod 2^k itself), broadcasts
  ε = x − r mod 2^k to every server (S·E·⌈k/8⌉). No server sends a client its
  mask: a share from a server is not authenticated towards the client, so a
  malicious one could shift an honest client's input unnoticed (docs/MPC.md §3
  step 2). Before that fix the client downloaded S·E·⌈k/8⌉ (every server's share
  of r_c mod 2^k) and the servers sent C·E·⌈k/8⌉ more, in one more round.
  Server i sends: a digest of the ε it received, so servers agree on the
  broadcast ((S-1)·32); its share of the opened sum, k+s bits ((S-1)·E·⌈(k+s)/8⌉);
  the coin toss for χ (commit (S-1)·32, reveal (S-1)·(16+16)); its check value
  (commit (S-1)·32, reveal (S-1)·(⌈(k+s)/8⌉+16)).
  Online rounds: ε → servers, open (+ ε digest + coin commit), coin reveal,
  z commit, z reveal = 5 (the dealer's seed travels before the round, with the
  servers' preprocessing: ``dealer_send_bytes``).
  """
  del num_submitted  # Server traffic no longer depends on it in this mode.
  s1 = num_servers - 1
  client_download = SEED_BYTES
  client_upload = num_servers * num_elements * spec.value_bytes
  server_send = (s1 * DIGEST_BYTES
                 + s1 * num_elements * spec.share_bytes
                 + s1 * (DIGEST_BYTES + SEED_BYTES + NONCE_BYTES)
                 + s1 * (DIGEST_BYTES + spec.share_bytes + NONCE_BYTES))
  return RoundCosts(float(client_upload), float(client_download), float(server_send),
                    5.0, float(FLOAT32_BYTES * (num_elements - 1)))


def dealer_send_bytes(spec: ring.RingSpec, num_servers: int, num_submitted: int,
                      num_elements: int) -> int:
  """Seed-compressed preprocessing of one privateyes round (simulated DEALER).

  The dealer sends each server i < S-1 one 16-byte seed per client (its value
  and MAC shares of [[r_c]] are PRG expansions of it), the last server both of
  its shares in full, r_c − Σ others and α·r_c − Σ others (2·E·⌈(k+s)/8⌉ per
  client), and client c the 16-byte seed of r_c itself, from which the client
  expands its mask (no server may learn that seed, and no server delivers the
  mask: docs/MPC.md §3 step 2). ``num_submitted``: the clients the dealer
  prepares for (the aggregator passes the whole cohort: dropouts are not known
  in advance). A deployment replaces the dealer by SPDZ2k's preprocessing, whose
  cost ``estimate_offline_phase`` estimates; without a dealer, the client's mask
  must come from the servers and needs a client-side check
  (docs/VALIDITY_DESIGN.md §6).
  """
  per_client = (num_servers * SEED_BYTES  # S-1 servers' seeds and the client's seed.
                + 2 * num_elements * spec.share_bytes)
  return num_submitted * per_client


def round_costs(mode: str, spec: ring.RingSpec, num_servers: int, num_submitted: int,
                num_elements: int, seed_compressed: bool = False) -> RoundCosts:
  """Dispatches on ``mode``: 'plain', 'privateyes', 'privateyes_semi_honest'."""
  if mode == 'plain':
    return plain_fl_costs(num_elements - 1)
  if mode == 'privateyes':
    return privateyes_costs(spec, num_servers, num_submitted, num_elements)
  if mode == 'privateyes_semi_honest':
    return semi_honest_costs(spec, num_servers, num_submitted, num_elements,
                             seed_compressed)
  raise ValueError(f'unknown mode {mode!r}.')


def num_preprocessed_masks(num_submitted: int, num_elements: int) -> int:
  """Authenticated masks one privateyes round consumes: [[r]] per input element
  (no opening mask is needed, docs/MPC.md §3 step 7)."""
  return num_submitted * num_elements


def estimate_offline_phase(num_masks: int,
                           triples_per_second: float = SPDZ2K_TRIPLES_PER_SECOND,
                           mask_cost_in_triples: float = MASK_COST_IN_TRIPLES
                           ) -> dict[str, float]:
  """ESTIMATE (not measured): seconds of SPDZ2k preprocessing for ``num_masks``.

  seconds = num_masks · mask_cost_in_triples / triples_per_second, with the
  published throughput and the stated assumption of the module docstring. An
  upper bound, since a random authenticated value is cheaper than a triple.

  Returns:
    {'offline_estimate_s': ..., 'offline_masks': ..., 'triples_per_second': ...}
  """
  seconds = num_masks * mask_cost_in_triples / triples_per_second
  return {'offline_estimate_s': float(seconds), 'offline_masks': float(num_masks),
          'triples_per_second': float(triples_per_second)}


def estimate_generic_mpc_training(multiplies_per_sample: float,
                                  samples_per_epoch: int, epochs: float,
                                  triples_per_second: float = SPDZ2K_TRIPLES_PER_SECOND
                                  ) -> dict[str, float]:
  """ESTIMATE (not measured): training the whole model inside SPDZ2k.

  Forward and backward passes need about 3× the forward multiplies (one matmul
  forward, two backward); in SPDZ2k every secret × secret multiply consumes one
  triple. Non-linearities (ReLU comparisons, truncation after each fixed-point
  multiply) cost more triples and bits still, so this is a LOWER bound on time.
  Keller & Sun (ICML 2022) is given for scale: an MNIST CNN trained in MPC in
  3.5 h with the quantization tricks of that paper.

  Args:
    multiplies_per_sample: forward multiply-accumulates of one sample.
    samples_per_epoch: training samples per epoch (all clients together).
    epochs: number of epochs.
    triples_per_second: preprocessing throughput (see module docstring).

  Returns:
    {'generic_mpc_triples': ..., 'generic_mpc_estimate_s': ...,
     'keller_sun_mnist_reference_s': ...}
  """
  triples = 3.0 * multiplies_per_sample * samples_per_epoch * epochs
  return {'generic_mpc_triples': float(triples),
          'generic_mpc_estimate_s': float(triples / triples_per_second),
          'keller_sun_mnist_reference_s': KELLER_SUN_MNIST_HOURS * 3600.0}
