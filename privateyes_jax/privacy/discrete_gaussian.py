"""The discrete Gaussian N_Z(0, σ²), sampled exactly by rejection, and its exact PMF.

N_Z(0, σ²) puts mass P(x) = exp(-x²/(2σ²)) / Σ_y exp(-y²/(2σ²)) on every integer x.
Servers add it to integer (ring) shares of the aggregate, where a float Gaussian cannot
go without being rounded. Rounding a float N(0, σ²) to the nearest integer gives a
*different* distribution, P(x) = Φ((x+½)/σ) - Φ((x-½)/σ), whose privacy loss is not the
one the Gaussian mechanism's (or the discrete Gaussian's) analysis bounds; at σ = 0.5 it
puts 0.68 on zero where N_Z puts 0.79. So this module never rounds a Gaussian: ``sample``
runs the rejection sampler of Canonne, Kamath and Steinke ("The Discrete Gaussian for
Differential Privacy", NeurIPS 2020, Algorithm 3 with their Algorithm 2 as proposal):

1. t = floor(σ) + 1. Propose Y from the discrete Laplace P(y) ∝ exp(-|y|/t):
   a. U uniform on {0, ..., t-1}; reject unless Bernoulli(exp(-U/t)) succeeds;
   b. V = floor(-log W) with W uniform on (0, 1], so P(V ≥ v) = exp(-v) (geometric);
   c. X = U + t·V, which has P(X = x) ∝ exp(-x/t) on x ≥ 0;
   d. a fair sign bit B gives Y = ±X; reject B = minus with X = 0 (zero would count twice).
2. Accept Y with probability exp(-(|Y| - σ²/t)² / (2σ²)); otherwise start again.

An accepted Y has exactly the N_Z(0, σ²) distribution (CKS20, Thm. 6); each round accepts
with probability bounded below by a constant, so ``sample`` loops, redrawing only the
elements still unaccepted, until every element is accepted: no cap on the number of tries,
hence no truncation or bias from giving up.

Where float64 enters (and only there). CKS20 sample their Bernoullis exactly with rational
arithmetic; we compare 53-bit uniforms with float64 numbers, which perturbs probabilities
by rounding but keeps the algorithm's structure (an integer proposal and an exact
acceptance rule), so every deviation is an ulp-level error in a probability, never the
O(1/σ²) shape error of a rounded Gaussian:

* Bernoulli(p) is ``k·2^-53 < p`` for k uniform on {0, ..., 2^53 - 1}: it succeeds with
  probability ceil(p·2^53)/2^53, within 2^-53 of p. In step 1a p = exp(-U/t) ≥ e^-1 is
  computed with relative error about 2^-52, so the realised probability has relative error
  below about 2^-50.
* In step 1b, W = (k + 1)·2^-53 is on a grid of 2^-53 and -log W is rounded to float64, so
  P(V ≥ v) = exp(-v) up to a relative error about v·2^-52 (rounding of the log) plus an
  absolute error 2^-53 (the grid); V never exceeds 36 (W ≥ 2^-53), which cuts the
  proposal's tail mass e^-37 ≈ 10^-16 and with it outputs beyond 37·t, where N_Z has mass
  below 10^-280. The grid error is relative to P(V = v) ≈ e^-v, not to the much smaller
  per-integer mass ~e^-v/t, so it does not grow with σ (a single geometric with scale t,
  floor(-t·log W), would carry a relative error of about t·2^-53 per value instead).
* In step 2, (|Y| - σ²/t)²/(2σ²) =: E is computed with relative error a few 2^-53, so
  exp(-E) has relative error about E·2^-52, plus the 2^-53 of the Bernoulli comparison.
* U (``jax.random.randint``, reduced from 128 random bits) and the sign bit are integers
  with a bias of at most t/2^128 and none, respectively.

So each computed probability is off by a relative error of about 2^-52·(1 + V + E) and an
absolute error of about 2^-53 per comparison. The absolute part matters only where the
exact probability is itself tiny: for outputs within ±4σ (over 0.9999 of the mass;
e^V, e^E ≤ ~500 there) the relative error of P(y) stays below about 10^-12, and summed
over all outputs the total variation distance from N_Z(0, σ²) is below about 10^-13 for
every supported σ.

Range. ``sample`` returns int64 and therefore needs ``jax.enable_x64(True)`` like the
ring code (see ``privateyes_jax/mpc/ring.py``); σ is capped at 2^40 so that every
proposal (at most 37·t ≈ 2^45.3) and the float64 arithmetic on it stay far inside range.

``pmf``, ``variance`` and ``sum_pmf`` are NumPy float64 references for tests and for
reasoning about the noise that several servers add together.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Largest σ accepted: proposals stay below 37·(2^40 + 1) < 2^46, far inside int64, and
# integers below 2^53 convert to float64 exactly.
MAX_SIGMA = 2.0**40

# exp(-r²/2) < 1e-300 for r > sqrt(600·ln 10) ≈ 37.17: beyond 37.2σ the discrete
# Gaussian's weights are negligible next to any probability a float64 can hold.
_TAIL_RADIUS_IN_SIGMAS = math.sqrt(600.0 * math.log(10.0)) + 0.03

# Direct summation of the normaliser up to this σ (at most ~75k terms); above it the
# Poisson-summation (theta function) form, whose correction terms are already zero.
_DIRECT_SUM_MAX_SIGMA = 1000.0

# sum_pmf convolves directly (exact sums, no FFT noise in the tails); refuse supports
# whose convolution would take more than this many multiply-adds.
_MAX_CONVOLUTION_WORK = 2e9


def _check_sigma(sigma) -> float:
  """Returns σ as a float, or raises a one-line ValueError naming it."""
  if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)):
    raise ValueError(f'sigma must be a real number, got {sigma!r}.')
  value = float(sigma)
  if not math.isfinite(value) or value <= 0:
    raise ValueError(f'sigma={sigma!r} must be finite and > 0.')
  if value > MAX_SIGMA:
    raise ValueError(f'sigma={sigma!r} exceeds 2^40, the largest the int64 sampler supports.')
  return value


def _require_x64() -> None:
  """Fails fast outside x64: int64/float64 would silently become int32/float32."""
  if not jax.config.jax_enable_x64:
    raise RuntimeError(
        'discrete_gaussian.sample draws int64 noise with float64 acceptance tests and must '
        'run inside `with jax.enable_x64(True):` (see privateyes_jax/mpc/ring.py).')


def _uniform_53(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """k · 2^-53 for k uniform on {0, ..., 2^53 - 1}: exact float64s on [0, 1)."""
  bits = jax.random.bits(key, shape, jnp.uint64) >> jnp.uint64(11)
  return bits.astype(jnp.float64) * 2.0**-53


def _propose(key: jax.Array, sigma: float, shape: tuple[int, ...]):
  """One try of CKS20 Algorithm 3 for every element: (candidate, accepted) arrays."""
  # σ is traced (one program for every σ of a shape); t = floor(σ) + 1 exactly in int64.
  t = (jnp.floor(sigma) + 1).astype(jnp.int64)
  k_u, k_d, k_v, k_s, k_c = jax.random.split(key, 5)
  # Step 1a: U uniform on {0..t-1}, kept with probability exp(-U/t).
  u = jax.random.randint(k_u, shape, 0, t, dtype=jnp.int64)
  keep_u = _uniform_53(k_d, shape) < jnp.exp(-u.astype(jnp.float64) / t)
  # Step 1b: V geometric, P(V >= v) = exp(-v); W = 1 - [0, 1) grid lies on (0, 1].
  w = 1.0 - _uniform_53(k_v, shape)
  v = jnp.floor(-jnp.log(w)).astype(jnp.int64)
  # Steps 1c-d: X = U + t·V ~ exp(-x/t) on x >= 0, then a sign, rejecting "-0".
  x = u + t * v
  negative = (jax.random.bits(k_s, shape, jnp.uint32) & 1) == 1
  keep_sign = ~(negative & (x == 0))
  # Step 2: Bernoulli(exp(-(|Y| - σ²/t)² / (2σ²))).
  gap = x.astype(jnp.float64) - sigma * sigma / t
  keep_gauss = _uniform_53(k_c, shape) < jnp.exp(-(gap * gap) / (2.0 * sigma * sigma))
  return jnp.where(negative, -x, x), keep_u & keep_sign & keep_gauss


# Staged rejection (speed only; the output distribution is the rejection sampler's):
# every pending element gets TRIES independent proposals per stage and keeps its first
# accepted one; the elements with none are compacted into a smaller buffer for the next
# stage. One proposal is accepted with probability at least 0.35 (0.35 at σ = 0.5, 0.48
# for σ ≥ 4, measured), so at most 0.65^4 = 18% of a stage's elements go on, and the
# work is about 6 proposals per element instead of one pass over every element per
# round of a plain loop (~27 passes for 10^6 elements). A buffer too small for a stage's
# failures (a chance event) leaves the rest to a final loop over every element that is
# still pending: slower, never different. Two stages before the loop keep the compiled
# program small (each stage is inlined: compile time grows with their number).
TRIES = 4
_STAGES = 2
_NEXT_FRACTION = 0.22
_NEXT_MARGIN = 256
_LAST_STAGE = 2048


def _first_accepted(key, sigma, size):
  """TRIES proposals for each of ``size`` elements: (first accepted value, any accepted)."""
  candidates, accepted = _propose(key, sigma, (TRIES, size))
  first = jnp.argmax(accepted, axis=0)
  value = jnp.take_along_axis(candidates, first[None], axis=0)[0]
  return value, jnp.any(accepted, axis=0)


def _loop(key, sigma, out, done):
  """Plain rejection loop over ``out``'s elements that are not ``done``."""

  def unfinished(state):
    return ~jnp.all(state[2])

  def attempt(state):
    key, out, done = state
    key, sub = jax.random.split(key)
    candidate, accepted = _propose(sub, sigma, out.shape)
    out = jnp.where(done, out, candidate)
    return key, out, done | accepted

  return jax.lax.while_loop(unfinished, attempt, (key, out, done))[1:]


