"""Client-level (ε, δ) of noisy federated rounds, computed with Google's dp-accounting.

The mechanism of one round: each client takes part independently with probability q
(Poisson sampling), its update is clipped to L2 norm C, and the servers add Gaussian
noise of standard deviation z·C to the sum (z is the noise multiplier). Neighbouring
datasets differ by adding or removing one client (``ADD_OR_REMOVE_ONE``), so the
guarantee protects whole clients, not single examples. T rounds compose adaptively.

Two accountants, both from ``dp_accounting`` (we do not re-derive any bound here):

* ``'rdp'``: Rényi DP of the sampled Gaussian (Mironov, Talwar, Zhang 2019) over the
  package's default orders, converted to (ε, δ) with the improved conversion of Canonne,
  Kamath, Steinke 2020 / Asoodeh et al. 2020 that dp-accounting 0.6 uses. An upper bound,
  looser than PLD (z = 1.1, δ = 1e-5: 0.96 against 0.55 at q = 0.01, T = 100; 2.60
  against 2.39 at q = 256/60000, T = 14062), but cheap and the customary number to quote.
* ``'pld'``: privacy loss distributions (Koskela et al.; Doroshenko et al. 2022's
  connect-the-dots). dp-accounting builds them with ``pessimistic_estimate=True``, so the
  discretised ε is an upper bound, tighter than RDP. We discretise privacy loss at
  ``PLD_VALUE_DISCRETIZATION_INTERVAL`` = 1e-3 instead of the package's 1e-4: about 8x
  faster, and the pessimism it adds is small (0.03% at T = 100 and 0.4% at T = 14062,
  z = 1.1, δ = 1e-5 against 1e-4), whereas 1e-2 would add 30% over 14062 rounds.

Two views of the same run. ``epsilon`` is what an outsider who sees only the released
models faces: amplification by sampling applies because they do not know whether a client
took part. The servers see which clients submitted each round, so for them the sampling
hides nothing: ``epsilon_without_sampling`` (q = 1) over the rounds the client joined.
"""

from __future__ import annotations

import math
import numbers

import dp_accounting
from dp_accounting import pld as dp_pld
from dp_accounting import rdp as dp_rdp

ACCOUNTANTS = ('rdp', 'pld')

PLD_VALUE_DISCRETIZATION_INTERVAL = 1e-3

# calibrate_noise_multiplier's tolerance on z (passed to calibrate_dp_mechanism): the
# returned z is within this of the smallest feasible one and always meets the target.
CALIBRATION_TOLERANCE = 1e-6

# Smallest and largest noise multipliers calibrate_noise_multiplier searches between.
# Below 1e-2 a single Gaussian step already costs ε in the thousands (and PLDs become
# huge); above 1e6 no practical target needs.
_MIN_CALIBRATED_Z = 1e-2
_MAX_CALIBRATED_Z = 1e6

_NEIGHBOURS = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE


def _check_accountant(accountant) -> None:
  if accountant not in ACCOUNTANTS:
    raise ValueError(f'accountant={accountant!r} must be one of {ACCOUNTANTS}.')


def _check_real(name: str, value) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ValueError(f'{name} must be a real number, got {value!r}.')
  return float(value)


def _check_rate(sampling_rate) -> float:
  q = _check_real('sampling_rate', sampling_rate)
  if not 0.0 < q <= 1.0:
    raise ValueError(f'sampling_rate={sampling_rate!r} must be in (0, 1].')
  return q


def _check_delta(delta) -> float:
  d = _check_real('delta', delta)
  if not 0.0 < d < 1.0:
    raise ValueError(f'delta={delta!r} must be in (0, 1).')
  return d


def _check_rounds(rounds) -> int:
  if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 0:
    raise ValueError(f'rounds={rounds!r} must be an int >= 0.')
  return int(rounds)


