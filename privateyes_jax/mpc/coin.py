"""The servers' own randomness and the joint coin toss of the MAC check (phase COIN).

SPDZ2k's batched MAC check needs public coefficients χ that no server can know
before the opened values y' are fixed. Each server draws a 128-bit contribution
from its OWN randomness, commits to it (SHA-256 of contribution ‖ 128-bit nonce),
and only when every commitment is in do the servers reveal; the joint seed is the
XOR of the revealed contributions (MP-SPDZ ``Create_Random_Seed``). One honest
server makes the joint seed uniform and unknown to the others before the reveal;
the commitment stops a rushing server from choosing its contribution after seeing
the others'.

Nothing here derives from the run's seed or the round: by default every draw is
``secrets`` (OS entropy), fresh per attempt. Tests that compare two code paths
bit for bit inject a ``numpy.random.Generator`` (``server_rng``) instead. Honest
outputs never depend on these draws (the opened sum is exact whatever χ is), so
runs stay bit-identical on resume; only the recorded χ and check values differ.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Callable, NamedTuple

import numpy as np


def server_words(rng: np.random.Generator | None, shape: tuple[int, ...]) -> np.ndarray:
  """Uniform uint64 words from the servers' own randomness (OS entropy by default)."""
  count = int(np.prod(shape, dtype=np.int64))
  if rng is None:
    return np.frombuffer(secrets.token_bytes(8 * count), '<u8').astype(np.uint64).reshape(shape)
  return rng.integers(0, 2**64, size=shape, dtype=np.uint64)


def commit_words(words: np.ndarray, nonce: np.ndarray) -> bytes:
  """SHA-256(words ‖ nonce): a hiding, binding commitment (random-oracle model)."""
  data = np.asarray(words, np.uint64).astype('<u8').tobytes()
  return hashlib.sha256(data + np.asarray(nonce, np.uint64).astype('<u8').tobytes()).digest()


class CoinToss(NamedTuple):
  """One joint coin toss: what every server broadcast, and the joint seed."""
  commitments: list[bytes]  # [S] digests, broadcast first.
  contributions: np.ndarray  # shape=[S, 2], dtype=uint64; revealed second.
  nonces: np.ndarray  # shape=[S, 2], dtype=uint64; revealed with them.
  joint: np.ndarray  # shape=[2], dtype=uint64; XOR of the contributions.
  ok: bool  # Every reveal opened its commitment.
  failure: str  # '' when ok.


# A deviation at the reveal point: (revealed contributions [S, 2] of every server so
# far, with the malicious server's own still honest) -> what that server reveals.
RevealDeviation = Callable[[np.ndarray], np.ndarray]


def unopened(revealed: np.ndarray, nonces: np.ndarray, commitments) -> list[int]:
  """The servers whose revealed contribution does not open the commitment they broadcast."""
  return [i for i in range(len(commitments))
          if commit_words(revealed[i], nonces[i]) != commitments[i]]


def toss(num_servers: int, rng: np.random.Generator | None = None,
         deviation: RevealDeviation | None = None) -> CoinToss:
  """Commit-then-reveal coin toss of ``num_servers`` servers.

  Args:
    num_servers: S.
    rng: None (OS entropy) or an injected generator (tests).
    deviation: a malicious server's reveal (adversary.rushing_coin); None: honest.

  Returns:
    ``CoinToss``; on a commitment mismatch ``ok`` is False and the failure names
    the servers (a rushing server is identified).
  """
  contributions = server_words(rng, (num_servers, 2))
  nonces = server_words(rng, (num_servers, 2))
  commitments = [commit_words(contributions[i], nonces[i]) for i in range(num_servers)]
  revealed = contributions if deviation is None else np.asarray(
      deviation(contributions.copy()), np.uint64)
  bad = unopened(revealed, nonces, commitments)
  joint = np.bitwise_xor.reduce(revealed, axis=0).astype(np.uint64)
  failure = (f'coin commitment mismatch: server(s) {bad} revealed a coin contribution '
             'that does not open the commitment they broadcast; round aborted.'
             if bad else '')
  return CoinToss(commitments, revealed, nonces, joint, not bad, failure)


def xor_except(contributions: np.ndarray, server: int) -> np.ndarray:
  """XOR of every other server's contribution (what a rushing server waits for)."""
  others = [contributions[i] for i in range(contributions.shape[0]) if i != server]
  return np.bitwise_xor.reduce(np.stack(others), axis=0).astype(np.uint64)


def check_nonces(rng: np.random.Generator | None, num_servers: int) -> np.ndarray:
  """Each server's 128-bit nonce for committing to its check value z_i."""
  return server_words(rng, (num_servers, 2))