@functools.partial(jax.jit, static_argnames=('shape',))
def _sample(key: jax.Array, sigma: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Staged rejection over the flattened elements, then a loop for any leftovers."""
  n = math.prod(shape)
  out = jnp.zeros((n,), jnp.int64)
  done = jnp.zeros((n,), bool)
  pending = jnp.arange(n, dtype=jnp.int32)  # Positions of this stage's buffer.
  valid = jnp.ones((n,), bool)  # Buffer entries that hold a pending element.
  size = n
  for _ in range(_STAGES):
    if size <= _LAST_STAGE:
      break
    key, sub = jax.random.split(key)
    value, ok = _first_accepted(sub, sigma, size)
    write = ok & valid
    target = jnp.where(write, pending, n)  # n: out of bounds, dropped.
    out = out.at[target].set(value, mode='drop')
    done = done.at[target].set(True, mode='drop')
    failed = valid & ~ok
    size_next = min(size, math.ceil(size * _NEXT_FRACTION) + _NEXT_MARGIN)
    (index,) = jnp.nonzero(failed, size=size_next, fill_value=0)
    valid = jnp.arange(size_next) < jnp.sum(failed)
    pending = pending[index]
    size = size_next
  # Last stage: a loop over the remaining buffer, written back where valid.
  key, sub, rest = jax.random.split(key, 3)
  values, _ = _loop(sub, sigma, jnp.zeros((size,), jnp.int64), ~valid)
  target = jnp.where(valid, pending, n)
  out = out.at[target].set(values, mode='drop')
  done = done.at[target].set(True, mode='drop')
  # Whatever a full buffer left behind (rare): the plain loop, which is a no-op when
  # every element is done.
  out, _ = _loop(rest, sigma, out, done)
  return out.reshape(shape)


def sample(key: jax.Array, sigma: float, shape: Sequence[int] | int = ()) -> jax.Array:
  """Draws independent N_Z(0, σ²) integers (int64) of the given shape.

  Args:
    key: a JAX PRNG key.
    sigma: the scale σ, a Python number in (0, 2^40]; each distinct shape compiles once.
    shape: output shape.

  Returns:
    An int64 array. Convert it to NumPy (or to ring words) before leaving the x64 scope:
    moved into a non-x64 computation it would be truncated to int32.

  Raises:
    ValueError: σ is not a finite number in (0, 2^40].
    RuntimeError: called outside ``with jax.enable_x64(True):``.
  """
  sigma = _check_sigma(sigma)
  _require_x64()
  shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(n) for n in shape)
  return _sample(key, jnp.float64(sigma), shape)


def tail_radius(sigma: float) -> int:
  """R with exp(-x²/(2σ²)) < 1e-300 for all |x| > R: the support that tables need."""
  return math.ceil(_TAIL_RADIUS_IN_SIGMAS * _check_sigma(sigma)) + 1


def _normaliser_direct(sigma: float) -> float:
  """Σ_x exp(-x²/(2σ²)) summed over |x| ≤ tail_radius(σ) (the rest is < 1e-300 · σ)."""
  radius = tail_radius(sigma)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  return math.fsum(np.exp(-x * x / (2.0 * sigma * sigma)))


def _theta_terms(sigma: float) -> tuple[np.ndarray, np.ndarray]:
  """k = 1, 2, ... and exp(-2π²σ²k²) while that exceeds e^-700: Poisson-summation terms."""
  k_max = max(1, math.ceil(math.sqrt(700.0 / (2.0 * math.pi**2 * sigma * sigma))))
  k = np.arange(1, k_max + 1, dtype=np.float64)
  return k, np.exp(-2.0 * math.pi**2 * sigma * sigma * k * k)


def _normaliser_theta(sigma: float) -> float:
  """The same sum by Poisson summation: σ√(2π) (1 + 2 Σ_{k≥1} exp(-2π²σ²k²))."""
  _, terms = _theta_terms(sigma)
  return sigma * math.sqrt(2.0 * math.pi) * (1.0 + 2.0 * math.fsum(terms))


def _normaliser(sigma: float) -> float:
  if sigma <= _DIRECT_SUM_MAX_SIGMA:
    return _normaliser_direct(sigma)
  return _normaliser_theta(sigma)


def pmf(values, sigma: float) -> np.ndarray:
  """Exact N_Z(0, σ²) probabilities of integer ``values`` (float64, same shape)."""
  sigma = _check_sigma(sigma)
  x = np.asarray(values)
  if not np.issubdtype(x.dtype, np.integer):
    raise ValueError(f'values must be integers, got dtype {x.dtype}.')
  x = x.astype(np.float64)
  return np.exp(-x * x / (2.0 * sigma * sigma)) / _normaliser(sigma)


def variance(sigma: float) -> float:
  """Exact variance of N_Z(0, σ²): slightly below σ² for σ ≲ 1, σ² to float64 above ~6.

  Above the direct-sum range it uses the Poisson summation of x² exp(-x²/(2σ²)),
  σ√(2π) σ² Σ_k (1 - 4π²σ²k²) exp(-2π²σ²k²), over the normaliser's.
  """
  sigma = _check_sigma(sigma)
  if sigma <= _DIRECT_SUM_MAX_SIGMA:
    radius = tail_radius(sigma)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-x * x / (2.0 * sigma * sigma))
    return math.fsum(x * x * weights) / math.fsum(weights)
  k, terms = _theta_terms(sigma)
  second = 1.0 + 2.0 * math.fsum((1.0 - 4.0 * math.pi**2 * sigma * sigma * k * k) * terms)
  return sigma * sigma * second / (1.0 + 2.0 * math.fsum(terms))


def sum_pmf(values, sigma: float, terms: int) -> np.ndarray:
  """PMF of the sum of ``terms`` independent N_Z(0, σ²) draws (several servers' noise).

  A sum of discrete Gaussians is not itself a discrete Gaussian (it is close for σ ≳ 1),
  so tests of the aggregated noise need this distribution. It is the ``terms``-fold
  convolution of ``pmf`` on |x| ≤ tail_radius(σ), computed by direct (not FFT)
  convolution so that small tail probabilities keep their relative accuracy.
  """
  sigma = _check_sigma(sigma)
  if isinstance(terms, bool) or not isinstance(terms, (int, np.integer)) or terms < 1:
    raise ValueError(f'terms={terms!r} must be an int >= 1.')
  x = np.asarray(values)
  if not np.issubdtype(x.dtype, np.integer):
    raise ValueError(f'values must be integers, got dtype {x.dtype}.')
  radius = tail_radius(sigma)
  width = 2 * radius + 1
  if float(width) ** 2 * terms * terms > _MAX_CONVOLUTION_WORK:
    raise ValueError(f'sigma={sigma} with terms={terms} is too wide for direct convolution.')
  base = pmf(np.arange(-radius, radius + 1), sigma)
  table = base
  for _ in range(terms - 1):
    table = np.convolve(table, base)
  offset = terms * radius  # table[i] is the probability of i - offset.
  index = x.astype(np.int64) + offset
  inside = (index >= 0) & (index < table.size)
  return np.where(inside, table[np.clip(index, 0, table.size - 1)], 0.0)