def _check_noise(noise_multiplier) -> float:
  z = _check_real('noise_multiplier', noise_multiplier)
  if math.isnan(z) or z < 0:
    raise ValueError(f'noise_multiplier={noise_multiplier!r} must be >= 0 (inf allowed).')
  return z


def _round_event(noise_multiplier: float, sampling_rate: float) -> dp_accounting.DpEvent:
  """One round; with q = 1 the plain Gaussian (nothing is sampled)."""
  gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
  if sampling_rate == 1.0:
    return gaussian
  return dp_accounting.PoissonSampledDpEvent(sampling_rate, gaussian)


def _fresh_accountant(accountant: str) -> dp_accounting.PrivacyAccountant:
  if accountant == 'rdp':
    return dp_rdp.RdpAccountant(neighboring_relation=_NEIGHBOURS)
  return dp_pld.PLDAccountant(neighboring_relation=_NEIGHBOURS,
                              value_discretization_interval=PLD_VALUE_DISCRETIZATION_INTERVAL)


def _epsilon_checked(z: float, q: float, rounds: int, delta: float, accountant: str) -> float:
  if rounds == 0 or math.isinf(z):
    return 0.0
  if z == 0.0:
    return math.inf  # The sum itself is released: no (ε, δ) with δ < 1 holds.
  event = dp_accounting.SelfComposedDpEvent(_round_event(z, q), rounds)
  return float(_fresh_accountant(accountant).compose(event).get_epsilon(delta))


def epsilon(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float,
            accountant: str = 'rdp') -> float:
  """ε after ``rounds`` rounds at ``delta``, with amplification by Poisson sampling.

  Args:
    noise_multiplier: z = noise standard deviation / clipping norm; 0 gives inf, inf 0.
    sampling_rate: q in (0, 1], each client's probability of taking part in a round.
    rounds: T >= 0 (0 gives 0.0).
    delta: δ in (0, 1).
    accountant: 'rdp' or 'pld' (see the module docstring).

  Returns:
    The client-level ε (add/remove one client) of the T-fold composition.
  """
  _check_accountant(accountant)
  return _epsilon_checked(_check_noise(noise_multiplier), _check_rate(sampling_rate),
                          _check_rounds(rounds), _check_delta(delta), accountant)


def epsilons(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float,
             accountant: str = 'rdp') -> list[float]:
  """ε after each of rounds 1, ..., T (a privacy curve for logging or plots).

  Composing one round at a time through ``PrivacyAccountant.compose`` would rebuild the
  round's RDP vector or PLD on every call (25-40 ms each), so instead:

  * RDP: one round's RDP vector is computed once and ε after t rounds is
    ``dp_accounting.rdp.compute_epsilon(orders, t · rdp, δ)``, exactly what
    ``RdpAccountant`` does for a t-fold composition, so the last value equals ``epsilon``
    bit for bit. dp-accounting has no public getter for that vector; we read the
    accountant's ``_rdp``/``_orders`` and fall back to per-round ``epsilon`` calls if a
    later version renames them.
  * PLD with q < 1: one round's PLD is built once with the same public constructor the
    accountant uses (``privacy_loss_distribution.from_gaussian_mechanism``, pessimistic)
    and convolved in round by round (about 2 ms per round). The running convolution is
    discretised differently from the accountant's T-fold self-composition, so the last
    value agrees with ``epsilon`` to about 1e-9 relative, not bit for bit.
  * PLD with q = 1: T Gaussians compose to one Gaussian exactly, which is what
    ``epsilon`` uses, so each round is one cheap ``epsilon`` call.
  """
  _check_accountant(accountant)
  z, q = _check_noise(noise_multiplier), _check_rate(sampling_rate)
  rounds, delta = _check_rounds(rounds), _check_delta(delta)
  if math.isinf(z):
    return [0.0] * rounds
  if z == 0.0:
    return [math.inf] * rounds
  if rounds == 0:
    return []
  if accountant == 'rdp':
    one_round = _fresh_accountant('rdp').compose(_round_event(z, q))
    orders, rdp = getattr(one_round, '_orders', None), getattr(one_round, '_rdp', None)
    if orders is not None and rdp is not None:
      return [float(dp_rdp.compute_epsilon(orders, t * rdp, delta)[0])
              for t in range(1, rounds + 1)]
  if accountant == 'rdp' or q == 1.0:
    return [_epsilon_checked(z, q, t, delta, accountant) for t in range(1, rounds + 1)]
  one_round = dp_pld.privacy_loss_distribution.from_gaussian_mechanism(
      standard_deviation=z, sampling_prob=q, neighboring_relation=_NEIGHBOURS,
      value_discretization_interval=PLD_VALUE_DISCRETIZATION_INTERVAL)
  running = one_round
  curve = [float(running.get_epsilon_for_delta(delta))]
  for _ in range(rounds - 1):
    running = running.compose(one_round)
    curve.append(float(running.get_epsilon_for_delta(delta)))
  return curve


def epsilon_without_sampling(noise_multiplier: float, rounds: int, delta: float,
                             accountant: str = 'rdp') -> float:
  """ε with no amplification (q = 1) over the ``rounds`` rounds the client took part in.

  The bound against anyone who knows who was sampled each round, e.g. the servers, which
  see which clients submitted: to them each participation is an unsampled Gaussian.
  """
  _check_accountant(accountant)
  return _epsilon_checked(_check_noise(noise_multiplier), 1.0, _check_rounds(rounds),
                          _check_delta(delta), accountant)


def calibrate_noise_multiplier(target_epsilon: float, sampling_rate: float, rounds: int,
                               delta: float, accountant: str = 'rdp') -> float:
  """Smallest noise multiplier z whose ``epsilon`` is at most ``target_epsilon``.

  Root-finding is ``dp_accounting.calibrate_dp_mechanism`` (Brent's method, which then
  checks that the returned z meets the target) with tolerance ``CALIBRATION_TOLERANCE``
  on z. We bracket the root ourselves by doubling/halving from z = 1 with the same
  accountant: the package's default bracket starts at z = 0, where the ε is infinite, and
  a PLD of a tiny z is needlessly large. The search is confined to [1e-2, 1e6]; if even
  z = 1e-2 meets the target, 1e-2 is returned (no meaningful configuration gets there).

  Raises:
    ValueError: a bad argument, or no z ≤ 1e6 reaches the target.
  """
  _check_accountant(accountant)
  target = _check_real('target_epsilon', target_epsilon)
  if not target > 0:  # Also catches nan.
    raise ValueError(f'target_epsilon={target_epsilon!r} must be > 0.')
  q, rounds, delta = _check_rate(sampling_rate), _check_rounds(rounds), _check_delta(delta)
  if rounds == 0:
    return 0.0  # Nothing is released, so no noise is needed.

  def eps_of(z: float) -> float:
    return _epsilon_checked(z, q, rounds, delta, accountant)

  low, high = 1.0, 1.0
  if eps_of(high) > target:
    while eps_of(high) > target:
      low, high = high, 2.0 * high
      if high > _MAX_CALIBRATED_Z:
        raise ValueError(f'target_epsilon={target_epsilon!r} is not reached by any noise '
                         f'multiplier up to {_MAX_CALIBRATED_Z:g}.')
  else:
    while eps_of(low) <= target:
      if low <= _MIN_CALIBRATED_Z:
        return _MIN_CALIBRATED_Z
      high, low = low, max(low / 2.0, _MIN_CALIBRATED_Z)
  return float(dp_accounting.calibrate_dp_mechanism(
      make_fresh_accountant=lambda: _fresh_accountant(accountant),
      make_event_from_param=lambda z: dp_accounting.SelfComposedDpEvent(
          _round_event(z, q), rounds),
      target_epsilon=target,
      target_delta=delta,
      bracket_interval=dp_accounting.ExplicitBracketInterval(low, high),
      tol=CALIBRATION_TOLERANCE))
